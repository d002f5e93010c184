"""The 19 corruptions of ImageNet-C (15 benchmark + 4 validation), batched in torch.

Every function here has the signature ``fn(x, severity, *, generator, param_set) -> y`` with ``x`` a float
tensor (N, C, H, W) in [0, 1] (C = 1 or 3, any device) and ``y`` the corrupted batch in [0, 1], before the
uint8 truncation that the original scripts apply (``np.uint8(img)``); :func:`essence.corruptions.corrupt`
does that step for uint8 input. Each function follows its original generator line by line (the line is
quoted in the docstring), with the library call it made replaced by the matching op in :mod:`.ops`.

Randomness is drawn per image on the CPU (``generator``: an :class:`.rng.ImageRNG` with one stream per image,
or a ``torch.Generator`` that seeds one) and then moved to the device, so image i's corruption depends only
on its own stream: not on the batch size, the chunking or the device.

Grey-scale images (C = 1): per-pixel and per-channel operations are applied to the one channel; where the
original needs colour, ``imagecorruptions``' grey conventions are used: brightness adds ``c`` to the grey
value, snow's grey mix uses the image itself, frost and spatter colours are converted to grey with
(0.2989, 0.587, 0.114), and saturate leaves a grey image unchanged (its hue is undefined; imagecorruptions'
RGB round trip returns the same first channel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from essence.core.registry import Registry
from essence.corruptions import fastpath, ops
from essence.corruptions.params import ELASTIC_SCALE, FROST_RESIZE, REFERENCE_SIZE, get_params
from essence.corruptions.rng import ImageRNG, as_image_rng

__all__ = ["Corruption", "CORRUPTIONS", "SUBSETS", "ORDER", "corruption_names", "frost_dir", "load_frost_textures"]


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str          # noise / blur / weather / digital / extra
    fn: Callable
    random: bool         # draws randomness (False: a deterministic function of the image)
    # optional uint8 -> uint8 path on the CPU: fn(u8 (N, C, H, W), severity, param_set, generator) -> uint8, or
    # None when it does not apply (then the float path runs); random ones draw exactly as ``fn`` does
    uint8_fn: Callable | None = None


CORRUPTIONS: Registry[Corruption] = Registry("corruption")
BENCHMARK_FAMILIES = ("noise", "blur", "weather", "digital")
SUBSETS = ("common", "all", "noise", "blur", "weather", "digital", "extra")


def _register(name: str, family: str, random: bool = True):
    def deco(fn):
        tags = [family, "all"] + (["common"] if family in BENCHMARK_FAMILIES else [])
        CORRUPTIONS.register(name, Corruption(name, family, fn, random), tags=tags)
        return fn
    return deco


def corruption_names(subset: str = "common") -> list[str]:
    """Names in a subset: ``common`` (the 15 of the benchmark), ``all`` (19), ``noise``, ``blur``,
    ``weather``, ``digital`` or ``extra`` (the 4 validation corruptions)."""
    if subset not in SUBSETS:
        from essence.core.registry import suggest
        raise ValueError(f"unknown subset {subset!r}{suggest(subset, SUBSETS)}; valid: {', '.join(SUBSETS)}")
    members = set(CORRUPTIONS.names(subset))
    return [n for n in ORDER if n in members]


# ------------------------------------------------------------------------------------------------------
# random draws (per-image CPU streams -> device)
# ------------------------------------------------------------------------------------------------------
def _rng(x: torch.Tensor, generator) -> ImageRNG:
    return as_image_rng(len(x), generator=generator)


def _truncate_uint8(x: torch.Tensor) -> torch.Tensor:
    """``np.uint8(x)`` for x in [0, 255] (truncation towards zero)."""
    return torch.floor(x + 1e-4)


def _gray_weights(x: torch.Tensor) -> torch.Tensor:
    return 0.2989 * x[:, 0:1] + 0.5870 * x[:, 1:2] + 0.1140 * x[:, 2:3]


# ------------------------------------------------------------------------------------------------------
# noise
# ------------------------------------------------------------------------------------------------------
@_register("gaussian_noise", "noise")
def gaussian_noise(x, severity, *, generator=None, param_set="imagenet"):
    """``np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1)``"""
    c = get_params("gaussian_noise", severity, param_set)
    return _rng(x, generator).randn(x.shape[1:], x.dtype).to(x.device).mul_(c).add_(x).clamp_(0, 1)


def _shot_values(c: float, cap: int) -> torch.Tensor:
    """clip(k / c, 0, 1) in float32 for the capped counts k = 0..cap."""
    return (torch.arange(cap + 1, dtype=torch.float64) / c).to(torch.float32).clamp(0, 1)


@_register("shot_noise", "noise")
def shot_noise(x, severity, *, generator=None, param_set="imagenet"):
    """``np.clip(np.random.poisson(x * c) / c, 0, 1)``.

    Images with uint8 levels (x = q / 255, the usual case) are sampled by inverse CDF from a table of the
    256 Poisson distributions (:func:`.fastpath.poisson_capped_counts`, numpy draws seeded from
    ``generator``); other inputs use ``torch.poisson``. Both are exact Poisson samplers."""
    c = get_params("shot_noise", severity, param_set)
    rng = _rng(x, generator)
    levels = fastpath.is_uint8_levels(x)
    if levels is None:
        rates = (x.detach().to("cpu", torch.float64) * c)
        counts = torch.stack([torch.poisson(rates[i], generator=rng.generator(i)) for i in range(len(x))])
        return (counts / c).to(x.device, x.dtype).clamp(0, 1)
    counts, cap = _shot_counts(levels.cpu().numpy(), c, rng)
    return torch.from_numpy(_shot_values(c, cap).numpy()[counts]).to(x.device, x.dtype)


def _shot_counts(levels: np.ndarray, c: float, rng: ImageRNG) -> tuple[np.ndarray, int]:
    """Capped Poisson counts of a uint8 batch (N, C, H, W): image i's uniforms from its own stream, one
    table-sampling pass over the batch."""
    per = int(np.prod(levels.shape[1:]))
    u = np.concatenate([rng.numpy(i).random(per) for i in range(len(levels))])
    return fastpath.poisson_capped_counts(levels, c, u)


def shot_noise_uint8(u8, severity, param_set="imagenet", generator=None):
    c = get_params("shot_noise", severity, param_set)
    counts, cap = _shot_counts(u8.numpy(), c, _rng(u8, generator))
    lut = torch.floor(_shot_values(c, cap) * 255 + 1e-4).clamp(0, 255).to(torch.uint8)   # = api._to_uint8
    return torch.from_numpy(lut.numpy()[counts])


def _impulse(x, c, generator, salt_value):
    rng, per = _rng(x, generator), x[0].numel()
    draws = [fastpath.impulse_positions(per, c, rng.numpy(i)) for i in range(len(x))]
    salt = np.concatenate([s + i * per for i, (s, _) in enumerate(draws)])
    pepper = np.concatenate([p + i * per for i, (_, p) in enumerate(draws)])
    if x.device.type == "cpu" and x.dtype != torch.bfloat16:
        flat = x.detach().reshape(-1).numpy().copy()   # numpy copy and scatter (no thread-pool wake-ups)
        flat[salt] = salt_value
        flat[pepper] = 0
        return torch.from_numpy(flat).reshape(x.shape)
    y = x.detach().clone(memory_format=torch.contiguous_format)
    flat = y.view(-1)
    flat[torch.from_numpy(salt).to(x.device)] = salt_value
    flat[torch.from_numpy(pepper).to(x.device)] = 0
    return y


@_register("impulse_noise", "noise")
def impulse_noise(x, severity, *, generator=None, param_set="imagenet"):
    """``sk.util.random_noise(x, mode='s&p', amount=c)``: each value (per channel) is replaced with prob.
    ``c``, by 1 (salt) or 0 (pepper) with equal odds. The flipped values are drawn as the geometric gaps of
    the Bernoulli process (:func:`.fastpath.impulse_positions`, numpy draws seeded from ``generator``)."""
    return _impulse(x, get_params("impulse_noise", severity, param_set), generator, 1.0)


def impulse_noise_uint8(u8, severity, param_set="imagenet", generator=None):
    return _impulse(u8, get_params("impulse_noise", severity, param_set), generator, 255)


@_register("speckle_noise", "extra")
def speckle_noise(x, severity, *, generator=None, param_set="imagenet"):
    """``np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1)``"""
    c = get_params("speckle_noise", severity, param_set)
    return _rng(x, generator).randn(x.shape[1:], x.dtype).to(x.device).mul_(c).add_(1).mul_(x).clamp_(0, 1)


# ------------------------------------------------------------------------------------------------------
# blur
# ------------------------------------------------------------------------------------------------------
@_register("gaussian_blur", "extra", random=False)
def gaussian_blur(x, severity, *, generator=None, param_set="imagenet"):
    """``gaussian(x, sigma=c, multichannel=True)`` (skimage: mode 'nearest', truncate 4)."""
    c = get_params("gaussian_blur", severity, param_set)
    if fastpath.cpu_float(x) and _blur_taps(c, x.shape) is not None:
        return fastpath.sep_filter_planes(x, _blur_taps(c, x.shape)).clamp_(0, 1)
    return ops.gaussian_filter(x, c).clamp(0, 1)


def _gaussian(x, sigma):
    """ops.gaussian_filter (skimage / scipy 'nearest'), with OpenCV's separable filter on CPU tensors."""
    taps = _blur_taps(sigma, x.shape)
    return fastpath.sep_filter_planes(x, taps) if fastpath.cpu_float(x) and taps is not None else \
        ops.gaussian_filter(x, sigma)


