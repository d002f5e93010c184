"""Small-scale reproduction of Hendrycks & Dietterich (ICLR 2019) on composited photos (-C / -P).

Scaled down (said in the report): Fashion-MNIST objects composited in colour onto crops of natural photos at
32 px (:mod:`essence.data.composite`; disjoint photos for training and test) instead of ImageNet; five small
architectures trained here with crops and flips, several seeds each; the benchmark's "AlexNet" is the small
AlexNet-style baseline (the mean of its per-seed errors is the fixed normalising table, as AlexNet's in the
paper); CIFAR-10-C's parameter table at 32 px; the test set is corrupted once (cached, quantised to uint8, no
JPEG q85 storage step) and every model is scored on the same images in fp32. ImageNet-P sequences use the
CIFAR-10-P parameters at 32 px and are not MP4-compressed.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from essence.core.checkpoint import save_checkpoint
from essence.core.precision import resolve_precision
from essence.core.report import Report
from essence.core.runs import Run
from essence.core.runtime import default_num_threads, resolve_device, seed_everything
from essence.core.stats import INCONCLUSIVE, mean_ci
from essence.corruptions import claims as C
from essence.corruptions.config import PRESETS
from essence.corruptions.evaluate import (
    corrupted_test_set,
    evaluate_perturbations,
    gallery_figure,
    per_item_errors,
    severity_figure,
)
from essence.corruptions.functional import CORRUPTIONS, SUBSETS, corruption_names
from essence.corruptions.train import clahe, train_classifier

__all__ = ["reproduce", "load_data"]

PAPER = ("Hendrycks, Dietterich. Benchmarking Neural Network Robustness to Common Corruptions and Perturbations. "
         "ICLR 2019 (arXiv 1903.12261)")


def load_data(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, labels, test images, labels) of the configured source; uint8 (N, H, W[, 3])."""
    dc = cfg.data
    if dc.source == "composite":
        from essence.data.composite import load_composite

        xtr, ytr = load_composite("train", n=dc.train_size, seed=dc.seed)
        xte, yte = load_composite("test", n=dc.test_size, seed=dc.seed)
        return xtr, ytr, xte, yte
    from essence.data import load_fashion_mnist

    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    itr = np.sort(np.random.default_rng(dc.seed).permutation(len(xtr))[:dc.train_size])
    ite = np.sort(np.random.default_rng(dc.seed + 1).permutation(len(xte))[:dc.test_size])
    return xtr[itr], ytr[itr], xte[ite], yte[ite]


