"""Configs of the robustness benchmark reproduction (composited Fashion-MNIST photos -C / -P)."""

from __future__ import annotations

from dataclasses import dataclass, field

from essence.core.config import Config, Presets, require, require_choice, require_positive

__all__ = ["DataConfig", "TrainConfig", "PerturbConfig", "CorruptionsConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    source: str = "composite"       # composite (Fashion-MNIST on photo crops, 32 px RGB) or fashion-mnist (28 px grey)
    train_size: int = 5000          # training images (of 60,000)
    test_size: int = 500            # test images corrupted at every (corruption, severity) (of 10,000)
    param_set: str = "cifar"        # corruption parameters: CIFAR-10-C's (32 px); auto / imagenet / tiny
    batch_size: int = 1000          # images corrupted / evaluated per batch (does not change the pixels)
    corruptions: str = "common"     # a subset name (common = the 15 of the benchmark) or comma-separated names
    seed: int = 0                   # seeds the data and the corruptions (the benchmark is fixed once generated)
    cache: bool = True              # keep the corrupted test set under $ESSENCE_CACHE/corruptions
    jpeg_quality: int = 0           # 85: the released ImageNet-C files' JPEG storage step (0: none, as CIFAR-10-C)

    def __post_init__(self):
        require_positive(self, "train_size", "test_size", "batch_size")
        require(0 <= self.jpeg_quality <= 100, f"data.jpeg_quality must be in 0..100, got {self.jpeg_quality}")
        require_choice(self, "source", ("composite", "fashion-mnist"))
        require_choice(self, "param_set", ("auto", "imagenet", "tiny", "cifar"))
        from essence.corruptions.functional import CORRUPTIONS, SUBSETS
        if self.corruptions not in SUBSETS:
            for name in self.corruptions.split(","):
                CORRUPTIONS.get(name.strip())  # raises with a did-you-mean


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    archs: tuple[str, ...] = ("alexnet", "mlp", "vgg", "resnet")   # first = the baseline ("AlexNet") for CE
    seeds: tuple[int, ...] = (0,)   # training seeds per architecture
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3                # AdamW, cosine schedule with warm-up
    weight_decay: float = 5e-4
    augment: bool = True            # random crops (reflect pad 4) and horizontal flips
    precision: str = "auto"         # training: bf16 autocast where native (AMX / AVX512-BF16 / CUDA), else fp32
    eval_precision: str = "fp32"    # evaluation (every error of the benchmark)
    histeq_arch: str = "resnet"     # claim (d): fine-tuned with CLAHE vs a control fine-tuned the same way
    histeq_epochs: int = 1          # fine-tuning epochs of both arms of (d) (0: skip the claim)
    histeq_lr: float = 1e-3         # their learning rate (cosine, no warm-up)

    def __post_init__(self):
        require_positive(self, "epochs", "batch_size", "lr", "histeq_lr")
        require(len(self.archs) >= 2, f"train.archs needs a baseline and at least one other, got {self.archs}")
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
                f"train.seeds must be distinct and at least one, got {self.seeds}")
        require_choice(self, "precision", ("auto", "fp32", "bf16"))
        require_choice(self, "eval_precision", ("auto", "fp32", "bf16"))
        require(self.histeq_epochs >= 0, f"train.histeq_epochs must be >= 0, got {self.histeq_epochs}")
        require(self.histeq_epochs == 0 or self.histeq_arch in self.archs,
                f"train.histeq_arch must be one of train.archs {self.archs}, got {self.histeq_arch!r}")


@dataclass(frozen=True, kw_only=True)
class PerturbConfig(Config):
    clips: int = 100                # test images turned into sequences
    perturbations: tuple[str, ...] = ("gaussian_noise", "brightness", "translate", "rotate", "scale")
    pad: int = 0                    # geometric sequences: on a zero-padded canvas, then crop (0: CIFAR-10-P's way)

    def __post_init__(self):
        require_positive(self, "clips")
        require(self.pad >= 0, f"perturb.pad must be >= 0, got {self.pad}")


@dataclass(frozen=True, kw_only=True)
class CorruptionsConfig(Config):
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)


PRESETS = Presets({
    "tiny": lambda: CorruptionsConfig(data=DataConfig(train_size=256, test_size=48, batch_size=32,
                                                      corruptions="gaussian_noise,defocus_blur,contrast",
                                                      cache=False),
                                      train=TrainConfig(archs=("alexnet", "mlp", "resnet"), epochs=1, batch_size=64,
                                                        histeq_epochs=1),
                                      perturb=PerturbConfig(clips=8, perturbations=("gaussian_noise", "rotate"))),
    # previews every claim with one seed per architecture (its verdicts may be inconclusive)
    "quick": lambda: CorruptionsConfig(),
    # decides the claims: 5 architectures x 3 seeds, both arms of (d) on 3 seeds
    "standard": lambda: CorruptionsConfig(
        data=DataConfig(train_size=12000, test_size=2500),
        train=TrainConfig(archs=("alexnet", "mlp", "vgg", "resnet", "wide_resnet"), seeds=(0, 1, 2), epochs=5,
                          histeq_epochs=1),
        perturb=PerturbConfig(clips=100)),
    "paper": lambda: CorruptionsConfig(
        data=DataConfig(train_size=60000, test_size=10000),
        train=TrainConfig(archs=("alexnet", "mlp", "vgg", "resnet", "wide_resnet"), seeds=(0, 1, 2, 3, 4),
                          epochs=30, histeq_epochs=5),
        perturb=PerturbConfig(clips=10000, perturbations=("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur",
                                                          "snow", "brightness", "translate", "rotate", "tilt",
                                                          "scale"))),
})
