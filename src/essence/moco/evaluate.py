"""Evaluation of MoCo features: the weighted kNN monitor and the linear classification protocol.

- kNN (Wu et al. 2018; the MoCo CIFAR demo): k = 200, t = 0.1, cosine similarity, bank = training features.
- Linear protocol (paper §4.1, ``main_lincls.py``): a fc layer on the frozen encoder's pooled features,
  SGD lr 30, momentum 0.9, no weight decay, x0.1 at 60% / 80% of the epochs (see essence.metrics.linear_probe).

The encoder is in eval mode (BN running statistics, no drift). The same two protocols score the baselines of
claim (c): raw pixels and a randomly initialised encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from essence.core.checkpoint import read_checkpoint, unwrap_model
from essence.core.loop import eval_mode
from essence.metrics.knn import knn_accuracy
from essence.metrics.linear_probe import linear_probe
from essence.moco.config import EvalConfig, MoCoConfig
from essence.moco.data import load_images, normalize_for_eval
from essence.moco.model import MoCo

__all__ = ["calibrate_bn", "extract_features", "evaluate_features", "evaluate_model", "raw_pixel_features",
           "load_model", "evaluate_checkpoint"]


@torch.no_grad()
def extract_features(model: MoCo, images: torch.Tensor, cfg: MoCoConfig, device: torch.device | str = "cpu",
                     kind: str | None = None) -> torch.Tensor:
    """Frozen features (N, D) of uint8 images (N, 1, H, W), in batches, on ``device``; returned on the CPU."""
    model = unwrap_model(model)
    kind = kind or cfg.eval.feature
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], cfg.eval.batch_size):
            x = normalize_for_eval(images[start:start + cfg.eval.batch_size].to(device), cfg.aug)
            out.append(model.features(x, kind).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


@torch.no_grad()
def calibrate_bn(model: MoCo, images: torch.Tensor, cfg: MoCoConfig, device: torch.device | str = "cpu") -> None:
    """Re-estimate the query encoder's BN running statistics on ``images`` (cumulative average over batches of
    ``optim.batch_size`` un-augmented images); weights are unchanged. Used for the random-encoder baseline."""
    encoder = unwrap_model(model).encoder_q
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = encoder.training
    encoder.train()
    step = cfg.optim.batch_size
    for start in range(0, images.shape[0] - step + 1, step):
        encoder(normalize_for_eval(images[start:start + step].to(device), cfg.aug))
    encoder.train(was_training)
    for m, (momentum, _) in zip(bns, saved):
        m.momentum = momentum


def raw_pixel_features(images: torch.Tensor, cfg: MoCoConfig) -> torch.Tensor:
    """The raw-pixel baseline: normalised pixels at the images' own resolution (not resized), flattened."""
    return normalize_for_eval(images, cfg.aug.replace(size=images.shape[-1])).flatten(1)


def evaluate_features(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      cfg: EvalConfig, *, num_classes: int = 10, linear: bool = True,
                      seed: int = 0) -> dict[str, float]:
    """``{"knn_top1": %, "linear_top1": %}`` (percent) under the configured kNN and linear protocols."""
    res = {"knn_top1": 100 * knn_accuracy(test_f, test_y, train_f, train_y, num_classes, k=cfg.knn_k, t=cfg.knn_t)}
    if linear:
        lin = linear_probe(train_f, train_y, test_f, test_y, num_classes, epochs=cfg.linear_epochs,
                           lrs=cfg.linear_lrs, batch_size=cfg.linear_batch, seed=seed)
        res["linear_top1"] = 100 * lin["test_top1"]
        res["linear_lr"] = lin["lr"]
    return res


def _eval_data(cfg: MoCoConfig):
    train_x, train_y = load_images(cfg.data, "train", limit=cfg.eval.knn_bank or cfg.data.train_limit or None)
    test_x, test_y = load_images(cfg.data, "test")
    return train_x, train_y, test_x, test_y


def evaluate_model(model: MoCo, cfg: MoCoConfig, *, device: torch.device | str = "cpu", linear: bool = True,
                   data=None) -> dict[str, float]:
    """kNN (and linear) top-1 of the query encoder's features on Fashion-MNIST test."""
    train_x, train_y, test_x, test_y = data if data is not None else _eval_data(cfg)
    train_f = extract_features(model, train_x, cfg, device)
    test_f = extract_features(model, test_x, cfg, device)
    return evaluate_features(train_f, train_y, test_f, test_y, cfg.eval, linear=linear, seed=cfg.train.seed)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[MoCo, MoCoConfig, int]:
    """Rebuild a MoCo module from a checkpoint (file or run directory); returns (model, config, step)."""
    path = Path(path)
    if path.is_dir() and (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    ckpt = read_checkpoint(path)
    if ckpt.config is None:
        raise ValueError(f"{ckpt.path} carries no config; it was not written by essence moco")
    cfg = MoCoConfig.from_dict(ckpt.config)
    state = ckpt.module_state("moco")
    bank = state["bank"].shape[0] if "bank" in state else None
    # a DDP-trained model is evaluated in one process: its BN layers are plain BatchNorm either way
    shuffle = "none" if cfg.model.shuffle_bn in ("ddp", "auto") else cfg.model.shuffle_bn
    model_cfg = cfg.model.replace(shuffle_bn=shuffle)
    model = MoCo(model_cfg, bank_size=bank)
    model.load_state_dict(state)
    return model.to(device), cfg, ckpt.step


def evaluate_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", linear: bool = True,
                        overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """Evaluate a saved run: ``{"knn_top1", "linear_top1", "step"}``. ``overrides`` change eval./data. keys."""
    model, cfg, step = load_model(path, device=device)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    res = evaluate_model(model, cfg, device=device, linear=linear)
    res["step"] = step
    return res
