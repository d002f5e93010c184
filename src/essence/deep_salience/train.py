"""Training (paper card §3; the released ``experiment.py`` / ``core.py``).

Binary cross-entropy with soft targets (the ``bkld`` loss: y and y_hat clipped to [1e-7, 1 - 1e-7], averaged
over frequency and time), Adam with Keras defaults, 360 x 50 patches from a stochastic mux, epochs of
``steps_per_epoch`` batches, validation loss on a fixed set of ``val_batches`` patches after each epoch,
ReduceLROnPlateau (factor 0.1, patience 5) and early stopping (patience 25 for multi-f0, 6 otherwise) on it,
keeping the best checkpoint. After training, tau is swept on the validation tracks (:func:`tune_threshold`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from essence.core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from essence.core.loop import Precision, check_finite
from essence.core.progress import ProgressBar
from essence.core.runtime import seed_everything
from essence.deep_salience.config import DeepSalienceConfig
from essence.deep_salience.data import Item, PatchSampler, Track
from essence.deep_salience.decode import sweep_threshold
from essence.deep_salience.model import SalienceNet

__all__ = ["bkld", "train", "TrainResult", "salience_of", "tune_threshold", "load_essence_checkpoint",
           "constant_loss"]

EPS = 1e-7


def bkld(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """The original's loss: mean over (freq, time) of BCE with both sides clipped to [eps, 1 - eps]."""
    y_true = y_true.clamp(EPS, 1 - EPS)
    y_pred = y_pred.clamp(EPS, 1 - EPS)
    return (-y_true * torch.log(y_pred) - (1 - y_true) * torch.log(1 - y_pred)).mean()


@dataclass
class TrainResult:
    model: SalienceNet
    best_val_loss: float
    best_epoch: int
    epochs: int
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    threshold: float = 0.3
    threshold_table: dict = field(default_factory=dict)
    const_val_loss: float = float("nan")   # validation loss of the best constant predictor (the positive rate)
    positive_rate: float = float("nan")    # mean training target


def constant_loss(batches, p: float) -> float:
    """Loss of predicting the constant ``p`` everywhere on (x, y) batches: the bar a model must get below."""
    return float(np.mean([float(bkld(torch.full_like(y, p), y)) for _, y in batches]))


def _tracks(items: list[Item], task: str, blur: bool) -> list[Track]:
    return [Track(it.name, it.hcqt, it.target(task, blur)) for it in items]


def train(cfg: DeepSalienceConfig, train_items: list[Item], val_items: list[Item], *, device: str = "cpu",
          run=None, name: str = "model", progress: bool = True, init: SalienceNet | None = None,
          max_epochs: int | None = None, early_stopping: int | None = None) -> TrainResult:
    """Train a :class:`SalienceNet` for ``cfg.train.task`` and return the best (lowest validation loss) model.

    ``init``: a model of the same shape to start from (a warm start, e.g. melody from multi-f0); its output bias
    is still reset to the task's positive rate when ``model.output_prior``. ``max_epochs`` / ``early_stopping``
    override the config's (per-task schedules).
    """
    tc, oc, mc = cfg.train, cfg.optim, cfg.model
    max_epochs = tc.max_epochs if max_epochs is None else max_epochs
    early_stopping = tc.early_stopping if early_stopping is None else early_stopping
    seed_everything(tc.seed)
    dev = torch.device(device)
    model = SalienceNet(in_channels=len(mc.channels), widths=mc.widths, input_bn=mc.input_bn,
                        bn_momentum=mc.bn_momentum).to(dev)
    if init is not None:
        model.load_state_dict(init.state_dict())
    train_tracks = _tracks(train_items, tc.task, tc.blur)
    positive = float(np.mean([t.target.mean() for t in train_tracks]))
    if mc.output_prior:
        p = min(max(positive, 1e-4), 0.5)
        torch.nn.init.constant_(model.squishy.bias, float(np.log(p / (1 - p))))
    elif mc.output_bias and init is None:
        torch.nn.init.constant_(model.squishy.bias, mc.output_bias)
    opt = torch.optim.Adam(model.parameters(), lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=1e-8)  # Keras 2.0 Adam
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=tc.lr_factor,
                                                       patience=tc.lr_patience)
    channels = mc.channels if len(mc.channels) < 6 else None
    sampler = PatchSampler(train_tracks, batch_size=oc.batch_size,
                           n_t=oc.patch_frames, n_active=oc.n_active, rate=oc.rate, seed=tc.seed, channels=channels)
    val_sampler = PatchSampler(_tracks(val_items, tc.task, tc.blur), batch_size=oc.batch_size,
                               n_t=oc.patch_frames, n_active=oc.n_active, rate=oc.rate, seed=tc.seed + 1,
                               channels=channels)
    val_batches = [val_sampler.batch() for _ in range(tc.val_batches)]
    const_val = constant_loss(val_batches, positive)
    prec = Precision(tc.precision, dev)
    if run is not None:
        run.record_precision(prec, quiet=not progress)
    best = (float("inf"), -1, copy.deepcopy(model.state_dict()))
    history, step, bad_epochs, t0 = [], 0, 0, time.time()
    total = tc.steps_per_epoch * max_epochs
    with ProgressBar(total=total, desc=f"train {name}", unit="step", disable=not progress) as bar:
        for epoch in range(max_epochs):
            model.train()
            losses = []
            for _ in range(tc.steps_per_epoch):
                x, y = (t.to(dev) for t in sampler.batch())
                with prec.autocast():
                    pred = model(x)
                loss = bkld(pred.float(), y)
                check_finite(loss, step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.update(1, loss=losses[-1])
            model.eval()
            with torch.no_grad(), prec.autocast():
                val = float(np.mean([float(bkld(model(x.to(dev)).float(), y.to(dev))) for x, y in val_batches]))
            sched.step(val)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val,
                      "const_val_loss": const_val, "lr": opt.param_groups[0]["lr"]}
            history.append(record)
            if run is not None:
                run.log(step, model=name, **record)
            if val < best[0]:
                best, bad_epochs = (val, epoch, copy.deepcopy(model.state_dict())), 0
            else:
                bad_epochs += 1
                if bad_epochs >= early_stopping:
                    break
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model, best[0], best[1], len(history), step, time.time() - t0, history,
                       const_val_loss=const_val, positive_rate=positive)


