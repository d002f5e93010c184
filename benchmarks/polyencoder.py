"""Poly-encoder speed: essence vs ParlAI's ``PolyEncoderModule`` at identical dimensions (CPU, same run).

    python benchmarks/polyencoder.py [--shape minilm|tiny] [--m 64] [--candidates 1000 10000 100000]

1. Scoring latency per context: encode one context (360 tokens) and score it against C cached candidate
   vectors, median over repeats, interleaved. Reported in total and for the scoring step alone
   (``score(ctxt_rep, mask, cand_rep)``), with the ratio essence / ParlAI (< 1: essence is faster).
   Both models are random-weight transformers of the same shape (layers, d, heads, FFN, GELU, learned
   positions), m learned codes, basic attention; essence runs a Hugging Face ``BertModel``.
2. The index command's candidate-encoding throughput (candidates/s, 72-token candidates), essence vs ParlAI's
   candidate encoder at the same shape.

ParlAI is a benchmark-only dependency. Its declared requirements do not resolve on Python 3.11, so install it
beside the venv, without touching the venv's packages (its ``pkg_resources`` import needs setuptools < 81):

    python -m pip install --no-deps --target /tmp/parlai_pkgs parlai==1.7.2 "setuptools<81" iopath requests \\
        portalocker tqdm
    PARLAI_PATH=/tmp/parlai_pkgs python benchmarks/polyencoder.py

Timings on a shared 2-core VM vary 2-4x between runs: compare the ratios, measured in the same run.

Retrieval at scale (no ParlAI needed; issue 12 goals: 100k cached candidates scored in < 50 ms per context for
bi / poly, 1M candidates indexed and served within 8 GB):

    python benchmarks/polyencoder.py --scale [--scale-candidates 100000 1000000]

scores one encoded context against C cached vectors with ``essence.polyencoder.index.chunked_topk`` (bounded
memory: the (B, chunk, m) logits stay under 64 MB), then two-stage retrieval (``two_stage_topk``: an exact or
faiss first stage, the exact poly score on its union) with its latency, recall@10 of the exact top 10 and how
many contexts the bound certifies; for the largest C it writes and reads back an index file (vectors + UTF-8
texts beside them) and reports the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from essence.polyencoder.evaluate import median_time

SHAPES = {  # layers, d, heads, ffn
    "minilm": (6, 384, 12, 1536),
    "tiny": (2, 128, 4, 512),
}


def _parlai_module(layers, d, heads, ffn, m, vocab):
    path = os.environ.get("PARLAI_PATH", "/tmp/parlai_pkgs")
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources")
    try:
        from parlai.agents.transformer.polyencoder import PolyEncoderModule
        from parlai.core.opt import Opt
    except ImportError as err:
        raise SystemExit(f"ParlAI is not importable ({err}). Install it with:\n  python -m pip install --no-deps "
                         f"--target /tmp/parlai_pkgs parlai==1.7.2 'setuptools<81' iopath requests portalocker "
                         f"tqdm\nand set PARLAI_PATH=/tmp/parlai_pkgs") from None
    opt = Opt({
        "n_layers": layers, "n_encoder_layers": layers, "embedding_size": d, "n_heads": heads, "ffn_size": ffn,
        "dropout": 0.0, "attention_dropout": 0.0, "relu_dropout": 0.0, "activation": "gelu", "variant": "xlm",
        "n_positions": 1024, "n_segments": 2, "learn_positional_embeddings": True, "embeddings_scale": False,
        "reduction_type": "first", "output_scaling": 1.0, "share_encoders": False, "polyencoder_type": "codes",
        "poly_n_codes": m, "poly_attention_type": "basic", "poly_attention_num_heads": 4,
        "codes_attention_type": "basic", "codes_attention_num_heads": 4, "n_decoder_layers": -1,
        "model_parallel": False, "checkpoint_activations": False,
    })
    return PolyEncoderModule(opt, list(range(vocab)), 0).eval()


def _essence_module(layers, d, heads, ffn, m, vocab):
    from transformers import BertConfig, BertModel

    from essence.polyencoder.model import PolyEncoder, TransformerEncoder

    cfg = BertConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, hidden_act="gelu", max_position_embeddings=1024, type_vocab_size=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    enc = lambda: TransformerEncoder(BertModel(cfg, add_pooling_layer=False))  # noqa: E731
    return PolyEncoder(enc(), enc(), poly_type="codes", m=m).eval()


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2   # Linux: KiB


def two_stage(poly, cache: torch.Tensor, repeats: int, contexts: int = 20, k: int = 10) -> None:
    """Two-stage retrieval against the exact chunked poly score: latency per context, recall@k of the exact top
    k, and (exact first stages) how many contexts the bound certifies. The m context vectors are correlated, as
    a trained poly-encoder's are (a shared direction plus noise): random stand-ins, not a trained model."""
    from essence.polyencoder.index import FirstStage, chunked_topk, two_stage_topk

    C, d = cache.shape
    g = torch.Generator().manual_seed(1)
    base = torch.randn(contexts, 1, d, generator=g)
    reps = base + 0.5 * torch.randn(contexts, poly.m, d, generator=g)
    mask = torch.ones(1, poly.m, dtype=torch.bool)
    exact = [chunked_topk(poly, reps[i:i + 1], mask, cache, k)[1][0] for i in range(contexts)]
    arms = [("exact", "Flat", "", "codes", 256), ("exact", "Flat", "", "mean", 1024)]
    try:
        import faiss  # noqa: F401

        arms += [("faiss", "Flat", "", "mean", 1024), ("faiss", "IVF1024,Flat", "nprobe=16", "mean", 1024)]
        if C <= 200_000:
            arms.append(("faiss", "HNSW32", "efSearch=128", "mean", 1024))
    except ImportError:
        print("  (faiss-cpu not installed: faiss arms skipped)")
    for backend, spec, params, query, k1 in arms:
        t = time.perf_counter()
        fs = FirstStage(cache, backend, spec=spec, params=params)
        built = time.perf_counter() - t
        recall, cert = 0.0, 0
        for i in range(contexts):
            _, idx, c = two_stage_topk(poly, reps[i:i + 1], mask, cache, k, fs, k=k1, query=query)
            recall += len(set(idx[0].tolist()) & set(exact[i].tolist())) / k / contexts
            cert += c[0]
        t_ms = median_time(lambda fs=fs, query=query, k1=k1: two_stage_topk(
            poly, reps[:1], mask, cache, k, fs, k=k1, query=query), repeats) * 1e3
        name = f"{backend}{'' if backend == 'exact' else ' ' + spec}{' ' + params if params else ''}"
        print(f"  C = {C:>9,}  two-stage poly-{poly.m}, first stage {name:<28} query {query:<5} k1 {k1:>5}: "
              f"{t_ms:8.1f} ms, recall@{k} {recall:.3f}, certified {cert}/{contexts}, built in {built:.1f} s")
        del fs


