"""Seeding, deterministic mode and device selection."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import random
import sys

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device", "set_deterministic", "default_num_threads", "step_generator",
           "shard_indices"]


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a fresh ``torch.Generator`` seeded the same way.

    With ``deterministic=True`` torch is also asked to use deterministic kernels (slower on GPU).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        set_deterministic(True)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic algorithms (and cuBLAS for a deterministic workspace)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a device that is malformed or not on this machine raises a one-line
    ValueError (``cuda:7`` with 2 GPUs, ``cuda`` with none)."""
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, sep, index = name.partition(":")
    if kind not in {"cpu", "cuda", "mps"} or (sep and not index.isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {str(device)!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was requested but torch sees no CUDA GPU (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if sep and int(index) >= count:
            raise ValueError(f"device {name!r} was requested but this machine has {count} CUDA GPU"
                             f"{'' if count == 1 else 's'} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but this machine has no MPS backend")
    return torch.device(name)


ALLOCATOR_ENV = "ESSENCE_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameter numbers (malloc.h)
_allocator_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep freed tensor memory inside the process (glibc malloc: blocks up to 32 MiB from the heap, freed memory
    kept up to 1 GiB) instead of returning it to the kernel and faulting it back in on the next allocation.

    A CPU training step frees and re-allocates the same large activations every iteration; with glibc's defaults
    each of them is a fresh ``mmap`` whose pages fault in again (a StyleGAN2 iteration at the standard preset's size:
    ~16,000 page faults and 37 ms of system time per iteration; after this call ~400 and 2 ms). The memory held
    back is reused by the next step, so the peak is the same; only its return to the kernel is deferred.

    Called by the ``essence`` command and by the worker processes of :mod:`essence.core.parallel`; a library user
    may call it once at start-up. Does nothing (and returns False) off Linux/glibc, when ``ESSENCE_MALLOC=default``,
    or when ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` are set (the user's own settings win).
    Returns whether the allocator was changed; later calls return the first call's answer."""
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if (os.environ.get(ALLOCATOR_ENV, "").strip().lower() == "default" or not sys.platform.startswith("linux")
            or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
            or platform.libc_ver()[0] != "glibc"):
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = bool(ok)
    return _allocator_tuned


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def default_num_threads() -> int:
    """Threads for intra-op parallelism: the cores this process may use, divided among the local processes under
    torchrun, or this worker's share of them inside :func:`essence.core.parallel.map_runs`."""
    share = os.environ.get("ESSENCE_WORKER_THREADS", "")   # inside a worker of core.parallel.map_runs
    if share.isdigit() and int(share) > 0:
        return int(share)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, available_cores() // local_world)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator derived from (seed, step, stream): every random draw of a training step is reproducible, so
    a resumed run draws exactly what the uninterrupted run would have drawn, on any number of processes. Use a
    different ``stream`` for each independent draw of a step (augmentation per rank, noise, a shared permutation)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def shard_indices(n: int, step: int, steps_per_epoch: int, batch: int, seed: int, rank: int = 0,
                  world: int = 1) -> torch.Tensor:
    """This process's ``batch`` sample indices for global step ``step``: a fresh permutation of ``n`` per epoch
    (drop_last), the global batch ``batch * world`` split into contiguous per-rank slices."""
    epoch, i = divmod(step, steps_per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed, epoch, 1_000_000))
    start = i * batch * world + rank * batch
    return perm[start:start + batch]
