"""Training targets and patch sampling (Bittner et al. 2017, Sec. 3.3; the released ``compute_training_data.py``
and ``core.py``).

Targets: each annotated (time, f0) pair is put in the nearest frame and the nearest of the 360 bins (bin edges
are the midpoints between centres), the map is blurred along frequency with a Gaussian of sigma = 1 bin
(20 cents), divided by the smallest blurred value at an annotated cell (so annotated cells are exactly 1) and
clipped to [0, 1]. Neighbours end up at ~0.61, the next ones at ~0.14.

Patches: 360 bins x 50 frames, frequency offset 0, uniform random time offset, drawn through a stochastic mux
over 10 active tracks with replacement, each activated for Poisson(500) samples (pescador's ``StochasticMux``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from essence.deep_salience.hcqt import freq_grid

__all__ = ["annotation_target", "grid_to_bins", "Track", "PatchSampler", "Item", "build_split", "build_splits"]


def grid_to_bins(grid: np.ndarray, start: float, end: float) -> np.ndarray:
    """Bin edges around grid centres: [start, midpoints..., end]."""
    grid = np.asarray(grid, dtype=np.float64)
    return np.concatenate([[start], (grid[1:] + grid[:-1]) / 2.0, [end]])


def annotation_target(times: np.ndarray, freqs: np.ndarray, n_frames: int, *, frame_times: np.ndarray | None = None,
                      blur: bool = True, n_bins: int = 360) -> np.ndarray:
    """The (n_bins, n_frames) float32 training target from annotation pairs (times[i], freqs[i]) in s / Hz.

    Pairs with freq <= 0 (unvoiced) or outside the grid are dropped. ``blur=False`` gives the hard one-hot map.
    """
    times = np.asarray(times, dtype=np.float64).ravel()
    freqs = np.asarray(freqs, dtype=np.float64).ravel()
    if times.shape != freqs.shape:
        raise ValueError(f"times and freqs must pair up, got {times.shape} and {freqs.shape}")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(freqs))):
        raise ValueError("annotation contains NaN or inf")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if frame_times is None:
        frame_times = np.arange(n_frames) * 256 / 22050.0
    fgrid = freq_grid(n_bins)
    keep = freqs > 0
    # the original's last edge is frame_times[-1], which drops annotations in the last frame; extend by half a hop
    half = (frame_times[-1] - frame_times[-2]) / 2 if len(frame_times) > 1 else 128 / 22050.0
    t_idx = np.digitize(times[keep], grid_to_bins(frame_times, 0.0, frame_times[-1] + half)) - 1
    f_idx = np.digitize(freqs[keep], grid_to_bins(fgrid, 0.0, fgrid[-1])) - 1
    ok = (t_idx >= 0) & (t_idx < n_frames) & (f_idx >= 0) & (f_idx < n_bins)
    t_idx, f_idx = t_idx[ok], f_idx[ok]
    target = np.zeros((n_bins, n_frames), np.float64)
    target[f_idx, t_idx] = 1.0
    if blur and len(f_idx):
        target = gaussian_filter1d(target, 1.0, axis=0, mode="constant")
        target = np.minimum(target / target[f_idx, t_idx].min(), 1.0)
    return target.astype(np.float32)


@dataclass
class Track:
    """One training item: HCQT (C, 360, T) (float16 to halve memory) and its target (360, T)."""

    name: str
    hcqt: np.ndarray
    target: np.ndarray

    def __post_init__(self):
        if self.hcqt.ndim != 3 or self.target.ndim != 2 or self.hcqt.shape[1:] != self.target.shape:
            raise ValueError(f"track {self.name}: HCQT {self.hcqt.shape} and target {self.target.shape} disagree")


class PatchSampler:
    """Batches of (B, C, 360, n_t) HCQT patches and (B, 360, n_t) targets from a stochastic mux of tracks.

    Args:
        tracks: the training tracks (each at least ``n_t`` frames long).
        batch_size: patches per batch (16 in the paper).
        n_t: patch length in frames (50).
        n_active: tracks active in the mux at once (10).
        rate: mean number of samples drawn from a track per activation (Poisson, 500).
        seed: the sampler's own RNG seed.
        channels: which HCQT channels to keep (e.g. (1,) for the single-harmonic CQT ablation).
    """

    def __init__(self, tracks: list[Track], *, batch_size: int = 16, n_t: int = 50, n_active: int = 10,
                 rate: float = 500.0, seed: int = 1337, channels: tuple[int, ...] | None = None):
        self.tracks = [t for t in tracks if t.hcqt.shape[-1] >= n_t]
        if not self.tracks:
            raise ValueError(f"no track is at least {n_t} frames long")
        self.batch_size, self.n_t, self.rate = batch_size, n_t, rate
        self.channels = list(channels) if channels is not None else None
        self.rng = np.random.default_rng(seed)
        self.active = [self._activate() for _ in range(min(n_active, len(self.tracks)))]

    def _activate(self) -> list[int]:
        return [int(self.rng.integers(len(self.tracks))), int(self.rng.poisson(self.rate)) + 1]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        slot = int(self.rng.integers(len(self.active)))
        track = self.tracks[self.active[slot][0]]
        self.active[slot][1] -= 1
        if self.active[slot][1] <= 0:
            self.active[slot] = self._activate()
        t0 = int(self.rng.integers(track.hcqt.shape[-1] - self.n_t + 1))
        x = track.hcqt[:, :, t0:t0 + self.n_t]
        if self.channels is not None:
            x = x[self.channels]
        return x, track.target[:, t0:t0 + self.n_t]

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.sample() for _ in range(self.batch_size)))
        return (torch.from_numpy(np.stack(xs).astype(np.float32)),
                torch.from_numpy(np.stack(ys).astype(np.float32)))


# ----------------------------------------------------------------------------------------------------------
# the rendered-chorale dataset
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Item:
    """One rendered chorale with its HCQT (6, 360, T) float16 and exact labels on the frame grid."""

    name: str
    audio: np.ndarray
    hcqt: np.ndarray
    times: np.ndarray
    multif0: list[np.ndarray]     # all voices
    melody: np.ndarray            # soprano (0 = silent)
    bass: np.ndarray              # bass voice (0 = silent)

    def labels(self, task: str):
        return self.multif0 if task == "multif0" else self.melody if task == "melody" else self.bass

    def target(self, task: str, blur: bool = True) -> np.ndarray:
        lab = self.labels(task)
        if task == "multif0":
            t = np.concatenate([np.full(len(f), tt) for tt, f in zip(self.times, lab)])
            f = np.concatenate(lab) if len(lab) else np.array([])
        else:
            t, f = self.times, np.asarray(lab)
        return annotation_target(t, f, len(self.times), frame_times=self.times, blur=blur)


def build_split(split: str, n: int, *, max_seconds: float = 0.0, augment: bool = False, renders: int = 1,
                soundfont: str = "", seed: int = 0, device: str = "cpu", progress: bool = True,
                instruments: str = "train", segments: int = 1) -> list[Item]:
    """Render the first ``n`` chorales of a split (name order) and compute their HCQTs and labels.

    ``segments`` > 1 renders ``segments * max_seconds`` of each chorale and cuts it into consecutive clips of
    ``max_seconds`` (a split with few chorales then still gives many clips; clips of one chorale share its
    instruments and tempo).

    ``instruments`` (with ``augment``): ``"train"`` draws each voice's instrument from the training pools,
    ``"held_out"`` from instruments that no training pool contains (out-of-domain validation / test).
    ``soundfont``: a .sf2 path or a known name (``fluidr3``); "" = TimGM6mb.
    """
    from essence.core.progress import progress as bar
    from essence.data.chorales import (
        HELD_OUT_POOLS,
        TRAIN_POOLS,
        chorale_paths,
        chorale_split,
        load_chorale,
        render_chorale,
    )

    if segments < 1 or (segments > 1 and not max_seconds):
        raise ValueError(f"segments must be >= 1 and needs max_seconds > 0 when > 1, got {segments}")
    if instruments not in ("train", "held_out"):
        raise ValueError(f"instruments must be 'train' or 'held_out', got {instruments!r}")
    pools = HELD_OUT_POOLS if instruments == "held_out" else TRAIN_POOLS
    from essence.deep_salience.hcqt import HCQT, time_grid

    paths = [p for p in chorale_paths() if chorale_split(p.stem) == split]
    hcqt = HCQT(device=device)
    items: list[Item] = []
    it = iter(paths)
    for _ in bar(range(n), desc=f"render {split}", unit="chorale", disable=not progress):
        chorale = None
        while chorale is None:
            path = next(it, None)
            if path is None:
                raise ValueError(f"the {split} split has fewer than {n} four-voice chorales")
            chorale = load_chorale(path)
        for r in range(renders):
            rend = render_chorale(chorale, augment=augment, seed=seed + r,
                                  max_seconds=(max_seconds * segments) or None, soundfont=soundfont or None,
                                  pools=pools)
            n = int(max_seconds * 22050) if max_seconds and segments > 1 else len(rend.audio)
            for k in range(segments):
                audio = rend.audio[k * n: (k + 1) * n]
                if len(audio) < n // 2 or len(audio) < 22050:  # a short remainder at the end of the piece
                    break
                X = hcqt(audio).cpu().numpy().astype(np.float16)
                times = time_grid(X.shape[-1])
                t_abs = times + k * n / 22050.0   # labels of the segment: the render's notes, shifted
                name = f"{rend.name}#{r}" + (f"@{k}" if segments > 1 else "")
                items.append(Item(name, audio, X, times, rend.f0_on_grid(t_abs), rend.voice_on_grid(t_abs, 0),
                                  rend.voice_on_grid(t_abs, 3)))
    return items


def build_splits(dc, *, device: str = "cpu", progress: bool = True) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, validation, test) items of a preset's :class:`~essence.deep_salience.config.DataConfig` ``dc``:
    training renders with ``dc.soundfont``; validation and test with the evaluation soundfont, instruments and
    clip length (``eval_*``; held-out instruments also get the augmentation) when the preset sets them."""
    held_out = dc.eval_instruments == "held_out"
    ev = dict(max_seconds=dc.eval_seconds or dc.max_seconds, soundfont=dc.eval_soundfont or dc.soundfont,
              device=device, progress=progress, augment=held_out, instruments="held_out" if held_out else "train",
              segments=dc.eval_segments)
    train = build_split("train", dc.n_train, augment=dc.augment, renders=dc.renders_per_chorale,
                        max_seconds=dc.max_seconds, soundfont=dc.soundfont, device=device, progress=progress)
    return train, build_split("validation", dc.n_validation, **ev), build_split("test", dc.n_test, **ev)
