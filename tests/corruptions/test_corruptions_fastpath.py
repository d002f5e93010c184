"""The CPU fast paths (OpenCV / Pillow / numpy, essence.corruptions.fastpath) against the torch reference
implementations that run on other devices, and the uint8 paths against the float paths."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from essence.corruptions import api, corrupt, fastpath, ops
from essence.corruptions import functional as Fc
from essence.corruptions.params import PARAMS

RNG = np.random.default_rng(5)


def _images(n, c, h, w):
    base = RNG.random((n, c, h, w)) * 150 + np.linspace(0, 100, w)[None, None, None, :]
    return torch.from_numpy(base.astype(np.uint8))


def _trunc(y: torch.Tensor) -> torch.Tensor:
    return torch.floor(y.clamp(0, 1) * 255 + 1e-4).to(torch.uint8)


@pytest.mark.parametrize("shape", [(2, 3, 224, 224), (3, 1, 40, 44), (2, 3, 32, 32)])
def test_defocus_opencv_matches_torch(shape):
    u8 = _images(*shape)
    x = u8.float() / 255
    pset = "imagenet" if shape[-1] > 128 else "cifar"
    for s in range(1, 6):
        kernel = ops.disk_kernel(*PARAMS[pset]["defocus_blur"][s - 1])
        ref = ops.filter2d_reflect101(x, kernel).clamp(0, 1)
        fast = fastpath.filter2d_planes(x, kernel).clamp(0, 1)
        assert torch.allclose(fast, ref, atol=1e-5)
        assert torch.allclose(fastpath.filter2d_planes(x.double(), kernel), ops.filter2d_reflect101(x.double(), kernel),
                              atol=1e-10)
        fast_u8 = Fc.defocus_blur_uint8(u8, s, pset)
        diff = (fast_u8.int() - _trunc(ref).int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.01


@pytest.mark.parametrize("shape", [(2, 3, 224, 224), (3, 1, 40, 44)])
def test_gaussian_blur_opencv_matches_torch(shape):
    u8 = _images(*shape)
    x = u8.float() / 255
    pset = "imagenet" if shape[-1] > 128 else "cifar"
    for s in range(1, 6):
        sigma = PARAMS[pset]["gaussian_blur"][s - 1]
        ref = ops.gaussian_filter(x, sigma).clamp(0, 1)
        fast = fastpath.sep_filter_planes(x, fastpath.gaussian_taps(sigma)).clamp(0, 1)
        assert torch.allclose(fast, ref, atol=1e-5)
        diff = (Fc.gaussian_blur_uint8(u8, s, pset).int() - _trunc(ref).int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.01


def test_filters_fall_back_when_the_kernel_exceeds_the_image():
    u8 = _images(2, 3, 8, 8)
    assert Fc.defocus_blur_uint8(u8, 5, "imagenet") is None       # 21x21 disk on 8x8: the torch path runs
    y = corrupt(u8, "defocus_blur", 5, param_set="imagenet")
    ref = _trunc(ops.filter2d_reflect101(u8.float() / 255, ops.disk_kernel(10, 0.5)))
    assert (y.int() - ref.int()).abs().max() <= 1


@pytest.mark.parametrize("c,h,w", [(3, 50, 61), (1, 50, 61), (3, 224, 224), (1, 64, 64), (3, 32, 32), (3, 200, 224)])
def test_pixelate_pillow_path_is_bit_exact(c, h, w):
    u8 = _images(2, c, h, w)
    for s in range(1, 6):
        f = PARAMS["imagenet"]["pixelate"][s - 1]
        size = (int(h * f), int(w * f))
        fast = Fc.pixelate_uint8(u8, s, "imagenet")
        ref = ops.pil_resize_box(ops.pil_resize_box(u8.double(), size), (h, w)).to(torch.uint8)  # GPU path
        assert torch.equal(fast, ref)
        for i in range(2):
            img = u8[i].permute(1, 2, 0).numpy()
            img = img[..., 0] if c == 1 else np.ascontiguousarray(img)
            pil = Image.fromarray(img).resize(size[::-1], Image.BOX).resize((w, h), Image.BOX)
            np.testing.assert_array_equal(np.asarray(pil).reshape(h, w, c), fast[i].permute(1, 2, 0).numpy())
    assert fastpath._pil_nearest_matches((134, 134), (224, 224))            # Pillow NEAREST enlarges at 224 ...
    assert fastpath._cv2_nearest_matches((134, 134), (224, 224))
    assert not fastpath._pil_nearest_matches((30, 36), (50, 61))            # ... the gather at 50 x 61
    assert not fastpath._cv2_nearest_matches((30, 36), (50, 61))


@pytest.mark.parametrize("r", [2, 4, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_block_mean_matches_pillow_for_every_block_sum(r, axis):
    """The whole-block reduction of the pixelate fast path against Pillow's BOX resize, one block for every
    sum S = 0 .. 255 r (the result depends on the block only through S), along either axis."""
    sums = np.arange(255 * r + 1)
    blocks = np.minimum(np.maximum(sums[:, None] - 255 * np.arange(r)[None, :], 0), 255)  # r values summing to S
    row = np.tile(blocks.reshape(1, -1).astype(np.uint8), (3, 1))                        # 3 x (r * (255 r + 1))
    a = row if axis == 1 else np.ascontiguousarray(row.T)
    size = (a.shape[1] // r, a.shape[0]) if axis == 1 else (a.shape[1], a.shape[0] // r)
    want = np.asarray(Image.fromarray(a).resize(size, Image.BOX))
    np.testing.assert_array_equal(fastpath._block_mean_u8(a, r, axis), want)


def test_pixelate_whole_blocks_path_is_taken_only_for_power_of_two_factors():
    assert fastpath._aligned_factor(224, 112) == 2 and fastpath._aligned_factor(224, 56) == 4
    assert fastpath._aligned_factor(224, 134) is None and fastpath._aligned_factor(96, 32) is None  # 3: not 2^k
    assert fastpath._aligned_factor(64, 64) is None and fastpath._aligned_factor(256, 2) is None
    u8 = _images(3, 3, 64, 96)                        # 64 -> 16 and 96 -> 24: r = 4 on both axes
    fast = fastpath.pixelate_planes_u8(u8, (16, 24))
    for i in range(3):
        img = np.ascontiguousarray(u8[i].permute(1, 2, 0).numpy())
        pil = Image.fromarray(img).resize((24, 16), Image.BOX).resize((96, 64), Image.BOX)
        np.testing.assert_array_equal(np.asarray(pil), fast[i].permute(1, 2, 0).numpy())


def test_pixelate_nearest_shortcut_is_refused_where_pillow_nearest_differs():
    assert not fastpath._pil_nearest_matches((36, 36), (61, 61))
    u8 = _images(2, 3, 61, 61)
    fast = fastpath.pixelate_planes_u8(u8, (36, 36))
    for i in range(2):
        img = np.ascontiguousarray(u8[i].permute(1, 2, 0).numpy())
        pil = Image.fromarray(img).resize((36, 36), Image.BOX).resize((61, 61), Image.BOX)
        np.testing.assert_array_equal(np.asarray(pil), fast[i].permute(1, 2, 0).numpy())


@pytest.mark.parametrize("c", [3, 1])
def test_jpeg_opencv_matches_pillow(c):
    u8 = _images(3, c, 64, 72)
    for s in range(1, 6):
        q = PARAMS["imagenet"]["jpeg_compression"][s - 1]
        fast = Fc.jpeg_uint8(u8, s, "imagenet")
        for i in range(3):
            img = u8[i].permute(1, 2, 0).numpy()
            img = img[..., 0] if c == 1 else np.ascontiguousarray(img)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=q)
            ref = np.asarray(Image.open(buf)).reshape(64, 72, c).astype(np.float64)
            assert np.abs(fast[i].permute(1, 2, 0).numpy() - ref).mean() <= 0.05     # identical with one libjpeg


@pytest.mark.parametrize("name", ["shot_noise", "impulse_noise"])
def test_noise_uint8_path_equals_float_path(name, monkeypatch):
    monkeypatch.setattr(api, "CPU_CHUNK_ELEMENTS", 3 * 40 * 44 * 2)      # several chunks, as for big images
    u8 = _images(5, 3, 40, 44)
    for s in (1, 5):
        a = corrupt(u8, name, s, seed=7, param_set="imagenet")
        b = corrupt(u8.float() / 255, name, s, seed=7, param_set="imagenet")
        assert torch.equal(a, _trunc(b))
        assert torch.equal(a, corrupt(u8, name, s, seed=7, param_set="imagenet"))       # deterministic
        assert not torch.equal(a, corrupt(u8, name, s, seed=8, param_set="imagenet"))


def test_shot_noise_table_sampler_is_poisson():
    from scipy.stats import poisson

    rng = np.random.default_rng(0)
    for c, q in ((3, 200), (60, 5), (60, 255), (500, 40)):
        counts, cap = fastpath.poisson_capped_counts(np.full(200_000, q, np.uint8), c, rng)
        lam = q * c / 255
        expected = poisson.pmf(np.arange(cap + 1), lam)
        expected[cap] = poisson.sf(cap - 1, lam)                       # the capped bin holds the tail
        freq = np.bincount(counts, minlength=cap + 1) / counts.size
        assert np.abs(freq - expected).max() < 0.005
    counts, _ = fastpath.poisson_capped_counts(np.zeros(1000, np.uint8), 60, rng)
    assert counts.max() == 0                                           # rate 0


def test_impulse_positions_are_a_bernoulli_process():
    rng = np.random.default_rng(1)
    size, amount = 300_000, 0.09
    salt, pepper = fastpath.impulse_positions(size, amount, rng)
    flipped = np.concatenate([salt, pepper])
    assert len(np.unique(flipped)) == len(flipped) and flipped.min() >= 0 and flipped.max() < size
    assert abs(len(flipped) / size - amount) < 0.005 and abs(len(salt) / len(flipped) - 0.5) < 0.01
    per_block = np.bincount(flipped // 30_000, minlength=10) / 30_000          # uniform over the positions
    assert np.abs(per_block - amount).max() < 0.01
    gaps = np.diff(np.sort(flipped))
    assert abs(gaps.mean() - 1 / amount) < 0.05 / amount                        # geometric gaps
