"""MoCo configs and the ``tiny`` / ``quick`` / ``standard`` / ``paper`` presets.

Names follow the paper and the official flags: ``model.K`` (--moco-k), ``model.m`` (--moco-m), ``model.T``
(--moco-t), ``model.mlp`` (--mlp), ``aug`` = the v1 recipe or v2's aug+ (--aug-plus), ``optim.schedule='cosine'``
(--cos). ``optim.batch_size`` is the *global* batch (split over torchrun processes), as in ``main_moco.py``.
"""

from __future__ import annotations

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
from essence.nn.augment import AugmentConfig
from essence.nn.resnet import RESNETS

__all__ = ["ModelConfig", "DataConfig", "OptimConfig", "TrainConfig", "EvalConfig", "MoCoConfig", "PRESETS",
           "aug_v1", "aug_v2", "FMNIST_MEAN", "FMNIST_STD"]

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    arch: str = "resnet50"                   # backbone (essence.nn.resnet registry)
    width: int = 64                          # width of the first ResNet stage (64 = standard)
    in_chans: int = 1                        # image channels
    dim: int = 128                           # feature dimension C of q, k and the queue
    mlp: bool = True                         # v2: 2-layer MLP head (hidden = backbone width) instead of one fc
    K: int = 65536                           # queue size (number of negative keys)
    m: float = 0.999                         # momentum of the key encoder
    T: float = 0.2                           # softmax temperature (0.07 in v1, 0.2 in v2)
    mechanism: Literal["moco", "end_to_end", "memory_bank"] = "moco"
    shuffle_bn: Literal["auto", "ddp", "split", "none"] = "auto"   # auto: ddp under torchrun, else split
    bn_splits: int = 8                       # SplitBatchNorm groups for shuffle_bn=split (the demo's 8 "GPUs")
    symmetric: bool = False                  # CIFAR demo's symmetric loss (both views as queries)
    bank_momentum: float = 0.5               # memory bank: v <- normalize(0.5 v + 0.5 q) (Wu et al. 2018)

    def __post_init__(self):
        require(self.arch in RESNETS, f"model.arch must be one of {list(RESNETS)}, got {self.arch!r}")
        require_positive(self, "width", "in_chans", "dim", "K", "T", "bn_splits")
        require_range(self, "m", 0.0, 1.0)
        require_range(self, "bank_momentum", 0.0, 1.0)
        require_choice(self, "mechanism", ("moco", "end_to_end", "memory_bank"))
        require_choice(self, "shuffle_bn", ("auto", "ddp", "split", "none"))
        require(not (self.symmetric and self.mechanism != "moco"),
                "model.symmetric applies to mechanism=moco only")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    dataset: Literal["fashion_mnist", "folder", "numpy"] = "fashion_mnist"
    root: str | None = None                  # fashion_mnist: folder with the IDX files (default: Debian's /
                                             # $ESSENCE_FASHION_MNIST); folder: a folder of images; numpy: .npz/.npy
    train_limit: int = 0                     # use the first N unlabeled training images (0 = all)
    test_limit: int = 0                      # evaluate on the first N test images (0 = all)
    image_size: int = 0                      # folder / numpy: resize images to this side (0 = keep; must agree)

    def __post_init__(self):
        require_choice(self, "dataset", ("fashion_mnist", "folder", "numpy"))
        require_nonnegative(self, "train_limit", "test_limit", "image_size")
        require(self.dataset == "fashion_mnist" or bool(self.root),
                f"data.root must name the {self.dataset} data (a folder of images or a .npz/.npy file)")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    lr: float = 0.03                         # for the global batch below
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256                    # global batch, split over processes
    epochs: int = 200
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[int, ...] = (120, 160)  # epochs, for schedule=step (x0.1 each)
    warmup_epochs: float = 0.0               # linear warmup from 0 (not in the paper; short runs may want it)

    def __post_init__(self):
        require_positive(self, "lr", "batch_size", "epochs")
        require_nonnegative(self, "warmup_epochs")
        require_range(self, "momentum", 0.0, 1.0)
        require_nonnegative(self, "weight_decay")
        require_choice(self, "schedule", ("cosine", "step", "constant"))


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    max_steps: int = 0                       # stop after this many steps (0 = optim.epochs full epochs)
    log_every: int = 50                      # steps
    eval_every: int = 0                      # kNN monitor every N steps and at the end (0 = never)
    ckpt_every: int = 500                    # steps (and always at the end)
    threads: int = 0                         # torch CPU threads (0 = all cores / local processes)

    def __post_init__(self):
        require_nonnegative(self, "seed", "max_steps", "eval_every", "threads")
        require_positive(self, "log_every", "ckpt_every")
        require_choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    knn_k: int = 200                         # weighted kNN monitor (Wu et al. 2018 / MoCo CIFAR demo)
    knn_t: float = 0.1
    knn_bank: int = 0                        # training images in the kNN bank (0 = all)
    feature: Literal["backbone", "embedding"] = "backbone"   # pooled backbone features or normalised q
    linear_epochs: int = 100                 # linear protocol (paper: 100 epochs, lr 30, wd 0, x0.1 at 60/80)
    linear_lrs: tuple[float, ...] = (0.03, 0.3, 3.0, 30.0)   # grid, chosen per feature type on a validation split
    val_fraction: float = 0.1                # of the training images, held out to choose the linear lr
    linear_batch: int = 256
    batch_size: int = 1024                   # feature extraction batch
    bn: Literal["calibrate", "keep"] = "calibrate"   # re-estimate BN statistics on clean training images, or keep
    bn_images: int = 10000                   # training images for the BN re-estimate (0 = all)

    def __post_init__(self):
        require_positive(self, "knn_k", "knn_t", "linear_epochs", "linear_batch", "batch_size")
        require_nonnegative(self, "knn_bank", "bn_images")
        require_range(self, "val_fraction", 0.0, 1.0)
        require_choice(self, "feature", ("backbone", "embedding"))
        require_choice(self, "bn", ("calibrate", "keep"))
        require(len(self.linear_lrs) > 0 and all(lr > 0 for lr in self.linear_lrs),
                f"eval.linear_lrs must be positive learning rates, got {self.linear_lrs!r}")


