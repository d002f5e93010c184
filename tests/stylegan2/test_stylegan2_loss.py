"""R1 and path-length penalties against autograd re-computations; lazy rescaling; EMA; style mixing."""

from __future__ import annotations

import math

import pytest
import torch

from essence.nn.ema import update_momentum
from essence.stylegan2.config import PRESETS
from essence.stylegan2.loss import (
    PathLength,
    d_logistic,
    g_nonsaturating,
    lazy_adam_params,
    mix_styles,
    path_length_penalty,
    r1_penalty,
)
from essence.stylegan2.model import Discriminator, Generator
from essence.stylegan2.train import ema_beta, make_optimizers


def _cfg():
    return PRESETS.build("tiny")


def test_logistic_losses():
    fake, real = torch.tensor([[0.3], [-1.2]]), torch.tensor([[2.0], [0.1]])
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(g_nonsaturating(fake), sp(-fake).flatten())
    torch.testing.assert_close(d_logistic(fake, real), sp(fake).mean() + sp(-real).mean())


def test_r1_equals_per_sample_gradient_norm():
    torch.manual_seed(0)
    D = Discriminator(_cfg().model).double()
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(x, D(x))
    # minibatch std couples the samples: R1 differentiates the logits summed over the batch (pitfall 5)
    (full,) = torch.autograd.grad(D(x).sum(), x)
    torch.testing.assert_close(r1, full.square().sum(dim=(1, 2, 3)))
    # the penalty is differentiable w.r.t. D's parameters (double backward)
    (r1.mean() * 0.5).backward()
    assert D.blocks[0].conv0.weight.grad is not None and D.epilogue.out.weight.grad is not None
    assert D.epilogue.out.bias.grad is None      # why the training loop adds logits * 0 (DDP: every parameter)


def test_r1_without_minibatch_std_is_the_per_sample_norm():
    cfg = _cfg()
    torch.manual_seed(0)
    D = Discriminator(cfg.model.replace(mbstd_group=0)).double()
    x = torch.randn(3, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(x, D(x))
    for i in range(3):
        xi = x[i:i + 1].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(xi).sum(), xi)
        assert float(r1[i]) == pytest.approx(float(g.square().sum()), rel=1e-10)


def test_path_length_equals_jacobian_transpose_times_y():
    """|J_w^T y| from the one-backward trick equals J^T y rebuilt from central finite differences of g,
    (J^T y)_j = <y, (g(w + h e_j) - g(w - h e_j)) / 2h>, one basis direction e_j of ws at a time (float64)."""
    cfg = _cfg()
    torch.manual_seed(0)
    G = Generator(cfg.model).double().eval()
    z = torch.randn(2, cfg.model.z_dim, dtype=torch.float64)
    ws = G.mapping(z).detach().requires_grad_(True)
    img = G.synthesis(ws, noise_mode="const", fused=False)
    y = torch.randn(img.shape, dtype=torch.float64) / math.sqrt(32 * 32)
    pl_mean = torch.tensor(0.5, dtype=torch.float64)
    penalty, lengths, a = path_length_penalty(img, ws, pl_mean, 0.01, noise=y)
    h = 1e-7                     # small: leaky-ReLU kinks inside +-h would bias the difference
    K, Dw = ws.shape[1:]
    eye = torch.eye(K * Dw, dtype=torch.float64).reshape(K * Dw, K, Dw)
    with torch.no_grad():
        for n in range(2):
            w = ws[n].detach()
            plus = G.synthesis(w + h * eye, noise_mode="const", fused=False)
            minus = G.synthesis(w - h * eye, noise_mode="const", fused=False)
            jty = ((plus - minus) / (2 * h) * y[n]).sum(dim=(1, 2, 3)).reshape(K, Dw)
            ref = jty.square().sum(1).mean().sqrt()
            assert float(lengths[n]) == pytest.approx(float(ref), rel=1e-5)
    assert float(a) == pytest.approx(0.5 + 0.01 * (float(lengths.detach().mean()) - 0.5))
    torch.testing.assert_close(penalty, (lengths - a).square())
    assert not a.requires_grad


def test_path_length_module_keeps_running_mean():
    pl = PathLength(0.5)
    ws = torch.randn(2, 3, 4, requires_grad=True)
    img = (ws.sum(dim=(1, 2))[:, None, None, None] * torch.ones(2, 1, 4, 4))
    pl(img, ws, generator=torch.Generator().manual_seed(0))
    first = float(pl.pl_mean)
    assert first > 0 and "pl_mean" in pl.state_dict()


def test_lazy_regularisation_rescaling():
    lr, betas = lazy_adam_params(0.002, (0.0, 0.99), 16)
    c = 16 / 17
    assert lr == pytest.approx(0.002 * c)
    assert betas == pytest.approx((0.0, 0.99 ** c))
    assert lazy_adam_params(0.002, (0.0, 0.99), 1) == (0.002, (0.0, 0.99))
    cfg = _cfg().with_overrides({"loss.r1_interval": 16, "loss.pl_interval": 4, "optim.lr": 0.002})
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    opt_G, opt_D = make_optimizers(cfg, G, D)
    assert opt_G.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    assert opt_D.param_groups[0]["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    # no path-length regularisation: no G regularisation step, so no rescaling
    opt_G, _ = make_optimizers(cfg.with_overrides({"loss.pl_weight": 0.0}), G, D)
    assert opt_G.param_groups[0]["lr"] == pytest.approx(0.002)


def test_ema_update():
    assert ema_beta(32, 10.0) == pytest.approx(0.5 ** (32 / 10000))
    # after 10k images (10000 / 32 steps) the weight of the old value is one half
    assert ema_beta(32, 10.0) ** (10000 / 32) == pytest.approx(0.5)
    torch.manual_seed(0)
    cfg = _cfg()
    G, G_ema = Generator(cfg.model), Generator(cfg.model)
    before = [p.detach().clone() for p in G_ema.parameters()]
    beta = 0.9
    update_momentum(G_ema, G, beta)
    for b, p, e in zip(before, G.parameters(), G_ema.parameters()):
        torch.testing.assert_close(e, beta * b + (1 - beta) * p.detach())


def test_style_mixing_cutoff():
    ws = torch.zeros(16, 8, 4)
    ws2 = torch.ones(16, 8, 4)
    g = torch.Generator().manual_seed(0)
    cutoffs = []
    for _ in range(200):
        mixed, c = mix_styles(ws, ws2, 1.0, generator=g)
        assert 1 <= c < 8
        assert (mixed[:, :c] == 0).all() and (mixed[:, c:] == 1).all()
        cutoffs.append(c)
    assert set(cutoffs) == set(range(1, 8))               # uniform over [1, num_ws)
    for _ in range(20):
        mixed, c = mix_styles(ws, ws2, 0.0, generator=g)
        assert c == 8 and (mixed == 0).all()
    n_mixed = sum(mix_styles(ws, ws2, 0.9, generator=g)[1] < 8 for _ in range(1000))
    assert 860 <= n_mixed <= 940
