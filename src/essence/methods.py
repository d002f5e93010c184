"""The nine methods: names, papers, the extra each needs, and whether it is implemented yet.

This table is the single source for ``essence list``, ``essence reproduce all`` and the CLI dispatch. A method
is imported only when it is used, so ``essence list`` works without any optional extra installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from essence.core.registry import Registry

__all__ = ["MethodInfo", "METHODS", "get_method", "import_method", "MissingExtraError"]


@dataclass(frozen=True)
class MethodInfo:
    name: str            # Python package: essence.<name>
    cli_name: str        # essence <cli_name> ...
    title: str
    cite: str            # short citation for tables
    paper: str
    card: str            # paper card in shared/papers/
    extra: str           # pip extra that the method needs: essence[<extra>]
    implemented: bool

    @property
    def status(self) -> str:
        return "implemented" if self.implemented else "not implemented yet"


METHODS: Registry[MethodInfo] = Registry("method")

for _info in [
    MethodInfo("polyencoder", "polyencoder", "Poly-encoders", "Humeau et al., ICLR 2020",
               "Humeau, Shuster, Lachaux, Weston. Poly-encoders: Transformer Architectures and Pre-training "
               "Strategies for Fast and Accurate Multi-sentence Scoring. ICLR 2020 (arXiv 2019)",
               "poly_encoders.md", "text", True),
    MethodInfo("idvae", "idvae", "Implicit-Discriminator VAE", "Munjal et al., 2019",
               "Munjal, Paul, Krishnan. Implicit Discriminator in Variational Autoencoder. 2019",
               "idvae.md", "vision", True),
    MethodInfo("noisy_student", "noisy-student", "Noisy Student", "Xie et al., CVPR 2020",
               "Xie, Luong, Hovy, Le. Self-training with Noisy Student improves ImageNet classification. CVPR 2020",
               "noisy_student.md", "vision", True),
    MethodInfo("moco", "moco", "MoCo", "He et al., CVPR 2020",
               "He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised Visual Representation Learning. "
               "CVPR 2020 (+ MoCo v2, Chen et al. 2020)", "moco.md", "vision", True),
    MethodInfo("corruptions", "corruptions", "ImageNet-C/P", "Hendrycks & Dietterich, ICLR 2019",
               "Hendrycks, Dietterich. Benchmarking Neural Network Robustness to Common Corruptions and "
               "Perturbations. ICLR 2019", "imagenet_c.md", "vision", True),
    MethodInfo("distilbert", "distilbert", "DistilBERT", "Sanh et al., 2019",
               "Sanh, Debut, Chaumond, Wolf. DistilBERT, a distilled version of BERT. 2019",
               "distilbert.md", "text", True),
    MethodInfo("pplm", "pplm", "PPLM", "Dathathri et al., ICLR 2020",
               "Dathathri et al. Plug and Play Language Models: A Simple Approach to Controlled Text Generation. "
               "ICLR 2020", "pplm.md", "text", True),
    MethodInfo("deep_salience", "deep-salience", "Deep Salience", "Bittner et al., ISMIR 2017",
               "Bittner, McFee, Salamon, Li, Bello. Deep Salience Representations for F0 Estimation in "
               "Polyphonic Music. ISMIR 2017", "deep_salience.md", "audio", True),
    MethodInfo("stylegan2", "stylegan2", "StyleGAN2", "Karras et al., CVPR 2020",
               "Karras et al. Analyzing and Improving the Image Quality of StyleGAN. CVPR 2020",
               "stylegan2.md", "vision", True),
]:
    METHODS.register(_info.cli_name, _info)


class MissingExtraError(ImportError):
    """A method's optional dependencies are not installed."""


def get_method(name: str) -> MethodInfo:
    """Look a method up by CLI name (``deep-salience``) or package name (``deep_salience``)."""
    key = name.replace("_", "-")
    if key in METHODS:
        return METHODS.get(key)
    return METHODS.get(name)  # raises UnknownNameError with a suggestion


def import_method(name: str, submodule: str | None = None) -> ModuleType:
    """Import ``essence.<method>[.<submodule>]``; a missing optional dependency names the extra to install."""
    info = get_method(name)
    if not info.implemented:
        raise NotImplementedError(f"{info.title} (essence {info.cli_name}) is not implemented yet")
    target = f"essence.{info.name}" + (f".{submodule}" if submodule else "")
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        if err.name and not err.name.startswith("essence"):
            raise MissingExtraError(
                f"essence {info.cli_name} needs the optional dependency {err.name!r}: "
                f"pip install 'essence[{info.extra}]' (or run `make setup`)"
            ) from err
        raise
