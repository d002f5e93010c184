"""Attribute models p(a | x) behind one interface (paper §2.3): a bag of words and a linear discriminator.

Each model turns one perturbation step's :class:`StepContext` into a per-sample loss ``-log p(a | x)`` (shape
(B,)), differentiable with respect to the perturbed history. Any differentiable scorer can join by subclassing
:class:`AttributeModel`; :class:`Combined` sums weighted losses (the official ``BoW + discrim`` mode).

- :class:`BagOfWords`: ``log p(a|x) = log sum_w p(w | x)``. A word that the tokenizer splits into several tokens
  is scored by chaining, ``p(s1|x) p(s2|x,s1) ...`` (``multi_token="chain"``; one extra batched forward of the
  distinct prefixes, with the same perturbed history), by its first token (``"first"``), or dropped as in the
  official code (``"drop"``). Coverage (single-token, multi-token and unknown words) is reported.
- :class:`Discriminator`: ``p(a|x) = softmax(W mean_t(o_t) + b)`` on the LM's last-layer hidden states; at
  generation the next token is unknown, so ``horizon_length`` soft tokens ``p~ . E`` are fed through the
  unperturbed history and the mean divides by ``past + 1 + horizon`` (official). The horizon loop updates the
  soft token from its own prediction (the transformers port's fix, #13886). It remembers the LM it was trained on
  (hidden size, fingerprint) and refuses another.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from essence.pplm.lm import LM, cache_tensors, lm_forward, make_cache

__all__ = ["StepContext", "AttributeModel", "BagOfWords", "Discriminator", "Combined", "Coverage"]

SMALL = 1e-15


@dataclass
class StepContext:
    """What an attribute model sees during one perturbation iteration (batch B, vocabulary V)."""

    lm: LM
    probs: torch.Tensor                      # (B, V) next-token distribution under the perturbed history
    cache: Any                               # DynamicCache: perturbed history + the last token (carries the grad)
    hidden_last: torch.Tensor | None         # (B, 1, d) last-layer state of the last token (perturbed)
    unpert_layers: list | None               # [(K, V)] unperturbed history incl. the last token (no grad)
    acc_hidden: torch.Tensor | None          # (B, d) sum of unperturbed last-layer states, positions 0..n-2
    past_length: int                         # n - 1: history positions before the last token
    horizon: int = 1


class AttributeModel(nn.Module):
    """Base class: ``loss(ctx) -> (B,)`` = -log p(a | x) per sample."""

    needs_hidden: bool = False      # the generator then tracks hidden states (discriminators)
    running_norm: bool = False      # official: BoW normalises by the running max of gradient norms over time

    def loss(self, ctx: StepContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sequence_score(self, lm: LM, ids: torch.Tensor, start: int) -> torch.Tensor:
        """(B,) log p(a | x) of finished sequences ``ids`` (B, T) whose generated part starts at ``start``:
        used to rank samples (BR / BCR)."""
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


# ----------------------------------------------------------------------------------------------------------
@dataclass
class Coverage:
    """How a word list maps onto the LM's vocabulary."""

    name: str
    words: int
    single: int
    multi: int
    unknown: list[str] = field(default_factory=list)
    used: int = 0

    def __str__(self) -> str:
        unk = f", {len(self.unknown)} not in the vocabulary" if self.unknown else ""
        return (f"bag {self.name!r}: {self.words} words, {self.single} single-token, {self.multi} multi-token"
                f"{unk}; {self.used} used")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "words": self.words, "single": self.single, "multi": self.multi,
                "unknown": self.unknown, "used": self.used}


