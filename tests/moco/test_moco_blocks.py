"""Shared blocks owned by the MoCo work: weighted kNN, linear probe, batched augmentation, small ResNets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from essence.core.config import Presets  # noqa: F401  (config machinery used by AugmentConfig)
from essence.metrics.knn import KNNAccuracy, knn_accuracy, knn_scores
from essence.metrics.linear_probe import linear_probe
from essence.moco.config import aug_v1, aug_v2
from essence.nn.augment import AugmentConfig, BatchAugment
from essence.nn.resnet import build_resnet


# ------------------------------------------------------------------------------------------------------ kNN
def _knn_reference(f, bank, labels, C, k, t):
    """Plain loops: for each query, its top-k cosine neighbours vote with weight exp(s / t)."""
    f, bank = F.normalize(f, dim=1), F.normalize(bank, dim=1)
    out = torch.zeros(f.shape[0], C, dtype=torch.float64)
    for i in range(f.shape[0]):
        sims = [(float(f[i] @ bank[j]), int(labels[j])) for j in range(bank.shape[0])]
        for s, y in sorted(sims, key=lambda p: -p[0])[:k]:
            out[i, y] += math.exp(s / t)
    return out


def test_knn_matches_reference():
    g = torch.Generator().manual_seed(0)
    bank, f = torch.randn(50, 6, generator=g), torch.randn(7, 6, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    scores = knn_scores(f, bank, labels, 4, k=10, t=0.1, chunk=3)
    torch.testing.assert_close(scores.double(), _knn_reference(f, bank, labels, 4, 10, 0.1), rtol=1e-4, atol=1e-4)
    test_y = scores.argmax(1)
    assert knn_accuracy(f, test_y, bank, labels, 4, k=10, t=0.1) == 1.0
    m = KNNAccuracy(bank, labels, 4, k=10, t=0.1)
    m.update(f[:3], test_y[:3])
    m.update(f[3:], (test_y[3:] + 1) % 4)
    assert m.compute() == pytest.approx(3 / 7)
    # k larger than the bank uses the whole bank
    torch.testing.assert_close(knn_scores(f, bank, labels, 4, k=500).double(),
                               _knn_reference(f, bank, labels, 4, 50, 0.1), rtol=1e-4, atol=1e-4)


def test_knn_bad_input():
    bank, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="same D"):
        knn_scores(torch.randn(2, 4), bank, labels, 3)
    with pytest.raises(ValueError, match="bank_labels must be in"):
        knn_scores(torch.randn(2, 3), bank, labels, 2)
    with pytest.raises(ValueError, match="empty"):
        knn_scores(torch.randn(2, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="NaN"):
        knn_scores(torch.full((2, 3), float("nan")), bank, labels, 3)


# ---------------------------------------------------------------------------------------------- linear probe
def test_linear_probe_separable_and_grid():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 5, generator=g) * 4
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + 0.3 * torch.randn(600, 5, generator=g)
    res = linear_probe(x[:500], y[:500], x[500:], y[500:], 3, epochs=5, lrs=(30.0,))
    assert res["test_top1"] > 0.95 and res["lr"] == 30.0
    # a label that depends on one of 20 dims: a vanishing lr stays near the random init, the grid picks lr 1
    x2 = torch.randn(600, 20, generator=g)
    y2 = (x2[:, 0] > 0).long()
    res = linear_probe(x2[:500], y2[:500], x2[500:], y2[500:], 2, epochs=3, lrs=(1e-6, 1.0))
    assert res["lr"] == 1.0 and res["val_top1"] > 0.85 and res["test_top1"] > 0.85
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(x.clone().fill_(float("nan")), y, x, y, 3)
    with pytest.raises(ValueError, match="dims"):
        linear_probe(x, y, x[:, :4], y, 3)


# --------------------------------------------------------------------------------------------- augmentation
def test_augment_identity_recipe_is_exact():
    cfg = AugmentConfig(size=28, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, brightness=0.0,
                        contrast=0.0, mean=(0.0,), std=(1.0,))
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(BatchAugment(cfg)(x), x, rtol=0, atol=1e-5)
    flip = BatchAugment(cfg.replace(hflip_p=1.0))(x)
    torch.testing.assert_close(flip, x.flip(-1), rtol=0, atol=1e-5)


def test_augment_full_crop_equals_antialiased_resize():
    """A full-image crop resampled to another size equals torchvision-style antialiased bilinear resizing (the
    evaluation images' path), shrinking and enlarging; antialias=False is plain bilinear sampling."""
    x = torch.rand(3, 1, 28, 28)
    base = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, brightness=0.0, contrast=0.0,
                mean=(0.0,), std=(1.0,))
    for size in (16, 40):
        ref = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        torch.testing.assert_close(BatchAugment(AugmentConfig(size=size, **base))(x), ref, rtol=0, atol=1e-5)
    plain = BatchAugment(AugmentConfig(size=16, antialias=False, **base))(x)
    torch.testing.assert_close(plain, F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False),
                               rtol=0, atol=1e-5)
    # shrinking 28 -> 16 without antialiasing keeps more high-frequency energy (aliasing)
    stripes = (torch.arange(28) % 2).float().view(1, 1, 1, 28).expand(1, 1, 28, 28).contiguous()
    aa = BatchAugment(AugmentConfig(size=16, **base))(stripes)
    assert aa.std() < 0.5 * BatchAugment(AugmentConfig(size=16, antialias=False, **base))(stripes).std()


