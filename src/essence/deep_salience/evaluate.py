"""Evaluation of salience models and of the offline baselines on rendered chorales, with mir_eval.

Systems (all scored with :mod:`essence.metrics.pitch`, per-track means):

* a trained :class:`SalienceNet` (salience from precomputed HCQTs, tau tuned on validation);
* the HCQT itself, no CNN: peak picking on the log-scaled h = 1 channel (a plain CQT), tau tuned the same way;
* ``basic-pitch`` 0.4.0 (its ONNX model through onnxruntime): note events -> frame-level multi-f0;
* ``librosa.pyin`` for melody (monophonic, on the mix; pitch resolution 0.25 semitone instead of the default
  0.1, which makes its Viterbi ~25x faster; unvoiced frames carry their pitch guess as a negative value);
* the released Keras weights (full width), decoded at the released default tau = 0.3.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from essence.deep_salience.data import Item
from essence.deep_salience.decode import decode, multif0_peaks
from essence.metrics.pitch import MelodyScores, MultipitchScores

__all__ = ["score_saliences", "score_estimates", "hcqt_saliences", "basic_pitch_multif0", "pyin_melody",
           "basic_pitch_available", "notes_to_frames"]


def score_estimates(items: list[Item], estimates: list, task: str) -> dict[str, float]:
    """Per-track mean mir_eval scores of estimates (one per item, on the item's frame grid)."""
    metric = MultipitchScores() if task == "multif0" else MelodyScores()
    for it, est in zip(items, estimates):
        metric.update(it.times, it.labels(task), it.times, est)
    return metric.compute()


def score_saliences(items: list[Item], saliences: list[np.ndarray], task: str, threshold: float) -> dict:
    return score_estimates(items, [decode(s, task, threshold)[1] for s in saliences], task)


def hcqt_saliences(items: list[Item], channel: int = 1) -> list[np.ndarray]:
    """The 'no CNN' baseline's salience: one log-scaled HCQT channel (h = 1 by default)."""
    return [it.hcqt[channel].astype(np.float32) for it in items]


def notes_to_frames(times: np.ndarray, notes) -> list[np.ndarray]:
    """Frame-level multi-f0 from (start s, end s, MIDI pitch, ...) note events."""
    out: list[list[float]] = [[] for _ in times]
    for n in notes:
        start, end, pitch = float(n[0]), float(n[1]), int(n[2])
        lo, hi = np.searchsorted(times, [start, end])
        f = 440.0 * 2 ** ((pitch - 69) / 12)
        for i in range(lo, hi):
            out[i].append(f)
    return [np.array(sorted(set(f))) for f in out]


def basic_pitch_available() -> bool:
    return importlib.util.find_spec("basic_pitch") is not None and importlib.util.find_spec("onnxruntime") is not None


def basic_pitch_model_path() -> Path:
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or spec.origin is None:
        raise ImportError("basic-pitch is not installed: pip install --no-deps basic-pitch==0.4.0 onnxruntime "
                          "(see scripts/install.d/deep_salience.sh)")
    return Path(spec.origin).parent / "saved_models" / "icassp_2022" / "nmp.onnx"


def _basic_pitch():
    logging.getLogger().setLevel(logging.ERROR)  # it logs a warning per missing runtime (TF, TFLite, CoreML)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from basic_pitch.inference import Model, predict
    return Model(str(basic_pitch_model_path())), predict


def basic_pitch_notes(audio: np.ndarray, sr: int = 22050, model=None):
    """basic-pitch's note events ``(start, end, pitch, amplitude, bends)`` for a mono signal (default settings)."""
    import contextlib
    import io

    import soundfile as sf

    bp_model, predict = _basic_pitch() if model is None else model
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(path, audio, sr)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, notes = predict(str(path), bp_model)
    return notes


def basic_pitch_multif0(items: list[Item]) -> list[list[np.ndarray]]:
    model = _basic_pitch()
    return [notes_to_frames(it.times, basic_pitch_notes(it.audio, model=model)) for it in items]


def pyin_melody(items: list[Item], fmin: float = 130.0, fmax: float = 1050.0) -> list[np.ndarray]:
    """librosa.pyin on each mix, on the model's frame grid (hop 256)."""
    import librosa

    out = []
    for it in items:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f0, voiced, _ = librosa.pyin(it.audio, fmin=fmin, fmax=fmax, sr=22050, frame_length=2048,
                                         hop_length=256, resolution=0.25, fill_na=None)
        f0 = np.where(voiced, f0, -f0)[: len(it.times)]
        out.append(np.pad(f0, (0, len(it.times) - len(f0))))
    return out


def peak_count(saliences: list[np.ndarray], threshold: float) -> float:
    """Mean number of peaks per frame (a sanity number for reports)."""
    return float(np.mean([np.mean([len(f) for f in multif0_peaks(s, threshold)]) for s in saliences]))
