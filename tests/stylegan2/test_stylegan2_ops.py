"""upfirdn2d and the resampling convolutions against direct, obviously-correct references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from essence.stylegan2.ops import (
    conv_down2,
    conv_up2,
    downsample2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)


def _reference(x: np.ndarray, f2: np.ndarray, up: int, down: int, pad, gain: float) -> np.ndarray:
    """The definition, one image at a time: zero insertion, pad/crop, full 2-D *convolution*, decimation."""
    px0, px1, py0, py1 = pad
    out = []
    for img in x.reshape(-1, *x.shape[-2:]):
        H, W = img.shape
        u = np.zeros((H * up, W * up))
        u[::up, ::up] = img
        u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
        u = u[max(-py0, 0): u.shape[0] - max(-py1, 0), max(-px0, 0): u.shape[1] - max(-px1, 0)]
        y = convolve2d(u, f2 * gain, mode="valid")
        out.append(y[::down, ::down])
    return np.stack(out).reshape(*x.shape[:-2], *out[0].shape)


@pytest.mark.parametrize("up,down,pad,gain", [(1, 1, (1, 2, 1, 2), 1.0), (2, 1, (2, 1, 2, 1), 4.0),
                                               (1, 2, (1, 1, 1, 1), 1.0), (2, 2, (0, 3, 1, 2), 2.0),
                                               (1, 1, (-1, 2, 0, -1), 1.0), (3, 1, (2, 2, 2, 2), 9.0)])
@pytest.mark.parametrize("separable", [True, False])
def test_upfirdn2d_equals_direct_convolution(up, down, pad, gain, separable):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    taps = [1.0, 2.0, 5.0, 3.0]                # asymmetric: catches a missing or extra flip
    f = setup_filter(taps, separable=separable).double()
    f2 = torch.outer(f, f) if separable else f
    y = upfirdn2d(x, f, up=up, down=down, pad=pad, gain=gain)
    ref = _reference(x.numpy(), f2.numpy(), up, down, pad, gain)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_flip_filter_correlates():
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    f = setup_filter([1.0, 2.0, 4.0], separable=False).double()
    np.testing.assert_allclose(upfirdn2d(x, f, flip_filter=True).numpy(),
                               upfirdn2d(x, f.flip([0, 1])).numpy(), atol=1e-12)


def test_upsample_impulse_is_the_filter_times_gain():
    """The reference design's documented behaviour: an impulse upsampled x2 gives the 4x4 [1,3,3,1] kernel (outer
    product / 64) times up^2 = 4, centred on the impulse; a constant image keeps its value inside."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    y = upsample2d(x, setup_filter())
    k = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64 * 4
    assert y.shape == (1, 1, 8, 8)
    torch.testing.assert_close(y[0, 0, 1:5, 1:5], k)
    assert float(y.sum()) == pytest.approx(4.0)            # gain up^2: the zeros in between carry no mass
    ones = upsample2d(torch.ones(1, 1, 8, 8), setup_filter())
    torch.testing.assert_close(ones[0, 0, 2:-2, 2:-2], torch.ones(12, 12))
    down = downsample2d(torch.ones(1, 1, 8, 8), setup_filter())
    assert down.shape == (1, 1, 4, 4)
    torch.testing.assert_close(down[0, 0, 1:-1, 1:-1], torch.ones(2, 2))


def test_conv_up2_equals_upsample_then_convolve():
    """Transposed conv + FIR == FIR upsampling then a 3x3 conv (away from the zero-padded border)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    f = setup_filter().double()
    a = conv_up2(x, w, f)
    b = F.conv2d(upsample2d(x, f), w, padding=1)
    assert a.shape == b.shape == (2, 5, 16, 16)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], rtol=1e-10, atol=1e-10)


def test_conv_up2_grouped_equals_per_group():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 4, 4, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)      # 2 groups: 3 in -> 2 out each
    f = setup_filter().double()
    y = conv_up2(x, w, f, groups=2)
    parts = [conv_up2(x[:, 3 * i: 3 * i + 3], w[2 * i: 2 * i + 2], f) for i in range(2)]
    torch.testing.assert_close(y, torch.cat(parts, 1))


def test_conv_down2_equals_filter_then_strided_conv():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    f = setup_filter().double()
    a = conv_down2(x, w, f)
    b = F.conv2d(upfirdn2d(x, f, pad=2), w)[:, :, ::2, ::2]
    torch.testing.assert_close(a, b)
    # and, away from the border, the same as convolving first and FIR-downsampling after (both are LTI)
    c = upfirdn2d(F.conv2d(x, w, padding=1), f, down=2, pad=1)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], c[..., 1:-1, 1:-1])
    w1 = torch.randn(5, 3, 1, 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(conv_down2(x, w1, f), F.conv2d(downsample2d(x, f), w1))


def test_bad_filter_and_factors():
    with pytest.raises(ValueError, match="filter taps"):
        setup_filter([])
    with pytest.raises(ValueError, match="up and down"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), setup_filter(), up=0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        upfirdn2d(torch.zeros(4, 4), setup_filter())
