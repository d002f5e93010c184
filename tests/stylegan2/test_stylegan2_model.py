"""Networks: modulated convolution (fused = unfused, demodulated statistics), equalized lr, mapping and
truncation, minibatch std, the AdaIN ablation, shapes and style-input bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from essence.stylegan2.config import PRESETS, ModelConfig
from essence.stylegan2.model import (
    Discriminator,
    FullyConnected,
    Generator,
    MappingNetwork,
    SynthesisLayer,
    minibatch_std,
    modulated_conv2d,
    num_ws,
    truncate,
)
from essence.stylegan2.ops import setup_filter


def _tiny_model(**kw) -> ModelConfig:
    return PRESETS.build("tiny").model.replace(**kw)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_grouped_equals_unfused(demodulate, up):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 6, 6, generator=g)
    w = torch.randn(5, 8, 3, 3, generator=g) / math.sqrt(72)
    s = torch.rand(3, 8, generator=g) * 2.8 + 0.2
    noise = torch.randn(3, 1, 6 * up, 6 * up, generator=g)
    f = setup_filter()
    a = modulated_conv2d(x, w, s, demodulate=demodulate, up=up, f=f, fused=True, noise=noise)
    b = modulated_conv2d(x, w, s, demodulate=demodulate, up=up, f=f, fused=False, noise=noise)
    assert a.shape == (3, 5, 6 * up, 6 * up)
    assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_equals_the_paper_formula(fused):
    """w''_ijk = s_i w_ijk / sqrt(sum_ik (s_i w_ijk)^2 + eps), then a plain convolution, sample by sample."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.5
    y = modulated_conv2d(x, w, s, demodulate=True, fused=fused)
    for n in range(2):
        wp = w * s[n][None, :, None, None]
        wpp = wp / (wp.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[n:n + 1], wpp, padding=1)
        torch.testing.assert_close(y[n:n + 1], ref)


def test_demodulation_normalises_output_std():
    """Card section 7.1: N(0,1) inputs, styles U(0.2, 3): per-map std ~ 1 with demodulation (within 10%),
    and proportional to |s| without it."""
    g = torch.Generator().manual_seed(2)
    C = 64
    x = torch.randn(8, C, 32, 32, generator=g)
    w = torch.randn(C, C, 3, 3, generator=g) / math.sqrt(C * 9)
    s = torch.rand(8, C, generator=g) * 2.8 + 0.2
    y = modulated_conv2d(x, w, s, demodulate=True)
    std = y.std(dim=(2, 3))
    assert (std - 1).abs().max() < 0.15 and (std - 1).abs().mean() < 0.05
    # without demodulation: expected std of map j = sqrt(sum_i s_i^2 sum_k w_ijk^2)
    y = modulated_conv2d(x, w, s, demodulate=False)
    expected = (w[None].square() * s[:, None, :, None, None].square()).sum(dim=(2, 3, 4)).sqrt()
    ratio = y.std(dim=(2, 3)) / expected
    assert (ratio - 1).abs().mean() < 0.05
    # and it scales with the style: doubling s doubles the output, demodulated output does not move
    torch.testing.assert_close(modulated_conv2d(x, w, 2 * s, demodulate=False), 2 * y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(modulated_conv2d(x, w, 2 * s), modulated_conv2d(x, w, s), rtol=1e-4, atol=1e-5)


def test_equalized_lr_scaling():
    torch.manual_seed(0)
    fc = FullyConnected(400, 300, lr_mul=0.01, bias_init=0.5)
    # stored weights ~ N(0, 1 / lr_mul^2); runtime weights ~ N(0, 1 / fan_in); bias starts at bias_init
    assert fc.weight.std().item() == pytest.approx(100.0, rel=0.02)
    assert (fc.weight * fc.weight_gain).std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    x = torch.randn(7, 400)
    out = fc(x)
    torch.testing.assert_close(out, x @ (fc.weight.T * 0.01 / 20) + 0.5)
    # gradient w.r.t. the stored weight is scaled by lr_mul / sqrt(fan_in): the effective step is equalized
    out.sum().backward()
    torch.testing.assert_close(fc.weight.grad, (0.01 / 20) * torch.ones(7, 300).T @ x)
    torch.testing.assert_close(fc.bias.grad, torch.full((300,), 7 * 0.01))


def test_mapping_normalises_z_and_tracks_w_avg():
    cfg = _tiny_model()
    torch.manual_seed(0)
    f = MappingNetwork(cfg)
    z = torch.randn(5, cfg.z_dim)
    torch.testing.assert_close(f(z), f(z * 3.7))           # 2nd-moment normalisation: scale-free in z
    ws = f(z, update_w_avg=True)
    assert ws.shape == (5, num_ws(cfg.resolution), cfg.w_dim)
    torch.testing.assert_close(f.w_avg, (1 - cfg.w_avg_beta) * ws[:, 0].mean(0))
    assert all(lay.weight_gain == pytest.approx(cfg.mapping_lr_mul / math.sqrt(lay.weight.shape[1]))
               for lay in f.layers)


def test_truncation_toward_w_avg():
    cfg = _tiny_model()
    torch.manual_seed(0)
    G = Generator(cfg)
    G.mapping.w_avg.normal_()
    z = torch.randn(4, cfg.z_dim)
    ws = G.mapping(z)
    t0 = G.mapping(z, psi=0.0)
    torch.testing.assert_close(t0, G.mapping.w_avg.expand_as(t0))
    t = G.mapping(z, psi=0.7, cutoff=3)
    torch.testing.assert_close(t[:, :3], G.mapping.w_avg + 0.7 * (ws[:, :3] - G.mapping.w_avg))
    torch.testing.assert_close(t[:, 3:], ws[:, 3:])
    torch.testing.assert_close(truncate(ws, G.mapping.w_avg, 1.0), ws)


def test_minibatch_std_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, 4, 4, generator=g)
    y = minibatch_std(x, group_size=4)
    assert y.shape == (8, 7, 4, 4)
    torch.testing.assert_close(y[:, :6], x)
    for i in range(8):   # sample i is in group {i mod 2, i mod 2 + 2, ...}
        members = x[i % 2::2]
        ref = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(y[i, 6], ref.expand(4, 4))
    assert minibatch_std(x[:6], group_size=4).shape == (6, 7, 4, 4)   # 4 does not divide 6: groups of 3


