"""The imagecorruptions drop-in: names, order, signatures, and the same pixels as essence's corrupt."""

from __future__ import annotations

import numpy as np
import pytest

from essence.corruptions import corrupt as ess_corrupt
from essence.corruptions.compat import corrupt, get_corruption_names

IMG = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def test_names_and_order_match_imagecorruptions():
    assert get_corruption_names()[:3] == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert get_corruption_names("validation") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert len(get_corruption_names("all")) == 19
    assert get_corruption_names("digital") == ["contrast", "elastic_transform", "pixelate", "jpeg_compression"]
    from essence.corruptions.reference import load_imagecorruptions

    ic = load_imagecorruptions()
    if ic is not None:
        for subset in ("common", "validation", "all", "noise", "blur", "weather", "digital"):
            assert get_corruption_names(subset) == ic.get_corruption_names(subset)
    with pytest.raises(ValueError, match="subset"):
        get_corruption_names("extra")


def test_corrupt_signature_and_number():
    y = corrupt(IMG, corruption_name="contrast", severity=2)
    assert y.dtype == np.uint8 and y.shape == IMG.shape
    assert np.array_equal(y, corrupt(IMG, severity=2, corruption_number=11))          # 11 = contrast
    assert np.array_equal(y, ess_corrupt(IMG, "contrast", 2, param_set="imagenet"))
    assert np.array_equal(corrupt(IMG, 3, "fog", seed=1), corrupt(IMG, 3, "fog", seed=1))
    grey = IMG[..., :1]
    assert corrupt(grey, 1, "brightness").shape == grey.shape
    with pytest.raises(ValueError, match="corruption_number"):
        corrupt(IMG, 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(IMG, 0, "fog")
