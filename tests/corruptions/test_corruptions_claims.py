"""The reproduction's verdict logic on synthetic numbers: each verdict flips when the measured numbers do."""

from __future__ import annotations

import numpy as np
import pytest

from essence.corruptions import claims as C


def _wrong(rate, shape, rng):
    return (rng.random(shape) < np.asarray(rate)[..., None]).astype(bool)


def test_mce_identities():
    base = np.full((15, 5), 0.5)
    assert C.mce_of(base, base) == pytest.approx(1.0)
    assert C.mce_of(base * 0.8, base) == pytest.approx(0.8)
    # relative mCE subtracts the clean error at every severity
    e = np.full((15, 5), 0.4)
    assert C.relative_mce_of(e, 0.2, base, 0.3) == pytest.approx((0.4 - 0.2) / (0.5 - 0.3))
    with pytest.raises(ValueError, match="undefined"):
        C.relative_mce_of(e, 0.2, base, 0.6)


def test_relative_corruptions_leave_out_unstable_denominators():
    base = np.full((3, 5), 0.5)
    base[1] = 0.305                                  # degradation 5 x 0.005 = 0.025 < 0.05
    base[2] = 0.29                                   # below the clean error
    assert C.relative_corruptions(base, 0.3).tolist() == [0]
    assert C.relative_corruptions(base, 0.3, min_degradation=0.02).tolist() == [0, 1]


def test_severity_verdict_flips():
    rng = np.random.default_rng(0)
    grows = np.linspace(0.1, 0.6, 5)
    up = _wrong(np.broadcast_to(grows, (3, 2, 5)), (3, 2, 5, 2000), rng)
    assert all(d.verdict == "reproduced" for _, d in C.severity_decisions(up, ["a", "b"]))
    down = up[:, :, ::-1]
    assert all(d.verdict == "not reproduced" for _, d in C.severity_decisions(down, ["a", "b"]))


def test_accuracy_mce_verdict_flips():
    clean = np.linspace(0.1, 0.5, 15)
    noise = np.random.default_rng(1).normal(0, 0.02, 15)
    assert C.accuracy_mce_decision(clean, 0.5 + clean + noise).verdict == "reproduced"
    assert C.accuracy_mce_decision(clean, 1.5 - clean + noise).verdict == "not reproduced"
    assert C.accuracy_mce_decision(clean, np.random.default_rng(2).random(15)).verdict == "inconclusive"


def test_relative_mce_verdict_flips():
    assert C.relative_mce_decision([1.02, 1.05, 0.98, 1.07, 1.01]).verdict == "reproduced"
    assert C.relative_mce_decision([0.6, 0.65, 0.62, 0.58, 0.61]).verdict == "not reproduced"
    assert C.relative_mce_decision([0.5, 1.4, 0.7, 1.2]).verdict == "inconclusive"


def test_histeq_verdict_flips_and_bootstrap_is_paired():
    rng = np.random.default_rng(3)
    base = np.full((4, 5), 0.5)
    rate = np.full((3, 4, 5), 0.4)
    control = _wrong(rate, (3, 4, 5, 3000), rng)
    better = control & (rng.random(control.shape) > 0.15)            # drop 15% of the control's errors
    d = C.histeq_decision(better, control, base)
    assert d.verdict == "reproduced" and d.estimate.value < 0
    assert C.histeq_decision(control, better, base).verdict == "not reproduced"
    same = C.delta_mce_estimate(control, control, base)
    assert same.value == 0 and same.low == 0 and same.high == 0        # paired: identical arms, zero width
    # the estimate equals the difference of the arms' mean mCE
    want = np.mean([C.mce_of(better[s].mean(2), base) - C.mce_of(control[s].mean(2), base) for s in range(3)])
    assert d.estimate.value == pytest.approx(want)
    with pytest.raises(ValueError, match="one shape"):
        C.delta_mce_estimate(control[:2], control, base)
