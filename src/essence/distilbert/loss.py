"""The triple loss of the official ``distiller.py`` (card §2.3).

- ``L_ce = KL(softmax(z_t / T) || softmax(z_s / T)) * T^2``, ``batchmean`` over the selected positions (every
  non-padding token, or only the MLM targets with ``restrict_ce_to_mask``).
- ``L_mlm``: cross-entropy of the student at the MLM targets.
- ``L_cos``: mean of ``1 - cos(h_s, h_t)`` over non-padding tokens of the last hidden layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_target_loss", "mlm_loss", "cosine_loss", "triple_loss"]


def _rows(keep: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of each (flattened) tensor where ``keep`` is true; no copy when every row is kept."""
    keep = keep.reshape(-1)
    return tensors if bool(keep.all()) else tuple(x[keep] for x in tensors)


def soft_target_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, select: torch.Tensor,
                     temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher/T || student/T) * T^2, averaged over the selected positions (``select``: bool, same shape
    as the logits without the vocabulary axis). No gradient flows to the teacher's logits.

    The teacher's distribution enters as log-probabilities (``log_target``), and an all-true ``select`` (every
    token of a batch without padding) skips the row gather: the same value with fewer passes over the
    (positions x vocabulary) logits, the largest tensors of a distillation step."""
    vocab = s_logits.shape[-1]
    s, t = _rows(select, s_logits.reshape(-1, vocab), t_logits.reshape(-1, vocab))
    with torch.no_grad():
        log_t = F.log_softmax(t.float() / temperature, dim=-1)
    kl = F.kl_div(F.log_softmax(s.float() / temperature, dim=-1), log_t, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def mlm_loss(s_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the MLM targets (``labels != -100``); the other rows are dropped before the softmax."""
    target = labels.reshape(-1)
    logits, target = _rows(target != -100, s_logits.reshape(-1, s_logits.shape[-1]), target)
    return F.cross_entropy(logits.float(), target)


def cosine_loss(s_hidden: torch.Tensor, t_hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    keep = attention.bool()
    s, t = s_hidden[keep].float(), t_hidden[keep].float()
    return F.cosine_embedding_loss(s, t, torch.ones(s.shape[0], device=s.device), reduction="mean")


def triple_loss(s_logits, s_hidden, labels, attention, *, t_logits=None, t_hidden=None, alpha_ce=5.0,
                alpha_mlm=2.0, alpha_cos=1.0, temperature=2.0, restrict_ce_to_mask=False
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted total, {ce, mlm, cos}); terms with weight 0 are not computed."""
    parts: dict[str, torch.Tensor] = {}
    total = s_logits.new_zeros((), dtype=torch.float32)
    if alpha_ce > 0:
        select = (labels != -100) if restrict_ce_to_mask else attention.bool()
        parts["ce"] = soft_target_loss(s_logits, t_logits, select, temperature)
        total = total + alpha_ce * parts["ce"]
    if alpha_mlm > 0:
        parts["mlm"] = mlm_loss(s_logits, labels)
        total = total + alpha_mlm * parts["mlm"]
    if alpha_cos > 0:
        parts["cos"] = cosine_loss(s_hidden, t_hidden, attention)
        total = total + alpha_cos * parts["cos"]
    return total, parts
