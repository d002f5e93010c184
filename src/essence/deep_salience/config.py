"""Configs and presets of Deep Salience (values of the released code, paper card §3, unless a preset says)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from essence.core.config import Config, Presets, require, require_positive, require_range
from essence.deep_salience.hcqt import HARMONICS
from essence.deep_salience.model import PAPER_WIDTHS

__all__ = ["ModelConfig", "DataConfig", "OptimConfig", "TrainConfig", "DeepSalienceConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    widths: tuple[int, int, int, int, int] = PAPER_WIDTHS  # bendy1, bendy2, smoothy1, smoothy2, distribute
    input_bn: bool = True                                  # the input BatchNorm of the final model
    harmonics: tuple[float, ...] = HARMONICS               # HCQT channels fed to the net; (1.0,) = plain CQT
    output_bias: float = 0.0      # initial bias of 'squishy' (Keras: 0); < 0 starts from a sparse-output prior
    output_prior: bool = False    # set that bias to logit(mean training target): the output starts at the positive
                                  # rate of the task (overrides output_bias)
    bn_momentum: float = 0.01     # torch BatchNorm momentum (0.01 = Keras' 0.99)

    def __post_init__(self):
        require(len(self.widths) == 5 and all(isinstance(w, int) and w > 0 for w in self.widths),
                f"model.widths must be 5 positive integers, got {self.widths!r}")
        require_range(self, "bn_momentum", 0.0, 1.0, inclusive=False)
        require(len(self.harmonics) > 0 and all(h in HARMONICS for h in self.harmonics),
                f"model.harmonics must be a non-empty subset of {HARMONICS}, got {self.harmonics!r}")

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(HARMONICS.index(h) for h in self.harmonics)


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    n_train: int = 330            # chorales per split, taken in name order from the fixed split
    n_validation: int = 59
    n_test: int = 44
    max_seconds: float = 0.0      # crop each render to this many seconds (0 = whole chorale)
    augment: bool = True          # random instruments / tempo / transposition / velocity for training renders
    renders_per_chorale: int = 1  # augmented renders of each training chorale
    soundfont: str = ""           # training renders: a .sf2 path or name (fluidr3); "" = TimGM6mb inside pretty_midi
    eval_soundfont: str = ""      # validation / test renders; "" = the training soundfont
    eval_instruments: Literal["bach10", "held_out"] = "bach10"  # Bach10 set at 90 BPM, or random instruments
                                  # from pools disjoint from the training pools (with random tempo / transposition)
    eval_seconds: float = 0.0     # validation / test clip length (0 = max_seconds)
    eval_segments: int = 1        # consecutive clips cut from each validation / test chorale

    def __post_init__(self):
        require_positive(self, "n_train", "n_validation", "n_test", "renders_per_chorale", "eval_segments")
        require(self.eval_seconds >= 0, f"data.eval_seconds must be >= 0, got {self.eval_seconds}")
        require(self.eval_segments == 1 or (self.eval_seconds or self.max_seconds) > 0,
                "data.eval_segments > 1 needs clips of a fixed length (data.eval_seconds or data.max_seconds)")
        require(self.eval_instruments in ("bach10", "held_out"),
                f"data.eval_instruments must be 'bach10' or 'held_out', got {self.eval_instruments!r}")
        require(self.max_seconds >= 0, f"data.max_seconds must be >= 0, got {self.max_seconds}")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    lr: float = 1e-3              # Adam, Keras defaults
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 16
    patch_frames: int = 50        # 360 x 50 patches
    n_active: int = 10            # mux: active tracks
    rate: float = 500.0           # mux: Poisson mean samples per activation

    def __post_init__(self):
        require_positive(self, "lr", "batch_size", "patch_frames", "n_active", "rate")
        require_range(self, "beta1", 0.0, 1.0, inclusive=False)
        require_range(self, "beta2", 0.0, 1.0, inclusive=False)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    task: Literal["multif0", "melody", "bass"] = "multif0"
    steps_per_epoch: int = 256
    max_epochs: int = 100         # 100 for multif0, 50 for the others in the paper
    val_batches: int = 512
    lr_patience: int = 5          # ReduceLROnPlateau(patience 5, factor 0.1) on the validation loss
    lr_factor: float = 0.1
    early_stopping: int = 25      # patience in epochs (25 multif0, 6 otherwise); the best checkpoint is kept
    blur: bool = True             # Gaussian-blurred targets (False: hard one-hot bins)
    precision: str = "auto"       # auto: bf16 autocast where the hardware runs it natively, else fp32
    seed: int = 1337
    seeds: int = 1                # training seeds per arm in reproduce (seed, seed + 1, ...)
    melody_epochs: int = 50       # melody / bass models (paper: 50 epochs, early stopping patience 6)
    melody_early_stopping: int = 6
    warm_start: bool = False      # reproduce: start the melody model from the multi-f0 model of the same seed

    def __post_init__(self):
        require_positive(self, "steps_per_epoch", "max_epochs", "val_batches", "lr_patience", "early_stopping",
                         "seeds", "melody_epochs", "melody_early_stopping")
        require_range(self, "lr_factor", 0.0, 1.0, inclusive=False)


@dataclass(frozen=True, kw_only=True)
class DeepSalienceConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _tiny() -> DeepSalienceConfig:
    return DeepSalienceConfig(
        model=ModelConfig(widths=(4, 4, 4, 4, 4)),
        data=DataConfig(n_train=2, n_validation=1, n_test=1, max_seconds=4.0),
        optim=OptimConfig(batch_size=2, n_active=2, rate=4),
        train=TrainConfig(steps_per_epoch=2, max_epochs=2, val_batches=1, lr_patience=1, early_stopping=2,
                          melody_epochs=2, melody_early_stopping=2, warm_start=True),
    )


def _quick() -> DeepSalienceConfig:
    # Reduced width (channels / 4) and a short schedule so that the whole reproduction fits in 5 min on 2 cores,
    # also on a slower AVX2-only CPU: 4 multi-f0 epochs of 15 steps (5 took 7% longer on AVX2 kernels and scored no
    # better; docs/results.md, 2026-12-03).
    return DeepSalienceConfig(
        model=ModelConfig(widths=(32, 16, 16, 16, 8), bn_momentum=0.1, output_prior=True),
        data=DataConfig(n_train=24, n_validation=4, n_test=5, max_seconds=12.0),
        optim=OptimConfig(lr=1e-2, batch_size=16, rate=50),
        train=TrainConfig(steps_per_epoch=15, max_epochs=4, val_batches=4, lr_patience=2, early_stopping=3,
                          precision="auto", melody_epochs=3, melody_early_stopping=3, warm_start=True),
    )


def _standard() -> DeepSalienceConfig:
    # The smallest setting that decides the claims (issue 13): train on TimGM6mb renders with the training
    # instrument pools; validate and test on FluidR3 renders (Debian fluid-soundfont-gm) with held-out instruments
    # (the whole test split); 2 training seeds per arm; melody warm-started from multi-f0 with the
    # output bias at the positive rate. The test split has 32 four-voice chorales: each gives two consecutive
    # 8 s clips (64 test clips). Sized for <= 30 min on an idle 2-core CPU.
    return DeepSalienceConfig(
        model=ModelConfig(widths=(32, 16, 16, 16, 8), bn_momentum=0.1, output_prior=True),
        data=DataConfig(n_train=48, n_validation=10, n_test=32, max_seconds=10.0, soundfont="",
                        eval_soundfont="fluidr3", eval_instruments="held_out", eval_seconds=8.0,
                        eval_segments=2),
        optim=OptimConfig(lr=1e-2, batch_size=16, rate=50),
        train=TrainConfig(steps_per_epoch=20, max_epochs=6, val_batches=4, lr_patience=2, early_stopping=3,
                          seeds=2, melody_epochs=5, melody_early_stopping=3, warm_start=True),
    )


def _paper() -> DeepSalienceConfig:
    return DeepSalienceConfig()


PRESETS: Presets[DeepSalienceConfig] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard,
                                                "paper": _paper})
