"""``essence idvae`` commands: outputs and one-line errors for bad input (tiny runs on real Fashion-MNIST)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from essence.idvae.cli import main

TINY = ["--preset", "tiny", "--device", "cpu", "--set", "train.max_steps=2", "--set", "data.train_limit=64",
        "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("idvae_cli")
    assert main(["train", *TINY, "--out", str(root / "plain")]) == 0
    assert main(["train", *TINY, "--out", str(root / "cond"), "--set", "model.conditional=true"]) == 0
    return root


def test_train_writes_checkpoints_and_resumes(runs):
    assert (runs / "plain" / "checkpoints" / "step-000002.safetensors").exists()
    assert main(["train", "--resume", str(runs / "plain"), "--set", "train.max_steps=3", "--device", "cpu"]) == 0
    assert (runs / "plain" / "checkpoints" / "step-000003.safetensors").exists()
    assert (runs / "plain" / "metrics.jsonl").read_text().count("L_GAN") >= 2


def test_sample_writes_npz_and_png(runs, tmp_path):
    assert main(["sample", str(runs / "plain"), "--n", "5", "-o", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    imgs = np.load(tmp_path / "s.npz")["images"]
    assert imgs.shape == (5, 28, 28, 1) and imgs.dtype == np.uint8
    assert main(["sample", str(runs / "cond"), "--n", "4", "--class", "3", "-o", str(tmp_path / "c.png"),
                 "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "c.png").size[0] > 28


def test_sample_errors(runs, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["sample", str(runs / "plain"), "--n", "0", "-o", out, "--device", "cpu"]) == 2
    assert "--n must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["sample", str(runs / "plain"), "--n", "2", "--class", "1", "-o", out, "--device", "cpu"]) == 2
    assert "--class applies to a conditional model" in capsys.readouterr().err
    assert main(["sample", str(runs / "cond"), "--n", "2", "--class", "12", "-o", out, "--device", "cpu"]) == 2
    assert "--class must be in 0..9, got 12" in capsys.readouterr().err
    assert main(["sample", str(runs / "plain"), "--n", "2", "-o", str(tmp_path / "x.jpg"), "--device", "cpu"]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "missing"), "--n", "2", "-o", out]) == 2


def test_reconstruct_arrays_folders_and_bad_images(runs, tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "good.npy", good)
    assert main(["reconstruct", str(runs / "plain"), str(tmp_path / "good.npy"), "-o", str(tmp_path / "r.npz"),
                 "--device", "cpu"]) == 0
    assert np.load(tmp_path / "r.npz")["images"].shape == (3, 28, 28, 1)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(good[i]).save(folder / f"{i}.png")
    assert main(["reconstruct", str(runs / "plain"), str(folder), "-o", str(tmp_path / "r.png"),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    cases = {
        "size.npy": (rng.integers(0, 256, (2, 32, 32), dtype=np.uint8), "32x32 pixels; the model expects 28x28"),
        "chans.npy": (rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8), "3 channels; the model expects 1"),
        "range.npy": (rng.random((2, 28, 28)).astype(np.float32) * 3, "float images must be in [0, 1]"),
        "nan.npy": (np.full((2, 28, 28), np.nan, dtype=np.float32), "NaN"),
    }
    for name, (arr, msg) in cases.items():
        np.save(tmp_path / name, arr)
        assert main(["reconstruct", str(runs / "plain"), str(tmp_path / name), "-o", str(tmp_path / "o.npz"),
                     "--device", "cpu"]) == 2, name
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (name, err)
    assert main(["reconstruct", str(runs / "cond"), str(tmp_path / "good.npy"), "-o", str(tmp_path / "o.npz"),
                 "--device", "cpu"]) == 2
    assert "conditional: give --class" in capsys.readouterr().err
    assert main(["reconstruct", str(runs / "cond"), str(tmp_path / "good.npy"), "-o", str(tmp_path / "o.npz"),
                 "--class", "4", "--device", "cpu"]) == 0


def test_interpolate_and_evaluate(runs, tmp_path, capsys, monkeypatch):
    assert main(["interpolate", str(runs / "plain"), "-o", str(tmp_path / "i.npz"), "--steps", "5", "--pairs", "2",
                 "--device", "cpu"]) == 0
    assert np.load(tmp_path / "i.npz")["images"].shape == (10, 28, 28, 1)
    assert main(["interpolate", str(runs / "plain"), "-o", str(tmp_path / "i.png"), "--steps", "1",
                 "--device", "cpu"]) == 2
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    capsys.readouterr()
    assert main(["evaluate", str(runs / "plain"), "--device", "cpu", "--set", "data.test_limit=64",
                 "--set", "eval.samples=32"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] >= 2 and set(res["fid"]) == {"classifier", "random_cnn"}
    assert all(v >= 0 for v in res["fid"].values()) and 0 <= res["recon_mse"] <= 1


def test_usage_errors(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--set", "loss.gamma=-1", "--out", str(tmp_path / "x")]) == 2
    assert "loss.gamma must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["smaple"])


def test_train_with_fid_monitor(tmp_path, monkeypatch):
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    out = tmp_path / "mon"
    assert main(["train", *TINY, "--out", str(out), "--set", "train.eval_every=1", "--set", "eval.samples=16",
                 "--set", "data.test_limit=16"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    fids = [r["fid_classifier"] for r in records if "fid_classifier" in r]
    assert len(fids) == 2 and all(f > 0 for f in fids)
