"""``essence idvae reproduce``: IDVAE's claims at small scale on Fashion-MNIST, with confidence intervals.

Arms (identical trunk, decoder, data, optimiser, steps and evaluation; each trained with every seed):
``vae``, ``vaegan`` (separate discriminator), ``idvae`` (shared trunk), the ablations ``idvae_no_prior_fakes``,
``idvae_no_fm`` (no feature matching), ``idvae_lambda_low`` / ``idvae_lambda_high`` (lambda_D x0.1 / x10), and
the conditional ``cidvae``.

Claims (paper section 0 / card section 6), each decided by :func:`essence.core.stats.decide` on a 95% interval:

(a) IDVAE's prior samples have a lower FID than the VAE's, under every feature network (over seeds, Welch t);
(b) IDVAE matches or beats VAE-GAN (FID difference below +10% of VAE-GAN's FID) with fewer parameters;
(c) IDVAE's test reconstruction error is at or near the best: within +10% of VAE-GAN's and of the VAE's
    (per test image, resampling images and seeds);
(d) ablations: without prior fakes the FID rises; without feature matching the reconstruction error rises;
    lambda_D trades reconstruction for sample quality (x10 vs x0.1: lower FID, higher error);
(e) conditional samples are classified as their label: above the unconditional model's chance level and
    above 80% (card section 6).

The FID ranking of all arms under each feature network, and the agreement between the networks (Kendall tau),
is reported beside the claims: the paper's "ensemble of experts" argument.
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
from essence.core.stats import (
    Decision,
    SeedResults,
    decide,
    difference,
    hierarchical_difference,
    hierarchical_mean,
)
from essence.idvae.config import PRESETS, IDVAEConfig
from essence.idvae.data import load_images
from essence.idvae.evaluate import build_experts, evaluate_model, fid, generate, get_classifier
from essence.idvae.model import count_parameters
from essence.idvae.train import build, train

__all__ = ["reproduce", "PLANS", "Plan", "ARMS", "ClaimSpec", "decide_claims", "PARITY", "COND_TARGET"]

PARITY = 0.10          # "matches": within +10% of the baseline's value
COND_TARGET = 0.80     # card section 6: conditional samples classified as their label at > 80%
MAIN = ("vae", "vaegan", "idvae")


@dataclass(frozen=True)
class Plan:
    steps: int                       # optimisation steps per run (0: the preset's epochs)
    seeds: tuple[int, ...]
    samples: int                     # prior samples / test images per FID (cheap experts)
    inception_samples: int           # the same for Inception (0: no Inception expert)
    test: int                        # test images for reconstruction error (0 = all 10k)
    monitor_every: int               # FID-over-training monitor for seed 0 of the main arms (0: off)


PLANS = {
    "tiny": Plan(steps=3, seeds=(0, 1), samples=48, inception_samples=0, test=64, monitor_every=0),
    "quick": Plan(steps=100, seeds=(0, 1, 2), samples=1000, inception_samples=0, test=2000, monitor_every=50),
    "standard": Plan(steps=600, seeds=(0, 1, 2), samples=5000, inception_samples=300, test=0, monitor_every=150),
    "paper": Plan(steps=0, seeds=(0, 1, 2), samples=10000, inception_samples=10000, test=0, monitor_every=2000),
}


def _arms(base: IDVAEConfig) -> dict[str, dict]:
    lam = base.loss.lambda_d
    return {
        "vae": {"model.kind": "vae"},
        "vaegan": {"model.kind": "vaegan"},
        "idvae": {"model.kind": "idvae"},
        "idvae_no_prior_fakes": {"model.kind": "idvae", "loss.prior_fakes": False},
        "idvae_no_fm": {"model.kind": "idvae", "loss.feature_matching": False},
        "idvae_lambda_low": {"model.kind": "idvae", "loss.lambda_d": lam * 0.1},
        "idvae_lambda_high": {"model.kind": "idvae", "loss.lambda_d": lam * 10},
        "cidvae": {"model.kind": "idvae", "model.conditional": True},
    }


ARMS = tuple(_arms(PRESETS.build("tiny")))


@dataclass
class ClaimSpec:
    claim: str
    decisions: list[Decision]
    evidence: str = ""
    reason: str = ""


def _fid_key(expert: str) -> str:
    return f"fid_{expert}"


def _mean(r: SeedResults, key: str) -> float:
    return float(np.mean(r.values[key]))


def decide_claims(results: dict[str, SeedResults], experts: tuple[str, ...],
                  params: dict[str, int]) -> list[ClaimSpec]:
    """Turn per-arm, per-seed metrics into the five claims (pure: the reproduce test feeds it numbers).

    ``results[arm]`` holds ``fid_<expert>`` (one value per seed), ``recon_mse`` and ``cond_acc`` (per-item
    arrays per seed); ``params[arm]`` the parameter count of each main arm.
    """
    idv, vae, vg = results["idvae"], results["vae"], results["vaegan"]
    specs: list[ClaimSpec] = []

    def fid_diff(a: SeedResults, b: SeedResults, e: str, direction: str, margin: float = 0.0) -> Decision:
        return decide(difference(a.values[_fid_key(e)], b.values[_fid_key(e)]), direction=direction, margin=margin)

    # (a) sharper than the VAE under every feature network
    ds = [fid_diff(idv, vae, e, "less") for e in experts]
    specs.append(ClaimSpec(
        "IDVAE's prior samples have a lower FID than the VAE's, under every feature network (section 0)", ds,
        evidence="; ".join(f"{e}: IDVAE {_mean(idv, _fid_key(e)):.3g} vs VAE {_mean(vae, _fid_key(e)):.3g}"
                           for e in experts),
        reason="effect = FID(IDVAE) - FID(VAE), one decision per feature network, in the order " + ", ".join(experts)))
    # (b) matches or beats VAE-GAN with fewer parameters
    ds = [fid_diff(idv, vg, e, "less", PARITY * _mean(vg, _fid_key(e))) for e in experts]
    ratio = params["idvae"] / params["vaegan"]
    specs.append(ClaimSpec(
        f"IDVAE matches or beats VAE-GAN in FID (within +{PARITY:.0%} of VAE-GAN's FID) with fewer parameters", ds,
        evidence=f"parameters: IDVAE {params['idvae']:,}, VAE-GAN {params['vaegan']:,} (ratio {ratio:.3f}), "
                 f"VAE {params['vae']:,}; " + "; ".join(
                     f"{e}: IDVAE {_mean(idv, _fid_key(e)):.3g} vs VAE-GAN {_mean(vg, _fid_key(e)):.3g}"
                     for e in experts),
        reason="effect = FID(IDVAE) - FID(VAE-GAN); the margin is +10% of VAE-GAN's mean FID per network"))
    # (c) reconstruction error at or near the best
    mse = {k: r.matrix("recon_mse") for k, r in results.items() if "recon_mse" in r.items}
    ds = [decide(hierarchical_difference(mse["idvae"], mse[b], unit="test images"), direction="less",
                 margin=PARITY * float(mse[b].mean())) for b in ("vaegan", "vae")]
    specs.append(ClaimSpec(
        f"IDVAE's test reconstruction error is at or near the best (within +{PARITY:.0%} of VAE-GAN's, then of "
        "the VAE's)", ds,
        evidence="per-pixel MSE in [0, 1] units through z = mu: " + ", ".join(
            f"{k} {float(mse[k].mean()):.4f}" for k in MAIN),
        reason="effect = MSE(IDVAE) - MSE(baseline), per test image"))
    # (d) ablations
    if {"idvae_no_prior_fakes", "idvae_no_fm", "idvae_lambda_low", "idvae_lambda_high"} <= set(results):
        cheap = [e for e in experts if e != "inception"] or list(experts)
        npf = results["idvae_no_prior_fakes"]
        specs.append(ClaimSpec(
            "Ablation: without the prior-sample fakes x_p the prior samples get worse (higher FID)",
            [fid_diff(npf, idv, e, "greater") for e in cheap],
            evidence="; ".join(f"{e}: without x_p {_mean(npf, _fid_key(e)):.3g} vs IDVAE {_mean(idv, _fid_key(e)):.3g}"
                               for e in cheap),
            reason="effect = FID(no prior fakes) - FID(IDVAE)"))
        specs.append(ClaimSpec(
            "Ablation: without feature matching in L_dec the reconstructions get worse (higher test MSE)",
            [decide(hierarchical_difference(mse["idvae_no_fm"], mse["idvae"], unit="test images"),
                    direction="greater")],
            evidence=f"MSE without feature matching {float(mse['idvae_no_fm'].mean()):.4f} vs IDVAE "
                     f"{float(mse['idvae'].mean()):.4f}",
            reason="effect = MSE(no feature matching) - MSE(IDVAE)"))
        lo, hi = results["idvae_lambda_low"], results["idvae_lambda_high"]
        e0 = cheap[0]
        specs.append(ClaimSpec(
            "Ablation: lambda_D trades reconstruction for sample quality (x10 vs x0.1: lower FID, higher MSE)",
            [fid_diff(hi, lo, e0, "less"),
             decide(hierarchical_difference(mse["idvae_lambda_high"], mse["idvae_lambda_low"], unit="test images"),
                    direction="greater")],
            evidence=f"{e0} FID: x10 {_mean(hi, _fid_key(e0)):.3g}, x1 {_mean(idv, _fid_key(e0)):.3g}, x0.1 "
                     f"{_mean(lo, _fid_key(e0)):.3g}; MSE: x10 {float(mse['idvae_lambda_high'].mean()):.4f}, "
                     f"x1 {float(mse['idvae'].mean()):.4f}, x0.1 {float(mse['idvae_lambda_low'].mean()):.4f}",
            reason="effects: FID(x10) - FID(x0.1), then MSE(x10) - MSE(x0.1)"))
    # (e) conditional samples are classified as their label
    if "cidvae" in results and "cond_acc" in results["cidvae"].items:
        acc_c, acc_u = results["cidvae"].matrix("cond_acc"), results["idvae"].matrix("cond_acc")
        specs.append(ClaimSpec(
            f"Conditional IDVAE: samples are classified as their label (above the unconditional model's chance "
            f"level, and above {COND_TARGET:.0%})",
            [decide(hierarchical_difference(acc_c, acc_u, unit="samples"), direction="greater"),
             decide(hierarchical_mean(acc_c, unit="samples"), direction="greater", margin=COND_TARGET)],
            evidence=f"classifier accuracy on conditional samples {acc_c.mean():.3f}; unconditional samples against "
                     f"the same labels {acc_u.mean():.3f}",
            reason="effects: acc(conditional) - acc(unconditional vs the same labels), then acc(conditional)"))
    return specs


def _kendall(results: dict[str, SeedResults], experts: tuple[str, ...]) -> tuple[list, list]:
    from scipy import stats

    arms = [a for a in results if all(_fid_key(e) in results[a].values for e in experts)]
    ranks = {e: list(np.argsort(np.argsort([_mean(results[a], _fid_key(e)) for a in arms])) + 1) for e in experts}
    rows = [(a, *[int(ranks[e][i]) for e in experts]) for i, a in enumerate(arms)]
    taus = []
    for i, e1 in enumerate(experts):
        for e2 in experts[i + 1:]:
            res = stats.kendalltau(ranks[e1], ranks[e2])
            taus.append((f"{e1} vs {e2}", f"{res.statistic:.2f}", f"{res.pvalue:.2g}", len(arms)))
    return rows, taus


def _context(base: IDVAEConfig, names: tuple[str, ...], device: str) -> tuple:
    """This process's images, classifier and feature networks (built once per process and reused by its runs;
    the classifier is trained once and cached on disk, so workers load it)."""
    def build() -> tuple:
        dev = torch.device(device)
        train_x, train_y = load_images(base.data, "train")
        test_x, test_y = load_images(base.data, "test")
        classifier, clf_acc = get_classifier(base.data, base.eval, device=dev)
        experts = build_experts(names, data=base.data, cfg=base.eval, device=dev, classifier=classifier)
        return train_x, train_y, test_x, test_y, classifier, clf_acc, experts

    return per_process("idvae", (base.data, base.eval, names, device), build)


def _train_and_evaluate(cfg: IDVAEConfig, context_names: tuple[str, ...], run_dir: str, preset: str, plan: Plan,
                        real_feats: dict[str, torch.Tensor], device: str, keep: bool) -> dict:
    """One arm x seed: train, then score under the feature networks of ``real_feats`` against those test
    features (one job of the reproduction; it runs in a worker process or in the caller's)."""
    names = tuple(real_feats)
    train_x, train_y, test_x, test_y, classifier, _, experts = _context(cfg, context_names, device)
    dev = torch.device(device)

    def monitor(model) -> dict:
        fake = experts["classifier"](generate(model, min(plan.samples, 1000), seed=99, device=dev))
        real = experts["classifier"](test_x[:min(plan.samples, 1000)])
        return {"fid_classifier": fid(real, fake)}

    sub = Run(run_dir, method="idvae", preset=preset)
    res = train(cfg, sub, device=dev, images=train_x, labels=train_y, progress=False,
                monitor=monitor if cfg.train.eval_every else None)
    ev = evaluate_model(res.model, cfg, {k: experts[k] for k in names}, test_images=test_x, test_labels=test_y,
                        real_features=dict(real_feats), classifier=classifier, device=dev, seed=1234 + cfg.train.seed)
    metrics = {_fid_key(e): v for e, v in ev["fid"].items()}
    metrics.update({f"precision_{e}": v for e, v in ev["precision"].items()})
    metrics.update({f"recall_{e}": v for e, v in ev["recall"].items()})
    metrics.update(recon_mse=np.asarray(ev["recon_mse_items"]), cond_acc=np.asarray(ev["cond_acc_items"]))
    return {"metrics": metrics, "seconds": res.seconds,
            "curve": [(h["step"], h["fid_classifier"]) for h in res.history if "fid_classifier" in h],
            "state": {k: v.detach().cpu() for k, v in res.model.state_dict().items()} if keep else None}


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    """Run the experiment in ``run.dir`` and return the (unwritten) report."""
    if preset not in PLANS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PLANS)}")
    plan = PLANS[preset]
    base: IDVAEConfig = PRESETS.build(preset, overrides)
    changes = {"eval.samples": plan.samples, "eval.inception_samples": max(plan.inception_samples, 2),
               "train.ckpt_every": 10 ** 9, "data.test_limit": plan.test}
    if plan.steps:
        changes["train.max_steps"] = base.train.max_steps if "train.max_steps" in " ".join(overrides) else plan.steps
    base = base.with_overrides(changes)
    run.save_config(base)
    report = Report(run, title="IDVAE", preset=preset,
                    paper="Munjal, Paul, Krishnan. Implicit Discriminator in Variational Autoencoder. 2019 "
                          "(arXiv 1909.13062)")
    t_start = time.time()
    dev = resolve_device(device)
    run.record_precision(Precision(base.train.precision, dev), quiet=True)   # the report's line; sub-runs log theirs
    names = tuple(e for e in base.eval.extractors if e != "inception" or plan.inception_samples)
    _, _, test_x, test_y, classifier, clf_acc, experts = _context(base, names, str(dev))
    # the test images' features, once: every run's FID compares against them
    real_feats = {name: ex(test_x[:min(plan.inception_samples if name == "inception" else plan.samples,
                                       test_x.shape[0])]) for name, ex in experts.items()}
    arms = _arms(base)
    jobs, labels, job_arms = [], [], []
    for arm, change in arms.items():
        for seed in plan.seeds:
            cfg = base.with_overrides({**change, "train.seed": seed})
            if plan.monitor_every and seed == plan.seeds[0] and arm in MAIN and "classifier" in experts:
                cfg = cfg.with_overrides({"train.eval_every": plan.monitor_every})
            feats = real_feats if arm in MAIN else {k: v for k, v in real_feats.items() if k != "inception"}
            jobs.append((cfg, names, str(run.dir / "runs" / f"{arm}-s{seed}"), preset, plan, feats,
                         str(dev), seed == plan.seeds[0]))
            labels.append(f"{arm}-s{seed}")
            job_arms.append(arm)
    workers = plan_workers(len(jobs), dev)
    outs = map_runs(_train_and_evaluate, jobs, workers=workers, names=labels, desc="idvae runs")
    results: dict[str, SeedResults] = {a: SeedResults() for a in arms}
    keep: dict[str, object] = {}
    curves: dict[str, list] = {}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    params: dict[str, int] = {}
    for (cfg, *_), arm, out in zip(jobs, job_arms, outs):
        seconds[arm].append(out["seconds"])
        results[arm].add(cfg.train.seed, out["metrics"])
        if out["state"] is not None:
            model = build(cfg).to(dev)
            model.load_state_dict(out["state"])
            keep[arm] = model.eval()
            curves[arm] = out["curve"]
    for arm in MAIN:
        params[arm] = count_parameters(build(base.with_overrides(arms[arm])))["total"]
    wall = time.time() - t_start

    # ------------------------------------------------------------------------------------------------- report
    specs = decide_claims(results, names, params)
    for spec in specs:
        report.claim(spec.claim, decision=spec.decisions, evidence=spec.evidence, reason=spec.reason)
    steps = base.train.max_steps or "the preset's epochs"
    report.text(
        f"**Scaled down.** Fashion-MNIST 28x28 instead of CelebA / CIFAR-10; the card's section-6 networks (trunk "
        f"Conv 1-{base.model.width}-{2 * base.model.width}, h = {base.model.hidden}, d = {base.model.latent}); "
        f"Adam lr {base.optim.lr}, beta1 {base.optim.beta1}, batch {base.optim.batch_size}, {steps} steps per run "
        f"(about {(base.train.max_steps or 0) * base.optim.batch_size / 60000:.2f} epochs); seeds {list(plan.seeds)} "
        f"for every arm; lambda_D = {base.loss.lambda_d}, gamma = {base.loss.gamma}. FID: {plan.samples} prior "
        f"samples against as many test images per cheap expert"
        + (f", {plan.inception_samples} for Inception (main arms only)" if plan.inception_samples else
           "; no Inception expert at this preset") +
        f". The Fashion-MNIST classifier (features, conditional accuracy) reaches {clf_acc:.1%} test accuracy. "
        f"Reconstruction error on {test_x.shape[0]} test images. The {len(jobs)} runs ran "
        + (f"{workers} at a time in worker processes that share the cores" if workers > 1 else "one after another")
        + f"; total wall time {wall:.0f} s.")
    report.section("Results")
    rows = []
    for arm, r in results.items():
        cells = [arm]
        for e in names:
            key = _fid_key(e)
            cells.append(r.estimate(key).pm(3) if key in r.values else "-")
        cells += [r.estimate("recon_mse").pm(4), f"{np.mean(r.values.get('precision_classifier', [math.nan])):.3f}/"
                  f"{np.mean(r.values.get('recall_classifier', [math.nan])):.3f}",
                  r.estimate("cond_acc").pm(3), f"{np.mean(seconds[arm]):.0f}"]
        rows.append(cells)
    report.table(["arm", *[f"FID {e}" for e in names], "test MSE", "P/R (classifier)", "label acc", "train s"],
                 rows, caption=f"Mean over {len(plan.seeds)} seeds ± the half-width of the 95% interval (Student t "
                               "over seeds for FID; items and seeds resampled for MSE and label accuracy).")
    rank_rows, taus = _kendall(results, names)
    report.section("Ensemble of experts: FID rankings per feature network")
    report.table(["arm", *[f"rank ({e})" for e in names]], rank_rows, caption="1 = lowest FID.")
    if taus:
        report.table(["networks", "Kendall tau", "p", "arms"], taus,
                     caption="Agreement of the rankings (1 = identical order).")
    report.table(["model", "parameters"], [(k, f"{v:,}") for k, v in params.items()],
                 caption="Identical trunk and decoder; VAE-GAN adds a second trunk, IDVAE one linear head.")
    _figures(report, keep, curves, test_x, test_y, dev)
    report.add_summary(results={a: r.as_dict() for a, r in results.items()}, params=params,
                       classifier_test_accuracy=clf_acc, wall_seconds=round(wall, 1), experts=list(names),
                       train_seconds=seconds, steps=base.train.max_steps, seeds=list(plan.seeds), workers=workers)
    return report


