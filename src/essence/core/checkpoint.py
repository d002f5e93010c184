"""Atomic checkpoints: safetensors for every tensor, JSON for everything else. Loading never unpickles code.

One checkpoint is one ``.safetensors`` file. Tensor keys are namespaced::

    module/<name>/<param>            model (or any nn.Module) state dicts
    optim/<name>/<param_id>/<key>    optimizer state tensors (exp_avg, momentum_buffer, step, ...)
    tensor/<name>                    free tensors of the method's state (a MoCo queue, a memory bank)
    rng/torch, rng/cuda/<i>, rng/numpy

and the safetensors metadata holds one JSON document ``essence`` with the step, the resolved config, optimizer
param groups and non-tensor state, scheduler state dicts, Python/NumPy RNG scalars and the method's JSON state.
Writing goes to a temporary file in the same folder followed by ``os.replace``: a crash never leaves a
half-written checkpoint behind.

Resume restores all of it, so a resumed run continues bit-identically to an uninterrupted one (given
deterministic kernels and data order derived from the restored RNG state / step). What the config of the resumed
run sets wins over the checkpoint: optimizer hyperparameters (weight decay, momentum, betas) are those of the live
optimizer, and a :class:`~essence.core.loop.ScheduleLR` keeps its own schedule and learning rate (so ``--set
train.max_steps=400`` or ``--set optim.lr=0.1`` on resume take effect from the restored step on).
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "save_safetensors_atomic", "load_checkpoint", "read_checkpoint", "Checkpoint",
           "latest_checkpoint", "unwrap_model", "CheckpointError"]

_FORMAT = "essence-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match what it is loaded into."""


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP / torch.compile wrappers so state-dict keys do not depend on how the model was run."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


