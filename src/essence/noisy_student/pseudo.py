"""Pseudo labels from the un-noised teacher, and the official filter / balance step (Xie et al. 2019, §2.3).

- :func:`pseudo_label`: the teacher in **eval mode** (no dropout, no stochastic depth, BN running statistics, no
  augmentation) labels the unlabeled images: soft ``softmax(logits / T)`` or hard (argmax; the loss then uses
  label smoothing). Under torchrun the images are sharded over processes and the logits all-gathered.
- :func:`filter_and_balance`: ``filter_unlabel.py`` with ``--use_top 1``: per *predicted* class, scan thresholds
  1.00, 0.99, ..., ``threshold`` and keep the images at or above the first one that reaches ``per_class`` images
  (all images >= ``threshold`` when none does); every kept image gets ``per_class / kept`` copies, rounded
  stochastically (``floor(c) + Bernoulli(frac(c))``), so crowded classes are down-sampled at random and rare
  ones duplicated (``upsample=False`` caps the copies at 1). ``balance=False`` is ``--use_all``: every image above
  the threshold, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from essence.core import distributed as dist

__all__ = ["PseudoLabels", "pseudo_label", "filter_and_balance", "targets_from_logits"]


@dataclass
class PseudoLabels:
    """The student's unlabeled training set: ``index`` into the unlabeled images (with duplicates after
    balancing) and one target row per unlabeled image (soft probabilities or a one-hot hard label)."""

    index: torch.Tensor           # int64 (k,): rows of the unlabeled set, duplicates allowed
    targets: torch.Tensor         # float32 (m, C): per unlabeled image
    confidence: torch.Tensor      # float32 (m,): the teacher's top-class probability
    predicted: torch.Tensor       # int64 (m,): the teacher's class
    label_type: str = "soft"

    def stats(self) -> dict[str, object]:
        C = self.targets.shape[1]
        kept = torch.bincount(self.predicted[self.index], minlength=C)
        unique = int(torch.unique(self.index).numel())
        return {"unlabeled": int(self.targets.shape[0]), "kept_unique": unique, "kept_total": int(self.index.numel()),
                "per_class": kept.tolist(), "mean_confidence": float(self.confidence.mean())}


def targets_from_logits(logits: torch.Tensor, label_type: str = "soft", temperature: float = 1.0) -> torch.Tensor:
    """Soft: ``softmax(logits / T)``; hard: one-hot of the argmax."""
    if label_type == "soft":
        return torch.softmax(logits.float() / temperature, dim=1)
    if label_type == "hard":
        return torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).float()
    raise ValueError(f"label_type must be 'soft' or 'hard', got {label_type!r}")


def filter_and_balance(probs: torch.Tensor | np.ndarray, *, threshold: float = 0.3, per_class: int = 0,
                       balance: bool = True, upsample: bool = True, seed: int = 0) -> np.ndarray:
    """Indices (with duplicates) of the unlabeled images the student trains on; see the module docstring.

    Args:
        probs: (m, C) teacher probabilities (the un-tempered softmax decides confidence and class).
        threshold: minimum top-class confidence (``--min_threshold``).
        per_class: images per class after balancing (``--num_image``); 0 = m / C.
        balance: the threshold scan + stochastic copies (``--use_top``); False = every image above threshold once.
        upsample: allow more than one copy (``--upsample``).
        seed: the stochastic rounding's generator.
    """
    p = np.asarray(probs.detach().cpu().numpy() if torch.is_tensor(probs) else probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty (m, C) array, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or infinite values")
    conf, pred = p.max(1), p.argmax(1)
    m, C = p.shape
    if not balance:
        return np.flatnonzero(conf >= threshold).astype(np.int64)
    target = per_class or max(1, m // C)
    rng = np.random.default_rng(seed)
    lowest = int(np.ceil(round(threshold * 100, 6)))
    # thresholds as whole hundredths (1.00, 0.99, ...): exact comparisons, as the official float loop intends
    conf_hundredths = conf * 100
    out = []
    for c in range(C):
        members = np.flatnonzero(pred == c)
        if members.size == 0:
            continue
        cc = conf_hundredths[members]
        kept = members[cc >= lowest - 1e-9]
        for k in range(100, lowest - 1, -1):
            at = members[cc >= k - 1e-9]
            if at.size >= target:
                kept = at
                break
        if kept.size == 0:
            continue
        copies = target / kept.size
        if not upsample:
            copies = min(copies, 1.0)
        n_copies = np.floor(copies) + (rng.random(kept.size) < copies - np.floor(copies))
        out.append(np.repeat(kept, n_copies.astype(np.int64)))
    return np.sort(np.concatenate(out)).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


@torch.no_grad()
def pseudo_label(teacher: torch.nn.Module, images: torch.Tensor, *, label_type: str = "soft",
                 temperature: float = 1.0, threshold: float = 0.3, per_class: int = 0, balance: bool = True,
                 upsample: bool = True, seed: int = 0, batch_size: int = 1000, precision=None,
                 device: torch.device | str | None = None) -> PseudoLabels:
    """Label uint8 ``images`` (m, C, H, W) with the un-noised ``teacher`` and filter / balance them.

    Runs the teacher in eval mode (restored afterwards). With several processes each labels a contiguous
    shard and the logits are all-gathered, so every process returns the same :class:`PseudoLabels`.
    """
    from essence.noisy_student.data import normalize
    from essence.noisy_student.model import predict_logits

    m = images.shape[0]
    if m == 0:
        raise ValueError("no unlabeled images to label")
    world, rank = dist.get_world_size(), dist.get_rank()
    per = -(-m // world)
    shard = images[rank * per:(rank + 1) * per]
    logits = predict_logits(teacher, normalize(shard), batch_size=batch_size, precision=precision, device=device)
    if world > 1:
        dev = next(teacher.parameters()).device
        padded = torch.zeros(per, logits.shape[1]) if logits.shape[0] < per else logits
        if logits.shape[0] < per:
            padded[:logits.shape[0]] = logits
        logits = dist.all_gather(padded.to(dev)).cpu()[:m]
    probs = torch.softmax(logits, dim=1)
    index = filter_and_balance(probs, threshold=threshold, per_class=per_class, balance=balance, upsample=upsample,
                               seed=seed)
    if index.size == 0:
        raise ValueError(f"no unlabeled image reaches the confidence threshold {threshold} (max confidence "
                         f"{float(probs.max(1).values.max()):.3f}); lower pseudo.threshold")
    return PseudoLabels(index=torch.from_numpy(index), targets=targets_from_logits(logits, label_type, temperature),
                        confidence=probs.max(1).values, predicted=probs.argmax(1), label_type=label_type)