def _figures(report: Report, models: dict, curves: dict, test_x, test_y, dev) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essence.core.loop import eval_mode
    from essence.idvae.data import image_grid, to_model_range, to_uint8

    shown = [a for a in ("vae", "vaegan", "idvae", "cidvae") if a in models]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
    for ax, arm in zip(np.atleast_1d(axes), shown):
        m = models[arm]
        labels = torch.arange(64) // 8 % m.cfg.num_classes if m.conditional else None
        ax.imshow(image_grid(generate(m, 64, seed=7, labels=labels, device=dev), 8)[..., 0], cmap="gray")
        ax.set_title(arm + (" (row = class)" if m.conditional else ""))
        ax.axis("off")
    report.figure(fig, "samples", "Prior samples z ~ N(0, I) of each model (seed-0 runs, same z for all)")

    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
    x = test_x[:32]
    for ax, arm in zip(np.atleast_1d(axes), shown):
        m = models[arm]
        with eval_mode(m):
            rec = to_uint8(m.reconstruct(to_model_range(x.to(dev)), test_y[:32].to(dev) if m.conditional else None))
        both = torch.stack([x, rec.cpu()], 1).reshape(64, *x.shape[1:])
        ax.imshow(image_grid(both, 8)[..., 0], cmap="gray")
        ax.set_title(f"{arm}: x | G(mu(x))")
        ax.axis("off")
    report.figure(fig, "reconstructions", "Test images and their reconstructions, side by side")

    if "idvae" in models:
        m = models["idvae"]
        with eval_mode(m):
            _, mu, _ = m.encode(to_model_range(test_x[:8].to(dev)))
            t = torch.linspace(0, 1, 10, device=dev)[None, :, None]
            z = (mu[0::2, None] * (1 - t) + mu[1::2, None] * t).reshape(-1, mu.shape[1])
            imgs = to_uint8(m.decode(z)).cpu()
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.imshow(image_grid(imgs, 10)[..., 0], cmap="gray")
        ax.axis("off")
        report.figure(fig, "interpolations", "IDVAE: straight lines between the codes mu(x) of test-image pairs")

    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for arm, pts in curves.items():
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=arm)
        ax.set_xlabel("step")
        ax.set_ylabel("FID (classifier features)")
        ax.set_title("FID over training (seed 0)")
        ax.legend()
        report.figure(fig, "fid_over_training", "FID of prior samples under the classifier expert during training")
