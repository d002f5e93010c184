"""Each architecture's scores against a plain re-computation from the paper's equations (card §2.2-2.4)."""

from __future__ import annotations

import math

import pytest
import torch
from polyencoder_helpers import make_tiny_encoder

from essence.polyencoder.config import ModelConfig
from essence.polyencoder.data import TextBatcher
from essence.polyencoder.model import BiEncoder, PolyEncoder, TransformerEncoder, build_model, reduce_outputs

CONTEXTS = [("who is there", "nay answer me"), "hello how are you", "long live the king"]
CANDS = ["stand and unfold yourself", "hi", "good morning my lord", "what is ai", "fine"]


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))


def _build(enc_dir, **kw):
    cfg = ModelConfig(encoder=str(enc_dir), max_context_tokens=32, max_candidate_tokens=16, **kw)
    torch.manual_seed(1)
    model, tok = build_model(cfg)
    model.eval()
    return model, TextBatcher(tok, 32, 16)


def _plain_red(h, mask, reduction):
    """red(.) written per example with Python loops."""
    out = []
    for b in range(h.shape[0]):
        n = int(mask[b].sum())
        if reduction == "first":
            out.append(h[b, 0])
        elif reduction == "mean":
            out.append(sum(h[b, j] for j in range(n)) / n)
        else:
            out.append(torch.stack([h[b, j] for j in range(n)]).max(0).values)
    return torch.stack(out)


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("reduction", ["first", "mean", "max"])
def test_bi_encoder_matches_dot_product_of_reductions(enc_dir, reduction):
    model, b = _build(enc_dir, architecture="bi", reduction=reduction)
    c_ids, c_mask = b.contexts(CONTEXTS)
    r_ids, r_mask = b.candidates(CANDS)
    with torch.no_grad():
        rep, mask = model.encode_context(c_ids, c_mask)
        scores = model.score(rep, mask, model.encode_candidates(r_ids, r_mask))
        y_ctxt = _plain_red(model.ctxt_encoder.transformer(input_ids=c_ids, attention_mask=c_mask).last_hidden_state,
                            c_mask, reduction)
        y_cand = _plain_red(model.cand_encoder.transformer(input_ids=r_ids, attention_mask=r_mask).last_hidden_state,
                            r_mask, reduction)
    expected = torch.tensor([[float(y_ctxt[i] @ y_cand[j]) for j in range(len(CANDS))] for i in range(3)])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def _plain_poly_scores(model, h_all, c_mask, y_cand, scaled_codes, scaled_final):
    """Paper §2.4 with loops: y^i = sum_j softmax(c_i.h_j) h_j; w = softmax(y_cand.y^i); s = (sum_i w_i y^i).y_cand."""
    d = h_all.shape[-1]
    out = torch.zeros(h_all.shape[0], y_cand.shape[0])
    for b in range(h_all.shape[0]):
        n = int(c_mask[b].sum())
        h = [h_all[b, j] for j in range(n)]                      # padding excluded: the mask
        if model.poly_type == "codes":
            ys = []
            for c in model.codes:
                logits = [float(c @ hj) / (math.sqrt(d) if scaled_codes else 1) for hj in h]
                w = _softmax(logits)
                ys.append(sum(wj * hj for wj, hj in zip(w, h)))
        else:
            ys = h[: model.m]                                     # first m outputs (fewer when N < m)
        for k in range(y_cand.shape[0]):
            logits = [float(y_cand[k] @ y) / (math.sqrt(d) if scaled_final else 1) for y in ys]
            w = _softmax(logits)
            y_ctxt = sum(wi * yi for wi, yi in zip(w, ys))
            out[b, k] = float(y_ctxt @ y_cand[k])
    return out


@pytest.mark.parametrize("poly_type,m,codes_att,poly_att", [
    ("codes", 4, "basic", "basic"), ("codes", 3, "sqrt", "sqrt"), ("codes", 1, "basic", "sqrt"),
    ("n_first", 3, "basic", "basic"), ("n_first", 40, "basic", "sqrt"),   # m > N: zero-padded and masked
])
def test_poly_encoder_matches_paper_equations(enc_dir, poly_type, m, codes_att, poly_att):
    model, b = _build(enc_dir, architecture="poly", poly_type=poly_type, poly_m=m, codes_attention=codes_att,
                      poly_attention=poly_att, output_scaling=0.5)
    c_ids, c_mask = b.contexts(CONTEXTS)
    r_ids, r_mask = b.candidates(CANDS)
    with torch.no_grad():
        rep, mask = model.encode_context(c_ids, c_mask)
        y_cand = model.encode_candidates(r_ids, r_mask)
        scores = model.score(rep, mask, y_cand)
        # h_1..h_N = T1(ctxt) x output_scaling, straight from the Hugging Face model
        h = model.ctxt_encoder.transformer(input_ids=c_ids, attention_mask=c_mask,
                                           token_type_ids=torch.zeros_like(c_ids)).last_hidden_state * 0.5
        expected = _plain_poly_scores(model, h, c_mask, y_cand, codes_att == "sqrt", poly_att == "sqrt")
    assert rep.shape == (3, m, model.dim)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


