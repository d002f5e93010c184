"""Batched, per-sample random image augmentation on the device the model runs on.

One :class:`AugmentConfig` describes a recipe (the torchvision ops a paper lists, as numbers); one
:class:`BatchAugment` applies it to a whole batch at once: every sample gets its own random crop, flip, colour
jitter, grayscale and blur, with no Python loop over samples. Recipes are data, not code paths::

    aug = BatchAugment(AugmentConfig(size=28, crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                                     blur_p=0.5, mean=(0.286,), std=(0.353,)))
    view = aug(images_uint8)            # (N, C, H, W) uint8 or float in [0, 1] -> normalised float

What each op does (torchvision semantics unless said otherwise):

- ``RandomResizedCrop``: area fraction ~ U(crop_scale), log aspect ratio ~ U(log crop_ratio), position uniform;
  the crop is resampled to ``size`` with antialiased bilinear weights (``antialias=True``, the triangle filter
  widened by the downscale factor, as torchvision's ``Resize(antialias=True)`` / PIL), as two batched matrix
  products per sample (the crop is axis-aligned, so resampling is separable). ``antialias=False`` keeps plain
  bilinear sampling (one ``affine_grid`` + ``grid_sample``), which aliases when a large crop is shrunk.
  *Deviation:* torchvision re-draws up to 10 times when the crop does not fit and then falls back to a centre
  crop; here the crop's sides are clamped to the image instead.
- ``RandomHorizontalFlip`` with ``hflip_p`` (folded into the crop's affine map).
- ``ColorJitter(brightness, contrast, saturation, hue)`` applied with probability ``jitter_p``.
  *Deviation:* torchvision applies the four in a random order per call; here the order is fixed
  (brightness, contrast, saturation, hue). Saturation and hue need 3 channels and must be 0 for grey images.
- ``RandomGrayscale`` with ``grayscale_p`` (3-channel images only).
- ``GaussianBlur`` with ``blur_p``: sigma ~ U(blur_sigma), an odd ``blur_kernel``-tap separable kernel,
  reflect padding. ``blur_sigma`` is in pixels of the output; with ``blur_sigma_ref = R > 0`` it is in pixels of
  an R-pixel image and is scaled by ``size / R``, so a recipe written for 224 px (aug+: 0.1-2.0) blurs a 16 px
  image by the same fraction of its side.
- Normalisation with ``mean`` / ``std``.

Randomness comes from torch's global RNG, or from ``generator`` (a CPU ``torch.Generator``) when given, so that
a seeded run (and a resumed one) draws the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from essence.core.config import Config, require, require_range

__all__ = ["AugmentConfig", "BatchAugment", "to_float_images", "resample_weights"]


@dataclass(frozen=True, kw_only=True)
class AugmentConfig(Config):
    size: int = 32                                     # output side (pixels)
    crop_scale: tuple[float, float] = (0.2, 1.0)       # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)   # RandomResizedCrop aspect ratio (w / h)
    hflip_p: float = 0.5                               # RandomHorizontalFlip probability
    brightness: float = 0.4                            # ColorJitter strengths (0 disables one)
    contrast: float = 0.4
    saturation: float = 0.0
    hue: float = 0.0
    jitter_p: float = 1.0                              # probability that ColorJitter is applied
    grayscale_p: float = 0.0                           # RandomGrayscale probability (RGB only)
    blur_p: float = 0.0                                # GaussianBlur probability
    blur_sigma: tuple[float, float] = (0.1, 2.0)       # GaussianBlur sigma range (pixels)
    blur_kernel: int = 3                               # GaussianBlur kernel taps (odd)
    blur_sigma_ref: int = 0                            # blur_sigma is for an image of this side (0: this size)
    antialias: bool = True                             # antialiased resampling of the crop (as Resize)
    mean: tuple[float, ...] = (0.5,)                   # normalisation, one value per channel (or one for all)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self):
        require(isinstance(self.size, int) and self.size > 0, f"aug.size must be a positive integer, got {self.size!r}")
        lo, hi = self.crop_scale
        require(0 < lo <= hi <= 1, f"aug.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale!r}")
        lo, hi = self.crop_ratio
        require(0 < lo <= hi, f"aug.crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio!r}")
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p"):
            require_range(self, name, 0.0, 1.0)
        for name in ("brightness", "contrast", "saturation"):
            require(getattr(self, name) >= 0, f"aug.{name} must be >= 0, got {getattr(self, name)!r}")
        require_range(self, "hue", 0.0, 0.5)
        lo, hi = self.blur_sigma
        require(0 < lo <= hi, f"aug.blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma!r}")
        require(isinstance(self.blur_sigma_ref, int) and self.blur_sigma_ref >= 0,
                f"aug.blur_sigma_ref must be a non-negative integer, got {self.blur_sigma_ref!r}")
        require(self.blur_kernel >= 1 and self.blur_kernel % 2 == 1,
                f"aug.blur_kernel must be a positive odd integer, got {self.blur_kernel!r}")
        require(len(self.mean) == len(self.std) and len(self.mean) > 0,
                f"aug.mean and aug.std must have the same non-zero length, got {self.mean!r} / {self.std!r}")
        require(all(s > 0 for s in self.std), f"aug.std must be positive, got {self.std!r}")


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]; float input is checked and returned as float32."""
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    return x.float()


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, (N, 3, H, W) -> (N, 1, H, W); grey input is returned as is."""
    if x.shape[1] == 1:
        return x
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def resample_weights(center: torch.Tensor, half: torch.Tensor, length: int, size: int, *,
                     antialias: bool = True) -> torch.Tensor:
    """Per-sample 1-D resampling matrices (n, size, length) for crops of a ``length``-pixel axis.

    Output pixel i of sample b samples the input at normalised coordinate ``half[b] * u_i + center[b]`` with
    ``u_i = (2i + 1) / size - 1`` (``align_corners=False``; a negative ``half`` flips). The weights are the
    bilinear triangle, widened to ``max(1, scale)`` input pixels when the crop is shrunk by ``scale`` (antialias,
    as PIL / ``F.interpolate(antialias=True)``), normalised over the in-image taps (border clamping).
    """
    dev = center.device
    u = (2 * torch.arange(size, device=dev, dtype=torch.float32) + 1) / size - 1          # (size,)
    pos = ((half.view(-1, 1) * u + center.view(-1, 1)) + 1) * length / 2 - 0.5         # (n, size) in pixels
    support = (half.abs() * length / size).clamp(min=1.0) if antialias else torch.ones_like(half)
    taps = torch.arange(length, device=dev, dtype=torch.float32)
    w = (1 - (taps.view(1, 1, -1) - pos.unsqueeze(-1)).abs() / support.view(-1, 1, 1)).clamp(min=0)
    return w / w.sum(-1, keepdim=True)


class BatchAugment(nn.Module):
    """Apply one :class:`AugmentConfig` recipe to a batch, independently per sample (see the module docstring).

    Shape: (N, C, H, W) uint8 or float in [0, 1] -> (N, C, size, size) float32, normalised.
    """

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg

    def _rand(self, n: int, lo: float, hi: float, gen: torch.Generator | None, device) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(device)

    def _coin(self, n: int, p: float, gen: torch.Generator | None, device) -> torch.Tensor:
        return (torch.rand(n, generator=gen) < p).to(device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.cfg
        x = to_float_images(x)
        n, c, h, w = x.shape
        dev = x.device
        if c not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got {c}")
        if c == 1 and (cfg.saturation > 0 or cfg.hue > 0):
            raise ValueError("saturation and hue jitter need RGB images; set aug.saturation=0 and aug.hue=0")
        if len(cfg.mean) not in (1, c):
            raise ValueError(f"aug.mean has {len(cfg.mean)} values but the images have {c} channels")
        if n == 0:
            return x.new_zeros(0, c, cfg.size, cfg.size)

        # RandomResizedCrop + horizontal flip as one axis-aligned resampling per sample.
        scale = self._rand(n, *cfg.crop_scale, generator, "cpu")
        log_r = self._rand(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator, "cpu")
        ratio = log_r.exp()
        sw = (scale * ratio * h / w).sqrt().clamp(max=1.0)   # crop width as a fraction of the image width
        sh = (scale * w / (ratio * h)).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sw)
        cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sh)
        flip = torch.where(torch.rand(n, generator=generator) < cfg.hflip_p, -1.0, 1.0)
        if cfg.antialias:
            wx = resample_weights(cx, sw * flip, w, cfg.size).to(dev)                   # (n, size, W)
            wy = resample_weights(cy, sh, h, cfg.size).to(dev)                          # (n, size, H)
            x = wy.unsqueeze(1) @ x @ wx.transpose(1, 2).unsqueeze(1)                  # (n, c, size, size)
        else:
            theta = torch.zeros(n, 2, 3)
            theta[:, 0, 0] = sw * flip
            theta[:, 0, 2] = cx
            theta[:, 1, 1] = sh
            theta[:, 1, 2] = cy
            grid = F.affine_grid(theta.to(dev), [n, c, cfg.size, cfg.size], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

        # ColorJitter (each strength draws its factor per sample; samples not jittered keep factor 1 / 0).
        if cfg.jitter_p > 0 and (cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue):
            on = self._coin(n, cfg.jitter_p, generator, dev).float().view(n, 1, 1, 1)
            if cfg.brightness:
                f = self._rand(n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, generator, dev).view(n, 1, 1, 1)
                x = (x * (1 + on * (f - 1))).clamp_(0, 1)
            if cfg.contrast:
                f = self._rand(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, generator, dev).view(n, 1, 1, 1)
                f = 1 + on * (f - 1)
                m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
                x = (f * x + (1 - f) * m).clamp_(0, 1)
            if cfg.saturation:
                f = self._rand(n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, generator, dev).view(n, 1, 1, 1)
                f = 1 + on * (f - 1)
                x = (f * x + (1 - f) * _gray(x)).clamp_(0, 1)
            if cfg.hue:
                from kornia.enhance import adjust_hue

                f = self._rand(n, -cfg.hue, cfg.hue, generator, dev) * on.view(n)
                x = adjust_hue(x, f * 2 * math.pi).clamp_(0, 1)

        if cfg.grayscale_p > 0 and c == 3:
            on = self._coin(n, cfg.grayscale_p, generator, dev).view(n, 1, 1, 1)
            x = torch.where(on, _gray(x).expand_as(x), x)

        if cfg.blur_p > 0 and cfg.blur_kernel > 1:
            k = cfg.blur_kernel
            sigma = self._rand(n, *cfg.blur_sigma, generator, dev)
            if cfg.blur_sigma_ref:
                sigma = sigma * (cfg.size / cfg.blur_sigma_ref)
            on = self._coin(n, cfg.blur_p, generator, dev)
            taps = torch.arange(k, device=dev, dtype=x.dtype) - k // 2
            kern = torch.exp(-(taps.view(1, k) ** 2) / (2 * sigma.view(n, 1) ** 2))
            kern = kern / kern.sum(1, keepdim=True)
            delta = (taps == 0).to(x.dtype).expand(n, k)
            kern = torch.where(on.view(n, 1), kern, delta)                # (n, k)
            kern = kern.repeat_interleave(c, dim=0)                       # (n*c, k)
            pad = k // 2
            y = x.reshape(1, n * c, cfg.size, cfg.size)
            y = F.pad(y, (pad, pad, pad, pad), mode="reflect") if pad < cfg.size else F.pad(y, (pad,) * 4)
            y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c)
            y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c)
            x = y.view(n, c, cfg.size, cfg.size)

        mean = x.new_tensor(cfg.mean).view(1, -1, 1, 1)
        std = x.new_tensor(cfg.std).view(1, -1, 1, 1)
        return (x - mean) / std
