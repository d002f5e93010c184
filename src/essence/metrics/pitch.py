"""Pitch metrics (mir_eval): frame-level multi-f0 (``mir_eval.multipitch``) and melody (``mir_eval.melody``).

Conventions (mir_eval's):

* multi-f0: ``ref_freqs`` / ``est_freqs`` are lists with one 1-D array of frequencies (Hz) per frame (empty =
  silence). Estimates are resampled onto the reference time grid; a reference f0 is matched within 50 cents.
  Accuracy = TP / (TP + FP + FN); the error terms (substitution, miss, false alarm, total) follow Poliner & Ellis.
* melody: one frequency per frame; 0 means unvoiced, and an estimate may be **negative** to mark an unvoiced frame
  that still carries a pitch guess (the Deep Salience decoding does this), so RPA/RCA count it while VR/VFA do not.
  Both series are resampled to a 10 ms grid.

Functional forms return a dict of floats per track; the :class:`MultipitchScores` / :class:`MelodyScores`
classes accumulate tracks (also across torchrun processes) and report the per-track mean, as the paper does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from essence.metrics.base import Metric

__all__ = ["multipitch_scores", "melody_scores", "MultipitchScores", "MelodyScores", "MULTIPITCH_KEYS",
           "MELODY_KEYS"]

MULTIPITCH_KEYS = ("Precision", "Recall", "Accuracy", "Substitution Error", "Miss Error", "False Alarm Error",
                   "Total Error", "Chroma Precision", "Chroma Recall", "Chroma Accuracy")
MELODY_KEYS = ("Voicing Recall", "Voicing False Alarm", "Raw Pitch Accuracy", "Raw Chroma Accuracy",
               "Overall Accuracy")


def _times(times, name: str) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of frame times, got shape {t.shape}")
    if t.size and (not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0)):
        raise ValueError(f"{name} must be finite and non-decreasing")
    return t


def _ragged(freqs, n: int, name: str) -> list[np.ndarray]:
    out = [np.atleast_1d(np.asarray(f, dtype=np.float64)) for f in freqs]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} frames but its time array has {n}")
    for f in out:
        if not np.all(np.isfinite(f)):
            raise ValueError(f"{name} contains NaN or inf")
    return out


def multipitch_scores(ref_time: Sequence[float], ref_freqs: Sequence[Sequence[float]], est_time: Sequence[float],
                      est_freqs: Sequence[Sequence[float]]) -> dict[str, float]:
    """``mir_eval.multipitch.evaluate`` with input validation; keys as in :data:`MULTIPITCH_KEYS`."""
    import mir_eval

    rt, et = _times(ref_time, "ref_time"), _times(est_time, "est_time")
    rf, ef = _ragged(ref_freqs, len(rt), "ref_freqs"), _ragged(est_freqs, len(et), "est_freqs")
    if len(rt) == 0:
        raise ValueError("the reference is empty (no frames)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty estimates; the scores are still defined
        if len(et) == 0:
            et, ef = rt.copy(), [np.array([]) for _ in rt]
        scores = mir_eval.multipitch.evaluate(rt, rf, et, ef)
    return {k: float(scores[k]) for k in MULTIPITCH_KEYS}


def melody_scores(ref_time: Sequence[float], ref_freq: Sequence[float], est_time: Sequence[float],
                  est_freq: Sequence[float]) -> dict[str, float]:
    """``mir_eval.melody.evaluate`` with input validation; keys as in :data:`MELODY_KEYS`."""
    import mir_eval

    rt, et = _times(ref_time, "ref_time"), _times(est_time, "est_time")
    rf, ef = np.asarray(ref_freq, dtype=np.float64), np.asarray(est_freq, dtype=np.float64)
    if rf.shape != rt.shape or ef.shape != et.shape:
        raise ValueError(f"melody frequencies must have one value per frame: ref {rf.shape} vs {rt.shape}, "
                         f"est {ef.shape} vs {et.shape}")
    if not (np.all(np.isfinite(rf)) and np.all(np.isfinite(ef))):
        raise ValueError("melody frequencies contain NaN or inf")
    if len(rt) == 0:
        raise ValueError("the reference is empty (no frames)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = mir_eval.melody.evaluate(rt, np.abs(rf), et, ef)
    return {k: float(scores[k]) for k in MELODY_KEYS}


class _TrackMean(Metric):
    keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.add_state("rows", [], reduce="cat")

    def _add(self, scores: dict[str, float]) -> dict[str, float]:
        self.rows.append(torch.tensor([[scores[k] for k in self.keys]], dtype=torch.float64))
        return scores

    def _compute(self, rows: torch.Tensor) -> dict[str, float]:
        if rows.numel() == 0:
            return {k: float("nan") for k in self.keys} | {"tracks": 0}
        mean = rows.mean(dim=0)
        return {k: float(v) for k, v in zip(self.keys, mean)} | {"tracks": int(rows.shape[0])}


class MultipitchScores(_TrackMean):
    """Per-track mean of :func:`multipitch_scores` over many tracks (and processes)."""

    keys = MULTIPITCH_KEYS

    def update(self, ref_time, ref_freqs, est_time, est_freqs) -> dict[str, float]:
        return self._add(multipitch_scores(ref_time, ref_freqs, est_time, est_freqs))


class MelodyScores(_TrackMean):
    """Per-track mean of :func:`melody_scores` over many tracks (and processes)."""

    keys = MELODY_KEYS

    def update(self, ref_time, ref_freq, est_time, est_freq) -> dict[str, float]:
        return self._add(melody_scores(ref_time, ref_freq, est_time, est_freq))
