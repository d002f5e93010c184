"""Train the Deep Salience models that ship inside the package, and write their model card.

``essence deep-salience predict`` loads these when no ``--weights`` is given. They are the paper's full-width
network (128-64-64-64-8), trained by essence with the standard preset's recipe and data: multi-f0 first, then
melody (soprano) and bass warm-started from it, each with tau tuned on the validation split, scored on the held-out
test split (renders with another soundfont and instruments that training never used).

    python scripts/build_deep_salience_weights.py              # -> src/essence/deep_salience/weights/
    python scripts/build_deep_salience_weights.py --set train.max_epochs=12 --out /tmp/weights
    python scripts/build_deep_salience_weights.py --widths preset   # the preset's reduced widths (32-16-16-16-8)

At full width one standard-recipe step (16 patches of 360 x 50) is about 0.7 TFLOP: about 3 hours of training on a
2-core CPU, a minute or two on a GPU. ``--widths preset`` trains the standard preset's network instead (16x
fewer FLOPs), the one the standard reproduction measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from essence.core.precision import machine_line
from essence.core.runtime import resolve_device
from essence.deep_salience.config import PRESETS
from essence.deep_salience.data import build_splits
from essence.deep_salience.evaluate import score_saliences
from essence.deep_salience.model import PAPER_WIDTHS
from essence.deep_salience.predict import PACKAGED_WEIGHTS
from essence.deep_salience.train import salience_of, save_model, train, tune_threshold

TASKS = ("multif0", "melody", "bass")
HEADLINE = {"multif0": ("Accuracy", "Precision", "Recall"),
            "melody": ("Overall Accuracy", "Raw Pitch Accuracy", "Voicing Recall", "Voicing False Alarm"),
            "bass": ("Overall Accuracy", "Raw Pitch Accuracy", "Voicing Recall", "Voicing False Alarm")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="standard")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=str(PACKAGED_WEIGHTS))
    p.add_argument("--device", default="auto")
    p.add_argument("--widths", choices=("paper", "preset"), default="paper",
                   help="paper: 128-64-64-64-8 (default); preset: the preset's widths")
    args = p.parse_args()
    cfg = PRESETS.build(args.preset, args.overrides)
    if args.widths == "paper":
        cfg = cfg.with_overrides({"model.widths": PAPER_WIDTHS})
    dev = str(resolve_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tr, va, te = build_splits(cfg.data, device=dev)
    tc = cfg.train
    card: dict[str, dict] = {}
    base = None
    for task in TASKS:
        c = cfg.with_overrides({"train.task": task})
        sched = {} if task == "multif0" else dict(max_epochs=tc.melody_epochs, early_stopping=tc.melody_early_stopping,
                                                  init=base if tc.warm_start else None)
        t = time.time()
        res = train(c, tr, va, device=dev, name=task, **sched)
        tau, _ = tune_threshold(salience_of(res.model, va, None, dev, precision=tc.precision), va, task)
        scores = score_saliences(te, salience_of(res.model, te, None, dev, precision=tc.precision), task, tau)
        save_model(out / f"{task}.safetensors", res.model, c, threshold=tau)
        card[task] = {"tau": tau, "seconds": round(time.time() - t), "best_val_loss": res.best_val_loss,
                      "epochs": res.epochs, "best_epoch": res.best_epoch,
                      "const_val_loss": res.const_val_loss, "test": {k: scores[k] for k in HEADLINE[task]}}
        print(task, json.dumps(card[task]), flush=True)
        if task == "multif0":
            base = res.model
    n_params = sum(q.numel() for q in base.parameters())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    _write_card(out / "MODEL_CARD.md", args.preset, cfg, card, tr, va, te, n_params, commit, time.time() - t0)
    print(f"-> {out}")
    return 0


def _write_card(path: Path, preset: str, cfg, card, tr, va, te, n_params, commit, wall) -> None:
    dc, tc, oc = cfg.data, cfg.train, cfg.optim
    eval_sf = dc.eval_soundfont or dc.soundfont or "TimGM6mb"
    eval_inst = ("instruments from pools disjoint from training" if dc.eval_instruments == "held_out"
                 else "the training instruments")
    secs = lambda items: sum(len(i.audio) for i in items) / 22050  # noqa: E731
    lines = [
        "# essence Deep Salience models (multi-f0, melody, bass)",
        "",
        "The default weights of `essence deep-salience predict`, built by",
        f"`python scripts/build_deep_salience_weights.py` at commit {commit}",
        f"({wall / 60:.0f} min on {machine_line()}).",
        "",
        "## Model",
        ("The paper's network at full width (Bittner et al. 2017; widths "
         if cfg.model.widths == PAPER_WIDTHS else
         "The paper's network (Bittner et al. 2017) with the kernel sizes and layers unchanged but **reduced "
         "widths** (the paper: 128-64-64-64-8; here ")
        + f"{'-'.join(map(str, cfg.model.widths))}, {n_params:,} parameters each) on the 6-harmonic HCQT "
        "(h = 0.5, 1, 2, 3, 4, 5), 360 bins from C1 at 5 bins "
        "per semitone, 256-sample hop at 22,050 Hz. Output: per-frame salience in [0, 1] with a validation-tuned "
        "threshold tau stored in the file.",
        "",
        "## Data",
        f"Bach chorales from the music21 corpus (fixed split by chorale), rendered with tinysoundfont. Training: "
        f"{len(tr)} renders ({secs(tr):.0f} s) of {dc.n_train} chorales with {dc.soundfont or 'TimGM6mb'} and "
        f"random instruments, tempo, transposition and velocity. Validation / test: {len(va)} / {len(te)} clips "
        f"of {dc.n_validation} / {dc.n_test} other chorales rendered with {eval_sf} and {eval_inst}. "
        "Targets: every sounding voice (multi-f0), the soprano (melody), the bass voice (bass), Gaussian-blurred over "
        "frequency as in the paper.",
        "",
        "## Recipe",
        f"The `{preset}` preset's schedule: Adam lr {oc.lr:g}, batch "
        f"{oc.batch_size} patches, {tc.steps_per_epoch} steps per epoch, up to {tc.max_epochs} epochs for multi-f0 and "
        f"{tc.melody_epochs} for melody and bass (early stopping on the validation loss, the best epoch kept), "
        + ("melody and bass warm-started from the multi-f0 network; " if tc.warm_start else "")
        + "output bias started at the "
        "task's positive rate. tau tuned on the validation clips (0.1-0.9).",
        "",
        "This is a small training budget (the paper trained up to 25,600 steps on MedleyDB): the models are meant "
        "as a working default on polyphonic instrumental music, not as the paper's models. The released Keras "
        "weights remain an option (`--weights released`, or a path).",
        "",
        "## Held-out test scores (mir_eval, mean over clips)",
        "",
        "| model | tau | epochs (best) | validation loss (constant predictor) | " + " | ".join(HEADLINE["melody"])
        + " | multi-f0 Accuracy / Precision / Recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, c in card.items():
        s = c["test"]
        if task == "multif0":
            cols = ["-"] * 4 + [" / ".join(f"{s[k]:.3f}" for k in HEADLINE[task])]
        else:
            cols = [f"{s[k]:.3f}" for k in HEADLINE[task]] + ["-"]
        lines.append(f"| {task} | {c['tau']:.1f} | {c['epochs']} ({c['best_epoch']}) | {c['best_val_loss']:.4f} "
                     f"({c['const_val_loss']:.4f}) | " + " | ".join(cols) + " |")
    lines += ["", "Out-of-domain music (other instruments, vocals, reverberant mixtures) will score lower; MedleyDB, "
                  "the paper's data, was not available offline.", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