@torch.inference_mode()
def scale(candidates: list[int], ms: list[int], repeats: int, d: int = 384) -> None:
    """Per-context scoring + top-10 latency against C cached vectors, and a C-candidate index round trip."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from essence.polyencoder.index import _encode_texts, chunked_topk, read_index
    from essence.polyencoder.model import BiEncoder, PolyEncoder

    class _Stub(torch.nn.Module):        # scoring never touches the transformer: a stand-in with its dimension
        dim = d

    models = {"bi": BiEncoder(_Stub())} | {f"poly-{m}": PolyEncoder(_Stub(), m=m) for m in ms}
    print(f"\nretrieval at scale: one context (encoded; its m x d representation) scored against C cached "
          f"vectors (d = {d}), chunked top-10; ms per context, median of {repeats}")
    for C in candidates:
        cache = torch.randn(C, d)
        for name, model in models.items():
            m = 1 if name == "bi" else model.m
            rep, mask = torch.randn(1, m, d), torch.ones(1, m, dtype=torch.bool)
            t = median_time(lambda model=model, rep=rep, mask=mask, cache=cache:
                            chunked_topk(model, rep, mask, cache, 10), repeats)
            print(f"  C = {C:>9,}  {name:>8}: {t * 1e3:8.1f} ms  (goal < 50 ms at 100k)")
        two_stage(models[f"poly-{max(ms)}"], cache, repeats)
        del cache
    C = max(candidates)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.safetensors"
        texts = [f"candidate {i}: a short response about the weather, the king and Denmark" for i in range(C)]
        t = time.perf_counter()
        blob, offsets = _encode_texts(texts)
        save_file({"candidates": torch.randn(C, d), "texts_utf8": blob, "texts_offsets": offsets}, str(path),
                  metadata={"format": "essence-polyencoder-index/2",
                            "info": json.dumps({"fingerprint": "bench", "count": C})})
        del texts, blob, offsets
        vectors, info = read_index(path)
        poly = models[f"poly-{max(ms)}"]
        rep, mask = torch.randn(1, poly.m, d), torch.ones(1, poly.m, dtype=torch.bool)
        chunked_topk(poly, rep, mask, vectors, 10)
        dt = time.perf_counter() - t
        print(f"index of {C:,} candidates: file {path.stat().st_size / 1e9:.2f} GB, written + read back + one "
              f"poly-{poly.m} query in {dt:.1f} s; {len(info['texts']):,} texts; peak resident memory of this "
              f"process {_peak_rss_gb():.2f} GB (goal < 8 GB)")


@torch.inference_mode()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="minilm")
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--candidates", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--context-tokens", type=int, default=360)
    ap.add_argument("--candidate-tokens", type=int, default=72)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--encode-count", type=int, default=256, help="candidates encoded for the throughput test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", action="store_true", help="retrieval at scale only (no ParlAI)")
    ap.add_argument("--scale-candidates", type=int, nargs="+", default=[100000, 1000000])
    ap.add_argument("--scale-m", type=int, nargs="+", default=[16, 64])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from essence.core.precision import machine_line

    print(machine_line("cpu", "fp32"))
    if args.scale:
        scale(args.scale_candidates, args.scale_m, args.repeats)
        return 0
    torch.manual_seed(0)
    layers, d, heads, ffn = SHAPES[args.shape]
    vocab = 30522
    parlai = _parlai_module(layers, d, heads, ffn, args.m, vocab)
    ours = _essence_module(layers, d, heads, ffn, args.m, vocab)
    print(f"shape {args.shape}: {layers} layers, d {d}, {heads} heads, FFN {ffn}; m = {args.m} codes; context "
          f"{args.context_tokens} tokens; CPU, {args.threads} threads; torch {torch.__version__}")
    ctx = torch.randint(5, vocab, (1, args.context_tokens))
    mask = torch.ones_like(ctx)

    def p_encode():
        return parlai(ctxt_tokens=ctx)

    def e_encode():
        return ours.encode_context(ctx, mask)

    rows = []
    for C in args.candidates:
        cache = torch.randn(C, d) * 0.1
        p_rep, p_mask, _ = p_encode()
        e_rep, e_mask = e_encode()
        p_cand = cache.unsqueeze(0).expand(1, C, d)   # ParlAI scores (B, C, d) candidate tensors

        def p_score(p_rep=p_rep, p_mask=p_mask, p_cand=p_cand):
            return parlai(ctxt_rep=p_rep, ctxt_rep_mask=p_mask, cand_rep=p_cand)

        def e_score(e_rep=e_rep, e_mask=e_mask, cache=cache):
            return ours.score(e_rep, e_mask, cache)

        def p_total(p_cand=p_cand):
            rep, msk, _ = p_encode()
            parlai(ctxt_rep=rep, ctxt_rep_mask=msk, cand_rep=p_cand).topk(5)

        def e_total(cache=cache):
            rep, msk = e_encode()
            ours.score(rep, msk, cache).topk(5)

        for fn in (p_score, e_score, p_total, e_total):  # warm-up
            fn()
        pt, et, ps, es = [], [], [], []
        for _ in range(args.repeats):   # interleaved so that load changes hit both sides alike
            pt.append(median_time(p_total, 1, warmup=0))
            et.append(median_time(e_total, 1, warmup=0))
            ps.append(median_time(p_score, 1, warmup=0))
            es.append(median_time(e_score, 1, warmup=0))
        pt, et, ps, es = map(statistics.median, (pt, et, ps, es))
        rows.append((C, pt, et, ps, es))

    print("\nscoring latency per context (ms; median; ratio = essence / ParlAI, < 1 means essence is faster)")
    print(f"{'C':>8} | {'ParlAI total':>12} {'essence total':>13} {'ratio':>6} | {'ParlAI score':>12} "
          f"{'essence score':>13} {'ratio':>6}")
    for C, pt, et, ps, es in rows:
        print(f"{C:>8,} | {pt * 1e3:12.1f} {et * 1e3:13.1f} {et / pt:6.2f} | {ps * 1e3:12.2f} {es * 1e3:13.2f} "
              f"{es / ps:6.2f}")

    # -- candidate encoding throughput (the index command) ------------------------------------------------
    n, L = args.encode_count, args.candidate_tokens
    toks = torch.randint(5, vocab, (n, L))
    bs = 64

    def p_index():
        for s in range(0, n, bs):
            parlai(cand_tokens=toks[s:s + bs].unsqueeze(1))

    def e_index():
        for s in range(0, n, bs):
            ours.encode_candidates(toks[s:s + bs], torch.ones_like(toks[s:s + bs]))

    p_index()
    e_index()
    tp, te = [], []
    for _ in range(3):
        tp.append(median_time(p_index, 1, warmup=0))
        te.append(median_time(e_index, 1, warmup=0))
    tp, te = statistics.median(tp), statistics.median(te)
    print(f"\ncandidate encoding ({n} x {L} tokens, batch {bs}): ParlAI {n / tp:,.0f} cand/s, essence "
          f"{n / te:,.0f} cand/s (ratio essence / ParlAI throughput {tp / te:.2f})")
    try:  # the real index path: tokenisation + the MiniLM model, when the wheel is installed
        from essence.polyencoder.data import TextBatcher
        from essence.polyencoder.evaluate import encode_candidates
        from essence.polyencoder.model import load_hf_encoder

        hf, tok = load_hf_encoder("minilm")
        from essence.polyencoder.model import BiEncoder, TransformerEncoder

        bi = BiEncoder(TransformerEncoder(hf), reduction="mean").eval()
        texts = [f"candidate number {i} says something about the weather and the king of Denmark" for i in range(n)]
        b = TextBatcher(tok, 360, L)
        encode_candidates(bi, b, texts[:64])
        for bf16 in (False, True):
            t = time.perf_counter()
            encode_candidates(bi, b, texts, batch_size=bs, bf16=bf16)
            dt = time.perf_counter() - t
            print(f"essence index path (MiniLM-L6 + tokenizer, ~16-token texts, {'bf16' if bf16 else 'fp32'}): "
                  f"{n / dt:,.0f} candidates/s")
    except (FileNotFoundError, ImportError) as err:
        print(f"(MiniLM index throughput skipped: {err})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
