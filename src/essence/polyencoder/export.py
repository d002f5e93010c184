"""Export a trained run for use without essence, and read sentence-transformers directories.

``export(run, out)`` writes what the usual libraries load, with nothing of essence needed at load time:

- bi-encoder: a sentence-transformers directory (``modules.json``: Transformer -> Pooling with the run's
  ``model.reduction``; no Normalize, since the bi-encoder scores by dot product), one for shared towers, else
  ``out/context`` and ``out/candidate``. ``SentenceTransformer(out).encode(x)`` gives red(T(x)) / output_scaling.
- poly-encoder: the two towers as Hugging Face model directories (``AutoModel``) in ``out/context`` and
  ``out/candidate``, the codes in ``out/poly_head.safetensors``, the formula and hyper-parameters in
  ``out/poly_head.json``, and ``out/README.md`` with a plain-torch scorer (:data:`POLY_SNIPPET`).
- cross-encoder: a ``BertForSequenceClassification`` directory (``num_labels=1``) whose logit is essence's score
  s = W . h_1 + b up to a relative error below 1e-6 (the scaled-identity pooler, see :func:`export`).

Token layout of the exports is essence's (``[CLS] x [SEP]``; a context's turns joined by ``[SEP]``). The context
tower's tokenizer truncates from the left (``truncation_side="left"``), as essence keeps a context's most recent
tokens; a shared bi-encoder directory has one tokenizer and truncates from the right.

:func:`read_sentence_transformer` reads the other direction: the transformer folder, pooling and normalisation of
a sentence-transformers directory, which :func:`~essence.polyencoder.model.load_hf_encoder` and
``essence polyencoder evaluate --zero-shot DIR`` honour.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["SentenceTransformerInfo", "read_sentence_transformer", "sentence_transformer_dir", "zero_shot_scoring",
           "export", "POLY_SNIPPET", "CROSS_EPS"]

# sentence-transformers' Pooling modes (its legacy boolean config keys, in its concatenation order) and the
# three that are essence's reductions
POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
REDUCTIONS = {"cls": "first", "mean": "mean", "max": "max"}
CROSS_EPS = 1e-4          # the scaled-identity pooler of the cross-encoder export (see export)


# ----------------------------------------------------------------------------------------------------------
# reading sentence-transformers directories
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SentenceTransformerInfo:
    """What essence takes from a sentence-transformers directory.

    Attributes:
        transformer_dir: the Transformer module's folder (the Hugging Face model and its tokenizer).
        reduction: the Pooling module's mode as essence's red(.): ``first`` (cls), ``mean`` or ``max``.
        normalize: whether a Normalize module follows the pooling (the embeddings are compared by cosine).
        max_seq_length: the Transformer module's ``max_seq_length`` (None when not recorded).
    """

    transformer_dir: Path
    reduction: str
    normalize: bool
    max_seq_length: int | None = None


def _modules(folder: Path) -> list[dict]:
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / 'modules.json'} is not JSON ({err})") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ValueError(f"{folder / 'modules.json'}: expected a list of modules with a 'type' each")
    return sorted(modules, key=lambda m: m.get("idx", 0))


def _kind(module: dict) -> str:
    """``sentence_transformers.models.Pooling`` -> ``Pooling``."""
    return str(module["type"]).rsplit(".", 1)[-1]


def sentence_transformer_dir(folder: str | Path) -> Path:
    """The Transformer module's folder of a sentence-transformers directory (``folder`` itself when it has no
    ``modules.json``, i.e. is a plain Hugging Face directory).

    Raises:
        ValueError: ``modules.json`` lists no Transformer module.
    """
    folder = Path(folder)
    if not (folder / "modules.json").exists():
        return folder
    found = [m for m in _modules(folder) if _kind(m) == "Transformer"]
    if not found:
        kinds = ", ".join(_kind(m) for m in _modules(folder)) or "none"
        raise ValueError(f"{folder / 'modules.json'} has no Transformer module (modules: {kinds}); essence loads "
                         f"sentence-transformers models built on a Hugging Face transformer only")
    return folder / str(found[0].get("path", ""))


def _pooling_mode(path: Path) -> str:
    """essence's reduction for a Pooling module's ``config.json``: ``pooling_mode`` (a mode or a list of modes,
    sentence-transformers >= 6) or the legacy ``pooling_mode_*`` booleans (none set: mean, as sentence-transformers
    reads it)."""
    cfg = json.loads(path.read_text())
    mode = cfg.get("pooling_mode")
    if mode is not None:
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [name for key, name in POOLING_KEYS.items() if cfg.get(key)] or ["mean"]
    if len(modes) != 1 or modes[0] not in REDUCTIONS:
        raise ValueError(f"{path}: pooling {' + '.join(map(str, modes)) or 'none'} is not supported by essence "
                         f"(supported: cls, mean, max, one at a time)")
    return REDUCTIONS[modes[0]]


def read_sentence_transformer(folder: str | Path) -> SentenceTransformerInfo:
    """The transformer folder, pooling and normalisation of a sentence-transformers directory.

    Reads ``modules.json`` (Transformer -> Pooling [-> Normalize]), the Pooling module's ``config.json`` and the
    Transformer's ``sentence_bert_config.json``, without importing sentence-transformers.

    Raises:
        FileNotFoundError: no ``modules.json`` in ``folder``.
        ValueError: no Transformer or no Pooling module, a pooling mode other than cls / mean / max (or several
            modes at once), or a module essence cannot apply (Dense, LayerNorm, ...).
    """
    folder = Path(folder)
    if not (folder / "modules.json").exists():
        raise FileNotFoundError(f"{folder} is not a sentence-transformers directory (no modules.json)")
    transformer = sentence_transformer_dir(folder)
    modules = _modules(folder)
    kinds = [_kind(m) for m in modules]
    unknown = [f"{k} ({m.get('path', '')})" for k, m in zip(kinds, modules)
               if k not in ("Transformer", "Pooling", "Normalize")]
    if unknown:
        raise ValueError(f"{folder / 'modules.json'}: essence applies Transformer, Pooling and Normalize modules "
                         f"only; this model also has {', '.join(unknown)}")
    if "Pooling" not in kinds:
        raise ValueError(f"{folder / 'modules.json'} has no Pooling module; essence needs one of cls, mean, max")
    pooling = modules[kinds.index("Pooling")]
    reduction = _pooling_mode(folder / str(pooling.get("path", "")) / "config.json")
    max_len = None
    st_cfg = transformer / "sentence_bert_config.json"
    if st_cfg.exists():
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length")
    return SentenceTransformerInfo(transformer, reduction, "Normalize" in kinds,
                                   int(max_len) if max_len else None)


def zero_shot_scoring(encoder: str) -> tuple[str, bool, str]:
    """``(reduction, normalize, description)`` with which ``evaluate --zero-shot`` runs ``encoder`` untrained as a
    bi-encoder: a sentence-transformers directory's own pooling (and cosine when it normalises), else mean
    pooling and cosine (how sentence embeddings are usually compared)."""
    if encoder in ("minilm", "minilm-tiny"):
        from essence.pretrained.minilm import minilm_dir

        folder = minilm_dir()
    else:
        folder = Path(encoder)
    if (folder / "modules.json").exists():
        info = read_sentence_transformer(folder)
        red, norm = info.reduction, info.normalize
        source = "its sentence-transformers modules"
    else:
        red, norm, source = "mean", True, "default for a plain encoder"
    pool = "cls" if red == "first" else red
    return red, norm, f"{pool} pooling, {'cosine' if norm else 'dot product'}: {source}"


# ----------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _complete_state_dict(transformer: nn.Module) -> dict[str, torch.Tensor]:
    """The transformer's weights, plus zeros for a pooler that essence dropped (BERT's tanh pooler is not part of
    T(x)): ``AutoModel`` then loads the directory without "newly initialised weights" and ``pooler_output`` is a
    deterministic 0 instead of noise."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in transformer.state_dict().items()}
    if getattr(transformer, "pooler", "absent") is None:
        with torch.device("meta"):
            full = type(transformer)(copy.deepcopy(transformer.config))
        for k, v in full.state_dict().items():
            if k not in state and k.startswith("pooler."):
                state[k] = torch.zeros(v.shape, dtype=next(iter(state.values())).dtype)
    return state


