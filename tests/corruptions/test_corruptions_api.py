"""The corrupt() API, registry, transform, dataset wrapper, bad input, and the random corruptions' statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from essence.corruptions import CORRUPTIONS, Corrupt, CorruptedDataset, choose_param_set, corrupt, corruption_names
from essence.corruptions.params import PARAMS

ALL = corruption_names("all")
RNG = np.random.default_rng(0)
RGB = (RNG.random((40, 44, 3)) * 120 + np.linspace(0, 120, 44)[None, :, None]).astype(np.uint8)


def test_registry_and_subsets():
    assert len(ALL) == 19 and len(set(ALL)) == 19
    assert len(corruption_names("common")) == 15
    assert corruption_names("extra") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert corruption_names("noise") == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert corruption_names("blur") == ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"]
    assert corruption_names("weather") == ["snow", "frost", "fog", "brightness"]
    assert corruption_names("digital") == ["contrast", "elastic_transform", "pixelate", "jpeg_compression"]
    with pytest.raises(ValueError, match="did you mean 'noise'"):
        corruption_names("noize")
    for pset in PARAMS.values():
        assert set(pset) == set(ALL) and all(len(v) == 5 for v in pset.values())


def test_param_set_by_size():
    assert choose_param_set(28, 28) == "cifar" and choose_param_set(32, 32) == "cifar"
    assert choose_param_set(64, 64) == "tiny" and choose_param_set(224, 224) == "imagenet"
    assert choose_param_set(28, 28, "imagenet") == "imagenet"
    with pytest.raises(ValueError, match="param_set"):
        choose_param_set(28, 28, "mnist")


@pytest.mark.parametrize("name", ALL)
def test_every_corruption_keeps_kind_shape_dtype_and_input(name):
    before = RGB.copy()
    y = corrupt(RGB, name, 3, seed=1)
    assert y.shape == RGB.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(RGB, before)                       # never in place
    grey = RGB[..., 0].copy()
    g = corrupt(grey, name, 5, seed=1)
    assert g.shape == grey.shape and g.dtype == np.uint8
    t = torch.from_numpy(RGB).permute(2, 0, 1).float() / 255
    t_before = t.clone()
    yt = corrupt(t, name, 2, seed=1)
    assert yt.shape == t.shape and yt.dtype == torch.float32 and 0 <= yt.min() and yt.max() <= 1
    assert torch.equal(t, t_before)
    pil = corrupt(Image.fromarray(RGB), name, 1, seed=1)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (44, 40)
    # numpy, tensor and PIL paths agree given the seed (same draws, same truncation)
    u8 = corrupt(torch.from_numpy(RGB).permute(2, 0, 1)[None], name, 3, seed=1)
    np.testing.assert_array_equal(u8[0].permute(1, 2, 0).numpy(), y)


@pytest.mark.parametrize("name", ALL)
def test_seeded_determinism_and_randomness(name):
    batch = np.stack([RGB, RGB])
    a = corrupt(batch, name, 4, seed=7)
    b = corrupt(batch, name, 4, seed=7)
    np.testing.assert_array_equal(a, b)
    if CORRUPTIONS.get(name).random:
        c = corrupt(batch, name, 4, seed=8)
        assert not np.array_equal(a, c)
        assert not np.array_equal(a[0], a[1]), "images of a batch must get independent draws"
    else:
        np.testing.assert_array_equal(a[0], a[1])
        assert not np.array_equal(a[0], RGB) or name == "saturate"


def test_errors():
    with pytest.raises(ValueError, match="did you mean 'fog'"):
        corrupt(RGB, "fgo", 1)
    for bad in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
            corrupt(RGB, "fog", bad)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(RGB.astype(np.float64), "fog", 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(torch.full((3, 16, 16), 2.0), "fog", 1)
    with pytest.raises(ValueError, match="NaN"):
        corrupt(torch.full((3, 16, 16), float("nan")), "fog", 1)
    with pytest.raises(ValueError, match="empty batch"):
        corrupt(torch.zeros((0, 3, 16, 16)), "fog", 1)
    with pytest.raises(ValueError, match="at least 8x8"):
        corrupt(np.zeros((1, 1, 3), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        corrupt(np.zeros((16, 16, 4), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="mode 'L' or 'RGB'"):
        corrupt(Image.new("RGBA", (16, 16)), "fog", 1)
    with pytest.raises(ValueError, match="numpy array, a PIL image or a torch tensor"):
        corrupt([[1, 2]], "fog", 1)
    with pytest.raises(ValueError, match="either seed or generator"):
        corrupt(RGB, "fog", 1, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="int64"):
        corrupt(torch.zeros((3, 16, 16), dtype=torch.int64), "fog", 1)


def test_batch_transform_and_dataset():
    x = torch.from_numpy(np.stack([RGB] * 3)).permute(0, 3, 1, 2).contiguous()
    t1, t2 = Corrupt(["fog", "snow"], [1, 5], seed=3), Corrupt(["fog", "snow"], [1, 5], seed=3)
    for _ in range(3):
        assert torch.equal(t1(x), t2(x))
    assert t1(x).dtype == torch.uint8
    with pytest.raises(ValueError, match="did you mean"):
        Corrupt("gausian_noise")
    with pytest.raises(ValueError, match="probability"):
        Corrupt("fog", p=1.5)


def test_batch_transform_draws_per_sample_with_p():
    g = np.random.default_rng(0)
    x = torch.from_numpy(g.integers(0, 256, (200, 3, 16, 16), dtype=np.uint8))
    y = Corrupt(["gaussian_noise", "contrast"], [1, 5], p=0.5, seed=1)(x)
    changed = (y != x).flatten(1).any(1)
    assert 0.38 < float(changed.float().mean()) < 0.62                   # about half the images, per sample
    # each changed image got its own draw: contrast (deterministic) at severity 1 or 5, or noise
    c1, c5 = corrupt(x, "contrast", 1), corrupt(x, "contrast", 5)
    kinds = []
    for i in torch.nonzero(changed).flatten().tolist():
        kinds.append("c1" if torch.equal(y[i], c1[i]) else "c5" if torch.equal(y[i], c5[i]) else "noise")
    assert {"c1", "c5", "noise"} <= set(kinds)
    assert torch.equal(Corrupt("fog", 2, p=0.0, seed=0)(x), x)
    one = Corrupt("fog", 2, seed=4)(x[0])                                  # a single image (C, H, W)
    assert one.shape == x[0].shape and not torch.equal(one, x[0])
    data = [(RGB, 0), (RGB, 1)]
    ds = CorruptedDataset(data, "gaussian_noise", 2, seed=5)
    a0, label = ds[0]
    assert label == 0 and a0.shape == RGB.shape
    np.testing.assert_array_equal(a0, CorruptedDataset(data, "gaussian_noise", 2, seed=5)[0][0])
    assert not np.array_equal(ds[0][0], ds[1][0])


# ---------------------------------------------------------------------------------------------- statistics
def _flat(value: float, n: int = 96) -> torch.Tensor:
    return torch.full((4, 3, n, n), value)


def test_gaussian_noise_std():
    for s, c in enumerate(PARAMS["imagenet"]["gaussian_noise"], 1):
        y = corrupt(_flat(0.5, 224), "gaussian_noise", s, seed=s, param_set="imagenet") - 0.5
        if c < 0.2:  # no clipping at 0.5 +- 2.5 sigma
            assert abs(float(y.std()) - c) < 0.02 * c
        assert abs(float(y.mean())) < 0.01


def test_shot_noise_is_poisson():
    c = PARAMS["imagenet"]["shot_noise"][0]  # 60
    y = corrupt(_flat(0.3), "shot_noise", 1, seed=0, param_set="imagenet")
    counts = y * c
    assert torch.allclose(counts, counts.round(), atol=1e-4)          # multiples of 1/c
    assert abs(float(counts.mean()) - 0.3 * c) < 0.05 * 0.3 * c      # mean = lambda
    assert abs(float(counts.var()) - 0.3 * c) < 0.08 * 0.3 * c       # var = lambda


def test_impulse_noise_amount():
    for s, c in enumerate(PARAMS["imagenet"]["impulse_noise"], 1):
        y = corrupt(_flat(0.5), "impulse_noise", s, seed=s, param_set="imagenet")
        salt, pepper = float((y == 1).float().mean()), float((y == 0).float().mean())
        assert abs(salt - c / 2) < 0.1 * c and abs(pepper - c / 2) < 0.1 * c


def test_speckle_noise_std_scales_with_intensity():
    c = PARAMS["imagenet"]["speckle_noise"][0]
    y = corrupt(_flat(0.4), "speckle_noise", 1, seed=0, param_set="imagenet")
    assert abs(float((y - 0.4).std()) - 0.4 * c) < 0.03 * 0.4 * c


def test_glass_blur_offsets_uniform():
    from essence.corruptions.functional import glass_offsets

    offs = glass_offsets(2, 60, 60, 3, 2, torch.Generator().manual_seed(0))
    values, counts = torch.unique(offs, return_counts=True)
    assert values.tolist() == [-3, -2, -1, 0, 1, 2]                  # randint(-delta, delta): upper bound exclusive
    assert (counts.float() / counts.sum() - 1 / 6).abs().max() < 0.01


def test_fog_plasma_range_and_mean_level():
    from essence.corruptions.ops import plasma_fractal

    m = plasma_fractal(8, 64, 2.0, torch.Generator().manual_seed(0))
    assert m.shape == (8, 64, 64)
    assert torch.allclose(m.amin((1, 2)), torch.zeros(8, dtype=m.dtype))
    assert torch.allclose(m.amax((1, 2)), torch.ones(8, dtype=m.dtype))


def test_shot_noise_pmf():
    """The counts of shot noise follow scipy's Poisson pmf."""
    from scipy.stats import poisson

    level = 77 / 255
    y = corrupt(torch.full((8, 3, 64, 64), level), "shot_noise", 2, seed=3, param_set="imagenet")
    c = PARAMS["imagenet"]["shot_noise"][1]  # 25
    counts = torch.round(y * c).long().flatten()
    lam = level * c
    freq = torch.bincount(counts, minlength=20)[:20].double() / counts.numel()
    expected = torch.from_numpy(poisson.pmf(np.arange(20), lam))
    assert (freq - expected).abs().max() < 0.01
    assert abs(float(counts.double().mean()) - lam) < 0.03 * lam


