"""RandAugment as the official Noisy Student code applies it (``randaugment.py`` / ``autoaugment.py``), on batches.

Each image gets ``n`` ops drawn uniformly from the 16 below, each applied at the fixed magnitude ``m`` on the
official level scale (``_MAX_LEVEL = 10``, **not clipped**: m = 27 means rotations up to 81 degrees). The
official code draws a per-op probability but always applies the chosen op; so does this one. Level -> argument
(official mapping; ``sign`` = a random +-1 per image):

===============  ================================================  =========================================
op               argument at level m                               note
===============  ================================================  =========================================
Rotate           sign * 30 * m / 10 degrees                        bilinear, fill
ShearX/Y         sign * 0.3 * m / 10                               bilinear, fill
TranslateX/Y     sign * translate_const * m / 10 pixels            official 100 px at 224 px: scaled by size
Cutout           square of side 2 * cutout_const * m / 10 pixels   official 40 px at 224 px: scaled by size
Color/Contrast/  blend factor 0.1 + 1.8 * m / 10                   deterministic in m, as in the original
Brightness/
Sharpness
Posterize        keep int(4 * m / 10) bits (clamped to 1..8)       higher m = fewer changes (original quirk)
Solarize         invert pixels >= 256 * m / 10 (of 255)            idem
SolarizeAdd      add 110 * m / 10 (of 255) to pixels < 128
AutoContrast,    no argument
Equalize, Invert
===============  ================================================  =========================================

Deviations: ops run on floats in [0, 1] (no 8-bit rounding between ops); Equalize uses the plain CDF mapping.
Every draw comes from ``generator`` (a CPU ``torch.Generator``) so a seeded or resumed run sees the same noise;
all ops work on the batch's device with no Python loop over images (one loop over the 16 op kinds).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["OPS", "GEOMETRIC", "RandAugment", "rand_augment"]

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
MAX_LEVEL = 10.0


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL ImageEnhance: a + factor * (b - a), clipped (factor 1 returns b)."""
    return (a + factor * (b - a)).clamp(0, 1)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp(min=1e-6), torch.ones_like(hi))
    off = torch.where(hi > lo, lo, torch.zeros_like(lo))
    return ((x - off) * scale).clamp(0, 1)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    v = (x * 255).round().long().clamp(0, 255).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.float32)
    hist.scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).amin(1, keepdim=True)
    denom = (float(h * w) - cdf_min).clamp(min=1.0)
    lut = ((cdf - cdf_min) / denom).clamp(0, 1)
    flat = torch.where(denom > 1.0, lut.gather(1, v), v.float() / 255)  # constant images stay
    return flat.reshape(n, c, h, w).to(x.dtype)


def _sharpen_smooth(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
    y[..., 0, :], y[..., -1, :], y[..., :, 0], y[..., :, -1] = x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]
    return y


def _affine_matrices(op: torch.Tensor, sign: torch.Tensor, m: float, h: int, w: int,
                     translate_const: float) -> torch.Tensor:
    """(N, 2, 3) inverse maps for F.affine_grid (normalised coordinates); identity where op is not geometric."""
    n = op.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    lvl = m / MAX_LEVEL
    angle = sign * math.radians(30.0 * lvl)
    rot = op == OPS.index("Rotate")
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output pixel p samples the input at R^-1 p (rotation about the centre, pixel aspect corrected)
    theta[rot, 0, 0], theta[rot, 0, 1] = cos[rot], (sin * h / w)[rot]
    theta[rot, 1, 0], theta[rot, 1, 1] = (-sin * w / h)[rot], cos[rot]
    shear = sign * 0.3 * lvl
    sx, sy = op == OPS.index("ShearX"), op == OPS.index("ShearY")
    theta[sx, 0, 1] = (shear * h / w)[sx]
    theta[sy, 1, 0] = (shear * w / h)[sy]
    shift = sign * translate_const * lvl
    tx, ty = op == OPS.index("TranslateX"), op == OPS.index("TranslateY")
    theta[tx, 0, 2] = (-2 * shift / w)[tx]
    theta[ty, 1, 2] = (-2 * shift / h)[ty]
    return theta


