"""Robustness metrics against the paper's formulas written out plainly (and ImageNet-P/test.py's loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essence.metrics.robustness import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    BENCHMARK_CORRUPTIONS,
    CorruptionErrors,
    FlipProbability,
    Top5Distance,
    corruption_error,
    flip_probability,
    mce,
    mean_flip_rate,
    relative_mce,
    top5_distance,
    unnormalized_mean_error,
)

RNG = np.random.default_rng(0)


def test_baseline_against_itself_is_100():
    assert mce(ALEXNET_ERRORS) == pytest.approx(1.0)
    assert relative_mce(ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR) == pytest.approx(1.0)
    for c in BENCHMARK_CORRUPTIONS:
        assert corruption_error(ALEXNET_ERRORS[c], ALEXNET_ERRORS[c]) == 1.0


def test_ce_and_relative_ce_by_hand():
    errors = {c: RNG.uniform(0.2, 0.9, 5).tolist() for c in BENCHMARK_CORRUPTIONS}
    clean = 0.239
    ce = [sum(errors[c]) / sum(ALEXNET_ERRORS[c]) for c in BENCHMARK_CORRUPTIONS]
    rel = [sum(e - clean for e in errors[c]) / sum(e - ALEXNET_CLEAN_ERROR for e in ALEXNET_ERRORS[c])
           for c in BENCHMARK_CORRUPTIONS]
    assert mce(errors) == pytest.approx(np.mean(ce), rel=1e-12)
    assert relative_mce(errors, clean) == pytest.approx(np.mean(rel), rel=1e-12)
    assert unnormalized_mean_error(errors) == pytest.approx(np.mean([np.mean(v) for v in errors.values()]))


def test_resnet50_relative_mce_from_table1():
    """Table 1 CEs of ResNet-50 with the AlexNet means give mean errors; relative mCE with per-severity
    subtraction is ~105 (paper: 105.0), subtracting once would give ~80 (the card's check)."""
    ce = dict(zip(BENCHMARK_CORRUPTIONS, [80, 82, 83, 75, 89, 78, 80, 78, 75, 66, 57, 71, 85, 77, 77]))
    errors = {c: [ce[c] / 100 * np.mean(ALEXNET_ERRORS[c])] * 5 for c in BENCHMARK_CORRUPTIONS}
    assert 100 * mce(errors) == pytest.approx(76.5, abs=0.5)
    assert 100 * relative_mce(errors, 0.239) == pytest.approx(105.0, abs=1.0)


def test_bad_metric_input():
    with pytest.raises(ValueError, match="5 per-severity"):
        corruption_error([0.1, 0.2], [0.1] * 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corruption_error([50, 60, 70, 80, 90], [0.5] * 5)
    with pytest.raises(ValueError, match="lack corruptions"):
        mce({"fog": [0.1] * 5}, {"snow": [0.1] * 5}, corruptions=["fog"])


def test_incomplete_sets_and_clean_error_ranges_are_refused():
    partial = {c: ALEXNET_ERRORS[c] for c in BENCHMARK_CORRUPTIONS[:14]}          # jpeg_compression missing
    with pytest.raises(ValueError, match="14 of the 15.*jpeg_compression"):
        mce(partial)
    with pytest.raises(ValueError, match="14 of the 15"):
        relative_mce(partial, 0.3)
    assert mce(partial, allow_partial=True) == pytest.approx(1.0)
    assert mce(partial, corruptions=BENCHMARK_CORRUPTIONS[:3]) == pytest.approx(1.0)
    for bad in (43.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="clean_error must be an error rate"):
            relative_mce(ALEXNET_ERRORS, bad)
    with pytest.raises(ValueError, match="difficulty"):
        flip_probability(np.zeros((2, 5)), noise=False, difficulty=4)


# ------------------------------------------------------------------------------------------- ImageNet-P
def _fp_reference(preds, noise, difficulty):
    """ImageNet-P/test.py flip_prob, loop for loop."""
    result = 0
    step = 1 if noise else difficulty
    for vid in preds:
        res = []
        for i in range(step):
            prev = vid[i]
            for pred in vid[i::step][1:]:
                res.append(int(prev != pred))
                if not noise:
                    prev = pred
        result += np.mean(res) / len(preds)
    return result


def _t5d_reference(logits, noise, difficulty):
    """ImageNet-P/test.py ranking_dist with mode='top5' (rankdata ordinal, cumsum trick)."""
    from scipy.stats import rankdata

    cum = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (logits.shape[-1] - 6)))
    ranks = [[rankdata(-f, method="ordinal") for f in vid] for vid in logits]
    result = 0
    step = 1 if noise else difficulty
    for vid in ranks:
        res = []
        for i in range(step):
            p1 = vid[i]
            inv = np.argsort(p1)
            for p2 in vid[i::step][1:]:
                sigma = p2[inv]
                res.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
                if not noise:
                    p1, inv = p2, np.argsort(p2)
        result += np.mean(res) / len(ranks)
    return result


