"""The linear classification protocol on frozen features (He et al. 2019, MoCo §4.1; ``main_lincls.py``).

A single fully connected layer + softmax is trained on frozen, pre-extracted features with SGD (momentum 0.9),
learning rate 30, no weight decay, and a step schedule (x0.1 at 60% and 80% of the epochs: the paper's 60/80 of
100 epochs). The fc weight starts at N(0, 0.01) and the bias at 0, as in ``main_lincls.py``.

*Scaled to the data:* features are extracted once (the encoder in eval mode, no augmentation), whereas the paper
re-extracts with RandomResizedCrop + flip every epoch; and the number of epochs is a parameter. When several
learning rates are given, the best is chosen on a held-out part of the training features (the paper's grid
search chose 30), and the test accuracy of that run is reported.

    res = linear_probe(train_x, train_y, test_x, test_y, num_classes=10, epochs=10)
    res["test_top1"], res["lr"]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["linear_probe", "train_linear"]


def _check(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: expected features (N, D) and labels (N,), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or inf")


def train_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int = 100, lr: float = 30.0,
                 momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int = 256,
                 milestones: tuple[float, ...] = (0.6, 0.8), seed: int = 0) -> nn.Linear:
    """Train the fc layer on features ``x`` (N, D) with labels ``y`` (N,); returns it (on x's device)."""
    _check(x, y, "train")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}")
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():
        fc.weight.normal_(0.0, 0.01, generator=gen)
        fc.bias.zero_()
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    marks = [int(round(m * epochs)) for m in milestones]
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * 0.1 ** sum(epoch >= m for m in marks)
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(fc(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return fc


@torch.no_grad()
def _accuracy(fc: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((fc(x).argmax(1) == y).float().mean())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, *, epochs: int = 100, lrs: tuple[float, ...] = (30.0,),
                 batch_size: int = 256, val_fraction: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 0.0, seed: int = 0, return_predictions: bool = False) -> dict[str, float]:
    """Run the protocol; returns ``{"test_top1", "train_top1", "lr"}`` (+ ``"val_top1"`` with a grid).

    With several ``lrs``, each is trained on the training features minus a held-out ``val_fraction`` (drawn with
    ``seed``), the one with the best held-out accuracy is kept (the first on a tie), and the classifier is then
    retrained on all training features; the test features are never used for the choice.
    ``return_predictions=True`` adds ``"test_pred"``: the predicted class of every test feature (an int64 tensor),
    for paired comparisons of two feature sets on the same test items.

    Raises:
        ValueError: malformed features / labels, non-finite features, or an empty grid.
    """
    _check(train_x, train_y, "train")
    _check(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features have {train_x.shape[1]} dims but test features {test_x.shape[1]}")
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    train_x, test_x = train_x.float(), test_x.float()
    train_y, test_y = train_y.long(), test_y.long()
    kw = dict(epochs=epochs, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed)
    out: dict[str, float] = {}
    lr = float(lrs[0])
    if len(lrs) > 1:
        n_val = max(1, int(round(val_fraction * train_x.shape[0])))
        perm = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(seed + 1))
        val, fit = perm[:n_val].to(train_x.device), perm[n_val:].to(train_x.device)
        best = -1.0
        for cand in lrs:
            fc = train_linear(train_x[fit], train_y[fit], num_classes, lr=float(cand), **kw)
            acc = _accuracy(fc, train_x[val], train_y[val])
            if acc > best:
                best, lr = acc, float(cand)
        out["val_top1"] = best
    fc = train_linear(train_x, train_y, num_classes, lr=lr, **kw)
    out.update(test_top1=_accuracy(fc, test_x, test_y), train_top1=_accuracy(fc, train_x, train_y), lr=lr)
    if return_predictions:
        with torch.no_grad():
            out["test_pred"] = fc(test_x).argmax(1).cpu()
    return out
