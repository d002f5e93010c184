"""English prose corpora from Debian packages, read without the packages' own tools (DistilBERT's MLM text).

- ``austen``: Jane Austen's six novels (717,537 words) from Debian ``r-cran-janeaustenr``. The R package keeps
  them in a lazy-load database (``data/Rdata.rdx``: an index of byte ranges, ``data/Rdata.rdb``: one compressed
  serialized R character vector per novel); :func:`load_austen` reads it with the ``rdata`` parser, so neither R
  nor the package has to be installed: ``apt-get download r-cran-janeaustenr`` and ``dpkg-deb -x`` of the file
  is enough (``scripts/install.d/distilbert.sh`` does that into ``<essence cache>/sources/janeaustenr``).
  Novels come back as paragraphs (the package's wrapped lines joined between blank lines).
- ``wordnet``: the synset glosses of WordNet 3.0 (Debian ``wordnet-base``): definitions with their quoted example
  sentences, 117,659 texts.
- ``fortunes``: every entry of every Debian ``fortunes`` file (jokes, quotations, epigrams), less ASCII art.

:func:`corpus_texts` splits a named corpus into (training, held-out) texts by whole documents where it has them
(a novel, a fortunes file), else by a seeded shuffle of its texts.
"""

from __future__ import annotations

import bz2
import lzma
import os
import random
import struct
import zlib
from pathlib import Path

from essence.data.cache import cache_dir, missing_source_error
from essence.data.labelled import FORTUNES_DIR, fortune_entries, fortune_files

__all__ = ["AUSTEN_NOVELS", "load_austen", "load_wordnet_glosses", "load_fortune_texts", "corpus_texts",
           "CORPORA"]

AUSTEN_INSTALL = ("apt-get install r-cran-janeaustenr (or, without R: apt-get download r-cran-janeaustenr && "
                  "dpkg-deb -x r-cran-janeaustenr_*.deb <essence cache>/sources/janeaustenr)")
AUSTEN_SYSTEM = "/usr/lib/R/site-library/janeaustenr"
AUSTEN_NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
WORDNET_INSTALL = "apt-get install wordnet-base"
WORDNET_DIR = "/usr/share/wordnet"


def _austen_data_dir(path: str | Path | None) -> Path:
    """The janeaustenr ``data`` folder: under ``path``, ``$ESSENCE_JANEAUSTENR``, the system R library, or the
    essence cache's ``sources/janeaustenr`` (an extracted .deb), in that order."""
    if path is None and os.environ.get("ESSENCE_JANEAUSTENR"):
        path = os.environ["ESSENCE_JANEAUSTENR"]
    candidates = [Path(path)] if path is not None else [Path(AUSTEN_SYSTEM),
                                                        cache_dir("sources", "janeaustenr", create=False)]
    for base in candidates:
        if (base / "Rdata.rdx").is_file():
            return base
        if base.is_dir():
            found = sorted(base.rglob("janeaustenr/data/Rdata.rdx")) or sorted(base.rglob("data/Rdata.rdx"))
            if found:
                return found[0].parent
    raise missing_source_error("Jane Austen's novels (the janeaustenr R package's data)", AUSTEN_INSTALL,
                               path=candidates[0], env="ESSENCE_JANEAUSTENR")


def _lazyload_block(blob: bytes, compression: int) -> bytes:
    """One object of an R lazy-load database (R's ``lazyLoadDBfetch``): a 4-byte big-endian length, then the
    serialized object compressed with zlib (type 1), or a type byte and zlib / bzip2 / xz / nothing (types 2, 3)."""
    size = struct.unpack(">I", blob[:4])[0]
    if compression == 1:
        out = zlib.decompress(blob[4:])
    else:
        kind, body = blob[4:5], blob[5:]
        decoders = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
        if kind not in decoders:
            raise ValueError(f"unknown R lazy-load compression {kind!r}")
        out = decoders[kind](body)
    if len(out) != size:
        raise ValueError(f"corrupt R lazy-load block: {len(out)} bytes, the header says {size}")
    return out


