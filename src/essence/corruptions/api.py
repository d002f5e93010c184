"""Public entry points: :func:`corrupt`, :class:`Corrupt` (a batch transform) and :class:`CorruptedDataset`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from essence.corruptions.functional import CORRUPTIONS
from essence.corruptions.params import choose_param_set

__all__ = ["corrupt", "corrupt_tensor", "Corrupt", "CorruptedDataset", "make_generator", "MIN_SIZE"]

MIN_SIZE = 8  # smallest height / width accepted (the blurs and the plasma map need a few pixels)
CPU_CHUNK_ELEMENTS = 1 << 20  # values per chunk on the CPU (4 MB of float32)


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> torch.Generator:
    """A CPU ``torch.Generator``: ``generator`` itself, one seeded with ``seed``, or a freshly seeded one."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (randomness is drawn on the CPU so that "
                             "CPU and GPU give the same corruption)")
        return generator
    gen = torch.Generator()
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    gen.manual_seed(int(seed))
    return gen


def _check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


def _check_shape(n: int, c: int, h: int, w: int, layout: str) -> None:
    if n == 0:
        raise ValueError("got an empty batch (0 images)")
    if c not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got {c} ({layout})")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {h}x{w}")


def corrupt_tensor(x: torch.Tensor, name: str, severity: int, *, generator: torch.Generator | None = None,
                   param_set: str = "auto") -> torch.Tensor:
    """Corrupt a float batch (N, C, H, W) in [0, 1] (no input checks); returns floats in [0, 1]."""
    corruption = CORRUPTIONS.get(name)
    pset = choose_param_set(x.shape[-2], x.shape[-1], param_set)
    per_image = x[0].numel()
    chunk = max(1, CPU_CHUNK_ELEMENTS // per_image) if x.device.type == "cpu" else len(x)
    if len(x) <= chunk:
        return corruption.fn(x, severity, generator=generator, param_set=pset)
    # on the CPU, a few images at a time keep the multi-pass ops in cache (several times faster than one
    # 40 MB pass per op); the draws follow the fixed chunking, so results stay deterministic
    return torch.cat([corruption.fn(x[i:i + chunk], severity, generator=generator, param_set=pset)
                      for i in range(0, len(x), chunk)])


def _to_uint8(y: torch.Tensor) -> torch.Tensor:
    # the originals end with np.uint8(np.clip(y, 0, 1) * 255): truncation (in place: y is our own tensor);
    # clip(y * 255 + 1e-4, 0, 255) then the cast's truncation is floor(clip(y, 0, 1) * 255 + 1e-4)
    return y.mul_(255).add_(1e-4).clamp_(0, 255).to(torch.uint8)


def _run_uint8(x: torch.Tensor, corruption, severity: int, gen: torch.Generator, pset: str) -> torch.Tensor | None:
    """The corruption's uint8 CPU path, over the same chunks as :func:`corrupt_tensor` for random ones (so
    they consume the generator exactly as the float path does); None where it does not apply."""
    chunk = max(1, CPU_CHUNK_ELEMENTS // x[0].numel()) if corruption.random else len(x)
    if chunk >= len(x):
        return corruption.uint8_fn(x, severity, pset, gen)
    out = np.empty(tuple(x.shape), dtype=np.uint8)
    for i in range(0, len(x), chunk):
        y = corruption.uint8_fn(x[i:i + chunk], severity, pset, gen)
        if y is None:      # decided by the image size alone, so before any draw, on the first chunk
            return None
        out[i:i + chunk] = y.numpy()
    return torch.from_numpy(out)


def _run(x: torch.Tensor, name: str, severity: int, gen: torch.Generator, param_set: str) -> torch.Tensor:
    """uint8 or float (N, C, H, W) tensor -> the same dtype."""
    is_uint8 = x.dtype == torch.uint8
    corruption = CORRUPTIONS.get(name)
    if is_uint8 and corruption.uint8_fn is not None and x.device.type == "cpu":
        y = _run_uint8(x, corruption, severity, gen, choose_param_set(x.shape[-2], x.shape[-1], param_set))
        if y is not None:
            return y
    if is_uint8 and x.device.type == "cpu":
        # the chunks of corrupt_tensor (same draws), each converted to float and back to uint8 while in cache
        pset = choose_param_set(x.shape[-2], x.shape[-1], param_set)
        chunk = max(1, CPU_CHUNK_ELEMENTS // x[0].numel())
        out = torch.empty_like(x)
        for i in range(0, len(x), chunk):
            xf = x[i:i + chunk].to(torch.float32).div_(255)
            y = corruption.fn(xf, severity, generator=gen, param_set=pset)
            out[i:i + chunk] = _to_uint8(y if y.data_ptr() != xf.data_ptr() else y.clone())
        return out
    xf = x.to(torch.float32).div_(255) if is_uint8 else x.to(torch.float32)
    y = corrupt_tensor(xf, name, severity, generator=gen, param_set=param_set)
    if is_uint8:
        return _to_uint8(y if y.data_ptr() != xf.data_ptr() else y.clone())
    return y.to(x.dtype)


def corrupt(images: Any, name: str, severity: int, *, seed: int | None = None,
            generator: torch.Generator | None = None, param_set: str = "auto") -> Any:
    """Apply corruption ``name`` at ``severity`` (1..5) and return the same kind of object.

    Args:
        images: a uint8 numpy array (H, W), (H, W, C) or (N, H, W, C); a PIL image (mode L or RGB); or a torch
            tensor (C, H, W) / (N, C, H, W), uint8 (0..255) or floating point (0..1), on any device.
        name: one of ``CORRUPTIONS`` (e.g. ``"fog"``); an unknown name raises with a suggestion.
        severity: 1..5.
        seed / generator: make the corruption deterministic (a seed, or a CPU ``torch.Generator``).
        param_set: ``auto`` (by image size), ``imagenet``, ``tiny`` or ``cifar`` (see :mod:`.params`).

    Returns:
        The corrupted images, same type, shape and dtype. The input is never modified.

    Raises:
        ValueError: wrong dtype or value range, empty or too small images, unknown corruption, bad severity.
    """
    CORRUPTIONS.get(name)
    severity = _check_severity(severity)
    gen = make_generator(seed, generator)
    try:
        from PIL import Image
        pil_type = Image.Image
    except ImportError:  # pragma: no cover
        pil_type = ()
    if pil_type and isinstance(images, pil_type):
        if images.mode not in ("L", "RGB"):
            raise ValueError(f"PIL images must be mode 'L' or 'RGB', got {images.mode!r} (use .convert('RGB'))")
        arr = np.asarray(images)
        out = corrupt(arr, name, severity, generator=gen, param_set=param_set)
        return Image.fromarray(out, mode=images.mode)
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 in 0..255, got dtype {images.dtype} "
                             "(for floats in [0, 1] pass a torch tensor, or use (x * 255).astype(np.uint8))")
        if images.ndim == 2:
            t = torch.from_numpy(images.copy())[None, None]
        elif images.ndim == 3:
            t = torch.from_numpy(images.copy()).permute(2, 0, 1)[None]
        elif images.ndim == 4:
            t = torch.from_numpy(images.copy()).permute(0, 3, 1, 2)
        else:
            raise ValueError(f"numpy images must be (H, W), (H, W, C) or (N, H, W, C), got shape {images.shape}")
        _check_shape(*t.shape, layout=f"numpy shape {images.shape}")
        y = _run(t.contiguous(), name, severity, gen, param_set)
        if images.ndim == 2:
            return y[0, 0].numpy()
        if images.ndim == 3:
            return y[0].permute(1, 2, 0).contiguous().numpy()
        return y.permute(0, 2, 3, 1).contiguous().numpy()
    if isinstance(images, torch.Tensor):
        if images.ndim not in (3, 4):
            raise ValueError(f"tensors must be (C, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
        t = images[None] if images.ndim == 3 else images
        _check_shape(*t.shape, layout=f"tensor shape {tuple(images.shape)}")
        if t.dtype != torch.uint8:
            if not t.is_floating_point():
                raise ValueError(f"tensors must be uint8 (0..255) or floating point (0..1), got {t.dtype}")
            if not torch.isfinite(t).all():
                raise ValueError("the images contain NaN or infinite values")
            lo, hi = float(t.min()), float(t.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(f"float images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                                 "(divide uint8 images by 255)")
        y = _run(t, name, severity, gen, param_set)
        return y[0] if images.ndim == 3 else y
    raise ValueError(f"images must be a numpy array, a PIL image or a torch tensor, got {type(images).__name__}")


class Corrupt(torch.nn.Module):
    """A batch transform: ``Corrupt("fog", 3)(x)`` for x (N, C, H, W) uint8 or float in [0, 1], on any device.

    With a list of names and/or severities, each call picks one (name, severity) pair for the batch at
    random. The module owns a CPU generator seeded with ``seed``, so a run is reproducible call by call.
    """

    def __init__(self, name: str | list[str] | tuple[str, ...], severity: int | list[int] | tuple[int, ...] = 3, *,
                 seed: int | None = None, param_set: str = "auto"):
        super().__init__()
        names = [name] if isinstance(name, str) else list(name)
        sevs = [severity] if isinstance(severity, (int, np.integer)) else list(severity)
        if not names or not sevs:
            raise ValueError("Corrupt needs at least one corruption name and one severity")
        for n in names:
            CORRUPTIONS.get(n)
        self.names = names
        self.severities = [_check_severity(s) for s in sevs]
        self.param_set = param_set
        self.generator = make_generator(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"Corrupt expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
        name = self.names[int(torch.randint(len(self.names), (1,), generator=self.generator))]
        sev = self.severities[int(torch.randint(len(self.severities), (1,), generator=self.generator))]
        return corrupt(x, name, sev, generator=self.generator, param_set=self.param_set)

    def extra_repr(self) -> str:
        return f"names={self.names}, severities={self.severities}, param_set={self.param_set!r}"


class CorruptedDataset(torch.utils.data.Dataset):
    """``dataset`` with every image corrupted by ``name`` at ``severity``, deterministic per index.

    Items may be images or tuples whose first element is the image (numpy uint8, PIL, or tensor); the rest
    of the tuple (labels) is passed through. Image i is corrupted with a generator seeded by (seed, i), so
    the corrupted dataset is the same in every epoch, worker and process.
    """

    def __init__(self, dataset, name: str, severity: int, *, seed: int = 0, param_set: str = "auto"):
        CORRUPTIONS.get(name)
        self.dataset = dataset
        self.name = name
        self.severity = _check_severity(severity)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.param_set = param_set

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        gen = torch.Generator()
        gen.manual_seed((self.seed * 1_000_003 + int(index)) % (2**63))
        if isinstance(item, tuple):
            return (corrupt(item[0], self.name, self.severity, generator=gen, param_set=self.param_set), *item[1:])
        return corrupt(item, self.name, self.severity, generator=gen, param_set=self.param_set)