def _blur_taps(sigma, shape):
    taps = fastpath.gaussian_taps(sigma)
    return taps if len(taps) // 2 < min(shape[-2:]) else None


def gaussian_blur_uint8(u8, severity, param_set="imagenet", generator=None):
    taps = _blur_taps(get_params("gaussian_blur", severity, param_set), u8.shape)
    return None if taps is None else fastpath.sep_filter_planes(u8, taps)


@_register("defocus_blur", "blur", random=False)
def defocus_blur(x, severity, *, generator=None, param_set="imagenet"):
    """``cv2.filter2D(x[..., d], -1, disk(radius=c[0], alias_blur=c[1]))`` for each channel."""
    radius, alias = get_params("defocus_blur", severity, param_set)
    kernel = ops.disk_kernel(radius, alias)
    if fastpath.cpu_float(x) and _fits(kernel, x.shape):
        return fastpath.filter2d_planes(x, kernel).clamp_(0, 1)         # OpenCV itself, plane by plane
    return ops.filter2d_reflect101(x, kernel).clamp(0, 1)


def _fits(kernel, shape):
    return kernel.shape[0] // 2 < shape[-2] and kernel.shape[1] // 2 < shape[-1]


def defocus_blur_uint8(u8, severity, param_set="imagenet", generator=None):
    kernel = ops.disk_kernel(*get_params("defocus_blur", severity, param_set))
    return fastpath.filter2d_planes(u8, kernel) if _fits(kernel, u8.shape) else None


