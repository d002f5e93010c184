"""``essence deep-salience reproduce``: the paper's checkable claims at small scale on rendered Bach chorales.

The protocol (issue 13, DESIGN.md "Reproduction protocol"):

* **Out-of-domain evaluation.** Training renders use TimGM6mb and the training instrument pools; in the
  ``standard`` preset the validation and test renders use another soundfont (FluidR3, Debian
  ``fluid-soundfont-gm``) and instruments that no training pool contains, and the test set is the whole test
  split (its 32 four-voice chorales, two 8 s clips each).
* **Same tuning for every system.** Each system is a decoder with one threshold tau, swept over 0.1..0.9 on the
  validation clips by the same rule (mean Accuracy for multi-f0, Overall Accuracy for melody):
  our networks, the released Keras weights, basic-pitch's frame posteriorgram and its note output, harmonic-sum
  salience peak picking, the log-CQT (h = 1) and, for melody, the highest peak of the multi-f0 salience.
* **Verdicts from statistics.** Per-clip test scores; trained arms over ``train.seeds`` seeds. Every claim is a
  difference with a 95% interval from :func:`essence.core.stats.hierarchical_difference` (clips and seeds
  resampled) and a verdict from :func:`essence.core.stats.decide`. :func:`claim_decisions` holds that logic
  and takes the measured numbers, so tests can feed numbers that flip each verdict.

Numbers are domain-specific (synthetic GM timbres, exact labels) and are compared with each other, not with the
paper's tables.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from essence.core import stats
from essence.core.loop import Precision
from essence.core.report import Report
from essence.core.runs import Run
from essence.core.runtime import default_num_threads, resolve_device
from essence.deep_salience.config import PRESETS, DeepSalienceConfig
from essence.deep_salience.data import build_splits
from essence.deep_salience.decode import decode
from essence.deep_salience.evaluate import (
    basic_pitch_available,
    basic_pitch_frame_decoder,
    basic_pitch_note_decoder,
    basic_pitch_outputs,
    harmonic_sum_saliences,
    hcqt_saliences,
    highest_peak_decoder,
    per_clip,
    salience_decoder,
    sweep_system,
)
from essence.deep_salience.hcqt import HARMONICS
from essence.deep_salience.model import load_keras_h5
from essence.deep_salience.train import salience_of, save_model, train

__all__ = ["reproduce", "find_released_weights", "missing_comparisons", "claim_decisions", "Arm"]

PAPER = ("Bittner, McFee, Salamon, Li, Bello. Deep Salience Representations for F0 Estimation in Polyphonic "
         "Music. ISMIR 2017")
MP = ("Accuracy", "Precision", "Recall", "Chroma Accuracy")
MEL = ("Overall Accuracy", "Raw Pitch Accuracy", "Raw Chroma Accuracy", "Voicing Recall", "Voicing False Alarm")

# system names (keys of the measured-number dicts that claim_decisions reads)
HCQT_NET = "CNN on HCQT (6 harmonics)"
CQT_NET = "CNN on CQT (h = 1 only)"
HSUM = "harmonic-sum salience peaks (no CNN)"
LOGCQT = "log-CQT peaks (h = 1, no CNN)"
BP_FRAME = "basic-pitch 0.4.0, frame posteriorgram"
BP_NOTES = "basic-pitch 0.4.0, note events"
REL_MF0 = "released multif0.h5 (full width)"
MEL_NET = "CNN melody model (argmax + tau)"
MEL_PEAK = "highest multi-f0 peak (our HCQT CNN)"
MEL_HSUM = "highest harmonic-sum salience peak (no CNN)"
REL_MEL = "released melody2.h5 (full width)"
COMPETITIVE_MARGIN = -0.02   # "matches or beats": the interval of ours - theirs must lie above -2 points


def find_released_weights(name: str) -> Path | None:
    """``<name>.h5`` from $ESSENCE_DEEP_SALIENCE_WEIGHTS or ``<repo>/../shared/deep_salience/weights``."""
    roots = [os.environ.get("ESSENCE_DEEP_SALIENCE_WEIGHTS", "")]
    here = Path(__file__).resolve()
    roots += [str(p / "shared" / "deep_salience" / "weights") for p in here.parents[3:5]]
    for root in roots:
        if root and (Path(root) / f"{name}.h5").is_file():
            return Path(root) / f"{name}.h5"
    return None


def missing_comparisons(*, released_multif0: bool, released_melody: bool, basic_pitch: bool) -> list[str]:
    """Sentences naming the reference systems that could not be scored and how to add them (the report and
    summary.json state them: a comparison that did not run must not vanish from the claim table unnoticed)."""
    where = ("set `ESSENCE_DEEP_SALIENCE_WEIGHTS` to the folder holding the released Keras files "
             "(`multif0.h5`, `melody2.h5` from rabitt/ismir2017-deepsalience)")
    out = []
    if not released_multif0:
        out.append("the released multif0.h5 was not found, so the claim 'ours matches or beats the released "
                   "full-width model' was not checked" + ("" if released_melody else
                                                          " and the melody table has no released melody2.h5 row"))
    elif not released_melody:
        out.append("the released melody2.h5 was not found, so the melody table has no row for it")
    if out:
        out[-1] += f": {where}"
    if not basic_pitch:
        out.append("basic-pitch is not installed, so the comparison with it was not run "
                   "(scripts/install.d/deep_salience.sh installs it)")
    return out


@dataclass
class Arm:
    """One system's test scores: ``scores[metric]`` is (seeds, clips); ``taus`` the validation-tuned tau per
    seed; ``val`` the validation sweep table of the first seed."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    taus: list[float] = field(default_factory=list)
    val: dict[float, float] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, scores: dict[str, np.ndarray], tau: float, val: dict | None = None) -> None:
        for k, v in scores.items():
            self.scores[k] = np.vstack([self.scores[k], v[None]]) if k in self.scores else v[None].copy()
        self.taus.append(float(tau))
        if val is not None and not self.val:
            self.val = val

    def estimate(self, metric: str) -> stats.Estimate:
        return stats.hierarchical_mean(self.scores[metric], unit="clips")


