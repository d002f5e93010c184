"""The pieces of a training loop, to be composed by each method's ``train.py`` (no god-class trainer).

- :class:`Precision`: autocast + GradScaler (fp16 on CUDA) + clipping + optimizer step, in one place.
- :func:`accumulation_context`: DDP ``no_sync`` on all but the last micro-batch of a gradient-accumulation step.
- :func:`build_scheduler`: constant / warmup + cosine / step / linear schedules as a resumable ``LambdaLR``
  (:class:`ScheduleLR`: a resumed run follows the schedule and learning rate of the config it resumed with).
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
    "ScheduleLR",
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
    """Mixed precision for one device, resolved by :func:`essence.core.precision.resolve_precision`.

    ``auto`` (the default of every preset) means bf16 autocast where the hardware runs bf16 natively (CUDA with
    bf16, CPUs with AMX / AVX512-BF16), fp16 + GradScaler on older CUDA devices, and fp32 everywhere else.
    :attr:`choice` says what was chosen and why (``reason``: one line that runs log and reports show).
    """

    def __init__(self, mode: PrecisionMode = "auto", device: torch.device | str = "cpu"):
        from essence.core.precision import resolve_precision

        self.device = torch.device(device)
        self.choice = resolve_precision(mode, self.device)
        self.mode = self.choice.mode
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.mode]
        self.scaler = torch.amp.GradScaler("cuda", enabled=(self.mode == "fp16"))

    @property
    def reason(self) -> str:
        return self.choice.reason

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
                    min_ratio: float = 0.0) -> ScheduleLR:
    """A per-step :class:`ScheduleLR` (call ``.step()`` after every optimizer step).

    Its state_dict resumes exactly; a run resumed with another schedule or learning rate (``--set
    train.max_steps=400``, ``--set optim.lr=0.1``) follows the new one from the restored step on.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    lr_lambda(0, schedule=schedule, total_steps=total_steps)  # validates the name
    fn = _ScheduleFn(schedule, total_steps, warmup_steps, tuple(milestones), gamma, min_ratio)
    return ScheduleLR(optimizer, fn)


class _ScheduleFn:
    """The schedule as a callable object. LambdaLR puts its ``kw`` into ``state_dict()`` (a record of the schedule
    a checkpoint was trained with); :meth:`ScheduleLR.load_state_dict` does not load it back."""

    def __init__(self, schedule, total_steps, warmup_steps, milestones, gamma, min_ratio):
        self.kw = dict(schedule=schedule, total_steps=total_steps, warmup_steps=warmup_steps,
                       milestones=milestones, gamma=gamma, min_ratio=min_ratio)

    def __call__(self, step: int) -> float:
        return lr_lambda(step, **self.kw)


def _schedule_key(kw: Any) -> Any:
    """A schedule's settings in a form that compares equal after a JSON round trip (tuples become lists)."""
    if not isinstance(kw, dict):
        return None
    return {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in kw.items()}


class ScheduleLR(torch.optim.lr_scheduler.LambdaLR):
    """The LambdaLR of :func:`build_scheduler`, whose resume follows the schedule it was built with.

    Plain ``LambdaLR.load_state_dict`` restores the schedule callable's settings (``total_steps``, ...) and
    ``base_lrs`` from the checkpoint, so a run resumed with a longer schedule would keep the old one (and train
    at learning rate 0 past its old end), and ``--set optim.lr`` on resume would be ignored. Here loading
    restores the step counters only; the schedule and the configured learning rates stay those this object was
    built with (the config of the resumed run). Factors applied to ``base_lrs`` during training (a
    decay-on-plateau) are kept as factors. When neither the schedule nor the configured learning rates changed,
    everything is restored as saved, so that the resumed run is bit-identical to an uninterrupted one.

    Load the optimizer's state before this one's (:func:`essence.core.checkpoint.load_checkpoint` does): the
    learning rates of its param groups are set here.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, fn: _ScheduleFn):
        super().__init__(optimizer, fn)
        #: the learning rates of the config (``base_lrs`` may later be scaled, e.g. decayed on a plateau)
        self.config_lrs: list[float] = list(self.base_lrs)
        #: what differed from the checkpoint at the last :meth:`load_state_dict` (empty: restored as saved)
        self.resume_changes: list[str] = []

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("resume_changes", None)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved_fns = state.pop("lr_lambdas", None) or []
        saved_base = list(state.pop("base_lrs", self.base_lrs))
        saved_config = list(state.pop("config_lrs", saved_base))   # older checkpoints: no decay recorded
        saved_last = state.pop("_last_lr", None)
        state.pop("resume_changes", None)
        state.pop("optimizer", None)
        self.__dict__.update(state)                                 # last_epoch, _step_count, ...
        if len(saved_base) != len(self.config_lrs) or len(saved_config) != len(self.config_lrs):
            raise ValueError(f"the checkpoint's scheduler has {len(saved_base)} param groups, the optimizer has "
                             f"{len(self.config_lrs)}")
        changes = []
        for i, fn in enumerate(self.lr_lambdas):
            saved = saved_fns[i] if i < len(saved_fns) and isinstance(saved_fns[i], dict) else {}
            old, new = _schedule_key(saved.get("kw")), _schedule_key(getattr(fn, "kw", None))
            if old is None:
                changes.append("schedule (not recorded in the checkpoint)")
            elif old != new:
                changes += [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(new or {})
                            if old.get(k) != new.get(k)]
        changes += [f"lr {old!r} -> {new!r}" for old, new in zip(saved_config, self.config_lrs) if old != new]
        self.resume_changes = changes
        if not changes and saved_last is not None:
            self.base_lrs, self._last_lr = saved_base, list(saved_last)   # as saved: the optimizer's lrs stand
            return
        factors = [b / c if c else 1.0 for b, c in zip(saved_base, saved_config)]
        self.base_lrs = [lr * f for lr, f in zip(self.config_lrs, factors)]
        lrs = [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr, initial in zip(self.optimizer.param_groups, lrs, self.config_lrs):
            group["initial_lr"] = initial
            group["lr"] = lr
        self._last_lr = list(lrs)


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
