"""A resumed run follows the schedule and learning rate of the config it was resumed with (issue 9).

Plain ``LambdaLR.load_state_dict`` restores the schedule callable's ``total_steps`` and ``base_lrs`` from the
checkpoint, so resuming with a longer schedule trained at learning rate 0 and ``--set optim.lr`` was ignored.
"""

from __future__ import annotations

import json

import pytest
import torch

from essence.core.checkpoint import load_checkpoint, save_checkpoint
from essence.core.loop import ScheduleLR, build_scheduler, lr_lambda


def _setup(total: int, *, lr: float = 0.1, weight_decay: float = 1e-4, schedule: str = "cosine", warmup: int = 2):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return net, opt, build_scheduler(opt, schedule, total, warmup_steps=warmup, milestones=(3, 6))


def _run(net, opt, sched, start: int, stop: int) -> list[float]:
    """Train steps [start, stop); return the learning rate each optimizer step used."""
    used = []
    g = torch.Generator().manual_seed(1)
    x = torch.randn(stop, 4, 3, generator=g)
    for step in range(start, stop):
        used.append(opt.param_groups[0]["lr"])
        net(x[step]).square().mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return used


def _checkpoint(tmp_path, total: int, steps: int, **kw):
    net, opt, sched = _setup(total, **kw)
    _run(net, opt, sched, 0, steps)
    return save_checkpoint(tmp_path / f"step-{steps:06d}", modules={"net": net}, optimizers={"opt": opt},
                           schedulers={"lr": sched}, step=steps)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "step"])
def test_resume_with_a_longer_schedule_follows_the_new_one(tmp_path, schedule):
    path = _checkpoint(tmp_path, 8, 8, schedule=schedule)          # a finished 8-step run (cosine ends at lr 0)
    net, opt, sched = _setup(16, schedule=schedule)
    ckpt = load_checkpoint(path, modules={"net": net}, optimizers={"opt": opt}, schedulers={"lr": sched})
    resumed = _run(net, opt, sched, ckpt.step, 16)

    net_u, opt_u, sched_u = _setup(16, schedule=schedule)
    uninterrupted = _run(net_u, opt_u, sched_u, 0, 16)
    assert resumed == pytest.approx(uninterrupted[8:], rel=1e-12, abs=0)
    expected = [0.1 * lr_lambda(s, schedule=schedule, total_steps=16, warmup_steps=2, milestones=(3, 6))
                for s in range(8, 16)]
    assert resumed == pytest.approx(expected, rel=1e-12, abs=0)
    if schedule != "step":
        assert min(resumed) > 0                                    # the bug: every step at learning rate 0
    assert sched.get_last_lr() == pytest.approx(sched_u.get_last_lr(), rel=1e-12, abs=0)
    assert sched.last_epoch == sched_u.last_epoch == 16
    assert any("total_steps 8 -> 16" in c for c in sched.resume_changes)


def test_resume_mid_run_with_a_longer_schedule(tmp_path):
    path = _checkpoint(tmp_path, 10, 4)
    net, opt, sched = _setup(30)
    load_checkpoint(path, modules={"net": net}, optimizers={"opt": opt}, schedulers={"lr": sched})
    # the lr of the next step is the new schedule's at step 4, before any further sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_lambda(4, schedule="cosine", total_steps=30,
                                                                       warmup_steps=2))
    assert _run(net, opt, sched, 4, 30) == pytest.approx(_run(*_setup(30), 0, 30)[4:], rel=1e-12, abs=0)


def test_lr_and_weight_decay_overrides_on_resume_take_effect(tmp_path):
    path = _checkpoint(tmp_path, 20, 5, lr=0.1, weight_decay=1e-4)
    net, opt, sched = _setup(20, lr=0.4, weight_decay=0.0)
    load_checkpoint(path, modules={"net": net}, optimizers={"opt": opt}, schedulers={"lr": sched})
    group = opt.param_groups[0]
    assert group["initial_lr"] == 0.4 and group["weight_decay"] == 0.0 and group["momentum"] == 0.9
    assert sched.base_lrs == [0.4]
    assert "lr 0.1 -> 0.4" in sched.resume_changes
    expected = [0.4 * lr_lambda(s, schedule="cosine", total_steps=20, warmup_steps=2) for s in range(5, 20)]
    assert _run(net, opt, sched, 5, 20) == pytest.approx(expected, rel=1e-12, abs=0)
    # the optimizer's state (momentum buffers) still comes from the checkpoint
    assert all(torch.is_tensor(s.get("momentum_buffer")) for s in opt.state.values())


