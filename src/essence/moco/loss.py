"""InfoNCE over one positive key and K negatives (He et al. 2019, Eq. 1; ``moco/builder.py``).

    L_q = -log [ exp(q.k+ / T) / ( exp(q.k+ / T) + sum_i exp(q.k_i / T) ) ]

computed as a (1 + K)-way softmax cross-entropy whose correct class is index 0 (the positive). Everything here
runs in float32 even under autocast: with T = 0.07 a bf16 logit would be off by up to ~0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["infonce_logits", "infonce_loss", "batch_logits", "InfoNCE"]


def _fp32(*xs: torch.Tensor) -> list[torch.Tensor]:
    return [x.float() for x in xs]


def infonce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                   T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of MoCo's InfoNCE.

    Args:
        q: normalised queries (N, C).
        k: normalised positive keys (N, C), no gradient expected.
        queue: the dictionary of negative keys, stored as (C, K) like the official code.
        T: temperature.

    Returns:
        logits (N, 1 + K) = [q.k+ | q.queue] / T and targets (N,) of zeros (the positive is column 0).
    """
    if q.ndim != 2 or k.shape != q.shape:
        raise ValueError(f"q and k must both be (N, C), got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[0] != q.shape[1]:
        raise ValueError(f"queue must be (C, K) with C = {q.shape[1]}, got {tuple(queue.shape)}")
    if not T > 0:
        raise ValueError(f"temperature T must be positive, got {T!r}")
    with torch.autocast(q.device.type, enabled=False):
        q, k, queue = _fp32(q, k, queue)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)     # Nx1
        l_neg = torch.einsum("nc,ck->nk", q, queue)               # NxK
        logits = torch.cat([l_pos, l_neg], dim=1) / T             # Nx(1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits, labels


def infonce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                 T: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logits, labels): the mean over the batch of L_q."""
    logits, labels = infonce_logits(q, k, queue, T)
    return F.cross_entropy(logits, labels), logits, labels


def batch_logits(q: torch.Tensor, keys: torch.Tensor, T: float, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """End-to-end mechanism: the keys of the current (global) batch are the dictionary.

    Row n's positive is ``keys[offset + n]``; the other rows of ``keys`` are its negatives (K = N_global - 1).
    Shapes: q (N, C), keys (M, C) -> logits (N, M), labels (N,).
    """
    if q.ndim != 2 or keys.ndim != 2 or keys.shape[1] != q.shape[1]:
        raise ValueError(f"q (N, C) and keys (M, C) must share C, got {tuple(q.shape)} and {tuple(keys.shape)}")
    with torch.autocast(q.device.type, enabled=False):
        q, keys = _fp32(q, keys)
        logits = q @ keys.T / T                                   # NxM
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return logits, labels


class InfoNCE(nn.Module):
    """Module form of :func:`infonce_loss` with a fixed temperature."""

    def __init__(self, T: float = 0.07):
        super().__init__()
        if not T > 0:
            raise ValueError(f"temperature T must be positive, got {T!r}")
        self.T = float(T)

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        return infonce_loss(q, k, queue, self.T)[0]
