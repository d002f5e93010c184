"""The network (paper's layer list) and the import of the original Keras weights (h5py, no TensorFlow)."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from essence.deep_salience.model import SalienceNet, WeightsError, load_keras_h5, sha256_file

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "deep_salience" / "weights"
FIXTURE = REPO / "tests" / "fixtures" / "deep_salience" / "keras_forward_multif0.npz"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "multif0.h5").exists(),
                                   reason=f"original Keras weights not found in {WEIGHTS}")


def test_architecture_matches_the_paper():
    net = SalienceNet()
    n_params = sum(p.numel() for p in net.parameters())
    n_bn_stats = sum(b.numel() for name, b in net.named_buffers() if "running" in name)
    assert n_params + n_bn_stats == 406_921      # what every released .h5 holds
    assert [tuple(getattr(net, n).weight.shape) for n in ("bendy1", "bendy2", "smoothy1", "smoothy2",
                                                          "distribute", "squishy")] == [
        (128, 6, 5, 5), (64, 128, 5, 5), (64, 64, 3, 3), (64, 64, 3, 3), (8, 64, 70, 3), (1, 8, 1, 1)]
    assert net.bn_input.eps == 1e-3 and net.bn_bendy1.eps == 1e-3
    assert net.macs_per_frame() == 360 * (6 * 128 * 25 + 128 * 64 * 25 + 64 * 64 * 9 * 2 + 64 * 8 * 210 + 8)
    x = torch.rand(2, 6, 360, 17)
    y = net.eval()(x)
    assert y.shape == (2, 360, 17) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_distribute_padding_is_tf_same_for_the_even_kernel():
    """Through ``forward``: an impulse at bin b seen by the top tap of the 70-tall kernel lands at b + 34
    (TF 'same' pads 34 rows above and 35 below); every other layer is an identity."""
    net = SalienceNet(in_channels=1, widths=(1, 1, 1, 1, 1), input_bn=False).eval()
    with torch.no_grad():
        for name in ("bendy1", "bendy2", "smoothy1", "smoothy2", "distribute", "squishy"):
            conv = getattr(net, name)
            conv.weight.zero_()
            conv.bias.zero_()
            kh, kw = conv.kernel_size
            if name == "distribute":
                conv.weight[0, 0, 0, kw // 2] = 1.0       # top tap
            else:
                conv.weight[0, 0, kh // 2, kw // 2] = 1.0  # centre tap: identity
        x = torch.zeros(1, 1, 360, 5)
        x[0, 0, 100, 2] = 1.0
        y = net(x)
    assert y.shape == (1, 360, 5)
    col = y[0, :, 2]
    assert int(col.argmax()) == 100 + 34 and float(col[134]) > 0.7 and float(col.min()) == pytest.approx(0.5)
    # the bottom tap (row 69) reads 35 rows below
    with torch.no_grad():
        net.distribute.weight.zero_()
        net.distribute.weight[0, 0, 69, 1] = 1.0
        assert int(net(x)[0, :, 2].argmax()) == 100 - 35


@needs_weights
def test_keras_weights_equal_the_independent_numpy_forward():
    data = np.load(FIXTURE)
    assert str(data["weights_sha256"]) == sha256_file(WEIGHTS / "multif0.h5")
    model = load_keras_h5(WEIGHTS / "multif0.h5", task="multif0")
    with torch.no_grad():
        out = model(torch.from_numpy(data["hcqt"])[None])[0].numpy()
    assert np.abs(out - data["salience"]).max() <= 1e-4
    assert data["salience"].max() > 0.5     # the slice holds real pitch activity, not only background


@needs_weights
@pytest.mark.parametrize("name", ["bass", "melody1", "melody2", "melody3", "pitch", "vocal"])
def test_all_released_files_load(name):
    model = load_keras_h5(WEIGHTS / f"{name}.h5")
    assert model.widths == (128, 64, 64, 64, 8) and model.input_bn


@needs_weights
def test_task_and_weights_mismatch_warns():
    with pytest.warns(UserWarning, match="released 'bass' model"):
        load_keras_h5(WEIGHTS / "bass.h5", task="multif0")


def test_bad_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_keras_h5(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(WeightsError, match="not an HDF5"):
        load_keras_h5(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
        g = f.create_group("dense_1")
        g.attrs["weight_names"] = [b"dense_1/kernel:0"]
        g.create_dataset("dense_1/kernel:0", data=np.zeros((3, 3), np.float32))
    with pytest.raises(WeightsError):
        load_keras_h5(other)
    if (WEIGHTS / "multif0.h5").exists():
        truncated = tmp_path / "truncated.h5"
        truncated.write_bytes((WEIGHTS / "multif0.h5").read_bytes()[:50_000])
        with pytest.raises(WeightsError):
            load_keras_h5(truncated)
