"""Same seed, same pixels: an image's corruption depends only on (seed, its index), not on the batch size,
the CPU chunking, the input type or the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essence.corruptions import CORRUPTIONS, CorruptedDataset, api, corrupt, corrupt_tensor, corruption_names
from essence.corruptions.rng import ImageRNG, image_seeds

RANDOM = [n for n in corruption_names("all") if CORRUPTIONS.get(n).random]


def _batch(n=7, c=3, h=32, w=32, seed=0):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.integers(0, 256, (n, c, h, w), dtype=np.uint8))


def test_every_random_corruption_is_listed():
    assert set(RANDOM) == {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
                           "frost", "fog", "elastic_transform", "speckle_noise", "spatter"}


@pytest.mark.parametrize("name", RANDOM)
def test_batch_size_and_chunking_do_not_change_the_pixels(name, monkeypatch):
    x = _batch()
    whole = corrupt(x, name, 3, seed=11)
    # one image at a time, with its index
    singles = torch.cat([corrupt(x[i:i + 1], name, 3, seed=11, start=i) for i in range(len(x))])
    assert torch.equal(whole, singles)
    # batches of 3 (uneven), and forced CPU chunks of 2 images inside one call
    threes = torch.cat([corrupt(x[i:i + 3], name, 3, seed=11, start=i) for i in range(0, len(x), 3)])
    assert torch.equal(whole, threes)
    monkeypatch.setattr(api, "CPU_CHUNK_ELEMENTS", 2 * x[0].numel())
    assert torch.equal(whole, corrupt(x, name, 3, seed=11))
    # the float path draws the same (uint8 levels in, truncated out)
    f = corrupt_tensor(x.float() / 255, name, 3, seed=11)
    assert torch.equal(whole, api._to_uint8(f.clone()))
    # a different seed changes it; a different index changes it
    assert not torch.equal(whole, corrupt(x, name, 3, seed=12))
    assert not torch.equal(whole[1:2], corrupt(x[1:2], name, 3, seed=11, start=0))


@pytest.mark.parametrize("name", ["gaussian_noise", "frost", "elastic_transform"])
def test_grey_and_numpy_inputs_follow_the_same_streams(name):
    x = _batch(5, 1, 28, 28)
    whole = corrupt(x, name, 2, seed=3)
    arr = x[:, 0].numpy()
    for i in range(len(x)):
        np.testing.assert_array_equal(corrupt(arr[i], name, 2, seed=3, start=i), whole[i, 0].numpy())


def test_corrupted_dataset_equals_the_batch_call():
    x = _batch(6, 3, 32, 32).permute(0, 2, 3, 1).numpy()          # (N, H, W, C) uint8
    data = [(x[i], i % 3) for i in range(len(x))]
    ds = CorruptedDataset(data, "snow", 4, seed=9)
    whole = corrupt(x, "snow", 4, seed=9)
    for i in range(len(x)):
        img, label = ds[i]
        np.testing.assert_array_equal(img, whole[i])
        assert label == i % 3


def test_image_seeds_are_a_fixed_hash():
    s = image_seeds(0, [0, 1, 2])
    assert s.dtype == np.int64 and len(set(s.tolist())) == 3 and (s >= 0).all()
    # frozen values: changing the hash changes every stored corrupted set
    assert image_seeds(7, [0, 5]).tolist() == [5802186646602307193, 7588064543947926086]
    assert image_seeds(7, [5]).tolist() == [image_seeds(7, [0, 5])[1]]
    assert image_seeds(8, [5]).tolist() != image_seeds(7, [5]).tolist()
    with pytest.raises(ValueError, match="seed must be"):
        ImageRNG.from_seed(-1, 3)
    with pytest.raises(ValueError, match="start must be"):
        ImageRNG.from_seed(1, 3, start=-2)


def test_slices_share_the_streams():
    rng = ImageRNG.from_seed(5, 4)
    a = rng[1:3].randn((2,))
    b = ImageRNG.from_seed(5, 4).randn((2,))[1:3]
    assert torch.equal(a, b)
    # the streams advanced: a second draw continues them
    c = rng.randn((2,))[1:3]
    assert not torch.equal(c, a)


def test_grey_batches_need_their_channel_axis():
    grey = torch.zeros((5, 16, 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        corrupt(grey, "fog", 1, seed=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        corrupt(np.zeros((16, 16, 5), np.uint8), "fog", 1, seed=0)
    y = corrupt(grey[:, None], "fog", 1, seed=0)
    assert y.shape == (5, 1, 16, 16)


@pytest.mark.parametrize("bad", [0, 6, -1, 2.5, True])
def test_every_entry_point_checks_severity(bad):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="severity"):
        corrupt_tensor(x, "fog", bad, seed=0)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "fog", bad, seed=0)
    with pytest.raises(ValueError, match="severity"):
        CorruptedDataset([x[0]], "fog", bad)


def test_jpeg_storage_step_is_pillow_q85():
    import io

    from PIL import Image

    from essence.corruptions import jpeg_storage

    x = _batch(3, 3, 32, 40).permute(0, 2, 3, 1).contiguous().numpy()
    y = jpeg_storage(x)
    buf = io.BytesIO()
    Image.fromarray(x[1]).save(buf, format="JPEG", quality=85, optimize=True)
    np.testing.assert_array_equal(y[1], np.asarray(Image.open(buf)))
    assert not np.array_equal(y, x)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    assert torch.equal(jpeg_storage(t), torch.from_numpy(y).permute(0, 3, 1, 2))
    assert jpeg_storage(x[0, :, :, 0]).shape == (32, 40)                      # grey (H, W)
    with pytest.raises(ValueError, match="quality"):
        jpeg_storage(x, 0)


def test_corrupted_test_set_is_independent_of_batch_size():
    from essence.corruptions.evaluate import corrupted_test_set

    x = _batch(5, 3, 32, 32).permute(0, 2, 3, 1).contiguous().numpy()
    a = corrupted_test_set(x, ["gaussian_noise", "frost"], seed=4, batch_size=5, cache=False)
    b = corrupted_test_set(x, ["gaussian_noise", "frost"], seed=4, batch_size=2, cache=False)
    assert a.shape == (2, 5, 5, 3, 32, 32) and np.array_equal(a, b)
    assert not np.array_equal(a[0, 0], a[0, 1])                                  # severities differ
    j = corrupted_test_set(x, ["gaussian_noise"], seed=4, batch_size=5, cache=False, jpeg_quality=85)
    from essence.corruptions import jpeg_storage
    assert np.array_equal(j[0, 2], jpeg_storage(torch.from_numpy(a[0, 2])).numpy())


def test_grey_equals_channel_zero_of_equal_channel_rgb_non_square():
    """A grey image corrupts like an RGB image with three equal channels (same per-image streams), on a
    non-square size; frost and spatter convert their colours to grey and impulse noise flips per value, so
    those differ by design."""
    g = np.random.default_rng(0).integers(0, 256, (3, 40, 56), dtype=np.uint8)
    grey = torch.from_numpy(g)[:, None]
    rgb = grey.expand(-1, 3, -1, -1).contiguous()
    for name in corruption_names("all"):
        if name in ("frost", "spatter", "impulse_noise"):
            continue
        a, b = corrupt(grey, name, 3, seed=1), corrupt(rgb, name, 3, seed=1)
        assert a.shape == (3, 1, 40, 56)
        assert torch.equal(a[:, 0], b[:, 0]), name
