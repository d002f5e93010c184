"""Save -> resume continues a tiny training run bit-identically to an uninterrupted run."""

import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from essence.core.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from essence.core.loop import build_scheduler
from essence.core.runtime import seed_everything


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))
        self.register_buffer("queue", torch.zeros(5, 3))  # method state kept as a buffer (like MoCo's queue)


def make():
    seed_everything(0)
    net = Net()
    opts = {"adam": torch.optim.AdamW(net.body[0].parameters(), lr=1e-2),
            "sgd": torch.optim.SGD(net.body[4].parameters(), lr=0.1, momentum=0.9)}
    scheds = {k: build_scheduler(o, "cosine", 12, warmup_steps=2) for k, o in opts.items()}
    return net, opts, scheds


def train(net, opts, scheds, start, stop, bank):
    for step in range(start, stop):
        # data, dropout and a "memory bank" update all draw from the global RNGs, which resume must restore
        x = torch.randn(16, 8) + float(np.random.rand()) + random.random()
        y = torch.randint(0, 3, (16,))
        out = net.body(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        for o in opts.values():
            o.zero_grad()
        loss.backward()
        for o, s in zip(opts.values(), scheds.values()):
            o.step()
            s.step()
        with torch.no_grad():
            net.queue[step % 5] = out.detach().mean(0)
        bank[torch.randint(0, bank.shape[0], (1,))] += 1


def test_resume_is_bit_identical(tmp_path):
    net, opts, scheds = make()
    bank = torch.zeros(4)
    train(net, opts, scheds, 0, 12, bank)
    reference = {k: v.clone() for k, v in net.state_dict().items()}

    net, opts, scheds = make()
    bank = torch.zeros(4)
    train(net, opts, scheds, 0, 5, bank)
    path = save_checkpoint(tmp_path / "ckpt" / "step-000005", modules={"net": net}, optimizers=opts,
                           schedulers=scheds, step=5, config={"lr": 0.01}, state={"best": 0.5},
                           tensors={"bank": bank})
    # scramble the RNGs, as a new process would have them
    seed_everything(123)
    net2, opts2, scheds2 = make()
    seed_everything(999)
    ckpt = load_checkpoint(path, modules={"net": net2}, optimizers=opts2, schedulers=scheds2)
    assert ckpt.step == 5 and ckpt.config == {"lr": 0.01} and ckpt.state == {"best": 0.5}
    bank2 = ckpt.tensors["bank"].clone()
    train(net2, opts2, scheds2, ckpt.step, 12, bank2)
    for k, v in net2.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert latest_checkpoint(tmp_path / "ckpt") == path


def test_atomic_write_leaves_no_temp_files(tmp_path):
    net = Net()
    save_checkpoint(tmp_path / "a.safetensors", modules={"net": net}, step=1)
    save_checkpoint(tmp_path / "a.safetensors", modules={"net": net}, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    assert read_checkpoint(tmp_path / "a.safetensors").step == 2


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        read_checkpoint(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not an essence checkpoint"):
        read_checkpoint(tmp_path / "plain.safetensors")
    path = save_checkpoint(tmp_path / "ok", modules={"net": Net()}, step=0)
    with pytest.raises(CheckpointError, match="has no module 'other'"):
        load_checkpoint(path, modules={"other": Net()})
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path, modules={"net": torch.nn.Linear(2, 2)})