@dataclass
class Checkpoint:
    """What a checkpoint holds, before (or after) it is restored into live objects."""

    step: int
    config: dict[str, Any] | None
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None
    _raw: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def require_config(self) -> dict[str, Any]:
        """The resolved config stored in the checkpoint; :class:`CheckpointError` when it has none."""
        if not isinstance(self.config, dict):
            raise CheckpointError(f"{self.path} has no config: it was not written by a training run, so it cannot "
                                  "be resumed or evaluated (pass the checkpoint of an `essence <method> train` run)")
        return self.config

    def module_state(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"module/{name}/"
        out = {k[len(prefix):]: v for k, v in self._raw.items() if k.startswith(prefix)}
        if not out:
            names = sorted({k.split("/")[1] for k in self._raw if k.startswith("module/")})
            raise CheckpointError(f"checkpoint {self.path} has no module {name!r} (it has {names})")
        return out


# ----------------------------------------------------------------------------------------------------------
# optimizer state flattening
# ----------------------------------------------------------------------------------------------------------
def _split_optimizer(name: str, sd: Mapping[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(name: str, meta: Mapping[str, Any], raw: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, value in raw.items():
        if key.startswith(prefix):
            pid, sub = key[len(prefix):].split("/", 1)
            state.setdefault(int(pid), {})[sub] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------------------------------------
# RNG state
# ----------------------------------------------------------------------------------------------------------
def _capture_rng(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss = random.getstate()
    return {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}


def _restore_rng(meta: Mapping[str, Any], raw: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(raw["rng/torch"])
    cuda = sorted(k for k in raw if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([raw[k] for k in cuda][: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, raw["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------------------
def _to_json(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable; put tensors in `tensors=`")


def save_checkpoint(
    path: str | Path,
    *,
    modules: Mapping[str, torch.nn.Module] | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scalers: Mapping[str, Any] | None = None,
    step: int = 0,
    config: Any = None,
    state: Mapping[str, Any] | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
    rng: bool = True,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: target file (``.safetensors`` is appended if missing). Parent folders are created.
        modules: nn.Modules by name (DDP / compiled wrappers are unwrapped).
        optimizers, schedulers, scalers: objects with ``state_dict()`` by name (a GradScaler is a scaler).
        step: the global step reached.
        config: the resolved config (a :class:`~essence.core.config.Config` or a dict).
        state: JSON-serialisable method state (epoch, best metric, queue pointer, ...).
        tensors: free tensors of method state (a queue, a memory bank).
        rng: also store Python / NumPy / torch RNG states (restored by :func:`load_checkpoint`).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"format": _FORMAT, "step": int(step), "optimizers": {}, "schedulers": {},
                            "scalers": {}, "state": dict(state or {}), "tensors": sorted(tensors or {})}
    if config is not None:
        meta["config"] = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for name, module in (modules or {}).items():
        _check_name(name)
        for key, value in unwrap_model(module).state_dict().items():
            out[f"module/{name}/{key}"] = value
    for name, opt in (optimizers or {}).items():
        _check_name(name)
        meta["optimizers"][name] = _split_optimizer(name, opt.state_dict(), out)
    for kind, objs in (("schedulers", schedulers), ("scalers", scalers)):
        for name, obj in (objs or {}).items():
            meta[kind][name] = obj.state_dict()
    for name, value in (tensors or {}).items():
        _check_name(name)
        out[f"tensor/{name}"] = value
    if rng:
        meta["rng"] = _capture_rng(out)
    # safetensors wants contiguous CPU tensors that do not share storage.
    out = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in out.items()}
    return save_safetensors_atomic(out, path, metadata={"essence": json.dumps(meta, default=_to_json)})


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: str | Path,
                            metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file through a temporary file in the same folder and ``os.replace``: a reader never
    sees a half-written file, and a failed write leaves no temporary behind. The parent folder must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(dict(tensors), tmp, metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_name(name: str) -> None:
    if not name or "/" in name:
        raise ValueError(f"checkpoint entry names must be non-empty and contain no '/', got {name!r}")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint without restoring anything into live objects."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no checkpoint (*.safetensors) in {path}")
        path = found
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        raw = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {err}") from None
    if "essence" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not an essence checkpoint (no 'essence' header)")
    meta = _parse_header(path, header["essence"])
    free = {k[len("tensor/"):]: v for k, v in raw.items() if k.startswith("tensor/")}
    return Checkpoint(step=meta["step"], config=meta.get("config"), state=meta["state"], tensors=free,
                      path=path, _raw=raw, _meta=meta)


def _parse_header(path: Path, text: str) -> dict[str, Any]:
    """The 'essence' JSON header, checked for what loading relies on (one-line CheckpointErrors)."""
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"{path}: the checkpoint's JSON header is corrupt ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint's JSON header is not an object")
    if meta.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {_FORMAT!r})")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        what = "has no 'step'" if step is None else f"has an invalid 'step' ({step!r})"
        raise CheckpointError(f"{path}: the checkpoint {what}; it cannot be resumed")
    if meta.get("config") is not None and not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path}: the checkpoint's 'config' is not an object")
    for key in ("state", "optimizers", "schedulers", "scalers"):
        value = meta.setdefault(key, {})
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: the checkpoint's {key!r} is not an object")
    return meta


def load_checkpoint(
    path: str | Path,
    *,
    modules: Mapping[str, torch.nn.Module] | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scalers: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint and restore it into the given objects (same names as at save time).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not an essence checkpoint, corrupt, or a named entry is missing / mismatched.
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    meta = ckpt._meta
    for name, module in (modules or {}).items():
        try:
            unwrap_model(module).load_state_dict(ckpt.module_state(name), strict=strict)
        except RuntimeError as err:
            raise CheckpointError(f"{ckpt.path}: module {name!r} does not match: {err}") from None
    for name, opt in (optimizers or {}).items():
        if name not in meta["optimizers"]:
            raise CheckpointError(f"{ckpt.path} has no optimizer {name!r} (it has {sorted(meta['optimizers'])})")
        # The hyperparameters of the live optimizer come from the config the run is resumed with (--set
        # optim.weight_decay=... on resume takes effect); the checkpoint gives the state (momentum buffers, Adam
        # moments, step counts) and the learning rates, which a ScheduleLR loaded next sets from its schedule.
        live = [{k: v for k, v in g.items() if k not in _RESTORED_GROUP_KEYS} for g in opt.param_groups]
        try:
            opt.load_state_dict(_join_optimizer(name, meta["optimizers"][name], ckpt._raw))
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{ckpt.path}: optimizer {name!r} does not match: {err}") from None
        for group, hyper in zip(opt.param_groups, live):
            group.update(hyper)
    for kind, objs in (("schedulers", schedulers), ("scalers", scalers)):
        for name, obj in (objs or {}).items():
            if name not in meta[kind]:
                raise CheckpointError(f"{ckpt.path} has no {kind[:-1]} {name!r}")
            obj.load_state_dict(meta[kind][name])
    if restore_rng and "rng" in meta:
        _restore_rng(meta["rng"], ckpt._raw)
    return ckpt


_RESTORED_GROUP_KEYS = ("params", "lr", "initial_lr")
_STEP = re.compile(r"step-(\d+)\.safetensors$")


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``directory`` (``step-000123.safetensors``), or ``last``."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in directory.glob("*.safetensors"):
        m = _STEP.search(p.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    if best is not None:
        return best[1]
    last = directory / "last.safetensors"
    return last if last.exists() else None
