"""The reproduction: the verdict logic flips when the numbers flip; the tiny run writes a full report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from essence.core.report import VERDICTS
from essence.core.runs import Run
from essence.core.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, combine
from essence.moco.reproduce import PLANS, claim_decisions, reproduce, time_to_accuracy

N = 2000   # test items
PLAN = PLANS["standard"]


def _correct(acc: float, seeds: int, rng) -> np.ndarray:
    """(seeds, N) 0/1 scores with accuracy ``acc`` (independent draws per seed)."""
    return (rng.random((seeds, N)) < acc).astype(np.float64)


def _scores(acc: dict[str, float], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    seeds = {"moco": 2, "random": 2}
    return {arm: {p: _correct(a, seeds.get(arm, 1), rng) for p in ("knn", "linear")} for arm, a in acc.items()}


GOOD = {"moco": 0.85, "moco_K256": 0.80, "end_to_end": 0.79, "moco_m0.0": 0.70, "random": 0.74, "pixels": 0.80}


def _verdicts(acc):
    dec = claim_decisions(_scores(acc), PLAN, n_resamples=500)
    return {claim: combine(ds) for claim, ds in dec.items()}, dec


def test_verdicts_reproduced_when_the_paper_is_right():
    verdicts, dec = _verdicts(GOOD)
    assert verdicts == {"a": REPRODUCED, "b": REPRODUCED, "c1": REPRODUCED, "c2": REPRODUCED}
    assert len(dec["a"]) == 4 and len(dec["b"]) == 2 and len(dec["c1"]) == 2 and len(dec["c2"]) == 2
    # the effect is the winner minus the other arm, as a fraction, with the interval around it
    c1 = dec["c1"][0].estimate
    assert c1.low < c1.value < c1.high and c1.value == pytest.approx(0.11, abs=0.03)


@pytest.mark.parametrize("claim, change", [
    ("a", {"moco_K256": 0.92}),               # a small queue beats the large one
    ("a", {"end_to_end": 0.92}),              # end-to-end beats MoCo
    ("b", {"moco_m0.0": 0.95}),               # m = 0 trains better
    ("c1", {"random": 0.95}),                 # the random encoder wins
    ("c2", {"pixels": 0.95}),                 # raw pixels win
])
def test_verdict_flips_to_not_reproduced(claim, change):
    verdicts, _ = _verdicts({**GOOD, **change})
    assert verdicts[claim] == NOT_REPRODUCED
    assert all(v == REPRODUCED for c, v in verdicts.items() if c != claim)


def test_equal_arms_are_inconclusive():
    # MoCo and raw pixels right on the same test images: no effect, the interval is [0, 0] -> inconclusive
    tied = _scores({**GOOD})
    tied["pixels"] = {p: tied["moco"][p][:1].copy() for p in ("knn", "linear")}   # identical items
    tied["moco"] = {p: np.repeat(tied["moco"][p][:1], 2, axis=0) for p in ("knn", "linear")}
    dec = claim_decisions(tied, PLAN, n_resamples=200)
    assert all(d.verdict == INCONCLUSIVE and d.estimate.value == 0 for d in dec["c2"])


def test_time_to_accuracy():
    curve = [(10.0, 70.0), (20.0, 80.0), (30.0, 90.0)]
    assert time_to_accuracy(curve, 85.0) == pytest.approx(25.0)
    assert time_to_accuracy(curve, 60.0) == 10.0
    assert time_to_accuracy(curve, 95.0) is None
    assert time_to_accuracy([], 50.0) is None


def test_reproduce_tiny_writes_report(tmp_path):
    run = Run(tmp_path / "rep", method="moco", preset="tiny")
    report = reproduce(run, preset="tiny", device="cpu")
    path = report.write()
    text = path.read_text()
    assert len(report.claims) == 4 and all(c.verdict in VERDICTS for c in report.claims)
    assert all(c.decisions for c in report.claims)          # every verdict comes from the statistics
    assert "Preview only" in text and "Scaled down" in text and "95%" in text
    for fig in ("accuracy_vs_K", "training_curves", "time_to_accuracy"):
        assert (run.figures_dir / f"{fig}.png").exists(), fig
    summary = json.loads((run.dir / "summary.json").read_text())
    arms = summary["arms"]
    assert summary["precision"].startswith(("fp32", "bf16", "fp16"))   # the report states the precision
    assert {"moco", "moco_K32", "end_to_end", "moco_m0.0", "random", "pixels", "pixels_native"} <= set(arms)
    assert arms["moco"]["seeds"] == [0, 1] and arms["random"]["seeds"] == [0, 1]
    for a in arms.values():
        assert all(0.0 <= v <= 100.0 for v in a["knn_top1"] + a["linear_top1"])
        assert all(lr in (0.03, 0.3, 3.0, 30.0) for lr in a["linear_lr"])   # from the grid, per arm
    assert len(summary["monitor"]["moco"]) >= 2   # the time-to-accuracy curve of the headline seed
    assert (run.dir / "runs" / "moco_seed0" / "checkpoints").is_dir()


def test_plans_match_presets_and_standard_uses_full_splits():
    from essence.moco.config import PRESETS

    assert set(PLANS) == set(PRESETS.names())
    std = PRESETS.build("standard")
    assert std.eval.knn_bank == 0 and std.data.test_limit == 0 and std.data.train_limit == 0   # 60k bank, 10k test
    assert len(PLANS["standard"].seeds) >= 2 and not PLANS["standard"].previews and PLANS["standard"].monitor > 0
    assert PLANS["quick"].previews and PLANS["tiny"].previews
    assert std.model.mlp and std.model.T == 0.2 and PRESETS.build("quick").model.T == 0.2    # v2: MLP with T 0.2
