"""``essence polyencoder``: train, evaluate, index, rank, export, reproduce.

    essence polyencoder train --set model.architecture=poly --set model.poly_m=16 --out runs/poly16
    essence polyencoder evaluate --model runs/poly16
    essence polyencoder evaluate --zero-shot minilm          # the untrained encoder, as sentence-transformers uses it
    essence polyencoder index --model runs/poly16 --candidates responses.txt -o cands.safetensors
    essence polyencoder rank --index cands.safetensors "Who's there?" -k 5
    essence polyencoder rank --index cands.safetensors --contexts-file contexts.txt --json   # many, one model load
    essence polyencoder rank --index big.safetensors "Who's there?" --first-stage faiss --faiss-index HNSW32
    essence polyencoder export runs/poly16 exported/poly16   # for sentence-transformers / transformers / torch
    essence polyencoder reproduce [--preset quick]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from essence.core.cli import UsageError, add_run_args, method_parser, run_cli

__all__ = ["main", "read_candidates"]


def read_candidates(path: str | Path) -> list[str]:
    """Candidates from a ``.txt`` (one per line), ``.jsonl`` (``text`` or ``response`` field) or ``.tsv``
    (the last column) file. Non-UTF-8 files and empty lines are refused with the line number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"candidates file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")   # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); re-encode it as UTF-8") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if path.suffix == ".jsonl":
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                line = obj.get("text", obj.get("response")) if isinstance(obj, dict) else obj
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err})") from None
            if not isinstance(line, str):
                raise ValueError(f"{path}:{n}: expected a string or an object with 'text' / 'response'")
        elif path.suffix == ".tsv":
            line = line.split("\t")[-1]
        if not line.strip():
            raise ValueError(f"{path}:{n}: empty candidate")
        out.append(line)
    if not out:
        raise ValueError(f"{path} holds no candidates")
    return out


def _read_contexts(path: str) -> list[str]:
    """Contexts, one per non-empty line, from a UTF-8 file or stdin (``-``)."""
    import sys

    if path == "-":
        text = sys.stdin.read()
    else:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"contexts file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise ValueError(f"{p} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    return [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]


def _build_parser():
    parser, sub = method_parser("polyencoder", "Poly-encoders (Humeau et al. 2019): bi-, poly- and "
                                               "cross-encoders on any Hugging Face encoder, with a retrieval tool.")
    p = sub.add_parser("train", help="fine-tune a bi- / poly- / cross-encoder (model.architecture)")
    add_run_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p = sub.add_parser("evaluate", help="R@1 and MRR of a trained run (or a zero-shot encoder) on the test split")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a run directory from `train`")
    which.add_argument("--zero-shot", metavar="ENCODER", help="an untrained encoder ('minilm', a Hugging Face "
                       "or a sentence-transformers directory) used as a bi-encoder: a sentence-transformers "
                       "directory's own pooling (cosine scores when it normalises), else mean pooling and cosine")
    p.add_argument("--preset", default="quick", help="with --zero-shot: the preset whose data and token budgets "
                   "are used (default quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --zero-shot: config overrides (e.g. data.dataset=pairs.tsv)")
    p.add_argument("--candidates", type=int, default=20, help="candidates per context (default 20)")
    p.add_argument("--contexts", type=int, default=500, help="test contexts (default 500)")
    p.add_argument("--sets", default=None, metavar="FILE", help="your own candidate sets instead of the test split: "
                   ".tsv (context<TAB>gold<TAB>negatives...) or .jsonl ({context, candidates, label} or "
                   "{context, response, negatives}); every set the same size")
    p.add_argument("--device", default="auto")
    p = sub.add_parser("index", help="encode and store candidate vectors")
    p.add_argument("--model", required=True, help="a bi- or poly-encoder run directory")
    p.add_argument("--candidates", required=True, help=".txt (one per line), .jsonl or .tsv file")
    p.add_argument("-o", "--out", required=True, help="index file to write (.safetensors)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("rank", help="top-k candidates of an index for one or more contexts")
    p.add_argument("--index", required=True)
    p.add_argument("context", nargs="*", help="one or more contexts; separate the turns of one context with ' || '")
    p.add_argument("--contexts-file", default=None, help="read contexts from this file, one per line ('-': stdin), "
                   "all ranked with one model load")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--model", default=None, help="run to score with (default: the run recorded in the index)")
    p.add_argument("--rerank", default=None, help="a cross-encoder run that re-ranks the top --rerank-k")
    p.add_argument("--rerank-k", type=int, default=20)
    p.add_argument("--first-stage", choices=["exact", "faiss"], default=None,
                   help="two-stage retrieval for large indexes: a maximum-inner-product search (exact torch, or "
                   "faiss) for --first-stage-k candidates per context vector, then the exact poly / bi score on "
                   "their union (default: score every candidate)")
    p.add_argument("--first-stage-k", type=int, default=256)
    p.add_argument("--first-stage-query", choices=["codes", "mean"], default="codes",
                   help="search with each of the m context vectors (certified exact where the bound holds) or "
                   "once with their mean (m times cheaper)")
    p.add_argument("--faiss-index", default="Flat", metavar="SPEC",
                   help="faiss.index_factory string (Flat, HNSW32, IVF1024,Flat, ...; default Flat)")
    p.add_argument("--faiss-params", default="", metavar="P", help="faiss search parameters, e.g. nprobe=32")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("export", help="write a trained run for sentence-transformers (bi), transformers + "
                       "plain torch (poly) or AutoModelForSequenceClassification (cross)")
    p.add_argument("run", help="a run directory from `train`")
    p.add_argument("out_dir", help="a new (or empty) directory to write")
    p = sub.add_parser("reproduce", help="bi vs poly vs cross on Shakespeare: accuracy, latency, verdicts")
    add_run_args(p)
    return parser


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)

    def run() -> int:
        if args.command == "reproduce":
            from essence.cli import reproduce_method

            reproduce_method("polyencoder", preset=args.preset, out=args.out, exact=args.out is not None,
                             device=args.device, overrides=args.overrides)
            return 0
        if args.command == "train":
            from essence.core.runs import Run, run_files
            from essence.polyencoder.config import PRESETS
            from essence.polyencoder.train import train

            cfg = PRESETS.build(args.preset, args.overrides)
            if args.resume and not (args.out and run_files(args.out)):
                raise UsageError("--resume needs --out naming the run to continue" if args.out is None
                                 else f"--resume: --out {args.out} holds no run to continue")
            run_dir = Run.create("polyencoder", args.preset, args.out, exact=args.out is not None,
                                 resume=args.resume, resumable=True)
            res = train(cfg, run_dir, device=args.device, resume=args.resume)
            print(f"trained {cfg.model.architecture}-encoder for {res.step} steps -> {run_dir.dir}")
            return 0
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "export":
            from essence.polyencoder.export import export

            written = export(args.run, args.out_dir)
            print(f"exported {args.run} -> {args.out_dir} (see {Path(args.out_dir) / 'README.md'}):")
            for path in written:
                print(f"  {path}")
            return 0
        if args.command == "index":
            from essence.polyencoder.index import Ranker

            if args.batch_size < 1:
                raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
            texts = read_candidates(args.candidates)
            ranker = Ranker.from_run(args.model, device=args.device)
            t = time.perf_counter()
            ranker.build_index(texts, batch_size=args.batch_size, progress=True)
            dt = time.perf_counter() - t
            path = ranker.save_index(args.out)
            print(f"indexed {len(texts)} candidates in {dt:.1f} s ({len(texts) / dt:,.0f} candidates/s) -> {path}")
            return 0
        if args.command == "rank":
            from essence.polyencoder.index import Ranker

            raw = list(args.context) + (_read_contexts(args.contexts_file) if args.contexts_file else [])
            if not raw:
                raise UsageError("rank needs contexts: as arguments or with --contexts-file FILE ('-' for stdin)")
            args.context = raw
            ranker = Ranker.from_index(args.index, run=args.model, device=args.device, rerank_run=args.rerank)
            if args.first_stage:
                ranker.use_first_stage(args.first_stage, k=args.first_stage_k, query=args.first_stage_query,
                                       spec=args.faiss_index, params=args.faiss_params)
            contexts = [tuple(t.strip() for t in c.split(" || ")) if " || " in c else c for c in raw]
            found = ranker.rank_batch(contexts, args.k, rerank_k=args.rerank_k if args.rerank else 0)
            if args.json:
                print(json.dumps([[{"candidate": t, "score": s} for t, s in f] for f in found], indent=1))
                return 0
            for ctx, f in zip(args.context, found):
                print(f"context: {ctx}")
                for i, (t, s) in enumerate(f, 1):
                    print(f"  {i:2d}. {s:9.3f}  {t}")
            return 0
        raise ValueError(f"unknown command {args.command!r}")

    return run_cli(run)


