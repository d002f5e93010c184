"""ImageNet-P: perturbation sequences (``ImageNet-P/create_p/make_imagenet_p.py``), batched in torch.

``perturbation_sequence(x, name, difficulty)`` turns a batch (N, C, H, W) in [0, 1] into frames
(N, T, C, h, w) in [0, 1], quantised to 8 bits like the PNG frames of the original. Geometric perturbations
act on the whole input and the frames are centre crops of size ``crop`` (ImageNet-P: Resize(256) input,
crop 224, so new content slides in); other perturbations crop first. The original stores the frames as
MP4 (libx264); that lossy step is not reproduced (frames stay exact).

Frame counts: 31 (frame 0 = clean for the noise sequences), translate 41. Noise sequences are compared
with frame 0, the others frame to frame (see :mod:`essence.metrics.robustness`). ``difficulty`` selects the
noise level of the noise sequences (1, 2, 3 -> separate stored sets in the original); for the others it is
the evaluation stride and does not change the frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from essence.core.registry import Registry
from essence.corruptions import ops

__all__ = ["Perturbation", "PERTURBATIONS", "TEST_PERTURBATIONS", "perturbation_sequence"]


@dataclass(frozen=True)
class Perturbation:
    name: str
    frames: int
    noise: bool          # compared with frame 0 (True) or frame to frame (False)
    geometric: bool      # acts on the uncropped input
    test: bool           # one of the 10 test perturbations (else validation)


PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")
for _p in [Perturbation("gaussian_noise", 31, True, False, True), Perturbation("shot_noise", 31, True, False, True),
           Perturbation("motion_blur", 31, False, False, True), Perturbation("zoom_blur", 31, False, True, True),
           Perturbation("snow", 31, False, False, True), Perturbation("brightness", 31, False, False, True),
           Perturbation("translate", 41, False, True, True), Perturbation("rotate", 31, False, True, True),
           Perturbation("tilt", 31, False, True, True), Perturbation("scale", 31, False, True, True),
           Perturbation("speckle_noise", 31, True, False, False),
           Perturbation("gaussian_blur", 31, False, False, False),
           Perturbation("spatter", 31, False, False, False), Perturbation("shear", 31, False, True, False)]:
    PERTURBATIONS.register(_p.name, _p)
TEST_PERTURBATIONS = tuple(n for n in PERTURBATIONS if PERTURBATIONS.get(n).test)


def _u8(x: torch.Tensor) -> torch.Tensor:
    """PNG frame: np.uint8(255 * clip(x)) (truncation)."""
    return torch.floor(x.clamp(0, 1) * 255 + 1e-4) / 255


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = size
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., top:top + th, left:left + tw]


def _affine(x: torch.Tensor, *, angle=0.0, translate=(0, 0), scale=1.0, shear=0.0) -> torch.Tensor:
    """torchvision ``F.affine`` (bilinear, zero fill), the same transform for every image of the batch."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.affine(x, angle=float(angle), translate=[int(translate[0]), int(translate[1])], scale=float(scale),
                     shear=[float(shear), 0.0], interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _tilt(x: torch.Tensor, deg: float) -> torch.Tensor:
    """``cv2.warpPerspective(x, P2 T RX RY P1, (w, h))`` with phi = theta = deg, focal length = the diagonal."""
    n, c, h, w = x.shape
    phi = theta = math.radians(deg)
    f = math.sqrt(w**2 + h**2)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0], [0, math.sin(theta), math.cos(theta), 0],
                   [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0], [math.sin(phi), 0, math.cos(phi), 0],
                   [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    inv = np.linalg.inv(p2 @ t @ rx @ ry @ p1)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    src = inv @ np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    sx, sy = src[0] / src[2], src[1] / src[2]
    grid = torch.from_numpy(np.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1))
    grid = grid.reshape(1, h, w, 2).to(x.device, x.dtype).expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def perturbation_sequence(x: torch.Tensor, name: str, difficulty: int = 1, *, crop: tuple[int, int] | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Frames (N, T, C, h, w) in [0, 1] of perturbation ``name`` for each image of x (N, C, H, W) in [0, 1]."""
    p = PERTURBATIONS.get(name)
    if difficulty not in (1, 2, 3):
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float batch (N, C, H, W) in [0, 1], got {x.dtype} {tuple(x.shape)}")
    crop = tuple(crop) if crop is not None else tuple(x.shape[-2:])
    if crop[0] > x.shape[-2] or crop[1] > x.shape[-1]:
        raise ValueError(f"crop {crop} is larger than the images {tuple(x.shape[-2:])}")
    gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    n, c = x.shape[:2]
    frames: list[torch.Tensor] = []
    if p.geometric:
        if name == "zoom_blur":
            avg = _center_crop(x, crop).clone()
            frames.append(_u8(avg))
            for i in range(1, 31):
                avg = avg + _center_crop(_affine(x, scale=1 + 0.004 * i), crop)
                frames.append(_u8(avg / (i + 1)))
        else:
            for i in range(p.frames):
                if name == "translate":
                    y = _affine(x, translate=(i - 20, 0))
                elif name == "rotate":
                    y = _affine(x, angle=i - 15)
                elif name == "scale":
                    y = _affine(x, scale=(i * 2.5 + 40) / 100.0)
                elif name == "shear":
                    y = _affine(x, shear=i - 15)
                else:  # tilt
                    y = _tilt(x, i - 15)
                frames.append(_u8(_center_crop(y, crop)))
        return torch.stack(frames, 1)
    x = _u8(_center_crop(x, crop))
    h, w = crop
    if p.noise:
        frames.append(x)
        for _ in range(1, 31):
            if name == "gaussian_noise":
                s = (0.03, 0.05, 0.08)[difficulty - 1]
                y = x + s * torch.randn(x.shape, generator=gen).to(x.device)
            elif name == "shot_noise":
                lam = (300, 120, 60)[difficulty - 1]
                y = torch.poisson(x.cpu().double() * lam, generator=gen).to(x.device, x.dtype) / lam
            else:  # speckle_noise
                s = (0.05, 0.10, 0.15)[difficulty - 1]
                y = x + x * s * torch.randn(x.shape, generator=gen).to(x.device)
            frames.append(_u8(y))
    elif name == "brightness":
        hsv = ops.rgb_to_hsv(x) if c == 3 else None
        for i in range(31):
            cst = (i - 15) * 2 / 100.0
            if c == 1:
                frames.append(_u8(x + cst))
            else:
                v = (hsv[:, 2] + cst).clamp(0, 1)
                frames.append(_u8(ops.hsv_to_rgb(torch.stack([hsv[:, 0], hsv[:, 1], v], 1))))
    elif name == "motion_blur":
        for i in range(31):
            y = ops.motion_blur(x, 10, 3, [(i - 30) * 4.0] * n)
            frames.append(torch.round(y.clamp(0, 1) * 255) / 255)
    elif name == "gaussian_blur":
        for i in range(31):
            frames.append(_u8(ops.gaussian_filter(x, 0.25 + 0.035 * i, truncate=6.0)))
    elif name == "snow":
        layer = 0.05 + 0.3 * torch.randn((n, 1, h, w), generator=gen, dtype=torch.float64).to(x.device)
        layer = ops.clipped_zoom(layer, 3)
        layer = torch.where(layer < 0.5, torch.zeros_like(layer), layer)
        layer = torch.floor(layer.clamp(0, 1) * 255).to(x.dtype) / 255
        gray = ops.rgb_to_gray(x) if c == 3 else x
        base = 0.85 * x + 0.15 * torch.maximum(x, gray * 1.5 + 0.5)
        for i in range(31):
            moving = torch.round(ops.motion_blur(layer, 14, 4, [i * 4.0 - 150] * n).clamp(0, 1) * 255) / 255
            frames.append(_u8(base + moving + torch.flip(moving, (-2, -1))))
    elif name == "spatter":
        liquid = (0.65 + 0.27 * torch.randn((n, h, w), generator=gen, dtype=torch.float64))
        liquid = ops.gaussian_filter(liquid, 3.7)
        liquid = torch.where(liquid < 0.69, torch.zeros_like(liquid), liquid).numpy()
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255], dtype=x.dtype, device=x.device)[None, :, None, None]
        kernel = np.array([0.05, 0.1, 0.15, 0.7])
        for _ in range(31):
            masks = np.stack([ops.spatter_water_mask(lay, 0.6) for lay in liquid])
            m = torch.from_numpy(masks)[:, None].to(x.device, x.dtype)
            add = m * color
            frames.append(_u8(x + (0.2989 * add[:, :1] + 0.587 * add[:, 1:2] + 0.114 * add[:, 2:]) if c == 1 else
                              x + add))
            liquid = np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="same"), 1, liquid)
    return torch.stack(frames, 1)
