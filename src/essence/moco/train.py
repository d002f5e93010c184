"""MoCo pre-training loop: one CPU, one GPU, or many processes under torchrun (DDP), same code path.

    result = train(PRESETS.build("quick"), Run.create("moco", "quick"))

Per step: draw this process's slice of the global batch, make two views on the device, run the MoCo module
(momentum update, shuffled keys, InfoNCE, enqueue of the all-gathered keys), back-propagate into the query
encoder only, SGD step, per-step LR schedule. Checkpoints hold the query and key encoders, the queue and its
pointer (module buffers), the optimizer, the schedule and the step; every random draw of a step comes from a
generator derived from (seed, step, rank), so ``resume=`` continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from essence.core import distributed as dist
from essence.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, unwrap_model
from essence.core.loop import GracefulInterrupt, Precision, build_scheduler, check_finite, should_run
from essence.core.progress import ProgressBar
from essence.core.runs import Run
from essence.core.runtime import default_num_threads, seed_everything
from essence.moco.config import MoCoConfig
from essence.moco.data import TwoViews, load_images, shard_indices, step_generator
from essence.moco.evaluate import evaluate_model
from essence.moco.model import MoCo

__all__ = ["train", "TrainResult", "build_model", "total_steps"]


@dataclass
class TrainResult:
    model: MoCo
    step: int
    history: list[dict] = field(default_factory=list)     # logged records (loss, pretext acc, lr, knn)
    checkpoint: Path | None = None
    seconds: float = 0.0                                   # wall time of the loop, kNN monitor included
    images_per_s: float = 0.0                              # training images per second (monitor excluded)
    monitor: list[dict] = field(default_factory=list)     # kNN monitor: step, train_seconds, knn_top1


def build_model(cfg: MoCoConfig, *, bank_size: int | None = None, seed: int | None = None) -> MoCo:
    """A freshly initialised MoCo module (identical on every process for the same seed)."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    return MoCo(cfg.model, bank_size=bank_size)


