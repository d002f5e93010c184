"""Configs of the robustness benchmark reproduction (Fashion-MNIST-C / -P)."""

from __future__ import annotations

from dataclasses import dataclass, field

from essence.core.config import Config, Presets, require, require_choice, require_positive

__all__ = ["DataConfig", "TrainConfig", "PerturbConfig", "CorruptionsConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    train_size: int = 10000         # Fashion-MNIST training images used (of 60,000)
    test_size: int = 600            # test images corrupted at every (corruption, severity) (of 10,000)
    param_set: str = "auto"         # corruption parameters: auto (28x28 -> the CIFAR-10-C table) / imagenet / ...
    batch_size: int = 600           # images corrupted / evaluated per batch
    corruptions: str = "common"     # a subset name (common = the 15 of the benchmark) or comma-separated names
    seed: int = 0                   # seeds the corruptions (the benchmark is fixed once generated)

    def __post_init__(self):
        require_positive(self, "train_size", "test_size", "batch_size")
        require_choice(self, "param_set", ("auto", "imagenet", "tiny", "cifar"))
        from essence.corruptions.functional import CORRUPTIONS, SUBSETS
        if self.corruptions not in SUBSETS:
            for name in self.corruptions.split(","):
                CORRUPTIONS.get(name.strip())  # raises with a did-you-mean


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    archs: tuple[str, ...] = ("alexnet", "vgg", "resnet")   # first = the baseline ("AlexNet") for CE
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3                # AdamW, one-cycle schedule
    weight_decay: float = 5e-4
    precision: str = "auto"         # auto: bf16 autocast where native (AMX / AVX512-BF16 / CUDA), else fp32
    clahe_epochs: int = 1           # fine-tuning epochs of the last arch on CLAHE-equalised images (claim d)
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "epochs", "batch_size", "lr")
        require(len(self.archs) >= 2, f"train.archs needs a baseline and at least one other, got {self.archs}")
        require_choice(self, "precision", ("auto", "fp32", "bf16"))
        require(self.clahe_epochs >= 0, f"train.clahe_epochs must be >= 0, got {self.clahe_epochs}")


@dataclass(frozen=True, kw_only=True)
class PerturbConfig(Config):
    clips: int = 100                # test images turned into sequences
    perturbations: tuple[str, ...] = ("gaussian_noise", "brightness", "translate", "rotate", "scale")
    pad: int = 4                    # geometric sequences act on a zero-padded canvas (28 + 2 pad), then crop 28

    def __post_init__(self):
        require_positive(self, "clips")
        require(self.pad >= 0, f"perturb.pad must be >= 0, got {self.pad}")


@dataclass(frozen=True, kw_only=True)
class CorruptionsConfig(Config):
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)


PRESETS = Presets({
    "tiny": lambda: CorruptionsConfig(data=DataConfig(train_size=512, test_size=64, batch_size=64,
                                                      corruptions="gaussian_noise,defocus_blur,contrast"),
                                      train=TrainConfig(epochs=1, batch_size=64, clahe_epochs=1),
                                      perturb=PerturbConfig(clips=8, perturbations=("gaussian_noise", "rotate"))),
    "quick": lambda: CorruptionsConfig(),
    "paper": lambda: CorruptionsConfig(data=DataConfig(train_size=60000, test_size=10000),
                                       train=TrainConfig(epochs=15, clahe_epochs=5, precision="fp32"),
                                       perturb=PerturbConfig(clips=10000, perturbations=(
                                           "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
                                           "brightness", "translate", "rotate", "tilt", "scale"))),
})
