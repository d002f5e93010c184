"""The verdict helper against cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from essence.core import stats as S
from essence.core.report import Report
from essence.core.runs import Run


def _paired(effect: float, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.random(n) < 0.7
    flip = rng.random(n) < abs(effect)
    better = base | flip if effect >= 0 else base & ~flip
    return better.astype(float), base.astype(float)


def test_clear_effect_is_reproduced():
    a, b = _paired(0.10, 4000)
    d = S.decide(S.paired_difference(a, b))
    assert d.verdict == S.REPRODUCED
    assert d.estimate.low > 0 and d.estimate.n == 4000
    assert d.estimate.extra["p_value"] < 1e-6


def test_reversed_effect_is_not_reproduced():
    a, b = _paired(-0.10, 4000)
    assert S.decide(S.paired_difference(a, b)).verdict == S.NOT_REPRODUCED
    # and "less" is the mirror image
    assert S.decide(S.paired_difference(a, b), direction="less").verdict == S.REPRODUCED


def test_null_effect_is_inconclusive_with_no_n_that_decides_or_a_large_one():
    rng = np.random.default_rng(1)
    a = rng.normal(size=2000)
    b = a + rng.normal(scale=1.0, size=2000) * 1e-3 * 0  # identical systems
    d = S.decide(S.paired_difference(a, b))
    assert d.verdict == S.INCONCLUSIVE
    assert d.needed_n is None  # exactly zero effect: no n decides it


def test_small_n_is_inconclusive_and_names_the_n_needed():
    a, b = _paired(0.06, 60, seed=3)
    assert np.any(a != b)
    d = S.decide(S.paired_difference(a, b))
    assert d.verdict == S.INCONCLUSIVE
    assert d.needed_n is not None and d.needed_n > 60
    assert f"n~{d.needed_n}" in d.describe()


def test_margin_moves_the_decision():
    a, b = _paired(0.10, 4000)
    est = S.paired_difference(a, b)
    assert S.decide(est, margin=0.5).verdict == S.NOT_REPRODUCED      # "beats by 50 points": no
    assert S.decide(est, margin=-0.02).verdict == S.REPRODUCED        # "within 2 points": yes


def test_seed_level_difference_uses_welch_t_and_one_seed_decides_nothing():
    est = S.difference([0.80, 0.81, 0.79], [0.70, 0.72, 0.71])
    assert "Welch" in est.method and est.low > 0
    one = S.difference([0.8], [0.7])
    assert math.isinf(one.low) and S.decide(one).verdict == S.INCONCLUSIVE


def test_t_interval_matches_scipy():
    from scipy import stats

    x = np.array([0.71, 0.74, 0.69, 0.73])
    est = S.mean_ci(x, unit="seeds")
    lo, hi = stats.t.interval(0.95, df=3, loc=x.mean(), scale=stats.sem(x))
    assert est.low == pytest.approx(lo) and est.high == pytest.approx(hi)


def test_hierarchical_interval_is_wider_than_items_alone_when_seeds_disagree():
    rng = np.random.default_rng(0)
    items = rng.random(3000) < 0.75
    a = np.stack([(items ^ (rng.random(3000) < r)).astype(float) for r in (0.02, 0.10, 0.18)])  # seeds vary
    b = np.stack([items.astype(float)] * 3)
    pooled = S.paired_difference(a.mean(0), b.mean(0))
    hier = S.hierarchical_difference(a, b)
    assert hier.value == pytest.approx(pooled.value)
    assert hier.half_width > 1.5 * pooled.half_width


def test_spearman_trend_and_proportion():
    rho = S.spearman([256, 1024, 4096, 16384, 65536], [0.70, 0.71, 0.73, 0.74, 0.76])
    assert rho.value == pytest.approx(1.0) and rho.low > 0
    assert S.decide(S.spearman([1, 2, 3], [3, 2, 1])).verdict == S.INCONCLUSIVE  # 3 points: no interval
    p = S.proportion(55, 60)
    assert p.low < 55 / 60 < p.high and p.high <= 1


def test_combine_and_bad_input():
    a, b = _paired(0.10, 2000)
    yes = S.decide(S.paired_difference(a, b))
    no = S.decide(S.paired_difference(b, a))
    assert S.combine([yes, yes]) == S.REPRODUCED
    assert S.combine([yes, no]) == S.NOT_REPRODUCED
    with pytest.raises(ValueError, match="same items"):
        S.paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        S.mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="direction"):
        S.decide(yes.estimate, direction="up")


def test_over_seeds_aggregates_scalars_and_items():
    res = S.over_seeds(lambda s: {"acc": 0.5 + 0.01 * s, "correct": np.full(50, s % 2, dtype=float)}, [0, 1, 2])
    assert res.values["acc"] == pytest.approx([0.5, 0.51, 0.52])
    assert res.estimate("acc").unit == "seeds"
    assert res.matrix("correct").shape == (3, 50)
    assert "3 seeds" in res.estimate("correct").method


def test_report_claim_takes_its_verdict_from_the_decision(tmp_path):
    run = Run(tmp_path / "r", method="demo", preset="tiny")
    report = Report(run, title="Demo", paper="-", preset="tiny")
    a, b = _paired(0.10, 2000)
    c = report.claim("A beats B", decision=S.decide(S.paired_difference(a, b)), scale=100, digits=1)
    assert c.verdict == S.REPRODUCED and "95% CI" in c.evidence and "n=2000" in c.evidence
    c2 = report.claim("B beats A", decision=S.decide(S.paired_difference(b, a)))
    assert c2.verdict == S.NOT_REPRODUCED
    assert report.verdict == "partly"
    report.write()
    summary = Report.load_summary(run.dir)
    assert summary["claims"][0]["decisions"][0]["estimate"]["n"] == 2000
    assert summary["verdict_counts"] == {"reproduced": 1, "not reproduced": 1}
    assert "**Machine:**" in (run.dir / "report.md").read_text()


def test_paired_difference_of_a_few_items_reports_the_p_value_of_its_t_interval():
    # 5 clearly negative differences: the t interval excludes 0, and so must its p-value (the signed-rank test's
    # floor with 5 items is 2/32 = 0.0625)
    est = S.paired_difference([0.19, 0.20, 0.20, 0.19, 0.20], [0.35, 0.36, 0.34, 0.35, 0.36], unit="blocks")
    assert "Student t" in est.method and est.high < 0
    assert est.extra["p_value"] < 0.001
    assert S.decide(est, direction="less").verdict == S.REPRODUCED


def test_spearman_on_a_handful_of_points_follows_the_exact_permutation_test():
    # 4 points in perfect order: exact two-sided p = 2/24 = 0.083, so nothing is decided
    four = S.spearman([1, 2, 3, 4], [10, 20, 30, 40])
    assert four.extra["p_value"] == pytest.approx(2 / 24)
    assert S.decide(four).verdict == S.INCONCLUSIVE
    # 5 points: p = 2/120 = 0.017 < 0.05, the interval excludes 0
    five = S.spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert five.extra["p_value"] == pytest.approx(2 / 120) and five.low > 0
