import pytest

from essence.data import load_photo, photo_names


def test_bundled_photos_load_offline():
    names = photo_names()
    assert "astronaut" in names
    img = load_photo("astronaut")
    assert img.shape == (512, 512, 3) and img.dtype.name == "uint8"
    assert load_photo("camera").shape[-1] == 3  # grayscale stacked
    assert load_photo("horse").max() == 255  # boolean image scaled
    with pytest.raises(ValueError, match="did you mean 'astronaut'"):
        load_photo("astronot")