def _names(spec: str) -> list[str]:
    return corruption_names(spec) if "," not in spec and spec in SUBSETS else [n.strip() for n in spec.split(",")]


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    cfg = PRESETS.build(preset, overrides)
    run.save_config(cfg)
    dev = resolve_device(device)
    torch.set_num_threads(default_num_threads())
    tc, dc = cfg.train, cfg.data
    seed_everything(tc.seeds[0])
    t0 = time.time()
    report = Report(run, title="ImageNet-C/P: corruption and perturbation robustness (composited photos -C/-P)",
                    paper=PAPER, preset=preset)
    xtr, ytr, xte, yte = load_data(cfg)
    run.record_precision(resolve_precision(tc.precision, dev))
    names = _names(dc.corruptions)
    times: dict[str, float] = {}

    # ---- the test set, corrupted once
    t = time.time()
    test_u8 = np.ascontiguousarray(xte[:, None] if xte.ndim == 3 else xte.transpose(0, 3, 1, 2))
    sets = corrupted_test_set(xte, names, seed=dc.seed, param_set=dc.param_set, batch_size=dc.batch_size,
                              cache=dc.cache, jpeg_quality=dc.jpeg_quality or None)
    times["corrupt test set"] = time.time() - t

    # ---- train every architecture with every seed, score each on the same corrupted images
    models: dict[str, torch.nn.Module] = {}
    clean_w: dict[str, np.ndarray] = {}
    wrong: dict[str, np.ndarray] = {}
    arch_of: dict[str, str] = {}

    def score(key, model, pre=None):
        clean_w[key], wrong[key] = per_item_errors(model, test_u8, sets, yte, preprocess=pre,
                                                   precision=tc.eval_precision, batch_size=dc.batch_size)

    for arch in tc.archs:
        for s in tc.seeds:
            key = f"{arch}/s{s}"
            t = time.time()
            models[key] = train_classifier(arch, xtr, ytr, epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr,
                                           weight_decay=tc.weight_decay, precision=tc.precision, seed=s,
                                           device=dev, augment=tc.augment, log=lambda **kw: run.log(**kw),
                                           desc=f"train {key}")
            times[f"train {key}"] = time.time() - t
            save_checkpoint(run.checkpoints_dir / key.replace("/", "_"), modules={"model": models[key]}, config=cfg,
                            state={"arch": arch, "seed": s, "data": dc.source})
            t = time.time()
            score(key, models[key])
            arch_of[key] = arch
            times[f"evaluate {key}"] = time.time() - t

    # ---- (d) CLAHE fine-tuning vs a control fine-tuned for the same epochs at the same learning rate
    eq_keys, ctl_keys = [], []
    if tc.histeq_epochs > 0:
        for s in tc.seeds:
            base = models[f"{tc.histeq_arch}/s{s}"]
            for arm, tf in (("control", None), ("clahe", clahe)):
                key = f"{tc.histeq_arch}+{arm}/s{s}"
                t = time.time()
                m = train_classifier(tc.histeq_arch, xtr, ytr, epochs=tc.histeq_epochs, batch_size=tc.batch_size,
                                     lr=tc.histeq_lr, weight_decay=tc.weight_decay, precision=tc.precision,
                                     seed=1000 + s, device=dev, model=copy.deepcopy(base), augment=tc.augment,
                                     transform=tf, warmup=False, desc=f"fine-tune {key}")
                score(key, m, tf)
                times[f"fine-tune+evaluate {key}"] = time.time() - t
                (eq_keys if arm == "clahe" else ctl_keys).append(key)

    # ---- metrics
    err = {k: wrong[k].mean(2) for k in wrong}                      # (C, 5)
    clean = {k: float(clean_w[k].mean()) for k in clean_w}
    base_arch = tc.archs[0]
    base_keys = [k for k in arch_of if arch_of[k] == base_arch]
    base_err = np.mean([err[k] for k in base_keys], 0)
    base_clean = float(np.mean([clean[k] for k in base_keys]))
    rel_idx = C.relative_corruptions(base_err, base_clean)
    rel_names = [names[i] for i in rel_idx]
    summary: dict[str, dict] = {}
    for k in wrong:
        rel = float("nan")
        if len(rel_idx):
            rel = C.relative_mce_of(err[k][rel_idx], clean[k], base_err[rel_idx], base_clean)
        summary[k] = {"clean_error": clean[k], "mCE": C.mce_of(err[k], base_err), "relative_mCE": rel,
                      "mean_error_unnormalised": float(err[k].mean())}

    # ---- perturbations (-P), first seed of each architecture
    pc = cfg.perturb
    first = {a: f"{a}/s{tc.seeds[0]}" for a in tc.archs}
    fps, t5s = evaluate_perturbations({a: models[k] for a, k in first.items()}, xte[:pc.clips],
                                      perturbations=pc.perturbations, pad=pc.pad, seed=dc.seed,
                                      precision=tc.eval_precision, param_set=dc.param_set)

    # ---- claims
    trained = list(arch_of)
    _claims(report, names, tc, trained, arch_of, wrong, clean, summary, base_err, eq_keys, ctl_keys, rel_names)

    # ---- report body
    seconds = time.time() - t0
    report.section("Setup (what was scaled down)")
    src = ("Fashion-MNIST objects composited in colour onto crops of natural photos at 32x32 (scikit-image photos; "
           "training and test photos are disjoint)" if dc.source == "composite" else "Fashion-MNIST (28x28 grey)")
    storage = f"JPEG q{dc.jpeg_quality} storage step" if dc.jpeg_quality else "no JPEG storage step (as CIFAR-10-C)"
    report.text(
        f"{src}: {len(xtr)} training images, {len(xte)} test images (of 10,000: the CPU budget), corrupted once "
        f"with the {len(names)} corruptions x 5 severities (parameter table `{dc.param_set}`), quantised to uint8, "
        f"{storage}; every model is scored on the same corrupted images in {tc.eval_precision}. "
        f"Architectures {', '.join(tc.archs)} x seeds {list(tc.seeds)}, {tc.epochs} epochs each (AdamW lr {tc.lr}, "
        f"cosine, {'random crops + flips' if tc.augment else 'no augmentation'}, training precision "
        f"{tc.precision}). `{base_arch}` is this benchmark's AlexNet: the mean of its per-seed errors normalises CE "
        f"(fixed constants, as the paper's AlexNet table), so its seeds' mCE scatter around 100. Claim (d): "
        f"`{tc.histeq_arch}` fine-tuned {tc.histeq_epochs} epoch(s) at lr {tc.histeq_lr} on CLAHE-equalised "
        f"images (CLAHE also at test; 2x2 tiles of 16 px, clip 2, on Lab lightness) against a control "
        f"fine-tuned from the same model for the same epochs, lr and data order without CLAHE. Wall time "
        f"{seconds / 60:.1f} min.")
    report.text("Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + ".")
    order = sorted(summary, key=lambda k: summary[k]["clean_error"])
    rows = [[k, f"{100 * summary[k]['clean_error']:.1f}", f"{100 * summary[k]['mean_error_unnormalised']:.1f}",
             f"{100 * summary[k]['mCE']:.1f}", f"{100 * summary[k]['relative_mCE']:.1f}"] for k in order]
    report.section("Corruption errors per model")
    report.table(["model", "clean err %", "mean corr. err % (unnormalised)", "mCE", "relative mCE"], rows,
                 caption=f"mCE / relative mCE normalised by the mean of `{base_arch}`'s seeds (=100 on average); "
                         f"relative mCE over {len(rel_names)} of {len(names)} corruptions (those the baseline "
                         f"degrades by >= {100 * C.MIN_DEGRADATION:.0f} points summed over severities). "
                         f"{len(xte)} test images; per-model numbers are one seed each (the claims carry the CIs).")
    arch_rows = []
    for a in tc.archs:
        ks = [k for k in trained if arch_of[k] == a]
        ce = mean_ci([100 * clean[k] for k in ks], unit="seeds") if len(ks) > 1 else None
        me = mean_ci([100 * summary[k]["mCE"] for k in ks], unit="seeds") if len(ks) > 1 else None
        re = mean_ci([100 * summary[k]["relative_mCE"] for k in ks], unit="seeds") if len(ks) > 1 else None
        arch_rows.append([a, *(e.format(1) if e else f"{v:.1f}" for e, v in (
            (ce, 100 * clean[ks[0]]), (me, 100 * summary[ks[0]]["mCE"]), (re, 100 * summary[ks[0]]["relative_mCE"])))])
    report.table(["architecture", "clean err %", "mCE", "relative mCE"], arch_rows,
                 caption="Mean over seeds [95% CI, Student t over seeds] (one value when one seed).")
    fam = {f: [i for i, c in enumerate(names) if CORRUPTIONS.get(c).family == f]
           for f in ("noise", "blur", "weather", "digital")}
    fam = {f: v for f, v in fam.items() if v}
    report.table(["model", *fam], [[k, *[f"{100 * C.mce_of(err[k][v], base_err[v]):.1f}" for v in fam.values()]]
                                   for k in order], caption="mCE (%) per corruption family.")
    report.table(["corruption", *order], [[c, *[f"{100 * err[k][i].sum() / base_err[i].sum():.1f}" for k in order]]
                                          for i, c in enumerate(names)], caption="CE (%) per corruption.")
    report.table(["model", *pc.perturbations], [[a, *[f"{100 * fps[a][p]:.2f}" for p in pc.perturbations]]
                                                for a in tc.archs],
                 caption=f"Flip probability (%) per perturbation ({min(pc.clips, len(xte))} clips; "
                         f"`{dc.param_set}` P parameters; first seed of each architecture).")
    report.figure(severity_figure({k: dict(zip(names, err[k].tolist())) for k in (first.values())},
                                  {k: clean[k] for k in first.values()}), "error_vs_severity",
                  "Top-1 error vs severity per corruption (first seed of each architecture)")
    report.figure(gallery_figure(xte[0], corruption_names("all") if preset != "tiny" else names, seed=dc.seed,
                                 param_set=dc.param_set), "gallery",
                  "Every corruption at every severity (a test image)")
    report.add_summary(models=summary, fp=fps, t5d=t5s, baseline_errors=base_err.tolist(), baseline_clean=base_clean,
                       seconds_total=round(seconds, 1))
    return report


def _claims(report, names, tc, trained, arch_of, wrong, clean, summary, base_err, eq_keys, ctl_keys,
            rel_names) -> None:
    base_arch = tc.archs[0]
    preview = len(tc.seeds) < 3
    note = " (preview: fewer than 3 seeds per architecture)" if preview else ""
    # (a) error grows with severity, per corruption, pooled over the trained models
    sev = C.severity_decisions(np.stack([wrong[k] for k in trained]), names)
    report.claim("(a) Error grows with severity: E(s5) > E(s1) for each corruption (mean over the trained models)",
                 decision=[d for _, d in sev], scale=100, digits=1, name="E5 - E1",
                 reason="per corruption: " + ", ".join(f"{c} {d.verdict}" for c, d in sev
                                                       if d.verdict != "reproduced")
                 if any(d.verdict != "reproduced" for _, d in sev) else "")
    # (b) more accurate architectures have lower mCE
    ce = [summary[k]["clean_error"] for k in trained]
    me = [summary[k]["mCE"] for k in trained]
    d_b = C.accuracy_mce_decision(ce, me) if len(trained) >= 3 else None
    report.claim("(b) More accurate architectures have lower mCE: Spearman rho(clean error, mCE) > 0" + note,
                 decision=d_b, verdict=None if d_b else INCONCLUSIVE, name="rho", digits=2,
                 evidence="; ".join(f"{a}: clean {100 * np.mean([clean[k] for k in trained if arch_of[k] == a]):.1f}%, "
                                    f"mCE {100 * np.mean([summary[k]['mCE'] for k in trained if arch_of[k] == a]):.1f}"
                                    for a in tc.archs) + " (paper: AlexNet 43.5/100, VGG-19+BN 25.8/81.6, ResNet-50 "
                                                         "23.9/76.7)")
    # (c) relative mCE of the more accurate nets stays near / above 100
    base_clean = np.mean([clean[k] for k in trained if arch_of[k] == base_arch])
    better = [k for k in trained if arch_of[k] != base_arch and clean[k] < base_clean
              and np.isfinite(summary[k]["relative_mCE"])]
    if len(better) >= 2:
        d_c = C.relative_mce_decision([summary[k]["relative_mCE"] for k in better])
        report.claim("(c) Relative robustness barely improves: the relative mCE of the architectures more accurate "
                     f"than the baseline stays near or above 100 (mean > {100 * C.RELATIVE_MARGIN:.0f}), although "
                     f"their mCE falls (paper: ResNet-50 relative mCE 105.0 at mCE 76.7)" + note,
                     decision=d_c, scale=100, digits=1, name="mean relative mCE",
                     evidence=f"{len(better)} models; their mCE: "
                              f"{100 * np.mean([summary[k]['mCE'] for k in better]):.1f} on average; relative mCE "
                              f"over the {len(rel_names)} corruptions whose baseline degradation sum_s(E_s - E_clean) "
                              f">= {100 * C.MIN_DEGRADATION:.0f} points"
                              + (f" (left out: {', '.join(c for c in names if c not in rel_names)})"
                                 if len(rel_names) < len(names) else ""))
    else:
        undefined = not any(np.isfinite(summary[k]["relative_mCE"]) for k in trained)
        report.claim("(c) Relative robustness barely improves", verdict=INCONCLUSIVE,
                     reason=f"relative mCE is undefined: the baseline's corrupted error exceeds its clean error by "
                            f">= {100 * C.MIN_DEGRADATION:.0f} points (summed over severities) for no corruption"
                     if undefined else
                     f"fewer than 2 trained models are more accurate than `{base_arch}`")
    # (d) CLAHE
    if eq_keys:
        a = np.stack([wrong[k] for k in eq_keys])
        b = np.stack([wrong[k] for k in ctl_keys])
        d_d = C.histeq_decision(a, b, base_err)
        report.claim("(d) Histogram equalisation (CLAHE fine-tuning) lowers mCE against a control fine-tuned for "
                     "the same epochs and lr (paper: ResNet-50 76.7 -> 74.5)" + note,
                     decision=d_d, scale=100, digits=1, name="delta mCE (CLAHE - control)",
                     evidence="; ".join(f"{k}: clean {100 * clean[k]:.1f}%, mCE {100 * summary[k]['mCE']:.1f}"
                                        for k in [*ctl_keys, *eq_keys]))
