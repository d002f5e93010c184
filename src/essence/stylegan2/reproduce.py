"""``essence stylegan2 reproduce``: the paper's claims at small scale on Fashion-MNIST (32 x 32), with a report.

Claims (Karras et al. 2019; the card's section 7 plan):

(a) weight demodulation normalises the output statistics: for N(0, 1) inputs and styles s ~ U(0.2, 3), each
    output map has std ~ 1 (within 10%) with demodulation, while without it the std grows with |s| (section 2.2;
    no training). The droplet part (AdaIN's feature-map spikes) is exploratory: peak-to-std ratios are shown,
    not decided.
(b) lazy R1 (every 16 minibatches) costs less D time than R1 on every minibatch (section 2.5), for the same FID
    where the plan trains the non-lazy arm (``r1_every`` seeds of the PL arm retrained with R1 on every
    minibatch for ``ablation_steps`` iterations: FID(lazy) - FID(every) at that iteration, on the same z, below
    10% of FID(every); bootstrap over images, and seeds where there are several). The time half is decided by
    the alternating timing blocks; the two arms' training seconds per iteration are reported beside it.
(c) path-length regularisation lowers PPL and the spread of |J_w^T y| (section 2.6).
(d) lower truncation psi raises precision and lowers recall (Kynkäänniemi et al. metrics, section 2.7).
(e) projection into W separates generated from real images (AUC > 0.5), less so without path length (section 5).
(f) FID falls over training (the curve).

Verdicts come from 95% intervals (essence.core.stats): per-item paired bootstraps where the arms score the same
items (same z, same real test images), seeds resampled too where there are several, Spearman for the curve.
The verdict logic is in :func:`decide_claims`, a function of the measured numbers (tested without training).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from essence.core.config import Config
from essence.core.parallel import map_runs, per_process, plan_workers
from essence.core.report import Report
from essence.core.runs import Run
from essence.core.runtime import resolve_device
from essence.core.stats import (
    Decision,
    Estimate,
    decide,
    difference,
    hierarchical_difference,
    mean_ci,
    paired_difference,
    spearman,
)
from essence.stylegan2.config import PRESETS, StyleGAN2Config

__all__ = ["reproduce", "PLANS", "Plan", "resolve_plan", "decide_claims", "demodulation_statistics", "time_lazy_r1",
           "peak_to_std"]

DEMOD_TOLERANCE = 0.10   # card section 7.1: per-map std within ~10% of 1
FID_MARGIN = 0.10        # claim (b): "the same FID" = lazy R1's FID at most 10% above the non-lazy arm's


@dataclass(frozen=True, kw_only=True)
class Plan(Config):
    """What one preset's reproduction trains and measures; ``--set plan.<field>=value`` changes a field for one
    run (e.g. ``plan.adain=true plan.r1_every=2 plan.ablation_steps=400`` adds the ablation arms), and the report
    records the plan it ran."""

    steps: int                       # iterations per training run
    seeds: tuple[int, ...]           # seeds of the main (PL) arm and of the no-PL arm
    evals: int                       # points on the FID curve (including step 0 and the end)
    n_gen: int                       # generated images per metric (final FID, precision / recall)
    n_real: int                      # real test images
    ppl_samples: int
    demod_trials: int                # random (w, s, x) draws for claim (a)
    r1_blocks: int                   # timing blocks of 16 D iterations each for claim (b)
    adain: bool                      # train the AdaIN (config A) arm for the exploratory droplet check
    proj_n: int = 0                  # claim (e): real and generated images projected per arm (0 = skip)
    proj_steps: int = 60             # projector steps
    r1_every: int = 0                # claim (b): seeds of the PL arm also trained with R1 every minibatch
    curve_n: int = 0                 # generated images per FID-curve point (0 = n_gen); the final FID uses n_gen
    ablation_steps: int = 0          # iterations of the adain / r1every arms (0 = steps); a FID-curve point of
                                     # the PL arm, where claim (b) compares lazy and non-lazy R1


PLANS = {
    "tiny": Plan(steps=4, seeds=(0,), evals=3, n_gen=64, n_real=64, ppl_samples=16, demod_trials=24,
                 r1_blocks=2, adain=True, proj_n=4, proj_steps=3, r1_every=1),
    # 5 timing blocks (~5 s more than 2): with 2, claim (b)'s t interval (1 degree of freedom) flipped between
    # reproduced and inconclusive across demos at the same ~2x speed-up
    "quick": Plan(steps=80, seeds=(0,), evals=6, n_gen=5000, n_real=10000, ppl_samples=500, demod_trials=200,
                  r1_blocks=5, adain=False),
    # main runs 800 iterations (FID curve every 200), both ablation arms 200 iterations: at 1,000 iterations
    # this plan took 1,912 s on a 2-core Zen 4 with AVX2 kernels only, over the 30 minutes of issue 10
    "standard": Plan(steps=800, seeds=(0, 1), evals=5, n_gen=10000, n_real=10000, ppl_samples=1000,
                     demod_trials=500, r1_blocks=5, adain=True, proj_n=32, proj_steps=60, curve_n=2000,
                     r1_every=2, ablation_steps=200),
    "paper": Plan(steps=781250, seeds=(0, 1, 2), evals=10, n_gen=50000, n_real=10000, ppl_samples=50000,
                  demod_trials=1000, r1_blocks=20, adain=True, proj_n=100, proj_steps=1000, r1_every=2),
}


# ------------------------------------------------------------------------------------ measurements
@torch.no_grad()
def demodulation_statistics(trials: int, *, channels: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Claim (a) without training: one modulated 3x3 conv, N(0, 1) inputs (trials, 64, 16, 16), N(0, 1)
    weights, styles s ~ U(0.2, 3) per input map. Returns per trial the mean |std_j - 1| over output maps with
    demodulation, and without it the mean output std and |s| / sqrt(I)."""
    from essence.stylegan2.model import modulated_conv2d

    g = torch.Generator().manual_seed(seed)
    dev_demod, std_plain, s_norm = [], [], []
    for _ in range(trials):
        x = torch.randn(1, channels, 16, 16, generator=g)
        w = torch.randn(channels, channels, 3, 3, generator=g) / math.sqrt(channels * 9)
        s = torch.rand(1, channels, generator=g) * 2.8 + 0.2
        y = modulated_conv2d(x, w, s, demodulate=True, fused=True)
        dev_demod.append(float((y.std(dim=(2, 3)) - 1).abs().mean()))
        y = modulated_conv2d(x, w, s, demodulate=False, fused=True)
        std_plain.append(float(y.std(dim=(2, 3)).mean()))
        s_norm.append(float(s.norm() / math.sqrt(channels)))
    return {"demod_deviation": np.array(dev_demod), "plain_std": np.array(std_plain), "s_norm": np.array(s_norm)}


