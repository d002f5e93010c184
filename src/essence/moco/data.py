"""MoCo's data: Fashion-MNIST as unlabeled training images, the two-view batch, evaluation tensors.

The training set is used *without labels* (the pretext task is instance discrimination); test labels are used
only by the evaluation protocols, and training labels only to label the kNN bank / fit the linear classifier
on frozen features, as in the paper's protocols.

Each step draws two independent augmentations of the same images (``TwoCropsTransform`` of the official
code) with :class:`~essence.nn.augment.BatchAugment`, on the device the model runs on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from essence.core.runtime import shard_indices, step_generator  # noqa: F401  (re-exported)
from essence.data import load_fashion_mnist
from essence.moco.config import DataConfig
from essence.nn.augment import AugmentConfig, BatchAugment

__all__ = ["load_images", "load_image_folder", "load_numpy_images", "TwoViews", "MoCoV2Transform",
           "step_generator", "normalize_for_eval", "shard_indices"]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_images(cfg: DataConfig, split: str, *, limit: int | None = None,
                channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of ``split`` ('train' or 'test').

    ``cfg.dataset``: ``fashion_mnist`` (28 px grey, 60k / 10k), ``folder`` (:func:`load_image_folder`) or
    ``numpy`` (:func:`load_numpy_images`). Unlabelled images have label -1 (fine for pre-training; the kNN and
    linear evaluations need labels).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if cfg.dataset == "folder":
        x, y = load_image_folder(cfg.root, split, channels=channels, size=cfg.image_size)
    elif cfg.dataset == "numpy":
        x, y = load_numpy_images(cfg.root, split, size=cfg.image_size)
    else:
        images, labels = load_fashion_mnist(split, root=cfg.root)
        x, y = torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy()).long()
    n = limit if limit is not None else (cfg.train_limit if split == "train" else cfg.test_limit)
    if n:
        x, y = x[:n], y[:n]
    return x, y


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    if not size or (x.shape[-1] == size and x.shape[-2] == size):
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8)


def load_image_folder(root: str | Path, split: str = "train", *, channels: int = 1,
                      size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a folder, as uint8 (N, C, H, W) and labels (N,).

    Layout: ``root/train`` and ``root/test`` if they exist (else every image is in ``train``); inside a split,
    one sub-folder per class (labels = sorted folder names) or the images directly (label -1). Images are
    converted to grey (``channels=1``) or RGB and resized to ``size`` (0: all must share one size).
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    base = root / split if (root / "train").is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"{root} has a train/ folder but no {split}/ folder")
    if base == root and split == "test":
        raise ValueError(f"{root} has no train/ and test/ sub-folders, so there is no test split to evaluate on")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    files = ([(f, i) for i, c in enumerate(classes) for f in sorted((base / c).rglob("*"))] if classes
             else [(f, -1) for f in sorted(base.iterdir())])
    files = [(f, y) for f, y in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {base}")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    arrays = []
    for f, _ in files:
        with Image.open(f) as im:
            im = im.convert(mode)
            if size:
                im = im.resize((size, size), Image.BILINEAR)
            arrays.append(np.asarray(im, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {base} have different sizes {sorted(shapes)[:3]}...; set data.image_size")
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([y for _, y in files], dtype=torch.long)


def load_numpy_images(path: str | Path, split: str = "train", *, size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images from a ``.npz`` (arrays ``x_train``, optional ``y_train``, ``x_test``, ``y_test``) or a ``.npy`` of
    images only (the train split). Images: uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, or
    float in [0, 1]. Returns uint8 (N, C, H, W) and labels (N,) (-1 where absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"numpy file {path} does not exist")
    if path.suffix == ".npy":
        if split == "test":
            raise ValueError(f"{path} holds training images only; use a .npz with x_test / y_test to evaluate")
        x, y = np.load(path, allow_pickle=False), None
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if f"x_{split}" not in f:
                raise ValueError(f"{path} has no array x_{split} (has {sorted(f.files)})")
            x = f[f"x_{split}"]
            y = f[f"y_{split}"] if f"y_{split}" in f else None
    else:
        raise ValueError(f"expected a .npz or .npy file, got {path.name}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{path}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in (1, 3), got "
                         f"{x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating) or np.nanmin(x) < 0 or np.nanmax(x) > 1:
            raise ValueError(f"{path}: images must be uint8 or float in [0, 1], got {x.dtype}")
        x = np.round(x * 255).astype(np.uint8)
    labels = np.full(len(x), -1) if y is None else np.asarray(y).reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"{path}: {len(x)} images but {len(labels)} labels")
    return _resize_uint8(torch.from_numpy(np.ascontiguousarray(x)), size), torch.from_numpy(labels.astype(np.int64))


class TwoViews:
    """x -> (aug(x), aug(x)): the query and key views, two independent draws of the same recipe."""

    def __init__(self, cfg: AugmentConfig):
        self.aug = BatchAugment(cfg)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.aug(x, generator), self.aug(x, generator)


def normalize_for_eval(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Evaluation view: no augmentation, resized to ``cfg.size`` if needed, normalised like the training views."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] != cfg.size or x.shape[-2] != cfg.size:
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False, antialias=True)
    mean = x.new_tensor(cfg.mean).view(1, -1, 1, 1)
    std = x.new_tensor(cfg.std).view(1, -1, 1, 1)
    return (x - mean) / std


class MoCoV2Transform:
    """MoCo v2's aug+ as a torchvision transform, for users with their own ``Dataset`` / ``DataLoader``:
    ``MoCoV2Transform(224)(pil_image) -> [x_q, x_k]`` (``TwoCropsTransform`` of ``main_moco.py``).

    RandomResizedCrop(size, scale 0.2-1, antialiased), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8,
    RandomGrayscale(0.2), GaussianBlur with p 0.5 and sigma 0.1-2.0 px *of a 224 px image* (scaled to ``size``;
    kernel ~10% of the side), horizontal flip, ToTensor, Normalize. Grey images (``channels=1``) get only
    brightness/contrast jitter, as :func:`essence.moco.config.aug_v2`. Works on PIL images and (C, H, W) tensors
    (uint8 or float in [0, 1]); picklable, so it can run in DataLoader workers.
    """

    def __init__(self, size: int = 224, *, channels: int = 3, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        from torchvision.transforms import v2

        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if int(size) < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        from essence.moco.config import aug_v2

        cfg = aug_v2(int(size), channels)
        mean, std = mean or cfg.mean, std or cfg.std
        lo, hi = (s_ * size / cfg.blur_sigma_ref for s_ in cfg.blur_sigma)
        ops = [v2.ToImage(), v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True),
               v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                              p=cfg.jitter_p)]
        if channels == 3:
            ops.append(v2.RandomGrayscale(p=cfg.grayscale_p))
        ops += [v2.RandomApply([v2.GaussianBlur(cfg.blur_kernel, sigma=(lo, hi))], p=cfg.blur_p),
                v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.transform = v2.Compose(ops)

    def __call__(self, image) -> list[torch.Tensor]:
        return [self.transform(image), self.transform(image)]

    def __repr__(self) -> str:
        return f"MoCoV2Transform({self.transform})"
