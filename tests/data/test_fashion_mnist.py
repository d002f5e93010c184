import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from essence.data import load_fashion_mnist, read_idx
from essence.data.fashion_mnist import DEBIAN_ROOT


def write_idx(path: Path, arr: np.ndarray, gz: bool = True, truncate: int = 0):
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    header = struct.pack(">HBB", 0, code, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    data = data[: len(data) - truncate]
    (gzip.open if gz else open)(path, "wb").write(data)
    return path


def make_fake(root: Path, n=5):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_idx(root / "t10k-images-idx3-ubyte.gz", imgs)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    return imgs, labels


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", arr)), arr)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", arr, gz=False)), arr)


def test_user_folder(tmp_path):
    imgs, labels = make_fake(tmp_path)
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert np.array_equal(x, imgs) and np.array_equal(y, labels) and y.dtype == np.int64


def test_corrupt_files_raise_naming_the_file(tmp_path):
    arr = np.zeros((3, 28, 28), np.uint8)
    bad = write_idx(tmp_path / "trunc.gz", arr, truncate=100)
    with pytest.raises(ValueError, match=r"trunc.gz: header declares shape \(3, 28, 28\).*truncated"):
        read_idx(bad)
    (tmp_path / "notgz.gz").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="notgz.gz: cannot read"):
        read_idx(tmp_path / "notgz.gz")
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    # half-written gzip stream
    good = write_idx(tmp_path / "good.gz", arr)
    (tmp_path / "half.gz").write_bytes(good.read_bytes()[:30])
    with pytest.raises(ValueError, match="half.gz"):
        read_idx(tmp_path / "half.gz")


def test_mismatched_counts_and_missing_source(tmp_path):
    make_fake(tmp_path, n=5)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="has 5 images but .* has 4 labels"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("val", root=tmp_path)


@pytest.mark.skipif(not DEBIAN_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_debian_package():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
