"""ImageNet-P: perturbation sequences (``ImageNet-P/create_p/make_imagenet_p.py``), batched in torch.

``perturbation_sequence(x, name, difficulty)`` turns a batch (N, C, H, W) in [0, 1] into frames
(N, T, C, h, w) in [0, 1], quantised to 8 bits like the PNG frames of the original. Geometric perturbations
act on the whole input and the frames are centre crops of size ``crop`` (ImageNet-P: Resize(256) input,
crop 224, so new content slides in); other perturbations crop first. The original stores the frames as
MP4 (libx264); that lossy step is not reproduced (frames stay exact).

Parameters per ``param_set`` (:data:`P_PARAMS`, transcribed from ``make_imagenet_p.py``,
``make_tinyimagenet_p.py`` and ``make_cifar_p.py``; ``auto`` picks by the crop size as for the corruptions):
CIFAR-10-P moves 1 px per frame over 16 translate frames and uses 21 motion-blur frames, smaller noise and
brightness steps, a 2x snow zoom and a narrower scale range than ImageNet-P.

Frame counts: 31 (frame 0 = clean for the noise sequences), translate 41 / 31 / 16 (ImageNet / Tiny /
CIFAR), motion blur 21 in CIFAR-10-P. Noise sequences are compared
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

__all__ = ["Perturbation", "PERTURBATIONS", "TEST_PERTURBATIONS", "perturbation_sequence", "P_PARAMS",
           "frame_count"]


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

# The original scripts' constants, frame index i (noise: per difficulty 1, 2, 3).
P_PARAMS: dict[str, dict[str, object]] = {
    "imagenet": {
        "gaussian_noise": (0.03, 0.05, 0.08), "shot_noise": (300, 120, 60), "speckle_noise": (0.05, 0.10, 0.15),
        "motion_blur": dict(frames=31, radius=10, sigma=3, angle0=-30, angle_step=4.0),
        "snow": dict(loc=0.05, scale=0.3, zoom=3, thresh=0.5, radius=14, sigma=4, blend=0.85),
        "brightness_step": 0.02, "translate": dict(frames=41, center=20), "tilt_step": 1.0,
        "scale": (2.5, 40), "gaussian_blur": (0.25, 0.035, 6.0),
        "spatter": dict(loc=0.65, scale=0.27, sigma=3.7, thresh=0.69, kernel=(0.05, 0.1, 0.15, 0.7)),
    },
    "tiny": {
        "gaussian_noise": (0.025, 0.05, 0.075), "shot_noise": (500, 250, 125), "speckle_noise": (0.05, 0.10, 0.15),
        "motion_blur": dict(frames=31, radius=14, sigma=3, angle0=-30, angle_step=5.0),
        "snow": dict(loc=0.05, scale=0.28, zoom=2, thresh=0.5, radius=10, sigma=2.5, blend=0.85),
        "brightness_step": 0.02, "translate": dict(frames=31, center=15), "tilt_step": 1.0,
        "scale": (2.5, 40), "gaussian_blur": (0.35, 0.014, 7.0),
        "spatter": dict(loc=0.6, scale=0.25, sigma=1.75, thresh=0.7, kernel=(0.2, 0.8)),
    },
    "cifar": {
        "gaussian_noise": (0.02, 0.04, 0.06), "shot_noise": (700, 400, 200), "speckle_noise": (0.05, 0.07, 0.10),
        "motion_blur": dict(frames=21, radius=6, sigma=1.8, angle0=-20, angle_step=9.0),
        "snow": dict(loc=0.05, scale=0.3, zoom=2, thresh=0.5, radius=10, sigma=2, blend=0.85),
        "brightness_step": 0.015, "translate": dict(frames=16, center=7), "tilt_step": 0.75,
        "scale": (2.0, 70), "gaussian_blur": (0.3, 0.015, 7.0),
        "spatter": dict(loc=0.6, scale=0.265, sigma=1.75, thresh=0.7, kernel=(0.2, 0.8)),
    },
}


def _pset(param_set: str, crop: tuple[int, int]) -> str:
    from essence.corruptions.params import choose_param_set

    return choose_param_set(crop[0], crop[1], param_set)


def frame_count(name: str, param_set: str = "imagenet") -> int:
    """Frames of perturbation ``name`` in ``param_set`` (translate and CIFAR's motion blur differ)."""
    PERTURBATIONS.get(name)
    table = P_PARAMS[_pset(param_set, (224, 224))]
    if name in ("translate", "motion_blur"):
        return int(table[name]["frames"])
    return PERTURBATIONS.get(name).frames


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
                          generator: torch.Generator | None = None, param_set: str = "auto") -> torch.Tensor:
    """Frames (N, T, C, h, w) in [0, 1] of perturbation ``name`` for each image of x (N, C, H, W) in [0, 1].

    ``param_set``: ``auto`` (by the crop size: <= 48 px CIFAR-10-P, <= 128 Tiny-ImageNet-P, else ImageNet-P),
    ``imagenet``, ``tiny`` or ``cifar``."""
    p = PERTURBATIONS.get(name)
    if difficulty not in (1, 2, 3):
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float batch (N, C, H, W) in [0, 1], got {x.dtype} {tuple(x.shape)}")
    crop = tuple(crop) if crop is not None else tuple(x.shape[-2:])
    if crop[0] > x.shape[-2] or crop[1] > x.shape[-1]:
        raise ValueError(f"crop {crop} is larger than the images {tuple(x.shape[-2:])}")
    gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    P = P_PARAMS[_pset(param_set, crop)]
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
            frames_n = P["translate"]["frames"] if name == "translate" else p.frames
            for i in range(frames_n):
                if name == "translate":
                    y = _affine(x, translate=(i - P["translate"]["center"], 0))
                elif name == "rotate":
                    y = _affine(x, angle=i - 15)
                elif name == "scale":
                    a, b = P["scale"]
                    y = _affine(x, scale=(i * a + b) / 100.0)
                elif name == "shear":
                    y = _affine(x, shear=i - 15)
                else:  # tilt
                    y = _tilt(x, P["tilt_step"] * (i - 15))
                frames.append(_u8(_center_crop(y, crop)))
        return torch.stack(frames, 1)
    x = _u8(_center_crop(x, crop))
    h, w = crop
    if p.noise:
        frames.append(x)
        for _ in range(1, 31):
            if name == "gaussian_noise":
                s = P["gaussian_noise"][difficulty - 1]
                y = x + s * torch.randn(x.shape, generator=gen).to(x.device)
            elif name == "shot_noise":
                lam = P["shot_noise"][difficulty - 1]
                y = torch.poisson(x.cpu().double() * lam, generator=gen).to(x.device, x.dtype) / lam
            else:  # speckle_noise
                s = P["speckle_noise"][difficulty - 1]
                y = x + x * s * torch.randn(x.shape, generator=gen).to(x.device)
            frames.append(_u8(y))
    elif name == "brightness":
        hsv = ops.rgb_to_hsv(x) if c == 3 else None
        for i in range(31):
            cst = (i - 15) * P["brightness_step"]
            if c == 1:
                frames.append(_u8(x + cst))
            else:
                v = (hsv[:, 2] + cst).clamp(0, 1)
                frames.append(_u8(ops.hsv_to_rgb(torch.stack([hsv[:, 0], hsv[:, 1], v], 1))))
    elif name == "motion_blur":
        mb = P["motion_blur"]
        for i in range(mb["frames"]):
            y = ops.motion_blur(x, mb["radius"], mb["sigma"], [(i + mb["angle0"]) * mb["angle_step"]] * n)
            frames.append(torch.round(y.clamp(0, 1) * 255) / 255)
    elif name == "gaussian_blur":
        s0, ds, trunc = P["gaussian_blur"]
        for i in range(31):
            frames.append(_u8(ops.gaussian_filter(x, s0 + ds * i, truncate=trunc)))
    elif name == "snow":
        sp = P["snow"]
        layer = sp["loc"] + sp["scale"] * torch.randn((n, 1, h, w), generator=gen, dtype=torch.float64).to(x.device)
        layer = ops.clipped_zoom(layer, sp["zoom"])
        layer = torch.where(layer < sp["thresh"], torch.zeros_like(layer), layer)
        layer = torch.floor(layer.clamp(0, 1) * 255).to(x.dtype) / 255
        gray = ops.rgb_to_gray(x) if c == 3 else x
        base = sp["blend"] * x + (1 - sp["blend"]) * torch.maximum(x, gray * 1.5 + 0.5)
        for i in range(31):
            moving = torch.round(ops.motion_blur(layer, sp["radius"], sp["sigma"], [i * 4.0 - 150] * n)
                                 .clamp(0, 1) * 255) / 255
            frames.append(_u8(base + moving + torch.flip(moving, (-2, -1))))
    elif name == "spatter":
        sp = P["spatter"]
        liquid = (sp["loc"] + sp["scale"] * torch.randn((n, h, w), generator=gen, dtype=torch.float64))
        liquid = ops.gaussian_filter(liquid, sp["sigma"])
        liquid = torch.where(liquid < sp["thresh"], torch.zeros_like(liquid), liquid).numpy()
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255], dtype=x.dtype, device=x.device)[None, :, None, None]
        kernel = np.array(sp["kernel"])
        for _ in range(31):
            masks = np.stack([ops.spatter_water_mask(lay, 0.6) for lay in liquid])
            m = torch.from_numpy(masks)[:, None].to(x.device, x.dtype)
            add = m * color
            frames.append(_u8(x + (0.2989 * add[:, :1] + 0.587 * add[:, 1:2] + 0.114 * add[:, 2:]) if c == 1 else
                              x + add))
            liquid = np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="same"), 1, liquid)
    return torch.stack(frames, 1)
