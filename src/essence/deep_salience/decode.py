"""Decoding a salience map into F0 output (Bittner et al. 2017, Sec. 3.4; the released ``predict_on_audio.py``).

* multi-f0: in each frame keep the local maxima along frequency (``argrelmax``) whose salience is >= tau.
* melody / bass: argmax over frequency; a frame whose maximum is < tau is unvoiced and reported as the
  *negative* of the argmax frequency (mir_eval's convention for an unvoiced frame with a pitch guess), or 0.
* tau is chosen on validation data by sweeping 0.1, 0.2, ..., 0.9 (:func:`sweep_threshold`).
"""

from __future__ import annotations

import numpy as np

from essence.deep_salience.hcqt import freq_grid, time_grid

__all__ = ["multif0_peaks", "single_f0", "decode", "sweep_threshold", "f0_to_notes", "f0_to_note_events",
           "salience_at", "refine_f0", "viterbi_f0", "THRESHOLDS", "TASKS"]

TASKS = ("multif0", "melody", "bass")
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _check(salience: np.ndarray, threshold: float) -> np.ndarray:
    s = np.asarray(salience, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"salience must be (n_bins, n_frames), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("salience contains NaN or inf")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return s


def multif0_peaks(salience: np.ndarray, threshold: float = 0.3,
                  freqs: np.ndarray | None = None) -> list[np.ndarray]:
    """Per frame, the frequencies (ascending) of the local maxima along frequency with salience >= threshold.

    A local maximum is strictly greater than both neighbours (``scipy.signal.argrelmax``; the edge bins are never
    peaks). Shape: salience (n_bins, n_frames) -> list of n_frames 1-D arrays.
    """
    s = _check(salience, threshold)
    freqs = freq_grid(s.shape[0]) if freqs is None else np.asarray(freqs)
    peak = np.zeros_like(s, dtype=bool)
    peak[1:-1] = (s[1:-1] > s[:-2]) & (s[1:-1] > s[2:]) & (s[1:-1] >= threshold)
    f_idx, t_idx = np.nonzero(peak.T)[::-1]  # sorted by frame, then by frequency
    splits = np.searchsorted(t_idx, np.arange(1, s.shape[1]))
    return [freqs[f] for f in np.split(f_idx, splits)]


def single_f0(salience: np.ndarray, threshold: float = 0.3, freqs: np.ndarray | None = None,
              use_neg: bool = True) -> np.ndarray:
    """Argmax frequency per frame; frames whose maximum is < threshold are unvoiced (-f, or 0 if not use_neg)."""
    s = _check(salience, threshold)
    freqs = freq_grid(s.shape[0]) if freqs is None else np.asarray(freqs)
    idx = np.argmax(s, axis=0)
    f = freqs[idx].astype(np.float64)
    unvoiced = s[idx, np.arange(s.shape[1])] < threshold
    f[unvoiced] = -f[unvoiced] if use_neg else 0.0
    return f


def viterbi_f0(salience: np.ndarray, threshold: float = 0.3, width: int = 31, use_neg: bool = True) -> np.ndarray:
    """Melody / bass with Viterbi smoothing (as CREPE does): the most likely path through the 360 bins, with the
    per-frame salience (normalised to sum 1) as the observation likelihood and a triangular transition window of
    ``width`` bins (31 = +-3 semitones per frame); a frame whose path salience is < tau is unvoiced (-f or 0)."""
    import librosa

    s = _check(salience, threshold).astype(np.float64)
    prob = s + 1e-9
    prob /= prob.sum(axis=0, keepdims=True)
    path = librosa.sequence.viterbi(prob, librosa.sequence.transition_local(s.shape[0], width))
    f = freq_grid(s.shape[0])[path].astype(np.float64)
    unvoiced = s[path, np.arange(s.shape[1])] < threshold
    f[unvoiced] = -f[unvoiced] if use_neg else 0.0
    return f


def decode(salience: np.ndarray, task: str, threshold: float = 0.3, use_neg: bool = True, viterbi: bool = False):
    """(times, f0) for a task: multif0 -> list of arrays; melody/bass -> one array (argmax, or the Viterbi path
    with ``viterbi``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    times = time_grid(np.asarray(salience).shape[1])
    if task == "multif0":
        return times, multif0_peaks(salience, threshold)
    if viterbi:
        return times, viterbi_f0(salience, threshold, use_neg=use_neg)
    return times, single_f0(salience, threshold, use_neg=use_neg)


def sweep_threshold(saliences, references, task: str, thresholds=THRESHOLDS):
    """Pick tau on validation data: mean multipitch Accuracy (multif0) or Overall Accuracy (melody/bass).

    Args:
        saliences: list of (360, T) arrays.
        references: list of (ref_time, ref_freqs) per track, in mir_eval's format for the task.
    Returns:
        (best threshold, {threshold: score}).
    """
    from essence.metrics.pitch import melody_scores, multipitch_scores

    if len(saliences) != len(references) or not saliences:
        raise ValueError("sweep_threshold needs one reference per salience map and at least one track")
    table = {}
    for tau in thresholds:
        vals = []
        for sal, (rt, rf) in zip(saliences, references):
            et, ef = decode(sal, task, tau)
            if task == "multif0":
                vals.append(multipitch_scores(rt, rf, et, ef)["Accuracy"])
            else:
                vals.append(melody_scores(rt, rf, et, ef)["Overall Accuracy"])
        table[float(tau)] = float(np.mean(vals))
    best = max(table, key=lambda t: (table[t], -abs(t - 0.3)))
    return best, table


def salience_at(salience: np.ndarray, f0) -> list[np.ndarray]:
    """The salience under each decoded frequency (per frame an array like ``f0``'s; 0 for unvoiced frames)."""
    from essence.deep_salience.hcqt import FMIN

    out = []
    for t, f in enumerate(f0):
        f = np.atleast_1d(np.asarray(f, dtype=np.float64))
        b = np.clip(np.round(60 * np.log2(np.maximum(np.abs(f), 1e-9) / FMIN)).astype(int), 0, salience.shape[0] - 1)
        out.append(np.where(f > 0, salience[b, t], 0.0))
    return out


def refine_f0(salience: np.ndarray, f0):
    """Sub-bin pitch refinement and confidence of decoded F0 (the same structure as ``f0``).

    Each frequency moves to the salience-weighted mean bin of its peak and the two neighbours (a 20-cent grid
    refined to a continuous pitch); its confidence is the salience at the peak. Unvoiced values (<= 0) keep
    their sign and are refined the same way. Returns (refined f0, confidence).
    """
    from essence.deep_salience.hcqt import FMIN

    s = np.asarray(salience, dtype=np.float64)
    n_bins = s.shape[0]
    freqs_out, conf_out = [], []
    for t, f in enumerate(f0):
        f = np.asarray(f, dtype=np.float64)
        flat = np.atleast_1d(f)
        b = np.clip(np.round(60 * np.log2(np.maximum(np.abs(flat), 1e-9) / FMIN)).astype(int), 0, n_bins - 1)
        lo, hi = np.clip(b - 1, 0, n_bins - 1), np.clip(b + 1, 0, n_bins - 1)
        idx = np.stack([lo, b, hi])                              # (3, n)
        w = s[idx, t]
        tot = w.sum(axis=0)
        b_ref = np.where(tot > 0, (w * idx).sum(axis=0) / np.where(tot > 0, tot, 1), b)
        ref = np.where(flat != 0, np.sign(flat) * FMIN * 2.0 ** (b_ref / 60.0), 0.0)
        conf = np.where(flat != 0, s[b, t], 0.0)
        freqs_out.append(ref.reshape(f.shape) if f.ndim == 0 else ref)
        conf_out.append(conf.reshape(f.shape) if f.ndim == 0 else conf)
    if len(f0) and np.ndim(f0[0]) == 0:  # melody / bass: one value per frame
        return np.array(freqs_out, dtype=np.float64), np.array(conf_out, dtype=np.float64)
    return freqs_out, conf_out


def f0_to_note_events(times: np.ndarray, f0, confidence, min_duration: float = 0.05):
    """Notes with a velocity: (start s, end s, MIDI pitch, velocity 1..127, mean salience) per note, the
    velocity growing with the note's mean salience (``confidence``: :func:`salience_at` of the same ``f0``)."""
    notes = f0_to_notes(times, f0, min_duration)
    if not notes:
        return []
    times = np.asarray(times, dtype=np.float64)
    per_pitch: dict[int, list[tuple[int, float]]] = {}
    for t, (f, c) in enumerate(zip(f0, confidence)):
        f, c = np.atleast_1d(np.asarray(f, dtype=np.float64)), np.atleast_1d(np.asarray(c, dtype=np.float64))
        for fi, ci in zip(f, c):
            if fi > 0:
                per_pitch.setdefault(int(np.round(69 + 12 * np.log2(fi / 440.0))), []).append((t, ci))
    out = []
    for start, end, p in notes:
        vals = [c for t, c in per_pitch.get(p, []) if start - 1e-9 <= times[t] < end - 1e-9]
        mean = float(np.mean(vals)) if vals else 0.0
        out.append((start, end, p, int(np.clip(round(1 + 126 * mean), 1, 127)), mean))
    return out


def f0_to_notes(times: np.ndarray, f0, min_duration: float = 0.05) -> list[tuple[float, float, int]]:
    """Notes (start s, end s, MIDI pitch) from decoded F0: runs of consecutive frames on the same semitone.

    ``f0`` is either one frequency per frame (negative / 0 = unvoiced) or a list of arrays (multi-f0).
    Runs shorter than ``min_duration`` are dropped.
    """
    times = np.asarray(times, dtype=np.float64)
    hop = float(times[1] - times[0]) if len(times) > 1 else 256 / 22050
    frames = [np.atleast_1d(np.asarray(f, dtype=np.float64)) for f in f0]
    pitches = [set(np.round(69 + 12 * np.log2(f[f > 0] / 440.0)).astype(int).tolist()) for f in frames]
    notes, active = [], {}
    for i, ps in enumerate([*pitches, set()]):
        for p in list(active):
            if p not in ps:
                start = active.pop(p)
                end = times[i - 1] + hop
                if end - times[start] >= min_duration:
                    notes.append((float(times[start]), float(end), int(p)))
        for p in ps:
            active.setdefault(p, i)
    return sorted(notes)
