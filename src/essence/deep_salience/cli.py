"""``essence deep-salience``: predict, train, reproduce.

    essence deep-salience predict song.wav --task multif0 --weights multif0.h5 -o song.csv \
        --salience song.npz --plot song.png --midi song.mid
    essence deep-salience train --preset quick --set train.task=melody
    essence deep-salience reproduce [--preset tiny|quick|paper]
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from essence.core.cli import UsageError, add_run_args, method_parser, reproduce_command, run_cli

__all__ = ["main", "resolve_weights", "read_f0_file"]

DEFAULT_FILES = {"multif0": "multif0", "melody": "melody2", "bass": "bass"}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".m4a", ".opus")


def _pick_in_dir(path: Path, task: str) -> Path:
    """The file a directory stands for: a run directory's main model for ``task`` (``<task>-hcqt``, never an
    ablation such as ``multif0-cqt`` unless it is the only one), or the released file of ``task`` in a folder of
    Keras .h5 files."""
    ckdir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    ckpts = sorted(ckdir.glob(f"{task}-*.safetensors"))
    if ckpts:
        main = [c for c in ckpts if c.stem == f"{task}-hcqt"]
        if main:
            return main[0]
        if len(ckpts) == 1:
            return ckpts[0]
        raise ValueError(f"{path} holds several {task} checkpoints ({', '.join(c.name for c in ckpts)}) and no "
                         f"main model {task}-hcqt.safetensors; pass one file with --weights")
    h5s = sorted(path.glob("*.h5"))
    if h5s:
        want = path / f"{DEFAULT_FILES[task]}.h5"
        if want.is_file():
            return want
        raise ValueError(f"{path} is a folder of Keras files without {want.name} (the released {task} model); it "
                         f"holds {', '.join(h.name for h in h5s[:8])}: pass one file with --weights")
    others = sorted(ckdir.glob("*.safetensors"))
    if others:
        raise ValueError(f"run directory {path} has no checkpoint for task {task!r} (it has "
                         f"{', '.join(c.name for c in others)}); pass --task to match")
    raise FileNotFoundError(f"{path} is a directory without essence checkpoints (*.safetensors) or Keras "
                            f"weights (*.h5)")


def resolve_weights(weights: str | None, task: str):
    """(model, default tau, channels, description, decoding) from a Keras .h5, an essence checkpoint, a run
    directory (its main ``<task>-hcqt`` model) or a folder of released .h5 files (``<task default>.h5``).

    The description names the file that was loaded. ``decoding`` is the decoder for the output: the task's,
    except for the released melody3 model (melody definition 3 holds several lines at once), which is decoded
    with multi-f0 peak picking as the original did.
    """
    import h5py

    from essence.deep_salience.model import load_keras_h5
    from essence.deep_salience.predict import packaged_weights
    from essence.deep_salience.reproduce import find_released_weights
    from essence.deep_salience.train import load_essence_checkpoint

    if weights is None and not os.environ.get("ESSENCE_DEEP_SALIENCE_WEIGHTS") and (own := packaged_weights(task)):
        weights = str(own)          # essence's own model; $ESSENCE_DEEP_SALIENCE_WEIGHTS asks for the released
    elif weights is None or weights == "released":
        found = find_released_weights(DEFAULT_FILES[task])
        if found is None:
            raise FileNotFoundError(
                f"no {'released ' if weights else ''}weights for task {task!r}: pass --weights FILE (a released "
                f"Keras file such as {DEFAULT_FILES[task]}.h5 from rabitt/ismir2017-deepsalience predict/weights, "
                f"MIT), an essence checkpoint (.safetensors) or a run directory; or set "
                f"ESSENCE_DEEP_SALIENCE_WEIGHTS to the folder holding the .h5 files")
        weights = str(found)
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if path.is_dir():
        path = _pick_in_dir(path, task)
    if path.is_file() and h5py.is_hdf5(str(path)):
        from essence.deep_salience.model import released_name

        multi_line = released_name(path) == "melody3" or (released_name(path) is None and path.stem == "melody3")
        decoding = "multif0" if multi_line and task == "melody" else task
        note = " (melody3 is multi-line: decoded with peak picking)" if decoding != task else ""
        return load_keras_h5(path, task=task), 0.3, None, f"Keras weights {path}{note}", decoding
    if path.suffix not in (".safetensors",):
        raise ValueError(f"{path} is neither a Keras .h5 (HDF5) file nor an essence .safetensors checkpoint")
    model, cfg, state = load_essence_checkpoint(path)
    if state.get("task") != task:
        raise ValueError(f"{path} was trained for task {state.get('task')!r}, not {task!r}; pass --task "
                         f"{state.get('task')} or other weights")
    channels = cfg.model.channels if len(cfg.model.channels) < 6 else None
    return model, float(state.get("threshold", 0.3)), channels, f"essence checkpoint {path}", task


def _out_path(base: str | None, audio: Path, many: bool, suffix: str) -> Path | None:
    if base is None:
        return None
    p = Path(base)
    if many or p.is_dir() or not p.suffix:
        p.mkdir(parents=True, exist_ok=True)
        return p / f"{audio.stem}{suffix}"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _check_outputs(args, many: bool) -> None:
    """Refuse, before any work, a file name for several inputs and an output place that cannot be written."""
    import tempfile

    for flag, value in (("-o/--output", args.output), ("--salience", args.salience), ("--plot", args.plot),
                        ("--midi", args.midi), ("--notes", args.notes), ("--sonify", args.sonify),
                        ("--jams", args.jams)):
        if value is None:
            continue
        p = Path(value)
        if many and p.suffix and not p.is_dir():
            what = f"{len(args.audio)} audio files were given" if len(args.audio) > 1 else "--task all has 3 outputs"
            raise UsageError(f"{flag} {value} names one file but {what}; pass a folder (one output per input and "
                             f"task is written there)")
        folder = p if (many or p.is_dir() or not p.suffix) else p.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise UsageError(f"{flag} {value}: cannot write to {folder} ({err.strerror or err})") from None


def _predict(args) -> int:
    import numpy as np
    import torch

    from essence.core.progress import console
    from essence.core.runtime import resolve_device
    from essence.deep_salience.decode import decode, refine_f0, salience_at
    from essence.deep_salience.hcqt import time_grid
    from essence.deep_salience.predict import (
        Predictor,
        load_audio,
        plot_salience,
        require_jams,
        write_csv,
        write_detailed_csv,
        write_jams,
        write_midi,
        write_notes_csv,
        write_npz,
        write_sonification,
    )

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.chunk_seconds <= 0:
        raise UsageError(f"--chunk-seconds must be positive, got {args.chunk_seconds}")
    audios = []
    for a in map(Path, args.audio):  # fail before loading a model; a folder stands for the audio files in it
        if not a.exists():
            raise FileNotFoundError(f"audio file not found: {a}")
        if a.is_dir():
            found = sorted(p for p in a.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"folder {a} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
            audios.extend(found)
        else:
            audios.append(a)
    args.audio = [str(a) for a in audios]
    _check_outputs(args, len(audios) > 1 or args.task == "all")
    if args.jams is not None:
        try:
            require_jams()
        except ImportError as err:
            raise UsageError(f"--jams: {err}") from None
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    tasks = ("multif0", "melody", "bass") if args.task == "all" else (args.task,)
    heads = {}
    for task in tasks:  # --task all: one HCQT per chunk feeds every model
        model, tau, channels, what, decoding = resolve_weights(args.weights, task)
        tau = args.threshold if args.threshold is not None else tau
        console.print(f"weights ({task}): {what} (tau {tau:.2f})", highlight=False)
        heads[task] = dict(model=model, channels=channels, tau=tau, what=what, decoding=decoding)
    first = heads[tasks[0]]
    predictor = Predictor(first["model"], device, chunk_seconds=args.chunk_seconds, channels=first["channels"])
    many = len(audios) > 1 or len(tasks) > 1
    keep = args.salience is not None or args.plot is not None
    notes_wanted = args.midi is not None or args.notes is not None or args.sonify is not None
    keep_f0 = notes_wanted or keep or args.jams is not None     # the whole file's decoded F0 is needed at the end
    for audio in audios:
        y = load_audio(audio)
        sfx = (lambda task, ext: f"_{task}{ext}") if len(tasks) > 1 else (lambda task, ext: ext)  # noqa: E731
        state = {t: dict(csv=_out_path(args.output, audio, many, f"_{t}.csv"), parts=[], f0=[], conf=[])
                 for t in tasks}
        stream = predictor.iter_saliences(y, {t: (h["model"], h["channels"]) for t, h in heads.items()},
                                          progress=True)
        for i, (f0, chunks) in enumerate(stream):
            for task, chunk in chunks.items():
                h, st = heads[task], state[task]
                times = time_grid(chunk.shape[1]) + f0 * time_grid(2)[1]
                dec = h["decoding"]
                _, est = decode(chunk, dec, h["tau"], use_neg=not args.no_neg, viterbi=args.viterbi)
                if args.detailed:
                    write_detailed_csv(st["csv"], times, *refine_f0(chunk, est), append=i > 0)
                else:
                    write_csv(st["csv"], times, est, append=i > 0)
                if keep:
                    st["parts"].append(chunk)
                if keep_f0:
                    st["f0"].extend(est if dec == "multif0" else list(est))
                if notes_wanted:
                    st["conf"].extend(salience_at(chunk, est))
        for task in tasks:
            h, st = heads[task], state[task]
            dec, f0_all, conf_all = h["decoding"], st["f0"], st["conf"]
            times = time_grid(len(f0_all))
            if keep:
                salience = np.concatenate(st["parts"], axis=1)
                if args.salience is not None:
                    write_npz(_out_path(args.salience, audio, many, sfx(task, ".npz")), salience)
                if args.plot is not None:
                    est = f0_all if dec == "multif0" else np.asarray(f0_all)
                    plot_salience(_out_path(args.plot, audio, many, sfx(task, ".png")), salience, est, dec,
                                  f"{audio.name}: {task} ({h['what']}, tau {h['tau']:.2f})")
            n_notes = None
            if args.midi is not None:
                n_notes = write_midi(_out_path(args.midi, audio, many, sfx(task, ".mid")), times, f0_all,
                                     confidence=conf_all)
            if args.notes is not None:
                n_notes = write_notes_csv(_out_path(args.notes, audio, many, sfx(task, "_notes.csv")), times,
                                          f0_all, conf_all)
            if args.jams is not None:
                write_jams(_out_path(args.jams, audio, many, sfx(task, ".jams")), times, f0_all, dec, len(y) / 22050,
                           source=f"{audio.name}; {h['what']}, tau {h['tau']:.2f}")
            if args.sonify is not None:
                write_sonification(_out_path(args.sonify, audio, many, sfx(task, "_sonified.wav")), times, f0_all,
                                   dec, len(y))
            console.print(f"{audio.name}: {len(y) / 22050:.1f} s -> {st['csv']}"
                          + (f", {n_notes} notes" if n_notes is not None else ""), highlight=False)
    return 0


def _train(args) -> int:
    from essence.core.progress import console, print_table
    from essence.core.runs import Run
    from essence.core.runtime import resolve_device
    from essence.deep_salience.config import PRESETS
    from essence.deep_salience.data import build_splits
    from essence.deep_salience.evaluate import score_saliences
    from essence.deep_salience.train import salience_of, save_model, train, tune_threshold

    cfg = PRESETS.build(args.preset, args.overrides)
    run = Run.create("deep-salience", f"train-{args.preset}", args.out, exact=args.out is not None)
    run.save_config(cfg)
    dev = str(resolve_device(args.device))
    tr, va, te = build_splits(cfg.data, device=dev)   # validation / test as the preset's reproduce builds them
    task = cfg.train.task
    chans = cfg.model.channels if len(cfg.model.channels) < 6 else None
    per_task = {} if task == "multif0" else dict(max_epochs=cfg.train.melody_epochs,
                                                 early_stopping=cfg.train.melody_early_stopping)
    res = train(cfg, tr, va, device=dev, run=run, name=task, **per_task)  # paper: 100/25 multi-f0, 50/6 others
    tau, _ = tune_threshold(salience_of(res.model, va, chans, dev), va, task)
    tag = "hcqt" if chans is None else "cqt"
    path = save_model(run.checkpoints_dir / f"{task}-{tag}.safetensors", res.model, cfg, threshold=tau)
    scores = score_saliences(te, salience_of(res.model, te, chans, dev), task, tau)
    run.write_summary({"task": task, "threshold": tau, "test": scores, "best_val_loss": res.best_val_loss})
    print_table(["metric", "test"], [(k, v) for k, v in scores.items()], title=f"{task}: tau {tau:.1f}")
    console.print(f"checkpoint: {path}")
    return 0


def read_f0_file(path: str | Path, task: str):
    """A MIREX-style F0 file (the CSV ``predict`` writes; tab, comma or space separated): per row a time, then
    the frequencies of that frame (multi-f0; none = silence) or one frequency (melody / bass; <= 0 unvoiced).
    Returns (times, freqs) in mir_eval's format."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"F0 file not found: {p}")
    times, freqs = [], []
    for i, line in enumerate(p.read_text().splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            row = [float(x) for x in fields]
        except ValueError:
            if not times:  # a header row
                continue
            raise ValueError(f"{p}:{i}: expected numbers (time, then frequencies), got {line!r}") from None
        times.append(row[0])
        freqs.append(np.array(row[1:]))
    if not times:
        raise ValueError(f"{p} holds no rows (expected: time, then frequencies, per line)")
    t = np.array(times)
    if np.any(np.diff(t) < 0):
        raise ValueError(f"{p}: the times are not in increasing order")
    if task == "multif0":
        return t, [f[f > 0] for f in freqs]
    if any(len(f) != 1 for f in freqs):
        raise ValueError(f"{p}: a melody / bass file has exactly one frequency per row")
    return t, np.array([f[0] for f in freqs])


def _evaluate(args) -> int:
    from essence.core.progress import print_table
    from essence.metrics.pitch import melody_scores, multipitch_scores

    rt, rf = read_f0_file(args.reference, args.task)
    et, ef = read_f0_file(args.estimate, args.task)
    scores = multipitch_scores(rt, rf, et, ef) if args.task == "multif0" else melody_scores(rt, rf, et, ef)
    print_table(["metric", "score"], [(k, f"{v:.4f}") for k, v in scores.items()],
                title=f"{args.task}: {Path(args.estimate).name} against {Path(args.reference).name}")
    return 0


_reproduce = reproduce_command("deep-salience")


def main(argv: list[str]) -> int:
    parser, sub = method_parser("deep-salience", "Deep Salience (Bittner et al., ISMIR 2017): F0 salience from "
                                                 "a harmonic CQT with a CNN")
    p = sub.add_parser("predict", help="salience and F0 of audio files (CSV, npz, png, MIDI)")
    p.add_argument("audio", nargs="+", help="audio files or folders of them (any sample rate / channel count "
                                            "soundfile can read); the model is loaded once for all")
    p.add_argument("--task", choices=["multif0", "melody", "bass", "all"], default="multif0",
                   help="all: the three models on one HCQT per chunk (outputs get a _<task> suffix)")
    p.add_argument("--weights", default=None,
                   help="a released Keras .h5, an essence checkpoint (.safetensors), a run directory, or "
                        "'released' ($ESSENCE_DEEP_SALIENCE_WEIGHTS/<task>.h5). Default: essence's own model "
                        "shipped with the package (weights/MODEL_CARD.md), or the released file when "
                        "$ESSENCE_DEEP_SALIENCE_WEIGHTS is set")
    p.add_argument("-o", "--output", required=True,
                   help="CSV file (one input) or folder: tab-separated time, then frequencies, per frame")
    p.add_argument("--threshold", type=float, default=None,
                   help="tau (default: the checkpoint's validation-tuned value, 0.3 for Keras weights)")
    p.add_argument("--salience", default=None, help="also save the salience map (.npz: salience, times, freqs)")
    p.add_argument("--plot", default=None, help="also save a PNG of the salience with the decoded F0")
    p.add_argument("--midi", default=None, help="also save the decoded F0 as MIDI notes (velocity from salience)")
    p.add_argument("--notes", default=None,
                   help="also save note events as CSV (start_s, end_s, pitch_midi, velocity, mean_salience)")
    p.add_argument("--detailed", action="store_true",
                   help="CSV with a header (time_s,f0_hz,confidence), one row per estimate: sub-bin refined pitch "
                        "(salience-weighted mean around the peak) and the salience at the peak")
    p.add_argument("--viterbi", action="store_true",
                   help="melody/bass: Viterbi-smoothed path instead of the per-frame argmax (per processing chunk)")
    p.add_argument("--sonify", default=None, help="also save the decoded F0 as audio (.wav, mir_eval.sonify)")
    p.add_argument("--jams", default=None, help="also save the decoded F0 as JAMS (pitch_contour; needs the jams "
                                                "package: pip install jams)")
    p.add_argument("--no-neg", action="store_true", help="melody/bass: write unvoiced frames as 0, not -f")
    p.add_argument("--chunk-seconds", type=float, default=30.0, help="audio per processing chunk (30)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    e = sub.add_parser("evaluate", help="mir_eval scores of an F0 file against a reference (MIREX-style files)")
    e.add_argument("estimate", help="estimated F0: per row a time, then frequencies (predict's CSV)")
    e.add_argument("reference", help="reference F0 in the same format")
    e.add_argument("--task", choices=["multif0", "melody", "bass"], default="multif0")
    t = sub.add_parser("train", help="train on rendered chorales, tune tau on validation, score the test split")
    add_run_args(t)
    r = sub.add_parser("reproduce", help="the small-scale reproduction (report with verdicts)")
    add_run_args(r)
    args = parser.parse_args(argv)

    def run() -> int:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_fft=.*too large.*")
            return {"predict": _predict, "train": _train, "reproduce": _reproduce,
                    "evaluate": _evaluate}[args.command](args)

    return run_cli(run)
