"""The run pool: worker count rules, thread shares, result order and error reporting."""

from __future__ import annotations

import operator

import pytest
import torch

from essence.core import parallel
from essence.core.parallel import MAX_WORKERS, map_runs, plan_workers, run_graph
from essence.core.runtime import available_cores, default_num_threads


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in (parallel.WORKERS_ENV, parallel.WORKER_THREADS_ENV, "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def test_plan_workers_defaults_to_one_per_core_on_cpu():
    assert plan_workers(100, "cpu") == min(available_cores(), MAX_WORKERS)
    assert plan_workers(1, "cpu") == 1                       # never more workers than runs


def test_plan_workers_stays_in_process_on_accelerators_torchrun_and_inside_workers(monkeypatch):
    assert plan_workers(10, torch.device("cuda", 0)) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert plan_workers(10, "cpu") == 1
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv(parallel.WORKER_THREADS_ENV, "1")
    assert plan_workers(10, "cpu") == 1


def test_plan_workers_honours_the_request_and_the_environment(monkeypatch):
    assert plan_workers(10, "cpu", requested=3) == 3
    assert plan_workers(2, "cpu", requested=3) == 2
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert plan_workers(10, "cpu") == 1
    monkeypatch.setenv(parallel.WORKERS_ENV, "two")
    with pytest.raises(ValueError, match="ESSENCE_WORKERS"):
        plan_workers(10, "cpu")
    with pytest.raises(ValueError, match="positive"):
        plan_workers(10, "cpu", requested=0)


def test_default_threads_follow_the_worker_share(monkeypatch):
    monkeypatch.setenv(parallel.WORKER_THREADS_ENV, "3")
    assert default_num_threads() == 3


def test_in_process_map_keeps_order():
    assert map_runs(operator.mul, [(2, 3), (4, 5)], workers=1) == [6, 20]


def test_worker_processes_keep_order_and_get_their_thread_share():
    jobs = [(i, i + 1) for i in range(5)]
    assert map_runs(operator.mul, jobs, workers=2) == [i * (i + 1) for i in range(5)]
    threads = map_runs(default_num_threads, [(), ()], workers=2)
    assert threads == [max(1, available_cores() // 2)] * 2


def test_a_failing_run_names_itself():
    with pytest.raises(RuntimeError, match="run bad failed in a worker process"):
        map_runs(int, [("1",), ("x",)], workers=2, names=["good", "bad"])
    with pytest.raises(ValueError, match="2 names for 1 jobs"):
        map_runs(int, [("1",)], workers=2, names=["a", "b"])


def _unlock(name, result):
    """teacher -> two students (the shape of Noisy Student's graph)."""
    if name == "t":
        return {"s1": (result, 2), "s2": (result, 3)}
    return {}


@pytest.mark.parametrize("workers", [1, 2])
def test_run_graph_queues_the_jobs_a_result_unlocks(workers):
    out = run_graph(operator.mul, {"t": (2, 5)}, workers=workers, after=_unlock, total=3)
    assert out == {"t": 10, "s1": 20, "s2": 30}


def test_run_graph_refuses_a_name_queued_twice():
    with pytest.raises(ValueError, match="queued twice"):
        run_graph(operator.mul, {"t": (1, 1), "s1": (1, 1)}, after=_unlock)


def test_per_process_builds_once_per_key():
    from essence.core.parallel import per_process

    calls = []

    def build(v):
        calls.append(v)
        return v * 10

    assert per_process("test-ns", ("a", 1), lambda: build(1)) == 10
    assert per_process("test-ns", ("a", 1), lambda: build(2)) == 10      # cached: not rebuilt
    assert per_process("test-ns", ("a", 2), lambda: build(3)) == 30      # a new key replaces it
    assert calls == [1, 3]
