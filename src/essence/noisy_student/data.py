"""Labeled / unlabeled data for Noisy Student.

- :func:`split_fashion_mnist`: a class-balanced labeled part of the Fashion-MNIST training split and the rest as
  unlabeled images. The unlabeled part is returned as **images only** (:class:`SemiSupervisedData` has no field
  for their labels), so nothing downstream can read them; the test split keeps its labels for scoring.
- :func:`load_image_folder`: any folder of images (class sub-folders for labeled data, a flat folder for
  unlabeled), or NumPy files (``.npz`` with ``x``/``y``; ``.npy`` images).
- :func:`ood_images`: procedural out-of-domain images (gratings, blobs, strokes) mixed into the unlabeled set.

Images are uint8 tensors (N, C, H, W); :func:`normalize` maps them to the network's input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from essence.noisy_student.config import DataConfig

__all__ = ["SemiSupervisedData", "split_fashion_mnist", "make_split", "load_data", "load_image_folder", "ood_images",
           "normalize", "MEAN", "STD", "IMAGE_SUFFIXES"]

MEAN, STD = 0.2860, 0.3530            # Fashion-MNIST training statistics (grey)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class SemiSupervisedData:
    """What a Noisy Student run sees: labeled images + labels, unlabeled images (no labels), a labeled test set."""

    labeled_x: torch.Tensor       # uint8 (n, C, H, W)
    labeled_y: torch.Tensor       # int64 (n,)
    unlabeled_x: torch.Tensor     # uint8 (m, C, H, W); the last `n_ood` of them are out-of-domain
    test_x: torch.Tensor          # uint8 (t, C, H, W)
    test_y: torch.Tensor          # int64 (t,)
    num_classes: int = 10
    n_ood: int = 0

    def __post_init__(self):
        if self.labeled_x.shape[0] == 0:
            raise ValueError("the labeled set is empty")
        if self.unlabeled_x.shape[0] == 0:
            raise ValueError("the unlabeled set is empty")
        if self.labeled_x.shape[0] != self.labeled_y.shape[0]:
            raise ValueError(f"{self.labeled_x.shape[0]} labeled images but {self.labeled_y.shape[0]} labels")
        shapes = {tuple(t.shape[1:]) for t in (self.labeled_x, self.unlabeled_x, self.test_x)}
        if len(shapes) != 1:
            raise ValueError(f"labeled, unlabeled and test images must have one shape (C, H, W), got {sorted(shapes)}")
        missing = sorted(set(range(self.num_classes)) - set(self.labeled_y.unique().tolist()))
        if missing:
            raise ValueError(f"the labeled split has no image of class(es) {missing} (of {self.num_classes}); "
                             "every class needs at least one labeled image")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [0, 1]) images -> the network's input (grey Fashion-MNIST statistics)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    return (x - MEAN) / STD


def _balanced_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} images; data.labeled_per_class={per_class}")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def split_fashion_mnist(cfg: DataConfig) -> SemiSupervisedData:
    """Labeled = ``labeled_per_class`` images per class (drawn with ``split_seed``), unlabeled = the rest (the
    first ``unlabeled`` of a seeded shuffle when set) plus ``ood`` procedural images; test = the official split."""
    from essence.data.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("train", cfg.root)
    test_x, test_y = load_fashion_mnist("test", cfg.root)
    lab = _balanced_indices(labels, cfg.labeled_per_class, cfg.split_seed)
    return make_split(images, labels, lab, test_x, test_y, cfg)


def make_split(images: np.ndarray, labels: np.ndarray, labeled: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
               cfg: DataConfig, num_classes: int = 10) -> SemiSupervisedData:
    """The split for given labeled indices: only ``labels[labeled]`` is read; every other training image becomes
    an unlabeled image without its label."""
    lab = np.sort(np.asarray(labeled, dtype=np.int64))
    rest = np.setdiff1d(np.arange(len(images)), lab)
    rest = np.random.default_rng(cfg.split_seed + 1).permutation(rest)
    if cfg.unlabeled:
        rest = rest[:cfg.unlabeled]
    unl = torch.from_numpy(images[np.sort(rest)].copy())[:, None]      # images only: their labels stay here
    if cfg.ood:
        unl = torch.cat([unl, ood_images(cfg.ood, images.shape[-1], seed=cfg.split_seed)])
    if cfg.test_limit:
        test_x, test_y = test_x[:cfg.test_limit], test_y[:cfg.test_limit]
    return SemiSupervisedData(labeled_x=torch.from_numpy(images[lab].copy())[:, None],
                              labeled_y=torch.from_numpy(np.asarray(labels[lab], dtype=np.int64).copy()),
                              unlabeled_x=unl, test_x=torch.from_numpy(test_x.copy())[:, None],
                              test_y=torch.from_numpy(test_y.copy()), n_ood=cfg.ood, num_classes=num_classes)


def load_data(cfg: DataConfig) -> SemiSupervisedData:
    """The Fashion-MNIST split, or the user's data: ``labeled_dir`` (class sub-folders or an .npz with x, y) with
    ``test_dir`` (same form), and / or ``unlabeled_dir`` (a folder or .npy of images) replacing the unlabeled part
    (plus ``ood`` procedural images)."""
    if cfg.labeled_dir is None and cfg.unlabeled_dir is None:
        return split_fashion_mnist(cfg)
    if cfg.labeled_dir is not None:
        if cfg.test_dir is None:
            raise ValueError("data.labeled_dir needs data.test_dir (a labeled test folder or .npz) to score on")
        lab_x, lab_y = load_image_folder(cfg.labeled_dir, labeled=True, size=cfg.image_size)
        test_x, test_y = load_image_folder(cfg.test_dir, labeled=True, size=cfg.image_size)
        num_classes = int(lab_y.max()) + 1
        if cfg.unlabeled_dir is None:
            raise ValueError("data.labeled_dir needs data.unlabeled_dir (the images to pseudo-label)")
        base_unl = None
    else:
        base = split_fashion_mnist(cfg.replace(ood=0))
        lab_x, lab_y, test_x, test_y, num_classes = base.labeled_x, base.labeled_y, base.test_x, base.test_y, 10
        base_unl = base.unlabeled_x
    unl = base_unl
    if cfg.unlabeled_dir is not None:
        unl, _ = load_image_folder(cfg.unlabeled_dir, labeled=False, size=cfg.image_size)
    if cfg.ood:
        unl = torch.cat([unl, ood_images(cfg.ood, cfg.image_size, seed=cfg.split_seed)])
    if cfg.test_limit:
        test_x, test_y = test_x[:cfg.test_limit], test_y[:cfg.test_limit]
    return SemiSupervisedData(labeled_x=lab_x, labeled_y=lab_y, unlabeled_x=unl, test_x=test_x, test_y=test_y,
                              num_classes=num_classes, n_ood=cfg.ood)


def _read_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())[None]
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def load_image_folder(path: str | Path, *, labeled: bool, size: int = 28) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, 1, size, size) uint8 and labels (N,) (class sub-folders, sorted by name) or None.

    Accepts a folder of images (any mode and size: converted to grey and resized to ``size`` with a warning
    when they differ), a ``.npy`` of images (N, H, W) or an ``.npz`` with ``x`` (and ``y`` when labeled).

    Raises:
        FileNotFoundError: no such path.
        ValueError: no images found, an unreadable image, or a malformed array.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image folder not found: {path}")
    if path.is_file() and path.suffix in (".npy", ".npz"):
        data = np.load(path, allow_pickle=False)
        x = data["x"] if path.suffix == ".npz" else data
        y = data["y"] if path.suffix == ".npz" and "y" in data else None
        if labeled and y is None:
            raise ValueError(f"{path}: a labeled .npz needs arrays 'x' and 'y'")
        x = np.asarray(x)
        if x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.mean(-1)
        if x.ndim != 3 or x.shape[0] == 0:
            raise ValueError(f"{path}: expected images (N, H, W), got shape {x.shape}")
        if x.dtype != np.uint8:
            x = np.clip(x * (255 if x.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        t = torch.from_numpy(x.copy())[:, None]
        if t.shape[-1] != size or t.shape[-2] != size:
            t = F.interpolate(t.float(), size=(size, size), mode="bilinear", antialias=True).round().clamp(0, 255)
            t = t.to(torch.uint8)
        return t, (torch.from_numpy(np.asarray(y, dtype=np.int64)) if labeled else None)
    if not path.is_dir():
        raise ValueError(f"{path}: expected a folder of images, a .npy or a .npz file")
    if labeled:
        classes = sorted(p for p in path.iterdir() if p.is_dir())
        if not classes:
            raise ValueError(f"{path}: a labeled folder needs one sub-folder per class, found none")
        files = [(f, i) for i, c in enumerate(classes) for f in sorted(c.iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(path.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    sizes = set()
    out = []
    for f, _ in files:
        from PIL import Image

        try:
            with Image.open(f) as im:
                sizes.add((im.size, im.mode))
        except OSError as err:
            raise ValueError(f"{f}: not a readable image ({err})") from None
        out.append(_read_image(f, size))
    if len(sizes) > 1 or any(s != (size, size) or m != "L" for s, m in sizes):
        warnings.warn(f"{path}: images of sizes/modes {sorted(sizes)[:4]} were converted to grey {size}x{size}",
                      stacklevel=2)
    x = torch.stack(out)
    y = torch.tensor([i for _, i in files], dtype=torch.int64) if labeled else None
    return x, y


def ood_images(n: int, size: int = 28, *, seed: int = 0) -> torch.Tensor:
    """``n`` procedural out-of-domain grey images (N, 1, size, size) uint8: a third each of sinusoidal gratings,
    Gaussian blobs and random pen strokes (digit-like), drawn from ``seed``."""
    if n <= 0:
        return torch.zeros(0, 1, size, size, dtype=torch.uint8)
    g = torch.Generator().manual_seed(10_007 + seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    kind = torch.arange(n) % 3
    out = torch.zeros(n, size, size)
    k0 = kind == 0
    if k0.any():
        m = int(k0.sum())
        freq = 2 + 6 * torch.rand(m, 1, 1, generator=g)
        ang = math_pi() * torch.rand(m, 1, 1, generator=g)
        phase = 2 * math_pi() * torch.rand(m, 1, 1, generator=g)
        out[k0] = 0.5 + 0.5 * torch.sin(freq * math_pi() * (xx * torch.cos(ang) + yy * torch.sin(ang)) + phase)
    k1 = kind == 1
    if k1.any():
        m = int(k1.sum())
        c = torch.rand(m, 4, 2, generator=g) * 1.4 - 0.7
        s = 0.1 + 0.3 * torch.rand(m, 4, 1, 1, generator=g)
        d = (xx[None, None] - c[..., 0, None, None]) ** 2 + (yy[None, None] - c[..., 1, None, None]) ** 2
        out[k1] = torch.exp(-d / (2 * s ** 2)).amax(1)
    k2 = kind == 2
    if k2.any():
        m = int(k2.sum())
        t = torch.linspace(0, 1, 64)
        p = torch.rand(m, 4, 2, generator=g) * 1.2 - 0.6          # a cubic Bezier pen stroke
        b = ((1 - t) ** 3)[None, :, None] * p[:, None, 0] + (3 * (1 - t) ** 2 * t)[None, :, None] * p[:, None, 1] \
            + (3 * (1 - t) * t ** 2)[None, :, None] * p[:, None, 2] + (t ** 3)[None, :, None] * p[:, None, 3]
        d = (xx[None, None] - b[..., 0, None, None]) ** 2 + (yy[None, None] - b[..., 1, None, None]) ** 2
        out[k2] = torch.exp(-d.amin(1) / (2 * 0.07 ** 2))
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)[:, None]


def math_pi() -> float:
    return float(np.pi)
