"""Two-stage retrieval (issue 12, item 4): a maximum-inner-product first stage (exact torch or faiss) whose union
the poly-encoder re-scores exactly; the exactness certificate; bad input."""

from __future__ import annotations

import pytest
import torch
from polyencoder_helpers import make_tiny_encoder

from essence.polyencoder.config import ModelConfig, PolyEncoderConfig
from essence.polyencoder.index import FirstStage, Ranker, mips_topk
from essence.polyencoder.model import build_model

CONTEXTS = ["who is there", "nay answer me", ("stand and unfold", "yourself"), "long live the king", "hello",
            "how are you", "fine", "the king is there"]


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


def _ranker(enc, arch="poly", C=3000, **model_kw) -> Ranker:
    cfg = PolyEncoderConfig(model=ModelConfig(architecture=arch, encoder=str(enc), poly_m=4, max_context_tokens=16,
                                              max_candidate_tokens=12, **model_kw))
    torch.manual_seed(0)
    model, tok = build_model(cfg.model)
    ranker = Ranker(model.eval(), tok, cfg)
    ranker.vectors = torch.randn(C, model.dim)
    ranker.texts = [f"candidate {i}" for i in range(C)]
    return ranker


def _exact(ranker, k):
    ranker.use_first_stage(None)
    return ranker.rank_batch(CONTEXTS, k)


def _same(a, b):
    assert [t for t, _ in a] == [t for t, _ in b]
    assert [s for _, s in a] == pytest.approx([s for _, s in b], rel=1e-5, abs=1e-5)


def test_mips_topk_equals_one_matmul():
    torch.manual_seed(0)
    q, cache = torch.randn(5, 16), torch.randn(4000, 16)
    v, i = mips_topk(q, cache, 9, max_elements=5 * 1024)                  # chunks of 1024 candidates
    ref_v, ref_i = (q @ cache.T).topk(9, dim=1)
    torch.testing.assert_close(v, ref_v)
    assert torch.equal(i, ref_i)


@pytest.mark.parametrize("arch", ["bi", "poly"])
def test_first_stage_over_every_candidate_is_the_exact_ranking(enc, arch):
    ranker = _ranker(enc, arch, C=500)
    want = _exact(ranker, 6)
    got = ranker.use_first_stage("exact", k=500).rank_batch(CONTEXTS, 6)
    for a, b in zip(got, want):
        _same(a, b)
    assert all(ranker.last_search["certified"])


def test_certified_contexts_are_exact_and_the_bound_certifies(enc):
    ranker = _ranker(enc, "poly", C=3000)
    want = _exact(ranker, 5)
    got = ranker.use_first_stage("exact", k=200, query="codes").rank_batch(CONTEXTS, 5)
    cert = ranker.last_search["certified"]
    assert len(cert) == len(CONTEXTS) and any(cert)
    for a, b, c in zip(got, want, cert):
        assert len(a) == 5
        if c:
            _same(a, b)


def test_bi_encoder_first_stage_is_exact_and_certified(enc):
    ranker = _ranker(enc, "bi", C=3000)
    want = _exact(ranker, 5)
    got = ranker.use_first_stage("exact", k=5).rank_batch(CONTEXTS, 5)     # k1 = k: the bi score is the search
    for a, b in zip(got, want):
        _same(a, b)
    assert all(ranker.last_search["certified"])


def test_mean_query_is_never_certified_but_returns_k(enc):
    ranker = _ranker(enc, "poly", C=2000)
    got = ranker.use_first_stage("exact", k=50, query="mean").rank_batch(CONTEXTS, 7)
    assert all(len(r) == 7 for r in got) and not any(ranker.last_search["certified"])


def test_first_stage_k_below_k_still_returns_k(enc):
    ranker = _ranker(enc, "poly", C=300)
    got = ranker.use_first_stage("exact", k=2).rank_batch(CONTEXTS, 10)
    assert all(len(r) == 10 for r in got)


