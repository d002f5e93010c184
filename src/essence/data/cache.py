"""The cache folder for derived artifacts (rendered audio, tokenised corpora): ``~/.cache/essence``.

``ESSENCE_CACHE`` overrides the place. Entries are keyed by a hash of their inputs (:func:`cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "cache_key", "missing_source_error"]


def cache_dir(*parts: str, create: bool = True) -> Path:
    root = Path(os.environ.get("ESSENCE_CACHE") or Path.home() / ".cache" / "essence")
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(*inputs: Any, length: int = 16) -> str:
    """A stable short hash of JSON-able inputs (configs, file names, versions)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def missing_source_error(what: str, install: str, *, path: str | Path | None = None,
                         env: str | None = None) -> FileNotFoundError:
    """The error for a data source or weight file that is not installed: it names the exact install line."""
    where = f" (looked in {path})" if path is not None else ""
    alt = f", or set {env} to a folder that holds it" if env else ""
    return FileNotFoundError(f"{what} not found{where}. Install it with: {install}{alt}; "
                             f"or pass its path explicitly.")
