"""All seven released Keras files against an independent NumPy forward on non-stationary input.

The NumPy forward (``tests/fixtures/make_deep_salience_keras_forward.py``: NHWC, TF 'same' cross-correlation,
ReLU, BatchNorm(eps 1e-3) in inference mode, sigmoid) reads each .h5 with h5py on its own. The input changes
along time and frequency, so a time- or frequency-flipped kernel, a transposed kernel or swapped BatchNorm
statistics would not pass.
"""

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from essence.deep_salience.model import RELEASED_SHA256, load_keras_h5, read_keras_h5, released_name

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "deep_salience" / "weights"
NAMES = sorted(RELEASED_SHA256.values())


def _reference():
    spec = importlib.util.spec_from_file_location("ds_ref", REPO / "tests" / "fixtures" /
                                                  "make_deep_salience_keras_forward.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _numpy_forward(path: Path, x: np.ndarray) -> np.ndarray:
    ref = _reference()
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        layers = []
        for n in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
            wn = [w.decode() if isinstance(w, bytes) else w for w in root[n].attrs["weight_names"]]
            if wn:
                layers.append((n, {w.split("/")[-1].split(":")[0]: root[n][w][()].astype(np.float64) for w in wn}))
    h = x.transpose(1, 2, 0).astype(np.float64)                     # (360, T, 6) NHWC without N
    for name, w in layers:
        if "kernel" in w:
            h = ref.conv_same(h, w["kernel"], w["bias"])
            h = 1 / (1 + np.exp(-h)) if name == "squishy" else np.maximum(h, 0)
        else:
            h = ref.bn(h, w)
    return h[:, :, 0]


@pytest.mark.parametrize("name", NAMES)
def test_every_released_file_equals_the_numpy_forward(name):
    path = WEIGHTS / f"{name}.h5"
    if not path.is_file():
        pytest.skip("the released Keras weights are not in shared/deep_salience/weights (optional)")
    assert released_name(path) == name
    w = read_keras_h5(path)
    # every tensor has the paper's shape; six BatchNorms (input + one per conv)
    shapes = {k: v.shape for k, v in w.items()}
    assert shapes["bendy1.kernel"] == (5, 5, 6, 128) and shapes["distribute.kernel"] == (70, 3, 64, 8)
    assert shapes["squishy.kernel"] == (1, 1, 8, 1) and sum(k.endswith(".gamma") for k in w) == 6
    assert shapes["bn0.gamma"] == (6,) and shapes["bn5.gamma"] == (8,)
    rng = np.random.default_rng(NAMES.index(name))
    T = 10
    ramp = np.linspace(0, 1, T)[None, None, :] * np.linspace(1, 0, 360)[None, :, None]
    x = (0.5 * rng.random((6, 360, T)) + 0.5 * ramp).astype(np.float32)
    x[:, 100:104, 3:6] = 1.0                                        # an off-centre block: asymmetric in t and f
    expected = _numpy_forward(path, x)
    model = load_keras_h5(path)
    with torch.no_grad():
        got = model(torch.from_numpy(x)[None])[0].double().numpy()
    assert np.max(np.abs(got - expected)) < 1e-4
    flipped = _numpy_forward(path, x[:, :, ::-1].copy())[:, ::-1]
    assert np.max(np.abs(flipped - expected)) > 1e-3                # the check would see a time-flipped kernel


def test_bn_layer_names_and_shapes_are_checked(tmp_path):
    import shutil

    from essence.deep_salience.model import WeightsError

    if not (WEIGHTS / "multif0.h5").is_file():
        pytest.skip("the released Keras weights are not in shared/deep_salience/weights (optional)")
    bad = tmp_path / "renamed_bn.h5"
    shutil.copy(WEIGHTS / "multif0.h5", bad)
    with h5py.File(bad, "r+") as f:
        root = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
        old = names[3]                                            # the BatchNorm after bendy1
        root.move(old, "norm_x")
        root.attrs["layer_names"] = [("norm_x" if n == old else n).encode() for n in names]
    with pytest.raises(WeightsError, match="batch_normalization"):
        read_keras_h5(bad)
    swapped = tmp_path / "swapped.h5"
    shutil.copy(WEIGHTS / "multif0.h5", swapped)
    with h5py.File(swapped, "r+") as f:
        root = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
        i, j = names.index("bendy2"), names.index("bendy2") + 1  # conv and its BatchNorm trade places
        names[i], names[j] = names[j], names[i]
        root.attrs["layer_names"] = [n.encode() for n in names]
    with pytest.raises(WeightsError, match="order"):
        read_keras_h5(swapped)
