"""The accuracy ordering where it is built in (card §7.2): a synthetic retrieval task whose answer needs the
candidate to look into the context.

Context: ``[CLS] x_1 ... x_F [SEP]``, F distinct items out of ``items``. Candidate: ``[CLS] x [SEP]``; it is gold
when the context holds x, and the ``candidates`` - 1 test distractors are items the context does not hold. Scoring
is a candidate-conditioned lookup: a single d-dimensional context vector must superpose all F items (with F items
the interference grows like sqrt(F / d), the bi-encoder's bottleneck), m context vectors can each hold F / m of
them and let the candidate pick the one that matches (the poly-encoder: larger m, less interference), and joint
attention compares the candidate with every context token directly (the cross-encoder).

Every architecture gets the same tiny transformer (random init, :class:`transformers.BertModel`), the same steps
of B fresh contexts each, the same optimiser and learning rate. bi / poly are trained with the B - 1 in-batch
negatives of the paper; the cross-encoder with ``cross_negatives`` of those same in-batch labels per context
(its inline negatives). Training data are drawn fresh every step (no overfitting); the test contexts and their
distractors are fixed by ``test_seed``, the same for every arm and every seed.

    res = run_arm("poly-16", SyntheticConfig(), seed=0)   # {"hits": (n_test,) 0/1 R@1 per context, ...}
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from essence.core.progress import ProgressBar
from essence.polyencoder.config import SyntheticConfig
from essence.polyencoder.loss import in_batch_loss, inline_loss
from essence.polyencoder.model import BiEncoder, CrossEncoder, PolyEncoder, TransformerEncoder

__all__ = ["FactTask", "build_arm", "run_arm", "arm_names"]

PAD, CLS, SEP = 0, 1, 2


@dataclass
class FactTask:
    """Samples contexts (B, F + 2) of distinct items, gold candidates (B, 3) and test distractors."""

    facts: int
    items: int

    def __post_init__(self):
        if self.facts < 1 or self.items <= self.facts:
            raise ValueError(f"synthetic.items ({self.items}) must exceed synthetic.facts ({self.facts}) >= 1")

    @property
    def vocab(self) -> int:
        return 3 + self.items

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(contexts, golds, held)``: token tensors and the (n, F) items each context holds."""
        held = torch.rand(n, self.items, generator=gen).argsort(1)[:, : self.facts]          # distinct items
        ctx = torch.cat([torch.full((n, 1), CLS), 3 + held, torch.full((n, 1), SEP)], 1)
        which = torch.randint(self.facts, (n,), generator=gen)
        return ctx, self.candidates(held[torch.arange(n), which]), held

    @staticmethod
    def candidates(x: torch.Tensor) -> torch.Tensor:
        """``[CLS] x [SEP]`` for items of any shape (...,) -> (..., 3)."""
        return torch.stack([torch.full_like(x, CLS), 3 + x, torch.full_like(x, SEP)], -1)

    def test_set(self, n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n contexts with ``size`` candidates each, gold first; distractors are items the context does not hold.
        Returns ``(contexts (n, F + 2), candidates (n, size, 3))``."""
        if size - 1 > self.items - self.facts:
            raise ValueError(f"{size - 1} distractors need items - facts >= {size - 1}")
        gen = torch.Generator().manual_seed(seed)
        ctx, gold, held = self.sample(n, gen)
        # rank the items not held by a random key: held items get +inf and sort last
        key = torch.rand(n, self.items, generator=gen).scatter(1, held, float("inf"))
        distract = key.argsort(1)[:, : size - 1]
        return ctx, torch.cat([gold[:, None], self.candidates(distract)], 1)


def arm_names(cfg: SyntheticConfig) -> list[str]:
    return ["bi", *(f"poly-{m}" for m in cfg.poly_ms), "cross"]


def _encoder(cfg: SyntheticConfig, vocab: int) -> TransformerEncoder:
    from transformers import BertConfig, BertModel

    bert = BertConfig(vocab_size=vocab, hidden_size=cfg.dim, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=4 * cfg.dim, max_position_embeddings=64,
                      type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return TransformerEncoder(BertModel(bert, add_pooling_layer=False))


def build_arm(name: str, cfg: SyntheticConfig, task: FactTask, seed: int):
    """A freshly initialised bi / poly-m / cross model for the task (separate towers; ``cfg.reduction`` for
    bi / poly, the first output for cross)."""
    torch.manual_seed(seed)
    if name == "cross":
        return CrossEncoder(_encoder(cfg, task.vocab), reduction="first")
    ctxt, cand = _encoder(cfg, task.vocab), _encoder(cfg, task.vocab)
    if name == "bi":
        return BiEncoder(ctxt, cand, reduction=cfg.reduction)
    if not name.startswith("poly-"):
        raise ValueError(f"unknown synthetic arm {name!r}; expected bi, poly-<m> or cross")
    return PolyEncoder(ctxt, cand, reduction=cfg.reduction, m=int(name[5:]), codes_init="normal",
                       codes_init_std=cfg.dim ** -0.5)


def _pairs(ctx: torch.Tensor, cand: torch.Tensor):
    """Cross-encoder input for contexts (N, L) and candidates (N, 3): ``[CLS] ctx [SEP] x [SEP]``."""
    ids = torch.cat([ctx, cand[:, 1:]], 1)
    seg = torch.cat([torch.zeros_like(ctx), torch.ones_like(cand[:, 1:])], 1)
    return ids, torch.ones_like(ids), seg


@torch.inference_mode()
def _test_hits(model, ctx: torch.Tensor, cands: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """R@1 per test context (1 when the gold, column 0, scores strictly highest; ties count as misses)."""
    model.eval()
    n, size, _ = cands.shape
    hits = []
    for s in range(0, n, batch):
        c, k = ctx[s:s + batch], cands[s:s + batch]
        if model.architecture == "cross":
            b = c.shape[0]
            ids, mask, seg = _pairs(c.repeat_interleave(size, 0), k.reshape(b * size, -1))
            scores = model(ids, mask, seg).float().view(b, size)
        else:
            rep, rep_mask = model.encode_context(c, torch.ones_like(c))
            flat = k.reshape(-1, k.shape[-1])
            vec = model.encode_candidates(flat, torch.ones_like(flat)).view(c.shape[0], size, -1)
            scores = model.score(rep, rep_mask, vec)
        hits.append((scores[:, 1:] < scores[:, :1]).all(1).double())
    return torch.cat(hits)


def run_arm(name: str, cfg: SyntheticConfig, seed: int, *, progress: bool = True) -> dict:
    """Train arm ``name`` with training seed ``seed``; score the fixed test set. Returns per-context hits.

    Runs on one CPU thread: the tiny model's ops are too small for intra-op parallelism, and extra threads only
    spin (several times slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_arm(name, cfg, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _run_arm(name: str, cfg: SyntheticConfig, seed: int, progress: bool) -> dict:
    task = FactTask(cfg.facts, cfg.items)
    test_ctx, test_cands = task.test_set(cfg.test_contexts, cfg.candidates, seed=cfg.test_seed)
    model = build_arm(name, cfg, task, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    warm = max(1, cfg.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(   # linear warm-up over 10% of the steps, then linear decay to 0
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm)))
    gen = torch.Generator().manual_seed(10007 * seed + 1)
    B, K = cfg.batch_size, min(cfg.cross_negatives, cfg.batch_size - 1)
    t0 = time.perf_counter()
    losses = []
    model.train()
    with ProgressBar(total=cfg.steps, desc=f"synthetic {name} s{seed}", unit="step", disable=not progress) as bar:
        for _ in range(cfg.steps):
            ctx, gold, _ = task.sample(B, gen)
            if name == "cross":
                # inline negatives: K of the other contexts' labels in the batch (what bi / poly see as negatives)
                offs = torch.rand(B, B - 1, generator=gen).argsort(1)[:, :K] + 1          # 1..B-1
                neg = (torch.arange(B)[:, None] + offs) % B                                 # (B, K)
                cand = torch.cat([gold[:, None], gold[neg]], 1).reshape(B * (K + 1), -1)
                ids, mask, seg = _pairs(ctx.repeat_interleave(K + 1, 0), cand)
                loss = inline_loss(model(ids, mask, seg).view(B, K + 1))
            else:
                rep, rep_mask = model.encode_context(ctx, torch.ones_like(ctx))
                vec = model.encode_candidates(gold, torch.ones_like(gold))
                loss = in_batch_loss(model.score(rep, rep_mask, vec))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1, loss=losses[-1])
    train_s = time.perf_counter() - t0
    hits = _test_hits(model, test_ctx, test_cands)
    return {"hits": hits.numpy(), "r1": float(hits.mean()), "train_s": train_s,
            "final_loss": sum(losses[-20:]) / len(losses[-20:])}