def test_fft_paths_match_direct_computation():
    from essence.corruptions import ops

    rng = torch.Generator().manual_seed(0)
    x = torch.rand((2, 3, 40, 48), generator=rng)
    k = ops.disk_kernel(6, 0.5)                      # 17x17 -> FFT path
    fft = ops.filter2d_reflect101(x, k)
    pad = 8
    ih = ops.fold_index(torch.arange(-pad, 40 + pad), 40, "mirror")
    iw = ops.fold_index(torch.arange(-pad, 48 + pad), 48, "mirror")
    direct = torch.nn.functional.conv2d(x[:, :, ih][:, :, :, iw].reshape(6, 1, 56, 64),
                                        torch.from_numpy(k)[None, None]).reshape(2, 3, 40, 48)
    assert torch.allclose(fft, direct, atol=1e-5)
    # motion blur: the FFT path (RGB 40x48) equals the gather path (applied channel by channel)
    angles = [17.0, -40.0]
    a = ops.motion_blur(x, 10, 3, angles)                                         # 3x40x48: FFT
    b = torch.cat([ops.motion_blur(x[:, i:i + 1].contiguous(), 10, 3, angles) for i in range(3)], 1)  # gathers
    assert torch.allclose(a, b, atol=1e-5)


def test_hsv_matches_skimage():
    from skimage.color import hsv2rgb, rgb2hsv

    from essence.corruptions import ops

    rgb = np.random.default_rng(0).random((16, 16, 3))
    rgb[0, :4] = [0.5, 0.5, 0.5]                     # grey: delta = 0
    rgb[1, :4] = [0.0, 0.0, 0.0]
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    hsv = ops.rgb_to_hsv(t)
    np.testing.assert_allclose(hsv[0].permute(1, 2, 0).numpy(), rgb2hsv(rgb), atol=1e-12)
    back = ops.hsv_to_rgb(hsv)
    np.testing.assert_allclose(back[0].permute(1, 2, 0).numpy(), hsv2rgb(rgb2hsv(rgb)), atol=1e-12)