class BagOfWords(AttributeModel):
    """A topic as a list of words (paper §2.3).

    Args:
        words: the bag; entries are stripped, blank entries and ``#`` comments skipped; a phrase is one entry.
        tokenizer: the LM's tokenizer; each word is encoded with a leading space (a word inside a sentence).
        name: for messages and reports.
        multi_token: ``chain`` (exact), ``first`` (first token only) or ``drop`` (the official code).

    Raises:
        ValueError: an empty bag, entries that are not strings, or no word in the vocabulary.
    """

    running_norm = True

    def __init__(self, words, tokenizer, *, name: str = "bag", multi_token: str = "chain"):
        super().__init__()
        if multi_token not in ("chain", "first", "drop"):
            raise ValueError(f"multi_token must be 'chain', 'first' or 'drop', got {multi_token!r}")
        if isinstance(words, str):
            raise ValueError(f"bag {name!r}: expected a list of words, got one string {words[:40]!r}")
        words = list(words)
        odd = [w for w in words if not isinstance(w, str)]
        if odd:
            raise ValueError(f"bag {name!r}: entries must be strings, got {odd[:3]!r}")
        clean = list(dict.fromkeys(w.strip() for w in words if w.strip() and not w.strip().startswith("#")))
        if not clean:
            raise ValueError(f"bag {name!r} is empty: give at least one word")
        self.name, self.multi_token, self.words = name, multi_token, clean
        unk_id = getattr(tokenizer, "unk_token_id", None)
        single: set[int] = set()
        multi: list[tuple[int, ...]] = []
        unknown: list[str] = []
        for w in clean:
            ids = tuple(tokenizer.encode(" " + w, add_special_tokens=False))
            if not ids or (unk_id is not None and unk_id in ids):
                unknown.append(w)
            elif len(ids) == 1:
                single.add(ids[0])
            else:
                multi.append(ids)
        n_multi = len(multi)
        n_single = len(clean) - len(unknown) - n_multi
        self.coverage = Coverage(name, len(clean), n_single, n_multi, unknown,
                                 n_single + (0 if multi_token == "drop" else n_multi))
        if multi_token == "first":
            single |= {m[0] for m in multi}
            multi = []
        elif multi_token == "drop":
            multi = []
        multi = sorted(set(multi))
        if not single and not multi:
            raise ValueError(f"bag {name!r}: none of its {len(clean)} words can be scored by this LM's vocabulary "
                             f"({self.coverage}); multi_token={multi_token!r}")
        if unknown:
            warnings.warn(f"{self.coverage}: unknown words {unknown[:5]} are ignored", stacklevel=2)
        self.register_buffer("single_ids", torch.tensor(sorted(single), dtype=torch.long), persistent=False)
        self._build_chain(multi)

    def _build_chain(self, multi: list[tuple[int, ...]]) -> None:
        """Index tensors for chained words: one row per maximal proper prefix (a row serves all its prefixes)."""
        self.n_multi = len(multi)
        if not multi:
            for name in ("rows", "first", "word_row", "next_tok", "next_pos", "next_mask"):
                self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)
            return
        prefixes = sorted({m[:-1] for m in multi}, key=len, reverse=True)
        rows: list[tuple[int, ...]] = []
        for p in prefixes:                       # keep a prefix only if no kept row extends it
            if not any(r[:len(p)] == p for r in rows):
                rows.append(p)
        row_of = {}
        for m in multi:
            row_of[m] = next(i for i, r in enumerate(rows) if r[:len(m) - 1] == m[:-1])
        width = max(len(r) for r in rows)
        n_next = max(len(m) for m in multi) - 1
        pad = rows[0][0]
        self.register_buffer("rows", torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows]),
                             persistent=False)                                        # (R, width)
        self.register_buffer("first", torch.tensor([m[0] for m in multi]), persistent=False)          # (W,)
        self.register_buffer("word_row", torch.tensor([row_of[m] for m in multi]), persistent=False)  # (W,)
        # token j+1 of word w is predicted at position j of its row (position 0 sees s1)
        self.register_buffer("next_tok", torch.tensor([list(m[1:]) + [0] * (n_next - len(m) + 1) for m in multi]),
                             persistent=False)                                        # (W, n_next)
        self.register_buffer("next_pos", torch.arange(n_next).expand(len(multi), n_next).clone(), persistent=False)
        self.register_buffer("next_mask", torch.tensor([[1] * (len(m) - 1) + [0] * (n_next - len(m) + 1)
                                                        for m in multi]), persistent=False)

    def describe(self) -> str:
        return str(self.coverage)

    def bag_probability(self, probs: torch.Tensor, cache=None, lm: LM | None = None) -> torch.Tensor:
        """(B,) p(bag | x): single-token words from ``probs`` (B, V); chained words need the ``cache`` that
        holds x (history + last token) and the LM."""
        dev = probs.device
        p = probs[:, self.single_ids.to(dev)].sum(-1) if self.single_ids.numel() else probs.new_zeros(probs.shape[0])
        if self.n_multi:
            if cache is None or lm is None:
                raise ValueError("chained multi-token words need the history cache and the LM")
            p = p + self._chain(probs, cache, lm)
        return p

    def _chain(self, probs: torch.Tensor, cache, lm: LM) -> torch.Tensor:
        B, R = probs.shape[0], self.rows.shape[0]
        layers = [(k.repeat_interleave(R, 0), v.repeat_interleave(R, 0)) for k, v in cache_tensors(cache)]
        rows = self.rows.to(probs.device).repeat(B, 1)                                   # (B*R, width)
        logits, _, _ = lm_forward(lm.model, rows, cache=make_cache(layers))              # (B*R, width, V)
        logits = logits.float().view(B, R, *logits.shape[1:])
        lse = logits.logsumexp(-1)                                                       # (B, R, width)
        r, pos, tok = self.word_row, self.next_pos, self.next_tok
        lp = logits[:, r[:, None], pos, tok] - lse[:, r[:, None], pos]                   # (B, W, n_next)
        lp = (lp * self.next_mask).sum(-1)
        return (probs[:, self.first].clamp_min(SMALL).log() + lp).exp().sum(-1)          # (B,)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        return -self.bag_probability(ctx.probs, ctx.cache, ctx.lm).clamp_min(SMALL).log()

    @torch.no_grad()
    def sequence_score(self, lm: LM, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Mean over generated positions of log p(bag | prefix) under the base LM (multi-token words by their
        first token, for cost)."""
        logits, _, _ = lm_forward(lm.model, ids)
        probs = logits[:, start - 1:-1].float().softmax(-1)                             # predicts ids[:, start:]
        ids_all = torch.cat([self.single_ids, self.first]).unique().to(probs.device)
        return probs[..., ids_all].sum(-1).clamp_min(SMALL).log().mean(-1)


# ----------------------------------------------------------------------------------------------------------
class Discriminator(AttributeModel):
    """A linear head on the mean last-layer hidden state of a frozen LM (paper §2.3).

    Args:
        hidden_size: d of the LM.
        classes: class names; ``class_label`` picks the target (an index or a name).
        fingerprint / lm_name: the LM the head was trained on (:func:`essence.pplm.lm.fingerprint`).
    """

    needs_hidden = True

    def __init__(self, hidden_size: int, classes, *, class_label: int | str = 0, fingerprint: str = "",
                 lm_name: str = ""):
        super().__init__()
        classes = list(classes)
        if len(classes) < 2:
            raise ValueError(f"a discriminator needs at least 2 classes, got {classes}")
        self.classes, self.fingerprint, self.lm_name = classes, fingerprint, lm_name
        self.hidden_size = int(hidden_size)
        self.head = nn.Linear(self.hidden_size, len(classes))
        self.class_label = self._label(class_label)

    def _label(self, label: int | str) -> int:
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.classes:
                raise ValueError(f"unknown class {label!r}; the discriminator has {self.classes}")
            return self.classes.index(label)
        i = int(label)
        if not 0 <= i < len(self.classes):
            raise ValueError(f"class_label must be in 0..{len(self.classes) - 1} ({self.classes}), got {i}")
        return i

    def with_label(self, label: int | str) -> Discriminator:
        self.class_label = self._label(label)
        return self

    def check(self, lm: LM) -> None:
        """Refuse an LM other than the one the head was trained on."""
        if lm.hidden_size != self.hidden_size:
            raise ValueError(f"this discriminator was trained on an LM with hidden size {self.hidden_size} "
                             f"({self.lm_name or 'unknown'}); the LM given has {lm.hidden_size}: retrain it with "
                             "`essence pplm train-discriminator` on this LM")
        if self.fingerprint and lm.fingerprint != self.fingerprint:
            raise ValueError(f"this discriminator was trained on another LM ({self.lm_name or 'unknown'}, fingerprint "
                             f"{self.fingerprint}; this LM: {lm.fingerprint}): retrain it on this LM")

    def forward(self, mean_hidden: torch.Tensor) -> torch.Tensor:
        """(B, d) mean hidden states -> (B, classes) logits."""
        return self.head(mean_hidden.to(self.head.weight.dtype))

    def loss(self, ctx: StepContext) -> torch.Tensor:
        model = ctx.lm.model
        emb = model.get_input_embeddings().weight                                        # (V, d)
        acc = ctx.hidden_last.detach().sum(1).float()                                    # official: detached
        if ctx.acc_hidden is not None:
            acc = acc + ctx.acc_hidden.float()
        soft = ctx.probs[:, None, :]                                                     # (B, 1, V)
        cache = make_cache(ctx.unpert_layers)
        for _ in range(ctx.horizon):
            logits, cache, hid = lm_forward(model, inputs_embeds=soft.to(emb.dtype) @ emb, cache=cache, hidden=True)
            acc = acc + hid.float().sum(1)
            soft = logits[:, -1:].float().softmax(-1)                                    # HF #13886: update it
        pred = self(acc / (ctx.past_length + 1 + ctx.horizon))
        target = torch.full((pred.shape[0],), self.class_label, device=pred.device, dtype=torch.long)
        return F.cross_entropy(pred, target, reduction="none")

    @torch.no_grad()
    def sequence_score(self, lm: LM, ids: torch.Tensor, start: int) -> torch.Tensor:
        _, _, hid = lm_forward(lm.model, ids, hidden=True)
        return self(hid.float().mean(1)).log_softmax(-1)[:, self.class_label]

    def describe(self) -> str:
        return (f"discriminator ({len(self.classes)} classes {self.classes}, target "
                f"{self.classes[self.class_label]!r}, trained on {self.lm_name or 'unknown LM'})")

    # -- files ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file: the head's weight and bias, the classes and the LM's size and fingerprint."""
        from essence.core.checkpoint import save_safetensors_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"classes": json.dumps(self.classes), "hidden_size": str(self.hidden_size),
                "fingerprint": self.fingerprint, "lm_name": self.lm_name, "class_label": str(self.class_label),
                "kind": "essence.pplm.Discriminator"}
        return save_safetensors_atomic({"weight": self.head.weight.detach().contiguous().cpu(),
                                        "bias": self.head.bias.detach().contiguous().cpu()}, path, metadata=meta)

    @classmethod
    def load(cls, path: str | Path, *, class_label: int | str | None = None) -> Discriminator:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"discriminator file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
        except Exception as err:
            raise ValueError(f"{path} is not a discriminator written by essence pplm ({err})") from None
        if meta.get("kind") != "essence.pplm.Discriminator":
            raise ValueError(f"{path} is not a discriminator written by essence pplm (metadata kind missing)")
        d = cls(int(meta["hidden_size"]), json.loads(meta["classes"]), fingerprint=meta.get("fingerprint", ""),
                lm_name=meta.get("lm_name", ""),
                class_label=int(meta.get("class_label", 0)) if class_label is None else class_label)
        with torch.no_grad():
            d.head.weight.copy_(weight)
            d.head.bias.copy_(bias)
        return d


# ----------------------------------------------------------------------------------------------------------
class Combined(AttributeModel):
    """A weighted sum of attribute losses (``BoW + discrim``); running-max normalisation only if all are BoWs."""

    def __init__(self, parts):
        super().__init__()
        parts = list(parts)
        if not parts:
            raise ValueError("Combined needs at least one attribute model")
        self.parts = nn.ModuleList(p for p, _ in parts)
        self.weights = [float(w) for _, w in parts]
        self.needs_hidden = any(p.needs_hidden for p in self.parts)
        self.running_norm = all(p.running_norm for p in self.parts)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        return sum(w * p.loss(ctx) for p, w in zip(self.parts, self.weights))

    def sequence_score(self, lm: LM, ids: torch.Tensor, start: int) -> torch.Tensor:
        return sum(w * p.sequence_score(lm, ids, start) for p, w in zip(self.parts, self.weights))

    def describe(self) -> str:
        return " + ".join(f"{w:g} x {p.describe()}" for p, w in zip(self.parts, self.weights))
