"""The cache folder for derived artifacts (rendered audio, tokenised corpora): ``~/.cache/essence``.

``ESSENCE_CACHE`` overrides the place. Entries are keyed by a hash of their inputs (:func:`cache_key`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "cache_key", "missing_source_error", "package_path"]


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


def package_path(package: str, *parts: str, what: str, install: str, path: str | Path | None = None,
                 env: str | None = None) -> Path:
    """A data or weight file (or folder) shipped inside an installed package, found offline.

    Precedence: an explicit ``path``, else ``$env`` when set, else ``<package dir>/<parts...>``. Anything
    missing raises ``FileNotFoundError`` naming the install line (and ``env``).
    """
    if path is None and env and os.environ.get(env):
        path = os.environ[env]
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{what} not found: {p}")
        return p
    spec = importlib.util.find_spec(package)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise missing_source_error(what, install, env=env)
    root = Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations)))
    p = root.joinpath(*parts)
    if not p.exists():
        raise missing_source_error(what, install, path=p, env=env)
    return p
