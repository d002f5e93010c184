"""IDVAE training loop: exact resume, NaN handling, conditional sampling, evaluation (tiny shapes, synthetic data)."""

from __future__ import annotations

import pytest
import torch

from essence.core.loop import NonFiniteLossError
from essence.core.runs import Run
from essence.idvae import train as train_mod
from essence.idvae.config import PRESETS
from essence.idvae.evaluate import (
    Expert,
    RandomCNN,
    conditional_accuracy,
    evaluate_model,
    fid,
    generate,
    load_model,
)
from essence.idvae.train import train


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g)


def _cfg(*extra):
    return PRESETS.build("tiny", ["train.max_steps=6", "train.ckpt_every=3", "train.log_every=1", "train.threads=1",
                                  "train.precision=fp32", *extra])


@pytest.mark.parametrize("kind", ["idvae", "vaegan"])
def test_resume_continues_identically(tmp_path, kind):
    cfg = _cfg(f"model.kind={kind}")
    x, y = _data()
    full = train(cfg, Run(tmp_path / "full"), device="cpu", progress=False, images=x, labels=y)
    assert full.step == 6
    half = tmp_path / "full" / "checkpoints" / "step-000003.safetensors"
    resumed = train(cfg, Run(tmp_path / "resumed"), device="cpu", progress=False, images=x, labels=y, resume=half)
    assert resumed.step == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["L_GAN"] for r in full.history[3:]] == [r["L_GAN"] for r in resumed.history]
    model, loaded_cfg, step = load_model(tmp_path / "full", device="cpu")
    assert step == 6 and loaded_cfg == cfg and model.kind == kind


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_mod.compute_terms

    def broken(model, x, *args, **kw):
        terms = real(model, x, *args, **kw)
        if broken.calls >= 2:
            terms.L_GAN = terms.L_GAN * float("nan")
        broken.calls += 1
        return terms

    broken.calls = 0
    monkeypatch.setattr(train_mod, "compute_terms", broken)
    x, y = _data()
    with pytest.raises(NonFiniteLossError, match=r"L_GAN is nan at step 2 .*last good checkpoint is .*step-000002"
                                                 r".*loss.lambda_d"):
        train(_cfg(), Run(tmp_path / "nan"), device="cpu", progress=False, images=x, labels=y)
    model, _, step = load_model(tmp_path / "nan", device="cpu")
    assert step == 2 and all(torch.isfinite(p).all() for p in model.parameters())


def test_train_rejects_bad_settings():
    x, y = _data(32)
    with pytest.raises(ValueError, match="larger than the training set"):
        train(_cfg("optim.batch_size=64"), None, device="cpu", progress=False, images=x, labels=y)
    with pytest.raises(ValueError, match="needs labels"):
        train(_cfg("model.conditional=true"), None, device="cpu", progress=False, images=x)
    with pytest.raises(ValueError, match=r"training images must be \(N, 1, 28, 28\)"):
        train(_cfg(), None, device="cpu", progress=False, images=torch.zeros(32, 1, 32, 32, dtype=torch.uint8))


def test_conditional_sampling_respects_the_label(tmp_path):
    x, y = _data()
    res = train(_cfg("model.conditional=true", "train.max_steps=1"), None, device="cpu", progress=False,
                images=x, labels=y)
    model = res.model.eval()
    labels = torch.tensor([3, 3, 7, 7])
    imgs = generate(model, 4, seed=5, labels=labels)
    z = torch.randn(4, model.cfg.latent, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = ((model.decode(z, labels) + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(imgs, ref)
    assert not torch.equal(generate(model, 4, seed=5, labels=torch.tensor([1, 1, 2, 2])), imgs)

    class Oracle(torch.nn.Module):
        """A 'classifier' that knows which label decoded each image (by matching it against per-class decodes)."""

        def __init__(self):
            super().__init__()
            self.fc2 = torch.nn.Linear(1, 10)

        def forward(self, images):
            n = images.shape[0]
            per_class = torch.stack([generate(model, n, seed=8, labels=torch.full((n,), k)) for k in range(10)])
            match = (per_class.float() - (images * 255).round()[None]).abs().flatten(2).sum(-1)   # (10, n)
            return -match.T

    acc = conditional_accuracy(model, Oracle(), 20, seed=8)
    assert acc.all()
    with pytest.raises(ValueError, match="conditional: pass labels"):
        generate(model, 4)
    with pytest.raises(ValueError, match="must be positive"):
        generate(model, 0, labels=torch.zeros(0, dtype=torch.long))


def test_fid_of_each_expert_matches_the_reference_computation():
    import numpy as np
    import scipy.linalg

    x, y = _data(64)
    cfg = _cfg("eval.samples=64", "eval.pr_k=3")
    model = train(cfg.replace(train=cfg.train.replace(max_steps=1)), None, device="cpu", progress=False,
                  images=x, labels=y).model
    rnd = RandomCNN()      # fewer feature dimensions than samples: well-conditioned covariances for sqrtm
    experts = {"random_cnn": Expert("random_cnn", lambda t: rnd(t)[:, :24], "cpu"),
               "pixels": Expert("pixels", lambda t: torch.nn.functional.avg_pool2d(t, 7).flatten(1), "cpu")}
    res = evaluate_model(model, cfg, experts, test_images=x, test_labels=y)
    samples = generate(model, 64, seed=1234)
    for name, ex in experts.items():
        a, b = ex(x[:64]).double().numpy(), ex(samples).double().numpy()
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(
            scipy.linalg.sqrtm(s1 @ s2).real)
        assert res["fid"][name] == pytest.approx(ref, rel=1e-4, abs=1e-6)
        assert res["fid"][name] == pytest.approx(fid(ex(x[:64]), ex(samples)), rel=1e-9)
        assert 0 <= res["precision"][name] <= 1 and 0 <= res["recall"][name] <= 1
    # the reconstruction error is the per-pixel MSE in [0, 1] units through z = mu
    with torch.no_grad():
        rec = model.eval().reconstruct(x.float() / 127.5 - 1)
    ref_mse = (((rec + 1) / 2 - x.float() / 255) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(torch.tensor(res["recon_mse_items"], dtype=torch.float64), ref_mse.double(),
                               rtol=1e-5, atol=1e-7)


def test_collapse_detector_warns_and_logs(monkeypatch, capsys):
    real_build = train_mod.build

    def collapsed(cfg, **kw):
        model = real_build(cfg, **kw)
        with torch.no_grad():
            model.decoder.deconv2.weight.zero_()        # G(z) = tanh(bias): one image for every z
        return model

    monkeypatch.setattr(train_mod, "build", collapsed)
    x, y = _data()
    res = train(_cfg("train.max_steps=1", "optim.lr=1e-9"), None, device="cpu", progress=False, images=x, labels=y)
    rec = res.history[-1]
    assert rec["diversity_ratio"] < 0.01 and rec["h_std"] > 0
    assert "may be collapsing" in " ".join(capsys.readouterr().err.split())
