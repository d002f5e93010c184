"""StyleGAN2 training loop (the phases of stylegan2-ada-pytorch's ``training_loop``): one CPU, one GPU, or many
processes under torchrun.

Per iteration ``step``:

- **Gmain**: L_G on a fresh minibatch (style mixing 0.9), Adam step of G;
- **Greg** (every ``pl_interval`` steps, when ``pl_weight > 0``): path-length penalty on ``B / pl_batch_shrink``
  samples, times ``pl_weight * pl_interval``, its own Adam step;
- **Dmain**: L_D on generated (no G gradient) and real images, Adam step of D (with R1 in the same step when
  ``r1_interval == 1``: the non-lazy ablation);
- **Dreg** (every ``r1_interval`` steps): R1 times ``gamma / 2 * r1_interval``, its own Adam step;
- G EMA: ``G_ema <- beta G_ema + (1 - beta) G`` with beta = 0.5 ** (B / (ema_kimg * 1000)), buffers copied.

Adam uses lr * c and betas ** c with c = k / (k + 1) for a network with a lazy regulariser (section 2.5).
Gradients are averaged over processes by one all-reduce per phase (as the official code does), so the same code
runs with and without torchrun. Every random draw of a step comes from (seed, step, rank): ``resume=`` continues
exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from essence.core import distributed as dist
from essence.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from essence.core.loop import GracefulInterrupt, NonFiniteLossError, Precision, should_run
from essence.core.progress import ProgressBar
from essence.core.runs import Run
from essence.core.runtime import default_num_threads
from essence.nn.ema import copy_buffers, update_momentum
from essence.stylegan2.config import StyleGAN2Config
from essence.stylegan2.data import load_images, step_generator, to_signed
from essence.stylegan2.loss import (
    PathLength,
    d_logistic,
    g_nonsaturating,
    lazy_adam_params,
    mix_styles,
    r1_penalty,
)
from essence.stylegan2.model import Discriminator, Generator

__all__ = ["train", "TrainResult", "build_networks", "ema_beta", "make_optimizers"]


@dataclass
class TrainResult:
    G: Generator
    D: Discriminator
    G_ema: Generator
    step: int
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0
    images_per_s: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)   # wall time per phase (Gmain, Greg, ...)


def build_networks(cfg: StyleGAN2Config, seed: int | None = None) -> tuple[Generator, Discriminator, Generator]:
    """(G, D, G_ema), identical on every process for the same seed."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    G = Generator(cfg.model)
    D = Discriminator(cfg.model)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    return G, D, G_ema


def ema_beta(batch_size: int, ema_kimg: float) -> float:
    """beta = 0.5 ** (batch / (ema_kimg * 1000)): half-life of ``ema_kimg`` thousand images (0: no averaging)."""
    return 0.5 ** (batch_size / (ema_kimg * 1000.0)) if ema_kimg > 0 else 0.0


def make_optimizers(cfg: StyleGAN2Config, G: torch.nn.Module, D: torch.nn.Module):
    """Adam for G and D with the lazy-regularisation rescaling (section 2.5)."""
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    g_int = cfg.loss.pl_interval if cfg.loss.pl_weight > 0 else 1
    d_int = cfg.loss.r1_interval if cfg.loss.r1_gamma > 0 else 1
    lr_g, betas_g = lazy_adam_params(cfg.optim.lr, betas, g_int)
    lr_d, betas_d = lazy_adam_params(cfg.optim.lr, betas, d_int)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas_g, eps=cfg.optim.eps)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas_d, eps=cfg.optim.eps)
    return opt_G, opt_D