def _write_transformer(folder: Path, transformer: nn.Module, tokenizer, *, truncation_side: str = "right") -> None:
    """``config.json``, ``model.safetensors`` and the tokenizer files: a directory ``AutoModel`` loads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(transformer.config)
    config.architectures = [type(transformer).__name__]
    config.save_pretrained(str(folder))
    save_file(_complete_state_dict(transformer), str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_tokenizer(folder, tokenizer, truncation_side)


def _write_tokenizer(folder: Path, tokenizer, truncation_side: str) -> None:
    tokenizer.save_pretrained(str(folder))
    if truncation_side != "right":   # recorded in tokenizer_config.json, read back by AutoTokenizer
        path = folder / "tokenizer_config.json"
        cfg = json.loads(path.read_text())
        cfg["truncation_side"] = truncation_side
        _write_json(path, cfg)


def _write_sentence_transformer(folder: Path, encoder, tokenizer, *, reduction: str, max_seq_length: int,
                                truncation_side: str = "right") -> None:
    """Transformer (at the folder's root) -> Pooling(reduction), the layout of sentence-transformers >= 2."""
    import transformers

    _write_transformer(folder, encoder.transformer, tokenizer, truncation_side=truncation_side)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(folder / "1_Pooling" / "config.json",
                {"word_embedding_dimension": encoder.dim,       # the legacy keys: read by every version >= 2
                 **{key: REDUCTIONS.get(mode) == reduction for key, mode in POOLING_KEYS.items()},
                 "include_prompt": True})
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    # "dot": SentenceTransformer.similarity() then scores like the bi-encoder (no cosine)
    _write_json(folder / "config_sentence_transformers.json",
                {"__version__": {"sentence_transformers": "3.0.0", "transformers": transformers.__version__,
                                 "pytorch": torch.__version__.split("+")[0]},
                 "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "dot"})


_TOKENS_NOTE = """\
Inputs use essence's layout: `[CLS] text [SEP]`; join the turns of a multi-turn context with `" [SEP] "`.
Contexts are truncated to {ctx} tokens and candidates to {cand} tokens (special tokens included), as in training.
"""


def _bi_readme(model, meta: dict, shown: str) -> str:
    shared, scale = model.shared, model.ctxt_encoder.output_scaling
    pool = {"first": "cls", "mean": "mean", "max": "max"}[model.reduction]
    ctx, cand = meta["max_context_tokens"], meta["max_candidate_tokens"]
    if shared:
        towers = "one shared encoder"
        where = f"`{shown}` is a sentence-transformers directory"
        code = [f'model = SentenceTransformer("{shown}")',
                'ctxt = model.encode(["Who\'s there?"], convert_to_tensor=True)',
                'cand = model.encode(["Nay, answer me.", "Long live the king!"], convert_to_tensor=True)']
    else:
        towers = "separate context and candidate encoders"
        where = f"`{shown}/context` and `{shown}/candidate` are sentence-transformers directories"
        code = [f'context_model = SentenceTransformer("{shown}/context")',
                f'candidate_model = SentenceTransformer("{shown}/candidate")',
                'ctxt = context_model.encode(["Who\'s there?"], convert_to_tensor=True)',
                'cand = candidate_model.encode(["Nay, answer me.", "Long live the king!"], convert_to_tensor=True)']
    code.append("scores = ctxt @ cand.T" + (f" * {scale ** 2:g}" if scale != 1.0 else "")
                + "          # (contexts, candidates): essence's bi-encoder scores")
    lines = ["# essence bi-encoder, exported for sentence-transformers\n",
             f"Exported from `{meta['run']}` ({meta['checkpoint']}): {towers}, {pool} pooling, dot-product "
             f"scores. {where} (Transformer -> Pooling({pool}), no Normalize; `model.similarity` uses the dot "
             f"product).\n",
             "```python", "from sentence_transformers import SentenceTransformer", *code, "```\n",
             _TOKENS_NOTE.format(ctx=ctx, cand=cand)]
    if shared:
        lines.append(f"The shared directory truncates from the right at {max(ctx, cand)} tokens; essence keeps a "
                     "long context's *last* tokens, so contexts longer than that are encoded differently.\n")
    else:
        lines.append("The context directory's tokenizer truncates from the left (`truncation_side=\"left\"`), "
                     "keeping a long context's most recent tokens as essence does.\n")
    if scale != 1.0:
        lines.append(f"The run multiplies the encoder outputs by `model.output_scaling` = {scale:g}. The exported "
                     f"embeddings are **unscaled**: essence's score equals {scale:g}^2 = {scale ** 2:g} times their "
                     f"dot product (the same ranking).\n")
    return "\n".join(lines)


# The plain-torch scorer written into a poly-encoder export's README (the tests run exactly this code).
POLY_SNIPPET = '''\
import json, torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

OUT = "{out}"                                                          # the exported directory
cfg, head = json.load(open(f"{{OUT}}/poly_head.json")), load_file(f"{{OUT}}/poly_head.safetensors")
tok = {{s: AutoTokenizer.from_pretrained(f"{{OUT}}/{{s}}") for s in ("context", "candidate")}}
T = {{s: AutoModel.from_pretrained(f"{{OUT}}/{{s}}").eval() for s in ("context", "candidate")}}

def encode(side, texts):                                                # T(x) and its mask: (B, N, d), (B, N)
    x = tok[side](texts, padding=True, truncation=True, max_length=cfg[f"max_{{side}}_tokens"], return_tensors="pt")
    return T[side](**x).last_hidden_state * cfg["output_scaling"], x["attention_mask"]

@torch.no_grad()
def poly_scores(context, candidates):                                   # one context, C candidates -> (C,)
    h, mask = encode("context", [context])
    if cfg["poly_type"] == "codes":                                     # y^i = sum_j softmax_j(c_i . h_j) h_j
        a = (head["codes"] @ h[0].T) * cfg["codes_attention_scale"]    # (m, N)
        y = a.masked_fill(mask == 0, float("-inf")).softmax(-1) @ h[0]  # (m, d)
    else:                                                               # n_first: the first m outputs
        y = h[0, : cfg["m"]]
    hc, mc = encode("candidate", candidates)                            # (C, M, d), (C, M)
    mc = mc[..., None].to(hc.dtype)
    y_cand = {{"first": lambda: hc[:, 0], "mean": lambda: (hc * mc).sum(1) / mc.sum(1),
              "max": lambda: hc.masked_fill(mc == 0, float("-inf")).amax(1)}}[cfg["reduction"]]()  # (C, d)
    dots = y_cand @ y.T                                                 # (C, m): y_cand . y^i
    w = (dots * cfg["poly_attention_scale"]).softmax(-1)                # w = softmax_i(y_cand . y^i)
    return (w * dots).sum(-1)                                           # s = (sum_i w_i y^i) . y_cand

print(poly_scores("Who's there?", ["Nay, answer me.", "Long live the king!"]))
'''


def _attention_scale(kind: str, dim: int) -> float:
    return 1.0 if kind == "basic" else 1.0 / float(dim) ** 0.5


def _export_bi(model, tok, cfg, out: Path, meta: dict, shown: str) -> list[Path]:
    red = model.reduction
    if model.shared:
        _write_sentence_transformer(out, model.ctxt_encoder, tok, reduction=red,
                                    max_seq_length=max(cfg.model.max_context_tokens, cfg.model.max_candidate_tokens))
        written = [out]
    else:
        _write_sentence_transformer(out / "context", model.ctxt_encoder, tok, reduction=red,
                                    max_seq_length=cfg.model.max_context_tokens, truncation_side="left")
        _write_sentence_transformer(out / "candidate", model.cand_encoder, tok, reduction=red,
                                    max_seq_length=cfg.model.max_candidate_tokens)
        written = [out / "context", out / "candidate"]
    (out / "README.md").write_text(_bi_readme(model, meta, shown))
    return written


def _export_poly(model, tok, cfg, out: Path, meta: dict, shown: str) -> list[Path]:
    from safetensors.torch import save_file

    d, code_kind = model.dim, model.code_attention.kind if model.poly_type == "codes" else "basic"
    _write_transformer(out / "context", model.ctxt_encoder.transformer, tok, truncation_side="left")
    _write_transformer(out / "candidate", model.cand_encoder.transformer, tok)
    # the learned codes c_1..c_m (n_first has no parameters: an empty file, so that every export has one)
    head = {"codes": model.codes.detach().float().cpu().contiguous().clone()} if model.poly_type == "codes" else {}
    save_file(head, str(out / "poly_head.safetensors"), metadata={"format": "pt"})
    _write_json(out / "poly_head.json", {
        "format": "essence-polyencoder-poly-head/1",
        "formula": ("y^i = sum_j softmax_j(codes_attention_scale * c_i . h_j) h_j (poly_type codes; n_first: "
                    "y^i = h_i, i <= m), h = output_scaling * T_context(ctxt); y_cand = reduction(output_scaling * "
                    "T_candidate(cand)); w = softmax_i(poly_attention_scale * y_cand . y^i); "
                    "s = (sum_i w_i y^i) . y_cand"),
        "poly_type": model.poly_type, "m": model.m, "dim": d, "reduction": model.reduction,
        "codes_attention": code_kind, "codes_attention_scale": _attention_scale(code_kind, d),
        "poly_attention": model.attention.kind, "poly_attention_scale": _attention_scale(model.attention.kind, d),
        "output_scaling": model.ctxt_encoder.output_scaling,
        "max_context_tokens": cfg.model.max_context_tokens, "max_candidate_tokens": cfg.model.max_candidate_tokens,
        "shared_encoders": model.shared, **meta})
    readme = [
        "# essence poly-encoder, exported\n",
        f"Exported from `{meta['run']}` ({meta['checkpoint']}): a poly-encoder with m = {model.m} "
        f"({model.poly_type}), {model.reduction} candidate reduction. `context/` and `candidate/` are Hugging Face "
        f"model directories (`AutoModel.from_pretrained`){' holding the same shared weights' if model.shared else ''}; "
        "`poly_head.safetensors` holds the codes c_1..c_m and `poly_head.json` the formula and hyper-parameters.\n",
        "Scoring one context against candidates with plain torch + transformers:\n",
        "```python", POLY_SNIPPET.format(out=shown).rstrip("\n"), "```\n",
        _TOKENS_NOTE.format(ctx=cfg.model.max_context_tokens, cand=cfg.model.max_candidate_tokens),
        "The context tokenizer truncates from the left, keeping a long context's most recent tokens as essence "
        "does. Candidate vectors `y_cand` do not depend on the context: compute them once and cache them.\n"]
    (out / "README.md").write_text("\n".join(readme))
    return [out / "context", out / "candidate", out / "poly_head.safetensors"]


def _cross_classifier(model, eps: float):
    """A ``*ForSequenceClassification`` (num_labels = 1) whose logit is essence's cross-encoder score.

    essence scores s = W . (a h_1) + b (a = output_scaling, no pooler); the BERT head computes
    classifier(tanh(P h_1 + p)). With P = eps I, p = 0, classifier weight = a W / eps and bias b, its logit is
    sum_k (a W_k / eps) tanh(eps h_k) + b = s - sum_k a W_k h_k (eps h_k)^2 / 3 + O(eps^4): relative error
    below (eps max|h_k|)^2 / 3 per term.
    """
    from transformers import AutoModelForSequenceClassification

    transformer = model.encoder.transformer
    config = copy.deepcopy(transformer.config)
    config.num_labels, config.architectures = 1, None
    kind = getattr(config, "model_type", type(transformer).__name__)
    try:
        clf = AutoModelForSequenceClassification.from_config(config)
    except ValueError as err:
        raise NotImplementedError(f"cross-encoder export: transformers has no sequence-classification model for "
                                  f"model type {kind!r} ({err})") from None
    base = getattr(clf, clf.base_model_prefix, None)
    pooler = getattr(base, "pooler", None)
    if (pooler is None or not isinstance(getattr(pooler, "dense", None), nn.Linear)
            or not isinstance(getattr(pooler, "activation", None), nn.Tanh)
            or not isinstance(getattr(clf, "classifier", None), nn.Linear)):
        raise NotImplementedError(f"cross-encoder export needs a BERT-family encoder (a tanh pooler before the "
                                  f"classifier, as BertForSequenceClassification has); model type {kind!r} "
                                  f"({type(clf).__name__}) has none")
    missing, unexpected = base.load_state_dict(transformer.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise NotImplementedError(f"cross-encoder export: the {type(clf).__name__} of model type {kind!r} does not "
                                  f"take the encoder's weights (missing {missing}, unexpected {unexpected})")
    a, W, b = model.encoder.output_scaling, model.classifier.weight.detach(), model.classifier.bias.detach()
    with torch.no_grad():
        pooler.dense.weight.copy_(eps * torch.eye(model.dim))
        pooler.dense.bias.zero_()
        clf.classifier.weight.copy_(W.cpu() * (a / eps))
        clf.classifier.bias.copy_(b.cpu())
    return clf.eval()


def _check_cross(model, clf, eps: float) -> None:
    """Refuse an export whose logits do not reproduce essence's scores on a random pair (within the eps bound)."""
    g = torch.Generator().manual_seed(0)
    vocab = int(model.encoder.transformer.config.vocab_size)
    ids = torch.randint(vocab, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    seg = torch.cat([torch.zeros(2, 6), torch.ones(2, 6)], 1).long()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            h1 = model.encoder(ids, mask, seg)[:, 0].double() / model.encoder.output_scaling   # (2, d)
            s = model(ids, mask, seg).double()
            got = clf(input_ids=ids, attention_mask=mask, token_type_ids=seg).logits[:, 0].double()
    finally:
        model.train(was_training)
    wa = (model.classifier.weight.detach()[0].double().abs() * model.encoder.output_scaling)      # |a W_k|
    bound = (eps ** 2 / 3) * (wa * h1.abs() ** 3).sum(-1) + 1e-5 * (wa * h1.abs()).sum(-1) + 1e-6
    if not bool(((got - s).abs() <= bound).all()):
        kind = getattr(model.encoder.transformer.config, "model_type", "?")
        raise NotImplementedError(f"cross-encoder export: the exported {type(clf).__name__} (model type {kind!r}) "
                                  f"does not reproduce essence's scores (|diff| {float((got - s).abs().max()):.3g} > "
                                  f"bound {float(bound.max()):.3g}); this encoder family is not supported")


def _export_cross(model, tok, cfg, out: Path, meta: dict, shown: str, eps: float) -> list[Path]:
    clf = _cross_classifier(model, eps)
    _check_cross(model, clf, eps)
    clf.save_pretrained(str(out))
    _write_tokenizer(out, tok, "right")
    _write_json(out / "essence_export.json", {"format": "essence-polyencoder-cross/1", "pooler_eps": eps, **meta})
    readme = [
        "# essence cross-encoder, exported\n",
        f"Exported from `{meta['run']}` ({meta['checkpoint']}) as `{type(clf).__name__}` with one label: its logit is "
        "essence's score s = W . h_1 + b of the pair `[CLS] context [SEP] candidate [SEP]` (segments 0 / 1).\n",
        "```python", "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f'tok = AutoTokenizer.from_pretrained("{shown}")',
        f'model = AutoModelForSequenceClassification.from_pretrained("{shown}").eval()',
        'x = tok(["Who\'s there?"] * 2, ["Nay, answer me.", "Long live the king!"], padding=True, '
        'return_tensors="pt")',
        "with torch.no_grad():", "    scores = model(**x).logits[:, 0]       # (pairs,)", "```\n",
        "essence's cross-encoder reads the first output h_1 directly (no pooler), while "
        "`BertForSequenceClassification` computes classifier(tanh(P h_1 + p)). The export sets the pooler to a "
        f"scaled identity, P = eps I with eps = {eps:g} and p = 0, and the classifier to W / eps "
        f"{'(times the output scaling) ' if model.encoder.output_scaling != 1.0 else ''}with bias b. Since "
        "tanh(x) = x - x^3/3 + ..., each term of the logit is off by a relative (eps h_k)^2 / 3, about 1e-8 for "
        "|h_k| ~ 1: the logits equal essence's scores up to float error.\n",
        f"Contexts were truncated to their last {cfg.model.max_context_tokens - 2} tokens and candidates to "
        f"{cfg.model.max_candidate_tokens - 1} tokens in training; the tokenizer truncates pairs its own way, so "
        "pass pairs within those lengths for identical scores. Join the turns of a multi-turn context with "
        "`\" [SEP] \"`.\n"]
    (out / "README.md").write_text("\n".join(readme))
    return [out]


def _refuse(model, cfg) -> None:
    """Refuse, before anything is written, what the export formats cannot express."""
    arch = cfg.model.architecture
    if arch == "poly":
        kinds = [model.attention.kind] + ([model.code_attention.kind] if model.poly_type == "codes" else [])
        if "multihead" in kinds:
            raise NotImplementedError("poly-encoder export supports basic and sqrt attention; this run uses "
                                      "multihead attention (model.codes_attention / model.poly_attention), whose "
                                      "projections the exported plain-torch scorer does not apply")
    if arch == "cross" and model.reduction != "first":
        raise NotImplementedError(f"cross-encoder export needs model.reduction=first (the classifier of "
                                  f"*ForSequenceClassification reads the first output); this run uses "
                                  f"{model.reduction!r}")


def export(run_dir: str | Path, out_dir: str | Path, *, cross_eps: float = CROSS_EPS) -> list[Path]:
    """Write a trained run in the formats of sentence-transformers / transformers (see the module docstring).

    Args:
        run_dir: a run directory of ``essence polyencoder train`` (or one of its checkpoint files).
        out_dir: a new or empty directory.
        cross_eps: the cross-encoder's pooler scale eps: the exported ``BertForSequenceClassification`` computes
            classifier(tanh(eps h_1)) with classifier weight W / eps, equal to essence's W . h_1 up to a relative
            (eps |h_k|)^2 / 3 per term. Small enough for that to vanish in float32, large enough that eps h stays
            a normal number in half precision.

    Returns:
        The directories / files written (what a user loads), under ``out_dir``.

    Raises:
        ValueError: ``out_dir`` exists and is not an empty directory.
        NotImplementedError: a poly-encoder with multihead attention; a cross-encoder with a reduction other than
            ``first`` or on an encoder without BERT's tanh pooler.
    """
    from essence.polyencoder.train import load_run

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty; export into a new directory")
    if not 0 < cross_eps < 1:
        raise ValueError(f"cross_eps must lie in (0, 1), got {cross_eps}")
    model, tok, cfg, ckpt = load_run(run_dir, "cpu")
    _refuse(model, cfg)
    meta = {"run": str(Path(run_dir)), "checkpoint": Path(ckpt).name,
            "max_context_tokens": cfg.model.max_context_tokens, "max_candidate_tokens": cfg.model.max_candidate_tokens}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))   # written whole, then renamed into place
    try:
        arch = cfg.model.architecture
        if arch == "bi":
            written = _export_bi(model, tok, cfg, tmp, meta, str(out))
        elif arch == "poly":
            written = _export_poly(model, tok, cfg, tmp, meta, str(out))
        else:
            written = _export_cross(model, tok, cfg, tmp, meta, str(out), cross_eps)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / p.relative_to(tmp) for p in written]
