"""Implicit Discriminator in Variational Autoencoder (Munjal, Paul, Krishnan 2019) and its two baselines.

IDVAE is a *two-tier* model: one convolutional trunk T_phi whose last shared layer h feeds two fully connected
heads, the encoder head (mu, log sigma^2 of q(z|x)) and the discriminator head (a real/fake logit), and one
decoder G_theta that is both the VAE decoder and the GAN generator (paper section 0 / card 2.1)::

    x --T_phi--> h --encoder head-------> mu, log sigma^2 --reparameterize--> z --G_theta--> x~
                   \\--discriminator head--> l(x)

The baselines share the sizes of every block (card section 6):

- :class:`VAE`: trunk + encoder head + decoder; no adversary.
- :class:`VAEGAN`: the VAE plus a *separate* discriminator (a second trunk with a logit head): three tiers.
- :class:`ImplicitDiscriminatorVAE`: the VAE's own trunk doubles as the discriminator: two tiers.

Each model exposes ``parameter_roles()``: the parameters of the encoder, the discriminator and the decoder roles.
In IDVAE the trunk belongs to both the encoder and the discriminator roles; :mod:`essence.idvae.loss` says which
objective updates which role.

Networks (card 6): trunk Conv(C->w, 4, s2) - LReLU - Conv(w->2w, 4, s2) - BN - LReLU - FC(2w (S/4)^2 -> m) -
LReLU = h; decoder FC(d -> 2w (S/4)^2) - BN - ReLU - ConvT(2w->w, 4, s2) - BN - ReLU - ConvT(w->C, 4, s2) - tanh.
Images are in [-1, 1]. The conditional models feed y as one-hot constant maps to the trunk input and as a one-hot
concatenated to z to the decoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from essence.idvae.config import ModelConfig

__all__ = ["Trunk", "EncoderHead", "DiscriminatorHead", "Decoder", "VAE", "VAEGAN", "ImplicitDiscriminatorVAE",
           "build_model", "count_parameters", "reparameterize", "frozen_bn_stats"]


def _one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    if y.ndim != 1 or y.is_floating_point():
        raise ValueError(f"labels must be integer class indices of shape (N,), got {tuple(y.shape)} {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return F.one_hot(y, num_classes).to(dtype)


class Trunk(nn.Module):
    """T_phi: images (N, C, S, S) in [-1, 1] (+ labels (N,) when conditional) -> h (N, m)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w, s4 = cfg.width, cfg.image_size // 4
        self.num_classes = cfg.num_classes if cfg.conditional else 0
        self.conv1 = nn.Conv2d(cfg.channels + self.num_classes, w, 4, 2, 1)    # S -> S/2
        self.conv2 = nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False)                  # S/2 -> S/4
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.fc = nn.Linear(2 * w * s4 * s4, cfg.hidden)                      # h: the last shared layer

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise ValueError("this trunk is conditional: pass the labels y")
            maps = _one_hot(y, self.num_classes, x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, maps], dim=1)                                    # (N, C + K, S, S)
        x = F.leaky_relu(self.conv1(x), 0.2)                                   # (N, w, S/2, S/2)
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.2)                         # (N, 2w, S/4, S/4)
        return F.leaky_relu(self.fc(x.flatten(1)), 0.2)                        # (N, m)


