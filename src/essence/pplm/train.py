"""Discriminator training (``run_pplm_discrim_train.py``, paper §2.3) on cached mean embeddings.

The LM is frozen and the head sees only ``mean_t(o_t)`` over the real tokens of a sentence, so the means are
computed once (batched, padding masked explicitly: GPT-2's pad id 0 is a real token) and the head is trained on
them: Adam, lr 1e-4, batch 64, 10 epochs, NLL, as the official script with ``--cached``. Sentences are prefixed
with the start token (official: ``<|endoftext|>``) and those of ``max_length`` tokens or more are skipped.

With ``cache=True`` the means are also kept on disk (``~/.cache/essence/pplm/embeddings``, keyed by the texts, the
LM's name, fingerprint and a digest of all its weights, ``max_length``, the batch size, the device type and the
autocast state), so a second reproduction with the same LM and data skips the forward passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from essence.pplm.attribute import Discriminator
from essence.pplm.config import DiscrimConfig
from essence.pplm.lm import LM

__all__ = ["mean_embeddings", "train_discriminator", "DiscrimResult"]


@torch.no_grad()
def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of every parameter's name, shape, dtype and float64 sum: tells a fine-tuned LM from its base,
    which :func:`essence.pplm.lm.fingerprint` (architecture and a slice of the embedding) need not."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|{float(p.sum(dtype=torch.float64)):.12e};".encode())
    return h.hexdigest()[:16]


def _embeddings_path(lm: LM, texts: list[str], max_length: int, batch_size: int):
    from essence.data.cache import cache_dir, cache_key

    dev = lm.device.type if isinstance(lm.device, torch.device) else str(lm.device).split(":")[0]
    amp = str(torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else "off"
    texts_hash = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    key = cache_key("pplm-embeddings/1", lm.name, lm.fingerprint, weights_digest(lm.model), texts_hash, max_length,
                    batch_size, dev, amp)
    return cache_dir("pplm", "embeddings") / f"{key}.safetensors"


@torch.no_grad()
def mean_embeddings(lm: LM, texts, *, max_length: int = 100, batch_size: int = 32,
                    cache: bool = False) -> tuple[torch.Tensor, list[int]]:
    """(N', d) mean last-layer states of the texts shorter than ``max_length`` tokens, and their indices.

    ``cache=True`` reads them from, or writes them to, the cache folder (module docstring)."""
    texts = list(texts)
    path = _embeddings_path(lm, texts, max_length, batch_size) if cache else None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        stored = load_file(str(path))
        return stored["feats"], stored["index"].tolist()
    feats, index = _mean_embeddings(lm, texts, max_length=max_length, batch_size=batch_size)
    if path is not None:
        from essence.core.checkpoint import save_safetensors_atomic

        save_safetensors_atomic({"feats": feats.contiguous(), "index": torch.tensor(index, dtype=torch.long)}, path)
    return feats, index


def _mean_embeddings(lm: LM, texts: list[str], *, max_length: int, batch_size: int) -> tuple[torch.Tensor, list[int]]:
    encoded = [(i, lm.encode(t)) for i, t in enumerate(texts)]
    kept = [(i, ids) for i, ids in encoded if 1 < len(ids) < max_length]
    if not kept:
        raise ValueError(f"no text is shorter than max_length={max_length} tokens")
    kept.sort(key=lambda x: len(x[1]))         # length-sorted batches: little padding
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    feats, order = [], []
    for b in range(0, len(kept), batch_size):
        chunk = kept[b:b + batch_size]
        T = max(len(ids) for _, ids in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), T)
        for r, (_, seq) in enumerate(chunk):
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1.0
        out = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), output_hidden_states=True)
        h = out.hidden_states[-1].float()                                              # (b, T, d)
        m = mask.to(h.device)[..., None]
        feats.append(((h * m).sum(1) / m.sum(1)).cpu())
        order += [i for i, _ in chunk]
    feats = torch.cat(feats)
    inv = sorted(range(len(order)), key=lambda k: order[k])
    return feats[inv], [order[k] for k in inv]


@dataclass
class DiscrimResult:
    discriminator: Discriminator
    train_loss: list[float] = field(default_factory=list)   # per epoch
    test_accuracy: float = float("nan")
    test_n: int = 0
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def train_discriminator(lm: LM, rows, cfg: DiscrimConfig | None = None, *, class_label: int | str = 0,
                        progress: bool = False, cache: bool = False) -> DiscrimResult:
    """Train a :class:`Discriminator` on ``rows`` = [(text, label), ...] with the frozen ``lm``; ``cache=True``
    keeps the mean embeddings on disk (:func:`mean_embeddings`).

    Raises:
        ValueError: fewer than 2 classes, or no usable text.
    """
    cfg = cfg or DiscrimConfig()
    rows = list(rows)
    classes = sorted({label for _, label in rows})
    if len(classes) < 2:
        raise ValueError(f"a discriminator needs at least 2 classes, the data has {classes}")
    feats, idx = mean_embeddings(lm, [t for t, _ in rows], max_length=cfg.max_length, cache=cache)
    labels = torch.tensor([classes.index(rows[i][1]) for i in idx])
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(idx), generator=g)
    n_test = int(round(cfg.test_fraction * len(idx)))
    test, train = perm[:n_test], perm[n_test:]
    if len(train) == 0:
        raise ValueError("no training examples left after the test split")
    disc = Discriminator(lm.hidden_size, classes, class_label=class_label, fingerprint=lm.fingerprint,
                         lm_name=lm.name)
    torch.manual_seed(cfg.seed)
    disc.head.reset_parameters()
    opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    losses = []
    from essence.core.progress import progress as bar

    for _ in bar(range(cfg.epochs), desc="discriminator", unit="epoch", disable=not progress):
        order = train[torch.randperm(len(train), generator=g)]
        total = 0.0
        for b in range(0, len(order), cfg.batch_size):
            j = order[b:b + cfg.batch_size]
            loss = F.cross_entropy(disc(feats[j]), labels[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(j)
        losses.append(total / len(order))
    acc = float("nan")
    if n_test:
        with torch.no_grad():
            acc = float((disc(feats[test]).argmax(-1) == labels[test]).float().mean())
    counts = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
    return DiscrimResult(disc, losses, acc, n_test, classes, counts)
