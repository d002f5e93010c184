"""IDVAE: Implicit Discriminator in Variational Autoencoder (Munjal, Paul, Krishnan 2019), with its baselines
(a VAE and a VAE-GAN of the same sizes), the conditional model, and FID under an ensemble of feature networks.

Not to be confused with the "identifiable VAE" (iVAE / IDVAE) of the disentanglement literature.

    from essence.idvae import PRESETS, train
    cfg = PRESETS.build("quick", ["model.kind=idvae", "loss.lambda_d=1.0"])
    result = train(cfg)                         # or: essence idvae train --preset quick
"""

from essence.idvae.config import (
    PRESETS,
    DataConfig,
    EvalConfig,
    IDVAEConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from essence.idvae.loss import (
    UPDATES,
    compute_terms,
    discriminator_loss,
    feature_matching,
    generator_adversarial_loss,
    kl_divergence,
    objectives,
    pixel_reconstruction,
    role_gradients,
)
from essence.idvae.model import VAE, VAEGAN, ImplicitDiscriminatorVAE, build_model, count_parameters

__all__ = ["ImplicitDiscriminatorVAE", "VAE", "VAEGAN", "build_model", "count_parameters", "UPDATES",
           "compute_terms", "objectives", "role_gradients", "kl_divergence", "pixel_reconstruction",
           "feature_matching", "discriminator_loss", "generator_adversarial_loss", "IDVAEConfig", "ModelConfig",
           "LossConfig", "DataConfig", "OptimConfig", "TrainConfig", "EvalConfig", "PRESETS", "train",
           "load_model"]


def __getattr__(name):  # heavy modules on first use
    if name == "train":
        from essence.idvae.train import train
        return train
    if name == "load_model":
        from essence.idvae.evaluate import load_model
        return load_model
    raise AttributeError(name)