def test_generator_and_discriminator_shapes_and_split():
    cfg = _tiny_model()
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.num_ws == 2 * int(math.log2(cfg.resolution)) - 2 == 8
    z = torch.randn(3, cfg.z_dim)
    G.eval()
    img = G(z, noise_mode="const")
    torch.testing.assert_close(img, G.synthesis(G.mapping(z), noise_mode="const"))
    assert img.shape == (3, 1, 32, 32)
    assert D(img).shape == (3, 1)
    # noise strength starts at 0: the noise mode does not change the output of a fresh network
    torch.testing.assert_close(G(z, noise_mode="random"), G(z, noise_mode="none"))
    with pytest.raises(ValueError, match="ws of shape"):
        G.synthesis(torch.zeros(3, 5, cfg.w_dim))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(G.mapping(z), noise_mode="bogus")
    with pytest.raises(ValueError, match="expected images"):
        D(torch.zeros(2, 3, 32, 32))


def test_style_block_uses_its_own_ws():
    """Changing only ws[:, k] changes the output only through the layers that read index k."""
    cfg = _tiny_model()
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    ws = G.mapping(torch.randn(2, cfg.z_dim))
    base = G.synthesis(ws, noise_mode="const")
    for k in range(G.num_ws):
        ws2 = ws.clone()
        ws2[:, k] += 1.0
        assert not torch.allclose(G.synthesis(ws2, noise_mode="const"), base), f"ws[:, {k}] is unused"


def test_adain_layer_sets_feature_statistics():
    """StyleGAN1's layer: after instance norm, each map's mean/std are the styles (y_b, y_s)."""
    torch.manual_seed(0)
    layer = SynthesisLayer(4, 6, 8, 8, style_block="adain")
    with torch.no_grad():
        layer.affine.bias.normal_()
    w = torch.randn(2, 8)
    y = layer(torch.randn(2, 4, 8, 8), w, noise_mode="none")
    y_s, y_b = layer.affine(w).chunk(2, dim=1)
    torch.testing.assert_close(y.mean(dim=(2, 3)), y_b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.std(dim=(2, 3), unbiased=False), y_s.abs(), rtol=1e-3, atol=1e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="power of two"):
        ModelConfig(resolution=48)
    with pytest.raises(ValueError, match="img_channels"):
        ModelConfig(img_channels=2)


def test_cpu_eval_path_is_unfused_and_generation_is_independent_of_batch():
    from essence.stylegan2.evaluate import generate_images, generation_batch

    cfg = _tiny_model()
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    z = torch.randn(5, cfg.z_dim)
    ws = G.mapping(z)
    with torch.no_grad():   # fused=None on the CPU is the unfused form, in eval mode too
        assert torch.equal(G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const", fused=False))
    assert generation_batch(None, "cpu") == 64 and generation_batch(None, "cuda") == 256
    assert generation_batch(7, "cpu") == 7
    with pytest.raises(ValueError, match="positive"):
        generation_batch(0, "cpu")
    a = generate_images(G, 9, seed=3)
    b = generate_images(G, 9, seed=3, batch=2)
    assert a.shape == (9, 1, 32, 32)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