def _tuned(arm: Arm, decoder_val, decoder_test, val_items, test_items, task: str) -> float:
    tau, table = sweep_system(decoder_val, val_items, task)
    arm.add(per_clip(decoder_test, test_items, task, tau), tau, table)
    return tau


def claim_decisions(mf0: dict[str, Arm], mel: dict[str, Arm]) -> list[tuple[str, list[stats.Decision], str]]:
    """The claims and their decisions from measured per-clip scores (the arms' (seeds, clips) matrices).

    Returns (claim, decisions, evidence) for every claim whose systems were measured. Effects are differences
    of per-clip scores on the same test clips (clips and seeds resampled).
    """
    def diff(a: np.ndarray, b: np.ndarray, seed: int = 0) -> stats.Estimate:
        return stats.hierarchical_difference(a, b, unit="clips", seed=seed)

    out: list[tuple[str, list[stats.Decision], str]] = []
    acc = {k: v.scores["Accuracy"] for k, v in mf0.items()}
    if HCQT_NET in acc and CQT_NET in acc:
        out.append(("Harmonic stacking helps: the same network on the HCQT beats it on a single-harmonic CQT "
                    "(multi-f0 Accuracy)", [stats.decide(diff(acc[HCQT_NET], acc[CQT_NET]))],
                    f"Accuracy HCQT {acc[HCQT_NET].mean():.3f} vs CQT {acc[CQT_NET].mean():.3f}"))
    if HCQT_NET in acc and HSUM in acc:
        out.append(("The learned salience beats harmonic-sum salience peak picking on the same HCQT (no CNN)",
                    [stats.decide(diff(acc[HCQT_NET], acc[HSUM]))],
                    f"Accuracy CNN {acc[HCQT_NET].mean():.3f} vs harmonic sum {acc[HSUM].mean():.3f}"))
    h = mf0.get(HCQT_NET)
    if h is not None and "Accuracy@0.1" in h.extra and "Accuracy@0.9" in h.extra:
        lo, hi = h.extra["Accuracy@0.1"], h.extra["Accuracy@0.9"]
        out.append(("Accuracy vs tau peaks at an intermediate threshold: the validation-tuned tau beats both ends "
                    "of the sweep (0.1 and 0.9) on the test clips",
                    [stats.decide(diff(acc[HCQT_NET], lo)), stats.decide(diff(acc[HCQT_NET], hi, seed=1))],
                    f"test Accuracy at tuned tau {acc[HCQT_NET].mean():.3f}, at 0.1 {lo.mean():.3f}, at 0.9 "
                    f"{hi.mean():.3f}"))
    m = mel.get(MEL_NET)
    if m is not None and h is not None:
        out.append(("A single line is easier: melody RPA is above the multi-f0 recall on the same clips",
                    [stats.decide(diff(m.scores["Raw Pitch Accuracy"], h.scores["Recall"]))],
                    f"melody RPA {m.scores['Raw Pitch Accuracy'].mean():.3f} vs multi-f0 recall "
                    f"{h.scores['Recall'].mean():.3f}"))
    if m is not None and MEL_PEAK in mel:
        p = mel[MEL_PEAK]
        out.append(("The melody model beats the multi-f0 model's highest peak as a melody (Overall Accuracy, "
                    "same clips, tau tuned for each)",
                    [stats.decide(diff(m.scores["Overall Accuracy"], p.scores["Overall Accuracy"]))],
                    f"OA melody model {m.scores['Overall Accuracy'].mean():.3f} vs highest multi-f0 peak "
                    f"{p.scores['Overall Accuracy'].mean():.3f}; RPA {m.scores['Raw Pitch Accuracy'].mean():.3f} "
                    f"vs {p.scores['Raw Pitch Accuracy'].mean():.3f}"))
    if m is not None and MEL_HSUM in mel:
        b = mel[MEL_HSUM]
        out.append(("The CNN melody beats a non-learned salience melody (the highest harmonic-sum peak above tau; "
                    "paper: Melodia, Bosch & Gomez)",
                    [stats.decide(diff(m.scores["Overall Accuracy"], b.scores["Overall Accuracy"]))],
                    f"OA {m.scores['Overall Accuracy'].mean():.3f} vs {b.scores['Overall Accuracy'].mean():.3f}"))
    if HCQT_NET in acc and REL_MF0 in acc:
        out.append(("A small network trained on the rendered chorales matches or beats the released full-width "
                    f"multif0 model on held-out renders (ours - released > {COMPETITIVE_MARGIN:+.2f} Accuracy)",
                    [stats.decide(diff(acc[HCQT_NET], acc[REL_MF0]), margin=COMPETITIVE_MARGIN)],
                    f"Accuracy ours {acc[HCQT_NET].mean():.3f} vs released {acc[REL_MF0].mean():.3f}"))
    bps = [k for k in (BP_FRAME, BP_NOTES) if k in acc]
    if HCQT_NET in acc and bps:
        out.append(("Where ours stands against basic-pitch (not a claim of the paper, which predates it): "
                    f"ours - basic-pitch > {COMPETITIVE_MARGIN:+.2f} Accuracy, for its frame posteriorgram and its "
                    "notes, each tuned on validation",
                    [stats.decide(diff(acc[HCQT_NET], acc[k], seed=i), margin=COMPETITIVE_MARGIN)
                     for i, k in enumerate(bps)],
                    "; ".join(f"{k}: {acc[k].mean():.3f}" for k in bps) + f"; ours {acc[HCQT_NET].mean():.3f}"))
    return out


