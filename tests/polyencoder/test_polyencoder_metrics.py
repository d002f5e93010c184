"""R@k/C and MRR against hand-computed values (card §4), functional and accumulating forms."""

from __future__ import annotations

import math

import pytest
import torch

from essence.metrics.retrieval import RetrievalMetrics, gold_rank, mrr, recall_at_k

# 3 queries x 4 candidates; gold columns 0, 2, 3.
SCORES = torch.tensor([[0.9, 0.1, 0.2, 0.3],    # gold 0.9 is the best: rank 1
                       [0.5, 0.8, 0.6, 0.1],    # gold 0.6: 0.8 is higher -> rank 2
                       [0.4, 0.3, 0.2, 0.1]])   # gold 0.1 is the worst: rank 4
TARGET = torch.tensor([0, 2, 3])


def test_ranks_recall_and_mrr_by_hand():
    assert gold_rank(SCORES, TARGET).tolist() == [1.0, 2.0, 4.0]
    assert float(recall_at_k(SCORES, TARGET, 1)) == pytest.approx(1 / 3)
    assert float(recall_at_k(SCORES, TARGET, 2)) == pytest.approx(2 / 3)
    assert float(recall_at_k(SCORES, TARGET, 4)) == pytest.approx(1.0)
    assert float(mrr(SCORES, TARGET)) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)


def test_ties_share_the_rank():
    """A constant scorer must not get rank 1: the gold ties with C - 1 others, expected rank (C + 1) / 2."""
    flat = torch.zeros(2, 5)
    target = torch.tensor([0, 3])
    assert gold_rank(flat, target).tolist() == [3.0, 3.0]
    assert float(recall_at_k(flat, target, 1)) == 0.0
    tie = torch.tensor([[1.0, 1.0, 0.0]])
    assert gold_rank(tie, torch.tensor([1])).tolist() == [1.5]


def test_class_accumulates_like_one_batch():
    m = RetrievalMetrics(ks=(1, 2))
    m.update(SCORES[:2], TARGET[:2])
    m.update(SCORES[2:], TARGET[2:])
    out = m.compute()
    assert out["R@1/4"] == pytest.approx(1 / 3)
    assert out["R@2/4"] == pytest.approx(2 / 3)
    assert out["MRR"] == pytest.approx(float(mrr(SCORES, TARGET)))
    m.reset()
    assert math.isnan(m.compute()["MRR"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected scores"):
        mrr(SCORES[0], TARGET)
    with pytest.raises(ValueError, match="target indices"):
        mrr(SCORES, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(SCORES, TARGET, 5)
    with pytest.raises(ValueError, match="NaN"):
        mrr(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        mrr(SCORES, TARGET.float())
    m = RetrievalMetrics()
    m.update(SCORES, TARGET)
    with pytest.raises(ValueError, match="same number of candidates"):
        m.update(torch.zeros(1, 3), torch.tensor([0]))
