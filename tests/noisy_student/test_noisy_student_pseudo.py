"""Filter / balance (official filter_unlabel.py), pseudo labels in eval mode, and the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from essence.noisy_student.loss import hard_cross_entropy, noisy_student_loss, soft_cross_entropy
from essence.noisy_student.pseudo import filter_and_balance, pseudo_label, targets_from_logits


def _probs(rows):
    """(confidence, class) pairs -> (m, 10) probability rows whose max is `confidence` at `class`."""
    out = np.zeros((len(rows), 10))
    for i, (conf, c) in enumerate(rows):
        out[i] = (1 - conf) / 9
        out[i, c] = conf
    return out


def test_threshold_edges_use_all():
    p = _probs([(0.30, 0), (0.2999, 0), (0.31, 1), (0.9, 2), (0.34, 1)])
    kept = filter_and_balance(p, threshold=0.3, balance=False)
    assert kept.tolist() == [0, 2, 3, 4]           # 0.30 itself is kept, 0.2999 is not


def test_balance_hand_computed_counts():
    # class 0: 6 images, class 1: 2 images, class 2: 1 image below threshold; per_class = 3
    rows = [(0.99, 0), (0.95, 0), (0.95, 0), (0.80, 0), (0.50, 0), (0.40, 0), (0.60, 1), (0.35, 1), (0.25, 2)]
    idx = filter_and_balance(_probs(rows), threshold=0.3, per_class=3, seed=0)
    counts = np.bincount(np.asarray(rows)[idx, 1].astype(int), minlength=10)
    # class 0: the scan stops at 0.95 (3 images >= 0.95): exactly those three, one copy each
    assert sorted(idx[np.asarray(rows)[idx, 1] == 0].tolist()) == [0, 1, 2]
    # class 1: 2 images kept, 3/2 copies each: 1 + Bernoulli(0.5) -> between 2 and 4, both images present
    ones = idx[np.asarray(rows)[idx, 1] == 1].tolist()
    assert set(ones) == {6, 7} and 2 <= len(ones) <= 4
    assert counts[2] == 0                           # below the threshold: dropped
    # no upsampling: one copy at most
    idx = filter_and_balance(_probs(rows), threshold=0.3, per_class=3, upsample=False, seed=0)
    assert sorted(idx.tolist()) == [0, 1, 2, 6, 7]


def test_balance_downsamples_crowded_class_stochastically():
    rng = np.random.default_rng(0)
    # 1000 images of class 0 all at confidence 0.5 (the scan reaches 0.50 with 1000 >= 100): copies = 0.1 each
    p = _probs([(0.5, 0)] * 1000 + [(0.9, 1)] * 10)
    sizes = [np.sum(filter_and_balance(p, threshold=0.3, per_class=100, seed=int(s)) < 1000)
             for s in rng.integers(0, 10**6, 200)]
    assert abs(np.mean(sizes) - 100) < 3             # E[sum Bernoulli(0.1)] = 100
    small = filter_and_balance(p, threshold=0.3, per_class=100, seed=1)
    assert np.sum(small >= 1000) == 100              # 10 rare images x exactly 10 copies


def test_balance_matches_naive_loop():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (500, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = filter_and_balance(p, threshold=0.3, per_class=40, upsample=True, seed=7)
    # naive re-implementation of filter_unlabel.py (float thresholds via hundredths, same RNG order)
    rng2 = np.random.default_rng(7)
    out = []
    for c in range(5):
        members = [i for i in range(500) if p[i].argmax() == c]
        if not members:
            continue
        kept = [i for i in members if p[i].max() * 100 >= 30 - 1e-9]
        for k in range(100, 29, -1):
            at = [i for i in members if p[i].max() * 100 >= k - 1e-9]
            if len(at) >= 40:
                kept = at
                break
        copies = 40 / len(kept)
        draws = rng2.random(len(kept))
        for i, d in zip(kept, draws):
            out += [i] * int(np.floor(copies) + (d < copies - np.floor(copies)))
    assert got.tolist() == sorted(out)


def test_filter_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        filter_and_balance(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        filter_and_balance(np.full((2, 3), np.nan))


def test_soft_ce_equals_hard_ce_for_one_hot():
    logits = torch.randn(16, 7)
    y = torch.randint(0, 7, (16,))
    onehot = F.one_hot(y, 7).float()
    assert torch.allclose(soft_cross_entropy(logits, onehot), hard_cross_entropy(logits, y), atol=1e-6)
    # the plain formula for soft targets
    p = torch.softmax(torch.randn(16, 7), 1)
    ref = -(p * torch.log(torch.softmax(logits, 1))).sum(1).mean()
    assert torch.allclose(soft_cross_entropy(logits, p), ref, atol=1e-5)


def test_loss_weighting_is_official():
    ll, lu = torch.randn(4, 3), torch.randn(12, 3)
    y = torch.randint(0, 3, (4,))
    t = torch.softmax(torch.randn(12, 3), 1)
    loss, parts = noisy_student_loss(ll, y, lu, t, label_type="soft", unlabeled_ratio=3, label_smoothing=0.1)
    expect = F.cross_entropy(ll, y, label_smoothing=0.1) + 3 * soft_cross_entropy(lu, t)
    assert torch.allclose(loss, expect)
    hard, _ = noisy_student_loss(ll, y, lu, t, label_type="hard", unlabeled_ratio=3, label_smoothing=0.1)
    expect = F.cross_entropy(ll, y, label_smoothing=0.1) + 3 * F.cross_entropy(lu, t.argmax(1), label_smoothing=0.1)
    assert torch.allclose(hard, expect)


def test_targets_soft_hard_temperature():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(targets_from_logits(logits, "soft", 1.0), torch.softmax(logits, 1))
    assert torch.allclose(targets_from_logits(logits, "soft", 2.0), torch.softmax(logits / 2, 1))
    assert targets_from_logits(logits, "hard").tolist() == [[1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="label_type"):
        targets_from_logits(logits, "fuzzy")


def test_teacher_labels_are_deterministic_and_student_is_noised(cfg):
    from essence.noisy_student.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model.replace(num_classes=4), dropout=0.5, stochastic_depth=0.5)
    model.train()                                      # pseudo_label must switch to eval mode by itself
    x = torch.randint(0, 255, (40, 1, 16, 16), dtype=torch.uint8)
    a = pseudo_label(model, x, threshold=0.0)
    b = pseudo_label(model, x, threshold=0.0)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.index, b.index)
    assert model.training                              # mode restored
    xf = torch.randn(8, 1, 16, 16)
    assert not torch.allclose(model(xf), model(xf))    # train mode: dropout + stochastic depth differ per call
