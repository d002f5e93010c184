"""``essence moco reproduce``: the paper's claims at small scale on Fashion-MNIST, decided with 95% intervals.

Claims (He et al. 2019, §4.1 and Fig. 3; the card's §7 plan):

(a) accuracy rises with the dictionary size K, and MoCo with a large K beats end-to-end limited to K = batch - 1;
(b) a momentum of m = 0 fails (the loss stays at chance, accuracy far below) while m = 0.99 trains;
(c) the learned features beat (c1) a randomly initialised encoder and (c2) raw pixels, under the same kNN and
    linear protocols.

Every pre-training run uses the Fashion-MNIST training images *without labels*; labels are used only by the kNN
bank and the linear classifier on frozen features, the test labels only for scoring. Every encoder goes through
the same evaluation (``essence.moco.evaluate``): BN re-estimated on clean training images, the training
resolution, the linear learning rate chosen per feature type on a validation split of the training images.

Statistics (``essence.core.stats``): every arm is scored per test image (0/1, the full 10k test split at the
standard preset); a comparison of two arms is the difference of their accuracies with a 95% bootstrap interval
that resamples test images (paired: both arms score the same images) and, where an arm has several seeds, its
seeds (:func:`hierarchical_difference`). The verdict is reproduced / not reproduced / inconclusive from the
interval (:func:`decide`); :func:`claim_decisions` holds that logic and takes the measured scores, so it is
tested without training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from essence.core.loop import Precision
from essence.core.parallel import map_runs, per_process, plan_workers
from essence.core.report import Report
from essence.core.runs import Run
from essence.core.runtime import resolve_device
from essence.core.stats import Decision, decide, hierarchical_difference, hierarchical_mean
from essence.moco.config import PRESETS, MoCoConfig
from essence.moco.data import load_images
from essence.moco.evaluate import (
    bn_subset,
    eval_encoder,
    evaluate_features,
    extract_features,
    raw_pixel_features,
)
from essence.moco.train import build_model, train

__all__ = ["reproduce", "PLANS", "Plan", "claim_decisions", "time_to_accuracy", "CLAIMS"]


@dataclass(frozen=True)
class Plan:
    steps: int                       # optimisation steps per pre-training run (0: optim.epochs of the preset)
    seeds: tuple[int, ...]           # seeds of the headline arm (K = k_main, m = m_main) and the random encoder
    ks: tuple[int, ...]              # queue sizes for claim (a), at m = m_main (k_main is the headline arm)
    ms: tuple[float, ...]            # momenta for claim (b), at K = k_main (m_main is the headline arm)
    k_main: int
    m_main: float
    monitor: int                     # kNN monitor points over the headline seed's run (time-to-accuracy curve)
    previews: bool                   # True: too small to decide; the report says the verdicts only preview


PLANS = {
    "tiny": Plan(steps=3, seeds=(0, 1), ks=(32, 64), ms=(0.0, 0.99), k_main=64, m_main=0.99, monitor=2,
                 previews=True),
    "quick": Plan(steps=0, seeds=(0,), ks=(256, 4096), ms=(0.0, 0.99), k_main=4096, m_main=0.99, monitor=0,
                  previews=True),
    "standard": Plan(steps=0, seeds=(0, 1, 2), ks=(256, 4096), ms=(0.0, 0.99), k_main=4096, m_main=0.99, monitor=6,
                     previews=False),
    "paper": Plan(steps=0, seeds=(0, 1, 2), ks=(256, 1024, 4096, 16384, 65536), ms=(0.0, 0.9, 0.99, 0.999, 0.9999),
                  k_main=65536, m_main=0.999, monitor=20, previews=False),
}

CLAIMS = {
    "a": "Accuracy rises with the dictionary size K, and MoCo with a large K beats end-to-end limited to "
         "K = batch - 1 (Fig. 3)",
    "b": "m = 0 fails while m = 0.99 trains (paper: m = 0 does not converge; 0.99: 57.8%, 0.999: 59.0%)",
    "c1": "MoCo features beat a randomly initialised encoder under the kNN and linear protocols",
    "c2": "MoCo features beat raw pixels (at the encoders' resolution) under the kNN and linear protocols",
}

PROTOCOLS = (("knn", "kNN"), ("linear", "linear"))


def _arm_name(plan: Plan, *, K: int | None = None, m: float | None = None) -> str:
    K = plan.k_main if K is None else K
    m = plan.m_main if m is None else m
    return "moco" if (K, m) == (plan.k_main, plan.m_main) else (f"moco_K{K}" if m == plan.m_main else f"moco_m{m}")


def claim_decisions(scores: dict[str, dict[str, np.ndarray]], plan: Plan, *, seed: int = 0,
                    n_resamples: int = 2000) -> dict[str, list[Decision]]:
    """The decisions behind each claim, from per-item scores.

    Args:
        scores: arm -> {"knn": (seeds, items), "linear": (seeds, items)} 0/1 correctness on the same test items.
            Arms: ``moco`` (K = k_main, m = m_main), ``moco_K{K}`` for the other K of ``plan.ks``, ``end_to_end``,
            ``moco_m{m}`` for the other m of ``plan.ms``, ``random`` (random encoder), ``pixels`` (raw pixels at
            the encoders' resolution).
        plan: which K and m were run.

    Returns:
        ``{"a": [...], "b": [...], "c1": [...], "c2": [...]}``: one :class:`Decision` per protocol and comparison
        (effect = accuracy of the paper's winner minus the other arm, as a fraction; the paper's side is > 0).
    """
    def diff(a: str, b: str, proto: str) -> Decision:
        est = hierarchical_difference(scores[a][proto], scores[b][proto], unit="test images", seed=seed,
                                      n_resamples=n_resamples)
        return decide(est, direction="greater")

    out: dict[str, list[Decision]] = {"a": [], "b": [], "c1": [], "c2": []}
    k_lo, k_hi = min(plan.ks), max(plan.ks)
    big = _arm_name(plan, K=k_hi)
    for proto, _ in PROTOCOLS:
        out["a"].append(diff(big, _arm_name(plan, K=k_lo), proto))
        out["a"].append(diff(big, "end_to_end", proto))
        for m in plan.ms:
            if m == 0:
                out["b"].append(diff("moco", _arm_name(plan, m=m), proto))
        out["c1"].append(diff("moco", "random", proto))
        out["c2"].append(diff("moco", "pixels", proto))
    return out


def time_to_accuracy(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds of training until the monitored accuracy first reaches ``target`` (linear interpolation between
    monitor points, starting from the first point); None if it never does. ``curve``: (seconds, accuracy)."""
    prev = None
    for sec, acc in curve:
        if acc >= target:
            if prev is None or prev[1] >= target:
                return sec
            s0, a0 = prev
            return s0 + (target - a0) / (acc - a0) * (sec - s0)
        prev = (sec, acc)
    return None


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto",
              overrides: tuple[str, ...] = ()) -> Report:
    """Run the experiment in ``run.dir`` and return the (unwritten) report."""
    if preset not in PLANS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PLANS)}")
    plan = PLANS[preset]
    base: MoCoConfig = PRESETS.build(preset, overrides)
    if plan.steps and not base.train.max_steps:
        base = base.with_overrides({"train.max_steps": plan.steps})
    base = base.with_overrides({"train.eval_every": 0})   # the monitor runs only on the headline seed (below)
    run.save_config(base)
    report = Report(run, title="MoCo", preset=preset,
                    paper="He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised Visual Representation "
                          "Learning. CVPR 2020 (+ MoCo v2, Chen et al. 2020)")
    t_start = time.time()
    dev = resolve_device(device)
    run.record_precision(Precision(base.train.precision, dev), quiet=True)   # the report's line; sub-runs log theirs
    train_x, bank_x, bank_y, test_x, test_y, bn_x = _context(base)

    def score_model(model, seed: int) -> dict:
        return _score(model, base, bank_x, bank_y, test_x, test_y, bn_x, dev, seed)

    scores: dict[str, dict[str, list]] = {}
    info: dict[str, dict] = {}
    curves: dict[str, list] = {}

    def add(name: str, res: dict, **extra) -> None:
        s = scores.setdefault(name, {"knn": [], "linear": []})
        s["knn"].append(res["knn_correct"])
        s["linear"].append(res["linear_correct"])
        rec = info.setdefault(name, {"seeds": [], "linear_lr": [], "knn_top1": [], "linear_top1": []})
        rec["seeds"].append(extra.pop("seed", 0))
        for key in ("linear_lr", "knn_top1", "linear_top1"):
            rec[key].append(res[key])
        for key, value in extra.items():
            rec.setdefault(key, []).append(value)

    # the pre-training runs: the headline arm (several seeds; the first one carries the kNN monitor for the
    # time-to-accuracy curve), then (a) queue sizes and end-to-end and (b) momenta, one seed each (the first)
    s0 = plan.seeds[0]
    arms = [("moco", {"model.K": plan.k_main, "model.m": plan.m_main}, seed, i == 0)
            for i, seed in enumerate(plan.seeds)]
    arms += [(_arm_name(plan, K=K), {"model.K": K, "model.m": plan.m_main}, s0, False) for K in plan.ks
             if K != plan.k_main]
    arms.append(("end_to_end", {"model.mechanism": "end_to_end"}, s0, False))
    arms += [(_arm_name(plan, m=m), {"model.K": plan.k_main, "model.m": m}, s0, False) for m in plan.ms
             if m != plan.m_main]
    jobs, labels = [], []
    for name, changes, seed, monitor in arms:
        cfg = base.with_overrides({**changes, "train.seed": seed})
        if monitor and plan.monitor:
            per_epoch = train_x.shape[0] // cfg.optim.batch_size
            total = cfg.train.max_steps or per_epoch * cfg.optim.epochs
            cfg = cfg.with_overrides({"train.eval_every": max(1, total // plan.monitor)})
        label = name if len(plan.seeds) == 1 or name != "moco" else f"{name}_seed{seed}"
        jobs.append((cfg, str(run.dir / "runs" / label), preset, str(dev)))
        labels.append(label)
    workers = plan_workers(len(jobs), dev)
    outs = map_runs(_pretrain, jobs, workers=workers, names=labels, desc="moco runs")
    for (name, _, seed, monitor), out in zip(arms, outs):
        if monitor and out["monitor"]:
            curves[name] = out["monitor"]
        add(name, out["score"], seed=seed, **out["extra"])
    # (c) baselines through the same evaluation: random encoders (one per headline seed), raw pixels
    for seed in plan.seeds:
        add("random", score_model(build_model(base, bank_size=train_x.shape[0], seed=seed).to(dev), seed), seed=seed)
    for name, size in (("pixels", base.aug.size), ("pixels_native", test_x.shape[-1])):
        add(name, evaluate_features(raw_pixel_features(bank_x, base, size=size), bank_y,
                                    raw_pixel_features(test_x, base, size=size), test_y, base.eval, seed=s0,
                                    per_item=True), seed=s0)
    wall = time.time() - t_start

    matrices = {name: {p: np.stack(v) for p, v in s.items()} for name, s in scores.items()}
    decisions = claim_decisions(matrices, plan, seed=s0)
    _write_report(report, plan, base, matrices, info, curves, decisions, wall, bank_x.shape[0], test_x.shape[0],
                  workers)
    return report


def _context(base: MoCoConfig) -> tuple:
    """This process's images: training set, kNN bank / probe set with labels, test set, BN-recalibration subset
    (loaded once per process and reused by its runs)."""
    def build() -> tuple:
        train_x, _ = load_images(base.data, "train")
        bank_x, bank_y = load_images(base.data, "train", limit=base.eval.knn_bank or None)
        test_x, test_y = load_images(base.data, "test")
        return train_x, bank_x, bank_y, test_x, test_y, bn_subset(bank_x, base.eval)

    return per_process("moco", (base.data, base.eval), build)


def _score(model, cfg: MoCoConfig, bank_x, bank_y, test_x, test_y, bn_x, dev, seed: int) -> dict:
    """kNN and linear-probe scores of a pre-trained (or random) encoder, per test item."""
    enc = eval_encoder(model, cfg, bn_x, dev)
    return evaluate_features(extract_features(enc, bank_x, cfg, dev), bank_y, extract_features(enc, test_x, cfg, dev),
                             test_y, cfg.eval, seed=seed, per_item=True)


def _pretrain(cfg: MoCoConfig, run_dir: str, preset: str, device: str) -> dict:
    """One pre-training run and its scores (one job of the reproduction; it runs in a worker process or in the
    caller's)."""
    train_x, bank_x, bank_y, test_x, test_y, bn_x = _context(cfg)
    dev = torch.device(device)
    res = train(cfg, Run(run_dir, method="moco", preset=preset), device=dev, images=train_x,
                eval_data=(bank_x, bank_y, test_x, test_y))
    losses = [h["loss"] for h in res.history if "loss" in h]
    window = losses[-max(1, len(losses) // 5):] if losses else [float("nan")]
    train_s = res.step * cfg.optim.batch_size / max(res.images_per_s, 1e-9)
    return {"score": _score(res.model, cfg, bank_x, bank_y, test_x, test_y, bn_x, dev, cfg.train.seed),
            "monitor": [(m["train_seconds"], m["knn_top1"]) for m in (res.monitor or [])],
            "extra": {"steps": res.step, "train_seconds": train_s, "final_loss": float(np.mean(window)),
                      "loss_curve": [(h["step"], h["loss"]) for h in res.history if "loss" in h]}}


# ---------------------------------------------------------------------------------------------------- report
def _write_report(report, plan, base, matrices, info, curves, decisions, wall, n_bank, n_test, workers=1) -> None:
    B = base.optim.batch_size
    steps = info["moco"]["steps"][0]
    per_epoch = 60000 // B if not base.data.train_limit else base.data.train_limit // B
    lrs = ", ".join(f"{lr:g}" for lr in base.eval.linear_lrs)
    if plan.previews:
        report.text(f"**Preview only.** The `{report.preset}` preset trains {steps} steps per arm with one seed per "
                    "arm; it shows that the pipeline runs and which way the effects lean, but it cannot decide "
                    "the claims: (a), (b), (c1) and (c2) are previews here. Run `essence moco reproduce --preset "
                    "standard` (at most 30 minutes on 2 cores) for the verdicts.")
    report.text(
        f"**Scaled down.** Fashion-MNIST 28x28 grey instead of ImageNet; random crops resampled (antialiased) to "
        f"{base.aug.size} px, and every evaluation (encoders and the raw-pixel baseline) at the same "
        f"{base.aug.size} px (raw pixels at the native 28 px reported beside). Backbone `{base.model.arch}` "
        f"(3x3 stem, no max-pool) at "
        f"width {base.model.width} instead of ResNet-50; embedding {base.model.dim}-d; batch {B}; {steps} steps per "
        f"run ({steps / per_epoch:.1f} epochs) instead of 200 epochs; SplitBN with {base.model.bn_splits} splits "
        f"emulates shuffling BN over {base.model.bn_splits} GPUs; precision {base.train.precision}. MoCo v2 "
        f"recipe: MLP head, T = {base.model.T}, aug+ for grey images (crop scale 0.2-1, brightness/contrast jitter "
        f"0.4 with p 0.8, blur p 0.5 with sigma 0.1-2 px *of a 224 px image*, i.e. scaled to the {base.aug.size} px "
        f"side, flip), cosine schedule, lr {base.optim.lr}, wd {base.optim.weight_decay}, warmup "
        f"{base.optim.warmup_epochs} epochs.")
    report.text(
        f"**Evaluation, identical for every arm.** The query encoder is copied and its BN running statistics are "
        f"re-estimated on {min(base.eval.bn_images or n_bank, n_bank)} clean training images "
        f"(eval.bn = {base.eval.bn}); "
        f"{base.eval.feature} features. Weighted kNN (k = {base.eval.knn_k}, t = {base.eval.knn_t}) with a bank of "
        f"{n_bank} training images; linear protocol (fc, SGD momentum 0.9, no weight decay, x0.1 at 60%/80% of "
        f"{base.eval.linear_epochs} epochs on pre-extracted features) with its learning rate chosen from ({lrs}) "
        f"on a {base.eval.val_fraction:.0%} validation split of the training images, separately for each arm. "
        f"Scored on {n_test} test images. Intervals: 95% bootstrap over the test images (paired between arms) and "
        f"over seeds where an arm has several: the headline arm (K = {plan.k_main}, m = {plan.m_main}) and the "
        f"random encoder have {len(plan.seeds)} seed(s); the ablation arms of (a) and (b) have one seed, so their "
        f"training-seed variation is not in the interval. Total wall time: {wall:.0f} s"
        + (f", with {workers} pre-training runs at a time in worker processes that share the cores (training "
           "times and the time-to-accuracy curve are measured under that sharing)." if workers > 1 else "."))

    report.section("Results")
    rows = []
    for name in matrices:
        est = {p: hierarchical_mean(matrices[name][p], unit="test images", seed=0) for p, _ in PROTOCOLS}
        i = info[name]
        rows.append((name, len(i["seeds"]), est["knn"].format(1, 100), est["linear"].format(1, 100),
                     "/".join(f"{lr:g}" for lr in i["linear_lr"]),
                     f"{np.mean(i['final_loss']):.3f}" if "final_loss" in i else "-",
                     f"{np.mean(i['train_seconds']):.0f}" if "train_seconds" in i else "-"))
    report.table(["arm", "seeds", "kNN top-1 % [95% CI]", "linear top-1 % [95% CI]", "probe lr", "final loss",
                  "train s / seed"], rows,
                 caption="Fashion-MNIST test accuracy of frozen features. Final loss: mean of the last 20% of "
                         f"logged steps (chance = ln(K+1) = {math.log(plan.k_main + 1):.3f} at K = {plan.k_main}).")

    def acc(name, proto):
        return f"{100 * matrices[name][proto].mean():.1f}%"

    k_lo, k_hi = min(plan.ks), max(plan.ks)
    report.claim(CLAIMS["a"], decision=decisions["a"], scale=100, digits=1, name="accuracy gain",
                 evidence=(f"comparisons in order: kNN K={k_hi} - K={k_lo}, kNN K={k_hi} - end-to-end (batch {B}, "
                           f"K={B - 1}), linear K={k_hi} - K={k_lo}, linear K={k_hi} - end-to-end; kNN "
                           + ", ".join(f"K={K}: {acc(_arm_name(plan, K=K), 'knn')}" for K in plan.ks)
                           + f", end-to-end: {acc('end_to_end', 'knn')}"))
    m0 = [m for m in plan.ms if m == 0]
    if m0:
        i0, ih = info[_arm_name(plan, m=0.0)], info["moco"]
        report.claim(CLAIMS["b"], decision=decisions["b"], scale=100, digits=1, name="accuracy gain of m=0.99",
                     evidence=(f"comparisons: kNN, linear (m={plan.m_main} minus m=0); final loss m=0: "
                               f"{np.mean(i0['final_loss']):.3f}, m={plan.m_main}: {np.mean(ih['final_loss']):.3f}, "
                               f"chance ln(K+1) = {math.log(plan.k_main + 1):.3f}"))
    report.claim(CLAIMS["c1"], decision=decisions["c1"], scale=100, digits=1, name="accuracy gain",
                 evidence=(f"comparisons: kNN, linear; MoCo {acc('moco', 'knn')} / {acc('moco', 'linear')}, "
                           f"random encoder {acc('random', 'knn')} / {acc('random', 'linear')} (kNN / linear)"))
    report.claim(CLAIMS["c2"], decision=decisions["c2"], scale=100, digits=1, name="accuracy gain",
                 evidence=(f"comparisons: kNN, linear; MoCo {acc('moco', 'knn')} / {acc('moco', 'linear')}, raw "
                           f"pixels at {base.aug.size} px {acc('pixels', 'knn')} / {acc('pixels', 'linear')}, at "
                           f"the native 28 px {acc('pixels_native', 'knn')} / {acc('pixels_native', 'linear')}"))

    tta = None
    target = 100 * float(matrices["pixels"]["knn"].mean())
    if "moco" in curves:
        final_s = float(np.mean(info["moco"]["train_seconds"][:1]))
        curve = curves["moco"]
        tta = time_to_accuracy(curve, target)
        report.section("Time to accuracy")
        report.text(
            "Minutes of training (the kNN monitor's own time excluded) of the headline run (seed "
            f"{plan.seeds[0]}) until its kNN monitor (same protocol, same bank and test images as above) reaches the "
            f"raw-pixel kNN accuracy at {base.aug.size} px ({target:.1f}%): "
            + (f"**{tta / 60:.1f} min**." if tta is not None else
               f"**not reached** within the run's {final_s / 60:.1f} min of training (the last monitor point: "
               f"{curve[-1][1]:.1f}%). The curve shows how far it is; a longer run is the documented command in "
               "docs/moco.md.") + " Wall minutes measured on this machine at the load it had (see the header).")
    report.add_summary(
        arms={n: {"seeds": i["seeds"], "knn_top1": i["knn_top1"], "linear_top1": i["linear_top1"],
                  "linear_lr": i["linear_lr"], **{k: i[k] for k in ("steps", "train_seconds", "final_loss")
                                                  if k in i}} for n, i in info.items()},
        monitor={n: c for n, c in curves.items()}, time_to_pixels_s=tta, pixel_knn_target=target,
        wall_seconds=round(wall, 1), previews=plan.previews, workers=workers)
    _figures(report, plan, base, matrices, info, curves, target)
    report.text("Paper numbers for reference (ImageNet, ResNet-50, linear top-1): MoCo v1 60.6% (K=65536), "
                "memory bank 58.0%, momentum 0.9 / 0.99 / 0.999 / 0.9999 = 55.2 / 57.8 / 59.0 / 58.9% with m=0 "
                "failing; MoCo v2 67.5% (200 epochs). They are not comparable to the numbers above; only the "
                "direction of each effect is checked.")


def _figures(report, plan, base, matrices, info, curves, target) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    B = base.optim.batch_size
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (proto, title) in zip(axes, PROTOCOLS):
        ks = list(plan.ks)
        ax.plot(ks, [100 * matrices[_arm_name(plan, K=K)][proto].mean() for K in ks], "o-", label="MoCo (queue)")
        ax.plot([B - 1], [100 * matrices["end_to_end"][proto].mean()], "s", label=f"end-to-end (batch {B})")
        ax.axhline(100 * matrices["random"][proto].mean(), color="gray", ls="--", label="random encoder")
        ax.axhline(100 * matrices["pixels"][proto].mean(), color="k", ls=":", label=f"raw pixels {base.aug.size} px")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (negatives)")
        ax.set_ylabel(f"{title} top-1 (%)")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    report.figure(fig, "accuracy_vs_K", "Fashion-MNIST test accuracy vs dictionary size K (cf. paper Fig. 3)")

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, i in info.items():
        for curve in i.get("loss_curve", [])[:1]:
            if curve:
                ax.plot([s for s, _ in curve], [v for _, v in curve], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.legend(fontsize=7)
    report.figure(fig, "training_curves", "Training loss of every pre-training run (first seed; ln(K+1) at chance "
                  "differs between K, so compare shapes, not levels)")

    if "moco" in curves:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        curve = curves["moco"]
        ax.plot([s / 60 for s, _ in curve], [a for _, a in curve], "o-", label="MoCo kNN monitor")
        ax.axhline(target, color="k", ls=":", label=f"raw pixels {base.aug.size} px")
        ax.axhline(100 * matrices["pixels_native"]["knn"].mean(), color="k", ls="-.", lw=0.8,
                   label="raw pixels 28 px")
        ax.axhline(100 * matrices["random"]["knn"].mean(), color="gray", ls="--", label="random encoder")
        ax.set_xlabel("training minutes (this run; machine and threads in the report header)")
        ax.set_ylabel("kNN top-1 (%)")
        ax.legend(fontsize=8)
        report.figure(fig, "time_to_accuracy", "kNN accuracy of the headline run against training minutes")
