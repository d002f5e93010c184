"""Teacher and student networks from timm, with the paper's model noise (Xie et al. 2019, §3.1).

- ``resnet``: timm ``ResNet`` with BasicBlocks, 4 stages of ``round(depth)`` blocks and 16-32-64-128 x ``width``
  channels, a 3-conv "deep" stem whose first conv has ``stem_stride`` (no max-pool: 28 px images).
- ``efficientnet``: timm's EfficientNet-B0 generator with ``channel_multiplier=width``,
  ``depth_multiplier=depth`` (the compound-scaling family B0..B7 is B0 with larger multipliers); its stem
  stride is ``stem_stride``.

Model noise: dropout with rate ``noise.dropout`` before the classifier, and stochastic depth on every residual
block with the paper's linear rule: block ``i`` of ``L`` (0-based) is dropped with probability
``stochastic_depth * i / (L - 1)``, so the last block survives with probability ``1 - stochastic_depth`` (0.8).
Both are active only in train mode; the teacher labels in eval mode (:func:`essence.noisy_student.pseudo`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from essence.noisy_student.config import ModelConfig

__all__ = ["build_model", "residual_blocks", "set_stochastic_depth", "survival_probabilities", "count_parameters",
           "check_student_size"]


def build_model(cfg: ModelConfig, *, width: float = 1.0, depth: float = 1.0, dropout: float = 0.0,
                stochastic_depth: float = 0.0) -> nn.Module:
    """A classifier ``(N, in_chans, H, W) -> (N, num_classes)`` logits.

    Args:
        cfg: the teacher's architecture.
        width, depth: multipliers on top of ``cfg.width`` / ``cfg.depth`` (a student's size).
        dropout: dropout rate before the classifier.
        stochastic_depth: drop rate of the last residual block (linear rule over blocks).
    """
    w, d = cfg.width * width, cfg.depth * depth
    if cfg.arch == "resnet":
        from timm.models.resnet import BasicBlock, ResNet

        chans = tuple(max(4, int(round(c * w / 4)) * 4) for c in (16, 32, 64, 128))
        blocks = max(1, int(round(d)))
        model = ResNet(BasicBlock, layers=(blocks,) * 4, channels=chans, in_chans=cfg.in_chans,
                       num_classes=cfg.num_classes, stem_type="deep", stem_width=max(4, chans[0] // 2),
                       drop_rate=dropout, drop_path_rate=0.0)
        model.conv1[0].stride = (cfg.stem_stride, cfg.stem_stride)
        model.maxpool = nn.Identity()
    else:
        from timm.models.efficientnet import _gen_efficientnet

        model = _gen_efficientnet("efficientnet_b0", channel_multiplier=w, depth_multiplier=d, pretrained=False,
                                  in_chans=cfg.in_chans, num_classes=cfg.num_classes, drop_rate=dropout,
                                  drop_path_rate=0.0)
        model.conv_stem.stride = (cfg.stem_stride, cfg.stem_stride)
    set_stochastic_depth(model, stochastic_depth)
    return model


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks with an identity (or projection) shortcut, in depth order: where stochastic depth applies."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
    from timm.models.resnet import BasicBlock, Bottleneck

    out = []
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            out.append(m)
        elif isinstance(m, (DepthwiseSeparableConv, InvertedResidual)) and getattr(m, "has_skip", False):
            out.append(m)
    return out


def set_stochastic_depth(model: nn.Module, rate: float) -> list[float]:
    """Give residual block ``i`` of ``L`` the drop probability ``rate * i / (L - 1)`` (last block: ``rate``).

    Returns the drop probabilities set, in depth order."""
    from timm.layers import DropPath

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"stochastic-depth rate must be in [0, 1), got {rate}")
    blocks = residual_blocks(model)
    n = len(blocks)
    probs = [rate * i / (n - 1) if n > 1 else rate for i in range(n)]
    for block, p in zip(blocks, probs):
        block.drop_path = DropPath(p) if p > 0 else nn.Identity()
    return probs


def survival_probabilities(model: nn.Module) -> list[float]:
    """1 - drop probability of each residual block, in depth order (1.0 where stochastic depth is off)."""
    out = []
    for block in residual_blocks(model):
        dp = getattr(block, "drop_path", None)
        out.append(1.0 - float(getattr(dp, "drop_prob", 0.0) or 0.0))
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_student_size(teacher: nn.Module, student: nn.Module) -> bool:
    """Warn (and return False) when the student has fewer parameters than its teacher: that is knowledge
    distillation, not the paper's equal-or-larger Noisy Student."""
    nt, ns = count_parameters(teacher), count_parameters(student)
    if ns < nt:
        warnings.warn(f"the student ({ns:,} parameters) is smaller than its teacher ({nt:,}): that is "
                      "distillation, not Noisy Student (the paper's student is equal or larger)", stacklevel=2)
        return False
    return True


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000, precision=None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Eval-mode logits (N, classes) in fp32 on the CPU for normalised float images (N, C, H, W)."""
    from contextlib import nullcontext

    from essence.core.loop import eval_mode

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(dev, non_blocking=True)
            with precision.autocast() if precision is not None else nullcontext():
                out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
