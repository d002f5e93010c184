"""Conversations from the ``chatterbot-corpus`` 1.3.3 package (YAML), as context -> response pairs.

Each ``data/<language>/<category>.yml`` file holds ``conversations:``, a list of turn lists. Every turn after
the first is a response to the previous ``history`` turns of its conversation; the group is the category.

    pairs = chatterbot_pairs()                      # English: about 2.4k pairs
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from essence.data.cache import missing_source_error
from essence.data.shakespeare import DialoguePair, pairs_from_turns

__all__ = ["chatterbot_dir", "chatterbot_pairs", "INSTALL"]

INSTALL = "pip install --no-deps chatterbot-corpus==1.3.3"


def chatterbot_dir(path: str | Path | None = None, language: str = "english") -> Path:
    """The folder of YAML files: ``path``, else ``$ESSENCE_CHATTERBOT``, else the installed package's."""
    if path is None and os.environ.get("ESSENCE_CHATTERBOT"):
        path = os.environ["ESSENCE_CHATTERBOT"]
    if path is not None:
        folder = Path(path)
        if (folder / language).is_dir():
            folder = folder / language
    else:
        spec = importlib.util.find_spec("chatterbot_corpus")
        if spec is None or spec.origin is None:
            raise missing_source_error("the chatterbot-corpus package", INSTALL, env="ESSENCE_CHATTERBOT")
        folder = Path(spec.origin).parent / "data" / language
    if not folder.is_dir() or not any(folder.glob("*.yml")):
        raise missing_source_error(f"chatterbot corpus YAML files ({language})", INSTALL, path=folder,
                                   env="ESSENCE_CHATTERBOT")
    return folder


def chatterbot_pairs(path: str | Path | None = None, *, language: str = "english",
                     history: int = 2) -> list[DialoguePair]:
    """Context -> response pairs of every conversation, grouped by category (file name)."""
    import yaml

    out: list[DialoguePair] = []
    for f in sorted(chatterbot_dir(path, language).glob("*.yml")):
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{f}: not a readable chatterbot YAML file ({err})") from None
        for conv in doc.get("conversations") or []:
            turns = [" ".join(str(t).split()) for t in conv if t is not None and str(t).strip()]
            if len(turns) >= 2:
                out.extend(pairs_from_turns(turns, history, f.stem))
    return out