class EncoderHead(nn.Module):
    """h (N, m) -> mu (N, d), log sigma^2 (N, d) clamped to [-c, c]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.hidden, 2 * cfg.latent)
        self.clamp = cfg.logvar_clamp

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc(h).chunk(2, dim=1)
        return mu, logvar.clamp(-self.clamp, self.clamp)


class DiscriminatorHead(nn.Module):
    """h (N, m) -> l (N,): the logit of "x is real", D(x) = sigmoid(l).

    With ``cond_discriminator="projection"`` a conditional head adds <embed(y), h> (Miyato & Koyama 2018), so the
    logit depends on whether the image matches its label, not only on the label maps at the trunk input.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.hidden, 1)
        self.embed = (nn.Embedding(cfg.num_classes, cfg.hidden)
                      if cfg.conditional and cfg.cond_discriminator == "projection" else None)
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        logit = self.fc(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator head is conditional: pass the labels y")
            logit = logit + (self.embed(y).to(h.dtype) * h).sum(dim=1)
        return logit


class Decoder(nn.Module):
    """G_theta: z (N, d) (+ labels (N,) when conditional) -> images (N, C, S, S) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w, self.s4 = cfg.width, cfg.image_size // 4
        self.num_classes = cfg.num_classes if cfg.conditional else 0
        self.fc = nn.Linear(cfg.latent + self.num_classes, 2 * w * self.s4 * self.s4, bias=False)
        self.bn0 = nn.BatchNorm2d(2 * w)
        self.deconv1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False)     # S/4 -> S/2
        self.bn1 = nn.BatchNorm2d(w)
        self.deconv2 = nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1)           # S/2 -> S

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise ValueError("this decoder is conditional: pass the labels y")
            z = torch.cat([z, _one_hot(y, self.num_classes, z.dtype)], dim=1)  # (N, d + K)
        x = self.fc(z).view(z.shape[0], -1, self.s4, self.s4)                   # (N, 2w, S/4, S/4)
        x = F.relu(self.bn0(x))
        x = F.relu(self.bn1(self.deconv1(x)))                                   # (N, w, S/2, S/2)
        return torch.tanh(self.deconv2(x))                                      # (N, C, S, S)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(log sigma^2 / 2). Shapes (N, d)."""
    return mu + torch.exp(0.5 * logvar) * eps


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with the batch's statistics but leave their running statistics as
    they are (momentum 0). The trunk sees fakes in their own forward passes (card pitfall 3: real and fake never
    share a BN batch) and its running statistics, used to encode test images, come from real images only."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    try:
        for m in bns:
            m.momentum = 0.0
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


class VAE(nn.Module):
    """Trunk + encoder head + decoder (Kingma & Welling 2014): the baseline without an adversary."""

    kind = "vae"
    has_discriminator = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg)
        self.encoder_head = EncoderHead(cfg)
        self.decoder = Decoder(cfg)

    @property
    def conditional(self) -> bool:
        return self.cfg.conditional

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
        """x (N, C, S, S) in [-1, 1] -> (h (N, m), mu (N, d), log sigma^2 (N, d))."""
        h = self.trunk(x, y)
        mu, logvar = self.encoder_head(h)
        return h, mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, d) -> images (N, C, S, S) in [-1, 1]."""
        return self.decoder(z, y)

    def discriminate(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("the VAE has no discriminator")

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x~ = G(mu(x)): the deterministic reconstruction (z = mu), images in [-1, 1]."""
        _, mu, _ = self.encode(x, y)
        return self.decode(mu, y)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """n prior samples G(z_p), z_p ~ N(0, I), images (n, C, S, S) in [-1, 1]."""
        device = device if device is not None else next(self.parameters()).device
        z = torch.randn(n, self.cfg.latent, generator=generator).to(device)
        return self.decode(z, y)

    def parameter_roles(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each role: ``encoder`` (trunk phi + encoder head), ``decoder`` (theta)."""
        return {"encoder": [*self.trunk.parameters(), *self.encoder_head.parameters()],
                "discriminator": [],
                "decoder": list(self.decoder.parameters())}


class ImplicitDiscriminatorVAE(VAE):
    """IDVAE: the trunk T_phi is shared by the encoder head and the discriminator head (two tiers)."""

    kind = "idvae"
    has_discriminator = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.discriminator_head = DiscriminatorHead(cfg)

    def discriminate(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, S, S) -> (h (N, m), logit l (N,)) through the *shared* trunk."""
        h = self.trunk(x, y)
        return h, self.discriminator_head(h, y)

    def parameter_roles(self) -> dict[str, list[nn.Parameter]]:
        """``encoder`` = trunk + encoder head; ``discriminator`` = the same trunk + discriminator head."""
        trunk = list(self.trunk.parameters())
        return {"encoder": [*trunk, *self.encoder_head.parameters()],
                "discriminator": [*trunk, *self.discriminator_head.parameters()],
                "decoder": list(self.decoder.parameters())}


class VAEGAN(VAE):
    """VAE-GAN (Larsen et al. 2016): a separate discriminator trunk of the same size (three tiers)."""

    kind = "vaegan"
    has_discriminator = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.discriminator_trunk = Trunk(cfg)
        self.discriminator_head = DiscriminatorHead(cfg)

    def discriminate(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (h_D (N, m), logit (N,)) through the *separate* discriminator trunk."""
        h = self.discriminator_trunk(x, y)
        return h, self.discriminator_head(h, y)

    def parameter_roles(self) -> dict[str, list[nn.Parameter]]:
        return {"encoder": [*self.trunk.parameters(), *self.encoder_head.parameters()],
                "discriminator": [*self.discriminator_trunk.parameters(), *self.discriminator_head.parameters()],
                "decoder": list(self.decoder.parameters())}


_KINDS = {"vae": VAE, "vaegan": VAEGAN, "idvae": ImplicitDiscriminatorVAE}


def build_model(cfg: ModelConfig) -> VAE:
    """The model named by ``cfg.kind`` (``idvae``, ``vae`` or ``vaegan``)."""
    return _KINDS[cfg.kind](cfg)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per block and in total (the paper's "one network fewer" argument)."""
    out = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    out["total"] = sum(p.numel() for p in model.parameters())
    return out
