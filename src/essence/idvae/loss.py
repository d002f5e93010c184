"""IDVAE's objectives and which parameters each one updates (paper section 0; card 2.3-2.4).

Notation: x real images, x~ = G(z) reconstructions with z ~ q(z|x), x_p = G(z_p) prior samples with
z_p ~ N(0, I), h(.) the last shared layer of the (discriminator) trunk, l(.) the discriminator logit,
s(l, t) = BCE-with-logits. Per-sample terms are averaged over the batch.

- ``L_prior`` = KL(q(z|x) || N(0, I)) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)
- ``L_pixel`` = ||x - x~||^2 summed over pixels
- ``L_enc``  = recon_weight * L_pixel + kl_weight * L_prior                     (the encoder loss)
- ``L_GAN``  = s(l(x), 1) + s(l(x~), 0) + s(l(x_p), 0)  with x~, x_p fixed      (the discriminator loss)
- ``L_FM``   = mean_k (h_k(x) - h_k(x~))^2  (feature matching on the last shared layer)
- ``L_adv``  = s(l(x~), 1) + s(l(x_p), 1)  (non-saturating: the decoder raises D's "real" output)
- ``L_dec``  = adv_weight * L_adv + gamma * L_FM (+ dec_pixel_weight * L_pixel)  (the decoder loss)

:data:`UPDATES` is the one place that says which role's parameters each objective updates. In IDVAE the trunk
belongs to the encoder *and* the discriminator roles, so it is trained on L_enc + lambda_D L_GAN: the defining
property of the model. The decoder is updated by L_dec only; the gradients of L_dec flow *through* the trunk
to reach the decoder, but the trunk is not stepped with them, and L_GAN never reaches the decoder.
The VAE baseline trains encoder and decoder on L_enc (the negative ELBO up to constants).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from essence.idvae.config import LossConfig
from essence.idvae.model import VAE, frozen_bn_stats, reparameterize

__all__ = ["kl_divergence", "pixel_reconstruction", "feature_matching", "discriminator_loss",
           "generator_adversarial_loss", "UPDATES", "VAE_UPDATES", "THROUGH_FAKES", "StepTerms", "compute_terms",
           "objectives", "role_gradients"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample. Shapes (N, d) -> (N,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def pixel_reconstruction(x: torch.Tensor, x_tilde: torch.Tensor) -> torch.Tensor:
    """Squared error summed over pixels per sample. Shapes (N, C, S, S) -> (N,)."""
    return (x - x_tilde).pow(2).flatten(1).sum(dim=1)


def feature_matching(h_real: torch.Tensor, h_fake: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the last shared layer's features per sample. Shapes (N, m) -> (N,)."""
    return (h_real - h_fake).pow(2).mean(dim=1)


def discriminator_loss(l_real: torch.Tensor, l_recon: torch.Tensor, l_prior: torch.Tensor | None) -> torch.Tensor:
    """L_GAN = s(l(x), 1) + s(l(x~), 0) [+ s(l(x_p), 0)], each a batch mean. Logits (N,)."""
    loss = F.binary_cross_entropy_with_logits(l_real, torch.ones_like(l_real)) + \
        F.binary_cross_entropy_with_logits(l_recon, torch.zeros_like(l_recon))
    if l_prior is not None:
        loss = loss + F.binary_cross_entropy_with_logits(l_prior, torch.zeros_like(l_prior))
    return loss


def generator_adversarial_loss(l_recon: torch.Tensor, l_prior: torch.Tensor | None) -> torch.Tensor:
    """L_adv = s(l(x~), 1) [+ s(l(x_p), 1)] (non-saturating generator loss). Logits (N,)."""
    loss = F.binary_cross_entropy_with_logits(l_recon, torch.ones_like(l_recon))
    if l_prior is not None:
        loss = loss + F.binary_cross_entropy_with_logits(l_prior, torch.ones_like(l_prior))
    return loss