def _plain_mha(mha, q, k, v, mask):
    """ParlAI-style multi-head attention, one head and one query at a time."""
    d, h = mha.dim, mha.n_heads
    dh = d // h
    Q, K, V = mha.q_lin(q), mha.k_lin(k), mha.v_lin(v)
    out = torch.zeros(q.shape[0], d)
    for i in range(q.shape[0]):
        parts = []
        for head in range(h):
            sl = slice(head * dh, (head + 1) * dh)
            logits = [float(Q[i, sl] @ K[j, sl]) / math.sqrt(dh) if mask[j] else -math.inf for j in range(k.shape[0])]
            w = _softmax([x for x in logits if x != -math.inf])
            keep = [j for j in range(k.shape[0]) if mask[j]]
            parts.append(sum(wj * V[j, sl] for wj, j in zip(w, keep)))
        out[i] = torch.cat(parts)
    return mha.out_lin(out)


def test_poly_multihead_attention_matches_plain_heads(enc_dir):
    model, b = _build(enc_dir, architecture="poly", poly_m=3, codes_attention="multihead", poly_attention="multihead",
                      codes_attention_heads=4, poly_attention_heads=2)
    c_ids, c_mask = b.contexts(CONTEXTS)
    r_ids, r_mask = b.candidates(CANDS)
    with torch.no_grad():
        rep, mask = model.encode_context(c_ids, c_mask)
        y_cand = model.encode_candidates(r_ids, r_mask)
        scores = model.score(rep, mask, y_cand)
        h = model.ctxt_encoder(c_ids, c_mask)
        for bi in range(3):
            ys = _plain_mha(model.code_attention.mha, model.codes, h[bi], h[bi], c_mask[bi].bool())
            torch.testing.assert_close(rep[bi], ys, rtol=1e-4, atol=1e-5)
            y_ctxt = _plain_mha(model.attention.mha, y_cand, ys, ys, torch.ones(3, dtype=torch.bool))
            torch.testing.assert_close(scores[bi], (y_ctxt * y_cand).sum(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(poly_type="codes", poly_m=4), dict(poly_type="n_first", poly_m=6),
                                dict(poly_type="codes", poly_m=2, codes_attention="multihead",
                                     poly_attention="multihead")])
def test_padding_does_not_change_scores(enc_dir, kw):
    """Card §7.1: appending padding tokens to a context must not change its scores (the code attention is
    masked; n_first masks padded positions)."""
    model, b = _build(enc_dir, architecture="poly", **kw)
    c_ids, c_mask = b.contexts(CONTEXTS)
    r_ids, r_mask = b.candidates(CANDS)
    pad = torch.zeros(3, 9, dtype=torch.long)
    with torch.no_grad():
        y_cand = model.encode_candidates(r_ids, r_mask)
        s1 = model.score(*model.encode_context(c_ids, c_mask), y_cand)
        s2 = model.score(*model.encode_context(torch.cat([c_ids, pad], 1), torch.cat([c_mask, pad], 1)), y_cand)
        alone = torch.cat([model.score(*model.encode_context(*b.contexts([c])), y_cand) for c in CONTEXTS])
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1, alone, rtol=1e-4, atol=1e-4)     # batched (padded) == one at a time


def test_unmasked_code_attention_would_differ(enc_dir):
    """The padding test can fail: attending to pad outputs (chijames #13) changes the scores."""
    model, b = _build(enc_dir, architecture="poly", poly_m=4)
    c_ids, c_mask = b.contexts(CONTEXTS)
    with torch.no_grad():
        h = model.ctxt_encoder(c_ids, c_mask)
        codes = model.codes.unsqueeze(0).expand(3, -1, -1)
        masked = model.code_attention(codes, h, h, c_mask)
        unmasked = model.code_attention(codes, h, h, None)
    assert not torch.allclose(masked[1:], unmasked[1:], atol=1e-4)    # contexts 1, 2 are padded in the batch


