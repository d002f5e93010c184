"""Write a corrupted copy of a dataset in the layouts of the released benchmarks, and read it back.

- ``imagenet-c``: ``OUT/<corruption>/<severity>/<class>/<file>.JPEG``, each image stored as a JPEG at quality 85
  with Pillow (the release's storage step), the layout ``torchvision.datasets.ImageFolder`` reads per
  (corruption, severity).
- ``cifar-c``: ``OUT/<corruption>.npy`` uint8 (5 N, H, W, C), severities 1..5 stacked in order, and
  ``OUT/labels.npy`` (5 N,), as CIFAR-10-C ships.

Image i (its position in the input) under (corruption c, severity s) draws from (condition_seed(seed, c, s), i),
so an export equals :func:`.evaluate.corrupted_test_set` of the same images and seed, in any chunking.

    images, labels, files = read_image_folder("val/")              # ImageFolder layout: val/<class>/<image>
    export(images, labels, "out/", layout="cifar-c")
    x, y = load_cifar_c("out/", "fog", severity=3)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from essence.core.progress import ProgressBar

__all__ = ["export", "read_image_folder", "load_cifar_c", "LAYOUTS", "IMAGE_SUFFIXES"]

LAYOUTS = ("imagenet-c", "cifar-c")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image_folder(root: str | Path, *, size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 images (N, H, W, 3), labels (N,) and relative paths of an ImageFolder tree ``root/<class>/<image>``
    (classes and files sorted). Images must share one size unless ``size`` (resize, then centre crop to a
    square of that side, as ImageNet's Resize(256) + CenterCrop(224) in one step) is given."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class sub-folders (expected the ImageFolder layout root/<class>/<image>)")
    images, labels, files = [], [], []
    for k, cls in enumerate(classes):
        for f in sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                img = Image.open(f).convert("RGB")
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{f} is not a readable image: {err}") from None
            if size:
                scale = size / min(img.size)
                img = img.resize((max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale))),
                                 Image.BILINEAR)
                left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
                img = img.crop((left, top, left + size, top + size))
            images.append(np.asarray(img))
            labels.append(k)
            files.append(f"{cls}/{f.name}")
    if not images:
        raise ValueError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"the images have different sizes {sorted(shapes)[:3]}...; pass size= (--size) to resize")
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


def export(images: np.ndarray, labels: Sequence[int] | np.ndarray, out: str | Path, *, layout: str = "cifar-c",
           names: Sequence[str] | None = None, severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0,
           param_set: str = "auto", files: Sequence[str] | None = None, batch_size: int = 256) -> Path:
    """Corrupt uint8 images (N, H, W, C) with every (corruption, severity) and write them in ``layout``."""
    from PIL import Image

    from essence.corruptions.api import _check_severity, corrupt
    from essence.corruptions.evaluate import condition_seed
    from essence.corruptions.functional import corruption_names

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, H, W, C) with C = 1 or 3, got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},), got {labels.shape}")
    names = list(names) if names is not None else corruption_names("common")
    severities = [_check_severity(s) for s in severities]
    if layout == "cifar-c" and severities != [1, 2, 3, 4, 5]:
        raise ValueError("the cifar-c layout stacks all five severities; use layout='imagenet-c' for a subset")
    if files is not None and len(files) != len(images):
        raise ValueError(f"files must name the {len(images)} images, got {len(files)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if layout == "cifar-c":
        np.save(out / "labels.npy", np.tile(labels, 5))
    with ProgressBar(len(names) * len(severities), desc=f"export {layout}", unit="set") as bar:
        for name in names:
            stack = np.empty((5 * len(images), *images.shape[1:]), np.uint8) if layout == "cifar-c" else None
            for s in severities:
                for start in range(0, len(images), batch_size):
                    y = corrupt(x[start:start + batch_size].contiguous(), name, s, seed=condition_seed(seed, name, s),
                                start=start, param_set=param_set).permute(0, 2, 3, 1).numpy()
                    if stack is not None:
                        stack[(s - 1) * len(images) + start:(s - 1) * len(images) + start + len(y)] = y
                        continue
                    for j, img in enumerate(y):
                        i = start + j
                        rel = Path(files[i]) if files is not None else Path(f"{labels[i]}/{i:08d}")
                        target = out / name / str(s) / rel.parent / (rel.stem + ".JPEG")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
                            target, format="JPEG", quality=85, optimize=True)
                bar.update(1)
            if stack is not None:
                np.save(out / f"{name}.npy", stack)
    return out


def load_cifar_c(root: str | Path, name: str, severity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 and labels of a CIFAR-10-C-style folder, one severity (1..5) or all five."""
    from essence.corruptions.api import _check_severity

    root = Path(root)
    path, lab = root / f"{name}.npy", root / "labels.npy"
    if not path.exists() or not lab.exists():
        raise FileNotFoundError(f"{root} has no {name}.npy / labels.npy (a CIFAR-10-C-style folder)")
    x, y = np.load(path, mmap_mode="r"), np.load(lab)
    if len(x) != len(y) or len(x) % 5:
        raise ValueError(f"{path}: {len(x)} images for {len(y)} labels; expected 5 equal severity blocks")
    if severity is None:
        return np.asarray(x), y
    s = _check_severity(severity)
    n = len(x) // 5
    return np.asarray(x[(s - 1) * n:s * n]), y[(s - 1) * n:s * n]
