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


def test_package_path_precedence_and_errors(tmp_path, monkeypatch):
    from essence.data import package_path

    found = package_path("essence", "data", "cache.py", what="x", install="pip install essence")
    assert found.name == "cache.py" and found.is_file()
    (tmp_path / "w.bin").write_bytes(b"1")
    monkeypatch.setenv("ESSENCE_TEST_FILE", str(tmp_path / "w.bin"))
    assert package_path("essence", "nothing", what="x", install="i", env="ESSENCE_TEST_FILE") == tmp_path / "w.bin"
    with pytest.raises(FileNotFoundError, match="weights not found"):
        package_path("essence", what="weights", install="i", path=tmp_path / "missing.bin")
    with pytest.raises(FileNotFoundError, match="Install it with: pip install no-such-pkg"):
        package_path("no_such_pkg_xyz", "f", what="the weights", install="pip install no-such-pkg")
    with pytest.raises(FileNotFoundError, match="looked in"):
        package_path("essence", "no_such_file.bin", what="the weights", install="pip install essence")
