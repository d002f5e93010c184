"""``essence deep-salience reproduce``: the paper's checkable claims at small scale on rendered Bach chorales.

Trains the network on multi-f0 (HCQT input, and the same network on a single-harmonic CQT) and on melody,
tunes tau on validation chorales, and scores everything on test chorales with mir_eval beside the offline
baselines: peak picking on the HCQT itself (no CNN), basic-pitch (ONNX) for multi-f0, pyin for melody, and the
original released weights. Numbers are domain-specific (synthetic GM timbres, exact labels) and are compared
with each other, not with the paper's tables.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from essence.core.loop import Precision
from essence.core.report import NOT_REPRODUCED, PARTLY, REPRODUCED, Report
from essence.core.runs import Run
from essence.core.runtime import resolve_device
from essence.deep_salience.config import PRESETS, DeepSalienceConfig
from essence.deep_salience.data import build_split
from essence.deep_salience.decode import decode
from essence.deep_salience.evaluate import (
    basic_pitch_available,
    basic_pitch_multif0,
    hcqt_saliences,
    pyin_melody,
    score_estimates,
    score_saliences,
)
from essence.deep_salience.hcqt import HARMONICS
from essence.deep_salience.model import load_keras_h5
from essence.deep_salience.train import salience_of, save_model, train, tune_threshold

__all__ = ["reproduce", "find_released_weights"]

PAPER = ("Bittner, McFee, Salamon, Li, Bello. Deep Salience Representations for F0 Estimation in Polyphonic "
         "Music. ISMIR 2017")
MP = ("Accuracy", "Precision", "Recall", "Chroma Accuracy", "Total Error")
MEL = ("Overall Accuracy", "Raw Pitch Accuracy", "Raw Chroma Accuracy", "Voicing Recall", "Voicing False Alarm")


def find_released_weights(name: str) -> Path | None:
    """``<name>.h5`` from $ESSENCE_DEEP_SALIENCE_WEIGHTS or ``<repo>/../shared/deep_salience/weights``."""
    roots = [os.environ.get("ESSENCE_DEEP_SALIENCE_WEIGHTS", "")]
    here = Path(__file__).resolve()
    roots += [str(p / "shared" / "deep_salience" / "weights") for p in here.parents[3:5]]
    for root in roots:
        if root and (Path(root) / f"{name}.h5").is_file():
            return Path(root) / f"{name}.h5"
    return None


def _fmt(scores: dict, keys) -> list[str]:
    return [f"{scores[k]:.3f}" for k in keys]


def _verdict(ok: bool, partly: bool = False) -> str:
    return REPRODUCED if ok else PARTLY if partly else NOT_REPRODUCED


def reproduce(run: Run, *, preset: str = "quick", device: str = "auto", overrides: tuple[str, ...] = ()) -> Report:
    cfg: DeepSalienceConfig = PRESETS.build(preset, overrides)
    run.save_config(cfg)
    dev = str(resolve_device(device))
    if dev == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    progress = preset != "tiny"
    report = Report(run, title="Deep Salience", paper=PAPER, preset=preset, method="deep_salience")
    t_start = time.time()
    dc = cfg.data
    common = dict(max_seconds=dc.max_seconds, soundfont=dc.soundfont, device=dev, progress=progress)
    train_items = build_split("train", dc.n_train, augment=dc.augment, renders=dc.renders_per_chorale, **common)
    val_items = build_split("validation", dc.n_validation, **common)
    test_items = build_split("test", dc.n_test, **common)
    t_data = time.time() - t_start
    secs = lambda items: sum(len(i.audio) for i in items) / 22050  # noqa: E731

    report.section("Setup")
    wide = cfg.model.widths == (128, 64, 64, 64, 8)
    report.text(
        f"Data: Bach chorales from the music21 corpus rendered with tinysoundfont + TimGM6mb (fixed split by "
        f"chorale): {len(train_items)} training renders ({secs(train_items):.0f} s, random instruments / tempo / "
        f"transposition: {dc.augment}), {len(val_items)} validation and {len(test_items)} test chorales "
        f"({secs(val_items):.0f} s / {secs(test_items):.0f} s, Bach10 instruments: violin, clarinet, tenor sax, "
        f"bassoon, 90 BPM), each cropped to {dc.max_seconds or 'full'} s. Labels are exact (from the notes).\n\n"
        f"Network: the paper's layer list with widths {cfg.model.widths}"
        f"{'' if wide else ' (reduced from 128-64-64-64-8 so that training fits the CPU budget)'}; "
        f"{cfg.train.steps_per_epoch} steps x up to {cfg.train.max_epochs} epochs (multi-f0), batch "
        f"{cfg.optim.batch_size} of 360x50 patches, Adam lr {cfg.optim.lr:g} (paper 1e-3), BatchNorm momentum "
        f"{cfg.model.bn_momentum:g} (torch convention; Keras' 0.99 = 0.01), ReduceLROnPlateau + early stopping "
        f"on {cfg.train.val_batches} fixed validation batches, precision "
        f"{Precision(cfg.train.precision, dev).reason}. The higher learning "
        f"rate and BatchNorm momentum compensate for a schedule ~300x shorter than the paper's. "
        f"tau swept over 0.1..0.9 on the validation chorales. Data preparation took {t_data:.0f} s; device {dev}.")

    # ---- multi-f0: HCQT network and the single-harmonic CQT ablation ------------------------------------
    results: dict[str, dict] = {}
    sweeps: dict[str, dict] = {}
    nets = {}
    for label, harmonics in (("CNN on HCQT (6 harmonics)", HARMONICS), ("CNN on CQT (h = 1 only)", (1.0,))):
        c = cfg.with_overrides({"model.harmonics": harmonics})
        chans = c.model.channels if len(harmonics) < 6 else None
        res = train(c, train_items, val_items, device=dev, run=run, name=label.split()[2], progress=progress)
        tau, table = tune_threshold(salience_of(res.model, val_items, chans, dev), val_items, "multif0")
        test_sal = salience_of(res.model, test_items, chans, dev)
        results[label] = score_saliences(test_items, test_sal, "multif0", tau) | {"tau": tau,
                                                                                    "train_s": res.seconds}
        sweeps[label] = table
        nets[label] = (res, test_sal, c)
        save_model(run.checkpoints_dir / f"multif0-{'hcqt' if len(harmonics) == 6 else 'cqt'}.safetensors",
                   res.model, c, threshold=tau)

    tau_pp, table_pp = tune_threshold(hcqt_saliences(val_items), val_items, "multif0")
    results["HCQT peak picking (no CNN)"] = score_saliences(test_items, hcqt_saliences(test_items), "multif0",
                                                            tau_pp) | {"tau": tau_pp}
    if basic_pitch_available() and preset != "tiny":
        t0 = time.time()
        results["basic-pitch 0.4.0 (ONNX)"] = score_estimates(test_items, basic_pitch_multif0(test_items),
                                                              "multif0") | {"tau": float("nan"),
                                                                            "train_s": time.time() - t0}
    released_mf0 = find_released_weights("multif0")
    if released_mf0 is not None and preset != "tiny":
        orig = load_keras_h5(released_mf0, task="multif0")
        orig_sal = salience_of(orig, test_items, None, dev, frames=512)
        results["released multif0.h5 (full width, tau 0.3)"] = score_saliences(test_items, orig_sal, "multif0",
                                                                               0.3) | {"tau": 0.3}

    report.section("Multi-f0 on the test chorales (mir_eval.multipitch, per-track means)")
    report.table(["system", *MP, "tau"], [(k, *_fmt(v, MP), f"{v['tau']:.1f}") for k, v in results.items()])

    # threshold sweep on the test set for the HCQT network (precision up, recall down with tau)
    res_h, sal_h, _ = nets["CNN on HCQT (6 harmonics)"]
    sweep_rows = []
    for tau in [round(0.1 * i, 1) for i in range(1, 10)]:
        s = score_saliences(test_items, sal_h, "multif0", tau)
        sweep_rows.append((tau, s["Precision"], s["Recall"], s["Accuracy"]))
    report.table(["tau", "Precision", "Recall", "Accuracy"], [(t, f"{p:.3f}", f"{r:.3f}", f"{a:.3f}")
                                                               for t, p, r, a in sweep_rows],
                 caption="Threshold sweep of the HCQT network on the test chorales")
    _figures(report, sweep_rows, test_items[0], sal_h[0], results["CNN on HCQT (6 harmonics)"]["tau"])

    a_h = results["CNN on HCQT (6 harmonics)"]["Accuracy"]
    a_c = results["CNN on CQT (h = 1 only)"]["Accuracy"]
    ratio = a_h / max(a_c, 1e-9)
    report.claim("Harmonic stacking helps: the same network on the HCQT beats it on a single-harmonic CQT",
                 verdict=_verdict(ratio >= 1.05, ratio > 1.0),
                 evidence=f"test Accuracy HCQT {a_h:.3f} vs CQT {a_c:.3f} (ratio {ratio:.2f}, one seed, same "
                          f"steps and seed)")
    a_pp = results["HCQT peak picking (no CNN)"]["Accuracy"]
    report.claim("The learned salience beats picking peaks of the HCQT itself (no CNN)",
                 verdict=_verdict(a_h > a_pp + 0.02, a_h > a_pp),
                 evidence=f"test Accuracy CNN {a_h:.3f} vs HCQT peak picking {a_pp:.3f} (tau {tau_pp:.1f})")
    precs, recs, accs = zip(*[(p, r, a) for _, p, r, a in sweep_rows])
    best_i = int(np.argmax(accs))
    mono = np.all(np.diff(precs) >= -0.02) and np.all(np.diff(recs) <= 0.02)
    report.claim("Accuracy vs tau peaks at an intermediate threshold; precision rises and recall falls with tau",
                 verdict=_verdict(0 < best_i < 8 and mono, 0 < best_i < 8 or mono),
                 evidence=f"best test tau {sweep_rows[best_i][0]} (Acc {accs[best_i]:.3f}); precision "
                          f"{precs[0]:.2f}->{precs[-1]:.2f}, recall {recs[0]:.2f}->{recs[-1]:.2f}; "
                          f"validation-tuned tau {results['CNN on HCQT (6 harmonics)']['tau']:.1f}")
    key_bp = "basic-pitch 0.4.0 (ONNX)"
    if key_bp in results:
        a_bp = results[key_bp]["Accuracy"]
        report.claim("The deep salience CNN is competitive with a strong multi-f0 baseline (paper: beats Benetos "
                     "and Duan on MedleyDB; here basic-pitch stands in)",
                     verdict=_verdict(a_h >= a_bp, a_h >= 0.9 * a_bp),
                     evidence=f"test Accuracy CNN {a_h:.3f} vs basic-pitch {a_bp:.3f}")
    key_or = "released multif0.h5 (full width, tau 0.3)"
    if key_or in results:
        o = results[key_or]
        report.claim("The released multif0 model, applied to clean rendered chorales, has high precision and "
                     "lower recall; a small model trained in-domain matches or beats it",
                     verdict=_verdict(o["Precision"] > o["Recall"] and a_h >= o["Accuracy"],
                                      o["Precision"] > o["Recall"]),
                     evidence=f"released P {o['Precision']:.3f} / R {o['Recall']:.3f} / Acc {o['Accuracy']:.3f}; "
                              f"in-domain CNN Acc {a_h:.3f}")

    # ---- melody (soprano) ------------------------------------------------------------------------------
    mel_cfg = cfg.with_overrides({"train.task": "melody", "train.max_epochs": max(1, cfg.train.max_epochs // 2),
                                  "train.early_stopping": min(cfg.train.early_stopping, 6)})
    res_m = train(mel_cfg, train_items, val_items, device=dev, run=run, name="melody", progress=progress)
    tau_m, _ = tune_threshold(salience_of(res_m.model, val_items, None, dev), val_items, "melody")
    sal_m = salience_of(res_m.model, test_items, None, dev)
    save_model(run.checkpoints_dir / "melody-hcqt.safetensors", res_m.model, mel_cfg, threshold=tau_m)
    mel = {"CNN on HCQT, argmax + tau": score_saliences(test_items, sal_m, "melody", tau_m) | {"tau": tau_m}}
    no_neg = score_estimates(test_items, [decode(s, "melody", tau_m, use_neg=False)[1] for s in sal_m], "melody")
    mel["same, unvoiced as 0 (no negative guesses)"] = no_neg | {"tau": tau_m}
    mel["librosa.pyin (on the mix)"] = score_estimates(test_items, pyin_melody(test_items), "melody") | {
        "tau": float("nan")}
    released_mel = find_released_weights("melody2")
    if released_mel is not None and preset != "tiny":
        orig_m = load_keras_h5(released_mel, task="melody")
        mel["released melody2.h5 (full width, tau 0.3)"] = score_saliences(
            test_items, salience_of(orig_m, test_items, None, dev, frames=512), "melody", 0.3) | {"tau": 0.3}
    report.section("Melody (soprano) on the test chorales (mir_eval.melody, per-track means)")
    report.table(["system", *MEL, "tau"], [(k, *_fmt(v, MEL), f"{v['tau']:.1f}") for k, v in mel.items()])
    m = mel["CNN on HCQT, argmax + tau"]
    rec = results["CNN on HCQT (6 harmonics)"]["Recall"]
    report.claim("A single line is easier: melody RPA is well above the multi-f0 recall on the same files",
                 verdict=_verdict(m["Raw Pitch Accuracy"] > rec + 0.05, m["Raw Pitch Accuracy"] > rec),
                 evidence=f"melody RPA {m['Raw Pitch Accuracy']:.3f} vs multi-f0 recall {rec:.3f}")
    py = mel["librosa.pyin (on the mix)"]
    ok = m["Overall Accuracy"] > py["Overall Accuracy"] + 0.05 and m["Raw Pitch Accuracy"] > 0.5
    report.claim("The CNN melody (argmax + voicing threshold) beats a non-learned melody baseline (paper: "
                 "Melodia, Bosch & Gomez; here pyin)",
                 verdict=_verdict(ok, m["Overall Accuracy"] > py["Overall Accuracy"]),
                 evidence=f"OA {m['Overall Accuracy']:.3f} vs {py['Overall Accuracy']:.3f}, RPA "
                          f"{m['Raw Pitch Accuracy']:.3f} vs {py['Raw Pitch Accuracy']:.3f}",
                 reason="" if ok else "a win needs RPA > 0.5 and OA 0.05 above pyin; pyin is monophonic and "
                                      "mostly reports 'unvoiced' on four-voice mixes")
    key_om = "released melody2.h5 (full width, tau 0.3)"
    if key_om in mel:
        report.text(f"The released melody2 model reaches RPA {mel[key_om]['Raw Pitch Accuracy']:.3f} / OA "
                    f"{mel[key_om]['Overall Accuracy']:.3f} on the same soprano labels, so labels and decoding are "
                    f"sound; the small melody network trained here for {res_m.steps} steps (best validation loss "
                    f"{res_m.best_val_loss:.3f}) has not yet learned to single out the top voice. In a 60-step "
                    f"pilot it also stayed below OA 0.05: melody needs a longer schedule than multi-f0.")
    report.text("Not checked at this scale: the blurred-vs-hard target ablation and the input-BatchNorm ablation "
                "(set `train.blur=false` or `model.input_bn=false` with `--set` to run them); results over 3 seeds.")
    report.add_summary(multif0=results, melody=mel, thresholds={"multif0": sweeps, "peak_picking": table_pp},
                       seconds_data=t_data)
    return report


def _figures(report: Report, sweep_rows, item, salience: np.ndarray, tau: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    taus = [r[0] for r in sweep_rows]
    for i, name in enumerate(("Precision", "Recall", "Accuracy"), start=1):
        ax.plot(taus, [r[i] for r in sweep_rows], marker="o", label=name)
    ax.set_xlabel("threshold tau")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("multi-f0 on test chorales vs tau")
    report.figure(fig, "threshold_sweep", "Precision rises and recall falls with tau; accuracy peaks between")
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
    report.figure(fig, "salience_example", "A test chorale: blurred target and the HCQT network's salience")
