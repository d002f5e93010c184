"""Training loop of IDVAE and its baselines: one CPU, one GPU, or many processes under torchrun, same code.

    result = train(PRESETS.build("quick"), Run.create("idvae", "quick"))

Per step (card 2.4): draw this process's slice of the global batch and the step's noise (eps, z_p, y_p), run
:func:`~essence.idvae.loss.compute_terms`, form the objectives, and give each role's parameters the gradient of the
objectives that :data:`~essence.idvae.loss.UPDATES` assigns to it (``torch.autograd.grad`` with explicit inputs);
under torchrun the gradients are averaged over processes; one Adam step updates everything (two parameter
groups: encoder/discriminator and decoder). Every random draw of a step comes from a generator derived from
(seed, step, rank), and checkpoints hold model, optimizer, scaler and step, so ``resume=`` continues exactly as an
uninterrupted run would. A non-finite loss term stops the run with a message naming the term and the knob to
turn, after saving the (still finite) parameters as the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from essence.core import distributed as dist
from essence.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from essence.core.loop import GracefulInterrupt, NonFiniteLossError, Precision, should_run
from essence.core.progress import ProgressBar, console
from essence.core.runs import Run
from essence.core.runtime import default_num_threads, seed_everything
from essence.idvae.config import IDVAEConfig
from essence.idvae.data import load_images, shard_indices, step_generator, to_model_range
from essence.idvae.loss import UPDATES, VAE_UPDATES, StepTerms, compute_terms, objectives, role_gradients
from essence.idvae.model import VAE, build_model

__all__ = ["train", "train_step", "TrainResult", "build", "total_steps", "make_optimizer", "HINTS"]

COLLAPSE_RATIO = 0.2    # warn when samples are less than 20% as diverse as a real batch (mean pairwise L2)
# what to turn when a term becomes NaN / inf
HINTS = {"L_prior": "lower optim.lr or model.logvar_clamp", "L_pixel": "lower optim.lr",
         "L_GAN": "lower optim.lr or loss.lambda_d", "L_adv": "lower optim.lr or loss.adv_weight",
         "L_FM": "lower loss.gamma or optim.lr"}


@dataclass
class TrainResult:
    model: VAE
    step: int
    history: list[dict] = field(default_factory=list)     # logged records (terms, D outputs, monitor)
    checkpoint: Path | None = None
    seconds: float = 0.0
    images_per_s: float = 0.0


def build(cfg: IDVAEConfig, *, seed: int | None = None) -> VAE:
    """A freshly initialised model of ``cfg.model.kind`` (identical on every process for the same seed)."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    return build_model(cfg.model)


def make_optimizer(model: VAE, cfg: IDVAEConfig) -> torch.optim.Adam:
    """Adam with two groups: encoder + discriminator roles (trunks, heads) and the decoder (generator)."""
    decoder = {id(p) for p in model.decoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in decoder]
    return torch.optim.Adam([{"params": rest, "lr": cfg.optim.lr},
                             {"params": list(model.decoder.parameters()), "lr": cfg.optim.lr_decoder or cfg.optim.lr}],
                            betas=(cfg.optim.beta1, cfg.optim.beta2))


