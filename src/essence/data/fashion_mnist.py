"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) from Debian's ``dataset-fashion-mnist`` or a user folder.

The four original IDX files (``train-images-idx3-ubyte.gz`` ...) are parsed with gzip + NumPy, without
torchvision. A truncated or malformed file raises ``ValueError`` naming the file and what was wrong.

    images, labels = load_fashion_mnist("train")        # uint8 (60000, 28, 28), int64 (60000,)
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from essence.data.cache import missing_source_error

__all__ = ["load_fashion_mnist", "read_idx", "fashion_mnist_root", "CLASSES", "DEBIAN_ROOT"]

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get install dataset-fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into an array of its declared dtype and shape."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: cannot read the file ({err}); it is truncated or not gzip data") from None
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code not in _DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (magic bytes {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: header declares {ndim} dimensions but the file ends after {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(data) - header
    if body != expected:
        raise ValueError(f"{path}: header declares shape {shape} ({expected} bytes of data) but the file has "
                         f"{body}; it is truncated or corrupt")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def fashion_mnist_root(root: str | Path | None = None) -> Path:
    """The folder holding the IDX files: ``root``, else ``$ESSENCE_FASHION_MNIST``, else Debian's."""
    candidate = Path(root) if root is not None else Path(os.environ.get("ESSENCE_FASHION_MNIST", DEBIAN_ROOT))
    if not candidate.is_dir():
        raise missing_source_error("Fashion-MNIST", INSTALL, path=candidate, env="ESSENCE_FASHION_MNIST")
    return candidate


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise missing_source_error(f"Fashion-MNIST file {stem}(.gz)", INSTALL, path=root, env="ESSENCE_FASHION_MNIST")


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the ``train`` (60k) or ``test`` (10k) split."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = fashion_mnist_root(root)
    image_file, label_file = (_find(folder, stem) for stem in _FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(f"{image_file}: expected images (N, H, W) and labels (N,), got {images.shape} and "
                         f"{labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"{label_file}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int64)