def test_poly_n_first_m1_equals_bi_encoder(enc_dir):
    """Card §7.1: n_first with m = 1 has a single context vector h_1, so poly == bi with first-output red."""
    poly, b = _build(enc_dir, architecture="poly", poly_type="n_first", poly_m=1)
    bi = BiEncoder(poly.ctxt_encoder, poly.cand_encoder, reduction="first").eval()
    c_ids, c_mask = b.contexts(CONTEXTS)
    r_ids, r_mask = b.candidates(CANDS)
    with torch.no_grad():
        y = poly.encode_candidates(r_ids, r_mask)
        torch.testing.assert_close(poly.score(*poly.encode_context(c_ids, c_mask), y),
                                   bi.score(*bi.encode_context(c_ids, c_mask), y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["bi", "poly"])
def test_cached_candidates_equal_per_context_candidates(enc_dir, arch):
    """Scores against a shared (C, d) cache equal those against per-context (B, C, d) candidates."""
    model, b = _build(enc_dir, architecture=arch, poly_m=3, poly_attention="multihead" if arch == "poly" else "basic")
    c_ids, c_mask = b.contexts(CONTEXTS)
    with torch.no_grad():
        y = model.encode_candidates(*b.candidates(CANDS))
        rep, mask = model.encode_context(c_ids, c_mask)
        torch.testing.assert_close(model.score(rep, mask, y), model.score(rep, mask, y.expand(3, -1, -1)),
                                   rtol=1e-5, atol=1e-5)


def test_cross_encoder_is_linear_map_of_first_output_with_segments(enc_dir):
    model, b = _build(enc_dir, architecture="cross")
    ids, mask, seg = b.pairs([CONTEXTS[0]] * 2, CANDS[:2])
    assert seg[0].tolist().count(1) > 0 and seg[0, 0] == 0
    with torch.no_grad():
        s = model(ids, mask, seg)
        h = model.encoder.transformer(input_ids=ids, attention_mask=mask, token_type_ids=seg).last_hidden_state
        expected = torch.stack([model.classifier.weight[0] @ h[i, 0] + model.classifier.bias[0] for i in range(2)])
        other = model(ids, mask, torch.zeros_like(seg))
    torch.testing.assert_close(s, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(s, other)                                   # segment ids are used


def test_shared_and_separate_encoders(enc_dir):
    sep, _ = _build(enc_dir, architecture="poly", poly_m=2)
    shared, _ = _build(enc_dir, architecture="poly", poly_m=2, share_encoders=True)
    assert shared.cand_encoder is shared.ctxt_encoder and shared.shared
    assert sep.cand_encoder is not sep.ctxt_encoder
    p1 = dict(sep.ctxt_encoder.named_parameters())
    p2 = dict(sep.cand_encoder.named_parameters())
    assert all(torch.equal(p1[k], p2[k]) for k in p1)                     # same start (paper: T1, T2 from one init)
    assert all(p1[k].data_ptr() != p2[k].data_ptr() for k in p1)          # ... updated separately
    n_sep = sum(p.numel() for p in sep.parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_sep > n_shared


def test_reduce_outputs_mean_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(reduce_outputs(h, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(reduce_outputs(h, mask, "max"), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(reduce_outputs(h, mask, "first"), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="reduction"):
        reduce_outputs(h, mask, "last")


def test_bad_model_arguments(enc_dir, tmp_path):
    with pytest.raises(ValueError, match="model.poly_m"):
        ModelConfig(poly_m=0)
    with pytest.raises(ValueError, match="model.architecture"):
        ModelConfig(architecture="tri")
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_model(ModelConfig(encoder=str(tmp_path)))
    model, _ = _build(enc_dir, architecture="bi")
    with pytest.raises(ValueError, match="poly_type"):
        PolyEncoder(model.ctxt_encoder, poly_type="last")
    with pytest.raises(ValueError, match="divide"):
        PolyEncoder(model.ctxt_encoder, m=2, poly_attention="multihead", poly_attention_heads=5)
    assert isinstance(model.ctxt_encoder, TransformerEncoder)


@pytest.mark.parametrize("arch", ["bi", "poly", "cross"])
def test_every_parameter_gets_a_gradient(enc_dir, arch):
    """No unused parameters (DDP would fail): the BERT pooler, not part of T(x), is dropped."""
    model, b = _build(enc_dir, architecture=arch, poly_m=2)
    model.train()
    if arch == "cross":
        loss = model(*b.pairs(CONTEXTS, CANDS[:3])).sum()
    else:
        rep, mask = model.encode_context(*b.contexts(CONTEXTS))
        loss = model.score(rep, mask, model.encode_candidates(*b.candidates(CANDS))).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing and not any("pooler" in n for n, _ in model.named_parameters())
