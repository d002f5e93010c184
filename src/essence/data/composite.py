"""Fashion-MNIST objects composited in colour onto crops of natural photos (a CIFAR-sized photo domain).

Common corruptions act on photographs: fog and brightness lift an image that already has texture and mid-tones,
contrast squeezes a full histogram, noise lands on every pixel. On Fashion-MNIST's black background they turn
into offsets on pixels that no model saw non-zero. This source keeps Fashion-MNIST's labels and objects and puts
them on real photo texture, at 32 x 32 RGB (CIFAR-10's size, so CIFAR-10-C's parameters apply unscaled):

- background: a random crop of a scikit-image photo, rescaled so that a 32 px crop spans 1/6 to 1/3 of the
  photo's shorter side (enough structure, not one flat patch); the training and test splits use **disjoint
  photos** (``TRAIN_PHOTOS`` / ``TEST_PHOTOS``), so test backgrounds are out of the training domain;
- object: the 28 px Fashion-MNIST image at a random offset inside 32 px, tinted with a random colour, alpha from
  its own intensity (``alpha = min(1, 2 x)``), so its edges are soft as in a photo.

Deterministic given ``seed`` (numpy PCG64), built in about a second for 60,000 images; nothing is downloaded.

    x, y = load_composite("train", n=20000)        # uint8 (20000, 32, 32, 3), int64 (20000,)
"""

from __future__ import annotations

import numpy as np

from essence.data.fashion_mnist import load_fashion_mnist
from essence.data.photos import load_photo, photo_names

__all__ = ["load_composite", "composite", "TRAIN_PHOTOS", "TEST_PHOTOS", "SIZE"]

SIZE = 32
TRAIN_PHOTOS = ("astronaut", "coffee", "retina", "camera", "grass", "brick", "page", "moon")
TEST_PHOTOS = ("chelsea", "rocket", "immunohistochemistry", "coins", "gravel", "text")


def _photo_bank(names: tuple[str, ...], rng: np.random.Generator, scales=(6, 4, 3)) -> list[np.ndarray]:
    """Each photo downscaled so that SIZE px is 1/6, 1/4 and 1/3 of its shorter side (area resampling)."""
    from PIL import Image

    available = set(photo_names())
    bank = []
    for name in names:
        if name not in available:
            continue
        img = Image.fromarray(load_photo(name))
        for k in scales:
            f = SIZE * k / min(img.size)
            size = (max(int(round(img.size[0] * f)), SIZE), max(int(round(img.size[1] * f)), SIZE))
            bank.append(np.asarray(img.resize(size, Image.BOX)))
    if not bank:
        raise FileNotFoundError(f"none of the photos {names} is bundled with this scikit-image install "
                                "(pip install scikit-image)")
    return bank


def composite(objects: np.ndarray, names: tuple[str, ...], *, seed: int = 0) -> np.ndarray:
    """Composite uint8 objects (N, 28, 28) onto random crops of ``names`` photos: uint8 (N, 32, 32, 3)."""
    if objects.ndim != 3 or objects.dtype != np.uint8:
        raise ValueError(f"objects must be uint8 (N, H, W), got {objects.dtype} {objects.shape}")
    n, h, w = objects.shape
    if h > SIZE or w > SIZE:
        raise ValueError(f"objects must be at most {SIZE}x{SIZE}, got {h}x{w}")
    rng = np.random.default_rng(seed)
    bank = _photo_bank(names, rng)
    which = rng.integers(0, len(bank), n)
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.float32)
    for b, photo in enumerate(bank):                       # crops, photo by photo (vectorised gathers)
        idx = np.nonzero(which == b)[0]
        if not idx.size:
            continue
        top = rng.integers(0, photo.shape[0] - SIZE + 1, idx.size)
        left = rng.integers(0, photo.shape[1] - SIZE + 1, idx.size)
        rows = top[:, None] + np.arange(SIZE)[None]
        cols = left[:, None] + np.arange(SIZE)[None]
        crops = photo[rows[:, :, None], cols[:, None, :]]  # (k, SIZE, SIZE, 3)
        flip = rng.random(idx.size) < 0.5
        crops[flip] = crops[flip, :, ::-1]
        out[idx] = crops
    # tint: a random saturated colour per object (HSV with V = 1), shaded by the object's own intensity
    hue = rng.random(n)
    sat = rng.uniform(0.3, 1.0, n)
    k = (hue[:, None] * 6 + np.array([5, 3, 1])[None]) % 6
    color = 1 - sat[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)          # (n, 3) in [0, 1]
    dy = rng.integers(0, SIZE - h + 1, n)
    dx = rng.integers(0, SIZE - w + 1, n)
    obj = objects.astype(np.float32) / 255
    fg = np.zeros((n, SIZE, SIZE), dtype=np.float32)
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    fg[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = obj
    alpha = np.minimum(1.0, 2.0 * fg)[..., None]
    shade = (0.25 + 0.75 * fg)[..., None] * color[:, None, None, :] * 255
    out = alpha * shade + (1 - alpha) * out
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_composite(split: str = "train", *, n: int | None = None, seed: int = 0,
                   root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Composited images (N, 32, 32, 3) uint8 and labels (N,) int64 of Fashion-MNIST's ``train`` or ``test``
    split (the first ``n`` images of a fixed permutation when ``n`` is given), on the split's own photos."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = load_fashion_mnist(split, root)
    if n is not None:
        if n <= 0:
            raise ValueError(f"n must be a positive integer, got {n}")
        idx = np.sort(np.random.default_rng(seed + (0 if split == "train" else 1)).permutation(len(x))[:n])
        x, y = x[idx], y[idx]
    photos = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
    return composite(x, photos, seed=seed * 2 + (0 if split == "train" else 1)), y
