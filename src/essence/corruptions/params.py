"""Severity tables of the corruptions, transcribed from the official generators (hendrycks/robustness).

Three parameter sets, one per original script:

- ``imagenet``: ``ImageNet-C/create_c/make_imagenet_c.py`` (224x224 crops).
- ``tiny``: ``ImageNet-C/create_c/make_tinyimagenet_c.py`` (64x64, Tiny-ImageNet-C).
- ``cifar``: ``ImageNet-C/create_c/make_cifar_c.py`` (32x32, CIFAR-10-C).

``param_set="auto"`` picks by image size: the larger side <= 48 -> ``cifar``, <= 128 -> ``tiny``, else
``imagenet`` (the original scripts are one per dataset; this threshold reproduces that choice for those
datasets and is used for every other size, e.g. 28x28 Fashion-MNIST gets the CIFAR table).

Pixel-valued constants (blur radii, motion-blur lengths) are absolute, as in the originals and in
``imagecorruptions``. Only the elastic-transform constants scale with the image (they are multiples of the
image size in the originals; ImageNet's "244" typo is kept: ``244 * min(H, W) / 224``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PARAMS", "PARAM_SETS", "REFERENCE_SIZE", "ELASTIC_SCALE", "choose_param_set", "get_params",
           "FROST_RESIZE"]

PARAM_SETS = ("imagenet", "tiny", "cifar")
REFERENCE_SIZE = {"imagenet": 224, "tiny": 64, "cifar": 32}
# elastic constants are multiples of this number in each script ("244 should have been 224" in ImageNet-C)
ELASTIC_SCALE = {"imagenet": 244.0, "tiny": 64.0, "cifar": 32.0}
# frost textures are downscaled by cv2.resize(fx=fy=...) in the small-image scripts
FROST_RESIZE = {"imagenet": 1.0, "tiny": 0.3, "cifar": 0.2}


def _zoom(*ranges: tuple[float, float, float]) -> list[tuple[float, ...]]:
    # np.arange exactly as the scripts call it (float steps, so the end points follow numpy's rounding)
    return [tuple(float(z) for z in np.arange(a, b, s)) for a, b, s in ranges]


PARAMS: dict[str, dict[str, list]] = {
    "imagenet": {
        "gaussian_noise": [.08, .12, .18, .26, .38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [.03, .06, .09, .17, .27],
        "defocus_blur": [(3, .1), (4, .5), (6, .5), (8, .5), (10, .5)],
        "glass_blur": [(.7, 1, 2), (.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": _zoom((1, 1.11, .01), (1, 1.16, .01), (1, 1.21, .02), (1, 1.26, .02), (1, 1.31, .03)),
        "snow": [(.1, .3, 3, .5, 10, 4, .8), (.2, .3, 2, .5, 12, 4, .7), (.55, .3, 4, .9, 12, 8, .7),
                 (.55, .3, 4.5, .85, 12, 8, .65), (.55, .3, 2.5, .85, 12, 12, .55)],
        "frost": [(1, .4), (.8, .6), (.7, .7), (.65, .7), (.6, .75)],
        "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],
        "brightness": [.1, .2, .3, .4, .5],
        "contrast": [.4, .3, .2, .1, .05],
        # multiples of ELASTIC_SCALE: (alpha, sigma, affine jitter)
        "elastic_transform": [(2, .7, .1), (2, .08, .2), (.05, .01, .02), (.07, .01, .02), (.12, .01, .02)],
        "pixelate": [.6, .5, .4, .3, .25],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "speckle_noise": [.15, .2, .35, .45, .6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "spatter": [(.65, .3, 4, .69, .6, 0), (.65, .3, 3, .68, .6, 0), (.65, .3, 2, .68, .5, 0),
                    (.65, .3, 1, .65, 1.5, 1), (.67, .4, 1, .65, 1.5, 1)],
        "saturate": [(.3, 0), (.1, 0), (2, 0), (5, .1), (20, .2)],
    },
    "tiny": {
        "gaussian_noise": [.04, .08, .12, .15, .18],
        "shot_noise": [250, 100, 50, 30, 15],
        "impulse_noise": [.01, .02, .05, .08, .14],
        "defocus_blur": [(.5, .6), (1, .1), (1.5, .1), (2.5, .01), (3, .1)],
        "glass_blur": [(.1, 1, 1), (.5, 1, 1), (.6, 1, 2), (.7, 2, 1), (.9, 2, 2)],
        "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
        "zoom_blur": _zoom((1, 1.06, .01), (1, 1.11, .01), (1, 1.16, .01), (1, 1.21, .01), (1, 1.26, .01)),
        "snow": [(.1, .2, 1, .6, 8, 3, .8), (.1, .2, 1, .5, 10, 4, .8), (.15, .3, 1.75, .55, 10, 4, .7),
                 (.25, .3, 2.25, .6, 12, 6, .65), (.3, .3, 1.25, .65, 14, 12, .6)],
        "frost": [(1, .3), (.9, .4), (.8, .45), (.75, .5), (.7, .55)],
        "fog": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
        "brightness": [.1, .2, .3, .4, .5],
        "contrast": [.4, .3, .2, .1, .05],
        "elastic_transform": [(0, 0, .08), (.05, .3, .06), (.1, .08, .06), (.1, .03, .03), (.16, .03, .02)],
        "pixelate": [.9, .8, .7, .6, .5],
        "jpeg_compression": [65, 58, 50, 40, 25],
        "speckle_noise": [.15, .2, .25, .3, .35],
        "gaussian_blur": [.5, .75, 1, 1.25, 1.5],
        "spatter": [(.62, .1, .7, .7, .6, 0), (.65, .1, .8, .7, .6, 0), (.65, .3, 1, .69, .6, 0),
                    (.65, .1, .7, .68, .6, 1), (.65, .1, .5, .67, .6, 1)],
        "saturate": [(.3, 0), (.1, 0), (2, 0), (5, .1), (30, .2)],
    },
    "cifar": {
        "gaussian_noise": [.04, .06, .08, .09, .10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [.01, .02, .03, .05, .07],
        "defocus_blur": [(.3, .4), (.4, .5), (.5, .6), (1, .2), (1.5, .1)],
        "glass_blur": [(.05, 1, 1), (.25, 1, 1), (.4, 1, 1), (.25, 1, 2), (.4, 1, 2)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": _zoom((1, 1.06, .01), (1, 1.11, .01), (1, 1.16, .01), (1, 1.21, .01), (1, 1.26, .01)),
        "snow": [(.1, .2, 1, .6, 8, 3, .95), (.1, .2, 1, .5, 10, 4, .9), (.15, .3, 1.75, .55, 10, 4, .9),
                 (.25, .3, 2.25, .6, 12, 6, .85), (.3, .3, 1.25, .65, 14, 12, .8)],
        "frost": [(1, .2), (1, .3), (.9, .4), (.85, .4), (.75, .45)],
        "fog": [(.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)],
        "brightness": [.05, .1, .15, .2, .3],
        "contrast": [.75, .5, .4, .3, .15],
        "elastic_transform": [(0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05), (.1, .03, .03)],
        "pixelate": [.95, .9, .85, .75, .65],
        "jpeg_compression": [80, 65, 58, 50, 40],
        "speckle_noise": [.06, .1, .12, .16, .2],
        "gaussian_blur": [.4, .6, .7, .8, 1],
        "spatter": [(.62, .1, .7, .7, .5, 0), (.65, .1, .8, .7, .5, 0), (.65, .3, 1, .69, .5, 0),
                    (.65, .1, .7, .69, .6, 1), (.65, .1, .5, .68, .6, 1)],
        "saturate": [(.3, 0), (.1, 0), (1.5, 0), (2, .1), (2.5, .2)],
    },
}


def choose_param_set(height: int, width: int, param_set: str = "auto") -> str:
    """The parameter set for an image of this size (``auto``), or ``param_set`` itself after validation."""
    if param_set == "auto":
        side = max(height, width)
        return "cifar" if side <= 48 else "tiny" if side <= 128 else "imagenet"
    if param_set not in PARAMS:
        raise ValueError(f"param_set must be 'auto' or one of {list(PARAMS)}, got {param_set!r}")
    return param_set


def get_params(name: str, severity: int, param_set: str):
    """The severity's parameters of corruption ``name`` in ``param_set`` (severity is 1-based)."""
    return PARAMS[param_set][name][severity - 1]
