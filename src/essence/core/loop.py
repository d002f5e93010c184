"""The pieces of a training loop, to be composed by each method's ``train.py`` (no god-class trainer).

- :class:`Precision`: autocast + GradScaler (fp16 on CUDA) + clipping + optimizer step, in one place.
- :func:`accumulation_context`: DDP ``no_sync`` on all but the last micro-batch of a gradient-accumulation step.
- :func:`build_scheduler`: constant / warmup + cosine / step / linear schedules as a resumable ``LambdaLR``.
- :func:`check_finite`: stop on NaN/inf with a clear message (the last good checkpoint is kept).
- :class:`GracefulInterrupt`: Ctrl-C sets a flag so the loop can save a checkpoint and exit cleanly.
- :func:`should_run`: logging / eval / checkpoint cadence.

A typical step::

    prec = Precision("auto", device)
    for step in range(start, total):
        for i, batch in enumerate(micro_batches):
            with accumulation_context(model, i, len(micro_batches)), prec.autocast():
                loss = criterion(model(batch)) / len(micro_batches)
            prec.backward(loss)
        check_finite(loss, step)
        prec.step(optimizer, clip_norm=1.0)
        scheduler.step()
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch

__all__ = [
    "Precision",
    "accumulation_context",
    "build_scheduler",
    "lr_lambda",
    "check_finite",
    "NonFiniteLossError",
    "GracefulInterrupt",
    "should_run",
    "eval_mode",
]

PrecisionMode = Literal["auto", "fp32", "bf16", "fp16"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped (the last good checkpoint is kept)."""


def check_finite(loss: torch.Tensor | float, step: int, hint: str = "lower the learning rate") -> None:
    value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss is {value} at step {step}; training stopped and the last good checkpoint was kept ({hint})"
        )


class Precision:
    """Mixed precision for one device.

    ``auto`` means bf16 autocast on CUDA devices that support it (fp16 + GradScaler otherwise) and fp32 on the
    CPU; quick presets opt in to ``bf16`` on the CPU explicitly (about 2x faster on CPUs with AMX).
    """

    def __init__(self, mode: PrecisionMode = "auto", device: torch.device | str = "cpu"):
        if mode not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be one of auto, fp32, bf16, fp16, got {mode!r}")
        self.device = torch.device(device)
        if mode == "auto":
            if self.device.type == "cuda":
                mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                mode = "fp32"
        if mode == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 autocast needs a CUDA device; use bf16 on the CPU")
        self.mode = mode
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler("cuda", enabled=(mode == "fp16"))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, *, clip_norm: float | None = None,
             parameters: Iterable[torch.nn.Parameter] | None = None) -> float | None:
        """Unscale, clip (returns the total grad norm when clipping), step, update the scaler, zero grads."""
        norm = None
        if clip_norm is not None:
            self.scaler.unscale_(optimizer)
            params = parameters if parameters is not None else (
                p for group in optimizer.param_groups for p in group["params"])
            norm = float(torch.nn.utils.clip_grad_norm_(list(params), clip_norm))
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


def accumulation_context(model: torch.nn.Module, micro_step: int, accum_steps: int):
    """``model.no_sync()`` for every micro-batch but the last, when ``model`` is DDP; else a no-op."""
    if accum_steps > 1 and micro_step < accum_steps - 1 and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def lr_lambda(step: int, *, schedule: str, total_steps: int, warmup_steps: int = 0,
              milestones: Sequence[int] = (), gamma: float = 0.1, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based), linear warmup first.

    schedule: ``constant``, ``cosine`` (to ``min_ratio``), ``linear`` (to ``min_ratio``) or ``step``
    (multiply by ``gamma`` at each milestone).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise ValueError(f"schedule must be constant, cosine, linear or step, got {schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, *, warmup_steps: int = 0,
                    milestones: Sequence[int] = (), gamma: float = 0.1,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR (call ``.step()`` after every optimizer step). Its state_dict resumes exactly."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    lr_lambda(0, schedule=schedule, total_steps=total_steps)  # validates the name
    fn = _ScheduleFn(schedule, total_steps, warmup_steps, tuple(milestones), gamma, min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


class _ScheduleFn:
    """A picklable-free callable (LambdaLR stores only its own counters in state_dict)."""

    def __init__(self, schedule, total_steps, warmup_steps, milestones, gamma, min_ratio):
        self.kw = dict(schedule=schedule, total_steps=total_steps, warmup_steps=warmup_steps,
                       milestones=milestones, gamma=gamma, min_ratio=min_ratio)

    def __call__(self, step: int) -> float:
        return lr_lambda(step, **self.kw)


class GracefulInterrupt:
    """Turn the first Ctrl-C into a flag (``.requested``) so the loop can checkpoint and stop; a second
    Ctrl-C interrupts at once.

    >>> with GracefulInterrupt() as stop:
    ...     for step in ...:
    ...         train_step()
    ...         if stop.requested:
    ...             save(); break
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        from essence.core.progress import console

        console.print("[yellow]Interrupted: saving a checkpoint after this step (Ctrl-C again to abort)[/]")

    def __enter__(self) -> GracefulInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def should_run(step: int, every: int, total: int | None = None) -> bool:
    """True on every ``every``-th completed step (1-based count ``step + 1``) and on the last step."""
    if every <= 0:
        return False
    done = step + 1
    return done % every == 0 or (total is not None and done == total)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Put modules in eval mode under no_grad, restoring their previous mode afterwards."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