def load_austen(path: str | Path | None = None) -> dict[str, list[str]]:
    """{novel: paragraphs} for the six novels of janeaustenr (names as the R package's: ``emma``, ...).

    ``path``: the package folder, its ``data`` folder, or a folder the .deb was extracted into."""
    import warnings

    import rdata

    base = _austen_data_dir(path)
    with warnings.catch_warnings():   # rdata says "Unknown file type: assumed RDS" for raw serialized objects
        warnings.simplefilter("ignore", UserWarning)
        index = rdata.read_rds(base / "Rdata.rdx")
        flag = index.get("compressed", [True])
        compression = int(flag[0]) if len(flag) else 1
        db = (base / "Rdata.rdb").read_bytes()
        novels = {}
        for name, (offset, length) in index["variables"].items():
            raw = _lazyload_block(db[int(offset):int(offset) + int(length)], compression)
            lines = rdata.conversion.convert(rdata.parser.parse_data(raw))
            novels[str(name)] = _paragraphs(str(s) for s in lines)
    missing = [n for n in AUSTEN_NOVELS if n not in novels]
    if missing:
        raise ValueError(f"{base}: the janeaustenr data lacks the novels {missing}")
    return {n: novels[n] for n in AUSTEN_NOVELS}


def _paragraphs(lines) -> list[str]:
    """Wrapped lines joined into paragraphs at blank lines."""
    out, cur = [], []
    for line in lines:
        text = line.strip()
        if text:
            cur.append(text)
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def load_wordnet_glosses(root: str | Path = WORDNET_DIR) -> list[str]:
    """The gloss of every WordNet 3.0 synset (text after ``|`` in ``data.{noun,verb,adj,adv}``), file order."""
    base = Path(root)
    if not (base / "data.noun").exists():
        raise missing_source_error("WordNet 3.0 data files", WORDNET_INSTALL, path=base)
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (base / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line and not line.startswith(" ") and " | " in line:
                gloss = line.split(" | ", 1)[1].strip()
                if gloss:
                    out.append(gloss)
    return out


def load_fortune_texts(root: str | Path = FORTUNES_DIR) -> dict[str, list[str]]:
    """{file: entries} for every fortunes file (entries separated by ``%`` lines, whitespace collapsed)."""
    out = {}
    for name, path in fortune_files(root).items():
        entries = [e for e in fortune_entries(path) if _mostly_letters(e)]
        if entries:
            out[name] = entries
    if not out:
        raise ValueError(f"{root}: no fortunes files")
    return out


def _mostly_letters(text: str, share: float = 0.6) -> bool:
    """False for ASCII art: fewer than ``share`` of the non-space characters are letters."""
    chars = [c for c in text if not c.isspace()]
    return bool(chars) and sum(c.isalpha() for c in chars) >= share * len(chars)


def _split_documents(docs: dict[str, list[str]], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Whole documents held out: round(fraction x documents), at least one when the fraction is positive."""
    names = sorted(docs)
    random.Random(seed).shuffle(names)
    n_held = max(1, round(heldout_fraction * len(names))) if heldout_fraction > 0 else 0
    held = set(names[:n_held])
    return ([t for n in sorted(docs) if n not in held for t in docs[n]],
            [t for n in sorted(docs) if n in held for t in docs[n]])


def _split_texts(texts: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    idx = list(range(len(texts)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:int(round(heldout_fraction * len(texts)))])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def _shakespeare_docs() -> dict[str, list[str]]:
    from essence.data.shakespeare import load_plays

    return {name: [s for scene in scenes for _, s in scene] for name, scenes in load_plays().items()}


# name -> (how the held-out part is chosen, loader)
CORPORA = {
    "shakespeare": ("whole plays", lambda: _shakespeare_docs()),
    "austen": ("whole novels", lambda: load_austen()),
    "wordnet": ("random glosses", lambda: load_wordnet_glosses()),
    "fortunes": ("whole fortunes files", lambda: load_fortune_texts()),
}


def corpus_texts(name: str, heldout_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts) of a named corpus (:data:`CORPORA`); several joined by ``+``
    (``shakespeare+austen+wordnet+fortunes``: about 3 M words) are split one by one and concatenated."""
    from essence.core.registry import suggest

    parts = [p.strip() for p in name.split("+")]
    for part in parts:
        if part not in CORPORA:
            raise ValueError(f"unknown corpus {part!r}{suggest(part, list(CORPORA))}; named corpora: "
                             f"{sorted(CORPORA)} (or a text file / folder path)")
    train, held = [], []
    for part in parts:
        data = CORPORA[part][1]()
        tr, he = (_split_documents(data, heldout_fraction, seed) if isinstance(data, dict)
                  else _split_texts(data, heldout_fraction, seed))
        train += tr
        held += he
    return train, held