def glass_offsets(n: int, h: int, w: int, delta: int, iterations: int, generator=None) -> torch.Tensor:
    """The (dx, dy) draws of glass blur: ``np.random.randint(-delta, delta, size=(2,))`` per visited pixel."""
    steps = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
    return as_image_rng(n, generator=generator).randint(-delta, delta, (iterations, steps, 2))


def glass_blur_apply(x: torch.Tensor, sigma: float, delta: int, offsets) -> torch.Tensor:
    """The deterministic part of glass blur given the swap offsets (n, iterations, steps, 2)."""
    n, c, h, w = x.shape
    y = _truncate_uint8(ops.gaussian_filter(x, sigma) * 255)          # np.uint8(gaussian(x) * 255)
    perm = ops.glass_permutation(h, w, delta, torch.as_tensor(offsets).to(x.device))
    y = torch.gather(y.reshape(n, c, h * w), 2, perm[:, None].expand(n, c, h * w)).reshape(n, c, h, w)
    return ops.gaussian_filter(y / 255, sigma).clamp(0, 1)


@_register("glass_blur", "blur")
def glass_blur(x, severity, *, generator=None, param_set="imagenet"):
    """Gaussian(sigma) -> uint8 -> ``iterations`` passes of local pixel "swaps" -> Gaussian(sigma).

    The "swap" is the original's tuple assignment on numpy views, which copies the neighbour into the
    pixel (see :func:`.ops.glass_permutation`); imagecorruptions' numba version is a true swap.

    The loop bounds are ``H - delta`` / ``W - delta`` (the original hard-codes 224, 32 or 64, i.e. the
    image size of its dataset).
    """
    sigma, delta, iterations = get_params("glass_blur", severity, param_set)
    n, _, h, w = x.shape
    return glass_blur_apply(x, sigma, delta, glass_offsets(n, h, w, delta, iterations, generator))


