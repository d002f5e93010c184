"""Batched image operations that the corruptions are built from, each matching the library call of the
original generator (scipy / scikit-image / OpenCV / Pillow / ImageMagick) that it replaces.

All functions take float tensors shaped (N, C, H, W) (or (N, H, W) for 2-D maps) on any device.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["fold_index", "gaussian_matrix", "gaussian_filter", "clipped_zoom", "motion_blur",
           "motion_offsets", "rgb_to_hsv", "hsv_to_rgb", "pil_resize_box", "plasma_fractal",
           "glass_permutation", "rgb_to_gray", "disk_kernel", "filter2d_reflect101",
           "cv2_warp_affine", "map_coordinates_reflect", "affine_from_points"]


# ------------------------------------------------------------------------------------------------------
# boundary handling
# ------------------------------------------------------------------------------------------------------
def fold_index(idx: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer indices outside [0, n) back inside, as scipy.ndimage / OpenCV border modes do.

    ``nearest`` (edge, cv2 REPLICATE), ``reflect`` (half-sample symmetric, scipy 'reflect', cv2 REFLECT),
    ``mirror`` (whole-sample symmetric, scipy 'mirror', cv2 REFLECT_101). Works for any distance outside.
    """
    if mode == "nearest" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "reflect":
        period = 2 * n
        r = torch.remainder(idx, period)
        return torch.where(r >= n, period - 1 - r, r)
    if mode == "mirror":
        period = 2 * n - 2
        r = torch.remainder(idx, period)
        return torch.where(r >= n, period - r, r)
    raise ValueError(f"unknown border mode {mode!r}")