def total_steps(cfg: MoCoConfig, n_images: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for the global batch, drop_last."""
    per_epoch = n_images // cfg.optim.batch_size
    if per_epoch < 1:
        raise ValueError(f"optim.batch_size ({cfg.optim.batch_size}) is larger than the training set ({n_images})")
    total = per_epoch * cfg.optim.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps) if cfg.train.max_steps <= total else cfg.train.max_steps
    return per_epoch, total


def _knn_monitor(model, cfg, device, eval_data) -> float:
    res = evaluate_model(unwrap_model(model), cfg, device=device, linear=False, data=eval_data)
    return res["knn_top1"]


def train(cfg: MoCoConfig, run: Run | None = None, *, device: str | torch.device = "auto",
          resume: str | Path | None = None, progress: bool = True, images: torch.Tensor | None = None,
          eval_data=None) -> TrainResult:
    """Pre-train MoCo with ``cfg``; log to ``run`` (metrics.jsonl, checkpoints) when given.

    Args:
        cfg: the resolved config.
        run: run directory (None: no files are written).
        device: auto / cpu / cuda / mps (under torchrun each process takes cuda:LOCAL_RANK).
        resume: a checkpoint file or folder to continue from (queue, pointer, key encoder, optimizer, step).
        images: uint8 training images (N, 1, H, W) to use instead of loading ``cfg.data``.
        eval_data: (train_x, train_y, test_x, test_y) for the kNN monitor (default: loaded when needed).

    Raises:
        ValueError: inconsistent settings (batch not divisible by processes or bn_splits, ...).
        NonFiniteLossError: the loss became NaN/inf (the last checkpoint is kept).
    """
    info = dist.init_distributed(device)
    dev, world, rank = info.device, info.world_size, info.rank
    torch.set_num_threads(cfg.train.threads or default_num_threads())
    if cfg.optim.batch_size % world:
        raise ValueError(f"optim.batch_size ({cfg.optim.batch_size}) must be divisible by the number of "
                         f"processes ({world})")
    local_batch = cfg.optim.batch_size // world
    seed_everything(cfg.train.seed)
    if images is None:
        images, _ = load_images(cfg.data, "train", channels=cfg.model.in_chans)
    n_images = images.shape[0]
    per_epoch, total = total_steps(cfg, n_images)

    model = build_model(cfg, bank_size=n_images).to(dev)
    if model.shuffle_bn == "split" and local_batch % cfg.model.bn_splits:
        raise ValueError(f"the per-process batch ({local_batch}) must be divisible by model.bn_splits "
                         f"({cfg.model.bn_splits}) for shuffle_bn=split")
    params = [p for p in model.parameters() if p.requires_grad]          # f_q only: f_k is not optimised
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.optim.schedule, total,
                                warmup_steps=int(round(cfg.optim.warmup_epochs * per_epoch)),
                                milestones=[m * per_epoch for m in cfg.optim.milestones])
    prec = Precision(cfg.train.precision, dev)
    if run is not None:
        run.record_precision(prec)
    start = 0
    if resume is not None:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {path}")
        ckpt = load_checkpoint(found, modules={"moco": model}, optimizers={"sgd": optimizer},
                               schedulers={"lr": scheduler}, scalers={"amp": prec.scaler}, map_location=dev)
        start = ckpt.step
    ddp_model = model
    if world > 1:
        # broadcast_buffers=False: the queue is identical on every process by construction (all-gathered keys),
        # and BN statistics stay per process, as in per-GPU BN.
        ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                            forward_sync_buffers=False)
    views = TwoViews(cfg.aug)
    images_dev = images.to(dev)
    if run is not None:
        run.save_config(cfg)
    history: list[dict] = []
    monitor: list[dict] = []
    last_ckpt: Path | None = None
    t0 = time.perf_counter()
    eval_seconds = 0.0
    done = start

    def save(step: int) -> Path | None:
        if run is None or not dist.is_main():
            return None
        return save_checkpoint(run.checkpoints_dir / f"step-{step:06d}", modules={"moco": model},
                               optimizers={"sgd": optimizer}, schedulers={"lr": scheduler},
                               scalers={"amp": prec.scaler}, step=step, config=cfg,
                               state={"epoch": step // per_epoch})

    ddp_model.train()
    with GracefulInterrupt() as stop, ProgressBar(total - start, desc="moco train", unit="step",
                                                  disable=None if progress else True) as bar:
        for step in range(start, total):
            idx = shard_indices(n_images, step, per_epoch, local_batch, cfg.train.seed, rank, world)
            gen_aug = step_generator(cfg.train.seed, step, 10 + rank)      # this process's views
            gen_shared = step_generator(cfg.train.seed, step, 0)           # the shuffle permutation (rank 0's)
            x_q, x_k = views(images_dev[idx.to(dev)], gen_aug)
            with prec.autocast():
                out = ddp_model(x_q, x_k, index=idx.to(dev), generator=gen_shared)
            prec.backward(out.loss)
            check_finite(out.loss, step, "lower optim.lr")
            prec.step(optimizer)
            scheduler.step()
            done = step + 1
            rec = {}
            if should_run(step, cfg.train.log_every, total):
                stats = dist.reduce_dict({"loss": out.loss.detach(), "pretext_acc": out.accuracy})
                rec = {"step": done, "epoch": done / per_epoch, "lr": scheduler.get_last_lr()[0], **stats}
            if should_run(step, cfg.train.eval_every, total):   # its own cadence, independent of logging
                t_eval = time.perf_counter()
                if dist.is_main():
                    if eval_data is None:
                        from essence.moco.evaluate import _eval_data
                        eval_data = _eval_data(cfg)
                    knn = _knn_monitor(model, cfg, dev, eval_data)
                    monitor.append({"step": done, "train_seconds": t_eval - t0 - eval_seconds, "knn_top1": knn})
                    rec = {"step": done, "epoch": done / per_epoch, **rec, "knn_top1": knn}
                dist.barrier()
                eval_seconds += time.perf_counter() - t_eval
            if rec:
                history.append(rec)
                if run is not None:
                    run.log(**rec)
            bar.update(1, loss=f"{float(out.loss.detach()):.3f}")
            if should_run(step, cfg.train.ckpt_every, total) or stop.requested:
                last_ckpt = save(done) or last_ckpt
            if stop.requested:
                break
    seconds = time.perf_counter() - t0
    steps_run = max(done - start, 1)
    return TrainResult(model=model, step=done, history=history, checkpoint=last_ckpt, seconds=seconds,
                       images_per_s=steps_run * cfg.optim.batch_size / max(seconds - eval_seconds, 1e-9),
                       monitor=monitor)