def _magick_quantize(x: torch.Tensor) -> torch.Tensor:
    """ImageMagick writes the blurred image as 8-bit PNG: round to the nearest of 256 levels."""
    return torch.round(x.clamp(0, 1) * 255) / 255


@_register("motion_blur", "blur")
def motion_blur(x, severity, *, generator=None, param_set="imagenet"):
    """``MagickMotionBlurImage(radius=c[0], sigma=c[1], angle=U(-45, 45))``, without ImageMagick."""
    radius, sigma = get_params("motion_blur", severity, param_set)
    angles = _rng(x, generator).uniform(-45, 45).tolist()
    return _magick_quantize(ops.motion_blur(x, radius, sigma, angles))


@_register("zoom_blur", "blur", random=False)
def zoom_blur(x, severity, *, generator=None, param_set="imagenet"):
    """``(x + sum_z clipped_zoom(x, z)) / (len(c) + 1)`` over the severity's zoom factors."""
    zooms = get_params("zoom_blur", severity, param_set)
    out = x.clone()
    for z in zooms:
        out += ops.clipped_zoom(x, z)
    return (out / (len(zooms) + 1)).clamp(0, 1)


# ------------------------------------------------------------------------------------------------------
# weather
# ------------------------------------------------------------------------------------------------------
def snow_apply(x: torch.Tensor, params, layer_noise: torch.Tensor, angles) -> torch.Tensor:
    """Snow given the Gaussian layer draws (N, H, W) ~ N(0, 1) and the motion-blur angles."""
    loc, scale, zoom, thresh, radius, sigma, blend = params
    layer = (loc + scale * layer_noise.to(x.device, torch.float64))[:, None]          # N(loc, scale)
    layer = ops.clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = _truncate_uint8(layer.clamp(0, 1) * 255).to(x.dtype) / 255                 # PIL 'L' image
    layer = _magick_quantize(ops.motion_blur(layer, radius, sigma, angles))
    gray = ops.rgb_to_gray(x) if x.shape[1] == 3 else x
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, (-2, -1))).clamp(0, 1)


@_register("snow", "weather")
def snow(x, severity, *, generator=None, param_set="imagenet"):
    """Snow layer N(loc, scale) -> clipped_zoom -> threshold -> motion blur at U(-135, -45) degrees;
    ``x = b x + (1 - b) max(x, gray(x) 1.5 + 0.5)``; ``clip(x + layer + rot180(layer))``."""
    params = get_params("snow", severity, param_set)
    n, _, h, w = x.shape
    rng = _rng(x, generator)
    noise = rng.randn((h, w), torch.float64)
    angles = rng.uniform(-135, -45).tolist()
    return snow_apply(x, params, noise, angles)


def frost_dir() -> str:
    """The folder of the frost textures shipped in the ``imagecorruptions`` wheel (used as data only)."""
    import importlib.util
    import os

    env = os.environ.get("ESSENCE_FROST_DIR")
    if env:
        if not os.path.isdir(env):
            raise FileNotFoundError(f"ESSENCE_FROST_DIR={env!r} is not a directory")
        return env
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        from essence.data import missing_source_error
        raise missing_source_error("the frost textures of ImageNet-C", "pip install --no-deps imagecorruptions==1.1.2",
                                   env="ESSENCE_FROST_DIR")
    return os.path.join(list(spec.submodule_search_locations)[0], "frost")