def test_first_stage_follows_a_new_index(enc):
    ranker = _ranker(enc, "bi", C=100)
    ranker.use_first_stage("exact", k=10)
    ranker.build_index([f"n{i}" for i in range(30)])
    assert ranker.first_stage.vectors.shape[0] == 30
    assert all(t.startswith("n") for t, _ in ranker.rank("who is there", k=5))


def test_faiss_flat_equals_exact_and_hnsw_runs(enc):
    pytest.importorskip("faiss")
    ranker = _ranker(enc, "poly", C=2000)
    want = ranker.use_first_stage("exact", k=100).rank_batch(CONTEXTS, 5)
    cert = ranker.last_search["certified"]
    got = ranker.use_first_stage("faiss", k=100, spec="Flat").rank_batch(CONTEXTS, 5)
    assert ranker.last_search["certified"] == cert                      # Flat is exact: same certificate
    for a, b in zip(got, want):
        _same(a, b)
    ranker.use_first_stage("faiss", k=100, spec="HNSW16", params="efSearch=64")
    got = ranker.rank_batch(CONTEXTS, 5)
    assert all(len(r) == 5 for r in got) and not any(ranker.last_search["certified"])   # approximate


def test_bad_first_stage_settings(enc):
    ranker = _ranker(enc, "poly", C=50)
    with pytest.raises(ValueError, match="backend"):
        ranker.use_first_stage("annoy")
    with pytest.raises(ValueError, match="query"):
        ranker.use_first_stage("exact", query="max")
    with pytest.raises(ValueError, match="k must be"):
        ranker.use_first_stage("exact", k=0)
    with pytest.raises(ValueError, match="backend"):
        FirstStage(ranker.vectors, "annoy")


def test_bad_faiss_spec_is_a_clear_error(enc):
    pytest.importorskip("faiss")
    ranker = _ranker(enc, "poly", C=50)
    with pytest.raises(ValueError, match="faiss cannot build"):
        ranker.use_first_stage("faiss", spec="NoSuchIndex42")


# -- user-provided evaluation candidate sets -----------------------------------------------------------------
def test_read_candidate_sets_tsv_and_jsonl(tmp_path):
    from essence.polyencoder.data import read_candidate_sets

    tsv = tmp_path / "sets.tsv"
    tsv.write_text("\ufeffwho is there || nay\tanswer me\tlong live\thello\nhi\tfine\thow are you\tthe king\n",
                   encoding="utf-8")
    pairs, sets = read_candidate_sets(tsv)
    assert pairs[0].context == ("who is there", "nay") and sets[0] == ["answer me", "long live", "hello"]
    assert pairs[1].response == "fine" == sets[1][0]
    js = tmp_path / "sets.jsonl"
    js.write_text('{"context": ["a", "b"], "candidates": ["x", "gold", "y"], "label": 1}\n'
                  '{"context": "c", "response": "g2", "negatives": ["n1", "n2"]}\n', encoding="utf-8")
    pairs, sets = read_candidate_sets(js)
    assert sets == [["gold", "x", "y"], ["g2", "n1", "n2"]] and pairs[0].response == "gold"


@pytest.mark.parametrize("text,match", [
    ("ctx\tgold\n", "at least 3 fields"),
    ("ctx\tgold\tneg\nctx2\tgold\tneg\tneg2\n", "same size"),
    ("ctx\tgold\tgold\n", "duplicates"),
    ("\tgold\tneg\n", "empty context"),
    ("ctx\tgold\t \n", "empty"),
])
def test_read_candidate_sets_refuses_bad_tsv(tmp_path, text, match):
    from essence.polyencoder.data import read_candidate_sets

    path = tmp_path / "bad.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_candidate_sets(path)


@pytest.mark.parametrize("line,match", [
    ('{"context": "c", "candidates": ["a", "b"], "label": 5}', "label"),
    ('{"context": "c"}', "expected a JSON object"),
    ('not json', "expected a JSON object"),
])
def test_read_candidate_sets_refuses_bad_jsonl(tmp_path, line, match):
    from essence.polyencoder.data import read_candidate_sets

    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_candidate_sets(path)
