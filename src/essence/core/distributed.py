"""torch.distributed helpers for torchrun, each of which also works in a single process.

``torchrun --nproc_per_node=N -m essence <method> train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; :func:`init_distributed` reads them and starts a process group (NCCL on CUDA, gloo on
the CPU). Without them every helper below degrades to its single-process meaning: ``all_gather(x)`` is ``x``,
``all_reduce`` is the identity, ``is_main()`` is True.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from essence.core.runtime import resolve_device

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main",
    "barrier",
    "all_gather",
    "all_gather_with_grad",
    "all_reduce",
    "broadcast",
    "broadcast_object",
    "reduce_dict",
    "main_first",
    "launch_local",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0; before the process group exists, what torchrun's ``RANK`` says (so that only one process logs)."""
    return get_rank() == 0 if is_distributed() else os.environ.get("RANK", "0") == "0"


def init_distributed(device: str | torch.device = "auto", *, backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Start the process group if launched by torchrun (WORLD_SIZE > 1); return rank, world size and device.

    Under torchrun each process gets ``cuda:LOCAL_RANK`` when CUDA is used. Safe to call twice.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not is_distributed():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistInfo(rank=get_rank(), world_size=get_world_size(), local_rank=local_rank, device=dev)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Let rank 0 run the block first (e.g. to build a cache), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@torch.no_grad()
def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (equal shapes; no gradient).

    Shape: (B, ...) -> (world_size * B, ...), ordered by rank.
    """
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


_GRADIENT_GROUP: dict[int, object] = {}


def _gradient_group():
    """A second process group over all ranks, for collectives issued during backward (created on first use,
    which every rank reaches at the same point of the forward pass)."""
    key = id(dist.group.WORLD)
    if key not in _GRADIENT_GROUP:
        _GRADIENT_GROUP[key] = dist.new_group(ranks=list(range(get_world_size())))
    return _GRADIENT_GROUP[key]


class _AllGatherGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        group = _gradient_group()
        parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        ctx.batch = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every process holds a loss over the whole gathered batch; the gradient w.r.t. the local slice is
        # the sum of all processes' gradients for that slice. The all-reduce runs on its own process group:
        # under DDP it is issued from inside backward, while DDP's bucket all-reduces are in flight on the
        # default group, and the two must never be paired with each other.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=_gradient_group())
        start = get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather` but gradients flow back to each process's own slice.

    With DDP's gradient averaging, a loss computed over the gathered batch on every process then yields the
    same parameter gradients as one process computing that loss on the concatenated batch.
    """
    if not is_distributed():
        return tensor
    return _AllGatherGrad.apply(tensor)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum / mean / max / min over processes; returns a new tensor (the input is not modified)."""
    if op not in {"sum", "mean", "max", "min"}:
        raise ValueError(f"op must be one of sum, mean, max, min, got {op!r}")
    out = tensor.detach().clone()
    if not is_distributed():
        return out
    reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM,
                 "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    dist.all_reduce(out, op=reduce_op)
    if op == "mean":
        out = out / get_world_size()
    return out


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Copy ``tensor`` from rank ``src`` into every process's ``tensor`` (in place; also returned)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Broadcast a small picklable Python object (e.g. a run directory name) from rank ``src``."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_dict(values: Mapping[str, float | torch.Tensor], op: str = "mean") -> dict[str, float]:
    """Reduce a dict of scalars across processes (one collective for all keys); returns Python floats."""
    keys = sorted(values)
    if not keys:
        return {}
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if is_distributed() and dist.get_backend() == "nccl":
        stacked = stacked.cuda()
    reduced = all_reduce(stacked, op=op).cpu().tolist()
    return dict(zip(keys, reduced))


# ----------------------------------------------------------------------------------------------------------
# launching local process groups (tests, CPU experiments)
# ----------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_worker(rank: int, world_size: int, port: int, fn, args, queue) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    try:
        init_distributed("cpu", backend="gloo", timeout_s=120)
        result = fn(rank, *args)
        # plain pickle bytes: tensors sent through the queue as shared memory would die with this process
        queue.put((rank, "ok", pickle.dumps(result)))
    except BaseException as err:  # report the failure to the parent instead of hanging it
        import traceback

        queue.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        cleanup()


def launch_local(fn, world_size: int = 2, args: tuple = (), timeout_s: float = 300.0) -> list:
    """Run ``fn(rank, *args)`` in ``world_size`` real processes joined in a gloo group on this machine.

    Returns the per-rank return values (which must be picklable), ordered by rank. ``fn`` must be importable
    (a module-level function). Used by the multi-process tests; a 1-process call works too.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_local_worker, args=(r, world_size, port, fn, args, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    errors: list[str] = []
    try:
        for _ in range(world_size):
            rank, status, value = queue.get(timeout=timeout_s)
            if status == "ok":
                results[rank] = pickle.loads(value)  # our own child processes' results
            else:
                errors.append(f"rank {rank}: {value}")
                break
    finally:
        for p in procs:
            p.join(timeout=5 if errors else timeout_s)
            if p.is_alive():
                p.terminate()
    if errors:
        raise RuntimeError("a local process failed:\n" + "\n".join(errors))
    return [results[r] for r in range(world_size)]
