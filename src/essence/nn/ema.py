"""Exponential moving averages of network parameters (momentum encoders, EMA teachers, weight averaging).

    update_momentum(encoder_k, encoder_q, m=0.999)   # theta_k <- m * theta_k + (1 - m) * theta_q

Only *parameters* are averaged. Buffers (BatchNorm running statistics) are left to the target network's own
forward passes, as in the official MoCo code (``moco/builder.py``: ``_momentum_update_key_encoder``);
:func:`copy_buffers` copies them when a method wants that instead.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["update_momentum", "copy_params", "copy_buffers", "make_momentum_copy", "EMA"]


def _check_pair(target: nn.Module, online: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"target has {len(t_params)} parameter tensors but online has {len(o_params)}; "
                         "the two networks must have the same architecture")
    for i, (t, o) in enumerate(zip(t_params, o_params)):
        if t.shape != o.shape:
            raise ValueError(f"parameter {i}: target shape {tuple(t.shape)} != online shape {tuple(o.shape)}")
    return t_params, o_params


@torch.no_grad()
def update_momentum(target: nn.Module, online: nn.Module, m: float) -> None:
    """In place: ``theta_target <- m * theta_target + (1 - m) * theta_online`` for every parameter.

    Args:
        target: the slowly moving network (MoCo's key encoder f_k).
        online: the network trained by back-propagation (MoCo's query encoder f_q).
        m: momentum in [0, 1]. ``m = 0`` copies ``online``; ``m = 1`` leaves ``target`` unchanged.

    Raises:
        ValueError: m outside [0, 1] or the two networks' parameters do not match.
    """
    if not 0.0 <= float(m) <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m!r}")
    t_params, o_params = _check_pair(target, online)
    if m == 1.0:
        return
    # lerp_(end, weight): t + weight * (o - t) = m * t + (1 - m) * o
    torch._foreach_lerp_(t_params, [o.detach() for o in o_params], 1.0 - float(m))


@torch.no_grad()
def copy_params(target: nn.Module, online: nn.Module) -> None:
    """Copy every parameter of ``online`` into ``target`` (buffers untouched)."""
    t_params, o_params = _check_pair(target, online)
    for t, o in zip(t_params, o_params):
        t.copy_(o)


@torch.no_grad()
def copy_buffers(target: nn.Module, online: nn.Module) -> None:
    """Copy every buffer of ``online`` (BN running statistics, counters) into ``target``."""
    t_bufs, o_bufs = list(target.buffers()), list(online.buffers())
    if len(t_bufs) != len(o_bufs):
        raise ValueError(f"target has {len(t_bufs)} buffers but online has {len(o_bufs)}")
    for t, o in zip(t_bufs, o_bufs):
        t.copy_(o)


def make_momentum_copy(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` (parameters and buffers) whose parameters never receive gradients."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class EMA(nn.Module):
    """A frozen moving-average copy of a network: ``ema = EMA(model, m=0.999); ema.update(model); ema(x)``."""

    def __init__(self, online: nn.Module, m: float = 0.999):
        super().__init__()
        if not 0.0 <= float(m) <= 1.0:
            raise ValueError(f"momentum m must be in [0, 1], got {m!r}")
        self.m = float(m)
        self.module = make_momentum_copy(online)

    def update(self, online: nn.Module, m: float | None = None) -> None:
        update_momentum(self.module, online, self.m if m is None else m)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
