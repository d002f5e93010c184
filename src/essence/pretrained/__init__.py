"""Loaders for pretrained weights that ship inside installed packages (nothing is downloaded)."""

from essence.pretrained.minilm import INSTALL as MINILM_INSTALL
from essence.pretrained.minilm import load_minilm, minilm_dir

__all__ = ["minilm_dir", "load_minilm", "MINILM_INSTALL"]
