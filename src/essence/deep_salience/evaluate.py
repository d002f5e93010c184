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
           "basic_pitch_available", "notes_to_frames", "clip_scores", "sweep_system", "per_clip", "salience_decoder",
           "highest_peak_f0", "highest_peak_decoder", "harmonic_sum_saliences", "basic_pitch_outputs",
           "basic_pitch_frame_decoder", "basic_pitch_note_decoder", "TUNE_KEY"]


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


# ----------------------------------------------------------------------------------------------------------
# the fair protocol: every system is a decoder with one threshold, tuned on validation by the same rule
# ----------------------------------------------------------------------------------------------------------
TUNE_KEY = {"multif0": "Accuracy", "melody": "Overall Accuracy", "bass": "Overall Accuracy"}


def clip_scores(item: Item, est_times: np.ndarray, est, task: str) -> dict[str, float]:
    """mir_eval scores of one clip (estimates may be on their own time grid: mir_eval resamples them)."""
    from essence.metrics.pitch import melody_scores, multipitch_scores

    if task == "multif0":
        return multipitch_scores(item.times, item.labels(task), est_times, est)
    return melody_scores(item.times, item.labels(task), est_times, est)


def sweep_system(decode_fn, items: list[Item], task: str, thresholds=None) -> tuple[float, dict[float, float]]:
    """tau maximising the mean validation score (:data:`TUNE_KEY`) of ``decode_fn(i, tau) -> (times, est)``.

    The rule of the released ``sweep_threshold`` for every system alike: tau in 0.1..0.9, ties to the tau
    closest to 0.3.
    """
    from essence.deep_salience.decode import THRESHOLDS

    thresholds = THRESHOLDS if thresholds is None else thresholds
    key = TUNE_KEY[task]
    table = {float(t): float(np.mean([clip_scores(it, *decode_fn(i, t), task)[key] for i, it in enumerate(items)]))
             for t in thresholds}
    return max(table, key=lambda t: (table[t], -abs(t - 0.3))), table


def per_clip(decode_fn, items: list[Item], task: str, tau: float) -> dict[str, np.ndarray]:
    """Per-clip scores {metric: (n_clips,) array} of ``decode_fn`` at ``tau``."""
    rows = [clip_scores(it, *decode_fn(i, tau), task) for i, it in enumerate(items)]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def salience_decoder(saliences: list[np.ndarray], task: str):
    """``decode_fn`` of salience maps: peak picking (multi-f0) or argmax + tau (melody, bass)."""
    return lambda i, tau: decode(saliences[i], task, tau)


def highest_peak_f0(salience: np.ndarray, threshold: float) -> np.ndarray:
    """Melody from a *multi-f0* salience: per frame the highest-frequency peak >= tau (the top voice).

    Frames without such a peak are unvoiced and carry, as a negative value, the highest peak >= 0.1 (the
    lowest tau of the sweep), so raw pitch accuracy gets the same chance as the melody model's negative guesses.
    """
    from essence.deep_salience.hcqt import freq_grid

    s = np.asarray(salience, dtype=np.float32)
    peak = np.zeros_like(s, dtype=bool)
    peak[1:-1] = (s[1:-1] > s[:-2]) & (s[1:-1] > s[2:])
    n_bins = s.shape[0]
    rows = np.arange(n_bins)[:, None]

    def top(mask):
        idx = np.where(mask, rows, -1).max(axis=0)
        return idx

    voiced = top(peak & (s >= threshold))
    guess = top(peak & (s >= min(0.1, threshold)))
    freqs = freq_grid(n_bins)
    out = np.zeros(s.shape[1])
    v = voiced >= 0
    out[v] = freqs[voiced[v]]
    g = ~v & (guess >= 0)
    out[g] = -freqs[guess[g]]
    return out


def highest_peak_decoder(saliences: list[np.ndarray]):
    from essence.deep_salience.hcqt import time_grid

    return lambda i, tau: (time_grid(saliences[i].shape[1]), highest_peak_f0(saliences[i], tau))


def harmonic_sum_saliences(items: list[Item], alpha: float = 0.8) -> list[np.ndarray]:
    """The non-learned salience: weighted harmonic summation over the HCQT (h = 1..5, weight alpha^(h - 1)).

    Sum_h alpha^(h-1) X_h(f) / Sum_h alpha^(h-1) over the log-scaled channels (values in [0, 1]): bin f of
    channel h holds frequency h * f, so this is the classic harmonic sum (Klapuri 2006; Melodia's alpha 0.8)
    evaluated exactly on the HCQT grid. The h = 0.5 channel is left out (a subharmonic).
    """
    from essence.deep_salience.hcqt import HARMONICS

    hs = [h for h in HARMONICS if h >= 1]
    w = np.array([alpha ** (h - 1) for h in hs], dtype=np.float32)
    w /= w.sum()
    idx = [HARMONICS.index(h) for h in hs]
    return [np.tensordot(w, it.hcqt[idx].astype(np.float32), axes=1) for it in items]


# ---- basic-pitch: its raw posteriorgrams, decoded two ways with a tuned threshold --------------------------
def basic_pitch_outputs(items: list[Item]) -> list[dict]:
    """basic-pitch's model output per clip ({'note': (T, 88), 'onset', 'contour'}; its own frame grid)."""
    import contextlib
    import io

    import soundfile as sf

    bp_model, _ = _basic_pitch()
    from basic_pitch.inference import run_inference

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for it in items:
            path = Path(tmp) / "clip.wav"
            sf.write(path, it.audio, 22050)
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(run_inference(str(path), bp_model))
    return out


def basic_pitch_frame_decoder(outputs: list[dict]):
    """Multi-f0 from basic-pitch's *frame* posteriorgram ('note', one bin per semitone from A0): every key whose
    posterior is >= tau, on basic-pitch's own frame times."""
    from basic_pitch.note_creation import model_frames_to_time

    freqs = 440.0 * 2.0 ** ((np.arange(88) + 21 - 69) / 12.0)

    def fn(i, tau):
        note = outputs[i]["note"]
        on = note >= tau
        return model_frames_to_time(note.shape[0]), [freqs[r] for r in on]

    return fn


def basic_pitch_note_decoder(outputs: list[dict], items: list[Item], onset_threshold: float = 0.5):
    """Multi-f0 from basic-pitch's *note events* (its own note creation, melodia trick, minimum length 11 frames,
    default onset threshold) with tau as its frame threshold, drawn on the clip's frame grid."""
    from basic_pitch.note_creation import model_output_to_notes

    def fn(i, tau):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, notes = model_output_to_notes(outputs[i], onset_thresh=onset_threshold, frame_thresh=tau,
                                             min_note_len=11, include_pitch_bends=False)
        return items[i].times, notes_to_frames(items[i].times, notes)

    return fn
