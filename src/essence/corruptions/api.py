"""Public entry points: :func:`corrupt`, :class:`Corrupt` (a batch transform) and :class:`CorruptedDataset`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from essence.corruptions.functional import CORRUPTIONS
from essence.corruptions.params import choose_param_set
from essence.corruptions.rng import ImageRNG, as_image_rng, image_seeds

__all__ = ["corrupt", "corrupt_tensor", "Corrupt", "CorruptedDataset", "make_generator", "MIN_SIZE", "jpeg_storage"]

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


def _check_shape(n: int, c: int, h: int, w: int, layout: str, hint: str = "") -> None:
    if n == 0:
        raise ValueError("got an empty batch (0 images)")
    if c not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got {c} ({layout}){hint}")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {h}x{w}")


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    _check_shape(*x.shape, layout=f"tensor shape {tuple(x.shape)}")


def _chunk(x: torch.Tensor) -> int:
    return max(1, CPU_CHUNK_ELEMENTS // x[0].numel()) if x.device.type == "cpu" else len(x)


def corrupt_tensor(x: torch.Tensor, name: str, severity: int, *, seed: int | None = None,
                   generator: torch.Generator | ImageRNG | None = None, start: int = 0,
                   param_set: str = "auto") -> torch.Tensor:
    """Corrupt a float batch (N, C, H, W) in [0, 1] (values are not range-checked); returns floats in [0, 1].

    Image i draws from the stream of (seed, start + i) (:mod:`.rng`), so the result does not depend on the
    batch size, the CPU chunking or the device. ``generator``: a CPU torch.Generator (one draw seeds the
    batch) or an :class:`.rng.ImageRNG` with one stream per image.
    """
    corruption = CORRUPTIONS.get(name)
    severity = _check_severity(severity)
    _check_batch(x)
    rng = as_image_rng(len(x), seed=seed, generator=generator, start=start)
    pset = choose_param_set(x.shape[-2], x.shape[-1], param_set)
    chunk = _chunk(x)
    if len(x) <= chunk:
        return corruption.fn(x, severity, generator=rng, param_set=pset)
    # on the CPU, a few images at a time keep the multi-pass ops in cache (several times faster than one
    # 40 MB pass per op); the draws are per image, so the chunking does not change them
    return torch.cat([corruption.fn(x[i:i + chunk], severity, generator=rng[i:i + chunk], param_set=pset)
                      for i in range(0, len(x), chunk)])


def _to_uint8(y: torch.Tensor) -> torch.Tensor:
    # the originals end with np.uint8(np.clip(y, 0, 1) * 255): truncation (in place: y is our own tensor);
    # clip(y * 255 + 1e-4, 0, 255) then the cast's truncation is floor(clip(y, 0, 1) * 255 + 1e-4)
    return y.mul_(255).add_(1e-4).clamp_(0, 255).to(torch.uint8)


def _run_uint8(x: torch.Tensor, corruption, severity: int, rng: ImageRNG, pset: str) -> torch.Tensor | None:
    """The corruption's uint8 CPU path, chunk by chunk; None where it does not apply (decided by the image
    size alone, so before any draw)."""
    chunk = _chunk(x)
    if chunk >= len(x):
        return corruption.uint8_fn(x, severity, pset, rng)
    out = np.empty(tuple(x.shape), dtype=np.uint8)
    for i in range(0, len(x), chunk):
        y = corruption.uint8_fn(x[i:i + chunk], severity, pset, rng[i:i + chunk])
        if y is None:
            return None
        out[i:i + chunk] = y.numpy()
    return torch.from_numpy(out)


def _run(x: torch.Tensor, name: str, severity: int, rng: ImageRNG, param_set: str) -> torch.Tensor:
    """uint8 or float (N, C, H, W) tensor -> the same dtype."""
    is_uint8 = x.dtype == torch.uint8
    corruption = CORRUPTIONS.get(name)
    pset = choose_param_set(x.shape[-2], x.shape[-1], param_set)
    if is_uint8 and corruption.uint8_fn is not None and x.device.type == "cpu":
        y = _run_uint8(x, corruption, severity, rng, pset)
        if y is not None:
            return y
    if is_uint8 and x.device.type == "cpu":
        # chunk by chunk, each converted to float and back to uint8 while in cache
        chunk = _chunk(x)
        out = torch.empty_like(x)
        for i in range(0, len(x), chunk):
            xf = x[i:i + chunk].to(torch.float32).div_(255)
            y = corruption.fn(xf, severity, generator=rng[i:i + chunk], param_set=pset)
            out[i:i + chunk] = _to_uint8(y if y.data_ptr() != xf.data_ptr() else y.clone())
        return out
    xf = x.to(torch.float32).div_(255) if is_uint8 else x.to(torch.float32)
    y = corrupt_tensor(xf, name, severity, generator=rng, param_set=pset)
    if is_uint8:
        return _to_uint8(y if y.data_ptr() != xf.data_ptr() else y.clone())
    return y.to(x.dtype)


def corrupt(images: Any, name: str, severity: int, *, seed: int | None = None,
            generator: torch.Generator | None = None, start: int = 0, param_set: str = "auto") -> Any:
    """Apply corruption ``name`` at ``severity`` (1..5) and return the same kind of object.

    Args:
        images: a uint8 numpy array (H, W), (H, W, C) or (N, H, W, C); a PIL image (mode L or RGB); or a torch
            tensor (C, H, W) / (N, C, H, W), uint8 (0..255) or floating point (0..1), on any device. A 3-D
            input is always one image: a batch of grey images is (N, H, W, 1) in numpy and (N, 1, H, W) in
            torch ((N, H, W) with N = 1 or 3 would be read as one image of N channels; other N raise).
        name: one of ``CORRUPTIONS`` (e.g. ``"fog"``); an unknown name raises with a suggestion.
        severity: 1..5.
        seed / generator: make the corruption deterministic (a seed, or a CPU ``torch.Generator`` from which
            one draw seeds the batch). Image i of the batch draws from the stream of (seed, start + i), so
            ``corrupt(x, n, s, seed=7)[i]`` equals ``corrupt(x[i:i + 1], n, s, seed=7, start=i)[0]`` for any
            batch size and on any device.
        start: the index of the first image (for corrupting a dataset in pieces).
        param_set: ``auto`` (by image size), ``imagenet``, ``tiny`` or ``cifar`` (see :mod:`.params`).

    Returns:
        The corrupted images, same type, shape and dtype. The input is never modified.

    Raises:
        ValueError: wrong dtype or value range, empty or too small images, unknown corruption, bad severity.
    """
    CORRUPTIONS.get(name)
    severity = _check_severity(severity)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is None and generator is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    elif generator is not None:
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=make_generator(generator=generator),
                                 dtype=torch.int64))
    try:
        from PIL import Image
        pil_type = Image.Image
    except ImportError:  # pragma: no cover
        pil_type = ()
    if pil_type and isinstance(images, pil_type):
        if images.mode not in ("L", "RGB"):
            raise ValueError(f"PIL images must be mode 'L' or 'RGB', got {images.mode!r} (use .convert('RGB'))")
        arr = np.asarray(images)
        out = corrupt(arr, name, severity, seed=seed, start=start, param_set=param_set)
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
        _check_shape(*t.shape, layout=f"numpy shape {images.shape}",
                     hint="; a batch of grey images (N, H, W) must be passed as (N, H, W, 1)" if images.ndim == 3
                     else "")
        y = _run(t.contiguous(), name, severity, ImageRNG.from_seed(seed, len(t), start), param_set)
        if images.ndim == 2:
            return y[0, 0].numpy()
        if images.ndim == 3:
            return y[0].permute(1, 2, 0).contiguous().numpy()
        return y.permute(0, 2, 3, 1).contiguous().numpy()
    if isinstance(images, torch.Tensor):
        if images.ndim not in (3, 4):
            raise ValueError(f"tensors must be (C, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
        t = images[None] if images.ndim == 3 else images
        _check_shape(*t.shape, layout=f"tensor shape {tuple(images.shape)}",
                     hint="; a 3-D tensor is one image (C, H, W): pass a batch of grey images as (N, 1, H, W)"
                     if images.ndim == 3 else "")
        if t.dtype != torch.uint8:
            if not t.is_floating_point():
                raise ValueError(f"tensors must be uint8 (0..255) or floating point (0..1), got {t.dtype}")
            if not torch.isfinite(t).all():
                raise ValueError("the images contain NaN or infinite values")
            lo, hi = float(t.min()), float(t.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(f"float images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                                 "(divide uint8 images by 255)")
        y = _run(t, name, severity, ImageRNG.from_seed(seed, len(t), start), param_set)
        return y[0] if images.ndim == 3 else y
    raise ValueError(f"images must be a numpy array, a PIL image or a torch tensor, got {type(images).__name__}")


def jpeg_storage(images: Any, quality: int = 85) -> Any:
    """The storage step of the released ImageNet-C / Tiny-ImageNet-C files: every image saved as a JPEG with
    Pillow at ``quality`` (85 in the release scripts' ``save(..., quality=85, optimize=True)``) and decoded.

    ``images``: uint8 numpy (H, W), (H, W, C), (N, H, W, C) or a uint8 torch tensor (N, C, H, W) / (C, H, W);
    returns the same kind. CIFAR-10-C is stored as .npy (no JPEG step).
    """
    import io

    from PIL import Image

    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"expected a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        t = images[None] if images.ndim == 3 else images
        out = jpeg_storage(t.permute(0, 2, 3, 1).cpu().numpy(), quality)
        out = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)
        return out[0] if images.ndim == 3 else out
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3, 4):
        raise ValueError(f"expected uint8 images (H, W), (H, W, C) or (N, H, W, C), got {arr.dtype} {arr.shape}")
    if arr.ndim < 4:
        return jpeg_storage(arr[None] if arr.ndim == 3 else arr[None, :, :, None], quality)[0].reshape(arr.shape)
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=quality,
                                                                          optimize=True)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return out


class Corrupt(torch.nn.Module):
    """A batch transform in the style of torchvision v2: ``Corrupt("fog", 3)(x)`` for x (N, C, H, W) uint8 or
    float in [0, 1], on any device; a single image (C, H, W) is accepted too.

    Per sample: with probability ``p`` the image is corrupted, by a (corruption, severity) pair drawn
    uniformly from ``name`` x ``severity``; the others pass through unchanged. The module owns a CPU
    generator seeded with ``seed``: the draws of a call come from it, so a run is reproducible call by call
    (and image i's corruption does not depend on how the batch is grouped by corruption).
    """

    def __init__(self, name: str | list[str] | tuple[str, ...], severity: int | list[int] | tuple[int, ...] = 3, *,
                 p: float = 1.0, seed: int | None = None, param_set: str = "auto"):
        super().__init__()
        names = [name] if isinstance(name, str) else list(name)
        sevs = [severity] if isinstance(severity, (int, np.integer)) else list(severity)
        if not names or not sevs:
            raise ValueError("Corrupt needs at least one corruption name and one severity")
        for n in names:
            CORRUPTIONS.get(n)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.names = names
        self.severities = [_check_severity(s) for s in sevs]
        self.p = float(p)
        self.param_set = param_set
        self.generator = make_generator(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            raise ValueError(f"Corrupt expects a tensor (N, C, H, W) or (C, H, W), got {getattr(x, 'shape', x)}")
        if x.ndim == 3:
            return self.forward(x[None])[0]
        _check_shape(*x.shape, layout=f"tensor shape {tuple(x.shape)}")
        if x.dtype != torch.uint8 and not (x.is_floating_point() and bool(torch.isfinite(x).all())
                                           and float(x.min()) >= -1e-6 and float(x.max()) <= 1 + 1e-6):
            raise ValueError(f"Corrupt expects uint8 images or floats in [0, 1], got {x.dtype}")
        n = len(x)
        g = self.generator
        apply = torch.rand(n, generator=g, dtype=torch.float64) < self.p
        which = torch.randint(len(self.names), (n,), generator=g)
        sev = torch.randint(len(self.severities), (n,), generator=g)
        base = int(torch.randint(0, 2**63 - 1, (1,), generator=g, dtype=torch.int64))
        out = x.clone()
        for k, name in enumerate(self.names):
            for j, s in enumerate(self.severities):
                idx = torch.nonzero(apply & (which == k) & (sev == j)).flatten()
                if len(idx):   # image i draws from (base, i) whatever the group it falls in
                    di = idx.to(x.device)
                    out[di] = _run(x[di].contiguous(), name, s, ImageRNG(image_seeds(base, idx.numpy())),
                                   self.param_set).to(x.dtype)
        return out

    def extra_repr(self) -> str:
        return f"names={self.names}, severities={self.severities}, p={self.p}, param_set={self.param_set!r}"


class CorruptedDataset(torch.utils.data.Dataset):
    """``dataset`` with every image corrupted by ``name`` at ``severity``, deterministic per index.

    Items may be images or tuples whose first element is the image (numpy uint8, PIL, or tensor); the rest
    of the tuple (labels) is passed through. Image i is corrupted from the stream of (seed, i), so the
    corrupted dataset is the same in every epoch, worker and process, and equals
    ``corrupt(all_images, name, severity, seed=seed)`` image for image.
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
        if isinstance(item, tuple):
            return (corrupt(item[0], self.name, self.severity, seed=self.seed, start=int(index),
                            param_set=self.param_set), *item[1:])
        return corrupt(item, self.name, self.severity, seed=self.seed, start=int(index), param_set=self.param_set)
