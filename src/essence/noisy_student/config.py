"""Noisy Student configs and the ``tiny`` / ``quick`` / ``standard`` / ``paper`` presets.

Names follow the official code's flags where one exists: ``pseudo.label_type`` / ``pseudo.temperature``
(``--teacher_softmax_temp``: hard = -1, soft = T > 0), ``pseudo.threshold`` (``--min_threshold``),
``pseudo.per_class`` (``--num_image``), ``pseudo.upsample`` (``--upsample``), ``noise.randaug_n`` /
``noise.randaug_m`` (``--randaug_layer`` / ``--randaug_mag``), ``noise.dropout`` (``--dropout_rate``),
``noise.stochastic_depth`` (``--stochastic_depth_rate``: the drop rate of the last block), ``optim.unlabeled_ratio``
(``--unlabel_ratio``), ``optim.label_smoothing`` (``--label_smoothing``).
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

__all__ = ["ModelConfig", "NoiseConfig", "PseudoConfig", "DataConfig", "OptimConfig", "LoopConfig", "TrainConfig",
           "EvalConfig", "NoisyStudentConfig", "PRESETS", "ARCHS"]

ARCHS = ("resnet", "efficientnet")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    """The teacher's network (generation 0); students scale its width by ``loop.student_width``."""

    arch: Literal["resnet", "efficientnet"] = "resnet"   # timm ResNet (BasicBlock) or timm EfficientNet-B0 family
    width: float = 1.0                       # channel multiplier (ResNet base channels 16-32-64-128; B0's for EffNet)
    depth: float = 1.0                       # depth multiplier (ResNet: blocks per stage = round(depth); EffNet: B0's)
    stem_stride: int = 2                     # 2: 28 px -> 14 px after the stem; 1 keeps full resolution
    in_chans: int = 1
    num_classes: int = 10

    def __post_init__(self):
        require_choice(self, "arch", ARCHS)
        require_positive(self, "width", "depth", "in_chans", "num_classes")
        require_choice(self, "stem_stride", (1, 2))


@dataclass(frozen=True, kw_only=True)
class NoiseConfig(Config):
    """The student's noise (paper §3.1): input noise (RandAugment) and model noise (dropout, stochastic depth)."""

    randaug: bool = True                     # input noise
    randaug_n: int = 2                       # ops per image (--randaug_layer)
    randaug_m: float = 27.0                  # magnitude on the official 0..10+ scale, not clipped (--randaug_mag)
    translate_const: float = 0.0             # px at level 10 (official 100 at 224 px); 0 = 100 * size / 224
    cutout_const: float = 0.0                # px at level 10 (official 40 at 224 px); 0 = 40 * size / 224
    fill: float = 0.5                        # fill value of empty pixels (official 128 / 255)
    dropout: float = 0.5                     # dropout before the classifier (0 = off)
    stochastic_depth: float = 0.2            # drop rate of the last residual block (survival 0.8), linear in depth

    def __post_init__(self):
        require_positive(self, "randaug_n")
        require_nonnegative(self, "randaug_m", "translate_const", "cutout_const")
        require_range(self, "fill", 0.0, 1.0)
        require_range(self, "dropout", 0.0, 0.95)
        require_range(self, "stochastic_depth", 0.0, 0.95)

    @property
    def active(self) -> list[str]:
        """The noise sources that are on, for logs and reports."""
        out = []
        if self.randaug:
            out.append(f"RandAugment(n={self.randaug_n}, m={self.randaug_m:g})")
        if self.dropout > 0:
            out.append(f"dropout {self.dropout:g}")
        if self.stochastic_depth > 0:
            out.append(f"stochastic depth (last-block survival {1 - self.stochastic_depth:g})")
        return out

    def off(self) -> NoiseConfig:
        return self.replace(randaug=False, dropout=0.0, stochastic_depth=0.0)