def aug_v1(size: int = 28, channels: int = 1) -> AugmentConfig:
    """MoCo v1 (``main_moco.py``): RandomResizedCrop(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.4) always,
    RandomGrayscale(0.2), flip. Grey images keep only brightness/contrast jitter (no saturation/hue/grayscale)."""
    rgb = channels == 3
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if rgb else (FMNIST_MEAN, FMNIST_STD)
    return AugmentConfig(size=size, crop_scale=(0.2, 1.0), hflip_p=0.5, brightness=0.4, contrast=0.4,
                         saturation=0.4 if rgb else 0.0, hue=0.4 if rgb else 0.0, jitter_p=1.0,
                         grayscale_p=0.2 if rgb else 0.0, blur_p=0.0, mean=mean, std=std)


def aug_v2(size: int = 28, channels: int = 1) -> AugmentConfig:
    """MoCo v2 aug+: RandomResizedCrop(0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, RandomGrayscale(0.2),
    GaussianBlur(sigma 0.1-2.0 px *of a 224 px crop*) with p 0.5, flip. The blur is scaled to the image: sigma
    keeps the same fraction of the side (0.007-0.14 px at 16 px), the kernel is ~10% of the side (23 taps at
    224 px, 3 at 28 px); grey images keep only brightness/contrast jitter."""
    rgb = channels == 3
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if rgb else (FMNIST_MEAN, FMNIST_STD)
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return AugmentConfig(size=size, crop_scale=(0.2, 1.0), hflip_p=0.5, brightness=0.4, contrast=0.4,
                         saturation=0.4 if rgb else 0.0, hue=0.1 if rgb else 0.0, jitter_p=0.8,
                         grayscale_p=0.2 if rgb else 0.0, blur_p=0.5, blur_sigma=(0.1, 2.0), blur_sigma_ref=224,
                         blur_kernel=kernel, mean=mean, std=std)


