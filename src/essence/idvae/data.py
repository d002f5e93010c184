"""IDVAE's data: Fashion-MNIST images with labels, the [-1, 1] model range, and image files for the CLI.

The networks work on images in [-1, 1] (tanh output, card section 6); files and metrics use uint8 or [0, 1].
Per-step randomness comes from generators derived from (seed, step, stream) (shared with MoCo), so a resumed run
draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from essence.core.runtime import shard_indices, step_generator
from essence.data import load_fashion_mnist
from essence.idvae.config import DataConfig

__all__ = ["load_images", "to_model_range", "to_unit_range", "to_uint8", "read_images", "write_images",
           "step_generator", "shard_indices", "image_grid"]


def load_images(cfg: DataConfig, split: str, *, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels (N,) of ``split`` ('train' or 'test')."""
    images, labels = load_fashion_mnist(split, root=cfg.root)
    n = limit if limit is not None else (cfg.train_limit if split == "train" else cfg.test_limit)
    if n:
        images, labels = images[:n], labels[:n]
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy()).long()


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float [-1, 1]."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x * 2 - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model outputs in [-1, 1] -> [0, 1] (clamped)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model outputs in [-1, 1] -> uint8 [0, 255]."""
    return (to_unit_range(x) * 255).round().to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 images (N, C, H, W) -> one uint8 grid (rows * (H + pad) + pad, cols * (W + pad) + pad, C)."""
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {tuple(images.shape)} {images.dtype}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / nrow))
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = arr[i]
    return grid


def write_images(images: torch.Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Write uint8 images (N, C, H, W): ``.npz`` with ``images`` uint8 (N, H, W, C), or a PNG grid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez_compressed(path, images=images.permute(0, 2, 3, 1).cpu().numpy())
    elif path.suffix == ".png":
        from PIL import Image

        grid = image_grid(images, nrow)
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    else:
        raise ValueError(f"output must end in .png (a grid) or .npz (an array), got {path.name!r}")
    return path


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_images(path: str | Path, *, size: int, channels: int) -> torch.Tensor:
    """Images for ``reconstruct``: a folder of image files, or an ``.npy`` / ``.npz`` array, as uint8
    (N, channels, size, size). Arrays may be (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 in [0, 255] or float
    in [0, 1].

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: empty input, wrong size or channels, values outside the range, NaN, unknown format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image file or folder: {path}")
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise ValueError(f"{path} holds no images ({', '.join(_IMAGE_EXT)})")
        arrs = []
        for f in files:
            with Image.open(f) as im:
                if im.size != (size, size):
                    raise ValueError(f"{f.name} is {im.size[0]}x{im.size[1]} pixels; the model expects "
                                     f"{size}x{size}")
                im = im.convert("L") if channels == 1 else im.convert("RGB")
                arrs.append(np.asarray(im).reshape(size, size, channels))
        arr = np.stack(arrs)
    elif path.suffix in (".npy", ".npz"):
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                if "images" not in z:
                    raise ValueError(f"{path.name} has no 'images' array (it has {list(z.keys())})")
                arr = z["images"]
        arr = _to_nhwc(arr, size, channels, path.name)
    else:
        raise ValueError(f"{path.name}: expected a folder of images or a .npy / .npz array")
    if arr.shape[0] == 0:
        raise ValueError(f"{path.name} holds no images")
    if arr.dtype == np.uint8:
        out = torch.from_numpy(arr.copy())
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{path.name} contains NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{path.name}: float images must be in [0, 1], got {arr.min():.3g}..{arr.max():.3g}")
        out = torch.from_numpy((arr * 255).round().astype(np.uint8))
    else:
        raise ValueError(f"{path.name}: images must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    return out.permute(0, 3, 1, 2).contiguous()


def _to_nhwc(arr: np.ndarray, size: int, channels: int, name: str) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {arr.shape}")
    if arr.shape[1:] == (channels, size, size) and arr.shape[-1] != channels:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[1:3] != (size, size):
        raise ValueError(f"{name}: images are {arr.shape[1]}x{arr.shape[2]} pixels; the model expects {size}x{size}")
    if arr.shape[3] != channels:
        raise ValueError(f"{name}: images have {arr.shape[3]} channels; the model expects {channels}")
    return arr
