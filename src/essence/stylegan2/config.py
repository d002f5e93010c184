"""StyleGAN2 configs and the ``tiny`` / ``quick`` / ``standard`` / ``paper`` presets.

Names follow stylegan2-ada-pytorch: ``model.channel_base`` / ``channel_max`` (channels(res) = min(base / res,
max)), ``loss.r1_gamma``, ``loss.pl_weight``, ``loss.r1_interval`` (D_reg_interval), ``loss.pl_interval``
(G_reg_interval), ``loss.style_mixing`` (style_mixing_prob), ``train.ema_kimg``. ``optim.batch_size`` is the
*global* minibatch (split over torchrun processes). ``train.max_steps`` counts iterations (one G and one D
minibatch each; the lazy regularisation steps ride on top).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from essence.core.config import (
    Config,
    Presets,
    require,
    require_choice,
    require_nonnegative,
    require_positive,
    require_range,
)

__all__ = ["ModelConfig", "DataConfig", "LossConfig", "OptimConfig", "TrainConfig", "EvalConfig",
           "StyleGAN2Config", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    resolution: int = 1024                   # output resolution (a power of two >= 4)
    img_channels: int = 3                    # 1 (grey) or 3 (RGB)
    z_dim: int = 512                         # latent z
    w_dim: int = 512                         # intermediate latent w
    mapping_layers: int = 8                  # depth of f
    mapping_width: int = 512                 # hidden units of f
    mapping_lr_mul: float = 0.01             # learning-rate multiplier of f (weights and biases)
    w_avg_beta: float = 0.995                # EMA of w for truncation / projection
    channel_base: int = 32768                # channels(res) = min(channel_base / res, channel_max) (F: 32768)
    channel_max: int = 512
    demodulate: bool = True                  # weight demodulation (config B onward); False = ablation
    style_block: Literal["modulated", "adain"] = "modulated"   # adain = StyleGAN1's layer (config A)
    d_architecture: Literal["resnet", "orig"] = "resnet"        # residual D (config E/F) or plain
    mbstd_group: int = 4                     # minibatch-std group size (0 = off)

    def __post_init__(self):
        require(isinstance(self.resolution, int) and self.resolution >= 4
                and 2 ** int(round(math.log2(self.resolution))) == self.resolution,
                f"model.resolution must be a power of two >= 4, got {self.resolution}")
        require(self.img_channels in (1, 3), f"model.img_channels must be 1 or 3, got {self.img_channels}")
        require_positive(self, "z_dim", "w_dim", "mapping_layers", "mapping_width", "mapping_lr_mul",
                         "channel_base", "channel_max")
        require_range(self, "w_avg_beta", 0.0, 1.0)
        require_choice(self, "style_block", ("modulated", "adain"))
        require_choice(self, "d_architecture", ("resnet", "orig"))
        require_nonnegative(self, "mbstd_group")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    source: Literal["fashion_mnist", "folder", "numpy"] = "fashion_mnist"
    path: str | None = None                  # folder of images / .npy or .npz file / Fashion-MNIST IDX folder
    limit: int = 0                           # use the first N training images (0 = all)
    xflip: bool = False                      # x-flip augmentation (--mirror)

    def __post_init__(self):
        require_choice(self, "source", ("fashion_mnist", "folder", "numpy"))
        require_nonnegative(self, "limit")


@dataclass(frozen=True, kw_only=True)
class LossConfig(Config):
    r1_gamma: float = 10.0                   # R1 weight gamma (the penalty is gamma / 2 * |grad D(x)|^2)
    r1_interval: int = 16                    # lazy R1: every 16 minibatches (1 = non-lazy, configs A/B)
    pl_weight: float = 2.0                   # path-length weight (0 = off, configs A-C)
    pl_interval: int = 4                     # lazy path length: every 4 minibatches
    pl_decay: float = 0.01                   # running mean a <- a + 0.01 (mean |J^T y| - a)
    pl_batch_shrink: int = 2                 # path length on half the minibatch
    style_mixing: float = 0.9                # style-mixing probability

    def __post_init__(self):
        require_nonnegative(self, "r1_gamma", "pl_weight")
        require_positive(self, "r1_interval", "pl_interval", "pl_batch_shrink")
        require_range(self, "pl_decay", 0.0, 1.0)
        require_range(self, "style_mixing", 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    lr: float = 0.002                        # G and D (before the lazy-regularisation rescaling)
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8
    batch_size: int = 32                     # global minibatch

    def __post_init__(self):
        require_positive(self, "lr", "eps", "batch_size")
        require_range(self, "beta1", 0.0, 1.0)
        require_range(self, "beta2", 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    max_steps: int = 1000                    # iterations (one G + one D minibatch each)
    ema_kimg: float = 10.0                   # G EMA half-life in thousands of images
    log_every: int = 50
    ckpt_every: int = 500
    eval_every: int = 0                      # FID (classifier features) every N steps (0 = only at the end)
    threads: int = 0                         # torch CPU threads (0 = all cores / local processes)

    def __post_init__(self):
        require_nonnegative(self, "seed", "eval_every", "threads", "ema_kimg")
        require_positive(self, "max_steps", "log_every", "ckpt_every")
        require_choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    n_gen: int = 10000                       # generated images per metric
    n_real: int = 10000                      # real images (Fashion-MNIST test split)
    pr_k: int = 3                            # k of the precision / recall manifolds
    ppl_samples: int = 2000                  # PPL in W, endpoints, epsilon below
    ppl_epsilon: float = 1e-4
    classifier_epochs: int = 3               # the Fashion-MNIST feature network (cached)
    batch_size: int = 256                    # feature-network batch (generation: evaluate.generation_batch)

    def __post_init__(self):
        require_positive(self, "n_gen", "n_real", "pr_k", "ppl_samples", "ppl_epsilon", "classifier_epochs",
                         "batch_size")


@dataclass(frozen=True, kw_only=True)
class StyleGAN2Config(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _fmnist_model(channel_base: int, channel_max: int, z: int, layers: int, **kw) -> ModelConfig:
    return ModelConfig(resolution=32, img_channels=1, z_dim=z, w_dim=z, mapping_layers=layers, mapping_width=z,
                       channel_base=channel_base, channel_max=channel_max, **kw)


def _tiny() -> StyleGAN2Config:
    """Seconds on a CPU: tests and smoke runs (32 x 32, <= 16 channels, fp32 so exact-value tests hold)."""
    return StyleGAN2Config(
        model=ModelConfig(resolution=32, img_channels=1, z_dim=16, w_dim=16, mapping_layers=2, mapping_width=16,
                          channel_base=128, channel_max=16),
        data=DataConfig(limit=256),
        loss=LossConfig(r1_gamma=0.05, r1_interval=4, pl_interval=2),
        optim=OptimConfig(lr=0.0025, batch_size=8),
        train=TrainConfig(max_steps=4, log_every=2, ckpt_every=2, ema_kimg=0.05, precision="fp32"),
        eval=EvalConfig(n_gen=128, n_real=128, ppl_samples=32, classifier_epochs=1, batch_size=64),
    )


def _quick() -> StyleGAN2Config:
    """A 2-core CPU in minutes: Fashion-MNIST padded to 32 x 32, channels 32/32/32/16 at 4/8/16/32 px, z = w = 64,
    2 mapping layers, batch 16, R1 gamma 0.1, lazy 4/16, EMA half-life 1 kimg (a preview of the standard one)."""
    return StyleGAN2Config(
        model=_fmnist_model(512, 32, 64, 2),
        loss=LossConfig(r1_gamma=0.1),
        optim=OptimConfig(lr=0.0025, batch_size=16),
        train=TrainConfig(max_steps=600, log_every=50, ckpt_every=300, ema_kimg=1.0, precision="auto"),
        eval=EvalConfig(n_gen=5000, n_real=10000, ppl_samples=500, classifier_epochs=2),
    )


def _standard() -> StyleGAN2Config:
    """The card's section 7 network halved: channels 64/64/64/32 at 4/8/16/32 px, z = w = 64, 2 mapping layers,
    batch 32, R1 gamma 0.1 (heuristic 0.0002 res^2 / batch = 0.006; 0.1 is the card's upper value), lazy 4/16,
    EMA half-life 1 kimg. ``essence stylegan2 reproduce --preset standard`` trains 2 seeds x (PL, no PL) for
    reproduce.PLANS['standard'].steps iterations each and scores on 10k images."""
    return StyleGAN2Config(
        model=_fmnist_model(1024, 64, 64, 2),
        loss=LossConfig(r1_gamma=0.1),
        optim=OptimConfig(lr=0.0025, batch_size=32),
        train=TrainConfig(max_steps=1500, log_every=50, ckpt_every=500, ema_kimg=1.0, precision="auto"),
        eval=EvalConfig(n_gen=10000, n_real=10000, ppl_samples=1000, classifier_epochs=2),
    )


def _paper() -> StyleGAN2Config:
    """Config F (FFHQ 1024, batch 32, gamma 10, 25M images = 781k iterations): for GPUs; point data.source at
    an image folder of 1024 x 1024 images."""
    return StyleGAN2Config(
        model=ModelConfig(),
        data=DataConfig(source="folder", path="ffhq", xflip=True),
        loss=LossConfig(r1_gamma=10.0),
        optim=OptimConfig(lr=0.002, batch_size=32),
        train=TrainConfig(max_steps=781250, ema_kimg=10.0, log_every=100, ckpt_every=5000, eval_every=5000,
                          precision="auto"),
        eval=EvalConfig(n_gen=50000, n_real=50000, ppl_samples=50000),
    )


PRESETS: Presets[StyleGAN2Config] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard,
                                             "paper": _paper})
