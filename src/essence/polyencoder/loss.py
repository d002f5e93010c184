"""The paper's ranking losses (card §2.2-2.4, pitfall "Loss implementation").

- In-batch negatives (bi, poly): S is the B x B' score matrix of every context against every label of the
  batch (B' = B, or W * B when labels are gathered from W DDP processes); the loss is
  ``mean_i -log softmax(S_i)[target_i]`` with target_i the column of context i's own label.
- Inline / sampled negatives (cross): each context is scored against its gold label (column 0) and K sampled
  negatives; the loss is ``mean_i -log softmax(S_i)[0]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["in_batch_loss", "inline_loss"]


def in_batch_loss(scores: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Cross-entropy with context i's label in column ``offset + i``. Shape: (B, B') -> scalar."""
    B, C = scores.shape
    if offset + B > C:
        raise ValueError(f"scores {tuple(scores.shape)} have no column {offset + B - 1} for the last label")
    target = torch.arange(offset, offset + B, device=scores.device)
    return F.cross_entropy(scores.float(), target)


def inline_loss(scores: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the gold candidate in column 0. Shape: (B, 1 + K) -> scalar."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"expected scores (B, 1 + K) with K >= 1 negatives, got {tuple(scores.shape)}")
    return F.cross_entropy(scores.float(), torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))
