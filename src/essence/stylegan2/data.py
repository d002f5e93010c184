"""Training images for StyleGAN2: Fashion-MNIST padded to 32 x 32, any image folder, or NumPy arrays.

Every source returns uint8 (N, C, R, R) with R a power of two; :func:`to_signed` maps them to [-1, 1] floats on
the device. Fashion-MNIST's 28 x 28 digits are zero-padded by 2 pixels per side (background is 0, so the
padding is invisible).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from essence.core.runtime import step_generator  # noqa: F401  (re-exported)
from essence.stylegan2.config import DataConfig

__all__ = ["load_images", "load_fashion_mnist32", "load_folder", "load_numpy", "to_signed", "to_uint8",
           "step_generator", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _is_pow2(n: int) -> bool:
    return n >= 4 and 2 ** int(round(math.log2(n))) == n


def _check(images: np.ndarray, where: str, channels: int | None) -> torch.Tensor:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{where}: expected images (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{where}: no images")
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)   # (N, C, H, W) given: accept it
    N, H, W, C = images.shape
    if H != W:
        raise ValueError(f"{where}: images must be square, got {H} x {W}")
    if not _is_pow2(H):
        raise ValueError(f"{where}: the resolution must be a power of two >= 4 (4, 8, ..., 1024), got {H}")
    if C not in (1, 3):
        raise ValueError(f"{where}: images must have 1 or 3 channels, got {C}")
    if images.dtype != np.uint8:
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{where}: images contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{where}: expected uint8 images or floats in [0, 1] / [0, 255], got range "
                             f"[{lo:g}, {hi:g}]")
        images = np.round(images * (255.0 if hi <= 1.0 else 1.0)).astype(np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if channels is not None and x.shape[1] != channels:
        x = x.expand(-1, 3, -1, -1).contiguous() if channels == 3 else \
            x.float().mean(1, keepdim=True).round().to(torch.uint8)
    return x


def load_fashion_mnist32(split: str = "train", root: str | None = None, limit: int = 0) -> torch.Tensor:
    """Fashion-MNIST as uint8 (N, 1, 32, 32), zero-padded from 28 x 28."""
    from essence.data.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist(split, root)
    if limit:
        images = images[:limit]
    x = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2))))
    return x[:, None].contiguous()


def load_folder(path: str | Path, channels: int | None = None, limit: int = 0) -> torch.Tensor:
    """Every image file in ``path`` (sorted; sub-folders included) as uint8 (N, C, R, R).

    Raises ValueError when the images differ in size, are not square, or R is not a power of two.
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        files = files[:limit]
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    arrays, sizes = [], {}
    for f in files:
        with Image.open(f) as im:
            mode = "L" if channels == 1 or (channels is None and im.mode in ("L", "LA", "I", "1")) else "RGB"
            arrays.append(np.asarray(im.convert(mode)))
            sizes.setdefault(im.size, f.name)
    if len(sizes) > 1:
        listing = ", ".join(f"{w}x{h} ({name})" for (w, h), name in list(sizes.items())[:3])
        raise ValueError(f"{root}: images have different sizes: {listing}; resize them to one square size first")
    if len({a.ndim for a in arrays}) > 1:
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1) for a in arrays]
    return _check(np.stack(arrays), str(root), channels)


def load_numpy(path: str | Path, channels: int | None = None, limit: int = 0) -> torch.Tensor:
    """Images from a ``.npy`` array or the ``images`` (else the first) array of an ``.npz`` file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"NumPy file not found: {p}")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            key = "images" if "images" in z.files else z.files[0]
            arr = z[key]
    elif p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    else:
        raise ValueError(f"expected a .npy or .npz file, got {p.name}")
    if limit:
        arr = arr[:limit]
    return _check(arr, str(p), channels)


def load_images(cfg: DataConfig, channels: int | None = None, split: str = "train") -> torch.Tensor:
    """The training images of ``cfg`` as uint8 (N, C, R, R)."""
    if cfg.source == "fashion_mnist":
        return load_fashion_mnist32(split, cfg.path, cfg.limit)
    if not cfg.path:
        raise ValueError(f"data.path is required for data.source={cfg.source} (--set data.path=...)")
    if cfg.source == "folder":
        return load_folder(cfg.path, channels, cfg.limit)
    return load_numpy(cfg.path, channels, cfg.limit)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] (clamped) -> uint8 [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
