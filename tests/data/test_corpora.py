"""The Debian prose corpora: the R lazy-load reader on a database written here, and the installed sources."""

import bz2
import lzma
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from essence.data import corpora
from essence.data.corpora import AUSTEN_NOVELS, corpus_texts, load_austen, load_fortune_texts, load_wordnet_glosses


def _serialized(lines) -> bytes:
    """An R character vector serialized (XDR, uncompressed), as R's lazy-load database stores it."""
    import tempfile

    import rdata

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.rds"
        rdata.write_rds(path, np.array(lines, dtype=object), compression=None)
        return path.read_bytes()


def _fake_janeaustenr(folder: Path, novels: dict, kind: bytes | None = None) -> Path:
    """A janeaustenr ``data`` folder: Rdata.rdb blocks (zlib, or a type byte ``kind`` + codec) and the Rdata.rdx
    index of their byte ranges."""
    import rdata

    data = folder / "janeaustenr" / "data"
    data.mkdir(parents=True)
    codec = {None: zlib.compress, b"Z": zlib.compress, b"2": bz2.compress, b"X": lzma.compress, b"0": bytes}[kind]
    blob, ranges = b"", {}
    for name, lines in novels.items():
        raw = _serialized(lines)
        block = struct.pack(">I", len(raw)) + (kind or b"") + codec(raw)
        ranges[name] = np.array([len(blob), len(block)], dtype=np.int32)
        blob += block
    (data / "Rdata.rdb").write_bytes(blob)
    flag = 1 if kind is None else (2 if kind in (b"Z", b"0") else 3)
    rdata.write_rds(data / "Rdata.rdx", {"variables": ranges, "references": {}, "compressed": np.array([flag])})
    return folder


def _novels():
    return {n: [n.upper(), "", f"It is a truth about {n}", "wrapped over two lines.", "", "", "Second one."]
            for n in AUSTEN_NOVELS}


@pytest.mark.parametrize("kind", [None, b"Z", b"2", b"X", b"0"])
def test_lazyload_database_read_with_every_compression(tmp_path, kind):
    root = _fake_janeaustenr(tmp_path, _novels(), kind)
    got = load_austen(root)
    assert list(got) == list(AUSTEN_NOVELS)
    assert got["emma"] == ["EMMA", "It is a truth about emma wrapped over two lines.", "Second one."]


def test_lazyload_errors(tmp_path, monkeypatch):
    raw = _serialized(["a"])
    with pytest.raises(ValueError, match="header says"):
        corpora._lazyload_block(struct.pack(">I", len(raw) + 1) + zlib.compress(raw), 1)
    with pytest.raises(ValueError, match="unknown R lazy-load compression"):
        corpora._lazyload_block(struct.pack(">I", len(raw)) + b"Q" + raw, 2)
    partial = {n: v for n, v in _novels().items() if n != "emma"}
    with pytest.raises(ValueError, match="lacks the novels \\['emma'\\]"):
        load_austen(_fake_janeaustenr(tmp_path / "partial", partial))
    monkeypatch.setattr(corpora, "AUSTEN_SYSTEM", str(tmp_path / "no-r"))
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("ESSENCE_JANEAUSTENR", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get download r-cran-janeaustenr"):
        load_austen()
    monkeypatch.setenv("ESSENCE_JANEAUSTENR", str(_fake_janeaustenr(tmp_path / "env", _novels())))
    assert len(load_austen()) == 6


def test_named_corpora_split_whole_documents(monkeypatch):
    docs = {f"d{i}": [f"text {i}.{j}" for j in range(3)] for i in range(10)}
    monkeypatch.setitem(corpora.CORPORA, "fake", ("whole documents", lambda: docs))
    monkeypatch.setitem(corpora.CORPORA, "flat", ("random texts", lambda: [f"t{i}" for i in range(20)]))
    train, held = corpus_texts("fake", 0.2, seed=1)
    held_docs = {t.split()[1].split(".")[0] for t in held}
    assert len(held) == 6 and len(held_docs) == 2                  # two whole documents of three texts
    assert not {t.split()[1].split(".")[0] for t in train} & held_docs
    assert sorted(train + held) == sorted(t for v in docs.values() for t in v)
    assert corpus_texts("fake", 0.2, seed=1) == (train, held)      # deterministic
    train2, held2 = corpus_texts("fake+flat", 0.2, seed=1)
    assert train2[:len(train)] == train and len(train2) == 24 + 16 and len(held2) == 6 + 4
    with pytest.raises(ValueError, match="unknown corpus 'austin'.*did you mean 'austen'"):
        corpus_texts("shakespeare+austin")


def _installed(fn):
    try:
        return fn()
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_installed_austen_wordnet_fortunes():
    """The sources scripts/install.sh installs: the published sizes (janeaustenr: 717,537 words; WordNet 3.0:
    117,659 synsets), whole novels held out, and no ASCII art among the fortunes."""
    novels = _installed(load_austen)
    assert sum(len(p.split()) for ps in novels.values() for p in ps) == 717_537
    assert novels["prideprejudice"][3].startswith("It is a truth universally acknowledged, that a single man")
    glosses = _installed(load_wordnet_glosses)
    assert len(glosses) == 117_659 and all(glosses)
    fortunes = _installed(load_fortune_texts)
    assert len(fortunes) >= 20 and all(corpora._mostly_letters(e) for v in fortunes.values() for e in v)
    assert not corpora._mostly_letters("___====-_ _-====___ ~~~#####// ' ` \\\\#####~~~--_")
    train, held = corpus_texts("austen", 0.1)
    assert sorted(held) == sorted(next(ps for ps in novels.values() if ps[0] == held[0]))   # one whole novel
