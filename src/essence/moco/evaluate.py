"""Evaluation of MoCo features: the weighted kNN monitor and the linear classification protocol.

- kNN (Wu et al. 2018; the MoCo CIFAR demo): k = 200, t = 0.1, cosine similarity, bank = the training features
  (all of them unless ``eval.knn_bank`` limits it).
- Linear protocol (paper §4.1, ``main_lincls.py``): a fc layer on the frozen encoder's pooled features, SGD
  momentum 0.9, no weight decay, x0.1 at 60% / 80% of the epochs (see essence.metrics.linear_probe). The
  learning rate is chosen from ``eval.linear_lrs`` on a validation split of the *training* images, separately
  for every feature type (the paper's grid search gave 30 for ResNet-50 features; raw pixels want far less).

Every encoder compared in a reproduction (trained, random, end-to-end, memory bank, m = 0) goes through the same
path: the query encoder is copied, its BN running statistics are re-estimated on un-augmented training images at
the evaluation resolution (``eval.bn='calibrate'``; the trained encoders' statistics otherwise come from
blurred, jittered crops and the random encoder's from nothing), the copy runs in eval mode, and the images are
resized to ``aug.size``, the resolution the encoders were trained at. The raw-pixel baseline uses the same
resized images (and, reported beside, the native 28 px ones).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from essence.core.checkpoint import read_checkpoint, unwrap_model
from essence.core.loop import eval_mode
from essence.core.runtime import resolve_device
from essence.metrics.knn import knn_predict
from essence.metrics.linear_probe import linear_probe
from essence.moco.config import EvalConfig, MoCoConfig
from essence.moco.data import load_images, normalize_for_eval
from essence.moco.model import MoCo, SplitBatchNorm

__all__ = ["calibrate_bn", "eval_encoder", "extract_features", "evaluate_features", "evaluate_model",
           "raw_pixel_features", "load_model", "evaluate_checkpoint"]


def _bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def calibrate_bn(model: nn.Module, images: torch.Tensor, cfg: MoCoConfig, device: torch.device | str = "cpu",
                 *, batch_size: int | None = None) -> None:
    """Re-estimate BN running statistics on un-augmented ``images`` (uint8 (N, C, H, W)); weights are unchanged.

    ``model``: a :class:`MoCo` (its query encoder is calibrated) or any module. Statistics are the cumulative
    average over full batches of ``batch_size`` images (default ``eval.batch_size``; all images in one batch when
    there are fewer): the running mean is exactly the mean over the images, the running variance the mean of the
    batches' unbiased variances. :class:`SplitBatchNorm` layers are calibrated over whole batches (the statistics
    an eval-mode BN should hold), not per split.
    """
    module = unwrap_model(model)
    module = module.encoder_q if isinstance(module, MoCo) else module
    if images.shape[0] == 0:
        raise ValueError("calibrate_bn needs at least one image")
    bns = _bn_layers(module)
    saved = [(m.momentum, getattr(m, "num_splits", None)) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                      # cumulative moving average
        if isinstance(m, SplitBatchNorm):
            m.num_splits = 1
    was_training = module.training
    module.train()
    step = min(batch_size or cfg.eval.batch_size, images.shape[0])
    try:
        for start in range(0, images.shape[0] - step + 1, step):
            module(normalize_for_eval(images[start:start + step].to(device), cfg.aug))
    finally:
        module.train(was_training)
        for m, (momentum, splits) in zip(bns, saved):
            m.momentum = momentum
            if splits is not None:
                m.num_splits = splits


def eval_encoder(model: nn.Module, cfg: MoCoConfig, bn_images: torch.Tensor | None,
                 device: torch.device | str = "cpu") -> nn.Module:
    """The module to evaluate: with ``eval.bn='calibrate'`` a copy of ``model`` whose query encoder's BN
    statistics are re-estimated on ``bn_images`` (the training model is left untouched); else ``model`` itself."""
    model = unwrap_model(model)
    if cfg.eval.bn != "calibrate" or bn_images is None:
        return model
    enc = copy.deepcopy(model.encoder_q if isinstance(model, MoCo) else model)
    calibrate_bn(enc, bn_images, cfg, device)
    return _QueryEncoder(enc) if isinstance(model, MoCo) else enc


class _QueryEncoder(nn.Module):
    """A calibrated copy of the query encoder with :meth:`MoCo.features` (no key encoder, no queue)."""

    features = MoCo.features

    def __init__(self, encoder_q: nn.Module):
        super().__init__()
        self.encoder_q = encoder_q


@torch.no_grad()
def extract_features(model: MoCo, images: torch.Tensor, cfg: MoCoConfig, device: torch.device | str = "cpu",
                     kind: str | None = None) -> torch.Tensor:
    """Frozen features (N, D) of uint8 images (N, C, H, W) resized to ``aug.size``, in batches, on ``device``;
    returned on the CPU. The model runs in eval mode (BN running statistics)."""
    model = unwrap_model(model)
    kind = kind or cfg.eval.feature
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], cfg.eval.batch_size):
            x = normalize_for_eval(images[start:start + cfg.eval.batch_size].to(device), cfg.aug)
            out.append(model.features(x, kind).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def raw_pixel_features(images: torch.Tensor, cfg: MoCoConfig, *, size: int | None = None) -> torch.Tensor:
    """The raw-pixel baseline: normalised pixels, flattened. ``size``: the side to resize to (default
    ``aug.size``, the resolution the encoders see; ``images.shape[-1]`` keeps the native resolution)."""
    return normalize_for_eval(images, cfg.aug.replace(size=size or cfg.aug.size)).flatten(1)


def evaluate_features(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      cfg: EvalConfig, *, num_classes: int = 10, linear: bool = True, seed: int = 0,
                      per_item: bool = False) -> dict:
    """``{"knn_top1": %, "linear_top1": %, "linear_lr"}`` (percent) under the configured kNN and linear protocols.

    The linear learning rate is chosen from ``cfg.linear_lrs`` on a ``cfg.val_fraction`` split of the training
    features. ``per_item=True`` adds ``knn_correct`` / ``linear_correct``: 0/1 per test item (numpy), for paired
    bootstrap intervals.
    """
    knn_pred = knn_predict(test_f, train_f, train_y, num_classes, k=cfg.knn_k, t=cfg.knn_t).cpu()
    knn_correct = (knn_pred == test_y.cpu()).numpy().astype(np.float64)
    res: dict = {"knn_top1": 100 * float(knn_correct.mean()) if knn_correct.size else float("nan")}
    if per_item:
        res["knn_correct"] = knn_correct
    if linear:
        lin = linear_probe(train_f, train_y, test_f, test_y, num_classes, epochs=cfg.linear_epochs,
                           lrs=cfg.linear_lrs, batch_size=cfg.linear_batch, val_fraction=cfg.val_fraction,
                           seed=seed, return_predictions=True)
        res["linear_top1"] = 100 * lin["test_top1"]
        res["linear_lr"] = lin["lr"]
        if per_item:
            res["linear_correct"] = (lin["test_pred"] == test_y.cpu()).numpy().astype(np.float64)
    return res


def _eval_data(cfg: MoCoConfig):
    c = cfg.model.in_chans
    train_x, train_y = load_images(cfg.data, "train", limit=cfg.eval.knn_bank or cfg.data.train_limit or None,
                                   channels=c)
    test_x, test_y = load_images(cfg.data, "test", channels=c)
    return train_x, train_y, test_x, test_y


def bn_subset(train_x: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    """The training images that re-estimate BN statistics (the first ``bn_images``; 0 = all)."""
    return train_x[:cfg.bn_images] if cfg.bn_images else train_x


def evaluate_model(model: MoCo, cfg: MoCoConfig, *, device: torch.device | str = "cpu", linear: bool = True,
                   data=None, per_item: bool = False) -> dict:
    """kNN (and linear) top-1 of the query encoder's features on the test images, after the configured BN
    treatment (a calibrated copy by default; ``model`` itself is not changed).

    ``data``: (train_x, train_y, test_x, test_y) uint8 images and labels (default: Fashion-MNIST per ``cfg``).
    """
    train_x, train_y, test_x, test_y = data if data is not None else _eval_data(cfg)
    if train_y.numel() == 0 or int(train_y.min()) < 0 or test_y.numel() == 0 or int(test_y.min()) < 0:
        raise ValueError("evaluation needs labelled training and test images (class sub-folders under train/ and "
                         "test/, or y_train / y_test in the .npz); pre-training alone does not")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    enc = eval_encoder(model, cfg, bn_subset(train_x, cfg.eval), device)
    train_f = extract_features(enc, train_x, cfg, device)
    test_f = extract_features(enc, test_x, cfg, device)
    return evaluate_features(train_f, train_y, test_f, test_y, cfg.eval, num_classes=num_classes, linear=linear,
                             seed=cfg.train.seed, per_item=per_item)


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
    """Evaluate a saved run: ``{"knn_top1", "linear_top1", "linear_lr", "step"}``. ``overrides`` change eval./data.
    keys. ``device`` may be ``"auto"`` (as on the command line)."""
    device = resolve_device(device) if isinstance(device, str) else device
    model, cfg, step = load_model(path, device=device)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    res = evaluate_model(model, cfg, device=device, linear=linear)
    res["step"] = step
    return res
