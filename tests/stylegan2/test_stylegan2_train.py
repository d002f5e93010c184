"""Training loop: exact resume, divergence stops with the last good checkpoint, data sources and bad input, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essence.core.checkpoint import read_checkpoint
from essence.core.loop import NonFiniteLossError
from essence.core.runs import Run
from essence.stylegan2.config import PRESETS
from essence.stylegan2.data import load_folder, load_numpy
from essence.stylegan2.train import train


def _images(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 32, 32, generator=g) * 255).to(torch.uint8)


def _cfg(**over):
    base = {"train.max_steps": 4, "train.ckpt_every": 2, "train.log_every": 1, "loss.r1_interval": 2,
            "loss.pl_interval": 2}
    return PRESETS.build("tiny", {**base, **over})


def test_resume_continues_identically(tmp_path):
    cfg = _cfg()
    full = train(cfg, Run(tmp_path / "full"), device="cpu", images=_images(), progress=False)
    part = train(cfg.with_overrides({"train.max_steps": 2}), Run(tmp_path / "part"), device="cpu",
                 images=_images(), progress=False)
    assert part.step == 2
    resumed = train(cfg, Run(tmp_path / "part"), device="cpu", images=_images(), progress=False,
                    resume=tmp_path / "part" / "checkpoints")
    assert resumed.step == 4
    for net in ("G", "D", "G_ema"):
        for (name, a), b in zip(getattr(full, net).state_dict().items(), getattr(resumed, net).state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{net}.{name} differs after resume")
    assert [h["loss_D"] for h in full.history[2:]] == [h["loss_D"] for h in resumed.history]
    # every phase ran: R1 and path length on steps 0 and 2, and w_avg moved
    assert {"r1", "pl_penalty", "pl_mean"} <= set(full.history[0])
    assert full.G.mapping.w_avg.abs().sum() > 0
    ckpt = read_checkpoint(tmp_path / "full" / "checkpoints")
    assert ckpt.step == 4 and {"G", "D", "G_ema", "pl"} <= {k.split("/")[1] for k in ckpt._raw if
                                                             k.startswith("module/")}


def test_g_ema_follows_g(tmp_path):
    res = train(_cfg(**{"train.ema_kimg": 0.0}), None, device="cpu", images=_images(), progress=False)
    for a, b in zip(res.G.parameters(), res.G_ema.parameters()):   # half-life 0: the EMA copy is G
        torch.testing.assert_close(a, b)


def test_divergence_stops_with_last_good_checkpoint(tmp_path, monkeypatch):
    import essence.stylegan2.train as T

    calls = {"n": 0}
    real = T.g_nonsaturating

    def flaky(logits):
        calls["n"] += 1
        out = real(logits)
        return out * float("nan") if calls["n"] >= 3 else out
    monkeypatch.setattr(T, "g_nonsaturating", flaky)
    with pytest.raises(NonFiniteLossError, match=r"step 2.*step-000002"):
        train(_cfg(), Run(tmp_path / "nan"), device="cpu", images=_images(), progress=False)
    assert (tmp_path / "nan" / "checkpoints" / "step-000002.safetensors").exists()


def test_wrong_image_size_is_refused():
    with pytest.raises(ValueError, match="model.resolution"):
        train(_cfg(), None, device="cpu", images=torch.zeros(8, 1, 16, 16, dtype=torch.uint8), progress=False)


def test_folder_and_numpy_sources(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    x = load_folder(folder)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.uint8 and int(x[2].max()) == 80
    assert load_folder(folder, channels=1).shape == (3, 1, 8, 8)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(folder / "big.png")
    with pytest.raises(ValueError, match="different sizes"):
        load_folder(folder)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(bad / "a.png")
    with pytest.raises(ValueError, match="square"):
        load_folder(bad)
    np.save(tmp_path / "a.npy", np.zeros((5, 12, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match="power of two"):
        load_numpy(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", images=np.random.rand(5, 16, 16, 1).astype(np.float32))
    y = load_numpy(tmp_path / "b.npz")
    assert y.shape == (5, 1, 16, 16) and y.dtype == torch.uint8
    np.save(tmp_path / "nan.npy", np.full((2, 8, 8), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_numpy(tmp_path / "nan.npy")
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "missing")


def test_cli_train_generate_and_bad_input(tmp_path, capsys):
    from essence.stylegan2.cli import main, parse_seeds

    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("3-1")
    np.savez(tmp_path / "data.npz", images=_images(32).permute(0, 2, 3, 1).numpy())
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--device", "cpu", "--out", str(out), "--set", "data.source=numpy",
                 "--set", f"data.path={tmp_path / 'data.npz'}", "--set", "train.max_steps=2"]) == 0
    assert main(["generate", str(out), "--seeds", "0-5", "--trunc", "0.7", "-o", str(tmp_path / "s.npz"),
                 "--device", "cpu"]) == 0
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (6, 32, 32, 1) and z["images"].dtype == np.uint8
    assert main(["generate", str(out), "--seeds", "0-3", "-o", str(tmp_path / "png"), "--device", "cpu",
                 "--mixing"]) == 0
    assert (tmp_path / "png" / "grid.png").exists() and (tmp_path / "png" / "seed0003.png").exists()
    assert main(["generate", str(out), "--trunc", "-0.5", "-o", str(tmp_path / "x"), "--device", "cpu"]) == 2
    assert "--trunc must be in [0, 1]" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="extrapolates"):
        main(["generate", str(out), "--trunc", "1.5", "-o", str(tmp_path / "y.npz"), "--device", "cpu"])
    # a checkpoint without an EMA generator
    from essence.core.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "other" / "checkpoints" / "step-000001", modules={"net": torch.nn.Linear(2, 2)},
                    step=1, config=PRESETS.build("tiny"))
    assert main(["generate", str(tmp_path / "other"), "-o", str(tmp_path / "z"), "--device", "cpu"]) == 2
    assert "no EMA generator" in capsys.readouterr().err


@pytest.mark.slow
def test_projection_recovers_a_generated_image_and_refuses_bad_targets():
    from essence.stylegan2.model import Generator
    from essence.stylegan2.project import attribution_auc, noise_regularizer, project

    cfg = PRESETS.build("tiny")
    torch.manual_seed(0)
    G = Generator(cfg.model).eval()
    with torch.no_grad():
        for mod in G.modules():                 # give the noise inputs a visible strength
            if hasattr(mod, "noise_strength"):
                mod.noise_strength.fill_(0.1)
        target = G(torch.randn(2, cfg.model.z_dim), noise_mode="const")
    def mse(a, b):
        return (a - b).square().mean(dim=(1, 2, 3))
    before = mse(G.synthesis(G.mapping.w_avg[None, None].repeat(2, G.num_ws, 1), noise_mode="const"), target)
    res = project(G, target, mse, steps=40, w_samples=200, record_every=10)
    assert res["w"].shape == (2, cfg.model.w_dim) and len(res["progress"]) == 5
    assert (res["distance"] < 0.5 * before.detach().numpy()).all()
    assert G.synthesis.blocks[0].conv1.noise_const.ndim == 2          # the network's own noise is restored
    with pytest.raises(ValueError, match="projection targets"):
        project(G, torch.zeros(1, 3, 32, 32), mse, steps=1)
    # white noise has ~0 autocorrelation; a constant map has the maximum (1 per shift and level)
    white = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(noise_regularizer([white])) < 0.01
    assert float(noise_regularizer([torch.ones(1, 8, 8)])) == pytest.approx(2.0)
    assert attribution_auc(np.array([3.0, 4.0, 5.0]), np.array([0.1, 0.2, 0.3])) == 1.0


def test_projection_helpers_and_bad_targets():
    from essence.stylegan2.model import Generator
    from essence.stylegan2.project import attribution_auc, noise_regularizer, project

    G = Generator(PRESETS.build("tiny").model).eval()
    with pytest.raises(ValueError, match="projection targets"):
        project(G, torch.zeros(1, 3, 32, 32), lambda a, b: (a - b).square().mean(), steps=1)
    white = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(noise_regularizer([white])) < 0.01
    assert float(noise_regularizer([torch.ones(1, 8, 8)])) == pytest.approx(2.0)
    assert attribution_auc(np.array([3.0, 4.0, 5.0]), np.array([0.1, 0.2, 0.3])) == 1.0
    assert attribution_auc(np.array([0.1, 0.2]), np.array([3.0, 4.0])) == 0.0
