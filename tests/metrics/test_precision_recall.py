"""Improved precision / recall (Kynkäänniemi et al. 2019) against a brute-force NumPy reference."""

import numpy as np
import pytest
import torch

from essence.metrics.precision_recall import PrecisionRecall, knn_radii, manifold_membership, precision_recall


def reference_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Loops straight from the paper: radius = distance to the k-th nearest other point of the same set."""

    def radii(x):
        out = []
        for i in range(len(x)):
            d = sorted(float(np.linalg.norm(x[i] - x[j])) for j in range(len(x)) if j != i)
            out.append(d[k - 1])
        return out

    def inside(q, ref, rad):
        return [any(np.linalg.norm(qi - ref[j]) <= rad[j] for j in range(len(ref))) for qi in q]

    precision = float(np.mean(inside(fake, real, radii(real))))
    recall = float(np.mean(inside(real, fake, radii(fake))))
    return precision, recall


@pytest.mark.parametrize("k", [1, 3])
def test_matches_brute_force(k):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(60, 6))
    fake = rng.normal(loc=0.6, scale=0.7, size=(45, 6))          # narrower and shifted: precision != recall
    p_ref, r_ref = reference_precision_recall(real, fake, k)
    res = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, block=7)
    assert res["precision"] == pytest.approx(p_ref) and res["recall"] == pytest.approx(r_ref)
    assert 0 < res["precision"] < 1 and 0 < res["recall"] < 1
    assert res["precision"] != res["recall"]


def test_radii_exclude_the_point_itself_and_boundary_counts_as_inside():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    torch.testing.assert_close(knn_radii(x, k=1), torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(knn_radii(x, k=2), torch.tensor([3.0, 2.0, 3.0, 5.0], dtype=torch.float64))
    q = torch.tensor([[-1.0], [8.9], [9.1]])
    member = manifold_membership(q, x, knn_radii(x, k=1))
    assert member.tolist() == [True, True, False]      # -1 is exactly on the ball of 0 (radius 1)


def test_identical_sets_have_full_precision_and_recall_and_disjoint_sets_none():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(50, 3)))
    assert precision_recall(a, a.clone()) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(a, a + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_accumulating_class_equals_functional():
    rng = np.random.default_rng(3)
    real, fake = torch.from_numpy(rng.normal(size=(70, 5))), torch.from_numpy(rng.normal(0.3, 1.1, size=(40, 5)))
    m = PrecisionRecall(k=3)
    for chunk in real.split(16):
        m.update(chunk, real=True)
    for chunk in fake.split(9):
        m.update(chunk, real=False)
    assert m.compute() == precision_recall(real, fake, k=3)


def test_bad_input():
    with pytest.raises(ValueError, match=r"features of shape \(N, D\)"):
        precision_recall(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="same D"):
        precision_recall(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="k must be an integer in 1..4"):
        precision_recall(torch.randn(5, 2), torch.randn(6, 2), k=5)
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(torch.full((5, 2), float("nan")), torch.randn(6, 2))