@lru_cache(maxsize=8)
def load_frost_textures(param_set: str = "imagenet") -> tuple[torch.Tensor, ...]:
    """The five textures the originals draw from (frost1-5; frost6 is never used), (3, h, w) floats 0..255,
    downscaled for the small-image sets with ``cv2.resize(fx=fy=s)`` (bilinear, on uint8) as the originals do."""
    import os

    from PIL import Image

    folder = frost_dir()
    names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
    out = []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"frost texture {path} is missing (pip install --no-deps imagecorruptions==1.1.2)")
        img = np.asarray(Image.open(path).convert("RGB"))
        s = FROST_RESIZE[param_set]
        if s != 1.0:
            import cv2

            img = cv2.resize(img, (0, 0), fx=s, fy=s)     # the originals' call (bilinear, uint8 in and out)
        out.append(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).contiguous())
    return tuple(out)


def frost_apply(x: torch.Tensor, params, textures, picks) -> torch.Tensor:
    """``clip(a * x + b * frost_crop, 0, 255)`` given (texture index, top, left) per image."""
    a, b = params
    n, c, h, w = x.shape
    crops = []
    for idx, top, left in picks:
        tex = textures[idx]
        crops.append(tex[:, top:top + h, left:left + w])
    frost = torch.stack(crops).to(x.device, x.dtype) / 255
    if c == 1:
        frost = _gray_weights(frost)
    return (a * x + b * frost).clamp(0, 1)


