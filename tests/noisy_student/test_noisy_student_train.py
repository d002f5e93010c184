"""The loop: resume inside and between generations, hidden labels never read, a student beating a weak teacher,
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essence.core.loop import NonFiniteLossError
from essence.core.runs import Run
from essence.noisy_student.data import DataConfig, make_split
from essence.noisy_student.evaluate import accuracy
from essence.noisy_student.train import load_generation, train, train_generation


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_resume_inside_and_between_generations_is_identical(tmp_path, cfg, data):
    full = train(cfg, Run(tmp_path / "full"), device="cpu", data=data, progress=False)
    # interrupted inside generation 1 (after 3 of 4 steps), then resumed
    run = Run(tmp_path / "cut")
    part = train(cfg, run, device="cpu", data=data, progress=False, stop_at=(1, 3))
    assert [g.generation for g in part.generations] == [0, 1] and part.generations[1].steps == 3
    resumed = train(cfg, run, device="cpu", data=data, progress=False, resume=True)
    for a, b in zip(full.generations, resumed.generations):
        assert _same(_weights(a.model), _weights(b.model)), f"generation {a.generation} differs after resume"
    # interrupted between generations (generation 2 not started): resumes from the saved files
    run2 = Run(tmp_path / "between")
    train(cfg, run2, device="cpu", data=data, progress=False, stop_at=(2, 0))
    assert (run2.dir / "generations" / "gen1.safetensors").exists()
    assert not (run2.dir / "generations" / "gen2.safetensors").exists()
    again = train(cfg, run2, device="cpu", data=data, progress=False, resume=True)
    assert _same(_weights(full.generations[-1].model), _weights(again.generations[-1].model))
    model, _, state = load_generation(run2.dir / "generations" / "gen2.safetensors")
    assert state["generation"] == 2 and _same(_weights(model), _weights(full.generations[-1].model))


def test_labels_of_unlabeled_split_are_never_read(cfg, synth):
    bars = synth.bars
    x, y = bars(160, classes=4, size=16, seed=1)
    test_x, test_y = bars(32, classes=4, size=16, seed=2)
    labeled = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(4)])
    poisoned = np.full_like(y, -1)                 # any read of a hidden label would crash or change results
    poisoned[labeled] = y[labeled]
    dcfg = DataConfig(labeled_per_class=4)
    a = make_split(x, y, labeled, test_x, test_y, dcfg, num_classes=4)
    b = make_split(x, poisoned, labeled, test_x, test_y, dcfg, num_classes=4)
    assert not hasattr(a, "unlabeled_y") and torch.equal(a.unlabeled_x, b.unlabeled_x)
    assert a.unlabeled_x.shape[0] == 160 - 16
    ra = train(cfg, None, device="cpu", data=a, progress=False)
    rb = train(cfg, None, device="cpu", data=b, progress=False)
    for ga, gb in zip(ra.generations, rb.generations):
        assert _same(_weights(ga.model), _weights(gb.model))


def test_student_beats_a_deliberately_weak_teacher(cfg, synth):
    data = synth.make_data(n_lab=8, n_unl=512, n_test=400, seed=5)
    c = cfg.with_overrides({"optim.teacher_steps": 3, "optim.student_steps": 60, "optim.lr": 0.05,
                            "noise.randaug_m": 2.0, "pseudo.threshold": 0.0})
    teacher = train_generation(c, data, 0, progress=False)
    from essence.noisy_student.train import make_pseudo_labels

    pseudo = make_pseudo_labels(teacher.model, data, c, 1)
    student = train_generation(c, data, 1, pseudo=pseudo, progress=False)
    acc_t = accuracy(teacher.model, data.test_x, data.test_y)
    acc_s = accuracy(student.model, data.test_x, data.test_y)
    assert acc_s > acc_t + 0.15, (acc_t, acc_s)


def test_bad_input(cfg, data, monkeypatch):
    from essence.noisy_student.data import SemiSupervisedData

    small = SemiSupervisedData(labeled_x=data.labeled_x, labeled_y=data.labeled_y, unlabeled_x=data.unlabeled_x[:5],
                               test_x=data.test_x, test_y=data.test_y, num_classes=4)
    with pytest.raises(ValueError, match="smaller than one unlabeled batch"):
        train(cfg, None, device="cpu", data=small, progress=False)
    with pytest.raises(ValueError, match="unlabeled set is empty"):
        SemiSupervisedData(labeled_x=data.labeled_x, labeled_y=data.labeled_y, unlabeled_x=data.unlabeled_x[:0],
                           test_x=data.test_x, test_y=data.test_y, num_classes=4)
    import essence.noisy_student.train as T

    real = T.noisy_student_loss

    def nan_loss(*a, **k):
        loss, parts = real(*a, **k)
        return loss * float("nan"), parts

    monkeypatch.setattr(T, "noisy_student_loss", nan_loss)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 0"):
        train_generation(cfg, data, 0, progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="needs pseudo labels"):
        train_generation(cfg, data, 1, progress=False)


def test_user_arrays_as_labeled_unlabeled_and_test_data(tmp_path, cfg, synth):
    from essence.noisy_student.data import load_data

    x, y = synth.bars(200, classes=4, size=16, seed=3)
    y[:16] = np.arange(16) % 4
    np.savez(tmp_path / "lab.npz", x=x[:16], y=y[:16])
    np.savez(tmp_path / "test.npz", x=x[150:], y=y[150:])
    np.save(tmp_path / "pool.npy", x[16:150])
    c = cfg.with_overrides({"data.labeled_dir": str(tmp_path / "lab.npz"), "data.test_dir": str(tmp_path / "test.npz"),
                            "data.unlabeled_dir": str(tmp_path / "pool.npy"), "data.image_size": 16,
                            "loop.generations": 1})
    data = load_data(c.data)
    assert data.num_classes == 4 and data.unlabeled_x.shape == (134, 1, 16, 16) and data.test_x.shape[0] == 50
    res = train(c, None, device="cpu", data=data, progress=False)
    assert len(res.generations) == 2
    with pytest.raises(ValueError, match="model.num_classes=4"):
        train(c.with_overrides({"model.num_classes": 10}), None, device="cpu", data=data, progress=False)
    with pytest.raises(ValueError, match="needs data.test_dir"):
        load_data(c.data.replace(test_dir=None))
