"""StyleGAN2 objectives (section 2.4-2.6): non-saturating logistic loss, R1, path-length regularisation, style
mixing, and the lazy-regularisation rescaling of Adam.

    L_G   = E_z softplus(-D(G(z)))
    L_D   = E_z softplus(D(G(z))) + E_x softplus(-D(x))
    R1    = gamma / 2 * E_x |grad_x D(x)|^2                       (real images only)
    L_pl  = E_{w, y} (|J_w^T y|_2 - a)^2,  y ~ N(0, I) / sqrt(H W),  a <- a + decay (mean |J_w^T y| - a)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["g_nonsaturating", "d_logistic", "r1_penalty", "path_length_penalty", "PathLength", "mix_styles",
           "lazy_adam_params"]


def _atleast32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32/fp64 unchanged (exact-value tests run in fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z))) per sample: (N, 1) -> (N,)."""
    return F.softplus(-fake_logits.float()).flatten()


def d_logistic(fake_logits: torch.Tensor | None, real_logits: torch.Tensor | None) -> torch.Tensor:
    """softplus(D(G(z))) + softplus(-D(x)), mean over each side."""
    loss = torch.zeros((), device=(fake_logits if fake_logits is not None else real_logits).device)
    if fake_logits is not None:
        loss = loss + F.softplus(fake_logits.float()).mean()
    if real_logits is not None:
        loss = loss + F.softplus(-real_logits.float()).mean()
    return loss


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """|grad_x D(x)|^2 per sample (N,), of the logits summed over the batch; ``real`` must require grad.

    Multiply by gamma / 2 for the loss (pitfall 5: gamma / 2, not gamma).
    """
    (grad,) = torch.autograd.grad(_atleast32(real_logits).sum(), real, create_graph=create_graph)
    return _atleast32(grad).square().sum(dim=(1, 2, 3))


def path_length_penalty(img: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor, decay: float,
                        *, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(penalty (N,), lengths |J_w^T y| (N,), new running mean a (detached)).

    J_w^T y = grad_ws <g(ws), y> with one backward pass (``create_graph=True`` so the penalty trains g);
    lengths = sqrt(mean over the num_ws copies of sum over w_dim of grad^2) as in the official code.
    """
    H, W = img.shape[2], img.shape[3]
    if noise is None:
        noise = torch.randn(img.shape, generator=generator).to(img.device) / (H * W) ** 0.5
    (grad,) = torch.autograd.grad((_atleast32(img) * noise.to(_atleast32(img).dtype)).sum(), ws, create_graph=True)
    lengths = _atleast32(grad).square().sum(dim=2).mean(dim=1).sqrt()              # (N,)
    a = pl_mean.lerp(lengths.mean().detach(), decay)
    penalty = (lengths - a).square()
    return penalty, lengths, a.detach()


class PathLength(torch.nn.Module):
    """Holds the running mean a as a buffer (saved in checkpoints, never back-propagated through)."""

    def __init__(self, decay: float = 0.01):
        super().__init__()
        self.decay = decay
        self.register_buffer("pl_mean", torch.zeros(()))

    def forward(self, img: torch.Tensor, ws: torch.Tensor, *, generator: torch.Generator | None = None):
        penalty, lengths, a = path_length_penalty(img, ws, self.pl_mean, self.decay, generator=generator)
        self.pl_mean.copy_(a)
        return penalty, lengths


def mix_styles(ws: torch.Tensor, ws2: torch.Tensor, prob: float, generator: torch.Generator | None = None,
               ) -> tuple[torch.Tensor, int]:
    """Style mixing: with probability ``prob`` a crossover index c ~ U[1, num_ws) is drawn and ws[:, c:] is
    taken from ``ws2``; otherwise c = num_ws (no mixing). One c per minibatch, as in the official code."""
    num = ws.shape[1]
    dev = generator.device if generator is not None else "cpu"
    cutoff = int(torch.randint(1, num, (), generator=generator, device=dev)) if num > 1 else num
    if float(torch.rand((), generator=generator, device=dev)) >= prob:
        cutoff = num
    if cutoff < num:
        ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
    return ws, cutoff


def lazy_adam_params(lr: float, betas: tuple[float, float], interval: int) -> tuple[float, tuple[float, float]]:
    """Adam settings when a regulariser runs every ``interval`` minibatches (section 2.5): with c = k / (k + 1),
    lr * c and betas ** c (k main steps + 1 regularisation step make k + 1 optimizer steps). ``interval`` <= 1
    (non-lazy) leaves them unchanged."""
    if interval <= 1:
        return lr, betas
    c = interval / (interval + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)