def time_lazy_r1(cfg: StyleGAN2Config, blocks: int, device, interval: int = 16) -> dict[str, np.ndarray]:
    """Claim (b): seconds per D iteration (logistic loss on fake + real, Adam step) with R1 every ``interval``
    iterations (one extra step, gain ``interval``) vs R1 on every iteration; blocks of ``interval`` iterations,
    alternating the two arms so that machine load hits both alike."""
    from essence.stylegan2.loss import d_logistic, lazy_adam_params, r1_penalty
    from essence.stylegan2.model import Discriminator

    torch.manual_seed(0)
    m = cfg.model
    D = Discriminator(m).to(device)
    B = cfg.optim.batch_size
    fake = torch.randn(B, m.img_channels, m.resolution, m.resolution, device=device)
    real = torch.randn_like(fake)
    gamma = max(cfg.loss.r1_gamma, 1e-3)

    def block(lazy: bool) -> float:
        lr, betas = lazy_adam_params(cfg.optim.lr, (cfg.optim.beta1, cfg.optim.beta2), interval if lazy else 1)
        opt = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
        t = time.perf_counter()
        for i in range(interval):
            x = real.detach().requires_grad_(not lazy)
            real_logits = D(x)
            loss = d_logistic(D(fake), real_logits)
            if not lazy:
                loss = loss + r1_penalty(x, real_logits).mean() * gamma / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if lazy and i == 0:
                x = real.detach().requires_grad_(True)
                logits = D(x)
                reg = (logits.flatten() * 0 + r1_penalty(x, logits) * gamma / 2).mean() * interval
                opt.zero_grad(set_to_none=True)
                reg.backward()
                opt.step()
        return (time.perf_counter() - t) / interval

    block(True)   # warm-up
    lazy_s, full_s = [], []
    for _ in range(blocks):
        lazy_s.append(block(True))
        full_s.append(block(False))
    return {"lazy": np.array(lazy_s), "every": np.array(full_s)}


@torch.no_grad()
def peak_to_std(G, n: int = 64, seed: int = 0, device="cpu") -> dict[int, float]:
    """Exploratory droplet measure: mean over samples and maps of max|a| / std(a) of each synthesis feature map,
    per resolution (AdaIN's spikes give large ratios; section 2.1 of the paper)."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    _, feats = G.synthesis(G.mapping(z), noise_mode="const", fused=False, return_features=True)
    out: dict[int, list[float]] = {}
    for f in feats:
        f = f.float()
        ratio = f.abs().amax(dim=(2, 3)) / (f.std(dim=(2, 3)) + 1e-8)
        out.setdefault(f.shape[-1], []).append(float(ratio.mean()))
    return {res: float(np.mean(v)) for res, v in out.items()}


def auc_estimate(d_real: np.ndarray, d_gen: np.ndarray, *, seed: int = 0, n_resamples: int = 2000) -> Estimate:
    """AUC of the projection distance as a "real, not generated by this network" score, with a bootstrap 95%
    interval (real and generated images resampled independently)."""
    from essence.stylegan2.project import attribution_auc

    rng = np.random.default_rng(seed)
    d_real, d_gen = np.asarray(d_real, float), np.asarray(d_gen, float)
    boots = [attribution_auc(rng.choice(d_real, d_real.size), rng.choice(d_gen, d_gen.size))
             for _ in range(n_resamples)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return Estimate(attribution_auc(d_real, d_gen), float(lo), float(hi), int(min(d_real.size, d_gen.size)),
                    "bootstrap over real and generated images", "images")


def auc_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], *, seed: int = 0,
                   n_resamples: int = 2000) -> Estimate:
    """AUC(a) - AUC(b) for two networks' (real, generated) projection distances, bootstrap over images."""
    from essence.stylegan2.project import attribution_auc

    rng = np.random.default_rng(seed)
    arrs = [np.asarray(x, float) for x in (*a, *b)]
    boots = []
    for _ in range(n_resamples):
        r = [rng.choice(x, x.size) for x in arrs]
        boots.append(attribution_auc(r[0], r[1]) - attribution_auc(r[2], r[3]))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    value = attribution_auc(arrs[0], arrs[1]) - attribution_auc(arrs[2], arrs[3])
    return Estimate(value, float(lo), float(hi), int(min(x.size for x in arrs)),
                    "bootstrap over real and generated images", "images")


