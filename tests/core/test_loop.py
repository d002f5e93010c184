import math
import os
import signal

import pytest
import torch

from essence.core.loop import (
    GracefulInterrupt,
    NonFiniteLossError,
    Precision,
    build_scheduler,
    check_finite,
    lr_lambda,
    should_run,
)


def test_cosine_with_warmup_matches_formula():
    total, warm = 100, 10
    for step in [0, 5, 9, 10, 50, 99]:
        expected = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert lr_lambda(step, schedule="cosine", total_steps=total, warmup_steps=warm) == pytest.approx(expected)


def test_step_schedule_and_scheduler_resume():
    assert lr_lambda(59, schedule="step", total_steps=100, milestones=(60, 80)) == 1.0
    assert lr_lambda(60, schedule="step", total_steps=100, milestones=(60, 80)) == pytest.approx(0.1)
    assert lr_lambda(85, schedule="step", total_steps=100, milestones=(60, 80)) == pytest.approx(0.01)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, "cosine", 20, warmup_steps=2)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([p], lr=1.0)
    sched2 = build_scheduler(opt2, "cosine", 20, warmup_steps=2)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError, match="schedule must be"):
        build_scheduler(opt, "exp", 10)


def test_check_finite_and_precision(monkeypatch):
    monkeypatch.setenv("ESSENCE_NATIVE_BF16", "0")  # the fp32 branch of `auto`, whatever this CPU has
    check_finite(torch.tensor(1.0), 3)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3"):
        check_finite(torch.tensor(float("nan")), 3)
    assert Precision("auto", "cpu").mode == "fp32"
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        Precision("fp16", "cpu")
    prec = Precision("bf16", "cpu")
    with prec.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


def test_precision_step_clips_and_zeroes_grads():
    lin = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    prec = Precision("fp32", "cpu")
    prec.backward(lin(torch.full((1, 3), 100.0)).sum())
    raw = torch.cat([p.grad.flatten() for p in lin.parameters()]).norm()
    norm = prec.step(opt, clip_norm=1.0)
    assert norm == pytest.approx(float(raw))
    assert all(p.grad is None for p in lin.parameters())


def test_graceful_interrupt_sets_flag():
    with GracefulInterrupt() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested


def test_should_run():
    assert [s for s in range(10) if should_run(s, 4, total=10)] == [3, 7, 9]


def test_nan_loss_exits_with_one_clear_line(capsys):
    from essence.core.cli import run_cli

    def run():
        check_finite(torch.tensor(float("inf")), 7)

    assert run_cli(run) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "loss is inf at step 7" in err and "Traceback" not in err
