"""IDVAE losses against plain re-computations, and which parameters each objective updates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from essence.idvae.config import PRESETS, LossConfig
from essence.idvae.loss import (
    UPDATES,
    VAE_UPDATES,
    compute_terms,
    discriminator_loss,
    feature_matching,
    generator_adversarial_loss,
    kl_divergence,
    objectives,
    pixel_reconstruction,
    role_gradients,
)
from essence.idvae.model import build_model, count_parameters


def _model(kind="idvae", conditional=False, seed=0):
    cfg = PRESETS.build("tiny", [f"model.kind={kind}", f"model.conditional={conditional}"])
    torch.manual_seed(seed)
    return build_model(cfg.model), cfg


def _batch(n=8, d=4, conditional=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=g) if conditional else None
    eps, z_p = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    y_p = torch.randint(0, 10, (n,), generator=g) if conditional else None
    return x, y, eps, z_p, y_p


# ------------------------------------------------------------------------------------------------ formulas
def test_kl_matches_formula_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g) * 0.5
    kl = kl_divergence(mu, logvar)
    plain = torch.tensor([sum(-0.5 * (1 + logvar[i, j] - mu[i, j] ** 2 - math.exp(logvar[i, j]))
                              for j in range(5)) for i in range(3)])
    torch.testing.assert_close(kl, plain.to(kl.dtype))
    # Monte Carlo: E_q[log q(z) - log p(z)] with 400k draws
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(400_000, 3, 5, generator=g, dtype=torch.float64).float()
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_q - log_p).double().mean(0)
    torch.testing.assert_close(mc, kl.double(), atol=0.03, rtol=0.01)


def test_reconstruction_and_feature_matching_match_loops():
    g = torch.Generator().manual_seed(1)
    x, xt = torch.rand(2, 1, 3, 3, generator=g), torch.rand(2, 1, 3, 3, generator=g)
    ref = [sum(float(x[i, 0, a, b] - xt[i, 0, a, b]) ** 2 for a in range(3) for b in range(3)) for i in range(2)]
    torch.testing.assert_close(pixel_reconstruction(x, xt), torch.tensor(ref))
    h1, h2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    ref = [sum(float(h1[i, k] - h2[i, k]) ** 2 for k in range(6)) / 6 for i in range(4)]
    torch.testing.assert_close(feature_matching(h1, h2), torch.tensor(ref))


def test_adversarial_losses_match_log_sigmoid_formulas():
    g = torch.Generator().manual_seed(2)
    lr, lt, lp = (torch.randn(7, generator=g) for _ in range(3))

    def log_d(v):
        return torch.log(torch.sigmoid(v))

    def log_1md(v):
        return torch.log(1 - torch.sigmoid(v))

    ref = -(log_d(lr).mean() + log_1md(lt).mean() + log_1md(lp).mean())
    torch.testing.assert_close(discriminator_loss(lr, lt, lp), ref)
    torch.testing.assert_close(discriminator_loss(lr, lt, None), -(log_d(lr).mean() + log_1md(lt).mean()))
    # the decoder raises D's "real" output on both kinds of fakes (non-saturating form)
    torch.testing.assert_close(generator_adversarial_loss(lt, lp), -(log_d(lt).mean() + log_d(lp).mean()))
    # sign: a discriminator that is right has a lower loss than one that is wrong
    big = torch.full((4,), 5.0)
    assert discriminator_loss(big, -big, -big) < discriminator_loss(-big, big, big)
    assert generator_adversarial_loss(big, big) < generator_adversarial_loss(-big, -big)


def test_compute_terms_match_a_recomputation_from_the_parts():
    model, cfg = _model("idvae")
    model.train()
    x, y, eps, z_p, y_p = _batch()
    terms = compute_terms(model, x, y, eps, z_p, y_p, cfg.loss)
    # recompute by hand (the BN batches are the same: reals alone, the 2N fakes together)
    h = model.trunk(x)
    mu, logvar = model.encoder_head(h)
    x_t = model.decoder(torch.cat([mu + (0.5 * logvar).exp() * eps, z_p]))
    torch.testing.assert_close(terms.x_tilde, x_t[:8])
    torch.testing.assert_close(terms.x_prior, x_t[8:])
    h_f = model.trunk(x_t)
    l_r, l_f = model.discriminator_head(h), model.discriminator_head(h_f)
    torch.testing.assert_close(terms.L_prior, kl_divergence(mu, logvar).mean())
    torch.testing.assert_close(terms.L_pixel, ((x - x_t[:8]) ** 2).sum((1, 2, 3)).mean())
    ref_gan = (F.softplus(-l_r).mean() + F.softplus(l_f[:8]).mean() + F.softplus(l_f[8:]).mean())
    torch.testing.assert_close(terms.L_GAN, ref_gan)
    torch.testing.assert_close(terms.L_adv, F.softplus(-l_f[:8]).mean() + F.softplus(-l_f[8:]).mean())
    torch.testing.assert_close(terms.L_FM, ((h - h_f[:8]) ** 2).mean())
    objs = objectives(terms, cfg.loss.replace(lambda_d=3.0, gamma=2.0, adv_weight=0.5))
    torch.testing.assert_close(objs["L_enc"], terms.L_pixel + terms.L_prior)
    torch.testing.assert_close(objs["L_GAN"], 3.0 * terms.L_GAN)
    torch.testing.assert_close(objs["L_dec"], 0.5 * terms.L_adv + 2.0 * terms.L_FM)


def test_without_prior_fakes_the_discriminator_sees_reconstructions_only():
    model, cfg = _model("idvae")
    x, y, eps, z_p, y_p = _batch()
    terms = compute_terms(model, x, y, eps, z_p, y_p, cfg.loss.replace(prior_fakes=False))
    assert terms.x_prior is None and terms.d_fake.shape == (8,)
    assert 0.0 < float(terms.L_GAN.detach()) and torch.isfinite(terms.L_GAN)


# ------------------------------------------------------------------------------------------------ gradients
def _grads_by_block(model, objs, updates, terms):
    model.zero_grad(set_to_none=True)
    role_gradients(model, objs, updates, terms)
    out = {}
    for name, child in model.named_children():
        gs = [p.grad for p in child.parameters()]
        out[name] = 0.0 if all(g is None for g in gs) else float(sum(g.abs().sum() for g in gs if g is not None))
    return out


@pytest.mark.parametrize("kind", ["idvae", "vaegan"])
def test_each_objective_updates_only_its_roles(kind):
    model, cfg = _model(kind)
    x, y, eps, z_p, y_p = _batch()
    d_trunk = "trunk" if kind == "idvae" else "discriminator_trunk"

    def one(name):
        terms = compute_terms(model, x, y, eps, z_p, y_p, cfg.loss)
        return _grads_by_block(model, {name: objectives(terms, cfg.loss)[name]}, UPDATES, terms)

    g = one("L_enc")            # encoder loss: trunk + (mu, log sigma^2) head
    assert g["trunk"] > 0 and g["encoder_head"] > 0
    assert g["discriminator_head"] == 0 and g["decoder"] == 0
    if kind == "vaegan":
        assert g["discriminator_trunk"] == 0
    g = one("L_GAN")            # discriminator loss: (shared or separate) trunk + logit head, never the decoder
    assert g[d_trunk] > 0 and g["discriminator_head"] > 0
    assert g["encoder_head"] == 0 and g["decoder"] == 0
    if kind == "vaegan":
        assert g["trunk"] == 0
    g = one("L_dec")            # decoder loss: the decoder only, although its gradient flows through the trunk
    assert g["decoder"] > 0
    assert all(v == 0 for k, v in g.items() if k != "decoder")


def test_L_GAN_treats_fakes_as_fixed_and_L_dec_reaches_the_decoder_through_the_trunk():
    model, cfg = _model("idvae")
    batch = _batch()
    terms = compute_terms(model, *batch, cfg.loss)
    gan = torch.autograd.grad(terms.L_GAN, [*model.decoder.parameters(), *model.encoder_head.parameters()],
                              retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in gan)          # stop-gradient of x~ and x_p
    objs = objectives(terms, cfg.loss)
    model.zero_grad(set_to_none=True)
    role_gradients(model, {"L_dec": objs["L_dec"]}, UPDATES, terms)
    got = [p.grad.clone() for p in model.decoder.parameters()]
    # reference: the trunk run on the attached fakes (no leaf), differentiated straight into the decoder
    model2, _ = _model("idvae")
    t2 = compute_terms(model2, *batch, cfg.loss)
    from essence.idvae.model import frozen_bn_stats

    with frozen_bn_stats(model2):
        h_f, l_f = model2.discriminate(t2.fakes)
    ref_dec = 1.0 * generator_adversarial_loss(l_f[:8], l_f[8:]) + cfg.loss.gamma * feature_matching(
        t2.h_real, h_f[:8]).mean()
    torch.testing.assert_close(ref_dec, objs["L_dec"])
    ref = torch.autograd.grad(ref_dec, list(model2.decoder.parameters()))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert sum(float(g.abs().sum()) for g in got) > 0


def test_trunk_gets_the_sum_of_encoder_and_weighted_discriminator_gradients():
    model, cfg = _model("idvae")
    batch = _batch()
    lc = cfg.loss.replace(lambda_d=2.5)
    terms = compute_terms(model, *batch, lc)
    objs = objectives(terms, lc)
    trunk = list(model.trunk.parameters())
    g_enc = torch.autograd.grad(objs["L_enc"], trunk, retain_graph=True)
    g_gan = torch.autograd.grad(objs["L_GAN"], trunk, retain_graph=True)
    model.zero_grad(set_to_none=True)
    role_gradients(model, objs, UPDATES, terms)
    for p, a, b in zip(trunk, g_enc, g_gan):
        torch.testing.assert_close(p.grad, a + b)
    # lambda_D = 0: the trunk is a pure VAE encoder (the discriminator head still learns)
    terms = compute_terms(model, *batch, lc.replace(lambda_d=0.0))
    objs = objectives(terms, lc.replace(lambda_d=0.0))
    model.zero_grad(set_to_none=True)
    role_gradients(model, objs, UPDATES, terms)
    for p, a in zip(trunk, g_enc):
        torch.testing.assert_close(p.grad, a)


def test_feature_matching_switches():
    model, cfg = _model("idvae")
    batch = _batch()
    trunk = list(model.trunk.parameters())

    def enc_grads(lc):
        terms = compute_terms(model, *batch, lc)
        model.zero_grad(set_to_none=True)
        role_gradients(model, {"L_enc": objectives(terms, lc)["L_enc"]}, UPDATES, terms)
        return [p.grad.clone() for p in [*trunk, *model.encoder_head.parameters()]]

    base = enc_grads(cfg.loss)
    assert all(torch.equal(a, b) for a, b in zip(base, enc_grads(cfg.loss.replace(gamma=7.0))))
    into = enc_grads(cfg.loss.replace(fm_stop_grad_trunk=False, gamma=7.0))   # pitfall 1, option (b)
    assert all(not torch.allclose(a, b) for a, b in zip(base, into))          # trunk and encoder head (via z)
    # no feature matching: L_dec is the adversarial part alone
    terms = compute_terms(model, *batch, cfg.loss)
    objs = objectives(terms, cfg.loss.replace(feature_matching=False))
    torch.testing.assert_close(objs["L_dec"], terms.L_adv)


def test_vae_trains_encoder_and_decoder_on_the_elbo_only():
    model, cfg = _model("vae")
    terms = compute_terms(model, *_batch(), cfg.loss)
    assert terms.L_GAN is None and terms.L_FM is None
    g = _grads_by_block(model, objectives(terms, cfg.loss, adversarial=False), VAE_UPDATES, terms)
    assert g["trunk"] > 0 and g["encoder_head"] > 0 and g["decoder"] > 0


def test_fake_passes_leave_bn_running_statistics_to_the_reals():
    model, cfg = _model("idvae")
    twin, _ = _model("idvae")
    x, y, eps, z_p, y_p = _batch()
    compute_terms(model, x, y, eps, z_p, y_p, cfg.loss)
    twin.trunk(x)                                              # one real pass only
    torch.testing.assert_close(model.trunk.bn2.running_mean, twin.trunk.bn2.running_mean)
    torch.testing.assert_close(model.trunk.bn2.running_var, twin.trunk.bn2.running_var)
    assert int(model.trunk.bn2.num_batches_tracked) == 1


def test_parameter_counts_one_trunk_fewer():
    counts = {k: count_parameters(_model(k)[0]) for k in ("vae", "idvae", "vaegan")}
    head = counts["idvae"]["discriminator_head"]
    assert counts["idvae"]["total"] == counts["vae"]["total"] + head
    assert counts["vaegan"]["total"] == counts["idvae"]["total"] + counts["vae"]["trunk"]


def test_conditional_decoder_uses_the_label_and_rejects_bad_labels():
    model, cfg = _model("idvae", conditional=True)
    model.eval()
    z = torch.randn(4, cfg.model.latent)
    a = model.decode(z, torch.tensor([0, 1, 2, 3]))
    b = model.decode(z, torch.tensor([4, 5, 6, 7]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        model.decode(z, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="conditional"):
        model.decode(z)
    terms = compute_terms(model, *_batch(conditional=True), cfg.loss)
    assert torch.isfinite(terms.L_GAN)


def test_loss_config_validation():
    with pytest.raises(ValueError, match="loss.lambda_d must be >= 0"):
        LossConfig(lambda_d=-1.0)
    with pytest.raises(ValueError, match="model.kind expects .* did you mean .vaegan."):
        PRESETS.build("tiny", ["model.kind=gan"])


def test_projection_discriminator_head():
    cfg = PRESETS.build("tiny", ["model.conditional=true", "model.cond_discriminator=projection"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    head = model.discriminator_head
    torch.nn.init.normal_(head.embed.weight)
    h, y = torch.randn(5, cfg.model.hidden), torch.tensor([0, 3, 3, 9, 1])
    ref = head.fc(h).squeeze(1) + torch.stack([h[i] @ head.embed.weight[y[i]] for i in range(5)])
    torch.testing.assert_close(head(h, y), ref)
    terms = compute_terms(model, *_batch(conditional=True), cfg.loss)
    g = torch.autograd.grad(terms.L_GAN, [head.embed.weight])[0]
    assert g.abs().sum() > 0                            # the projection is part of the discriminator role
    assert any(p is head.embed.weight for p in model.parameter_roles()["discriminator"])
