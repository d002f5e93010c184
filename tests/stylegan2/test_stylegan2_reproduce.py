"""The verdict logic flips with the measured numbers; the tiny reproduction writes a full report (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from essence.core.report import VERDICTS
from essence.core.stats import NOT_REPRODUCED, REPRODUCED, combine
from essence.stylegan2.reproduce import PLANS, decide_claims, demodulation_statistics, fid_difference, resolve_plan


def _numbers(sign: float) -> dict:
    """Measurements that agree with the paper (sign = +1) or contradict it (sign = -1)."""
    rng = np.random.default_rng(0)
    s_norm = rng.uniform(1, 2, 40)
    p_lo = (rng.random((2, 500)) < 0.5 + 0.2 * sign).astype(float)
    p_hi = (rng.random((2, 500)) < 0.5).astype(float)
    r_lo = (rng.random((2, 500)) < 0.5 - 0.2 * sign).astype(float)
    r_hi = (rng.random((2, 500)) < 0.5).astype(float)
    base_ppl = rng.normal(5, 0.3, (2, 300))
    return {
        "demod_deviation": rng.uniform(0.02, 0.04, 40) if sign > 0 else rng.uniform(0.3, 0.5, 40),
        "s_norm": s_norm, "plain_std": sign * s_norm + rng.normal(0, 0.01, 40),
        "r1_lazy_s": np.array([0.10, 0.11, 0.12, 0.10, 0.11]) * (1 if sign > 0 else 3),
        "r1_every_s": np.array([0.21, 0.22, 0.23, 0.21, 0.22]),
        # the non-lazy arm on 2 seeds, features of the same z: lazy FID equal (sign +1) or 2.5x (-1)
        "fid_real": torch.from_numpy(rng.normal(0, 1, (600, 8))),
        "fid_pairs": [(torch.from_numpy(rng.normal(3 if sign > 0 else 4.5, 1, (400, 8))),
                       torch.from_numpy(rng.normal(3, 1, (400, 8)))) for _ in range(2)],
        "ppl_log_pl": base_ppl - sign, "ppl_log_nopl": base_ppl + rng.normal(0, 0.01, (2, 300)),
        "jcv_pl": [0.2 - 0.1 * sign, 0.21 - 0.1 * sign], "jcv_nopl": [0.2, 0.21],
        "prec_items": {1.0: p_hi, 0.7: p_hi, 0.5: p_lo}, "rec_items": {1.0: r_hi, 0.7: r_hi, 0.5: r_lo},
        "proj_pl": (rng.normal(1 + sign, 0.2, 40), rng.normal(1, 0.2, 40)),
        "proj_nopl": (rng.normal(1 + 0.5 * sign, 0.2, 40), rng.normal(1, 0.2, 40)),
        "curve_steps": [0, 100, 200, 300, 400] * 2,
        "curve_fid": list(np.array([400., 200, 120, 90, 70, 390, 210, 130, 95, 75]) ** (1 if sign > 0 else -1)),
    }


def test_verdicts_follow_the_numbers():
    good, bad = decide_claims(_numbers(+1)), decide_claims(_numbers(-1))
    assert set(good) == {"a", "b", "c", "d", "e", "f"}
    for claim in good:
        assert combine(good[claim]) == REPRODUCED, claim
        assert combine(bad[claim]) == NOT_REPRODUCED, claim


def test_small_samples_are_inconclusive():
    m = {"r1_lazy_s": np.array([0.1, 0.3]), "r1_every_s": np.array([0.2, 0.2])}
    assert decide_claims(m)["b"][0].verdict == "inconclusive"


def test_fid_difference_is_paired_and_antisymmetric():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 4, generator=g)
    a, b = torch.randn(200, 4, generator=g) + 1, torch.randn(200, 4, generator=g) + 2
    same = fid_difference(real, [(a, a.clone())], n_resamples=50)
    assert same.value == same.low == same.high == 0.0          # the same images in both arms: no difference
    ab, ba = fid_difference(real, [(a, b)], n_resamples=100), fid_difference(real, [(b, a)], n_resamples=100)
    assert ab.value < 0 and ab.high < 0 and ab.value == pytest.approx(-ba.value)
    assert ab.low <= ab.value <= ab.high and "one seed" in ab.method
    with pytest.raises(ValueError, match="same z"):
        fid_difference(real, [(a, b[:100])])


def test_demodulation_statistics_claim_a_without_training():
    stats = demodulation_statistics(30, channels=32)
    assert stats["demod_deviation"].mean() < 0.1
    assert np.corrcoef(stats["s_norm"], stats["plain_std"])[0, 1] > 0.9
    assert combine(decide_claims(stats)["a"]) == REPRODUCED


def test_plan_overrides_split_from_config_overrides():
    plan, rest = resolve_plan("standard", ["plan.adain=false", " plan.r1_every=1", "plan.seeds=0,1,2",
                                           "optim.lr=0.001"])
    assert not plan.adain and plan.r1_every == 1 and plan.seeds == (0, 1, 2) and rest == ["optim.lr=0.001"]
    assert plan.steps == PLANS["standard"].steps and PLANS["standard"].adain   # the preset is untouched
    assert PLANS["standard"].r1_every == 2
    with pytest.raises(ValueError, match="plan fields: steps"):
        resolve_plan("standard", ["plan.adian=true"])
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_plan("huge")


@pytest.mark.slow
def test_reproduce_tiny_writes_report(tmp_path):
    from essence.core.runs import Run
    from essence.stylegan2.reproduce import reproduce

    run = Run(tmp_path / "rep", method="stylegan2", preset="tiny")
    report = reproduce(run, preset="tiny", device="cpu")
    text = report.write().read_text()
    assert len(report.claims) == 6 and all(c.verdict in VERDICTS for c in report.claims)
    assert "Scaled down" in text and "95% CI" in text
    for fig in ("truncation_sweep", "style_mixing", "fid_curve", "droplets"):
        assert (run.figures_dir / f"{fig}.png").exists()
    summary = json.loads((run.dir / "summary.json").read_text())
    assert {"pl", "nopl", "adain", "r1every"} <= set(summary["arms"]) and summary["arms"]["r1every"]
    assert "R1 on every minibatch" in text