def fid_difference(real: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]], *, seed: int = 0,
                   n_resamples: int = 500) -> Estimate:
    """Mean over seeds of FID(a) - FID(b), where ``pairs[s] = (features_a, features_b)`` are two networks'
    features of images generated from the same z (row i of both from latent i). Bootstrap: seeds, the shared z
    (the same rows for both arms) and the real images are resampled in every draw. With one seed the interval
    covers image sampling only, not the spread between training runs."""
    from essence.metrics.fid import feature_statistics, frechet_distance

    if not pairs:
        raise ValueError("fid_difference needs at least one (a, b) pair of feature sets")
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"paired feature sets need the same z: got {tuple(a.shape)} and {tuple(b.shape)}")
    real, pairs = real.double(), [(a.double(), b.double()) for a, b in pairs]

    def fids(real_idx, seed_idx, gen_idx) -> np.ndarray:   # (seeds, 2): FID of a and of b per seed
        r = feature_statistics(real[real_idx])
        return np.array([[frechet_distance(*r, *feature_statistics(pairs[s][k][gen_idx])) for k in (0, 1)]
                         for s in seed_idx])

    def effect(f: np.ndarray) -> float:                    # mean over seeds of FID(a) - FID(b)
        return float(np.mean(f[:, 0] - f[:, 1]))

    rng = np.random.default_rng(seed)
    n_real, n_gen, n_seeds = real.shape[0], pairs[0][0].shape[0], len(pairs)
    full = fids(slice(None), range(n_seeds), slice(None))
    boots = [effect(fids(torch.from_numpy(rng.integers(0, n_real, n_real)), rng.integers(0, n_seeds, n_seeds),
                         torch.from_numpy(rng.integers(0, n_gen, n_gen)))) for _ in range(n_resamples)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    over = "seeds, generated images (same z) and real images" if n_seeds > 1 else \
        "generated images (same z) and real images; one seed"
    return Estimate(effect(full), float(lo), float(hi), n_gen, f"bootstrap over {over}",
                    "generated images", extra={"fid_a": full[:, 0].tolist(), "fid_b": full[:, 1].tolist()})


# -------------------------------------------------------------------------------------- verdict logic
def decide_claims(m: dict) -> dict[str, list[Decision]]:
    """The decisions of every claim from the measured numbers (keys below; a claim is skipped when its inputs
    are missing).

    - ``demod_deviation`` (trials,), ``plain_std`` (trials,), ``s_norm`` (trials,)             -> (a)
    - ``r1_lazy_s`` (blocks,), ``r1_every_s`` (blocks,)                                        -> (b)
    - ``fid_real`` (n_real, d) and ``fid_pairs`` [(lazy, every) generated features per seed, same z] -> (b)
    - ``ppl_log_pl`` / ``ppl_log_nopl`` (seeds, items), ``jcv_pl`` / ``jcv_nopl`` (seeds,)     -> (c)
    - ``prec_items`` {psi: (seeds, n_gen)}, ``rec_items`` {psi: (seeds, n_real)}              -> (d)
    - ``proj_pl`` / ``proj_nopl``: (real distances, generated distances)                       -> (e)
    - ``curve_steps`` / ``curve_fid`` (points,)                                                -> (f)
    """
    out: dict[str, list[Decision]] = {}
    if "demod_deviation" in m:
        dev = mean_ci(m["demod_deviation"], unit="trials")
        rho = spearman(m["s_norm"], m["plain_std"], unit="trials")
        out["a"] = [decide(dev, direction="less", margin=DEMOD_TOLERANCE), decide(rho, direction="greater")]
    if "r1_lazy_s" in m:
        out["b"] = [decide(paired_difference(m["r1_lazy_s"], m["r1_every_s"], unit="timing blocks"),
                           direction="less")]
        if "fid_pairs" in m:   # "for the same FID": lazy at most FID_MARGIN above the non-lazy arm
            est = fid_difference(m["fid_real"], m["fid_pairs"])
            out["b"].append(decide(est, direction="less", margin=FID_MARGIN * float(np.mean(est.extra["fid_b"]))))
    if "ppl_log_pl" in m:
        dec = [decide(hierarchical_difference(m["ppl_log_pl"], m["ppl_log_nopl"], unit="latent pairs"),
                      direction="less")]
        if "jcv_pl" in m:
            dec.append(decide(difference(m["jcv_pl"], m["jcv_nopl"], unit="seeds"), direction="less"))
        out["c"] = dec
    if "prec_items" in m:
        psis = sorted(m["prec_items"], reverse=True)        # 1.0, 0.7, 0.5
        hi, lo = psis[0], psis[-1]
        out["d"] = [decide(hierarchical_difference(m["prec_items"][lo], m["prec_items"][hi], unit="generated images"),
                           direction="greater"),
                    decide(hierarchical_difference(m["rec_items"][lo], m["rec_items"][hi], unit="real images"),
                           direction="less")]
    if "proj_pl" in m:
        out["e"] = [decide(auc_estimate(*m["proj_pl"]), direction="greater", margin=0.5),
                    decide(auc_difference(m["proj_pl"], m["proj_nopl"]), direction="greater")]
    if "curve_fid" in m:
        out["f"] = [decide(spearman(m["curve_steps"], m["curve_fid"], unit="curve points"), direction="less")]
    return out


# ---------------------------------------------------------------------------------------------- the run
def resolve_plan(preset: str, overrides=()) -> tuple[Plan, list[str]]:
    """The preset's :class:`Plan` with the ``plan.<field>=value`` overrides applied, and the other overrides."""
    if preset not in PLANS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PLANS)}")
    mine, rest = [], []
    for o in overrides:
        (mine if o.strip().startswith("plan.") else rest).append(o)
    try:
        plan = PLANS[preset].with_overrides([o.strip()[len("plan."):] for o in mine])
    except ValueError as err:
        raise ValueError(f"--set plan.*: {err} (plan fields: {', '.join(PLANS[preset].keys())})") from None
    return plan, rest


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    """Run the experiment in ``run.dir`` and return the (unwritten) report."""
    from essence.core.loop import Precision
    from essence.stylegan2.train import build_networks

    plan, overrides = resolve_plan(preset, overrides)
    base: StyleGAN2Config = PRESETS.build(preset, {"train.max_steps": plan.steps})
    base = base.with_overrides(list(overrides))
    steps = base.train.max_steps
    every = max(1, steps // (plan.evals - 1))
    base = base.with_overrides({"train.eval_every": every, "train.log_every": every,
                                "train.ckpt_every": steps})
    run.save_config(base)
    dev = resolve_device(device)
    report = Report(run, title="StyleGAN2", preset=preset,
                    paper="Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. Analyzing and Improving the Image "
                          "Quality of StyleGAN. CVPR 2020")
    report.precision = Precision(base.train.precision, dev).reason
    t_start = time.time()
    m: dict = {}

    # (a) no training
    demod = demodulation_statistics(plan.demod_trials, seed=base.train.seed)
    m.update(demod)
    # (b) timing
    r1 = time_lazy_r1(base, plan.r1_blocks, dev)
    m["r1_lazy_s"], m["r1_every_s"] = r1["lazy"], r1["every"]

    # the feature network (trained once and cached on disk, so worker processes load it) and the real features
    _, cls_acc, real, real_feats, _, _ = _context(base, plan, str(dev))
    psis = (1.0, 0.7, 0.5)
    # the ablation arms train ablation_steps iterations; claim (b) compares them with the PL arm's curve there
    short = min(plan.ablation_steps or steps, steps)
    if short % every:
        raise ValueError(f"the ablation arms' {short} iterations must be a multiple of the FID-curve spacing "
                         f"{every} (steps {steps}, {plan.evals} curve points)")
    jobs, labels = [], []
    for arm, changes in (("pl", {}), ("nopl", {"loss.pl_weight": 0.0}),
                         ("adain", {"model.style_block": "adain", "train.max_steps": short}),
                         ("r1every", {"loss.r1_interval": 1, "train.max_steps": short})):
        seeds = {"adain": plan.seeds[:1] if plan.adain else (), "r1every": plan.seeds[:plan.r1_every]}.get(
            arm, plan.seeds)
        for seed in seeds:
            cfg = base.with_overrides({**changes, "train.seed": seed})
            jobs.append((cfg, arm, plan, preset, str(run.dir / "runs" / f"{arm}_seed{seed}"), str(dev), psis,
                         short))
            labels.append(f"{arm}_seed{seed}")
    workers = plan_workers(len(jobs), dev)
    outs = map_runs(_train_and_score, jobs, workers=workers, names=labels, desc="stylegan2 runs")
    arms: dict[str, list[dict]] = {"pl": [], "nopl": [], "adain": [], "r1every": []}
    curve_steps, curve_fid = [], []
    prec_items = {p: [] for p in psis}
    rec_items = {p: [] for p in psis}
    for (cfg, arm, *_), out in zip(jobs, outs):
        rec = out["rec"]
        if "proj" in out:
            m[f"proj_{arm}"] = out["proj"]
        if arm == "pl":
            curve_steps += [s for s, _ in rec["curve"]]
            curve_fid += [f for _, f in rec["curve"]]
            for psi in psis:
                prec_items[psi].append(out["prec_items"][psi])
                rec_items[psi].append(out["rec_items"][psi])
            if out["G_ema"] is not None:
                G = build_networks(cfg)[2].to(dev)
                G.load_state_dict(out["G_ema"])
                _sample_figures(report, G.eval(), dev, psis)
        arms[arm].append(rec)
    m["ppl_log_pl"] = np.stack([r["ppl_log"] for r in arms["pl"]])
    m["ppl_log_nopl"] = np.stack([r["ppl_log"] for r in arms["nopl"]])
    m["jcv_pl"] = [r["jcv"] for r in arms["pl"]]
    m["jcv_nopl"] = [r["jcv"] for r in arms["nopl"]]
    m["prec_items"] = {p: np.stack(v) for p, v in prec_items.items()}
    m["rec_items"] = {p: np.stack(v) for p, v in rec_items.items()}
    m["curve_steps"], m["curve_fid"] = curve_steps, curve_fid
    if arms["r1every"]:   # the same seeds of the PL arm, lazy vs every minibatch, at the same iteration
        lazy = {o["rec"]["seed"]: o for (_, arm, *_), o in zip(jobs, outs) if arm == "pl"}
        every = [o for (_, arm, *_), o in zip(jobs, outs) if arm == "r1every"]
        m["fid_real"] = real_feats
        m["fid_pairs"] = [(lazy[o["rec"]["seed"]]["compare_feats"], o["compare_feats"]) for o in every]
        m["r1_compare"] = {"step": short, "seeds": [o["rec"]["seed"] for o in every],
                           "fid_lazy": [lazy[o["rec"]["seed"]]["rec"]["compare_fid"] for o in every],
                           "fid_every": [o["rec"]["compare_fid"] for o in every],
                           "s_per_it_lazy": [lazy[o["rec"]["seed"]]["rec"]["train_s_per_it"] for o in every],
                           "s_per_it_every": [o["rec"]["train_s_per_it"] for o in every]}
    decisions = decide_claims(m)
    wall = time.time() - t_start
    _write(report, base, plan, preset, m, decisions, arms, cls_acc, wall, dev, workers)
    return report


def _context(base: StyleGAN2Config, plan: Plan, device: str) -> tuple:
    """This process's feature network, real test images and their features / k-NN radii, and the training
    images (built once per process; the classifier is trained once and cached on disk)."""
    from essence.metrics.precision_recall import knn_radii
    from essence.stylegan2.data import load_fashion_mnist32
    from essence.stylegan2.evaluate import classifier_features_net, features_of

    def build() -> tuple:
        dev = torch.device(device)
        net, cls_acc = classifier_features_net(base.eval.classifier_epochs, dev)
        real = load_fashion_mnist32("test", base.data.path)[:plan.n_real]
        real_feats = features_of(net, real, device=dev)
        train_x = load_fashion_mnist32("train", base.data.path, base.data.limit)
        return net, cls_acc, real, real_feats, knn_radii(real_feats, base.eval.pr_k), train_x

    return per_process("stylegan2", (base.data, base.eval.classifier_epochs, base.eval.pr_k, plan.n_real, device),
                       build)


def _train_and_score(cfg: StyleGAN2Config, arm: str, plan: Plan, preset: str, run_dir: str, device: str,
                     psis: tuple[float, ...], compare_step: int) -> dict:
    """One arm x seed: train (with the FID curve), then the arm's metrics (one job of the reproduction; it runs
    in a worker process or in the caller's). Returns the record, the per-image precision / recall memberships
    (PL arm), the projection distances (first seed), the first PL seed's G_ema weights for the figures, and the
    generated images' features at ``compare_step`` (PL and r1every arms: claim (b) compares the two there)."""
    from essence.metrics.precision_recall import knn_radii, manifold_membership
    from essence.stylegan2.data import to_signed
    from essence.stylegan2.evaluate import (
        features_of,
        fid_from_features,
        generate_images,
        jacobian_lengths,
        ppl_summary,
        ppl_w,
    )
    from essence.stylegan2.project import feature_distance, project
    from essence.stylegan2.train import build_networks, train

    net, _, real, real_feats, real_radii, train_x = _context(cfg, plan, device)
    dev = torch.device(device)
    ecfg = cfg.eval.replace(n_gen=plan.n_gen, n_real=plan.n_real, ppl_samples=plan.ppl_samples)
    seed = cfg.train.seed

    def generated_features(G, n):   # the same z (seed 12345) at every curve point and in every arm
        fake = generate_images(G, n, seed=12345, device=dev)
        return features_of(net, fake, device=dev)

    compare: dict = {}
    peaks: list[tuple[int, dict[int, float]]] = []

    def fid_monitor(G, step):   # the curve (claim f, fewer images per point) and the droplet measure
        feats = generated_features(G, plan.curve_n or ecfg.n_gen)
        if step == compare_step and arm in ("pl", "r1every"):
            compare["feats"] = feats
        peaks.append((step, peak_to_std(G, device=dev)))
        return {"fid": fid_from_features(real_feats, feats)}

    sub = Run(run_dir, method="stylegan2", preset=preset)
    G0 = build_networks(cfg)[2].to(dev)
    fid0 = fid_monitor(G0, 0)["fid"]
    res = train(cfg, sub, device=dev, images=train_x, eval_fn=fid_monitor, progress=False)
    G = res.G_ema
    curve = [(0, fid0)] + [(h["step"], h["fid"]) for h in res.history if "fid" in h]
    rec = {"seed": seed, "steps": res.step, "seconds": res.seconds, "images_per_s": res.images_per_s,
           "curve": curve, "phase_seconds": res.phase_seconds, "peak_to_std": peaks[-1][1], "peak_curve": peaks,
           "train_s_per_it": sum(res.phase_seconds.values()) / max(res.step, 1)}
    rec["fid"] = curve[-1][1] if not plan.curve_n else fid_from_features(real_feats,
                                                                          generated_features(G, ecfg.n_gen))
    out: dict = {"rec": rec, "G_ema": None}
    if "feats" in compare:
        out["compare_feats"] = compare["feats"]
        rec["compare_fid"] = dict(curve)[compare_step]
    if arm in ("pl", "nopl"):
        d = ppl_w(G, net, plan.ppl_samples, epsilon=ecfg.ppl_epsilon, seed=777, device=dev)
        lengths = jacobian_lengths(G, min(512, plan.ppl_samples), seed=778, device=dev)
        rec.update(ppl=ppl_summary(d), ppl_log=np.log(np.maximum(d, 1e-12)),
                   jcv=float(lengths.std() / lengths.mean()))
    if arm in ("pl", "nopl") and plan.proj_n and seed == plan.seeds[0]:   # (e): first seed of each arm
        dist = feature_distance(net)
        real_t = to_signed(real[:plan.proj_n]).to(dev)
        gen_t = generate_images(G, plan.proj_n, seed=999, device=dev)
        out["proj"] = (project(G, real_t, dist, steps=plan.proj_steps)["distance"],
                       project(G, gen_t, dist, steps=plan.proj_steps)["distance"])
    if arm == "pl":
        out["prec_items"], out["rec_items"] = {}, {}
        for psi in psis:   # (d): same z for every psi
            fake = generate_images(G, plan.n_gen, psi=psi, seed=4242, device=dev)
            ff = features_of(net, fake, device=dev)
            out["prec_items"][psi] = manifold_membership(ff, real_feats, real_radii).double().numpy()
            out["rec_items"][psi] = manifold_membership(real_feats, ff, knn_radii(ff, cfg.eval.pr_k)).double().numpy()
            rec[f"precision_psi{psi}"] = float(out["prec_items"][psi].mean())
            rec[f"recall_psi{psi}"] = float(out["rec_items"][psi].mean())
            rec[f"fid_psi{psi}"] = fid_from_features(real_feats, ff)
        if seed == plan.seeds[0]:
            out["G_ema"] = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    return out


def _write(report, base, plan, preset, m, decisions, arms, cls_acc, wall, dev, workers=1) -> None:
    B = base.optim.batch_size
    mc = base.model
    preset_plan = PLANS[preset].to_dict()
    changed = {k: v for k, v in plan.to_dict().items() if preset_plan[k] != v}
    if changed:
        report.text(f"**Plan changed from the `{preset}` preset** (`--set plan.*`): "
                    + ", ".join(f"{k} = {v} (preset: {preset_plan[k]})" for k, v in changed.items()) + ".")
    report.text(
        f"**Scaled down.** Fashion-MNIST (60k training images, zero-padded to 32 x 32, grey, no x-flip) instead of "
        f"FFHQ 1024; config E/F architecture (skip G, residual D) with channels "
        f"{', '.join(str(min(mc.channel_base // r, mc.channel_max)) for r in (4, 8, 16, 32))} at 4/8/16/32 px, "
        f"z = w = {mc.z_dim}, {mc.mapping_layers} mapping layers (lr x{mc.mapping_lr_mul}); batch {B}, Adam "
        f"lr {base.optim.lr} betas ({base.optim.beta1}, {base.optim.beta2}) with lazy rescaling, R1 gamma "
        f"{base.loss.r1_gamma} every {base.loss.r1_interval}, path length weight {base.loss.pl_weight} every "
        f"{base.loss.pl_interval} (decay {base.loss.pl_decay}, batch shrink {base.loss.pl_batch_shrink}), style "
        f"mixing {base.loss.style_mixing}, G EMA half-life {base.train.ema_kimg} kimg; {base.train.max_steps} "
        f"iterations per run ({base.train.max_steps * B / 1000:.1f} kimg instead of 25,000 kimg); seeds "
        f"{list(plan.seeds)}. Metrics use the card's proxy: features of a small CNN trained on Fashion-MNIST "
        f"(test accuracy {cls_acc * 100:.1f}%) in place of Inception / VGG-16; FID between {plan.n_gen} generated "
        f"images (no truncation) and the first {plan.n_real} test images"
        + (f" (the FID curve uses {plan.curve_n} generated images per point, so its values sit above the final "
           "FID)" if plan.curve_n else "") + f"; precision/recall with k = "
        f"{base.eval.pr_k}; PPL in W at endpoints with epsilon {base.eval.ppl_epsilon} and the squared feature "
        f"distance instead of LPIPS (no VGG weights offline), {plan.ppl_samples} samples. Numbers are not "
        f"comparable with the paper's; only directions are checked. Total wall time: {wall:.0f} s"
        + (f", with {workers} training runs at a time in worker processes that share the cores." if workers > 1
           else "."))
    if preset == "quick":
        report.text("**Quick preset: a preview.** One seed and few iterations; claims (c) and (d) are decided "
                    "properly by the standard preset (two seeds per arm).")

    # (a)
    dd = m["demod_deviation"]
    report.claim("Weight demodulation normalises the output statistics: per-map std ~ 1 (within 10%) for any "
                 "style, while without demodulation it grows with |s| (section 2.2, 7.1)", decision=decisions["a"],
                 evidence=f"{len(dd)} random draws: mean |std - 1| with demodulation {dd.mean():.4f}; without, "
                          f"output std {m['plain_std'].min():.2f}..{m['plain_std'].max():.2f} for |s|/sqrt(I) "
                          f"{m['s_norm'].min():.2f}..{m['s_norm'].max():.2f}",
                 name="mean |std - 1| (demod) / Spearman(|s|, std) (no demod)", digits=3)
    # (b)
    lz, ev = m["r1_lazy_s"], m["r1_every_s"]
    same_fid = ""
    if "r1_compare" in m:
        c = m["r1_compare"]
        same_fid = (f"; trained with R1 on every minibatch (seeds {c['seeds']}, {c['step']} iterations), compared "
                    f"with the lazy PL arm at iteration {c['step']} on the same z ({len(m['fid_pairs'][0][0])} "
                    f"images): FID lazy {', '.join(f'{f:.1f}' for f in c['fid_lazy'])} vs every "
                    f"{', '.join(f'{f:.1f}' for f in c['fid_every'])} (margin +{FID_MARGIN:.0%} of the non-lazy "
                    f"FID); training seconds per iteration lazy "
                    f"{', '.join(f'{t:.3f}' for t in c['s_per_it_lazy'])} vs every "
                    f"{', '.join(f'{t:.3f}' for t in c['s_per_it_every'])} (runs beside another run in the pool)")
    report.claim("Lazy R1 (every 16 minibatches) costs less D time than R1 on every minibatch, for the same FID "
                 "(section 2.5" + ("" if same_fid else "; the 'same FID' half is not trained at this preset")
                 + ")", decision=decisions["b"],
                 evidence=f"seconds per D iteration: lazy {lz.mean():.3f}, every step {ev.mean():.3f} "
                          f"(x{ev.mean() / lz.mean():.2f}); {len(lz)} alternating blocks of 16 iterations" + same_fid,
                 name="lazy - every (s per D iteration; FID)", digits=4)
    # (c)
    pl, nopl = arms["pl"], arms["nopl"]
    report.claim("Path-length regularisation lowers PPL (log distance per latent pair) and the spread (CV) of "
                 "|J_w^T y| (section 2.6)", decision=decisions["c"],
                 evidence=f"PPL with PL {np.mean([r['ppl'] for r in pl]):.1f} vs without "
                          f"{np.mean([r['ppl'] for r in nopl]):.1f}; Jacobian CV {np.mean(m['jcv_pl']):.3f} vs "
                          f"{np.mean(m['jcv_nopl']):.3f}; FID {np.mean([r['fid'] for r in pl]):.1f} vs "
                          f"{np.mean([r['fid'] for r in nopl]):.1f}",
                 name="PL - no PL (mean log PPL distance; Jacobian CV)", digits=3)
    # (d)
    pr = {p: (m["prec_items"][p].mean(), m["rec_items"][p].mean()) for p in m["prec_items"]}
    report.claim("Lower truncation psi raises precision and lowers recall (psi 0.5 vs 1.0)", decision=decisions["d"],
                 evidence="; ".join(f"psi {p}: P {v[0]:.3f} R {v[1]:.3f}" for p, v in sorted(pr.items(),
                                                                                             reverse=True)),
                 name="psi 0.5 - psi 1.0 (precision; recall)", digits=3)
    # (e)
    if "e" in decisions:
        (dr, dg), (nr, ng) = m["proj_pl"], m["proj_nopl"]
        report.claim("Projection separates generated from real images (AUC > 0.5), less so without path-length "
                     "regularisation (section 5)", decision=decisions["e"],
                     evidence=f"{len(dr)} real + {len(dg)} generated images, {plan.proj_steps} projector steps, "
                              f"classifier-feature + pixel distance instead of LPIPS; median distance real "
                              f"{np.median(dr):.3f} vs generated {np.median(dg):.3f} (PL), {np.median(nr):.3f} vs "
                              f"{np.median(ng):.3f} (no PL)", name="AUC (PL); AUC(PL) - AUC(no PL)", digits=3)
    # (f)
    report.claim("FID falls over training", decision=decisions["f"],
                 evidence="FID by step: " + "; ".join(
                     f"seed {r['seed']}: " + ", ".join(f"{s}: {f:.1f}" for s, f in r["curve"]) for r in pl),
                 name="Spearman(step, FID)", digits=3)
    # exploratory droplets
    rows = []
    for arm in ("pl", "nopl", "adain", "r1every"):
        for r in arms[arm]:
            rows.append((arm, r["seed"], r["steps"],
                         *(f"{r['peak_to_std'].get(res, float('nan')):.2f}" for res in (8, 16, 32)),
                         f"{r['fid']:.1f}", f"{r['seconds']:.0f}"))
    report.section("Runs")
    report.table(["arm", "seed", "iterations", "peak/std 8px", "peak/std 16px", "peak/std 32px",
                  f"final FID ({plan.n_gen} images)", "train s"], rows,
                 caption="Exploratory (not decided): mean max|a|/std of the synthesis feature maps; AdaIN's "
                         "droplets would show as large ratios. 'adain' = StyleGAN1's AdaIN layer (config A); "
                         "'r1every' = the PL arm with R1 on every minibatch (non-lazy).")
    _figures(report, arms)
    report.add_summary(
        measured={"demod_deviation_mean": float(dd.mean()), "r1_lazy_s": lz.tolist(), "r1_every_s": ev.tolist(),
                  "curve_steps": list(map(int, m["curve_steps"])), "curve_fid": list(map(float, m["curve_fid"])),
                  "precision_recall": {str(p): list(map(float, v)) for p, v in pr.items()},
                  **({"r1_compare": m["r1_compare"]} if "r1_compare" in m else {})},
        arms={k: [{kk: vv for kk, vv in r.items() if kk != "ppl_log"} for r in v] for k, v in arms.items()},
        wall_seconds=round(wall, 1), workers=workers)


def _sample_figures(report, G, dev, psis) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essence.stylegan2.evaluate import generate_images
    fig, axes = plt.subplots(1, len(psis), figsize=(4 * len(psis), 4.2))
    for ax, psi in zip(axes, psis):
        img = generate_images(G, 36, psi=psi, seed=7, device=dev)
        ax.imshow(_grid(img, 6), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"psi = {psi}")
        ax.axis("off")
    report.figure(fig, "truncation_sweep", "Uncurated samples of the EMA generator (same z) at psi 1.0 / 0.7 / 0.5")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(_grid(style_mixing_grid(G, dev), 0), cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")
    report.figure(fig, "style_mixing", "Style mixing: row sources give the coarse styles (first 4 ws), column "
                                       "sources the rest; top-left cell blank")


def style_mixing_grid(G, device, rows: int = 4, cols: int = 4, cutoff: int = 4, seed: int = 11) -> torch.Tensor:
    """A (rows + 1) x (cols + 1) grid: row sources' ws[:cutoff] with column sources' ws[cutoff:]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        wr = G.mapping(torch.randn(rows, G.z_dim, generator=g).to(device))
        wc = G.mapping(torch.randn(cols, G.z_dim, generator=g).to(device))
        src_r = G.synthesis(wr, noise_mode="const")
        src_c = G.synthesis(wc, noise_mode="const")
        mixed = torch.cat([wr[:, None, :cutoff].expand(-1, cols, -1, -1),
                           wc[None, :, cutoff:].expand(rows, -1, -1, -1)], dim=2).reshape(rows * cols, G.num_ws, -1)
        mix = G.synthesis(mixed, noise_mode="const").reshape(rows, cols, *src_r.shape[1:])
    blank = -torch.ones_like(src_r[:1])
    top = torch.cat([blank, src_c])
    body = [torch.cat([src_r[i:i + 1], mix[i]]) for i in range(rows)]
    return torch.cat([top, *body]).float().cpu().reshape(rows + 1, cols + 1, *src_r.shape[1:])


def _grid(img: torch.Tensor, ncol: int) -> np.ndarray:
    """(N, C, H, W) or (R, C', C, H, W) -> a 2-D (grey) array tiled with a 1-px border."""
    if img.ndim == 5:
        R, Cc = img.shape[:2]
        img = img.reshape(R * Cc, *img.shape[2:])
        ncol = Cc
    n, c, h, w = img.shape
    nrow = math.ceil(n / ncol)
    out = -np.ones((nrow * (h + 1), ncol * (w + 1)))
    for i in range(n):
        r, cidx = divmod(i, ncol)
        out[r * (h + 1): r * (h + 1) + h, cidx * (w + 1): cidx * (w + 1) + w] = img[i].float().mean(0).numpy()
    return out


def _figures(report, arms) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, style in (("pl", "-o"), ("nopl", "--s"), ("adain", ":^"), ("r1every", "-.x")):
        for r in arms[arm]:
            ax.plot([s for s, _ in r["curve"]], [f for _, f in r["curve"]], style, label=f"{arm} seed {r['seed']}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("FID (classifier features)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    report.figure(fig, "fid_curve", "FID of the EMA generator over training (claim f)")

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, style in (("pl", "-o"), ("nopl", "--s"), ("adain", ":^"), ("r1every", "-.x")):
        for r in arms[arm]:
            res = max(r["peak_curve"][-1][1])
            ax.plot([s for s, _ in r["peak_curve"]], [p[res] for _, p in r["peak_curve"]], style,
                    label=f"{arm} seed {r['seed']}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean max|a| / std, last synthesis layer")
    ax.legend(fontsize=7)
    report.figure(fig, "droplets", "Exploratory droplet measure over training: AdaIN (config A) vs weight "
                                   "demodulation; spikes would show as a rising ratio")

