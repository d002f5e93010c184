"""FID against a direct numpy/scipy Fréchet distance on the same features."""

import numpy as np
import pytest
import scipy.linalg
import torch

from essence.metrics.fid import FID, InceptionFeatures, feature_statistics, frechet_distance


def reference_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """The textbook computation (as in pytorch-fid): scipy sqrtm of the covariance product."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim", [8, 64])
def test_frechet_distance_matches_scipy(dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(loc=0.3, size=(200, dim)) @ rng.normal(size=(dim, dim))
    mu1, s1 = feature_statistics(torch.from_numpy(a))
    mu2, s2 = feature_statistics(torch.from_numpy(b))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference_fid(a, b), rel=1e-6)


def test_accumulating_fid_equals_direct():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(257, 16)), rng.normal(0.5, 1.2, size=(190, 16))
    fid = FID(dim=16)
    for chunk in np.array_split(a, 5):
        fid.update_features(torch.from_numpy(chunk), real=True)
    for chunk in np.array_split(b, 3):
        fid.update_features(torch.from_numpy(chunk), real=False)
    assert fid.compute() == pytest.approx(reference_fid(a, b), rel=1e-6)
    fid.reset()
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.compute()
    with pytest.raises(ValueError, match=r"expected features \(N, 16\)"):
        fid.update_features(torch.zeros(3, 5), real=True)


def test_inception_features_offline():
    net = InceptionFeatures()
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(4, 1, 28, 28, generator=g)
    f = net(imgs)
    assert f.shape == (4, 2048) and torch.isfinite(f).all() and f.min() >= 0  # post-ReLU pool features
    # grayscale input equals the same image replicated to RGB; uint8 equals float/255
    torch.testing.assert_close(f, net(imgs.expand(-1, 3, -1, -1)))
    u8 = (imgs * 255).round().to(torch.uint8)
    torch.testing.assert_close(net(u8), net(u8.float() / 255))
    with pytest.raises(ValueError, match="expected images"):
        net(torch.zeros(2, 2, 8, 8))
