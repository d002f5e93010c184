"""The random draws of every random corruption follow the original generator's distributions (captured at the
boundary where essence hands them to the deterministic ``*_apply`` code, Kolmogorov-Smirnov / chi-square)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from essence.corruptions import corrupt
from essence.corruptions import functional as Fc
from essence.corruptions.params import PARAMS

N = 400
X = torch.full((N, 3, 16, 16), 0.5)


def _capture(monkeypatch, target, name):
    got = {}
    real = getattr(target, name)

    def spy(*args, **kwargs):
        got["args"], got["kwargs"] = args, kwargs
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, spy)
    return got


def _uniform_ok(values, low, high):
    assert stats.kstest(np.asarray(values, float), "uniform", args=(low, high - low)).pvalue > 1e-3


def _normal_ok(values, loc=0.0, scale=1.0):
    v = np.asarray(values, float).ravel()[:20000]
    assert stats.kstest(v, "norm", args=(loc, scale)).pvalue > 1e-3


def test_motion_blur_angles_uniform_in_pm45(monkeypatch):
    got = _capture(monkeypatch, Fc.ops, "motion_blur")
    corrupt(X, "motion_blur", 2, seed=0, param_set="imagenet")
    angles = got["args"][3]
    assert len(angles) == N and min(angles) >= -45 and max(angles) < 45
    _uniform_ok(angles, -45, 45)


def test_snow_layer_and_angles(monkeypatch):
    got = _capture(monkeypatch, Fc, "snow_apply")
    corrupt(X, "snow", 3, seed=1, param_set="cifar")
    _, params, noise, angles = got["args"]
    assert params == PARAMS["cifar"]["snow"][2]
    _normal_ok(noise)                                   # N(0, 1), scaled to N(loc, scale) inside snow_apply
    _uniform_ok(angles, -135, -45)


def test_frost_texture_and_crop_uniform(monkeypatch):
    got = _capture(monkeypatch, Fc, "frost_apply")
    corrupt(torch.full((2000, 3, 16, 16), 0.5), "frost", 1, seed=2, param_set="cifar")
    picks = np.asarray(got["args"][3])
    counts = np.bincount(picks[:, 0], minlength=5)
    assert len(counts) == 5 and stats.chisquare(counts).pvalue > 1e-3      # randint(5): frost1..5, never frost6
    textures = Fc.load_frost_textures("cifar")
    for k in range(5):
        th, tw = textures[k].shape[-2:]
        sel = picks[picks[:, 0] == k]
        assert sel[:, 1].min() >= 0 and sel[:, 1].max() <= th - 16 and sel[:, 2].max() <= tw - 16
        _uniform_ok(sel[:, 1] / (th - 16), 0, 1)


def test_elastic_jitter_and_fields(monkeypatch):
    got = _capture(monkeypatch, Fc, "elastic_apply")
    corrupt(X, "elastic_transform", 4, seed=3, param_set="cifar")
    _, consts, jitter, fields = got["args"]
    c = consts[2]
    assert jitter.shape == (N, 3, 2) and np.abs(jitter).max() <= c
    _uniform_ok(jitter.ravel(), -c, c)
    _uniform_ok(fields.numpy().ravel()[:20000], -1, 1)


def test_spatter_liquid_noise_standard_normal(monkeypatch):
    got = _capture(monkeypatch, Fc, "spatter_apply")
    corrupt(X, "spatter", 1, seed=4, param_set="cifar")
    _normal_ok(got["args"][2].numpy())


def test_glass_offsets_uniform_integers(monkeypatch):
    got = _capture(monkeypatch, Fc, "glass_blur_apply")
    corrupt(X, "glass_blur", 5, seed=5, param_set="imagenet")
    sigma, delta, iters = PARAMS["imagenet"]["glass_blur"][4]
    offs = got["args"][3]
    values, counts = torch.unique(offs, return_counts=True)
    assert values.tolist() == list(range(-delta, delta))                    # randint(-delta, delta)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise"])
def test_gaussian_noises_are_normal(name):
    c = PARAMS["cifar"][name][2]
    y = corrupt(torch.full((200, 3, 16, 16), 0.5), name, 3, seed=6, param_set="cifar")
    z = (y - 0.5).numpy().ravel() / (c if name == "gaussian_noise" else 0.5 * c)
    _normal_ok(z)
