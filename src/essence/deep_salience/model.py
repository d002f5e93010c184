"""The Deep Salience network (Bittner et al., ISMIR 2017, Sec. 3.2, "exper11 + input BatchNorm") and the import
of the original Keras ``.h5`` weights.

Layer by layer (kernel sizes are frequency x time, 'same' padding, no pooling or striding, BatchNorm *after*
each ReLU, Keras BatchNorm defaults: eps 1e-3, momentum 0.99 (torch momentum 0.01))::

    input (6, 360, T) -> BatchNorm(6)
    bendy1     Conv 128, 5x5,  ReLU -> BatchNorm
    bendy2     Conv  64, 5x5,  ReLU -> BatchNorm
    smoothy1   Conv  64, 3x3,  ReLU -> BatchNorm
    smoothy2   Conv  64, 3x3,  ReLU -> BatchNorm
    distribute Conv   8, 70x3, ReLU -> BatchNorm      (70 bins = 14 semitones; pads 34 above, 35 below)
    squishy    Conv   1, 1x1,  sigmoid -> squeeze -> salience (360, T) in [0, 1]

The full network has 406,921 parameters (all seven released weight files hold exactly this). ``widths``
scales the channel counts for the CPU quick preset (the report says when a reduced width was used).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["SalienceNet", "load_keras_h5", "read_keras_h5", "KERAS_TASKS", "PAPER_WIDTHS", "WeightsError",
           "task_of_keras_file", "released_name", "RELEASED_SHA256"]

PAPER_WIDTHS = (128, 64, 64, 64, 8)
_CONVS = ("bendy1", "bendy2", "smoothy1", "smoothy2", "distribute", "squishy")
_KERNELS = ((5, 5), (5, 5), (3, 3), (3, 3), (70, 3), (1, 1))
# essence task -> names of the released files trained for it (melody2 is the paper's melody model)
KERAS_TASKS = {"multif0": ("multif0",), "melody": ("melody2", "melody1", "melody3", "vocal", "pitch"),
               "bass": ("bass",)}


class WeightsError(ValueError):
    """A weight file that is not a Deep Salience model (wrong format, corrupt, wrong shapes)."""


class SalienceNet(nn.Module):
    """HCQT (B, C, 360, T) -> salience (B, 360, T) in [0, 1].

    Args:
        in_channels: HCQT channels (6 harmonics; 1 for the single-harmonic CQT ablation).
        widths: output channels of bendy1, bendy2, smoothy1, smoothy2, distribute (paper: 128, 64, 64, 64, 8).
        input_bn: the input BatchNorm that distinguishes the final model (card §2.2; ablated in §5.3).
        bn_momentum: torch BatchNorm momentum (0.01 = Keras' 0.99); short CPU schedules use 0.1 so that the
            running statistics used at evaluation catch up within a few dozen steps.
    """

    def __init__(self, in_channels: int = 6, widths: tuple[int, ...] = PAPER_WIDTHS, input_bn: bool = True,
                 bn_momentum: float = 0.01):
        super().__init__()
        if len(widths) != 5 or any(int(w) <= 0 for w in widths):
            raise ValueError(f"widths must be 5 positive channel counts, got {widths!r}")
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        self.widths = tuple(int(w) for w in widths)
        self.input_bn = input_bn
        self.bn_input = nn.BatchNorm2d(in_channels, eps=1e-3, momentum=bn_momentum) if input_bn else nn.Identity()
        chans = (in_channels, *self.widths, 1)
        for i, (name, k) in enumerate(zip(_CONVS, _KERNELS)):
            # 'same' padding; the even 70-tall kernel is padded explicitly in forward (34 above, 35 below)
            pad = (0, 1) if name == "distribute" else "same"
            setattr(self, name, nn.Conv2d(chans[i], chans[i + 1], k, padding=pad))
            if name != "squishy":
                setattr(self, f"bn_{name}", nn.BatchNorm2d(chans[i + 1], eps=1e-3, momentum=bn_momentum))
        # channels-last (NHWC) weights and activations: oneDNN's fast convolution layout on CPUs (training 1.3x,
        # inference 1.6x faster than NCHW on a 2-core Xeon, fp32) and the tensor-core layout on GPUs
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] != 360:
            raise ValueError(f"expected an HCQT batch of shape (B, {self.in_channels}, 360, T), got "
                             f"{tuple(x.shape)}")
        y = self.bn_input(x.contiguous(memory_format=torch.channels_last))
        for name in _CONVS[:-1]:
            if name == "distribute":   # TF 'same' for kh = 70
                y = nn.functional.pad(y, (0, 0, 34, 35)).contiguous(memory_format=torch.channels_last)
            y = getattr(self, f"bn_{name}")(torch.relu(getattr(self, name)(y)))
        return torch.sigmoid(self.squishy(y)).squeeze(1)                  # (B, 360, T)

    def macs_per_frame(self, n_bins: int = 360) -> int:
        """Multiply-accumulates per output frame (146 M for the paper's widths)."""
        total = 0
        for name in _CONVS:
            conv = getattr(self, name)
            kh, kw = conv.kernel_size
            total += n_bins * conv.in_channels * conv.out_channels * kh * kw
        return total


# ----------------------------------------------------------------------------------------------------------
# Keras .h5 import (h5py only, no TensorFlow)
# ----------------------------------------------------------------------------------------------------------
# sha256 of the seven released files (rabitt/ismir2017-deepsalience predict/weights): identifies a renamed copy
RELEASED_SHA256 = {
    "e0e839166242aeaca69a26449e997dd67f58056f05e337985f3ec88a3118ceb4": "bass",
    "7fc1daf6250933f96e5b753dfc8bb830ae7a2711f4883efd653c97b1b21f8e94": "melody1",
    "96ccbfb713f62ded590de4c08ae49a4bd2bfd6c3450e9f85fee51ccae4054fb0": "melody2",
    "0bd9227670fecef33b5c4f27e6d1732c2f63b178a5d1e4b18a061f5cc11b58e2": "melody3",
    "a426f89d098478249df02db401f812c33de82a5bd7006f22912a8f9146d4f19f": "multif0",
    "7f1ef1dc450de951079b98952addb94d30945563b313232d2900f83a3ea4ce81": "pitch",
    "1a189b2de870333612df0c2a8eed122695a2dfd76240d5e3a542d12c48cbf7f4": "vocal",
}


def released_name(path: str | Path) -> str | None:
    """Which released file this is (``'melody2'``...), by content hash, whatever its name; else None."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size > 4 << 20:  # the released files are 1.7 MB
        return None
    return RELEASED_SHA256.get(sha256_file(p))


def task_of_keras_file(path: str | Path) -> str | None:
    """The essence task a released file was trained for: by content hash (a renamed copy is still recognised),
    else from its name (``melody2.h5`` -> ``melody``)."""
    stem = (released_name(path) or Path(path).stem).lower()
    for task, names in KERAS_TASKS.items():
        if stem in names:
            return task
    return None


def read_keras_h5(path: str | Path) -> dict[str, np.ndarray]:
    """Read a Keras 2 ``save_weights``/``save`` file of the Deep Salience model into a flat dict.

    Keys: ``<conv>.kernel`` (kh, kw, in, out), ``<conv>.bias``, ``bn<i>.{gamma,beta,moving_mean,moving_variance}``
    with i = 0 for the input BatchNorm and 1..5 after each convolution, in the order the file lists its layers.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not HDF5, truncated, or not this architecture.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if not h5py.is_hdf5(str(path)):
        raise WeightsError(f"{path} is not an HDF5 (Keras .h5) file; pass a released Deep Salience .h5 or an "
                           f"essence checkpoint (.safetensors)")
    try:
        with h5py.File(str(path), "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
            if not names:
                raise WeightsError(f"{path}: no 'layer_names' attribute; not a Keras weight file")
            out: dict[str, np.ndarray] = {}
            n_bn = 0
            order: list[str] = []
            for name in names:
                group = root[name]
                weight_names = [w.decode() if isinstance(w, bytes) else str(w)
                                for w in group.attrs.get("weight_names", [])]
                if not weight_names:
                    continue
                arrays = {w.split("/")[-1].split(":")[0]: np.asarray(group[w], dtype=np.float32)
                          for w in weight_names}
                if name in _CONVS:
                    out[f"{name}.kernel"], out[f"{name}.bias"] = arrays["kernel"], arrays["bias"]
                    order.append(name)
                elif {"gamma", "beta", "moving_mean", "moving_variance"} <= set(arrays):
                    if not name.startswith("batch_normalization"):
                        raise WeightsError(f"{path}: layer {name!r} holds BatchNorm weights but is not named "
                                           f"batch_normalization_*")
                    for k in ("gamma", "beta", "moving_mean", "moving_variance"):
                        out[f"bn{n_bn}.{k}"] = arrays[k]
                    n_bn += 1
                    order.append("bn")
                else:
                    raise WeightsError(f"{path}: unexpected layer {name!r} with weights {sorted(arrays)}")
    except (OSError, KeyError) as err:
        raise WeightsError(f"{path}: cannot read the Keras weights ({err}); the file is corrupt or "
                           f"truncated") from None
    bad = sorted(k for k, v in out.items() if not np.all(np.isfinite(v)))
    if bad:
        raise WeightsError(f"{path}: weights contain NaN or inf ({', '.join(bad[:4])}{'...' if len(bad) > 4 else ''})")
    missing = [c for c in _CONVS if f"{c}.kernel" not in out]
    if missing or n_bn not in (5, 6):
        raise WeightsError(f"{path}: not a Deep Salience model (convolutions missing: {missing}, "
                           f"{n_bn} BatchNorm layers; expected bendy1..squishy and 6 BatchNorms)")
    expected = [x for c in _CONVS[:-1] for x in (c, "bn")] + ["squishy"]
    if order not in (expected, ["bn", *expected]):
        raise WeightsError(f"{path}: layers in the order {order}; the paper's model has {expected} (after an "
                           f"optional input BatchNorm)")
    for name, k in zip(_CONVS, _KERNELS):
        shape = out[f"{name}.kernel"].shape
        if shape[:2] != k:
            raise WeightsError(f"{path}: layer {name} has kernel {shape[:2]}, the paper's model has {k}")
        if out[f"{name}.bias"].shape != (shape[3],):
            raise WeightsError(f"{path}: layer {name} has bias {out[f'{name}.bias'].shape} for {shape[3]} outputs")
    # every BatchNorm tensor has the width of what it normalises: the input, then each convolution's output
    widths = ([out["bendy1.kernel"].shape[2]] if n_bn == 6 else []) + [out[f"{c}.kernel"].shape[3]
                                                                       for c in _CONVS[:-1]]
    for i, width in enumerate(widths):
        for k in ("gamma", "beta", "moving_mean", "moving_variance"):
            if out[f"bn{i}.{k}"].shape != (width,):
                raise WeightsError(f"{path}: BatchNorm {i} {k} has shape {out[f'bn{i}.{k}'].shape}, expected "
                                   f"({width},)")
    return out


def load_keras_h5(path: str | Path, *, task: str | None = None) -> SalienceNet:
    """Build a :class:`SalienceNet` in eval mode holding the weights of a released Keras ``.h5`` file.

    Keras kernels (kh, kw, in, out) are transposed to torch's (out, in, kh, kw); BatchNorm uses eps 1e-3.
    If ``task`` is given and the file name is one of the released task files trained for another task
    (``bass.h5`` for ``--task melody``), a ``UserWarning`` says so (the architecture is the same for all tasks,
    so the weights still load).
    """
    import warnings

    weights = read_keras_h5(path)
    if task is not None:
        trained = task_of_keras_file(path)
        if trained is not None and trained != task:
            warnings.warn(f"{Path(path).name} holds the released {trained!r} model but task {task!r} was asked "
                          f"for; its salience is decoded as {task}", UserWarning, stacklevel=2)
    kernel0 = weights["bendy1.kernel"]
    widths = tuple(int(weights[f"{c}.kernel"].shape[3]) for c in _CONVS[:-1])
    has_input_bn = "bn5.gamma" in weights
    model = SalienceNet(in_channels=int(kernel0.shape[2]), widths=widths, input_bn=has_input_bn)
    bns = ([model.bn_input] if has_input_bn else []) + [getattr(model, f"bn_{c}") for c in _CONVS[:-1]]
    with torch.no_grad():
        for name in _CONVS:
            conv = getattr(model, name)
            kernel = torch.from_numpy(weights[f"{name}.kernel"]).permute(3, 2, 0, 1)
            if kernel.shape != conv.weight.shape:
                raise WeightsError(f"{path}: layer {name} has kernel {tuple(kernel.shape)} but the chain of "
                                   f"layers needs {tuple(conv.weight.shape)}")
            conv.weight.copy_(kernel)
            conv.bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))
        for i, bn in enumerate(bns):
            bn.weight.copy_(torch.from_numpy(weights[f"bn{i}.gamma"]))
            bn.bias.copy_(torch.from_numpy(weights[f"bn{i}.beta"]))
            bn.running_mean.copy_(torch.from_numpy(weights[f"bn{i}.moving_mean"]))
            bn.running_var.copy_(torch.from_numpy(weights[f"bn{i}.moving_variance"]))
    return model.eval()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