@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_fp_and_t5d_match_official_loops(noise, difficulty):
    logits = RNG.normal(size=(6, 31, 10))
    logits[:, :, 3] += 1.5                                    # some stability
    preds = logits.argmax(-1)
    assert flip_probability(preds, noise=noise, difficulty=difficulty) == pytest.approx(
        _fp_reference(preds, noise, difficulty), abs=1e-12)
    assert top5_distance(logits, noise=noise, difficulty=difficulty) == pytest.approx(
        _t5d_reference(logits, noise, difficulty), abs=1e-12)


def test_noise_compares_with_frame_0_and_temporal_with_previous():
    preds = np.array([[0, 1, 1, 1, 1]])
    assert flip_probability(preds, noise=True) == 1.0          # every frame differs from frame 0
    assert flip_probability(preds, noise=False) == 0.25        # one flip among 4 adjacent pairs
    preds = np.array([[0, 1, 0, 1, 0, 1]])
    assert flip_probability(preds, noise=False, difficulty=2) == 0.0   # stride 2 with both phases


@pytest.mark.parametrize("swap,expected", [((0, 1), 2), ((4, 5), 1), ((0, 5), 5), ((0, 4), 8), ((2, 3), 2),
                                           ((6, 7), 0)])
def test_top5_distance_of_swaps(swap, expected):
    base = torch.arange(10, 0, -1).double()                   # class k has rank k+1
    other = base.clone()
    other[list(swap)] = other[list(swap[::-1])]
    logits = torch.stack([base, other])[None]                 # 1 clip, 2 frames
    assert top5_distance(logits, noise=False) == expected
    assert top5_distance(torch.stack([base, base])[None], noise=False) == 0


def test_metric_classes_accumulate():
    m = CorruptionErrors(["fog", "snow"])
    logits = torch.eye(4)
    m.update(logits, torch.tensor([0, 1, 2, 0]), "fog", 1)      # 1 wrong of 4
    m.update(logits, torch.tensor([0, 1, 2, 3]), "fog", 1)      # 0 wrong of 4
    out = m.compute()
    assert out["fog"][0] == 0.125 and np.isnan(out["snow"][0])
    preds = RNG.integers(0, 3, (8, 31))
    fp = FlipProbability(noise=False, difficulty=2)
    fp.update(torch.from_numpy(preds[:3]))
    fp.update(torch.from_numpy(preds[3:]))
    assert fp.compute() == pytest.approx(flip_probability(preds, noise=False, difficulty=2))
    logits = torch.from_numpy(RNG.normal(size=(5, 31, 10)))
    t5 = Top5Distance(noise=True)
    t5.update(logits[:2])
    t5.update(logits[2:])
    assert t5.compute() == pytest.approx(top5_distance(logits, noise=True))
    assert mean_flip_rate({"a": 0.1, "b": 0.3}, {"a": 0.2, "b": 0.3}) == pytest.approx(0.75)
