"""CLI commands (apply, gallery, list, train, evaluate with a baseline), ImageNet-P sequences and the tiny
reproduction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from essence.corruptions.cli import main
from essence.corruptions.perturbations import PERTURBATIONS, TEST_PERTURBATIONS, perturbation_sequence


@pytest.fixture()
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    rgb = tmp_path / "a.png"
    Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).save(rgb)
    grey = tmp_path / "b.png"
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(grey)
    return rgb, grey


def test_apply_and_gallery(image_files, tmp_path):
    rgb, grey = image_files
    out = tmp_path / "out"
    assert main(["apply", str(rgb), str(grey), "--name", "fog", "--severity", "2", "-o", str(out), "--seed", "1"]) == 0
    a = np.asarray(Image.open(out / "a_fog_s2.png"))
    b = np.asarray(Image.open(out / "b_fog_s2.png"))
    assert a.shape == (48, 40, 3) and b.shape == (32, 32)
    assert not np.array_equal(a, np.asarray(Image.open(rgb)))
    single = tmp_path / "one.png"
    assert main(["apply", str(rgb), "--name", "contrast", "--severity", "5", "-o", str(single)]) == 0
    assert np.asarray(Image.open(single)).std() < np.asarray(Image.open(rgb)).std()
    assert main(["gallery", str(grey), "-o", str(tmp_path / "g.png"), "--names", "noise"]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 100
    assert main(["list"]) == 0


def test_cli_errors(image_files, tmp_path, capsys):
    rgb, _ = image_files
    assert main(["apply", str(rgb), "--name", "fgo", "-o", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert "did you mean 'fog'" in captured.out + captured.err
    assert main(["apply", str(rgb), "--name", "fog", "--severity", "0", "-o", str(tmp_path / "x.png")]) == 2
    assert main(["apply", str(tmp_path / "missing.png"), "--name", "fog", "-o", str(tmp_path / "x.png")]) == 2
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["apply", str(bad), "--name", "fog", "-o", str(tmp_path / "x.png")]) == 2
    assert main(["evaluate", "--model", str(tmp_path / "none.safetensors")]) == 2


def test_train_and_evaluate_with_baseline(tmp_path):
    train_dir, eval_dir, eval2 = tmp_path / "train", tmp_path / "eval", tmp_path / "eval2"
    assert main(["train", "--arch", "alexnet", "--preset", "tiny", "--set", "data.train_size=256",
                 "--out", str(train_dir)]) == 0
    ckpt = train_dir / "checkpoints" / "alexnet.safetensors"
    assert main(["evaluate", "--model", str(ckpt), "--test-size", "40", "--names", "contrast,fog",
                 "--out", str(eval_dir)]) == 0
    data = json.loads((eval_dir / "errors.json").read_text())
    assert set(data["errors"]) == {"contrast", "fog"} and len(data["errors"]["fog"]) == 5
    assert (eval_dir / "figures" / "error_vs_severity.png").exists()
    # another corruption seed against that run as the baseline: the table's CE is sum(E) / sum(E_base) per
    # corruption, computed from the two errors.json files (seed 1: other test images and draws)
    assert main(["evaluate", "--model", str(ckpt), "--test-size", "40", "--names", "contrast,fog", "--seed", "1",
                 "--baseline", str(eval_dir), "--out", str(eval2)]) == 0
    other = json.loads((eval2 / "errors.json").read_text())
    table = (eval2 / "table.md").read_text()
    for c in ("contrast", "fog"):
        ce = 100 * sum(other["errors"][c]) / sum(data["errors"][c])
        row = next(line for line in table.splitlines() if line.startswith(f"| {c} |"))
        assert float(row.split("|")[7]) == pytest.approx(ce, abs=0.051), (c, row)
    assert other["errors"]["fog"] != data["errors"]["fog"]                     # not the baseline against itself


def test_perturbation_sequences():
    assert len(TEST_PERTURBATIONS) == 10
    x = torch.rand(2, 1, 36, 36)
    for name in ("gaussian_noise", "translate", "rotate", "brightness"):
        p = PERTURBATIONS.get(name)
        f = perturbation_sequence(x, name, 1, crop=(28, 28), generator=torch.Generator().manual_seed(0),
                                  param_set="imagenet")
        assert f.shape == (2, p.frames, 1, 28, 28)
        assert torch.equal(f, torch.floor(f * 255 + 1e-3) / 255)          # 8-bit frames
    # noise: frame 0 is the clean (cropped) image; frames differ from it by ~sigma = 0.03
    f = perturbation_sequence(torch.full((1, 3, 64, 64), 0.5), "gaussian_noise", 1,
                              generator=torch.Generator().manual_seed(0), param_set="imagenet")
    assert torch.allclose(f[:, 0], torch.full_like(f[:, 0], 0.5), atol=1 / 255)
    assert abs(float((f[:, 1:] - 0.5).std()) - 0.03) < 0.005
    # translate: frame 20 is the identity, frame 21 is shifted by one pixel to the right
    img = torch.rand(1, 1, 40, 40)
    f = perturbation_sequence(img, "translate", crop=(30, 30), param_set="imagenet")
    assert torch.allclose(f[0, 20], torch.floor(img[0, :, 5:35, 5:35] * 255 + 1e-4) / 255)
    assert torch.allclose(f[0, 21][:, :, 1:], f[0, 20][:, :, :-1])
    # brightness on grey: +0.02 per frame
    g = perturbation_sequence(torch.full((1, 1, 16, 16), 0.4), "brightness", param_set="imagenet")
    assert torch.allclose(g[0, 16] - g[0, 15], torch.full_like(g[0, 0], 0.02), atol=1.5 / 255)
    with pytest.raises(ValueError, match="difficulty"):
        perturbation_sequence(x, "rotate", 4)
    with pytest.raises(ValueError, match="did you mean"):
        perturbation_sequence(x, "rotat")


def test_cifar_p_parameters_at_32_px():
    """CIFAR-10-P (make_cifar_p.py): translate i - 7 over 16 frames on the image itself, 21 motion-blur frames,
    sigma 0.02 noise, brightness steps of 0.015; ``auto`` picks it at 32 px."""
    from essence.corruptions.perturbations import frame_count

    img = torch.rand(1, 3, 32, 32)
    f = perturbation_sequence(img, "translate")                                  # auto -> cifar
    assert f.shape[1] == 16 == frame_count("translate", "cifar")
    assert torch.allclose(f[0, 7], torch.floor(img[0] * 255 + 1e-4) / 255)        # frame 7: no shift
    assert torch.allclose(f[0, 8][:, :, 1:], f[0, 7][:, :, :-1])                  # one pixel per frame
    assert torch.all(f[0, 8][:, :, 0] == 0)                                        # zero fill, no canvas
    assert perturbation_sequence(img, "motion_blur").shape[1] == 21
    n = perturbation_sequence(torch.full((1, 3, 32, 32), 0.5), "gaussian_noise", 1,
                              generator=torch.Generator().manual_seed(0))
    assert abs(float((n[:, 1:] - 0.5).std()) - 0.02) < 0.004
    g = perturbation_sequence(torch.full((1, 3, 32, 32), 0.4), "brightness")
    assert torch.allclose(g[0, 16] - g[0, 15], torch.full_like(g[0, 0], 0.015), atol=1.5 / 255)
    assert frame_count("translate", "imagenet") == 41 and frame_count("translate", "tiny") == 31


@pytest.mark.slow  # ~20 s alone, over 30 s on a busy 2-core machine
def test_tiny_reproduce(tmp_path):
    from essence.cli import reproduce_method

    report = reproduce_method("corruptions", preset="tiny", out=tmp_path / "run", exact=True, device="cpu")
    assert len(report.claims) == 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    base = summary["models"]["alexnet/s0"]
    assert base["mCE"] == pytest.approx(1.0)                                # one baseline seed against itself
    assert (tmp_path / "run" / "figures" / "error_vs_severity.png").exists()
    assert (tmp_path / "run" / "checkpoints" / "resnet_s0.safetensors").exists()
    assert {"resnet+clahe/s0", "resnet+control/s0"} <= set(summary["models"])
