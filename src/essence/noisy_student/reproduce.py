"""``essence noisy-student reproduce``: the paper's claims at small scale on Fashion-MNIST, with a report.

Claims (Xie et al. 2019, §3-4; the card's §7 plan), each decided from 95% intervals (essence.core.stats):

(a) the noised student beats its teacher, and a second generation helps again;
(b) without noise (no RandAugment, dropout, stochastic depth) the student does not beat the teacher, and the
    noised student beats the un-noised one;
(c) removing input noise, or model noise, each costs accuracy;
(d) soft pseudo labels are at least as good as hard ones (with out-of-domain unlabeled images mixed in);
(e) a smaller student gains little: the equal-size student beats the half-width one;
(f) the student is more robust than its teacher: lower error on the corrupted test sets (mCE against the teacher
    below 1) and a lower flip probability on perturbation sequences.

Accuracy differences are over the full Fashion-MNIST test split (10,000 images), resampling test images and
training seeds together (:func:`essence.core.stats.hierarchical_difference`). Every arm of a seed shares that
seed's teacher and labeled / unlabeled split; the unlabeled images' labels are never read. The verdict logic is
:func:`decide_claims`, a function of the measured per-item scores (tested with numbers that flip each verdict).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from essence.core import stats
from essence.core.loop import Precision
from essence.core.parallel import per_process, plan_workers, run_graph
from essence.core.report import Report
from essence.core.runs import Run
from essence.core.runtime import default_num_threads, resolve_device
from essence.noisy_student.config import PRESETS, NoisyStudentConfig
from essence.noisy_student.data import SemiSupervisedData, load_data, ood_images
from essence.noisy_student.evaluate import correct, relative_scores, robustness
from essence.noisy_student.model import count_parameters
from essence.noisy_student.pseudo import PseudoLabels
from essence.noisy_student.train import make_pseudo_labels, train_generation

__all__ = ["reproduce", "PLANS", "Plan", "decide_claims", "CLAIMS", "MARGINS"]

PAPER = ("Xie, Luong, Hovy, Le. Self-training with Noisy Student improves ImageNet classification. CVPR 2020 "
         "(arXiv 1911.04252)")

CLAIMS = {
    "a": "The noised student beats its teacher, and a second generation helps again (paper: 87.4 -> 88.1 -> 88.4 "
         "with L2 on ImageNet; card §7: +1-4 points at 1k labels)",
    "b": "Without noise (no RandAugment, dropout, stochastic depth) the student does not beat its teacher, and the "
         "noised student beats the un-noised one (paper §4.1, Table 6)",
    "c": "Removing input noise (RandAugment) or model noise (dropout + stochastic depth) each costs accuracy "
         "(paper Table 6)",
    "d": "Soft pseudo labels are at least as good as hard ones, with out-of-domain unlabeled images mixed in "
         "(paper §4.2 / Fig. 6: soft slightly better, more so out of domain)",
    "e": "A smaller student gains little: the equal-size student beats a half-width student trained the same way "
         "(paper §3.2: the student must be equal or larger)",
    "f": "The student is more robust than its teacher: lower corruption error (mCE against the teacher < 1) and a "
         "lower flip probability on perturbation sequences (paper Table 4-5: ImageNet-C mCE 45.7 -> 28.3, "
         "ImageNet-P mFR 27.8 -> 12.2)",
}
# margins (fractions): (b) "does not beat" = the no-noise gain is below +0.5 point; (d) "at least as good" = soft
# is not worse than hard by more than 0.5 point
MARGINS = {"b_no_gain": 0.005, "d_noninferior": -0.005}


@dataclass(frozen=True)
class Plan:
    seeds: tuple[int, ...]            # teacher -> gen 1 -> gen 2, every seed (claim a, f)
    ablation_seeds: tuple[int, ...]   # the ablation arms (claims b-e)
    ood: int                          # out-of-domain images mixed into the unlabeled set for claim (d)


PLANS = {
    "tiny": Plan(seeds=(0,), ablation_seeds=(0,), ood=100),
    "quick": Plan(seeds=(0,), ablation_seeds=(0,), ood=5000),
    "standard": Plan(seeds=(0, 1, 2), ablation_seeds=(0, 1, 2), ood=5000),
    "paper": Plan(seeds=(0, 1, 2), ablation_seeds=(0, 1, 2), ood=50000),
}
ARMS = ("no_noise", "no_input_noise", "no_model_noise", "small_student", "soft_ood", "hard_ood")


def _m(x) -> np.ndarray:
    return np.atleast_2d(np.asarray(x, dtype=np.float64))


def decide_claims(items: Mapping[str, np.ndarray], robust: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  *, n_resamples: int = 2000) -> dict[str, list[stats.Decision]]:
    """Decisions per claim from per-item scores.

    Args:
        items: arm -> (seeds, test items) 0/1 correctness. Arms: ``teacher``, ``gen1``, ``gen2`` (same seeds),
            ``teacher_abl`` / ``gen1_abl`` (the teacher and gen-1 student of the ablation seeds) and the ablation
            arms of :data:`ARMS` (any may be missing: its claim is skipped).
        robust: ``{"item_error": {arm: (seeds, items)}, "clip_fp": {arm: (seeds, clips)}}`` for claim (f).
        n_resamples: bootstrap resamples per interval.
    """
    def hdiff(a, b, unit: str) -> stats.Estimate:
        return stats.hierarchical_difference(_m(a), _m(b), unit=unit, n_resamples=n_resamples)

    d: dict[str, list[stats.Decision]] = {}

    def diff(a: str, b: str) -> stats.Estimate:
        return hdiff(items[a], items[b], "test images")

    if {"teacher", "gen1"} <= set(items):
        d["a"] = [stats.decide(diff("gen1", "teacher"), direction="greater")]
        if "gen2" in items:
            d["a"].append(stats.decide(diff("gen2", "gen1"), direction="greater"))
    t, s = ("teacher_abl", "gen1_abl") if "teacher_abl" in items else ("teacher", "gen1")
    if "no_noise" in items and t in items:
        d["b"] = [stats.decide(diff("no_noise", t), direction="less", margin=MARGINS["b_no_gain"]),
                  stats.decide(diff(s, "no_noise"), direction="greater")]
    if {"no_input_noise", "no_model_noise"} <= set(items) and s in items:
        d["c"] = [stats.decide(diff(s, "no_input_noise"), direction="greater"),
                  stats.decide(diff(s, "no_model_noise"), direction="greater")]
    if {"soft_ood", "hard_ood"} <= set(items):
        d["d"] = [stats.decide(diff("soft_ood", "hard_ood"), direction="greater", margin=MARGINS["d_noninferior"])]
    if "small_student" in items and s in items:
        d["e"] = [stats.decide(diff(s, "small_student"), direction="greater")]
    if robust and {"teacher", "gen1"} <= set(robust.get("item_error", {})):
        err, fp = robust["item_error"], robust.get("clip_fp", {})
        d["f"] = [stats.decide(hdiff(err["gen1"], err["teacher"], "test images"), direction="less")]
        if {"teacher", "gen1"} <= set(fp):
            d["f"].append(stats.decide(hdiff(fp["gen1"], fp["teacher"], "clips"), direction="less"))
    return d


def _with_ood(data: SemiSupervisedData, n: int, seed: int) -> SemiSupervisedData:
    if n <= 0:
        return data
    ood = ood_images(n, data.unlabeled_x.shape[-1], seed=seed)
    return SemiSupervisedData(labeled_x=data.labeled_x, labeled_y=data.labeled_y,
                              unlabeled_x=torch.cat([data.unlabeled_x, ood]), test_x=data.test_x, test_y=data.test_y,
                              num_classes=data.num_classes, n_ood=n)


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    """Run the experiment in ``run.dir`` and return the (unwritten) report."""
    if preset not in PLANS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PLANS)}")
    plan = PLANS[preset]
    base: NoisyStudentConfig = PRESETS.build(preset, overrides)
    run.save_config(base)
    dev = resolve_device(device)
    torch.set_num_threads(base.train.threads or default_num_threads())
    prec = Precision(base.train.precision, dev)
    run.record_precision(prec)
    report = Report(run, title="Noisy Student", preset=preset, paper=PAPER, method="noisy-student")
    t_start, c_start, load_start = time.time(), time.process_time(), _loadavg()
    data, data_ood = _context(base, plan)
    y = data.test_y

    items: dict[str, list[np.ndarray]] = {}
    models: dict[str, dict[int, torch.nn.Module]] = {}
    info: dict[str, dict] = {}

    def score(arm: str, seed: int, out: dict) -> None:
        c = out["correct"]
        items.setdefault(arm, []).append(c)
        models.setdefault(arm, {})[seed] = out["model"]
        rec = info.setdefault(arm, {"acc": [], "seconds": [], "cpu_seconds": [], "params": out["params"],
                                    "pseudo": []})
        rec["acc"].append(float(c.mean()))
        rec["seconds"].append(out["seconds"])
        rec["cpu_seconds"].append(out["cpu_seconds"])
        if out["pseudo"]:
            rec["pseudo"].append(out["pseudo"])
        run.log(arm=arm, seed=seed, test_accuracy=float(c.mean()), seconds=out["seconds"],
                cpu_seconds=out["cpu_seconds"])

    # every seed: teacher -> gen 1 -> gen 2; the ablation students start as soon as their seed's teacher is done
    def after(name: str, out: dict) -> dict[str, tuple]:
        arm, seed = name.rsplit("-s", 1)
        seed = int(seed)
        cfg = base.with_overrides({"train.seed": seed})
        if arm == "teacher":
            more = {f"gen1-s{seed}": ("gen1", cfg, plan, out["p1"], str(dev))}
            if seed in plan.ablation_seeds:
                more.update({f"{a}-s{seed}": (a, cfg, plan, out["ood"].get(a, out["p1"]), str(dev)) for a in ARMS})
            return more
        if arm == "gen1":
            return {f"gen2-s{seed}": ("gen2", cfg, plan, out["p2"], str(dev))}
        return {}

    n_jobs = len(plan.seeds) * 3 + len(set(plan.ablation_seeds) & set(plan.seeds)) * len(ARMS)
    workers = plan_workers(n_jobs, dev)
    outs = run_graph(_generation_job, {f"teacher-s{seed}": ("teacher", base.with_overrides({"train.seed": seed}),
                                                            plan, None, str(dev)) for seed in plan.seeds},
                     workers=workers, after=after, total=n_jobs, desc="noisy-student runs")
    for seed in plan.seeds:         # the report's order: teacher, gen1, gen2, then the ablations, seed by seed
        for arm in ("teacher", "gen1", "gen2"):
            score(arm, seed, outs[f"{arm}-s{seed}"])
        if seed not in plan.ablation_seeds:
            continue
        score("teacher_abl", seed, outs[f"teacher-s{seed}"])
        score("gen1_abl", seed, outs[f"gen1-s{seed}"])
        for arm in ARMS:
            score(arm, seed, outs[f"{arm}-s{seed}"])

    # ---- robustness of every generation (same corrupted images for every model)
    robust = None
    rel = {}
    if base.eval.robustness:
        n_rob = min(base.eval.robust_test, len(y))
        flat = {f"{arm}/{s}": m for arm in ("teacher", "gen1", "gen2") for s, m in models[arm].items()}
        rob = robustness(flat, data.test_x[:n_rob], y[:n_rob], corruptions=base.eval.corruptions,
                         clips=min(base.eval.clips, n_rob), perturbations=base.eval.perturbations,
                         seed=base.eval.corruption_seed, batch_size=base.eval.batch_size, precision=prec)
        robust = {"item_error": {}, "clip_fp": {}}
        for arm in ("teacher", "gen1", "gen2"):
            keys = [f"{arm}/{s}" for s in plan.seeds]
            robust["item_error"][arm] = np.stack([rob[k]["item_error"] for k in keys])
            robust["clip_fp"][arm] = np.stack([rob[k]["clip_fp"] for k in keys])
        for s in plan.seeds:
            r = relative_scores({a: rob[f"{a}/{s}"] for a in ("teacher", "gen1", "gen2")}, "teacher")
            for a, row in r.items():
                row.update(mean_error=rob[f"{a}/{s}"]["mean_error"], mean_fp=rob[f"{a}/{s}"].get("mean_fp"),
                           clean_error=rob[f"{a}/{s}"]["clean_error"])
                rel.setdefault(a, []).append(row)
    wall = time.time() - t_start
    timing = {"wall_s": wall, "cpu_s": time.process_time() - c_start, "load_start": load_start,
              "load_end": _loadavg(), "threads": torch.get_num_threads(), "workers": workers}

    mats = {k: np.stack(v) for k, v in items.items()}
    decisions = decide_claims(mats, robust)
    _write(report, base, plan, data, data_ood, mats, info, decisions, rel, timing)
    return report


def _context(base: NoisyStudentConfig, plan: Plan) -> tuple[SemiSupervisedData, SemiSupervisedData]:
    """This process's data: the semi-supervised split and the same with the out-of-domain images mixed into the
    unlabeled set (built once per process)."""
    def build() -> tuple[SemiSupervisedData, SemiSupervisedData]:
        data = load_data(base.data)
        return data, _with_ood(data, plan.ood, base.data.split_seed)

    return per_process("noisy-student", (base.data, plan.ood), build)


def _generation_job(arm: str, cfg: NoisyStudentConfig, plan: Plan, pseudo: PseudoLabels | None,
                    device: str) -> dict:
    """Train one network of the reproduction and score it (a job of :func:`essence.core.parallel.run_graph`: it
    runs in a worker process or in the caller's). ``arm``: ``teacher``, ``gen1``, ``gen2`` or one of
    :data:`ARMS`; ``pseudo``: its pseudo labels (None for the teacher). A teacher also returns the gen-1 pseudo
    labels (and, on an ablation seed, those of the soft / hard out-of-domain arms); gen 1 returns gen 2's."""
    data, data_ood = _context(cfg, plan)
    dev = torch.device(device)
    prec = Precision(cfg.train.precision, dev)
    seed = cfg.train.seed
    kw: dict = {}
    gen, train_cfg, train_data = 1, cfg, data
    if arm == "teacher":
        gen = 0
    elif arm == "gen2":
        gen = 2
    elif arm == "no_noise":
        kw["noise"] = cfg.noise.off()
    elif arm == "no_input_noise":
        kw["noise"] = cfg.noise.replace(randaug=False)
    elif arm == "no_model_noise":
        kw["noise"] = cfg.noise.replace(dropout=0.0, stochastic_depth=0.0)
    elif arm == "small_student":
        kw["width"] = 0.5
    elif arm in ("soft_ood", "hard_ood"):
        train_cfg, train_data = cfg.with_overrides({"pseudo.label_type": arm.split("_")[0]}), data_ood
    res = train_generation(train_cfg, train_data, gen, pseudo=pseudo, device=dev, seed=seed, name=f"{arm}-s{seed}",
                           **kw)
    out = {"model": res.model, "correct": correct(res.model, data.test_x, data.test_y, precision=prec,
                                                        batch_size=cfg.eval.batch_size),
           "seconds": res.seconds, "cpu_seconds": res.cpu_seconds, "params": count_parameters(res.model),
           "pseudo": res.pseudo}
    if arm == "teacher":
        out["p1"] = make_pseudo_labels(res.model, data, cfg, 1, precision=prec, device=dev)
        out["ood"] = {}
        if seed in plan.ablation_seeds:
            for kind in ("soft", "hard"):
                c_k = cfg.with_overrides({"pseudo.label_type": kind})
                out["ood"][f"{kind}_ood"] = make_pseudo_labels(res.model, data_ood, c_k, 1, precision=prec,
                                                                device=dev)
    elif arm == "gen1":
        out["p2"] = make_pseudo_labels(res.model, data, cfg, 2, precision=prec, device=dev)
    return out


def _loadavg() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def _fmt_acc(mat: np.ndarray) -> str:
    est = stats.hierarchical_mean(_m(mat), unit="test images")
    return f"{100 * est.value:.2f} [{100 * est.low:.2f}, {100 * est.high:.2f}]"


def _write(report: Report, cfg: NoisyStudentConfig, plan: Plan, data, data_ood, mats, info, decisions, rel,
           timing: dict) -> None:
    wall = timing["wall_s"]
    nz, op = cfg.noise, cfg.optim
    small = info.get("small_student", {}).get("params", 0)
    report.text(
        f"**Scaled down.** Fashion-MNIST 28x28 grey instead of ImageNet + JFT: {data.labeled_x.shape[0]} labeled "
        f"training images ({cfg.data.labeled_per_class} per class, split seed {cfg.data.split_seed}), "
        f"{data.unlabeled_x.shape[0]} unlabeled ones (labels never read) and, for claim (d), {plan.ood} procedural "
        f"out-of-domain images (gratings, blobs, pen strokes); scored on the first {data.test_x.shape[0]} images of "
        f"the official test split. Networks: timm `{cfg.model.arch}` at width x{cfg.model.width:g} "
        f"({info['teacher']['params']:,} parameters" + (f"; the small student has {small:,}" if small else "")
        + "), trained from scratch with "
        f"SGD (nesterov, lr {op.lr}, cosine, wd {op.weight_decay}); teacher {op.teacher_steps} steps of "
        f"{op.batch_size} labeled images, every student {op.student_steps} steps of {op.batch_size} labeled + "
        f"{op.batch_size * op.unlabeled_ratio} pseudo-labeled images (unlabeled ratio {op.unlabeled_ratio}; loss = "
        f"CE_ls(labeled) + ratio x CE(pseudo) as the official code). Noise: RandAugment n={nz.randaug_n}, "
        f"m={nz.randaug_m:g} on the official level scale (geometric ranges scaled from 224 px to 28 px), dropout "
        f"{nz.dropout}, stochastic depth with last-block survival {1 - nz.stochastic_depth:g} (linear); the teacher "
        f"is trained with the same noise (Algorithm 1) and labels in eval mode. Pseudo labels: "
        f"{cfg.pseudo.label_type} (T={cfg.pseudo.temperature:g}), confidence threshold {cfg.pseudo.threshold}, "
        f"class balancing {'on' if cfg.pseudo.balance else 'off'}. Seeds: {list(plan.seeds)} for teacher -> gen 1 "
        f"-> gen 2, {list(plan.ablation_seeds)} for the ablations. Intervals: 95%, bootstrap over test images and "
        f"seeds. Total wall time of the experiment: {wall:.0f} s"
        + (f", with the {sum(len(r['acc']) for a, r in info.items() if not a.endswith('_abl'))} training runs "
           f"{timing['workers']} at a time in worker processes that share the cores (per-run CPU seconds are in the "
           f"table)" if timing.get("workers", 1) > 1 else
           f"; process CPU time {timing['cpu_s']:.0f} s on {timing['threads']} threads") +
        f" (load average {timing['load_start']} at the start, {timing['load_end']} at the end: on a shared machine "
        "the wall time is inflated, the CPU time is not).")
    report.section("Accuracy per arm")
    rows = []
    for arm, mat in mats.items():
        rec = info[arm]
        pseudo = rec["pseudo"][0] if rec["pseudo"] else None
        rows.append((arm, len(rec["acc"]), _fmt_acc(mat), ", ".join(f"{100 * a:.2f}" for a in rec["acc"]),
                     f"{rec['params']:,}", f"{np.mean(rec['seconds']):.0f} ({np.mean(rec['cpu_seconds']):.0f})",
                     f"{pseudo['kept_unique']}/{pseudo['unlabeled']}" if pseudo else "-"))
    report.table(["arm", "seeds", "test accuracy % [95% CI]", "per seed", "params", "train s / seed (CPU s)",
                  "pseudo-labeled kept (unique / all)"], rows,
                 caption="teacher_abl / gen1_abl: the teacher and generation-1 student of the ablation seeds only.")
    if rel:
        report.section("Robustness per generation")
        rrows = []
        for arm, rs in rel.items():
            rrows.append((arm, f"{100 * np.mean([r['clean_error'] for r in rs]):.2f}",
                          f"{100 * np.mean([r['mean_error'] for r in rs]):.2f}",
                          f"{100 * np.mean([r['mCE'] for r in rs]):.1f}",
                          f"{100 * np.mean([r['relative_mCE'] for r in rs]):.1f}",
                          f"{100 * np.mean([r['mean_fp'] for r in rs]):.2f}"
                          if rs[0].get("mean_fp") is not None else "-",
                          f"{100 * np.mean([r['mFR'] for r in rs]):.1f}" if "mFR" in rs[0] else "-"))
        report.table(["generation", "clean error %", "mean corruption error %", "mCE vs teacher %",
                      "relative mCE vs teacher %", "mean FP %", "mFR vs teacher %"], rrows,
                     caption=f"Fashion-MNIST-C ({cfg.eval.corruptions} corruptions of essence.corruptions x 5 "
                             f"severities on the first {cfg.eval.robust_test} test images) and -P "
                             f"({', '.join(cfg.eval.perturbations)} sequences of the first {cfg.eval.clips}); "
                             "means over seeds.")
    pct = {"digits": 2, "scale": 100, "name": "difference (points)"}
    reasons = {"a": "effects: gen1 - teacher; gen2 - gen1",
               "b": "effects: no-noise student - teacher (paper: < +0.5); noised - no-noise student",
               "c": "effects: full-noise student - no RandAugment; full-noise student - no dropout/stochastic depth",
               "d": "effect: soft - hard (both with out-of-domain unlabeled images; paper side: > -0.5)",
               "e": "effect: equal-size - half-width student",
               "f": "effects: gen1 - teacher corruption error (per test image, over all corruption sets); gen1 - "
                    "teacher flip probability (per clip)"}
    for key in "abcdef":
        if key in decisions:
            report.claim(CLAIMS[key], decision=decisions[key], reason=reasons[key], **pct)
    report.text("Paper numbers for reference (ImageNet, EfficientNet-L2 + 300M JFT images): top-1 88.4%, "
                "ImageNet-C mCE 28.3, ImageNet-P mFR 12.2; iterations 87.6 -> 88.1 -> 88.4 [unverified]. They are not "
                "comparable to the numbers above; only the direction of each effect is checked.")
    report.add_summary(accuracy={k: v["acc"] for k, v in info.items()},
                       robustness={a: rs for a, rs in rel.items()}, wall_seconds=round(wall, 1), timing=timing,
                       cpu_seconds={k: v["cpu_seconds"] for k, v in info.items()},
                       decisions={k: [x.as_dict() for x in v] for k, v in decisions.items()})
    _figure(report, mats, rel)


def _figure(report: Report, mats, rel) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ("teacher", "gen1", "gen2") if a in mats]
    fig, axes = plt.subplots(1, 2 if rel else 1, figsize=(10 if rel else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    for i, arm in enumerate(arms):
        per_seed = 100 * mats[arm].mean(1)
        ax.plot([i] * len(per_seed), per_seed, "o", alpha=0.6)
    ax.plot(range(len(arms)), [100 * mats[a].mean() for a in arms], "k-", label="mean over seeds")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy per generation")
    ax.legend(fontsize=8)
    if rel:
        ax = axes[0, 1]
        ax.plot(range(len(arms)), [100 * np.mean([r["mean_error"] for r in rel[a]]) for a in arms], "o-",
                label="mean corruption error")
        if rel[arms[0]][0].get("mean_fp") is not None:
            ax.plot(range(len(arms)), [100 * np.mean([r["mean_fp"] for r in rel[a]]) for a in arms], "s-",
                    label="mean flip probability")
        ax.set_xticks(range(len(arms)), arms)
        ax.set_ylabel("%")
        ax.set_title("robustness per generation")
        ax.legend(fontsize=8)
    report.figure(fig, "generations", "Test accuracy and robustness of teacher, generation 1 and generation 2")
