"""Ranking metrics for retrieval: R@k of C candidates and mean reciprocal rank (MRR).

Conventions (Humeau et al. 2019, §4 of the card): each row of ``scores`` holds the scores of the C candidates
of one query and ``target`` the column of the gold candidate. The gold candidate's rank is 1 + the number of
candidates scored strictly higher, plus half of the *other* candidates with an equal score (ties are shared,
so a constant scorer gets the chance-level expected rank instead of rank 1). R@k/C is the fraction of queries
whose gold rank is <= k; MRR is the mean of 1 / rank. NaN scores raise ``ValueError``.

    recall_at_k(scores, target, k=1)        # R@1/C of one batch
    m = RetrievalMetrics(ks=(1, 5)); m.update(scores, target); m.compute()   # {"R@1/20": .., "MRR": ..}
"""

from __future__ import annotations

import torch

from essence.metrics.base import Metric

__all__ = ["gold_rank", "recall_at_k", "mrr", "RetrievalMetrics"]


def _validate(scores: torch.Tensor, target: torch.Tensor) -> None:
    if scores.ndim != 2 or target.ndim != 1 or scores.shape[0] != target.shape[0]:
        raise ValueError(f"expected scores (N, C) and target (N,), got {tuple(scores.shape)} and "
                         f"{tuple(target.shape)}")
    if scores.shape[1] == 0:
        raise ValueError("scores has no candidates (C = 0)")
    if target.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"target must hold integer candidate indices, got dtype {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= scores.shape[1]):
        raise ValueError(f"target indices must be in 0..{scores.shape[1] - 1}, got "
                         f"{int(target.min())}..{int(target.max())}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")


def gold_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 1-based rank of each gold candidate (float; ties count half). Shape: (N, C), (N,) -> (N,)."""
    _validate(scores, target)
    scores = scores.detach().double()
    gold = scores.gather(1, target.long()[:, None])
    higher = (scores > gold).sum(1).double()
    ties = (scores == gold).sum(1).double() - 1
    return 1 + higher + ties / 2


def recall_at_k(scores: torch.Tensor, target: torch.Tensor, k: int = 1) -> torch.Tensor:
    """R@k/C: fraction of rows whose gold candidate's (tie-averaged) rank is <= ``k``."""
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k must be in 1..{scores.shape[-1]} (the number of candidates), got {k}")
    return _hits(gold_rank(scores, target), k).mean() if target.numel() else torch.tensor(float("nan"))


def _hits(rank: torch.Tensor, k: int) -> torch.Tensor:
    return (rank <= k).double()


def mrr(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean reciprocal rank of the gold candidates."""
    return (1 / gold_rank(scores, target)).mean() if target.numel() else torch.tensor(float("nan"))


class RetrievalMetrics(Metric):
    """R@k/C for each k and MRR accumulated over batches and processes (all batches must share C)."""

    def __init__(self, ks: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks}")
        self.ks = tuple(int(k) for k in ks)
        self.num_candidates: int | None = None
        self.add_state("ranks", [], reduce="cat")

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        if self.num_candidates is not None and scores.shape[-1] != self.num_candidates:
            raise ValueError(f"every batch must have the same number of candidates: {self.num_candidates} "
                             f"before, {scores.shape[-1]} now")
        if max(self.ks) > scores.shape[-1]:
            raise ValueError(f"k = {max(self.ks)} exceeds the {scores.shape[-1]} candidates")
        self.num_candidates = scores.shape[-1]
        self.ranks.append(gold_rank(scores, target).cpu())

    def _compute(self, ranks: torch.Tensor) -> dict[str, float]:
        c = self.num_candidates or 0
        if ranks.numel() == 0:
            return {**{f"R@{k}/{c}": float("nan") for k in self.ks}, "MRR": float("nan")}
        out = {f"R@{k}/{c}": float(_hits(ranks, k).mean()) for k in self.ks}
        out["MRR"] = float((1 / ranks).mean())
        return out
