"""Training loop: exact resume, the CLI, and evaluation entry points (tiny shapes, synthetic images)."""

from __future__ import annotations

import json

import pytest
import torch

from essence.core.checkpoint import read_checkpoint
from essence.core.runs import Run
from essence.moco.cli import main as moco_main
from essence.moco.config import PRESETS
from essence.moco.evaluate import load_model
from essence.moco.train import train


def _images(n=128):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)


def _cfg(*extra):
    return PRESETS.build("tiny", ["optim.batch_size=16", "train.max_steps=6", "train.ckpt_every=3",
                                  "train.log_every=1", "train.threads=1", *extra])


@pytest.mark.parametrize("mechanism", ["moco", "memory_bank"])
def test_resume_continues_identically(tmp_path, mechanism):
    cfg = _cfg(f"model.mechanism={mechanism}")
    images = _images()
    full = train(cfg, Run(tmp_path / "full"), device="cpu", progress=False, images=images)
    assert full.step == 6
    half = tmp_path / "full" / "checkpoints" / "step-000003.safetensors"
    resumed = train(cfg, Run(tmp_path / "resumed"), device="cpu", progress=False, images=images, resume=half)
    assert resumed.step == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if mechanism == "moco":
        ck = read_checkpoint(tmp_path / "full" / "checkpoints" / "step-000003.safetensors")
        # the checkpoint carries the queue, its pointer and the key encoder
        names = set(ck.module_state("moco"))
        assert {"queue", "queue_ptr"} <= names and any(n.startswith("encoder_k.") for n in names)
        assert int(ck.module_state("moco")["queue_ptr"]) == (3 * 16) % cfg.model.K
    assert [r["loss"] for r in full.history[3:]] == [r["loss"] for r in resumed.history]


def test_train_end_to_end_mechanism_and_load(tmp_path):
    cfg = _cfg("model.mechanism=end_to_end", "train.max_steps=2")
    res = train(cfg, Run(tmp_path / "e2e"), device="cpu", progress=False, images=_images())
    model, loaded_cfg, step = load_model(tmp_path / "e2e", device="cpu")
    assert step == 2 and loaded_cfg == cfg
    for (k1, v1), (k2, v2) in zip(res.model.state_dict().items(), model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_train_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="larger than the training set"):
        train(_cfg("optim.batch_size=256"), None, device="cpu", progress=False, images=_images(64))
    with pytest.raises(ValueError, match="bn_splits"):
        train(_cfg("model.bn_splits=5"), None, device="cpu", progress=False, images=_images())


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert moco_main(["train", "--preset", "tiny", "--set", "model.K=-1", "--out", str(tmp_path / "x")]) == 2
    assert "model.K" in capsys.readouterr().err
    assert moco_main(["evaluate", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        moco_main(["trian"])


def test_cli_train_resume_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--device", "cpu", "--out", str(out), "--set", "train.max_steps=2",
            "--set", "data.train_limit=64", "--set", "data.test_limit=32", "--set", "eval.knn_bank=64"]
    assert moco_main(["train", *args]) == 0
    assert (out / "checkpoints" / "step-000002.safetensors").exists()
    assert moco_main(["train", "--resume", str(out), "--set", "train.max_steps=3", "--device", "cpu"]) == 0
    assert (out / "checkpoints" / "step-000003.safetensors").exists()
    capsys.readouterr()
    assert moco_main(["evaluate", str(out), "--device", "cpu", "--set", "eval.linear_epochs=1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 3 and 0 <= res["knn_top1"] <= 100 and 0 <= res["linear_top1"] <= 100