# Which role's parameters each objective updates (model.parameter_roles() gives the parameters of a role).
UPDATES: dict[str, tuple[str, ...]] = {
    "L_enc": ("encoder",),              # trunk phi + encoder head (mu, log sigma^2)
    "L_GAN": ("discriminator",),        # IDVAE: the same trunk phi + discriminator head psi; VAE-GAN: D's own trunk
    "L_dec": ("decoder",),              # theta: the decoder, which is also the generator
}
VAE_UPDATES: dict[str, tuple[str, ...]] = {"L_enc": ("encoder", "decoder")}
# Whether an objective's gradient flows back through the fakes x~, x_p into the networks that made them.
# L_GAN: no (the discriminator treats the fakes as fixed data); L_dec: yes (that is how G learns); L_enc: yes
# (only matters when feature matching is part of it: then it reaches the encoder through z).
THROUGH_FAKES: dict[str, bool] = {"L_enc": True, "L_GAN": False, "L_dec": True}


@dataclass
class StepTerms:
    """Every loss term of one step (scalars) and the tensors that later steps or tests look at."""

    L_prior: torch.Tensor
    L_pixel: torch.Tensor
    L_GAN: torch.Tensor | None = None
    L_FM: torch.Tensor | None = None
    L_adv: torch.Tensor | None = None
    x_tilde: torch.Tensor | None = None          # (N, C, S, S)
    x_prior: torch.Tensor | None = None          # (N, C, S, S) or None
    d_real: torch.Tensor | None = None           # D(x) = sigmoid(l(x)), (N,)
    d_fake: torch.Tensor | None = None           # D(x~) (and D(x_p)), (N or 2N,)
    h_real: torch.Tensor | None = None           # (N, m)
    fakes: torch.Tensor | None = None            # [x~; x_p] as decoded (attached to G)
    fakes_in: torch.Tensor | None = None         # the same values as a leaf: what the trunk saw

    def scalars(self) -> dict[str, float]:
        """Detached floats of the terms that exist, for logging."""
        out = {k: float(getattr(self, k).detach()) for k in ("L_prior", "L_pixel", "L_GAN", "L_FM", "L_adv")
               if getattr(self, k) is not None}
        if self.d_real is not None:
            out["D_real"] = float(self.d_real.detach().float().mean())
            out["D_fake"] = float(self.d_fake.detach().float().mean())
        return out


def compute_terms(model: VAE, x: torch.Tensor, y: torch.Tensor | None, eps: torch.Tensor,
                  z_p: torch.Tensor | None, y_p: torch.Tensor | None, cfg: LossConfig) -> StepTerms:
    """One forward pass of the model on a batch (card 2.4, steps 2-4).

    Args:
        x: real images (N, C, S, S) in [-1, 1]; y: their labels (N,) for a conditional model, else None.
        eps: the reparameterisation noise (N, d).
        z_p: prior latents (N_p, d) for the prior fakes (None: no prior fakes); y_p: their labels (N_p,).

    The trunk runs on reals and on fakes in separate passes (separate BN batches); the fake passes do not touch
    the BN running statistics (:func:`~essence.idvae.model.frozen_bn_stats`).
    """
    h_x, mu, logvar = model.encode(x, y)
    z = reparameterize(mu, logvar, eps)
    n = x.shape[0]
    use_prior = model.has_discriminator and cfg.prior_fakes and z_p is not None
    if use_prior:                                                   # one decoder batch for x~ and x_p
        zs = torch.cat([z, z_p])
        ys = torch.cat([y, y_p]) if y is not None else None
        fakes = model.decode(zs, ys)
        x_tilde, x_prior = fakes[:n], fakes[n:]
    else:
        fakes = x_tilde = model.decode(z, y)
        x_prior = None
    terms = StepTerms(L_prior=kl_divergence(mu, logvar).mean(), L_pixel=pixel_reconstruction(x, x_tilde).mean(),
                      x_tilde=x_tilde, x_prior=x_prior)
    if not model.has_discriminator:
        return terms
    # discriminator features of the reals: for IDVAE the trunk pass above already is one
    if model.kind == "idvae":
        h_real, l_real = h_x, model.discriminator_head(h_x, y)
    else:
        h_real, l_real = model.discriminate(x, y)
    y_fake = torch.cat([y, y_p]) if (use_prior and y is not None) else y
    # The trunk sees the fakes as a leaf: L_GAN's gradient stops there (x~ and x_p are fixed), and
    # role_gradients carries L_dec's gradient on to G through the leaf. One trunk pass serves both.
    fakes_in = fakes.detach().requires_grad_(True)
    with frozen_bn_stats(model):
        h_fake, l_fake = model.discriminate(fakes_in, y_fake)
    l_recon, l_prior = (l_fake[:n], l_fake[n:]) if use_prior else (l_fake, None)
    terms.fakes, terms.fakes_in = fakes, fakes_in
    terms.L_GAN = discriminator_loss(l_real, l_recon, l_prior)
    terms.L_adv = generator_adversarial_loss(l_recon, l_prior)
    terms.L_FM = feature_matching(h_real, h_fake[:n]).mean()
    terms.d_real, terms.d_fake, terms.h_real = torch.sigmoid(l_real), torch.sigmoid(l_fake), h_real
    return terms