def test_blur_sigma_relative_to_reference_size():
    """aug+'s sigma 0.1-2.0 px is for 224 px: at 16 px with blur_sigma_ref=224 it is 16/224 as large."""
    base = dict(size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, brightness=0.0, contrast=0.0,
                mean=(0.0,), std=(1.0,), blur_p=1.0, blur_kernel=5, blur_sigma=(2.0, 2.0))
    imp = torch.zeros(1, 1, 16, 16)
    imp[..., 8, 8] = 1.0
    scaled = BatchAugment(AugmentConfig(**base, blur_sigma_ref=224))(imp)
    direct = BatchAugment(AugmentConfig(**{**base, "blur_sigma": (2.0 * 16 / 224,) * 2}))(imp)
    torch.testing.assert_close(scaled, direct, rtol=0, atol=1e-6)
    assert scaled[0, 0, 8, 8] > 0.99          # sigma 0.14 px: almost no blur
    assert aug_v2(16, 1).blur_sigma_ref == 224


def test_augment_jitter_and_blur_semantics():
    x = torch.rand(64, 1, 16, 16) * 0.45 + 0.25  # stays in [0, 1] after x1.4 (no clipping)
    base = dict(size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, mean=(0.0,), std=(1.0,))
    # brightness only: every image is scaled by one factor in [0.6, 1.4]
    y = BatchAugment(AugmentConfig(**base, brightness=0.4, contrast=0.0))(x, torch.Generator().manual_seed(0))
    ratio = (y / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ratio.min() >= 0.6 - 1e-4 and ratio.max() <= 1.4 + 1e-4 and ratio.std() > 0.05
    # contrast only: the mean of each image is kept (no clipping in this range)
    y = BatchAugment(AugmentConfig(**base, brightness=0.0, contrast=0.4))(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)), rtol=0, atol=1e-5)
    # blur always on: a normalised kernel keeps a constant image constant and smooths an impulse
    # (sigma >= 1 px: a sigma near 0.1 px rounds the kernel to a float32 delta, and the impulse would stay 1)
    blur = BatchAugment(AugmentConfig(**base, brightness=0.0, contrast=0.0, blur_p=1.0, blur_kernel=5,
                                      blur_sigma=(1.0, 2.0)))
    const = torch.full((2, 1, 16, 16), 0.3)
    torch.testing.assert_close(blur(const), const, rtol=0, atol=1e-6)
    imp = torch.zeros(1, 1, 16, 16)
    imp[..., 8, 8] = 1.0
    out = blur(imp)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5) and out.max() < 1.0


def test_augment_reproducible_and_recipes():
    x = (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)
    aug = BatchAugment(aug_v2(28, 1))
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert aug_v1(28, 1).blur_p == 0.0 and aug_v2(28, 1).blur_p == 0.5 and aug_v2(224, 3).blur_kernel == 23
    rgb = BatchAugment(aug_v2(32, 3))(torch.rand(4, 3, 32, 32))
    assert rgb.shape == (4, 3, 32, 32) and torch.isfinite(rgb).all()
    with pytest.raises(ValueError, match="saturation"):
        BatchAugment(aug_v2(28, 3).replace(mean=(0.5,), std=(0.5,)))(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="blur_kernel"):
        AugmentConfig(blur_kernel=4)


# ------------------------------------------------------------------------------------------------- ResNets
def test_small_resnets_shapes_and_width():
    for name, feats in [("resnet10", 64), ("resnet18", 64), ("resnet50", 256)]:
        net = build_resnet(name, width=8, in_chans=1)
        assert net.num_features == feats
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, feats)
    net = build_resnet("resnet18", width=64, in_chans=3)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.17e6, rel=0.01)  # CIFAR ResNet-18
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    with pytest.raises(ValueError, match="width"):
        build_resnet("resnet18", width=0)
    with pytest.raises(KeyError):
        build_resnet("resnet19")
