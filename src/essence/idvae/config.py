"""IDVAE configs and the ``tiny`` / ``quick`` / ``standard`` / ``paper`` presets.

Names follow the paper card (``shared/papers/idvae.md``, section 0 authoritative): ``loss.lambda_d`` weighs the
discriminator objective L_GAN against the encoder objective L_enc in the shared trunk, ``loss.gamma`` weighs the
feature-matching term in the decoder loss L_dec. ``model.kind`` picks IDVAE or one of its two baselines, built from
the same trunk and decoder: ``vae`` (no adversary) and ``vaegan`` (a separate discriminator trunk, Larsen et al.
2016). ``optim.batch_size`` is the *global* batch (split over torchrun processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from essence.core.config import (
    Config,
    Presets,
    require,
    require_choice,
    require_nonnegative,
    require_positive,
    require_range,
)

__all__ = ["ModelConfig", "LossConfig", "DataConfig", "OptimConfig", "TrainConfig", "EvalConfig", "IDVAEConfig",
           "PRESETS", "KINDS", "EXTRACTORS"]

KINDS = ("idvae", "vae", "vaegan")
EXTRACTORS = ("classifier", "random_cnn", "inception", "pixels")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    kind: Literal["idvae", "vae", "vaegan"] = "idvae"   # IDVAE, or a baseline with the same trunk and decoder
    conditional: bool = False                # label y to the trunk (constant one-hot maps) and the decoder ([z, y])
    num_classes: int = 10                    # classes of the conditional model
    cond_discriminator: Literal["concat", "projection"] = "projection"   # conditional D(x, y): y only as input
    #                                          maps (concat), or also a projection term <embed(y), h> (Miyato 2018)
    channels: int = 1                        # image channels
    image_size: int = 28                     # side of the (square) images; divisible by 4
    width: int = 32                          # channels of the first trunk conv (the second has 2 * width)
    hidden: int = 256                        # m: size of h, the last shared (penultimate) layer of the trunk
    latent: int = 16                         # d: latent size
    logvar_clamp: float = 10.0               # log sigma^2 is clamped to [-c, c] (no exp overflow)

    def __post_init__(self):
        require_choice(self, "kind", KINDS)
        require_choice(self, "cond_discriminator", ("concat", "projection"))
        require_positive(self, "num_classes", "channels", "image_size", "width", "hidden", "latent",
                         "logvar_clamp")
        require(self.image_size % 4 == 0, f"model.image_size must be divisible by 4 (two stride-2 convs), "
                                          f"got {self.image_size}")
        require(not self.conditional or self.num_classes >= 2,
                f"model.num_classes must be >= 2 for a conditional model, got {self.num_classes}")


@dataclass(frozen=True, kw_only=True)
class LossConfig(Config):
    recon_weight: float = 1.0                # pixel L2 ||x - x~||^2 in L_enc (summed over pixels)
    kl_weight: float = 1.0                   # L_prior = KL(q(z|x) || N(0, I)) in L_enc (summed over d)
    lambda_d: float = 10.0                   # lambda_D: weight of L_GAN in the trunk / discriminator update
    #                                          (L_enc is summed over pixels; value from a validation pilot)
    adv_weight: float = 1.0                  # weight of the adversarial part of L_dec
    gamma: float = 1.0                       # gamma: weight of feature matching ||h(x) - h(x~)||^2 in L_dec
    prior_fakes: bool = True                 # decodings of z_p ~ N(0, I) are fakes too (D and L_dec)
    feature_matching: bool = True            # the feature-matching term of L_dec (False: ablation)
    fm_stop_grad_trunk: bool = True          # feature matching updates the decoder only (card pitfall 1);
    #                                          False: it is also added to L_enc (trunk + encoder head)
    dec_pixel_weight: float = 0.0            # pixel L2 also in L_dec (card 2.3 option; 0 = section 0's L_dec)

    def __post_init__(self):
        require_nonnegative(self, "recon_weight", "kl_weight", "lambda_d", "adv_weight", "gamma",
                            "dec_pixel_weight")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    dataset: Literal["fashion_mnist"] = "fashion_mnist"
    root: str | None = None                  # folder with the IDX files (default: Debian's / $ESSENCE_FASHION_MNIST)
    train_limit: int = 0                     # first N training images (0 = all 60k)
    test_limit: int = 0                      # first N test images (0 = all 10k)

    def __post_init__(self):
        require_choice(self, "dataset", ("fashion_mnist",))
        require_nonnegative(self, "train_limit", "test_limit")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    lr: float = 2e-4                         # Adam, encoder / discriminator (trunk and heads)
    lr_decoder: float = 0.0                  # Adam, decoder = generator (0: same as lr)
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 64                     # global batch, split over processes
    epochs: int = 5

    def __post_init__(self):
        require_positive(self, "lr", "batch_size", "epochs")
        require_nonnegative(self, "lr_decoder")
        require_range(self, "beta1", 0.0, 1.0, inclusive=True)
        require_range(self, "beta2", 0.0, 1.0, inclusive=True)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    max_steps: int = 0                       # stop after this many steps (0 = optim.epochs full epochs)
    log_every: int = 50                      # steps
    eval_every: int = 0                      # FID monitor (classifier features) every N steps (0 = never)
    ckpt_every: int = 500                    # steps (and always at the end)
    threads: int = 0                         # torch CPU threads (0 = all cores / local processes)

    def __post_init__(self):
        require_nonnegative(self, "seed", "max_steps", "eval_every", "threads")
        require_positive(self, "log_every", "ckpt_every")
        require_choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    samples: int = 10000                     # prior samples (and test images) per FID / precision-recall
    inception_samples: int = 10000           # the same for the Inception expert (about 11 images/s on 2 cores)
    extractors: tuple[str, ...] = ("classifier", "random_cnn", "inception")   # the "ensemble of experts"
    pr_k: int = 3                            # k of the k-NN radii (Kynkaanniemi et al. 2019)
    classifier_epochs: int = 3               # the Fashion-MNIST classifier (features and conditional accuracy)
    classifier_train_limit: int = 0          # its training images (0 = all 60k)
    batch_size: int = 500                    # generation / feature-extraction batch

    def __post_init__(self):
        require_positive(self, "samples", "inception_samples", "pr_k", "classifier_epochs", "batch_size")
        require_nonnegative(self, "classifier_train_limit")
        require(len(self.extractors) > 0, "eval.extractors must name at least one feature network")
        for name in self.extractors:
            require(name in EXTRACTORS, f"eval.extractors: unknown feature network {name!r}; choose from "
                                        f"{list(EXTRACTORS)}")
        require(self.samples >= 2 and self.inception_samples >= 2, "FID needs at least 2 samples per side")


@dataclass(frozen=True, kw_only=True)
class IDVAEConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _tiny() -> IDVAEConfig:
    """Seconds on a CPU: for tests and smoke runs."""
    return IDVAEConfig(
        model=ModelConfig(width=4, hidden=16, latent=4),
        data=DataConfig(train_limit=256, test_limit=64),
        optim=OptimConfig(batch_size=16, epochs=1),
        train=TrainConfig(max_steps=4, log_every=2, ckpt_every=2),
        eval=EvalConfig(samples=64, inception_samples=8, extractors=("classifier", "random_cnn"),
                        classifier_epochs=1, classifier_train_limit=512, batch_size=64),
    )


def _quick() -> IDVAEConfig:
    """At most 5 minutes on a 2-core CPU for the whole reproduction: the card's section-6 networks (d = 16,
    h = 256), batch 64, about a third of an epoch per run."""
    return IDVAEConfig(
        optim=OptimConfig(batch_size=64, epochs=1),
        train=TrainConfig(max_steps=300, log_every=25, ckpt_every=300),
        eval=EvalConfig(samples=2000, inception_samples=200, classifier_epochs=1, classifier_train_limit=20000),
    )


def _standard() -> IDVAEConfig:
    """At most 30 minutes on a 2-core CPU for the whole reproduction (decides the claims)."""
    return IDVAEConfig(
        optim=OptimConfig(batch_size=64, epochs=1),
        train=TrainConfig(max_steps=900, log_every=50, ckpt_every=900),
        eval=EvalConfig(samples=5000, inception_samples=500, classifier_epochs=2),
    )


def _paper() -> IDVAEConfig:
    """The card's family defaults (Adam 2e-4, beta1 0.5, batch 64, tens of epochs) at the section-6 sizes,
    10k samples per FID under every expert: for GPUs."""
    return IDVAEConfig(optim=OptimConfig(batch_size=64, epochs=30),
                       train=TrainConfig(log_every=100, eval_every=2000, ckpt_every=2000),
                       eval=EvalConfig(samples=10000, inception_samples=10000, classifier_epochs=5))


PRESETS: Presets[IDVAEConfig] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard, "paper": _paper})
