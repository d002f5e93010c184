"""MoCo: Momentum Contrast for Unsupervised Visual Representation Learning (He, Fan, Wu, Xie, Girshick 2019)
and MoCo v2 (Chen, Fan, Girshick, He 2020), on one CPU, one GPU or many processes.

    from essence.moco import MoCo, PRESETS, train
    cfg = PRESETS.build("quick", ["model.K=16384"])
    result = train(cfg)                       # or: essence moco train --preset quick
    export_backbone("runs/moco/<run>", "backbone.safetensors")   # plain timm/torchvision ResNet weights
"""

from essence.moco.config import PRESETS, DataConfig, EvalConfig, MoCoConfig, ModelConfig, OptimConfig, TrainConfig
from essence.moco.loss import InfoNCE, infonce_logits, infonce_loss
from essence.moco.model import Encoder, MoCo, MoCoOutput, SplitBatchNorm

__all__ = ["MoCo", "MoCoOutput", "Encoder", "SplitBatchNorm", "InfoNCE", "infonce_logits", "infonce_loss",
           "MoCoConfig", "ModelConfig", "DataConfig", "OptimConfig", "TrainConfig", "EvalConfig", "PRESETS",
           "train", "evaluate_checkpoint", "export_backbone", "MoCoV2Transform"]


def __getattr__(name):  # heavy modules on first use
    if name == "train":
        from essence.moco.train import train
        return train
    if name == "evaluate_checkpoint":
        from essence.moco.evaluate import evaluate_checkpoint
        return evaluate_checkpoint
    if name == "export_backbone":
        from essence.moco.export import export_backbone
        return export_backbone
    if name == "MoCoV2Transform":
        from essence.moco.data import MoCoV2Transform
        return MoCoV2Transform
    raise AttributeError(name)
