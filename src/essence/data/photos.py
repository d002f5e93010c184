"""Natural photos bundled with scikit-image (astronaut, chelsea, coffee, rocket, ...), loaded offline.

Only images that ship inside the scikit-image wheel are offered (never the ones it would fetch with pooch).
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_photo", "photo_names"]

INSTALL = "pip install scikit-image"
# Photos inside the scikit-image wheel (skimage/data/<file>): name -> file. Nothing is fetched.
_PHOTOS = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg",
           "hubble_deep_field": "hubble_deep_field.jpg", "immunohistochemistry": "ihc.png", "retina": "retina.jpg",
           "motorcycle_left": "motorcycle_left.png", "camera": "camera.png", "coins": "coins.png",
           "moon": "moon.png", "page": "page.png", "text": "text.png", "horse": "horse.png", "grass": "grass.png",
           "gravel": "gravel.png", "brick": "brick.png"}


def _skimage_data():
    try:
        import skimage.data
    except ImportError as err:
        raise ImportError(f"natural photos need scikit-image: {INSTALL} (or pip install 'essence[vision]')") from err
    return skimage.data


def photo_names() -> list[str]:
    """Names of the bundled photos that load offline on this install."""
    import os

    folder = os.path.dirname(_skimage_data().__file__)
    return [n for n, f in _PHOTOS.items() if os.path.exists(os.path.join(folder, f))]


def load_photo(name: str, *, rgb: bool = True) -> np.ndarray:
    """One bundled photo as uint8, (H, W, 3) RGB when ``rgb`` (grayscale photos are stacked to 3 channels)."""
    from essence.core.registry import suggest

    names = photo_names()
    if name not in names:
        raise ValueError(f"unknown photo {name!r}{suggest(name, names)}; bundled photos: {', '.join(names)}")
    img = np.asarray(getattr(_skimage_data(), name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8) if img.dtype.kind == "f" else img.astype(np.uint8)
    if rgb:
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        elif img.shape[-1] == 4:
            img = img[..., :3]
    return np.ascontiguousarray(img)
