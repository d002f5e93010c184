"""Independent runs side by side: a process pool that shares the CPU cores out among workers.

A reproduction trains many small, independent runs (arms x seeds). Small networks do not scale to a second
thread: on a 2-core Xeon an IDVAE training step takes 93 ms on two threads and 128 ms on one, so two one-thread
processes finish 1.45x more runs per hour than one two-thread process (measured in the standard runs: MoCo
1.23x; StyleGAN2 only 1.06x, its one-thread step slowing from 0.75 to 0.875 s beside a second run). On a GPU, or
under ``torchrun``, the runs stay in this process, one after another.

Every run is seeded by its own config, so its numbers do not depend on which worker ran it or in what order
(only on the thread count, at the level of float rounding). Workers are started with ``spawn`` (a forked child of
a process that already ran OpenMP can hang).

``ESSENCE_WORKERS=N`` sets the number of workers (1 = in-process, the old behaviour); the default uses one worker
per available core, at most :data:`MAX_WORKERS`, never more than the runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TypeVar

import torch

from essence.core.progress import ProgressBar
from essence.core.runtime import available_cores, tune_allocator

__all__ = ["plan_workers", "map_runs", "run_graph", "per_process", "WORKERS_ENV", "WORKER_THREADS_ENV", "MAX_WORKERS"]

WORKERS_ENV = "ESSENCE_WORKERS"
WORKER_THREADS_ENV = "ESSENCE_WORKER_THREADS"   # set inside a worker: default_num_threads() returns it
MAX_WORKERS = 8                                  # each worker holds its own copy of the data and feature networks
T = TypeVar("T")


def plan_workers(n_runs: int, device: torch.device | str, requested: int | None = None) -> int:
    """How many worker processes to run ``n_runs`` independent runs with on ``device``.

    ``requested`` (or ``ESSENCE_WORKERS``) wins when given; otherwise one per available core on a CPU (at most
    :data:`MAX_WORKERS`), and 1 on an accelerator, under ``torchrun``, or inside a worker already.
    """
    if requested is None and os.environ.get(WORKERS_ENV, "").strip():
        raw = os.environ[WORKERS_ENV].strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {raw!r}")
        requested = int(raw)
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"workers must be a positive integer, got {requested!r}")
        return max(1, min(requested, n_runs))
    if (torch.device(device).type != "cpu" or int(os.environ.get("WORLD_SIZE", "1")) > 1
            or os.environ.get(WORKER_THREADS_ENV)):
        return 1
    return max(1, min(n_runs, available_cores(), MAX_WORKERS))


_PER_PROCESS: dict[str, tuple[str, Any]] = {}


def per_process(namespace: str, key: object, build: Callable[[], T]) -> T:
    """``build()`` once per process and ``key``: what every run of a reproduction shares (its images, feature
    networks), built by the first run a worker gets and reused by the next ones. One value is kept per
    ``namespace``: a new key replaces the old value."""
    token = repr(key)
    hit = _PER_PROCESS.get(namespace)
    if hit is None or hit[0] != token:
        _PER_PROCESS.pop(namespace, None)
        _PER_PROCESS[namespace] = (token, build())
    return _PER_PROCESS[namespace][1]


def _init_worker(threads: int) -> None:
    tune_allocator()
    os.environ[WORKER_THREADS_ENV] = str(threads)
    os.environ.setdefault("ESSENCE_PROGRESS", "0")      # one bar, drawn by the parent
    torch.set_num_threads(threads)


def map_runs(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int = 1, names: Sequence[str] | None = None,
             desc: str = "runs") -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed by ``workers`` processes, each on ``cores // workers`` threads.

    ``fn`` must be a module-level function and its arguments and results picklable. Results come back in the
    order of ``jobs``. The first error stops the pool (queued runs are cancelled) and is raised here, naming the
    run. With ``workers == 1`` everything runs in this process, with no pickling.
    """
    names = list(names) if names is not None else [str(i) for i in range(len(jobs))]
    if len(names) != len(jobs):
        raise ValueError(f"{len(names)} names for {len(jobs)} jobs")
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    out = run_graph(fn, dict(zip(names, jobs)), workers=workers, desc=desc)
    return [out[n] for n in names]


def run_graph(fn: Callable[..., Any], jobs: Mapping[str, tuple], *, workers: int = 1,
              after: Callable[[str, Any], Mapping[str, tuple]] | None = None, total: int | None = None,
              desc: str = "runs") -> dict[str, Any]:
    """Run ``fn(*job)`` for every named job, and for the jobs that finished ones unlock.

    ``after(name, result)`` is called (in this process) when a job finishes and returns the named jobs that
    needed its result (a student after its teacher); they are queued at once. Returns ``{name: result}``.
    ``total`` (the number of jobs in all) sizes the progress bar. Queued jobs start in the order they were
    queued; with ``workers == 1`` they run here, breadth first.
    """
    results: dict[str, Any] = {}
    known = set(jobs)

    def followups(name: str) -> dict[str, tuple]:
        more = dict(after(name, results[name])) if after is not None else {}
        clash = known & set(more)
        if clash:
            raise ValueError(f"job names must be unique: {sorted(clash)} queued twice")
        known.update(more)
        return more

    if workers <= 1 or (len(jobs) <= 1 and after is None):
        queue = list(jobs.items())
        while queue:
            name, job = queue.pop(0)
            results[name] = fn(*job)
            queue.extend(followups(name).items())
        return results
    import multiprocessing as mp

    threads = max(1, available_cores() // workers)
    t0 = time.perf_counter()
    with ProgressBar(total or len(jobs), desc=f"{desc} ({workers} processes x {threads} thread{'s' * (threads > 1)})",
                     unit="run") as bar, \
            ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *job): name for name, job in jobs.items()}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                name = futures[fut]
                err = fut.exception()
                if err is not None:
                    for other in pending:
                        other.cancel()
                    raise RuntimeError(f"run {name} failed in a worker process: {err}") from err
                results[name] = fut.result()
                bar.update(1, last=f"{name} ({time.perf_counter() - t0:.0f} s)")
                for new_name, job in followups(name).items():
                    fut_new = pool.submit(fn, *job)
                    futures[fut_new] = new_name
                    pending.add(fut_new)
    return results
