"""A drop-in for ``imagecorruptions`` (bethgelab): the same two functions, the same signatures, the same order.

    from essence.corruptions.compat import corrupt, get_corruption_names   # instead of: from imagecorruptions ...
    for i, name in enumerate(get_corruption_names()):
        y = corrupt(image, corruption_name=name, severity=3)                # or corruption_number=i

As imagecorruptions, the ImageNet-C parameter table is used at every image size (``param_set="auto"`` picks the
CIFAR / Tiny-ImageNet table by size instead) and the randomness is fresh on every call unless ``seed`` is
given. Differences: the ImageNet-C algorithms themselves (imagecorruptions' elastic transform is another one;
glass blur copies as the original's loop), images from 8 px up (imagecorruptions: 32), and a grey (H, W) image
stays (H, W) (imagecorruptions returns 3 channels).
"""

from __future__ import annotations

import numpy as np

from essence.corruptions.api import corrupt as _corrupt
from essence.corruptions.functional import ORDER

__all__ = ["corrupt", "get_corruption_names"]

_SUBSETS = {"common": ORDER[:15], "validation": ORDER[15:], "all": ORDER, "noise": ORDER[0:3],
            "blur": ORDER[3:7], "weather": ORDER[7:11], "digital": ORDER[11:15]}


def get_corruption_names(subset: str = "common") -> list[str]:
    """Names in imagecorruptions' order: ``common`` (15), ``validation`` (4), ``all`` (19), ``noise``, ``blur``,
    ``weather``, ``digital``."""
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be one of {list(_SUBSETS)}, got {subset!r}")
    return list(_SUBSETS[subset])


def corrupt(image: np.ndarray, severity: int = 1, corruption_name: str | None = None, corruption_number: int = -1,
            *, seed: int | None = None, param_set: str = "imagenet") -> np.ndarray:
    """The image (uint8 (H, W) or (H, W, C), C = 1 or 3) corrupted by ``corruption_name`` (or the
    ``corruption_number``-th of ``get_corruption_names('all')``, 0..18) at ``severity`` (1..5)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if corruption_name is None:
        if isinstance(corruption_number, bool) or not isinstance(corruption_number, (int, np.integer)) \
                or not 0 <= corruption_number < len(ORDER):
            raise ValueError(f"give corruption_name, or corruption_number in 0..{len(ORDER) - 1} "
                             f"(got {corruption_number!r})")
        corruption_name = ORDER[int(corruption_number)]
    if image.ndim == 3 and image.shape[-1] == 1:
        return _corrupt(image[..., 0], corruption_name, severity, seed=seed, param_set=param_set)[..., None]
    return _corrupt(image, corruption_name, severity, seed=seed, param_set=param_set)