@dataclass(frozen=True, kw_only=True)
class PseudoConfig(Config):
    """Pseudo labels of the un-noised teacher, and the official filter / balance step (filter_unlabel.py)."""

    label_type: Literal["soft", "hard"] = "soft"
    temperature: float = 1.0                 # soft labels: softmax(logits / T)
    threshold: float = 0.3                   # drop images whose top-class confidence is below (--min_threshold)
    balance: bool = True                     # per predicted class: keep the most confident / duplicate rare ones
    per_class: int = 0                       # images per class after balancing (--num_image); 0 = unlabeled / classes
    upsample: bool = True                    # duplicate classes below per_class (--upsample)

    def __post_init__(self):
        require_choice(self, "label_type", ("soft", "hard"))
        require_positive(self, "temperature")
        require_range(self, "threshold", 0.0, 1.0)
        require_nonnegative(self, "per_class")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    dataset: Literal["fashion_mnist"] = "fashion_mnist"
    root: str | None = None                  # folder with the IDX files (default: Debian's / $ESSENCE_FASHION_MNIST)
    labeled_per_class: int = 100             # class-balanced labeled part of the training split
    unlabeled: int = 0                       # unlabeled images used (0 = all the rest)
    labeled_dir: str | None = None           # a folder of class sub-folders (or an .npz with x, y) instead
    unlabeled_dir: str | None = None         # a folder of images (or a .npy) instead of the hidden-label part
    test_dir: str | None = None              # labeled test folder / .npz (required with labeled_dir)
    ood: int = 0                             # out-of-domain images (procedural shapes and strokes) added unlabeled
    test_limit: int = 0                      # evaluate on the first N test images (0 = all 10k)
    split_seed: int = 0                      # which images are labeled (fixed across training seeds)
    image_size: int = 28

    def __post_init__(self):
        require_choice(self, "dataset", ("fashion_mnist",))
        require_positive(self, "labeled_per_class", "image_size")
        require_nonnegative(self, "unlabeled", "ood", "test_limit", "split_seed")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    lr: float = 0.1                          # SGD (nesterov) for the labeled batch below
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64                     # labeled images per step (global)
    unlabeled_ratio: int = 3                 # unlabeled images per step = ratio x batch_size (--unlabel_ratio)
    teacher_steps: int = 1000                # steps of the generation-0 teacher (labeled data only)
    student_steps: int = 2000                # steps of every student
    warmup_steps: int = 0
    label_smoothing: float = 0.1             # labeled CE and hard pseudo-label CE (never on soft labels)

    def __post_init__(self):
        require_positive(self, "lr", "batch_size", "teacher_steps", "student_steps")
        require_nonnegative(self, "unlabeled_ratio", "weight_decay", "warmup_steps")
        require_range(self, "momentum", 0.0, 1.0)
        require_range(self, "label_smoothing", 0.0, 0.5)


@dataclass(frozen=True, kw_only=True)
class LoopConfig(Config):
    generations: int = 3                     # students trained (the paper iterates 3 times)
    student_width: tuple[float, ...] = (1.0,)  # width of each generation's student relative to model.width
    student_depth: tuple[float, ...] = (1.0,)  # depth multiplier of each generation's student
    teacher_noise: bool = True               # the generation-0 teacher trains with the same noise (Algorithm 1)

    def __post_init__(self):
        require_positive(self, "generations")
        require(len(self.student_width) > 0 and all(w > 0 for w in self.student_width),
                f"loop.student_width must hold positive multipliers, got {self.student_width!r}")
        require(len(self.student_depth) > 0 and all(d > 0 for d in self.student_depth),
                f"loop.student_depth must hold positive multipliers, got {self.student_depth!r}")

    def width(self, generation: int) -> float:
        """Width multiplier of generation ``generation`` (1-based); the last entry repeats."""
        return self.student_width[min(generation, len(self.student_width)) - 1]

    def depth(self, generation: int) -> float:
        return self.student_depth[min(generation, len(self.student_depth)) - 1]


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: int = 50
    ckpt_every: int = 500
    threads: int = 0

    def __post_init__(self):
        require_nonnegative(self, "seed", "threads")
        require_positive(self, "log_every", "ckpt_every")
        require_choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    batch_size: int = 256                    # inference batch (pseudo labels, scoring): 1.9x faster than 1000 in
                                             # fp32 on a 2-core CPU (activations stay in cache); GPUs: larger
    robustness: bool = True                  # corrupted test sets (mCE) and perturbation sequences (FP)
    corruptions: str = "common"              # essence.corruptions subset (common = the 15 of the benchmark)
    robust_test: int = 1000                  # test images corrupted at every (corruption, severity)
    clips: int = 200                         # test images turned into perturbation sequences
    perturbations: tuple[str, ...] = ("gaussian_noise", "brightness", "translate", "rotate", "scale")
    corruption_seed: int = 0                 # the corrupted sets are fixed once seeded (same for every model)

    def __post_init__(self):
        require_positive(self, "batch_size", "robust_test", "clips")