@torch.no_grad()
def salience_of(model: SalienceNet, items: list[Item], channels: tuple[int, ...] | None = None,
                device: str = "cpu", frames: int = 1024, precision: str = "fp32") -> list[np.ndarray]:
    """Salience maps (360, T) of precomputed HCQTs (CNN in chunks of ``frames`` with 8 frames of context).

    ``precision``: as ``train.precision`` (``auto`` = bf16 autocast where native); reproduce runs every network,
    ours and the released ones, in the same precision.
    """
    dev = torch.device(device)
    model = model.to(dev).eval()
    prec = Precision(precision, dev)
    out = []
    for it in items:
        X = torch.from_numpy(it.hcqt.astype(np.float32)).to(dev)
        if channels is not None:
            X = X[list(channels)]
        T = X.shape[-1]
        S = torch.empty(360, T)
        for t0 in range(0, T, frames):
            t1 = min(T, t0 + frames)
            c0, c1 = max(0, t0 - 8), min(T, t1 + 8)
            with prec.autocast():
                s = model(X[None, :, :, c0:c1])
            S[:, t0:t1] = s[0, :, t0 - c0: t0 - c0 + t1 - t0].float().cpu()
        out.append(S.numpy())
    return out


def tune_threshold(saliences: list[np.ndarray], items: list[Item], task: str):
    """tau in 0.1..0.9 maximising validation Accuracy (multif0) / Overall Accuracy (melody, bass)."""
    refs = [(it.times, it.labels(task)) for it in items]
    return sweep_threshold(saliences, refs, task)


def save_model(path, model: SalienceNet, cfg: DeepSalienceConfig, *, threshold: float, extra: dict | None = None):
    """An essence checkpoint that ``predict --weights`` can load (config, task and tuned tau inside)."""
    state = {"task": cfg.train.task, "threshold": float(threshold), "kind": "deep_salience"} | (extra or {})
    return save_checkpoint(path, modules={"model": model}, config=cfg, state=state, rng=False)


def load_essence_checkpoint(path) -> tuple[SalienceNet, DeepSalienceConfig, dict]:
    """(model in eval mode, config, state) from :func:`save_model`'s file or a run directory holding one."""
    from pathlib import Path

    from essence.core.checkpoint import CheckpointError

    p = Path(path)
    if p.is_dir():
        cands = sorted((p / "checkpoints").glob("*.safetensors")) if (p / "checkpoints").is_dir() else []
        cands = cands or sorted(p.glob("*.safetensors"))
        # the main model: multif0-hcqt (never an ablation such as multif0-cqt ahead of it), then any multif0
        pick = ([c for c in cands if c.stem == "multif0-hcqt"] or [c for c in cands if c.stem.startswith("multif0")]
                or cands)
        if not pick:
            raise FileNotFoundError(f"no essence checkpoint (*.safetensors) in run directory {p}")
        p = pick[0]
    try:
        ckpt = read_checkpoint(p)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    if ckpt.state.get("kind") != "deep_salience" or ckpt.config is None:
        raise ValueError(f"{p} is an essence checkpoint but not a Deep Salience model")
    cfg = DeepSalienceConfig.from_dict(ckpt.config)
    model = SalienceNet(in_channels=len(cfg.model.channels), widths=cfg.model.widths, input_bn=cfg.model.input_bn,
                        bn_momentum=cfg.model.bn_momentum)
    try:
        load_checkpoint(p, modules={"model": model}, restore_rng=False)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{p}: weights contain NaN or inf ({', '.join(bad[:4])})")
    return model.eval(), cfg, ckpt.state
