"""Improved precision and recall of generative models (Kynkäänniemi, Karras, Laine, Lehtinen, Aila; NeurIPS 2019).

Each set of features approximates its manifold by the union of hyperspheres around its points, the radius of a
point being the distance to its k-th nearest neighbour within the same set (k = 3 in the paper; the point
itself does not count). Then

    precision = fraction of generated samples that fall inside the manifold of the real samples
    recall    = fraction of real samples that fall inside the manifold of the generated samples

A point lies inside a manifold when its distance to some point of the other set is at most that point's radius
(the boundary counts as inside). Distances are Euclidean in the given feature space (the paper uses VGG-16
fc2 features; callers choose the network). Computed in float64, in blocks, so memory is O(block * N).

    pr = precision_recall(real_feats, fake_feats, k=3)   # {"precision": 0.71, "recall": 0.55}
    m = PrecisionRecall(k=3); m.update(real, real=True); m.update(fake, real=False); m.compute()
"""

from __future__ import annotations

import torch

from essence.metrics.base import Metric

__all__ = ["knn_radii", "manifold_membership", "precision_recall", "PrecisionRecall"]


def _check(features: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(features) or features.ndim != 2:
        shape = tuple(features.shape) if torch.is_tensor(features) else type(features).__name__
        raise ValueError(f"expected `{name}` to be features of shape (N, D), but got {shape}")
    if not torch.isfinite(features).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")
    return features.detach().double()


def knn_radii(features: torch.Tensor, k: int = 3, *, block: int = 1024) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in the same set, the point itself excluded.

    Shape: (N, D) -> (N,). Raises ValueError unless 1 <= k < N.
    """
    x = _check(features, "features")
    n = x.shape[0]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in 1..{n - 1} for {n} points, got {k!r}")
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, block):
        d = torch.cdist(x[start:start + block], x)                             # (b, N)
        # the k+1 smallest include the point itself (distance 0) -> the (k+1)-th smallest is the k-th neighbour
        out[start:start + block] = d.kthvalue(k + 1, dim=1).values
    return out


def manifold_membership(query: torch.Tensor, reference: torch.Tensor, radii: torch.Tensor, *,
                        block: int = 1024) -> torch.Tensor:
    """For each query point, whether some reference point r_j has ||q - r_j|| <= radius_j. (M, D) -> bool (M,)."""
    q, r = _check(query, "query"), _check(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference features must have the same D, got {q.shape[1]} and {r.shape[1]}")
    if radii.shape != (r.shape[0],):
        raise ValueError(f"radii must have shape ({r.shape[0]},), got {tuple(radii.shape)}")
    rad = radii.double()
    out = torch.empty(q.shape[0], dtype=torch.bool)
    for start in range(0, q.shape[0], block):
        d = torch.cdist(q[start:start + block], r)                             # (b, R)
        out[start:start + block] = (d <= rad[None, :]).any(dim=1)
    return out


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, *, block: int = 1024) -> dict[str, float]:
    """``{"precision", "recall"}`` of generated features ``fake`` (M, D) against real features ``real`` (N, D)."""
    real, fake = _check(real, "real"), _check(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features must have the same D, got {real.shape[1]} and {fake.shape[1]}")
    precision = manifold_membership(fake, real, knn_radii(real, k, block=block), block=block).double().mean()
    recall = manifold_membership(real, fake, knn_radii(fake, k, block=block), block=block).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


class PrecisionRecall(Metric):
    """Accumulate real and generated features over batches (and torchrun processes), then compute."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.add_state("real", [], reduce="cat")
        self.add_state("fake", [], reduce="cat")

    def update(self, features: torch.Tensor, *, real: bool) -> None:
        feats = _check(features, "features")
        (self.real if real else self.fake).append(feats.cpu())

    def _compute(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        return precision_recall(real, fake, self.k)