def rand_augment(x: torch.Tensor, n: int, m: float, *, generator: torch.Generator | None = None,
                 translate_const: float | None = None, cutout_const: float | None = None,
                 fill: float = 0.5, ops: tuple[str, ...] = OPS) -> torch.Tensor:
    """Apply ``n`` random ops at magnitude ``m`` to every image of ``x`` (N, C, H, W) floats in [0, 1].

    ``translate_const`` / ``cutout_const``: pixels at level 10 (default: the official 100 / 40 at 224 px,
    scaled to the image size). ``ops``: a subset of :data:`OPS` to draw from. Returns a new tensor in [0, 1].
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W) in [0, 1], got {x.dtype} {tuple(x.shape)}")
    unknown = [o for o in ops if o not in OPS]
    if unknown or not ops:
        raise ValueError(f"unknown RandAugment ops {unknown}; valid: {list(OPS)}")
    N, C, H, W = x.shape
    size = min(H, W)
    t_const = 100.0 * size / 224 if not translate_const else float(translate_const)
    c_const = 40.0 * size / 224 if not cutout_const else float(cutout_const)
    lvl = m / MAX_LEVEL
    factor = 0.1 + 1.8 * lvl
    bits = int(min(8, max(1, int(4 * lvl))))
    dev = x.device
    out = x.clone()
    codes = torch.tensor([OPS.index(o) for o in ops])
    for _ in range(n):
        op = codes[torch.randint(0, len(codes), (N,), generator=generator)]
        sign = torch.where(torch.rand(N, generator=generator) < 0.5, -1.0, 1.0)
        centre = torch.rand(N, 2, generator=generator)
        present = set(op.unique().tolist())
        geo = torch.isin(op, torch.tensor([OPS.index(g) for g in GEOMETRIC]))
        if geo.any():
            idx = geo.nonzero().squeeze(1)
            theta = _affine_matrices(op[idx], sign[idx], m, H, W, t_const).to(dev, x.dtype)
            grid = F.affine_grid(theta, [len(idx), C, H, W], align_corners=False)
            xs = out[idx.to(dev)]
            warped = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            inside = F.grid_sample(torch.ones_like(xs[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)
            out[idx.to(dev)] = warped + (1 - inside) * fill
        for code in present:
            name = OPS[code]
            if name in GEOMETRIC:
                continue
            sel = (op == code).nonzero().squeeze(1).to(dev)
            xs = out[sel]
            if name == "AutoContrast":
                ys = _autocontrast(xs)
            elif name == "Equalize":
                ys = _equalize(xs)
            elif name == "Invert":
                ys = 1 - xs
            elif name == "Posterize":
                q = 2 ** (8 - bits)
                ys = torch.floor(xs * 255 / q) * q / 255
            elif name == "Solarize":
                ys = torch.where(xs * 255 < 256 * lvl, xs, 1 - xs)
            elif name == "SolarizeAdd":
                ys = torch.where(xs * 255 < 128, (xs + 110 * lvl / 255).clamp(0, 1), xs)
            elif name == "Color":
                ys = _blend(_grey(xs).expand_as(xs), xs, factor)
            elif name == "Contrast":
                mean = _grey(xs).mean(dim=(1, 2, 3), keepdim=True)
                ys = _blend(mean.expand_as(xs), xs, factor)
            elif name == "Brightness":
                ys = _blend(torch.zeros_like(xs), xs, factor)
            elif name == "Sharpness":
                ys = _blend(_sharpen_smooth(xs), xs, factor)
            else:  # Cutout: a (2 pad) x (2 pad) square at a random centre, filled
                pad = c_const * lvl
                cy = (centre[sel.cpu(), 0] * H).to(dev).view(-1, 1, 1)
                cx = (centre[sel.cpu(), 1] * W).to(dev).view(-1, 1, 1)
                yy = torch.arange(H, device=dev, dtype=x.dtype).view(1, H, 1) + 0.5
                xx = torch.arange(W, device=dev, dtype=x.dtype).view(1, 1, W) + 0.5
                box = ((yy - cy).abs() <= pad) & ((xx - cx).abs() <= pad)
                ys = torch.where(box[:, None], torch.full_like(xs, fill), xs)
            out[sel] = ys.to(out.dtype)
    return out


class RandAugment(torch.nn.Module):
    """``RandAugment(n, m, size)``: the module form of :func:`rand_augment` (no parameters)."""

    def __init__(self, n: int = 2, m: float = 27.0, *, translate_const: float | None = None,
                 cutout_const: float | None = None, fill: float = 0.5):
        super().__init__()
        if n < 1 or m < 0:
            raise ValueError(f"RandAugment needs n >= 1 and m >= 0, got n={n}, m={m}")
        self.n, self.m, self.fill = int(n), float(m), float(fill)
        self.translate_const, self.cutout_const = translate_const, cutout_const

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return rand_augment(x, self.n, self.m, generator=generator, translate_const=self.translate_const,
                            cutout_const=self.cutout_const, fill=self.fill)

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m:g}"