def _evaluate(args) -> int:
    from essence.core.progress import print_table
    from essence.polyencoder.data import TextBatcher, candidate_sets, load_pairs, read_candidate_sets
    from essence.polyencoder.evaluate import evaluate_sets
    from essence.polyencoder.train import load_run

    if args.zero_shot:
        from essence.polyencoder.config import PRESETS
        from essence.polyencoder.export import zero_shot_scoring
        from essence.polyencoder.model import build_model

        cfg = PRESETS.build(args.preset, args.overrides)
        reduction, normalize, how = zero_shot_scoring(args.zero_shot)
        mcfg = cfg.model.replace(architecture="bi", share_encoders=True, encoder=args.zero_shot, reduction=reduction,
                                 pretrained=True, num_layers=0)
        model, tok = build_model(mcfg)
        model.to("cpu" if args.device == "auto" else args.device).eval()
        name = f"zero-shot {args.zero_shot} ({how})"
    else:
        model, tok, cfg, ckpt = load_run(args.model, "cpu" if args.device == "auto" else args.device)
        name, normalize = f"{cfg.model.architecture}-encoder, {ckpt.name}", False
    if args.sets:
        pairs, sets = read_candidate_sets(args.sets)
        where = f"{len(pairs)} contexts of {args.sets}"
    else:
        _, _, test = load_pairs(cfg.data)
        pool = max(cfg.data.candidate_pool, 3 * args.candidates) if cfg.data.candidate_pool else 0
        pairs, sets = candidate_sets(test, args.candidates, max_contexts=args.contexts, seed=cfg.data.seed,
                                     pool_size=pool)
        where = f"{len(pairs)} test contexts"
    batcher = TextBatcher(tok, cfg.model.max_context_tokens, cfg.model.max_candidate_tokens)
    ks = (1, 5) if len(sets[0]) > 5 else (1,)
    res = evaluate_sets(model, batcher, pairs, sets, device=next(model.parameters()).device, ks=ks,
                        normalize=normalize)
    print_table(["metric", "value"], [(k, f"{v * 100:.2f}%") for k, v in res.items()], title=f"{name}, {where}")
    return 0
