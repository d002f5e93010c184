"""The metric pattern: a pure function for one batch, and an accumulating class reduced across processes.

A metric class declares its running state with :meth:`Metric.add_state` and how each piece combines across
processes (``sum``, ``cat``, ``max``, ``min``). ``update()`` folds a batch into the state on the local process;
``compute()`` reduces the state over all torchrun processes (a no-op in one process) and returns the value.

    class Accuracy(Metric):
        def __init__(self):
            super().__init__()
            self.add_state("correct", torch.tensor(0.0), reduce="sum")
            self.add_state("total", torch.tensor(0.0), reduce="sum")

        def update(self, logits, target):
            self.correct += (logits.argmax(-1) == target).sum()
            self.total += target.numel()

        def _compute(self, correct, total):
            return correct / total
"""

from __future__ import annotations

from typing import Any

import torch

from essence.core import distributed as dist

__all__ = ["Metric", "Mean", "Accuracy", "accuracy"]

_REDUCTIONS = ("sum", "cat", "max", "min")


class Metric:
    """Base class: accumulate with ``update``, read with ``compute`` (synchronised across processes)."""

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}
        self._reduce: dict[str, str] = {}

    def add_state(self, name: str, default: torch.Tensor | list, reduce: str = "sum") -> None:
        """Declare a piece of state. ``cat`` states are lists of tensors concatenated along dim 0."""
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
        if reduce == "cat":
            if not isinstance(default, list) or default:
                raise ValueError("a 'cat' state starts as an empty list")
        elif not torch.is_tensor(default):
            raise ValueError(f"state {name!r} default must be a tensor, got {type(default).__name__}")
        self._defaults[name] = default
        self._reduce[name] = reduce
        setattr(self, name, self._fresh(default))

    @staticmethod
    def _fresh(default: torch.Tensor | list) -> torch.Tensor | list:
        return [] if isinstance(default, list) else default.detach().clone()

    def reset(self) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, self._fresh(default))

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute(self, **state: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def synced_state(self) -> dict[str, Any]:
        """The state reduced over all processes (``cat`` states concatenated in rank order)."""
        out: dict[str, Any] = {}
        for name, reduce in self._reduce.items():
            value = getattr(self, name)
            if reduce == "cat":
                local = torch.cat(value, dim=0) if value else torch.empty(0)
                out[name] = _gather_variable(local)
            else:
                out[name] = dist.all_reduce(value, op=reduce)
        return out

    def compute(self) -> Any:
        return self._compute(**self.synced_state())


def _gather_variable(local: torch.Tensor) -> torch.Tensor:
    """all_gather for tensors whose first dimension differs between processes."""
    if not dist.is_distributed():
        return local
    n = torch.tensor([local.shape[0]], dtype=torch.long, device=local.device)
    sizes = dist.all_gather(n).tolist()
    biggest = max(sizes)
    padded = torch.zeros((biggest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    gathered = dist.all_gather(padded)
    parts = [gathered[i * biggest : i * biggest + s] for i, s in enumerate(sizes)]
    return torch.cat(parts, dim=0)


def accuracy(logits: torch.Tensor, target: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Top-k accuracy of one batch. Shapes: logits (N, C), target (N,)."""
    if logits.ndim != 2 or target.ndim != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"expected logits (N, C) and target (N,), got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be in 1..{logits.shape[1]}, got {k}")
    topk = logits.topk(k, dim=1).indices
    return (topk == target[:, None]).any(dim=1).float().mean()


class Accuracy(Metric):
    """Top-k accuracy over many batches and processes."""

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.k = k
        self.add_state("correct", torch.tensor(0.0, dtype=torch.float64), reduce="sum")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), reduce="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.correct = self.correct + accuracy(logits, target, self.k).double() * target.numel()
        self.total = self.total + target.numel()

    def _compute(self, correct: torch.Tensor, total: torch.Tensor) -> float:
        return float(correct / total) if total > 0 else float("nan")


class Mean(Metric):
    """A running (weighted) mean of scalars or tensors, e.g. a loss."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), reduce="sum")
        self.add_state("weight", torch.tensor(0.0, dtype=torch.float64), reduce="sum")

    def update(self, value: torch.Tensor | float, weight: float = 1.0) -> None:
        value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        self.total = self.total + value.sum() * weight
        self.weight = self.weight + value.numel() * weight

    def _compute(self, total: torch.Tensor, weight: torch.Tensor) -> float:
        return float(total / weight) if weight > 0 else float("nan")