def _fit_texture(tex: torch.Tensor, h: int, w: int) -> torch.Tensor:
    th, tw = tex.shape[-2:]
    if th > h and tw > w:
        return tex
    # too small for the image: scale up (x1.1 margin, bicubic) as imagecorruptions does
    f = max(h / th, w / tw) * 1.1
    size = (int(np.ceil(th * f)), int(np.ceil(tw * f)))
    return torch.nn.functional.interpolate(tex[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 255)


@_register("frost", "weather")
def frost(x, severity, *, generator=None, param_set="imagenet"):
    """A random crop of one of five frost textures (``randint(5)``), ``clip(a x + b frost)``."""
    params = get_params("frost", severity, param_set)
    n, _, h, w = x.shape
    textures = [_fit_texture(t, h, w) for t in load_frost_textures(param_set)]
    rng = _rng(x, generator)
    idx = rng.randint(0, 5).tolist()
    u = rng.rand((2,))
    picks = []
    for i, k in enumerate(idx):  # top ~ randint(0, th - h), left ~ randint(0, tw - w)
        th, tw = textures[k].shape[-2:]
        picks.append((k, int(u[i, 0] * max(th - h, 1)), int(u[i, 1] * max(tw - w, 1))))
    return frost_apply(x, params, textures, picks)


def fog_apply(x: torch.Tensor, params, plasma: torch.Tensor) -> torch.Tensor:
    """``clip((x + a plasma[:H, :W]) * max / (max + a))`` given the maps (N, S, S)."""
    a, _ = params
    h, w = x.shape[-2:]
    m = x.amax((1, 2, 3), keepdim=True)
    y = x + a * plasma[:, None, :h, :w].to(x.device, x.dtype)
    return (y * m / (m + a)).clamp(0, 1)


@_register("fog", "weather")
def fog(x, severity, *, generator=None, param_set="imagenet"):
    """Diamond-square plasma fractal (map size: the next power of two >= the image, 256 for 224)."""
    params = get_params("fog", severity, param_set)
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    return fog_apply(x, params, ops.plasma_fractal(n, size, params[1], _rng(x, generator)))


@_register("brightness", "weather", random=False)
def brightness(x, severity, *, generator=None, param_set="imagenet"):
    """HSV: ``V = clip(V + c)`` (skimage rgb2hsv / hsv2rgb, computed as a rescaling of RGB, which is the
    same map); grey images: ``clip(x + c)``."""
    c = get_params("brightness", severity, param_set)
    if x.shape[1] == 1:
        return (x + c).clamp(0, 1)
    # only V changes, and hsv2rgb is linear in V for fixed (h, s): rgb' = rgb * V' / V (V' if V = 0)
    v = x.amax(1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * (v2 / v.clamp(min=1e-12)), v2).clamp_(0, 1)


# ------------------------------------------------------------------------------------------------------
# digital
# ------------------------------------------------------------------------------------------------------
@_register("contrast", "digital", random=False)
def contrast(x, severity, *, generator=None, param_set="imagenet"):
    """``(x - mu) * c + mu`` with mu the per-channel spatial mean."""
    c = get_params("contrast", severity, param_set)
    mu = x.mean((2, 3), keepdim=True)
    return torch.addcmul(mu * (1 - c), x, torch.tensor(c, dtype=x.dtype, device=x.device)).clamp_(0, 1)


def elastic_constants(params, param_set: str, h: int, w: int) -> tuple[float, float, float]:
    scale = ELASTIC_SCALE[param_set] * min(h, w) / REFERENCE_SIZE[param_set]
    return tuple(float(np.float64(scale) * p) for p in params)


def elastic_apply(x: torch.Tensor, consts, jitter: np.ndarray, fields: torch.Tensor) -> torch.Tensor:
    """Elastic transform given the affine jitter (N, 3, 2) and the uniform fields (N, 2, H, W) in [-1, 1)."""
    alpha, sigma, _ = consts
    n, _, h, w = x.shape
    center = np.float32([h, w]) // 2
    square = min(h, w) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    mats = [ops.affine_from_points(pts1.astype(np.float64), (pts1 + j.astype(np.float32)).astype(np.float64))
            for j in jitter]
    y = ops.cv2_warp_affine(x, np.stack(mats))
    # float32 blur of the fields (the original blurs in float64 and casts to float32; difference < 1e-3 px)
    fields = fields.to(x.device, torch.float32)
    dxy = ops.gaussian_filter(fields, sigma, truncate=3, mode="reflect") * alpha
    dx, dy = dxy[:, 0].to(torch.float64), dxy[:, 1].to(torch.float64)
    rows = torch.arange(h, device=x.device, dtype=torch.float64)[None, :, None] + dy
    cols = torch.arange(w, device=x.device, dtype=torch.float64)[None, None, :] + dx
    return ops.map_coordinates_reflect(y, rows, cols).clamp(0, 1)


@_register("elastic_transform", "digital")
def elastic_transform(x, severity, *, generator=None, param_set="imagenet"):
    """ImageNet-C's elastic transform: a random affine (three points jittered by U(-c3, c3),
    ``cv2.warpAffine`` with BORDER_REFLECT_101), then a displacement field
    ``Gaussian(U(-1, 1), sigma=c2, truncate=3) * c1`` applied with ``map_coordinates(order=1, mode='reflect')``.

    This is the ImageNet-C algorithm; ``imagecorruptions`` ships a different one (no affine step, other
    constants), so the two are not comparable.
    """
    n, _, h, w = x.shape
    consts = elastic_constants(get_params("elastic_transform", severity, param_set), param_set, h, w)
    rng = _rng(x, generator)
    jitter = rng.uniform(-consts[2], consts[2], (3, 2)).numpy().astype(np.float32)
    fields = rng.uniform(-1, 1, (2, h, w))
    return elastic_apply(x, consts, jitter, fields)


_pool = fastpath.pool


def _pixelate_size(c: float, h: int, w: int) -> tuple[int, int]:
    return max(int(h * c), 1), max(int(w * c), 1)


def _via_uint8(x: torch.Tensor, fn) -> torch.Tensor:
    """A uint8 -> uint8 CPU function applied to a float batch in [0, 1] (rounded to uint8 first), any device."""
    u8 = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).cpu()
    return fn(u8).to(x.device, x.dtype) / 255


def pixelate_uint8(u8, severity, param_set="imagenet", generator=None):
    c = get_params("pixelate", severity, param_set)
    return fastpath.pixelate_planes_u8(u8, _pixelate_size(c, *u8.shape[-2:]))


@_register("pixelate", "digital", random=False)
def pixelate(x, severity, *, generator=None, param_set="imagenet"):
    """``x.resize((int(W c), int(H c)), BOX).resize((W, H), BOX)``: on the CPU Pillow's reduction and a gather
    with Pillow's enlargement indices (:func:`.fastpath.pixelate_planes_u8`); :func:`.ops.pil_resize_box` is
    the bit-exact torch version, used on GPU tensors."""
    c = get_params("pixelate", severity, param_set)
    h, w = x.shape[-2:]
    size = _pixelate_size(c, h, w)
    if x.device.type != "cpu":
        u8 = torch.round(x * 255)
        return ops.pil_resize_box(ops.pil_resize_box(u8, size), (h, w)) / 255
    return _via_uint8(x, lambda u8: fastpath.pixelate_planes_u8(u8, size))


