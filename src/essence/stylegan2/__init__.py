"""StyleGAN2: Analyzing and Improving the Image Quality of StyleGAN (Karras, Laine, Aittala, Hellsten, Lehtinen,
Aila 2019), in pure PyTorch (no custom CUDA/C++ ops), on one CPU, one GPU or many processes.

    from essence.stylegan2 import PRESETS, Generator, train
    cfg = PRESETS.build("quick")
    result = train(cfg)                                 # or: essence stylegan2 train --preset quick
    img = result.G_ema(z, psi=0.7)                      # G.mapping / G.synthesis as in stylegan2-ada-pytorch
"""

from essence.stylegan2.config import (
    PRESETS,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    StyleGAN2Config,
    TrainConfig,
)
from essence.stylegan2.loss import d_logistic, g_nonsaturating, path_length_penalty, r1_penalty
from essence.stylegan2.model import Discriminator, Generator, MappingNetwork, SynthesisNetwork, modulated_conv2d
from essence.stylegan2.ops import downsample2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["Generator", "Discriminator", "MappingNetwork", "SynthesisNetwork", "modulated_conv2d", "upfirdn2d",
           "upsample2d", "downsample2d", "setup_filter", "g_nonsaturating", "d_logistic", "r1_penalty",
           "path_length_penalty", "StyleGAN2Config", "ModelConfig", "DataConfig", "LossConfig", "OptimConfig",
           "TrainConfig", "EvalConfig", "PRESETS", "train", "load_generator"]


def __getattr__(name):  # heavy modules on first use
    if name == "train":
        from essence.stylegan2.train import train
        return train
    if name == "load_generator":
        from essence.stylegan2.evaluate import load_generator
        return load_generator
    raise AttributeError(name)