@dataclass(frozen=True, kw_only=True)
class NoisyStudentConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _tiny() -> NoisyStudentConfig:
    """Seconds on a CPU: tests and smoke runs (fp32 for exact comparisons)."""
    return NoisyStudentConfig(
        model=ModelConfig(arch="resnet", width=0.5),
        noise=NoiseConfig(randaug_m=5.0),
        pseudo=PseudoConfig(threshold=0.0),      # a 6-step teacher is never 30% confident
        data=DataConfig(labeled_per_class=10, unlabeled=400, test_limit=200),
        optim=OptimConfig(batch_size=32, unlabeled_ratio=2, teacher_steps=6, student_steps=6, lr=0.05),
        loop=LoopConfig(generations=2),
        train=TrainConfig(precision="fp32", log_every=2, ckpt_every=3),
        eval=EvalConfig(batch_size=200, robust_test=32, clips=8, corruptions="noise",
                        perturbations=("gaussian_noise", "rotate")),
    )


def _quick() -> NoisyStudentConfig:
    """A 2-core CPU in about 5 minutes (a preview): a timm ResNet (4 stages of 1 BasicBlock, 16-128 channels,
    0.3M parameters), 100 labels per class, 20k unlabeled images, RandAugment n=2 at magnitude 5 (the official
    small-image recipe's, SVHN; geometric ranges scaled to 28 px), dropout 0.5, stochastic depth 0.2 at the last
    block, soft labels, unlabeled ratio 3; teacher 1,000 steps of 32 labeled images, students 400 steps of
    32 + 96 images (800 took 459 s on a 2-core Xeon in fp32, over the budget; 400 take 261 s there)."""
    return NoisyStudentConfig(
        model=ModelConfig(arch="resnet", width=1.0),
        noise=NoiseConfig(randaug_m=5.0),
        data=DataConfig(labeled_per_class=100, unlabeled=20000),
        optim=OptimConfig(batch_size=32, unlabeled_ratio=3, teacher_steps=1000, student_steps=400, lr=0.05),
        loop=LoopConfig(generations=2),
        train=TrainConfig(precision="auto", log_every=100, ckpt_every=500),
        eval=EvalConfig(robust_test=1000, clips=200),
    )


def _standard() -> NoisyStudentConfig:
    """The smallest setting that decides the claims in about 30 minutes on 2 cores (see reproduce.PLANS): the quick
    network, data and noise; the teacher trains for 1,500 steps (48 epochs of its 1,000 labels), every student for
    1,500 steps of 32 + 96 images (7 passes over the unlabeled images); robustness on 2,000 test images."""
    return _quick().replace(
        optim=OptimConfig(batch_size=32, unlabeled_ratio=3, teacher_steps=1500, student_steps=1500, lr=0.05),
        eval=EvalConfig(robust_test=2000, clips=300),
    )


def _paper() -> NoisyStudentConfig:
    """The paper's recipe on Fashion-MNIST for GPUs: EfficientNet-B0 teacher -> equal (B0) then larger students,
    RandAugment n=2 m=27 (ranges scaled to 28 px), dropout 0.5, stochastic depth 0.2, soft labels, threshold
    0.3 and balancing, unlabeled ratio 5 (SVHN recipe), 3 generations."""
    return NoisyStudentConfig(
        model=ModelConfig(arch="efficientnet", width=1.0, depth=1.0, stem_stride=1),
        noise=NoiseConfig(randaug_m=27.0),
        data=DataConfig(labeled_per_class=400, unlabeled=0),
        optim=OptimConfig(batch_size=128, unlabeled_ratio=5, teacher_steps=20000, student_steps=40000, lr=0.1,
                          warmup_steps=1000),
        loop=LoopConfig(generations=3, student_width=(1.0, 1.5, 1.5), student_depth=(1.0, 1.5, 1.5)),
        train=TrainConfig(precision="auto", log_every=200, ckpt_every=2000),
        eval=EvalConfig(batch_size=1024, robust_test=10000, clips=2000),
    )


PRESETS: Presets[NoisyStudentConfig] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard,
                                                "paper": _paper})