@dataclass(frozen=True, kw_only=True)
class MoCoConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    aug: AugmentConfig = field(default_factory=aug_v2)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        require(len(self.aug.mean) in (1, self.model.in_chans),
                f"aug.mean has {len(self.aug.mean)} values but model.in_chans is {self.model.in_chans}")


def _tiny() -> MoCoConfig:
    """Seconds on a CPU: for tests and smoke runs."""
    return MoCoConfig(
        model=ModelConfig(arch="resnet10", width=4, dim=16, mlp=True, K=64, m=0.99, T=0.2, bn_splits=4),
        aug=aug_v2(28, 1),
        data=DataConfig(train_limit=256, test_limit=128),
        optim=OptimConfig(lr=0.03, batch_size=32, epochs=1, weight_decay=5e-4),
        train=TrainConfig(max_steps=4, log_every=2, ckpt_every=2, precision="fp32"),
        eval=EvalConfig(knn_bank=256, linear_epochs=2, batch_size=256),
    )


def _quick() -> MoCoConfig:
    """A 2-core CPU in minutes (a preview): a width-16 ResNet-10 (small stem) on Fashion-MNIST crops resampled to
    16 px, MoCo v2 (MLP head, T 0.2, aug+ with blur scaled to the image, cosine) with the CIFAR demo's K / m and
    SGD settings scaled to batch 256, precision auto (bf16 where native); one epoch; evaluation on a 10k-image
    bank, the probe's lr chosen per feature type on a validation split."""
    return MoCoConfig(
        model=ModelConfig(arch="resnet10", width=16, dim=64, mlp=True, K=4096, m=0.99, T=0.2, bn_splits=8),
        aug=aug_v2(16, 1),
        data=DataConfig(),
        optim=OptimConfig(lr=0.03, batch_size=256, epochs=1, weight_decay=5e-4, schedule="cosine"),
        train=TrainConfig(max_steps=0, log_every=20, eval_every=0, ckpt_every=200, precision="auto"),
        eval=EvalConfig(knn_bank=10000, linear_epochs=5, bn_images=10000, batch_size=1024),
    )


def _standard() -> MoCoConfig:
    """The smallest setting at which the claims are decided on a 2-core CPU (``essence moco reproduce --preset
    standard`` <= 30 minutes): the quick model and recipe for 7 epochs per run, evaluated with the full 60k
    training set as kNN bank / probe training set and the full 10k test split. Measured cost of a training step
    (256 images, fp32): 0.23 s on one core of the 2.3 GHz Xeon (0.16 s on two), 0.10 s on one core of the AMD
    EPYC; the reproduction runs its 6 pre-training runs two at a time, one thread each."""
    q = _quick()
    return q.replace(optim=q.optim.replace(epochs=7),
                     train=q.train.replace(log_every=20, ckpt_every=500),
                     eval=q.eval.replace(knn_bank=0, linear_epochs=10))


def _paper() -> MoCoConfig:
    """The paper's v2 ImageNet settings (R50, K 65536, m 0.999, T 0.2, MLP, aug+, cosine, lr 0.03 at batch
    256, wd 1e-4, 200 epochs), applied to Fashion-MNIST with a small-stem ResNet-50: for GPUs."""
    return MoCoConfig(
        model=ModelConfig(arch="resnet50", width=64, dim=128, mlp=True, K=65536, m=0.999, T=0.2),
        aug=aug_v2(28, 1),
        optim=OptimConfig(lr=0.03, batch_size=256, epochs=200, weight_decay=1e-4, schedule="cosine"),
        train=TrainConfig(precision="auto", log_every=50, eval_every=2000, ckpt_every=2000),
        eval=EvalConfig(linear_epochs=100),
    )


PRESETS: Presets[MoCoConfig] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard, "paper": _paper})