# ------------------------------------------------------------------------------------------------------
# Gaussian filtering (scipy.ndimage.gaussian_filter / skimage.filters.gaussian)
# ------------------------------------------------------------------------------------------------------
def gaussian_matrix(n: int, sigma: float, *, truncate: float = 4.0, mode: str = "nearest",
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    return _gaussian_matrix64(n, float(sigma), float(truncate), mode).to(device=device, dtype=dtype)


@lru_cache(maxsize=64)
def _gaussian_matrix64(n: int, sigma: float, truncate: float, mode: str) -> torch.Tensor:
    """(n, n) matrix G with ``G @ v == scipy.ndimage.gaussian_filter1d(v, sigma, mode=mode, truncate=...)``.

    A dense banded matrix handles every border mode exactly, even when the kernel is wider than the
    signal (elastic_transform blurs 224 pixels with sigma 170).
    """
    if sigma <= 1e-15:
        return torch.eye(n, dtype=torch.float64)
    radius = int(truncate * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * k**2)
    w /= w.sum()
    rows = np.repeat(np.arange(n), 2 * radius + 1)
    cols = (np.arange(n)[:, None] + k[None, :].astype(np.int64)).reshape(-1)
    cols = fold_index(torch.from_numpy(cols), n, mode).numpy()
    g = np.zeros((n, n), dtype=np.float64)
    np.add.at(g, (rows, cols), np.tile(w, n))
    return torch.from_numpy(g)


def gaussian_filter(x: torch.Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """Separable Gaussian over the last two axes (skimage ``gaussian(..., channel_axis=...)`` semantics)."""
    if sigma <= 1e-15:
        return x
    gh = gaussian_matrix(x.shape[-2], sigma, truncate=truncate, mode=mode, dtype=x.dtype, device=x.device)
    gw = gaussian_matrix(x.shape[-1], sigma, truncate=truncate, mode=mode, dtype=x.dtype, device=x.device)
    return gh @ x @ gw.T


# ------------------------------------------------------------------------------------------------------
# zoom (scipy.ndimage.zoom, order=1) as used by ImageNet-C's clipped_zoom
# ------------------------------------------------------------------------------------------------------
def _zoom_geometry(n: int, z: float) -> tuple[int, int, int]:
    crop = int(np.ceil(n / float(z)))
    top = (n - crop) // 2
    out = int(round(crop * float(z)))  # scipy: output shape = round(input * zoom)
    trim = (out - n) // 2
    return top, crop, out, trim


def clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """Centre crop of size ceil(n / z), zoomed back by z (bilinear, scipy grid_mode=False), centre-trimmed.

    scipy's ``zoom(order=1)`` maps output o to input o * (in - 1) / (out - 1), which is exactly
    ``F.interpolate(align_corners=True)``. Axes are handled separately (the original assumed square images).
    """
    h, w = x.shape[-2:]
    top_h, ch, out_h, trim_h = _zoom_geometry(h, z)
    top_w, cw, out_w, trim_w = _zoom_geometry(w, z)
    crop = x[..., top_h:top_h + ch, top_w:top_w + cw]
    lead = crop.shape[:-2]
    y = F.interpolate(crop.reshape(-1, 1, ch, cw), size=(out_h, out_w), mode="bilinear", align_corners=True)
    y = y.reshape(*lead, out_h, out_w)
    return y[..., trim_h:trim_h + h, trim_w:trim_w + w]


# ------------------------------------------------------------------------------------------------------
# ImageMagick MotionBlurImage
# ------------------------------------------------------------------------------------------------------
def motion_offsets(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Kernel weights and (dy, dx) sample offsets of ``MagickMotionBlurImage(radius, sigma, angle)``.

    ImageMagick: width = 2 * ceil(radius) + 1; kernel[i] = exp(-i^2 / (2 sigma^2)), normalised;
    point = (width sin a, width cos a); offset[i] = (ceil(i * point.y / |point| - 0.5),
    ceil(i * point.x / |point| - 0.5)) as (x, y); out(x, y) = sum_i kernel[i] * in(x + off.x, y + off.y)
    with edge virtual pixels.
    """
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i**2) / (2.0 * sigma**2))
    kernel /= kernel.sum()
    a = math.radians(angle)
    px, py = width * math.sin(a), width * math.cos(a)
    hyp = math.hypot(px, py)
    offs = [(int(math.ceil(k * px / hyp - 0.5)), int(math.ceil(k * py / hyp - 0.5))) for k in range(width)]
    return kernel, offs


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles) -> torch.Tensor:
    """ImageMagick motion blur of each image n at ``angles[n]`` degrees (edge pixels repeated).

    Each image has its own line kernel (its own offsets); large images are filtered by FFT on the
    edge-padded batch, small ones by gathering every tap.
    """
    n, c, h, w = x.shape
    plans = [motion_offsets(radius, sigma, float(a)) for a in angles]
    kernel = plans[0][0]
    pad_y = max(abs(dy) for _, offs in plans for dy, _ in offs)
    pad_x = max(abs(dx) for _, offs in plans for _, dx in offs)
    xp = F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="replicate") if (pad_x or pad_y) else x
    if c * h * w >= 4096 and len(kernel) > 5:
        # one line kernel per image on a (2 pad_y + 1, 2 pad_x + 1) grid, applied by FFT
        k = torch.zeros((n, 2 * pad_y + 1, 2 * pad_x + 1), dtype=torch.float64)
        for j, (_, offs) in enumerate(plans):
            for weight, (dy, dx) in zip(kernel, offs):
                k[j, pad_y + dy, pad_x + dx] += weight
        return fft_correlate(xp, k.to(x.device), (h, w))
    hp, wp = h + 2 * pad_y, w + 2 * pad_x
    dev = x.device
    base = (torch.arange(h, device=dev)[:, None] * wp + torch.arange(w, device=dev)[None, :]).reshape(-1)
    offs = torch.tensor([[(pad_y + dy) * wp + pad_x + dx for dy, dx in o] for _, o in plans], device=dev)
    start = (torch.arange(n, device=dev)[:, None] * c + torch.arange(c, device=dev)[None, :]) * (hp * wp)
    idx = start[:, :, None, None] + offs[:, None, :, None] + base[None, None, None, :]      # (N, C, K, H*W)
    taps = xp.reshape(-1)[idx]
    k = torch.as_tensor(kernel, dtype=x.dtype, device=dev)
    return torch.einsum("nckp,k->ncp", taps, k).reshape(n, c, h, w)


def _smooth_size(n: int) -> int:
    """The smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def fft_correlate(xp: torch.Tensor, kernels: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Valid correlation of padded images xp (N, C, Hp, Wp) with kernels (N or 1, kh, kw), via FFT.

    out[n, c, i, j] = sum_{a, b} xp[n, c, i + a, j + b] * k[n, a, b] for the (Hp - kh + 1, Wp - kw + 1)
    valid positions; only the first ``out_hw`` rows / columns are returned. Used for the large kernels
    (defocus disks up to 21x21, motion-blur lines up to 41 taps), where it is much faster than direct
    convolution; the result matches it to float32 rounding.
    """
    n, c, hp, wp = xp.shape
    kh, kw = kernels.shape[-2:]
    fh, fw = _smooth_size(hp), _smooth_size(wp)     # zero padding beyond hp / wp leaves the valid part intact
    # correlation = convolution with the flipped kernel; circular wrap only touches the discarded border
    kf = torch.zeros((kernels.shape[0], fh, fw), dtype=xp.dtype, device=xp.device)
    kf[:, :kh, :kw] = torch.flip(kernels.to(xp.dtype), (-2, -1))
    spec = torch.fft.rfft2(xp, s=(fh, fw)) * torch.fft.rfft2(kf)[:, None]
    full = torch.fft.irfft2(spec, s=(fh, fw))
    h, w = out_hw
    return full[..., kh - 1:kh - 1 + h, kw - 1:kw - 1 + w]


# ------------------------------------------------------------------------------------------------------
# colour
# ------------------------------------------------------------------------------------------------------
def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """cv2.COLOR_RGB2GRAY on floats: 0.299 R + 0.587 G + 0.114 B, shape (N, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on (N, 3, H, W) in [0, 1] (same tie-breaking: blue, then green, then red)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.amax(1)
    delta = v - x.amin(1)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    h = torch.zeros_like(v)
    h = torch.where(r == v, (g - b) / safe, h)
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on (N, 3, H, W).

    skimage picks (v, t, p), (q, v, p), ... by the sector floor(6 h); the closed form
    ``v - v s clamp(min(k, 4 - k), 0, 1)`` with k = (n + 6 h) mod 6, n = 5, 3, 1 gives the same values
    for every sector without materialising the six candidates.
    """
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device)[None, :, None, None]
    k = torch.remainder(n + h * 6, 6)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


# ------------------------------------------------------------------------------------------------------
# Pillow Image.resize(..., Image.BOX) on uint8 images, bit-exact fixed-point arithmetic
# ------------------------------------------------------------------------------------------------------
_PRECISION_BITS = 32 - 8 - 2


def _pil_box_coeffs(in_size: int, out_size: int) -> np.ndarray:
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        t = (np.arange(xmin, xmax) - center + 0.5) / filterscale
        k = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if k.sum() != 0:
            k /= k.sum()
        m[xx, xmin:xmax] = k
    fixed = np.where(m < 0, np.trunc(-0.5 + m * (1 << _PRECISION_BITS)), np.trunc(0.5 + m * (1 << _PRECISION_BITS)))
    return fixed


def pil_resize_box(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``PIL.Image.resize((w, h), Image.BOX)`` of uint8-valued images (x holds integers 0..255 as floats).

    Horizontal pass then vertical pass, each in Pillow's 22-bit fixed point with rounding and clipping.
    """
    out_h, out_w = size
    h, w = x.shape[-2:]
    y = x.to(torch.float64)
    half = float(1 << (_PRECISION_BITS - 1))
    scale = float(1 << _PRECISION_BITS)
    if out_w != w:
        kw = torch.from_numpy(_pil_box_coeffs(w, out_w)).to(y.device)
        y = torch.floor((y @ kw.T + half) / scale).clamp_(0, 255)
    if out_h != h:
        kh = torch.from_numpy(_pil_box_coeffs(h, out_h)).to(y.device)
        y = torch.floor((kh @ y + half) / scale).clamp_(0, 255)
    return y.to(x.dtype)


# ------------------------------------------------------------------------------------------------------
# diamond-square plasma fractal (fog)
# ------------------------------------------------------------------------------------------------------
def plasma_fractal(n: int, mapsize: int, wibbledecay: float, generator=None,
                   device: torch.device | str = "cpu", uniforms: list[torch.Tensor] | None = None) -> torch.Tensor:
    """(n, mapsize, mapsize) heightmaps in [0, 1], the diamond-square algorithm of ImageNet-C's fog.

    Each "wibbled mean" adds ``wibble * U(-wibble, wibble)``. ``uniforms`` (values in [-1, 1), consumed in
    the order the algorithm draws them) makes the map reproducible from given draws (used by the tests);
    otherwise map i draws from stream i of ``generator`` (an :class:`.rng.ImageRNG` or a torch.Generator).
    """
    from essence.corruptions.rng import as_image_rng

    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    # float32 (the original uses float64; the normalised map differs by ~1e-7, far below 1/255)
    m = torch.zeros((n, mapsize, mapsize), dtype=torch.float32, device=device)
    stepsize = mapsize
    wibble = 100.0
    if uniforms is None:
        # image i's uniforms for the whole map in one draw from its stream, consumed in the algorithm's order
        rng = as_image_rng(n, generator=generator)
        sizes, step = [], mapsize
        while step >= 2:
            sizes += [(mapsize // step) ** 2] * 3
            step //= 2
        flat = rng.rand((sum(sizes),), torch.float32) * 2 - 1                    # (n, total)
        uniforms = [part.reshape(n, -1) for part in torch.split(flat, sizes, dim=1)]
    draws = iter(uniforms)

    def wibbledmean(a: torch.Tensor) -> torch.Tensor:
        u = next(draws).to(device=device, dtype=torch.float32).reshape(a.shape)
        return a / 4 + wibble * (wibble * u)

    while stepsize >= 2:
        half = stepsize // 2
        # squares
        corner = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        acc = corner + torch.roll(corner, -1, 1)
        acc = acc + torch.roll(acc, -1, 2)
        m[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(acc)
        # diamonds
        dr = m[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


# ------------------------------------------------------------------------------------------------------
# glass blur: the sequence of local pixel swaps, as a permutation
# ------------------------------------------------------------------------------------------------------
def glass_permutation(h: int, w: int, delta: int, offsets: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Source index of every pixel after ImageNet-C's glass-blur loop, for each image: (N, H*W) int64.

    The loop visits (row, col) for row = h-delta .. delta+1 and col = w-delta .. delta+1 (descending) and
    executes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with (h', w') = (h + dy, w + dx). On an RGB numpy
    image ``x[h, w]`` is a *view*, so that statement copies x[h', w'] into x[h, w] and leaves x[h', w']
    unchanged (it is not a swap); this is what ImageNet-C computed and what is reproduced here.

    Each position is written once per pass, so after the pass src[p] = src[q] if q was visited earlier in
    the pass (q > p), else the value from before the pass. That is a forest of pointers to larger indices,
    resolved for all pixels and images at once by pointer doubling (log2(H*W) gathers), no Python loop
    over pixels. ``offsets``: (N, iterations, steps, 2) of (dx, dy) in [-delta, delta).
    """
    offsets = torch.as_tensor(offsets)
    n, iters, steps, _ = offsets.shape
    device = offsets.device
    rows = torch.arange(h - delta, delta, -1, device=device)
    cols = torch.arange(w - delta, delta, -1, device=device)
    pos = (rows[:, None] * w + cols[None, :]).reshape(-1)
    if pos.numel() != steps:
        raise ValueError(f"expected {pos.numel()} offsets per iteration, got {steps}")
    hw = h * w
    visited = torch.zeros(hw, dtype=torch.bool, device=device)
    visited[pos] = True
    ident = torch.arange(hw, device=device).expand(n, hw)
    src = ident.clone()
    shift = offsets[..., 1].long() * w + offsets[..., 0].long()              # (N, iters, steps)
    for it in range(iters):
        q = pos[None, :] + shift[:, it]                                      # (N, steps)
        chained = (q > pos[None, :]) & visited[q]
        nxt = ident.clone()
        nxt[:, pos] = torch.where(chained, q, pos[None, :].expand(n, -1))
        val = src.clone()
        val[:, pos] = torch.where(chained, src.gather(1, pos[None, :].expand(n, -1)), src.gather(1, q))
        while True:  # pointer doubling until every chain points at its terminal node
            nn = nxt.gather(1, nxt)
            if torch.equal(nn, nxt):
                break
            nxt = nn
        src = val.gather(1, nxt)
    return src


# ------------------------------------------------------------------------------------------------------
# OpenCV pieces: disk kernel + filter2D (defocus), warpAffine (elastic)
# ------------------------------------------------------------------------------------------------------
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C ``disk``: normalised disk on a grid of +-8 (radius <= 8) or +-radius, then
    ``cv2.GaussianBlur`` with ksize 3 (radius <= 8) or 5 and sigma alias_blur (border REFLECT_101)."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    d /= d.sum()
    # cv2.getGaussianKernel(ksize, sigma) for sigma > 0 (float32 computation in OpenCV, float64 here)
    r = (ksize - 1) // 2
    g = np.exp(-(np.arange(-r, r + 1, dtype=np.float64) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    t = torch.from_numpy(d.astype(np.float64))
    n = t.shape[0]
    idx = fold_index(torch.arange(-r, n + r), n, "mirror")
    tp = t[idx][:, idx]
    gt = torch.from_numpy(g)
    tmp = sum(gt[k] * tp[k:k + n, :] for k in range(ksize))
    out = sum(gt[k] * tmp[:, k:k + n] for k in range(ksize))
    return out.numpy().astype(np.float32)


def filter2d_reflect101(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """``cv2.filter2D(x, -1, kernel)`` per channel (correlation, anchor at the centre, BORDER_REFLECT_101)."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    n, c, h, w = x.shape
    if ph < h and pw < w:
        xp = F.pad(x, (pw, pw, ph, ph), mode="reflect")     # torch 'reflect' = REFLECT_101
    else:
        ih = fold_index(torch.arange(-ph, h + ph, device=x.device), h, "mirror")
        iw = fold_index(torch.arange(-pw, w + pw, device=x.device), w, "mirror")
        xp = x[:, :, ih][:, :, :, iw]
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    if kh * kw > 49:
        return fft_correlate(xp, k[None], (h, w))
    return F.conv2d(xp.reshape(n * c, 1, h + 2 * ph, w + 2 * pw), k[None, None]).reshape(n, c, h, w)


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform(src, dst)``: the 2x3 matrix mapping three (x, y) points onto three others."""
    a = np.zeros((6, 6))
    b = np.zeros(6)
    for i in range(3):
        a[2 * i, 0:2], a[2 * i, 2] = src[i], 1
        a[2 * i + 1, 3:5], a[2 * i + 1, 5] = src[i], 1
        b[2 * i], b[2 * i + 1] = dst[i]
    return np.linalg.solve(a, b).reshape(2, 3)


def cv2_warp_affine(x: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
    """``cv2.warpAffine(img, M, (w, h), borderMode=BORDER_REFLECT_101)`` (bilinear) for each image.

    OpenCV inverts M and samples the source at coordinates quantised to 1/32 pixel (INTER_BITS = 5,
    via 10-bit fixed point), which is reproduced here.
    """
    n, _, h, w = x.shape
    full = np.concatenate([np.asarray(matrices, dtype=np.float64), np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], 1)
    inv = torch.from_numpy(np.linalg.inv(full)[:, :2]).to(x.device)                 # (N, 2, 3)
    ys = torch.arange(h, device=x.device, dtype=torch.float64)[None, :, None]
    xs = torch.arange(w, device=x.device, dtype=torch.float64)[None, None, :]

    def fixed(row: torch.Tensor) -> torch.Tensor:
        # X = (round((M1 y + M2) * 1024) + 16 + round(M0 x * 1024)) >> 5
        a = torch.round((row[:, 1, None, None] * ys + row[:, 2, None, None]) * 1024) + 16
        return torch.floor((a + torch.round(row[:, 0, None, None] * xs * 1024)) / 32)

    sx, sy = fixed(inv[:, 0]) / 32, fixed(inv[:, 1]) / 32
    # bilinear with REFLECT_101 borders = grid_sample(reflection, align_corners=True)
    grid = torch.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def map_coordinates_reflect(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``scipy.ndimage.map_coordinates(order=1, mode='reflect')`` at (rows, cols) of shape (N, H, W).

    scipy's half-sample reflection folded into bilinear interpolation equals
    ``grid_sample(padding_mode='reflection', align_corners=False)`` with pixel p at (2 p + 1) / size - 1.
    """
    h, w = x.shape[-2:]
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def spatter_water_mask(liquid: np.ndarray, intensity: float) -> np.ndarray:
    """The water mask of spatter (Canny, distance transform, emboss) for one liquid layer (H, W)."""
    import cv2

    lay8 = np.mod(np.floor(liquid * 255), 256).astype(np.uint8)
    dist = 255 - cv2.Canny(lay8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = lay8 * dist
    return (m / m.max() if m.max() > 0 else m) * intensity