def test_unchanged_config_restores_exactly(tmp_path):
    path = _checkpoint(tmp_path, 12, 5)
    net, opt, sched = _setup(12)
    load_checkpoint(path, modules={"net": net}, optimizers={"opt": opt}, schedulers={"lr": sched})
    assert sched.resume_changes == []
    assert _run(net, opt, sched, 5, 12) == _run(*_setup(12), 0, 12)[5:]     # bit-identical


def test_a_decay_applied_during_training_survives_a_resume_with_a_new_lr(tmp_path):
    """Poly-encoder style plateau decay (``sched.base_lrs`` scaled) is kept as a factor of the new lr."""
    net, opt, sched = _setup(20, lr=0.1, schedule="constant", warmup=0)
    _run(net, opt, sched, 0, 3)
    sched.base_lrs = [lr * 0.4 for lr in sched.base_lrs]
    path = save_checkpoint(tmp_path / "c", optimizers={"opt": opt}, schedulers={"lr": sched}, step=3)

    same = _setup(20, lr=0.1, schedule="constant", warmup=0)
    load_checkpoint(path, optimizers={"opt": same[1]}, schedulers={"lr": same[2]})
    assert same[2].base_lrs == sched.base_lrs                             # unchanged: as saved

    net2, opt2, sched2 = _setup(20, lr=0.2, schedule="constant", warmup=0)
    load_checkpoint(path, optimizers={"opt": opt2}, schedulers={"lr": sched2})
    assert sched2.base_lrs == pytest.approx([0.2 * 0.4])
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.08)


def test_state_dict_is_json_and_records_the_schedule():
    _, _, sched = _setup(10)
    assert isinstance(sched, ScheduleLR)
    state = json.loads(json.dumps(sched.state_dict()))
    assert state["lr_lambdas"][0]["kw"]["total_steps"] == 10 and state["config_lrs"] == [0.1]
    assert "resume_changes" not in state


def test_moco_cli_resume_with_more_steps_follows_the_longer_schedule(tmp_path):
    """End to end (docs/moco.md): `--resume RUN --set train.max_steps=N` logs the uninterrupted run's lr."""
    from essence.core.runs import read_metrics
    from essence.moco.cli import main as moco_main

    common = ["--set", "data.train_limit=64", "--set", "train.log_every=1", "--set", "eval.knn_bank=64"]
    short, full = tmp_path / "short", tmp_path / "full"
    assert moco_main(["train", "--preset", "tiny", "--device", "cpu", "--out", str(short),
                      "--set", "train.max_steps=2", *common]) == 0
    assert moco_main(["train", "--resume", str(short), "--device", "cpu", "--set", "train.max_steps=5",
                      "--set", "optim.lr=0.06"]) == 0
    assert moco_main(["train", "--preset", "tiny", "--device", "cpu", "--out", str(full),
                      "--set", "train.max_steps=5", "--set", "optim.lr=0.06", *common]) == 0
    resumed = {r["step"]: r["lr"] for r in read_metrics(short) if r["step"] > 2}
    uninterrupted = {r["step"]: r["lr"] for r in read_metrics(full)}
    assert sorted(resumed) == [3, 4, 5]
    for step, lr in resumed.items():
        assert lr == pytest.approx(uninterrupted[step], rel=1e-12, abs=1e-15)
        assert lr == pytest.approx(0.06 * lr_lambda(step, schedule="cosine", total_steps=5), rel=1e-12, abs=1e-15)
    assert resumed[3] > 0
    assert json.loads((short / "config.json").read_text())["train"]["max_steps"] == 5
