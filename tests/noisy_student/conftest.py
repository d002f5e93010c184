"""Synthetic data and a tiny config for fast Noisy Student tests (no Fashion-MNIST needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essence.noisy_student.config import PRESETS
from essence.noisy_student.data import SemiSupervisedData


def bars(n: int, classes: int = 4, size: int = 16, seed: int = 0, noise: float = 40.0):
    """Images whose class is the row band of a bright horizontal bar (uint8 (n, 1, size, size)), and labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(60, noise, (n, size, size))
    band = size // classes
    for i, c in enumerate(y):
        x[i, c * band:(c + 1) * band - 1, 2:-2] += 150
    x = np.clip(x, 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


def make_data(n_lab: int = 16, n_unl: int = 96, n_test: int = 64, classes: int = 4, size: int = 16,
              seed: int = 0) -> SemiSupervisedData:
    x, y = bars(n_lab + n_unl + n_test, classes, size, seed)
    y[:n_lab] = np.arange(n_lab) % classes           # every class labeled
    x = x.copy()
    band = size // classes
    for i in range(n_lab):                            # redraw the labeled images for their forced labels
        x[i] = np.clip(np.random.default_rng(seed + i).normal(60, 40, (size, size)), 0, 255)
        x[i, y[i] * band:(y[i] + 1) * band - 1, 2:-2] = 220
    t = torch.from_numpy(x)[:, None]
    return SemiSupervisedData(labeled_x=t[:n_lab], labeled_y=torch.from_numpy(y[:n_lab]),
                              unlabeled_x=t[n_lab:n_lab + n_unl], test_x=t[n_lab + n_unl:],
                              test_y=torch.from_numpy(y[n_lab + n_unl:]), num_classes=classes)


@pytest.fixture
def data():
    return make_data()


@pytest.fixture
def cfg():
    return PRESETS.build("tiny", ["model.num_classes=4", "optim.batch_size=8", "optim.unlabeled_ratio=2",
                                  "optim.teacher_steps=4", "optim.student_steps=4", "train.ckpt_every=2",
                                  "train.threads=1", "eval.batch_size=64"])


@pytest.fixture
def synth():
    """The helpers themselves: ``synth.bars(...)``, ``synth.make_data(...)``."""
    from types import SimpleNamespace

    return SimpleNamespace(bars=bars, make_data=make_data)
