"""Noisy Student: "Self-training with Noisy Student improves ImageNet classification" (Xie, Luong, Hovy, Le,
CVPR 2020), on one CPU, one GPU or many processes.

    from essence.noisy_student import PRESETS, train
    cfg = PRESETS.build("quick", ["pseudo.label_type=hard", "loop.student_width=1,2"])
    result = train(cfg)                       # or: essence noisy-student train --preset quick

The pieces: :func:`rand_augment` (batched, official level mapping), :func:`build_model` (timm ResNet /
EfficientNet with dropout and linear stochastic depth), :func:`pseudo_label` and :func:`filter_and_balance`
(the un-noised teacher's labels, the official filter/balance step), :func:`noisy_student_loss`.
"""

from essence.noisy_student.config import (
    PRESETS,
    DataConfig,
    EvalConfig,
    LoopConfig,
    ModelConfig,
    NoiseConfig,
    NoisyStudentConfig,
    OptimConfig,
    PseudoConfig,
    TrainConfig,
)
from essence.noisy_student.loss import hard_cross_entropy, noisy_student_loss, soft_cross_entropy
from essence.noisy_student.pseudo import PseudoLabels, filter_and_balance, pseudo_label, targets_from_logits
from essence.noisy_student.randaugment import OPS, RandAugment, rand_augment

__all__ = ["NoisyStudentConfig", "ModelConfig", "NoiseConfig", "PseudoConfig", "DataConfig", "OptimConfig",
           "LoopConfig", "TrainConfig", "EvalConfig", "PRESETS", "RandAugment", "rand_augment", "OPS",
           "PseudoLabels", "pseudo_label", "filter_and_balance", "targets_from_logits", "soft_cross_entropy",
           "hard_cross_entropy", "noisy_student_loss", "build_model", "train", "train_generation",
           "evaluate_checkpoint"]


def __getattr__(name):  # timm and the training loop on first use
    if name == "build_model":
        from essence.noisy_student.model import build_model
        return build_model
    if name in ("train", "train_generation"):
        from essence.noisy_student import train as _train
        return getattr(_train, name)
    if name == "evaluate_checkpoint":
        from essence.noisy_student.evaluate import evaluate_checkpoint
        return evaluate_checkpoint
    raise AttributeError(name)
