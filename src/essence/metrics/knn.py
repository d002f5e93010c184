"""Weighted k-nearest-neighbour classification of embeddings (the kNN monitor of self-supervised learning).

Wu et al. (2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination") and the official
MoCo CIFAR-10 demo: L2-normalise the features, take each test feature's top-k = 200 neighbours in the training
bank by cosine similarity s, weight each neighbour by exp(s / t) with t = 0.1, sum the weights per class, and
predict the argmax. Ties between classes go to the lower class index (``argmax``).

    scores = knn_scores(test_feats, bank_feats, bank_labels, num_classes=10)       # (N, 10)
    acc = knn_accuracy(test_feats, test_labels, bank_feats, bank_labels, num_classes=10)
    m = KNNAccuracy(bank_feats, bank_labels, num_classes=10); m.update(f, y); m.compute()

When the bank holds fewer than ``k`` samples, all of them are used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from essence.metrics.base import Metric

__all__ = ["knn_scores", "knn_predict", "knn_accuracy", "KNNAccuracy"]


def _validate(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
              k: int, t: float) -> None:
    if features.ndim != 2 or bank.ndim != 2 or features.shape[1] != bank.shape[1]:
        raise ValueError(f"expected features (N, D) and bank (M, D) with the same D, got {tuple(features.shape)} "
                         f"and {tuple(bank.shape)}")
    if bank_labels.ndim != 1 or bank_labels.shape[0] != bank.shape[0]:
        raise ValueError(f"bank_labels must have shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("the feature bank is empty")
    if bank_labels.is_floating_point():
        raise ValueError(f"bank_labels must be integer class indices, got dtype {bank_labels.dtype}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if int(bank_labels.min()) < 0 or int(bank_labels.max()) >= num_classes:
        raise ValueError(f"bank_labels must be in 0..{num_classes - 1}, got "
                         f"{int(bank_labels.min())}..{int(bank_labels.max())}")
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not t > 0:
        raise ValueError(f"temperature t must be positive, got {t!r}")
    if torch.isnan(features).any() or torch.isnan(bank).any():
        raise ValueError("features contain NaN")


@torch.no_grad()
def knn_scores(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, *,
               k: int = 200, t: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Per-class scores sum_{j in top-k} exp(s_j / t) [y_j = c]. Shapes: (N, D), (M, D), (M,) -> (N, num_classes).

    Features and bank are L2-normalised here (cosine similarity); ``chunk`` rows are scored at a time.
    """
    _validate(features, bank, bank_labels, num_classes, k, t)
    k = min(int(k), bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.to(bank.device).long()
    out = []
    for start in range(0, features.shape[0], chunk):
        f = F.normalize(features[start:start + chunk].float().to(bank.device), dim=1)
        sim = f @ bank.T                                           # (n, M)
        weight, idx = sim.topk(k, dim=1)                           # (n, k)
        weight = (weight / t).exp()
        scores = torch.zeros(f.shape[0], num_classes, device=bank.device, dtype=weight.dtype)
        scores.scatter_add_(1, labels[idx], weight)
        out.append(scores)
    if not out:
        return torch.zeros(0, num_classes, device=bank.device)
    return torch.cat(out)


def knn_predict(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, *,
                k: int = 200, t: float = 0.1) -> torch.Tensor:
    """Predicted class per feature, (N,)."""
    return knn_scores(features, bank, bank_labels, num_classes, k=k, t=t).argmax(dim=1)


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 num_classes: int, *, k: int = 200, t: float = 0.1) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of the weighted kNN classifier."""
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() == 0:
        return float("nan")
    pred = knn_predict(features, bank, bank_labels, num_classes, k=k, t=t)
    return float((pred.cpu() == labels.cpu()).float().mean())


class KNNAccuracy(Metric):
    """Weighted-kNN top-1 accuracy accumulated over batches and processes (the bank is fixed)."""

    def __init__(self, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, *, k: int = 200,
                 t: float = 0.1) -> None:
        super().__init__()
        _validate(bank[:1], bank, bank_labels, num_classes, k, t)
        self.bank, self.bank_labels = bank, bank_labels
        self.num_classes, self.k, self.t = int(num_classes), int(k), float(t)
        self.add_state("correct", torch.tensor(0.0, dtype=torch.float64), reduce="sum")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), reduce="sum")

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
        pred = knn_predict(features, self.bank, self.bank_labels, self.num_classes, k=self.k, t=self.t)
        self.correct = self.correct + (pred.cpu() == labels.cpu()).sum().double()
        self.total = self.total + labels.numel()

    def _compute(self, correct: torch.Tensor, total: torch.Tensor) -> float:
        return float(correct / total) if total > 0 else float("nan")
