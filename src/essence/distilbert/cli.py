"""``essence distilbert teacher | distill | evaluate | finetune | reproduce``.

    essence distilbert teacher --preset quick --out runs/t     # MiniLM-L6 + MLM head -> runs/t/teacher
    essence distilbert distill --teacher runs/t/teacher --preset quick   # -> <run>/student (DistilBertForMaskedLM)
    essence distilbert distill --teacher DIR --corpus my_texts/          # any UTF-8 .txt file or folder
    essence distilbert distill --teacher DIR --corpus shakespeare+austen+wordnet+fortunes   # ~3.4 M words
    torchrun --nproc_per_node=2 -m essence distilbert distill --teacher DIR --preset tiny --device cpu
    essence distilbert distill --resume runs/distilbert/<run>            # continue exactly
    essence distilbert evaluate <run>/student --teacher DIR              # held-out MLM accuracy / perplexity
    essence distilbert finetune <run>/student --train train.tsv --test test.tsv   # text<TAB>label, 3 seeds
    essence distilbert reproduce --preset standard                       # the paper's claims, with a report
"""

from __future__ import annotations

import json
from pathlib import Path

from essence.core.cli import add_run_args, method_parser, reproduce_command, run_cli

__all__ = ["main"]

CORPUS_HELP = ("shakespeare (default), austen, wordnet, fortunes, several joined by + "
               "(shakespeare+austen+wordnet+fortunes: ~3.4 M words), or a UTF-8 .txt file / folder")


def _overrides(args) -> list[str]:
    extra = [f"data.corpus={args.corpus}"] if getattr(args, "corpus", None) else []
    return [*extra, *args.overrides]


def _teacher(args) -> int:
    from essence.core.progress import console
    from essence.core.runs import Run
    from essence.distilbert.config import PRESETS
    from essence.distilbert.evaluate import mlm_scores
    from essence.distilbert.train import train_teacher

    cfg = PRESETS.build(args.preset, _overrides(args))
    run = Run.create("distilbert", args.preset, args.out, exact=args.out is not None)
    run.save_config(cfg)
    folder, model, corpus = train_teacher(cfg, run, device=args.device)
    sc = mlm_scores(model, corpus, batch_size=cfg.eval.batch_size, seed=cfg.eval.seed,
                    precision=cfg.train.precision)
    run.write_summary({"teacher": str(folder), "accuracy": sc["accuracy"], "perplexity": sc["perplexity"]})
    console.print(f"teacher ({cfg.teacher.kind}): held-out MLM accuracy {sc['accuracy']:.2%}, perplexity "
                  f"{sc['perplexity']:.1f}; saved {folder}", highlight=False)
    return 0


def _distill(args) -> int:
    from essence.core import distributed as dist
    from essence.core.checkpoint import read_checkpoint
    from essence.core.progress import console
    from essence.core.runs import Run
    from essence.distilbert.config import PRESETS, DistilConfig
    from essence.distilbert.train import distill

    teacher = args.teacher
    if args.resume:
        src = Path(args.resume)
        ckpt_dir = src / "checkpoints" / "distill" if (src / "checkpoints").is_dir() else src
        ckpt = read_checkpoint(ckpt_dir if ckpt_dir.is_file() else _latest(ckpt_dir))
        cfg = DistilConfig.from_dict(ckpt.require_config()).with_overrides(_overrides(args))
        teacher = teacher or ckpt.state.get("teacher")
        run = Run(args.out or (src if (src / "checkpoints").is_dir() else ckpt.path.parents[2]),
                  method="distilbert", preset=args.preset)
        resume = ckpt.path
    else:
        cfg = PRESETS.build(args.preset, _overrides(args))
        run = Run.create("distilbert", args.preset, args.out, exact=args.out is not None, resumable=True)
        run.save_config(cfg)
        resume = None
    try:
        res = distill(cfg, run, teacher=teacher, device=args.device, resume=resume)
        if dist.is_main():
            console.print(f"distilbert: {res.step} steps, {res.tokens_per_s:.0f} tokens/s; student {res.output}",
                          highlight=False)
    finally:
        dist.cleanup()
    return 0


def _latest(folder: Path) -> Path:
    from essence.core.checkpoint import latest_checkpoint

    found = latest_checkpoint(folder)
    if found is None:
        raise FileNotFoundError(f"no checkpoint to resume from in {folder}")
    return found


def _evaluate(args) -> int:
    from essence.distilbert.evaluate import evaluate_dir

    res = evaluate_dir(args.student, args.teacher, corpus=args.corpus or "shakespeare", max_len=args.max_len,
                       heldout_limit=args.limit, device=args.device if args.device != "auto" else "cpu")
    print(json.dumps(res, indent=2))
    return 0


def _finetune(args) -> int:
    from essence.core.stats import mean_ci
    from essence.distilbert.finetune import finetune

    seeds = tuple(int(x) for x in args.seeds.split(","))
    res = finetune(args.model, args.train, args.test, seeds=seeds, epochs=args.epochs, lr=args.lr,
                   batch=args.batch, device=args.device)
    est = mean_ci(res["accuracy"], unit="seeds")
    print(json.dumps({"labels": res["labels"], "accuracy_per_seed": res["accuracy"],
                      "accuracy": est.value, "ci95": [est.low, est.high]}, indent=2))
    return 0


_reproduce = reproduce_command("distilbert")


def main(argv: list[str]) -> int:
    parser, sub = method_parser("distilbert", "DistilBERT (Sanh et al. 2019): distil a BERT masked LM.")
    p = sub.add_parser("teacher", help="train a teacher (MiniLM-L6 + MLM head, or a tiny BERT) as BertForMaskedLM")
    add_run_args(p)
    p.add_argument("--corpus", default=None, help=CORPUS_HELP)
    p = sub.add_parser("distill", help="distil a BertForMaskedLM directory into a half-depth DistilBERT")
    add_run_args(p)
    p.add_argument("--teacher", default=None, help="BertForMaskedLM directory (default: train one first)")
    p.add_argument("--corpus", default=None, help=CORPUS_HELP)
    p.add_argument("--resume", default=None, help="run directory or checkpoint to continue from")
    p = sub.add_parser("evaluate", help="held-out MLM accuracy / perplexity of a student (and teacher)")
    p.add_argument("student", help="DistilBertForMaskedLM directory")
    p.add_argument("--teacher", default=None, help="its teacher directory (adds retention)")
    p.add_argument("--corpus", default=None)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--limit", type=int, default=0, help="first N held-out sequences (0 = all)")
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("finetune", help="fine-tune a teacher or student on a labelled TSV (text<TAB>label)")
    p.add_argument("model", help="BertForMaskedLM or DistilBertForMaskedLM directory")
    p.add_argument("--train", required=True, help="training TSV")
    p.add_argument("--test", required=True, help="test TSV (labels must occur in the training TSV)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("reproduce", help="check the paper's claims at small scale and write a report")
    add_run_args(p)
    args = parser.parse_args(argv)
    fn = {"teacher": _teacher, "distill": _distill, "evaluate": _evaluate, "finetune": _finetune,
          "reproduce": _reproduce}[args.command]
    return run_cli(lambda: fn(args))
