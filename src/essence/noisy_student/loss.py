"""The student's objective (Xie et al. 2019, Eq. 2 and the official ``main.py``).

``data_loss = CE_ls(labeled) + unlabeled_ratio * CE(pseudo)``, each a per-example mean, as in the official code
(equal, up to a constant factor that the learning rate absorbs, to the mean over the concatenated batch that the
paper writes). Labeled CE uses label smoothing 0.1; hard pseudo labels too; soft pseudo labels do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_cross_entropy", "hard_cross_entropy", "noisy_student_loss"]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c p_c log softmax(logits)_c`` for probability targets (N, C)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must match")
    return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def hard_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def noisy_student_loss(logits_l: torch.Tensor, labels: torch.Tensor, logits_u: torch.Tensor | None,
                       targets_u: torch.Tensor | None, *, label_type: str = "soft", unlabeled_ratio: float = 1.0,
                       label_smoothing: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, parts): labeled CE (smoothed) + ratio x pseudo-label CE (soft, or hard + smoothing)."""
    lab = hard_cross_entropy(logits_l, labels, label_smoothing)
    parts = {"loss_labeled": float(lab.detach())}
    if logits_u is None or targets_u is None or logits_u.shape[0] == 0:
        return lab, parts
    if label_type == "soft":
        unl = soft_cross_entropy(logits_u, targets_u)
    else:
        unl = hard_cross_entropy(logits_u, targets_u.argmax(1), label_smoothing)
    parts["loss_unlabeled"] = float(unl.detach())
    return lab + unlabeled_ratio * unl, parts