def role_gradients(model: VAE, objs: dict[str, torch.Tensor], updates: dict[str, tuple[str, ...]],
                   terms: StepTerms | None = None, scale=None) -> None:
    """Accumulate into ``p.grad`` the gradient of every objective in ``objs`` with respect to the parameters of
    the roles that ``updates`` (:data:`UPDATES`) gives it, and of nothing else (``torch.autograd.grad`` with
    explicit inputs).

    A parameter in two roles (IDVAE's trunk: encoder and discriminator) gets the sum. For the objectives of
    :data:`THROUGH_FAKES`, the gradient that reaches the trunk's fake input (``terms.fakes_in``) is carried on
    through the decoded fakes (``terms.fakes``) into the same parameters. ``scale`` maps a loss to the tensor
    that is differentiated (a GradScaler's ``scale`` for fp16).
    """
    roles = model.parameter_roles()
    leaf = terms.fakes_in if terms is not None else None
    for name, value in objs.items():
        params, seen = [], set()
        for role in updates[name]:
            for p in roles[role]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        if not params:
            continue
        loss = value if scale is None else scale(value)
        through = leaf is not None and THROUGH_FAKES.get(name, True)
        grads = list(torch.autograd.grad(loss, [*params, leaf] if through else params, retain_graph=True,
                                         allow_unused=True))
        if through:
            g_fake = grads.pop()
            if g_fake is not None:
                chained = torch.autograd.grad(terms.fakes, params, grad_outputs=g_fake, retain_graph=True,
                                              allow_unused=True)
                grads = [a if b is None else b if a is None else a + b for a, b in zip(grads, chained)]
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g


def objectives(terms: StepTerms, cfg: LossConfig, *, adversarial: bool = True) -> dict[str, torch.Tensor]:
    """The objectives of :data:`UPDATES` (or :data:`VAE_UPDATES` when ``adversarial`` is False), weighted.

    ``L_GAN`` here is lambda_D * L_GAN: in the trunk it is added to L_enc. With ``fm_stop_grad_trunk=False``
    the feature-matching term is also part of L_enc (card pitfall 1, option b).
    """
    L_enc = cfg.recon_weight * terms.L_pixel + cfg.kl_weight * terms.L_prior
    if not adversarial:
        return {"L_enc": L_enc}
    fm = terms.L_FM if cfg.feature_matching else terms.L_FM * 0.0
    if cfg.feature_matching and not cfg.fm_stop_grad_trunk:
        L_enc = L_enc + cfg.gamma * fm
    L_dec = cfg.adv_weight * terms.L_adv + cfg.gamma * fm
    if cfg.dec_pixel_weight:
        L_dec = L_dec + cfg.dec_pixel_weight * terms.L_pixel
    return {"L_enc": L_enc, "L_GAN": cfg.lambda_d * terms.L_GAN, "L_dec": L_dec}