def _sync_grads(module: torch.nn.Module) -> None:
    """Average gradients over processes with one all-reduce (missing gradients count as zeros)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not dist.is_distributed():
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    torch.distributed.all_reduce(flat)
    flat /= dist.get_world_size()
    torch.nan_to_num_(flat, nan=0, posinf=1e5, neginf=-1e5)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p))
        offset += n


def _sync_mean(buffer: torch.Tensor) -> None:
    """Average a running-mean buffer over processes (in place), so every process holds the same value."""
    if dist.is_distributed():
        buffer.copy_(dist.all_reduce(buffer, "mean"))


def _check(value: float, step: int, what: str, last: Path | None) -> None:
    if not np.isfinite(value):
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{what} is {value} at step {step}: training diverged and stopped; {kept} "
                                 f"(lower optim.lr or raise loss.r1_gamma)")


def train(cfg: StyleGAN2Config, run: Run | None = None, *, device: str | torch.device = "auto",
          resume: str | Path | None = None, progress: bool = True, images: torch.Tensor | None = None,
          eval_fn: Callable[[Generator, int], dict] | None = None) -> TrainResult:
    """Train StyleGAN2 with ``cfg``; log to ``run`` (metrics.jsonl, checkpoints) when given.

    Args:
        cfg: the resolved config.
        run: run directory (None: no files are written).
        device: auto / cpu / cuda / mps (under torchrun each process takes cuda:LOCAL_RANK).
        resume: a checkpoint file or folder to continue from.
        images: uint8 training images (N, C, R, R) instead of loading ``cfg.data``.
        eval_fn: ``eval_fn(G_ema, step) -> dict`` called every ``train.eval_every`` steps and at the end (on the
            main process); its numbers are logged.

    Raises:
        ValueError: inconsistent settings (batch not divisible by processes, images of the wrong size).
        NonFiniteLossError: a loss became NaN/inf (the last checkpoint is kept).
    """
    info = dist.init_distributed(device)
    dev, world, rank = info.device, info.world_size, info.rank
    torch.set_num_threads(cfg.train.threads or default_num_threads())
    B = cfg.optim.batch_size
    if B % world:
        raise ValueError(f"optim.batch_size ({B}) must be divisible by the number of processes ({world})")
    Bl = B // world
    if cfg.loss.pl_weight > 0 and Bl // cfg.loss.pl_batch_shrink < 1:
        raise ValueError(f"the per-process batch ({Bl}) is smaller than loss.pl_batch_shrink")
    m = cfg.model
    if images is None:
        images = load_images(cfg.data, m.img_channels)
    if images.ndim != 4 or images.shape[1:] != (m.img_channels, m.resolution, m.resolution):
        raise ValueError(f"training images have shape {tuple(images.shape[1:])} but the model expects "
                         f"({m.img_channels}, {m.resolution}, {m.resolution}); set model.resolution / "
                         f"model.img_channels to match the data")
    n_images = images.shape[0]

    G, D, G_ema = build_networks(cfg)
    G, D, G_ema = G.to(dev), D.to(dev), G_ema.to(dev)
    pl = PathLength(cfg.loss.pl_decay).to(dev)
    opt_G, opt_D = make_optimizers(cfg, G, D)
    prec_G, prec_D = Precision(cfg.train.precision, dev), Precision(cfg.train.precision, dev)
    if run is not None:
        run.record_precision(prec_G)
    start = 0
    modules = {"G": G, "D": D, "G_ema": G_ema, "pl": pl}
    optimizers = {"G": opt_G, "D": opt_D}
    scalers = {"G": prec_G.scaler, "D": prec_D.scaler}
    if resume is not None:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {path}")
        ckpt = load_checkpoint(found, modules=modules, optimizers=optimizers, scalers=scalers, map_location=dev)
        start = ckpt.step
    if run is not None:
        run.save_config(cfg)
    beta = ema_beta(B, cfg.train.ema_kimg)
    images_dev = images.to(dev)
    total = cfg.train.max_steps
    g_reg = cfg.loss.pl_weight > 0
    d_reg = cfg.loss.r1_gamma > 0
    r1_lazy = d_reg and cfg.loss.r1_interval > 1
    history: list[dict] = []
    phase_s = {"Gmain": 0.0, "Greg": 0.0, "Dmain": 0.0, "Dreg": 0.0}
    last_ckpt: Path | None = None
    t0 = time.perf_counter()
    done = start

    def save(step: int) -> Path | None:
        if run is None or not dist.is_main():
            return None
        return save_checkpoint(run.checkpoints_dir / f"step-{step:06d}", modules=modules, optimizers=optimizers,
                               scalers=scalers, step=step, config=cfg, state={"kimg": step * B / 1000})

    def latents(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # drawn for the global batch and sliced: n per process, the same z whatever the number of processes
        z = torch.randn(2, n * world, m.z_dim, generator=gen)[:, rank * n:(rank + 1) * n].to(dev)
        return z[0], z[1]

    def run_G(gen: torch.Generator, n: int, *, update_w_avg: bool = False):
        z, z2 = latents(gen, n)
        ws = G.mapping(z, update_w_avg=update_w_avg)
        if cfg.loss.style_mixing > 0:
            ws, _ = mix_styles(ws, G.mapping(z2), cfg.loss.style_mixing, generator=gen)
        return G.synthesis(ws), ws

    def reals(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n_images, (B,), generator=gen)[rank * Bl:(rank + 1) * Bl]
        x = to_signed(images_dev[idx.to(dev)])
        if cfg.data.xflip:
            flip = (torch.rand(B, generator=gen)[rank * Bl:(rank + 1) * Bl] < 0.5).to(dev)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    G.train()
    D.train()
    with GracefulInterrupt() as stop, ProgressBar(total - start, desc="stylegan2 train", unit="step",
                                                  disable=None if progress else True) as bar:
        for step in range(start, total):
            torch.manual_seed(int(step_generator(cfg.train.seed, step, 100 + rank).initial_seed()))  # G's noise
            rec: dict[str, float] = {}
            # ---- Gmain
            t = time.perf_counter()
            G.requires_grad_(True)
            D.requires_grad_(False)
            gen = step_generator(cfg.train.seed, step, 1000)
            with prec_G.autocast():
                img, _ = run_G(gen, Bl)
                loss_G = g_nonsaturating(D(img)).mean()
            prec_G.backward(loss_G)
            _sync_grads(G)
            rec["loss_G"] = float(loss_G.detach())
            _check(rec["loss_G"], step, "the generator loss", last_ckpt)
            prec_G.step(opt_G)
            phase_s["Gmain"] += time.perf_counter() - t
            # ---- Greg: lazy path-length regularisation
            if g_reg and step % cfg.loss.pl_interval == 0:
                t = time.perf_counter()
                gen = step_generator(cfg.train.seed, step, 2000)
                with prec_G.autocast():
                    img, ws = run_G(gen, Bl // cfg.loss.pl_batch_shrink)
                penalty, lengths = pl(img, ws, generator=gen)
                loss_pl = (img[:, 0, 0, 0].float() * 0 + penalty * cfg.loss.pl_weight).mean() * cfg.loss.pl_interval
                prec_G.backward(loss_pl)
                _sync_grads(G)
                _sync_mean(pl.pl_mean)
                rec["pl_penalty"] = float(penalty.mean().detach())
                rec["pl_mean"] = float(pl.pl_mean)
                _check(rec["pl_penalty"], step, "the path-length penalty", last_ckpt)
                prec_G.step(opt_G)
                phase_s["Greg"] += time.perf_counter() - t
            # ---- Dmain (+ R1 when not lazy)
            t = time.perf_counter()
            G.requires_grad_(False)
            D.requires_grad_(True)
            gen = step_generator(cfg.train.seed, step, 3000)
            non_lazy_r1 = d_reg and not r1_lazy
            with prec_D.autocast():
                with torch.no_grad():
                    fake, _ = run_G(gen, Bl, update_w_avg=True)
                x = reals(gen).requires_grad_(non_lazy_r1)
                real_logits = D(x)
                loss_D = d_logistic(D(fake), real_logits)
            total_D = loss_D
            if non_lazy_r1:
                r1 = r1_penalty(x, real_logits)
                total_D = loss_D + r1.mean() * (cfg.loss.r1_gamma / 2)
                rec["r1"] = float(r1.mean().detach())
            prec_D.backward(total_D)
            _sync_grads(D)
            _sync_mean(G.mapping.w_avg)   # the EMA update is linear: the mean of the per-process updates
            rec["loss_D"] = float(loss_D.detach())
            _check(rec["loss_D"], step, "the discriminator loss", last_ckpt)
            prec_D.step(opt_D)
            phase_s["Dmain"] += time.perf_counter() - t
            # ---- Dreg: lazy R1
            if r1_lazy and step % cfg.loss.r1_interval == 0:
                t = time.perf_counter()
                gen = step_generator(cfg.train.seed, step, 4000)
                x = reals(gen).requires_grad_(True)
                with prec_D.autocast():
                    logits = D(x)
                r1 = r1_penalty(x, logits)
                loss_r1 = (logits.float().flatten() * 0 + r1 * (cfg.loss.r1_gamma / 2)).mean() * cfg.loss.r1_interval
                prec_D.backward(loss_r1)
                _sync_grads(D)
                rec["r1"] = float(r1.mean().detach())
                _check(rec["r1"], step, "the R1 penalty", last_ckpt)
                prec_D.step(opt_D)
                phase_s["Dreg"] += time.perf_counter() - t
            # ---- G EMA
            update_momentum(G_ema, G, beta)
            copy_buffers(G_ema, G)
            done = step + 1
            if should_run(step, cfg.train.log_every, total):
                stats = dist.reduce_dict(rec)
                entry = {"step": done, "kimg": done * B / 1000, **stats}
                if eval_fn is not None and cfg.train.eval_every and (done % cfg.train.eval_every == 0
                                                                     or done == total):
                    if dist.is_main():
                        entry.update(eval_fn(G_ema, done))
                    dist.barrier()
                history.append(entry)
                if run is not None:
                    run.log(**entry)
            bar.update(1, G=f"{rec['loss_G']:.3f}", D=f"{rec['loss_D']:.3f}")
            if should_run(step, cfg.train.ckpt_every, total) or stop.requested:
                last_ckpt = save(done) or last_ckpt
            if stop.requested:
                break
    G.requires_grad_(True)
    D.requires_grad_(True)
    seconds = time.perf_counter() - t0
    steps_run = max(done - start, 1)
    return TrainResult(G=G, D=D, G_ema=G_ema, step=done, history=history, checkpoint=last_ckpt, seconds=seconds,
                       images_per_s=steps_run * B / max(seconds, 1e-9), phase_seconds=phase_s)