def _table(report: Report, arms: dict[str, Arm], keys, caption: str) -> None:
    rows = []
    for name, arm in arms.items():
        n_seeds = arm.scores[keys[0]].shape[0]
        rows.append((name, *[arm.estimate(k).format(3) for k in keys],
                     ", ".join(f"{t:.1f}" for t in arm.taus), n_seeds))
    report.table(["system", *[f"{k} [95% CI]" for k in keys], "tau (val)", "seeds"], rows, caption=caption)


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    cfg: DeepSalienceConfig = PRESETS.build(preset, overrides)
    run.save_config(cfg)
    dev = str(resolve_device(device))
    if dev == "cpu":
        torch.set_num_threads(default_num_threads())
    progress = preset != "tiny"
    report = Report(run, title="Deep Salience", paper=PAPER, preset=preset, method="deep_salience")
    t_start = time.time()
    dc, tc = cfg.data, cfg.train
    train_items, val_items, test_items = build_splits(dc, device=dev, progress=progress)
    t_data = time.time() - t_start
    secs = lambda items: sum(len(i.audio) for i in items) / 22050  # noqa: E731
    seeds = [tc.seed + k for k in range(tc.seeds)]
    full = preset != "tiny"

    def sal(model, items, chans=None, frames=1024):
        return salience_of(model, items, chans, dev, frames=frames, precision=tc.precision)

    report.section("Setup")
    wide = cfg.model.widths == (128, 64, 64, 64, 8)
    held_out = dc.eval_instruments == "held_out"
    eval_sf = dc.eval_soundfont or dc.soundfont or "TimGM6mb"
    report.text(
        f"Data: Bach chorales from the music21 corpus (fixed split by chorale). Training: {len(train_items)} "
        f"renders ({secs(train_items):.0f} s) with {dc.soundfont or 'TimGM6mb'}, random instruments from the "
        f"training pools, tempo, transposition and velocity (augment: {dc.augment}). Validation / test: "
        f"{len(val_items)} / {len(test_items)} clips from {dc.n_validation} / {dc.n_test} chorales "
        f"({secs(val_items):.0f} s / {secs(test_items):.0f} s) "
        f"rendered with {eval_sf}, "
        + ("instruments drawn from pools disjoint from the training pools (out of domain)" if held_out else
           "the Bach10 instruments at 90 BPM (the training pools contain them: in-domain timbres)")
        + f"; training clips cropped to {dc.max_seconds or 'full'} s, validation / test clips "
        f"{dc.eval_seconds or dc.max_seconds or 'full'} s"
        + (f" ({dc.eval_segments} consecutive clips per chorale: clips of one chorale share its instruments and "
           f"tempo, so the intervals over clips are somewhat optimistic)" if dc.eval_segments > 1 else "")
        + ". Labels are exact (from the notes).\n\n"
        f"Network: the paper's layer list with widths {cfg.model.widths}"
        f"{'' if wide else ' (reduced from 128-64-64-64-8 so that training fits the CPU budget)'}; multi-f0: "
        f"{tc.steps_per_epoch} steps x up to {tc.max_epochs} epochs (early stopping {tc.early_stopping}), melody: "
        f"up to {tc.melody_epochs} epochs (early stopping {tc.melody_early_stopping})"
        f"{', warm-started from the multi-f0 model of the same seed' if tc.warm_start else ''}; batch "
        f"{cfg.optim.batch_size} of 360x50 patches, Adam lr {cfg.optim.lr:g} (paper 1e-3), BatchNorm momentum "
        f"{cfg.model.bn_momentum:g} (torch convention; Keras' 0.99 = 0.01), output bias "
        f"{'at the logit of the positive rate' if cfg.model.output_prior else f'{cfg.model.output_bias:g}'}, "
        f"{len(seeds)} training seed(s) {seeds}; precision {Precision(tc.precision, dev).reason}.\n\n"
        "Tuning: every system (ours, the released weights, basic-pitch's frame posteriorgram and notes, the "
        "non-learned baselines) gets one threshold tau swept over 0.1..0.9 on the validation clips, maximising "
        "mean Accuracy (multi-f0) or Overall Accuracy (melody); ties go to the tau nearest 0.3. Intervals: 95%, "
        f"bootstrap over the {len(test_items)} test clips and the seeds (essence.core.stats). Data preparation "
        f"took {t_data:.0f} s; device {dev}.")

    mf0: dict[str, Arm] = {}
    mel: dict[str, Arm] = {}
    losses = []
    sal_example = None
    for seed in seeds:
        nets = {}
        for label, harmonics in ((HCQT_NET, HARMONICS), (CQT_NET, (1.0,))):
            c = cfg.with_overrides({"model.harmonics": harmonics, "train.seed": seed})
            chans = c.model.channels if len(harmonics) < 6 else None
            tag = "hcqt" if len(harmonics) == 6 else "cqt"
            res = train(c, train_items, val_items, device=dev, run=run, name=f"multif0-{tag}-s{seed}",
                        progress=progress)
            sv, st = (sal(res.model, items, chans) for items in (val_items, test_items))
            arm = mf0.setdefault(label, Arm())
            tau = _tuned(arm, salience_decoder(sv, "multif0"), salience_decoder(st, "multif0"), val_items,
                         test_items, "multif0")
            losses.append((f"multi-f0 {tag}", seed, res))
            nets[tag] = (res, sv, st)
            if seed == seeds[0]:
                save_model(run.checkpoints_dir / f"multif0-{tag}.safetensors", res.model, c, threshold=tau)
            if tag == "hcqt":
                for end in (0.1, 0.9):
                    s = per_clip(salience_decoder(st, "multif0"), test_items, "multif0", end)["Accuracy"]
                    arm.extra[f"Accuracy@{end}"] = (np.vstack([arm.extra[f"Accuracy@{end}"], s[None]])
                                                    if f"Accuracy@{end}" in arm.extra else s[None])
                if sal_example is None:
                    sal_example = (st[0], tau)
        # melody: the soprano line, optionally warm-started from this seed's multi-f0 network
        res_h, sv_h, st_h = nets["hcqt"]
        mc = cfg.with_overrides({"train.task": "melody", "train.seed": seed})
        res_m = train(mc, train_items, val_items, device=dev, run=run, name=f"melody-s{seed}", progress=progress,
                      init=res_h.model if tc.warm_start else None, max_epochs=tc.melody_epochs,
                      early_stopping=tc.melody_early_stopping)
        losses.append(("melody", seed, res_m))
        mv, mt = (sal(res_m.model, items) for items in (val_items, test_items))
        tau_m = _tuned(mel.setdefault(MEL_NET, Arm()), salience_decoder(mv, "melody"),
                       salience_decoder(mt, "melody"), val_items, test_items, "melody")
        if seed == seeds[0]:
            save_model(run.checkpoints_dir / "melody-hcqt.safetensors", res_m.model, mc, threshold=tau_m)
        _tuned(mel.setdefault(MEL_PEAK, Arm()), highest_peak_decoder(sv_h), highest_peak_decoder(st_h), val_items,
               test_items, "melody")

    # ---- systems without training seeds ------------------------------------------------------------------
    hv, ht = harmonic_sum_saliences(val_items), harmonic_sum_saliences(test_items)
    _tuned(mf0.setdefault(HSUM, Arm()), salience_decoder(hv, "multif0"), salience_decoder(ht, "multif0"),
           val_items, test_items, "multif0")
    _tuned(mel.setdefault(MEL_HSUM, Arm()), highest_peak_decoder(hv), highest_peak_decoder(ht), val_items,
           test_items, "melody")
    lv, lt = hcqt_saliences(val_items), hcqt_saliences(test_items)
    _tuned(mf0.setdefault(LOGCQT, Arm()), salience_decoder(lv, "multif0"), salience_decoder(lt, "multif0"),
           val_items, test_items, "multif0")
    if basic_pitch_available() and full:
        bv, bt = basic_pitch_outputs(val_items), basic_pitch_outputs(test_items)
        _tuned(mf0.setdefault(BP_FRAME, Arm()), basic_pitch_frame_decoder(bv), basic_pitch_frame_decoder(bt),
               val_items, test_items, "multif0")
        _tuned(mf0.setdefault(BP_NOTES, Arm()), basic_pitch_note_decoder(bv, val_items),
               basic_pitch_note_decoder(bt, test_items), val_items, test_items, "multif0")
    released_default = {}
    released_mf0 = find_released_weights("multif0")
    if released_mf0 is not None and full:
        orig = load_keras_h5(released_mf0, task="multif0")
        ov, ot = (sal(orig, items, frames=512) for items in (val_items, test_items))
        _tuned(mf0.setdefault(REL_MF0, Arm()), salience_decoder(ov, "multif0"), salience_decoder(ot, "multif0"),
               val_items, test_items, "multif0")
        released_default = per_clip(salience_decoder(ot, "multif0"), test_items, "multif0", 0.3)
    released_mel = find_released_weights("melody2")
    if released_mel is not None and full:
        orig_m = load_keras_h5(released_mel, task="melody")
        ov, ot = (sal(orig_m, items, frames=512) for items in (val_items, test_items))
        _tuned(mel.setdefault(REL_MEL, Arm()), salience_decoder(ov, "melody"), salience_decoder(ot, "melody"),
               val_items, test_items, "melody")

    missing = missing_comparisons(released_multif0=REL_MF0 in mf0, released_melody=REL_MEL in mel,
                                  basic_pitch=BP_FRAME in mf0) if full else []
    for m in missing:
        warnings.warn(f"deep-salience reproduce: {m}", stacklevel=2)

    # ---- report ----------------------------------------------------------------------------------------
    report.section("Multi-f0 on the test clips (mir_eval.multipitch, mean over clips)")
    _table(report, mf0, MP, "Mean over test clips (and seeds) with 95% intervals; tau tuned on validation")
    if released_default:
        report.text("The released multif0.h5 at its release default tau = 0.3 (untuned): "
                    + ", ".join(f"{k} {stats.mean_ci(released_default[k]).format(3)}" for k in MP) + ".")
    h = mf0[HCQT_NET]
    sweep = h.val
    report.table(["tau", "validation Accuracy (HCQT CNN, first seed)"],
                 [(t, f"{a:.3f}") for t, a in sweep.items()], caption="The validation sweep that chose tau")
    if sal_example is not None:
        _figures(report, sweep, test_items[0], *sal_example)
    report.section("Melody (soprano) on the test clips (mir_eval.melody, mean over clips)")
    _table(report, mel, MEL, "Mean over test clips (and seeds) with 95% intervals; tau tuned on validation")
    report.table(["model", "seed", "steps", "best validation loss", "constant predictor (positive rate)",
                  "positive rate"],
                 [(name, seed, r.steps, f"{r.best_val_loss:.4f}", f"{r.const_val_loss:.4f}", f"{r.positive_rate:.4f}")
                  for name, seed, r in losses],
                 caption="Validation loss against the best constant predictor: a model below it has learned")

    for claim, decisions, evidence in claim_decisions(mf0, mel):
        report.claim(claim, decision=decisions, evidence=evidence, name="difference")
    if missing:
        report.text("**Comparisons not run on this machine:** " + "; ".join(missing) + ".")
    report.text("Not checked here: the blurred-vs-hard target ablation and the input-BatchNorm ablation (set "
                "`train.blur=false` or `model.input_bn=false` with `--set` to run them).")
    report.add_summary(
        multif0={k: {m: float(a.scores[m].mean()) for m in MP} | {"tau": a.taus} for k, a in mf0.items()},
        melody={k: {m: float(a.scores[m].mean()) for m in MEL} | {"tau": a.taus} for k, a in mel.items()},
        per_clip_accuracy={k: a.scores["Accuracy"].tolist() for k, a in mf0.items()},
        per_clip_melody_oa={k: a.scores["Overall Accuracy"].tolist() for k, a in mel.items()},
        validation_loss={f"{n} s{s}": {"best": r.best_val_loss, "constant": r.const_val_loss} for n, s, r in losses},
        missing_comparisons=missing,
        seconds_data=t_data, seconds_total=time.time() - t_start, test_clips=len(test_items), seeds=seeds)
    return report


def _figures(report: Report, sweep: dict, item, salience: np.ndarray, tau: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(list(sweep), list(sweep.values()), marker="o", label="Accuracy (validation)")
    ax.set_xlabel("threshold tau")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("multi-f0 validation sweep (HCQT CNN)")
    report.figure(fig, "threshold_sweep", "Validation Accuracy against tau; the best tau is used on the test clips")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    n = min(salience.shape[1], 700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes[0].imshow(item.target("multif0")[:, :n], origin="lower", aspect="auto", cmap="magma")
        axes[1].imshow(salience[:, :n], origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1)
    _, est = decode(salience[:, :n], "multif0", tau)
    tt = np.concatenate([np.full(len(f), i) for i, f in enumerate(est)])
    ff = np.concatenate(est)
    if len(ff):
        axes[1].scatter(tt, 60 * np.log2(ff / 32.7), s=0.3, c="cyan")
    axes[0].set_title(f"target ({item.name})")
    axes[1].set_title(f"predicted salience + peaks (tau {tau:.1f})")
    for ax in axes:
        ax.set_xlabel("frame")
    axes[0].set_ylabel("bin (20 cents, from 32.7 Hz)")
    report.figure(fig, "salience_example", "A test clip: blurred target and the HCQT network's salience")