def jpeg_uint8(u8, severity, param_set="imagenet", generator=None):
    return fastpath.jpeg_planes_u8(u8, int(get_params("jpeg_compression", severity, param_set)))


@_register("jpeg_compression", "digital", random=False)
def jpeg_compression(x, severity, *, generator=None, param_set="imagenet"):
    """``PIL.Image.save(format='JPEG', quality=c)`` and decode (grey images as one-channel JPEGs), on the
    CPU with libjpeg through OpenCV (the same baseline encoder settings; the tests check the pixels equal
    Pillow's)."""
    q = int(get_params("jpeg_compression", severity, param_set))
    return _via_uint8(x, lambda u8: fastpath.jpeg_planes_u8(u8, q))


# ------------------------------------------------------------------------------------------------------
# extra (validation) corruptions
# ------------------------------------------------------------------------------------------------------
def spatter_apply(x: torch.Tensor, params, liquid_noise: torch.Tensor) -> torch.Tensor:
    """Spatter given the Gaussian draws (N, H, W) ~ N(0, 1) of the liquid layer."""

    loc, scale, sigma, thresh, intensity, mode = params
    n, c, h, w = x.shape
    liquid = _gaussian((loc + scale * liquid_noise.to(x.device, torch.float64)), sigma)   # (N, H, W)
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    if mode == 0:
        def water(layer):
            return torch.from_numpy(ops.spatter_water_mask(layer, intensity))

        layers = list(liquid.cpu().numpy())
        m = torch.stack(list(_pool().map(water, layers)))[:, None].to(x.device, x.dtype)
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255], dtype=x.dtype, device=x.device)[None, :, None, None]
        add = (m * color).clamp(0, 1)
        if c == 1:
            return (x + _gray_weights(add)).clamp(0, 1)
        return (x + m * color).clamp(0, 1)
    m = (liquid > thresh).to(torch.float32)
    m = _gaussian(m, intensity)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)[:, None].to(x.device, x.dtype)
    color = torch.tensor([63 / 255, 42 / 255, 20 / 255], dtype=x.dtype, device=x.device)[None, :, None, None] * m
    if c == 1:
        color = _gray_weights(color)
    return (x * (1 - m) + color).clamp(0, 1)


@_register("spatter", "extra")
def spatter(x, severity, *, generator=None, param_set="imagenet"):
    """Water (severities 1-3: Canny edges, distance transform, emboss, pale-turquoise blend) or mud
    (4-5: a blurred mask blended with brown) from a thresholded Gaussian liquid layer. The edge map is
    computed with OpenCV on the CPU, one image at a time (a 2-D map per image)."""
    params = get_params("spatter", severity, param_set)
    n, _, h, w = x.shape
    rng = _rng(x, generator)
    noise = torch.from_numpy(np.stack([rng.numpy(i).standard_normal((h, w)) for i in range(n)]))
    return spatter_apply(x, params, noise)


@_register("saturate", "extra", random=False)
def saturate(x, severity, *, generator=None, param_set="imagenet"):
    """HSV: ``S = clip(S * c0 + c1)``; a grey image is returned unchanged."""
    c0, c1 = get_params("saturate", severity, param_set)
    if x.shape[1] == 1:
        return x.clone()
    hsv = ops.rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], (hsv[:, 1] * c0 + c1).clamp(0, 1), hsv[:, 2]], 1)
    return ops.hsv_to_rgb(hsv).clamp(0, 1)


for _name, _fn in (("pixelate", pixelate_uint8), ("jpeg_compression", jpeg_uint8), ("shot_noise", shot_noise_uint8),
                   ("impulse_noise", impulse_noise_uint8), ("defocus_blur", defocus_blur_uint8),
                   ("gaussian_blur", gaussian_blur_uint8)):
    _c = CORRUPTIONS.get(_name)
    CORRUPTIONS._items[_name] = Corruption(_c.name, _c.family, _c.fn, _c.random, _fn)  # noqa: SLF001

# the benchmark's order (the registry itself iterates in definition order)
ORDER = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
         "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
         "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")