def total_steps(cfg: IDVAEConfig, n_images: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for the global batch, drop_last."""
    per_epoch = n_images // cfg.optim.batch_size
    if per_epoch < 1:
        raise ValueError(f"optim.batch_size ({cfg.optim.batch_size}) is larger than the training set ({n_images})")
    return per_epoch, cfg.train.max_steps or per_epoch * cfg.optim.epochs


def _average_gradients(model: torch.nn.Module) -> None:
    """Mean of every parameter's gradient over processes (one flat all-reduce); a no-op in one process."""
    if not dist.is_distributed():
        return
    params = list(model.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    torch.distributed.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def _sample_diversity(x: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images of a batch (a collapse detector: near 0 = one output for all z)."""
    flat = x.detach().float().flatten(1)
    if flat.shape[0] < 2:
        return float("nan")
    d = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(d.sum() / (n * (n - 1)))


class _NonFinite(Exception):
    def __init__(self, term: str, value: float):
        super().__init__(term)
        self.term, self.value = term, value


def train_step(model: VAE, optimizer: torch.optim.Optimizer, prec: Precision, cfg: IDVAEConfig, x: torch.Tensor,
               y: torch.Tensor | None, eps: torch.Tensor, z_p: torch.Tensor,
               y_p: torch.Tensor | None) -> tuple[StepTerms, dict[str, float]]:
    """One optimisation step on a batch (x in [-1, 1]); returns the terms and their logged values.

    The forward pass runs under the run's autocast; every role gets the gradients of its objectives only
    (:data:`~essence.idvae.loss.UPDATES`), averaged over processes; one Adam step. Raises before any parameter
    changes when a term is NaN / inf.
    """
    updates = UPDATES if model.has_discriminator else VAE_UPDATES
    with prec.autocast():
        terms = compute_terms(model, x, y, eps, z_p, y_p, cfg.loss)
        objs = objectives(terms, cfg.loss, adversarial=model.has_discriminator)
    values = terms.scalars()
    for k in ("L_prior", "L_pixel", "L_GAN", "L_adv", "L_FM"):
        if k in values and not math.isfinite(values[k]):
            raise _NonFinite(k, values[k])
    role_gradients(model, objs, updates, terms, scale=prec.scaler.scale if prec.scaler.is_enabled() else None)
    _average_gradients(model)
    prec.step(optimizer)
    return terms, values


def train(cfg: IDVAEConfig, run: Run | None = None, *, device: str | torch.device = "auto",
          resume: str | Path | None = None, progress: bool = True, images: torch.Tensor | None = None,
          labels: torch.Tensor | None = None, monitor: Callable[[VAE], dict] | None = None) -> TrainResult:
    """Train ``cfg.model.kind`` (IDVAE, VAE or VAE-GAN) with ``cfg``; log to ``run`` when given.

    Args:
        cfg: the resolved config.
        run: run directory (None: no files are written).
        device: auto / cpu / cuda / mps (under torchrun each process takes cuda:LOCAL_RANK).
        resume: a checkpoint file or folder to continue from.
        images: uint8 training images (N, 1, H, W) instead of loading ``cfg.data``; labels (N,) with them.
        monitor: called with the model every ``train.eval_every`` steps on the main process (e.g. an FID
            monitor); its dict is logged.

    Raises:
        ValueError: inconsistent settings (batch larger than the data, not divisible by processes, ...).
        NonFiniteLossError: a loss term became NaN/inf (the last good checkpoint is kept and named).
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
        images, labels = load_images(cfg.data, "train")
    if cfg.model.conditional and labels is None:
        raise ValueError("a conditional model needs labels for its training images")
    if images.ndim != 4 or images.shape[1:] != (cfg.model.channels, cfg.model.image_size, cfg.model.image_size):
        raise ValueError(f"training images must be (N, {cfg.model.channels}, {cfg.model.image_size}, "
                         f"{cfg.model.image_size}), got {tuple(images.shape)}")
    n_images = images.shape[0]
    per_epoch, total = total_steps(cfg, n_images)

    model = build(cfg).to(dev)
    if world > 1:                                   # identical initial weights everywhere
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)
    optimizer = make_optimizer(model, cfg)
    prec = Precision(cfg.train.precision, dev)
    start = 0
    if resume is not None:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {path}")
        ckpt = load_checkpoint(found, modules={"model": model}, optimizers={"adam": optimizer},
                               scalers={"amp": prec.scaler}, map_location=dev)
        start = ckpt.step
    images_dev = images.to(dev)
    labels_dev = labels.to(dev) if labels is not None else None
    if run is not None:
        run.save_config(cfg)
        run.record_precision(prec, quiet=not progress)
    history: list[dict] = []
    last_ckpt: Path | None = None
    t0 = time.perf_counter()
    done = start
    d, K = cfg.model.latent, cfg.model.num_classes

    def save(step: int) -> Path | None:
        if run is None or not dist.is_main():
            return None
        return save_checkpoint(run.checkpoints_dir / f"step-{step:06d}", modules={"model": model},
                               optimizers={"adam": optimizer}, scalers={"amp": prec.scaler}, step=step,
                               config=cfg, state={"epoch": step / per_epoch, "kind": cfg.model.kind})

    model.train()
    warned = False
    with GracefulInterrupt() as stop, ProgressBar(total - start, desc=f"idvae train ({cfg.model.kind})",
                                                  unit="step", disable=None if progress else True) as bar:
        for step in range(start, total):
            idx = shard_indices(n_images, step, per_epoch, local_batch, cfg.train.seed, rank, world).to(dev)
            gen = step_generator(cfg.train.seed, step, 10 + rank)
            eps = torch.randn(local_batch, d, generator=gen).to(dev)
            z_p = torch.randn(local_batch, d, generator=gen).to(dev)
            y_p = torch.randint(0, K, (local_batch,), generator=gen).to(dev) if cfg.model.conditional else None
            x = to_model_range(images_dev[idx])
            y = labels_dev[idx] if cfg.model.conditional else None
            try:
                terms, values = train_step(model, optimizer, prec, cfg, x, y, eps, z_p, y_p)
            except _NonFinite as err:
                last_ckpt = save(step) or last_ckpt     # the parameters are still finite: keep them
                where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                raise NonFiniteLossError(f"{err.term} is {err.value} at step {step} ({cfg.model.kind}); "
                                         f"training stopped{where} ({HINTS[err.term]})") from None
            done = step + 1
            eval_now = monitor is not None and should_run(step, cfg.train.eval_every, total)
            if should_run(step, cfg.train.log_every, total) or eval_now:
                # collapse detectors: sample diversity relative to the real batch's (near 0 = one output for
                # every z), and the spread of h (near 0 = the trunk collapsed, card pitfall 1)
                fake_div = _sample_diversity(terms.x_prior if terms.x_prior is not None else terms.x_tilde)
                monitors = {"diversity": fake_div, "diversity_ratio": fake_div / max(_sample_diversity(x), 1e-12)}
                if terms.h_real is not None:
                    monitors["h_std"] = float(terms.h_real.detach().float().std(dim=0).mean())
                rec = {"step": done, "epoch": done / per_epoch, **dist.reduce_dict({**values, **monitors})}
                if rec["diversity_ratio"] < COLLAPSE_RATIO and not warned and dist.is_main():
                    warned = True
                    console.print(f"[yellow]warning:[/] samples at step {done} are {rec['diversity_ratio']:.0%} as "
                                  f"diverse as real images: the generator may be collapsing (lower optim.lr or "
                                  f"loss.adv_weight)", highlight=False)
                if eval_now:
                    if dist.is_main():
                        rec.update(monitor(model))
                        model.train()
                    dist.barrier()
                history.append(rec)
                if run is not None:
                    run.log(**rec)
            bar.update(1, loss=f"{values['L_pixel']:.1f}")
            if should_run(step, cfg.train.ckpt_every, total) or stop.requested:
                last_ckpt = save(done) or last_ckpt
            if stop.requested:
                break
    seconds = time.perf_counter() - t0
    steps_run = max(done - start, 1)
    return TrainResult(model=model, step=done, history=history, checkpoint=last_ckpt, seconds=seconds,
                       images_per_s=steps_run * cfg.optim.batch_size / max(seconds, 1e-9))
