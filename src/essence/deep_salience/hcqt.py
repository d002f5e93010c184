"""The harmonic constant-Q transform (HCQT) of Deep Salience (Bittner et al., ISMIR 2017, Sec. 3.1).

One CQT per harmonic h in (0.5, 1, 2, 3, 4, 5), each with f_min = h * 32.7 Hz, 60 bins per octave, 6 octaves
(360 bins), hop 256 at 22,050 Hz, stacked into (6, 360, T) and log-scaled as the original code does:
``X = amplitude_to_db(|HCQT|, ref=max) / 80 + 1``, values in [0, 1].

Two implementations that agree to a stated tolerance (tests/deep_salience/test_deep_salience_hcqt.py):

* :func:`hcqt_reference` calls ``librosa.cqt`` once per harmonic, exactly like the original
  ``predict_on_audio.compute_hcqt``. It is the oracle.
* :class:`HCQT` computes the same transform batched in torch (CPU or GPU). It replays librosa's multirate
  algorithm: the same sparsified frequency-domain wavelet bases (built once per plan with librosa's public
  ``filters.wavelet``), the same early downsampling and octave-by-octave halving with the same resampler
  (soxr "HQ", on the CPU, which is cheap), then all 36 (harmonic, octave) framings, FFTs and filter-bank
  products in a few batched tensor ops. Each filter bank is applied only to the band of FFT bins where it is
  non-zero. Measured relative L2 error against the reference is ~1e-6 per channel (float32 round-off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

__all__ = ["SR", "HOP_LENGTH", "FMIN", "BINS_PER_OCTAVE", "N_OCTAVES", "N_BINS", "HARMONICS", "HCQT",
           "hcqt_reference", "log_scale", "log_scale_torch", "freq_grid", "time_grid", "hcqt_torch"]

SR = 22050
HOP_LENGTH = 256
FMIN = 32.7
BINS_PER_OCTAVE = 60
N_OCTAVES = 6
N_BINS = BINS_PER_OCTAVE * N_OCTAVES
HARMONICS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
TOP_DB = 80.0


def freq_grid(n_bins: int = N_BINS, fmin: float = FMIN, bins_per_octave: int = BINS_PER_OCTAVE) -> np.ndarray:
    """Centre frequencies (Hz) of the salience bins: ``fmin * 2 ** (k / 60)``, 32.7 .. 1975.5 Hz."""
    return fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)


def time_grid(n_frames: int, sr: int = SR, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Frame times (s); frames are centred (frame t <-> sample t * hop), as in librosa."""
    return np.arange(n_frames) * hop_length / float(sr)


# ----------------------------------------------------------------------------------------------------------
# log scaling (the original's amplitude_to_db(ref=np.max) / 80 + 1)
# ----------------------------------------------------------------------------------------------------------
def log_scale(magnitude: np.ndarray, ref: float | None = None) -> np.ndarray:
    """``amplitude_to_db(magnitude, ref=ref or max, amin=1e-5, top_db=80) / 80 + 1`` in NumPy."""
    ref = float(np.max(magnitude)) if ref is None else float(ref)
    db = 20.0 * np.log10(np.maximum(1e-5, magnitude)) - 20.0 * np.log10(max(1e-5, ref))
    db = np.maximum(db, -TOP_DB)  # top_db clip: the maximum is 0 dB when ref is the maximum
    return (db / TOP_DB + 1.0).astype(np.float32)


def log_scale_torch(magnitude: torch.Tensor, ref: float | torch.Tensor | None = None) -> torch.Tensor:
    """Torch twin of :func:`log_scale` (``ref`` defaults to the tensor's max, as the original does)."""
    ref_t = magnitude.max() if ref is None else torch.as_tensor(ref, dtype=magnitude.dtype, device=magnitude.device)
    db = 20.0 * torch.log10(magnitude.clamp_min(1e-5)) - 20.0 * torch.log10(ref_t.clamp_min(1e-5))
    return db.clamp_min(-TOP_DB) / TOP_DB + 1.0


# ----------------------------------------------------------------------------------------------------------
# reference: librosa.cqt per harmonic (the original compute_hcqt)
# ----------------------------------------------------------------------------------------------------------
def hcqt_reference(y: np.ndarray, sr: int = SR, *, harmonics=HARMONICS, log: bool = True,
                   legacy: bool = False) -> np.ndarray:
    """The original ``compute_hcqt`` on a mono signal already at ``sr``: (len(harmonics), 360, T) float32.

    ``legacy=True`` emulates the defaults of the librosa of 2017 (0.5) that the released weights were trained
    with, as far as today's librosa exposes them: the tuning estimated from the signal on every call
    (``tuning=None``), reflect padding of the frames (``pad_mode='reflect'``) and resampy's ``kaiser_best``
    resampler for the early downsampling. It is an emulation, not the 0.5 code (``benchmarks/deep_salience.py
    --drift`` measures how much it matters).
    """
    import librosa

    extra = dict(tuning=None, pad_mode="reflect", res_type="kaiser_best") if legacy else {}
    cqts = [np.abs(librosa.cqt(np.asarray(y, dtype=np.float32), sr=sr, hop_length=HOP_LENGTH, fmin=FMIN * h,
                               n_bins=N_BINS, bins_per_octave=BINS_PER_OCTAVE, **extra)) for h in harmonics]
    n_frames = min(c.shape[1] for c in cqts)
    mag = np.stack([c[:, :n_frames] for c in cqts]).astype(np.float32)
    return log_scale(mag) if log else mag


# ----------------------------------------------------------------------------------------------------------
# the torch HCQT
# ----------------------------------------------------------------------------------------------------------
def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    """alpha per bin from the local octave resolution (librosa.filters._relative_bandwidth, same formula)."""
    logf = np.log2(freqs)
    bpo = np.empty_like(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def _early_downsample_count(nyquist: float, filter_cutoff: float, hop_length: int, n_octaves: int) -> int:
    count1 = max(0, int(np.ceil(np.log2(nyquist / filter_cutoff)) - 1) - 1)
    twos = 0
    h = hop_length
    while h > 0 and h % 2 == 0:
        twos += 1
        h //= 2
    count2 = max(0, twos - n_octaves + 1)
    return min(count1, count2)


@dataclass
class _Entry:
    """One (harmonic, octave) filter bank applied to one resampled signal."""

    harmonic: int           # index into harmonics
    octave: int             # 0 = top octave
    signal: tuple[int, int]  # (early downsample count, number of halvings after it)
    hop: int
    n_fft: int
    lo: int                 # first non-zero FFT bin of the basis
    basis: np.ndarray       # (60, width) complex64, columns lo .. lo + width


@dataclass
class _Plan:
    sr: int
    entries: list[_Entry] = field(default_factory=list)
    scale: np.ndarray | None = None  # (H, 360) 1 / sqrt(lengths)


@lru_cache(maxsize=8)
def _plan(sr: int, harmonics: tuple[float, ...], hop_length: int = HOP_LENGTH) -> _Plan:
    import librosa

    plan = _Plan(sr=sr)
    scales = []
    for hi, h in enumerate(harmonics):
        freqs = freq_grid(fmin=FMIN * h)
        alpha = _relative_bandwidth(freqs)
        _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window="hann", filter_scale=1,
                                                    gamma=0, alpha=alpha)
        if cutoff > sr / 2.0:
            raise ValueError(f"harmonic {h}: the CQT's top filter ({cutoff:.0f} Hz) exceeds the Nyquist "
                             f"frequency of {sr} Hz audio")
        count = _early_downsample_count(sr / 2.0, cutoff, hop_length, N_OCTAVES)
        sr_e, hop = sr / 2**count, hop_length // 2**count
        lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr_e, window="hann", filter_scale=1,
                                                     gamma=0, alpha=alpha)
        scales.append(1.0 / np.sqrt(lengths))
        my_sr = sr_e
        for i in range(N_OCTAVES):
            sl = slice(-BINS_PER_OCTAVE, None) if i == 0 else slice(-BINS_PER_OCTAVE * (i + 1),
                                                                      -BINS_PER_OCTAVE * i)
            basis, lens = librosa.filters.wavelet(freqs=freqs[sl], sr=my_sr, filter_scale=1, norm=1, pad_fft=True,
                                                  window="hann", gamma=0, alpha=alpha[sl])
            n_fft = basis.shape[1]
            basis = basis * (lens[:, None] / float(n_fft))
            fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
            fft_basis = librosa.util.sparsify_rows(fft_basis, quantile=0.01, dtype=np.complex64).toarray()
            fft_basis *= np.sqrt(sr_e / my_sr)
            cols = np.flatnonzero(np.abs(fft_basis).sum(axis=0) > 0)
            lo, end = int(cols[0]), int(cols[-1]) + 1
            plan.entries.append(_Entry(hi, i, (count, i), hop, n_fft, lo,
                                       np.ascontiguousarray(fft_basis[:, lo:end]).astype(np.complex64)))
            if hop % 2 == 0:
                hop //= 2
                my_sr /= 2.0
            else:
                raise ValueError(f"hop length {hop_length} must be divisible by 2**{N_OCTAVES + count}")
    plan.scale = np.stack(scales).astype(np.float32)
    return plan


def _resampled_signals(y: np.ndarray, keys: set[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """The early-downsampled (factor 2**c, one soxr call) and then halved signals librosa would use."""
    import soxr

    out: dict[tuple[int, int], np.ndarray] = {}

    def get(key: tuple[int, int]) -> np.ndarray:
        if key in out:
            return out[key]
        c, i = key
        if i == 0:
            sig = y if c == 0 else _soxr_down(y, 2**c, soxr)
        else:
            sig = _soxr_down(get((c, i - 1)), 2, soxr)
        out[key] = sig
        return sig

    for key in sorted(keys):
        get(key)
    return out


def _soxr_down(x: np.ndarray, factor: int, soxr) -> np.ndarray:
    """``librosa.resample(x, orig_sr=factor, target_sr=1, res_type='soxr_hq', scale=True)``."""
    n_out = int(math.ceil(len(x) / factor))
    y = soxr.resample(x, factor, 1, quality="soxr_hq")
    y = np.asarray(y, dtype=np.float32)
    if len(y) != n_out:  # librosa fixes the length to ceil(n / factor)
        y = np.pad(y, (0, max(0, n_out - len(y))))[:n_out]
    return y * np.float32(np.sqrt(factor))  # scale=True divides by sqrt(target/orig)


class HCQT:
    """Batched torch HCQT (CPU or GPU) that matches :func:`hcqt_reference`.

    >>> hcqt = HCQT(device="cpu")
    >>> X = hcqt(y)                       # (6, 360, T) float32 tensor, log-scaled to [0, 1]
    >>> M = hcqt(y, log=False)            # magnitudes, for chunked use with a global reference

    Args:
        sr: sample rate of the input signals (22,050 in the paper).
        harmonics: the harmonics h (f_min of channel h is h * 32.7 Hz).
        device: where the FFTs and filter banks run; resampling runs on the CPU with soxr.
    """

    def __init__(self, sr: int = SR, harmonics=HARMONICS, device: str | torch.device = "cpu"):
        self.sr = int(sr)
        self.harmonics = tuple(float(h) for h in harmonics)
        self.device = torch.device(device)
        self.plan = _plan(self.sr, self.harmonics)
        self._groups = self._build_groups()

    def _build_groups(self):
        """Entries grouped by n_fft; bases padded to one band width per group and moved to the device."""
        groups = {}
        for idx, e in enumerate(self.plan.entries):
            groups.setdefault(e.n_fft, []).append(idx)
        out = []
        for n_fft, idxs in groups.items():
            width = max(self.plan.entries[i].basis.shape[1] for i in idxs)
            width = min(width, n_fft // 2 + 1)
            basis = np.zeros((len(idxs), BINS_PER_OCTAVE, width), np.complex64)
            los = []
            for g, i in enumerate(idxs):
                e = self.plan.entries[i]
                lo = min(e.lo, n_fft // 2 + 1 - width)
                basis[g, :, e.lo - lo: e.lo - lo + e.basis.shape[1]] = e.basis
                los.append(lo)
            out.append((n_fft, idxs, los, width, torch.from_numpy(basis).to(self.device)))
        return out

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // HOP_LENGTH

    @torch.no_grad()
    def __call__(self, y: np.ndarray | torch.Tensor, *, log: bool = True,
                 ref: float | None = None) -> torch.Tensor:
        """HCQT of a mono float signal at ``self.sr``: (H, 360, T) on ``self.device``."""
        y = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
        y = np.ascontiguousarray(y, dtype=np.float32)
        if y.ndim != 1:
            raise ValueError(f"HCQT expects a mono signal of shape (n_samples,), got shape {y.shape}")
        entries = self.plan.entries
        signals = _resampled_signals(y, {e.signal for e in entries})
        # frames per entry: centred STFT, n_frames = 1 + len // hop; trimmed to the smallest count (librosa)
        n_frames = min(1 + len(signals[e.signal]) // e.hop for e in entries)
        n_h = len(self.harmonics)
        out = torch.empty(n_h, N_BINS, n_frames, device=self.device)
        padded: dict[tuple[tuple[int, int], int], torch.Tensor] = {}
        jobs = []
        for n_fft, idxs, los, width, basis in self._groups:
            for g, i in enumerate(idxs):
                e = entries[i]
                key = (e.signal, n_fft)
                if key not in padded:  # centred frames: zero-pad n_fft // 2 on both sides (pad_mode constant)
                    sig = signals[e.signal]
                    need = max(len(sig) + 2 * (n_fft // 2), (n_frames - 1) * e.hop + n_fft)
                    buf = np.zeros(need, np.float32)
                    buf[n_fft // 2: n_fft // 2 + len(sig)] = sig
                    padded[key] = torch.from_numpy(buf).to(self.device)
                jobs.append((padded[key], e, n_fft, los[g], width, basis[g]))

        def run(job) -> None:
            sig, e, n_fft, lo, width, basis_g = job
            frames = sig.unfold(0, n_fft, e.hop)[:n_frames]                     # (T, n_fft), a view
            band = torch.fft.rfft(frames, dim=-1)[:, lo:lo + width]             # (T, W)
            top = N_BINS - BINS_PER_OCTAVE * e.octave
            out[e.harmonic, top - BINS_PER_OCTAVE: top] = torch.matmul(basis_g, band.T).abs()

        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            # coarse-grained parallelism over the 36 (harmonic, octave) jobs, one intra-op thread each: many
            # small ops with intra-op threads stall badly when the cores are shared with other processes
            from concurrent.futures import ThreadPoolExecutor

            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(n) as pool:
                    list(pool.map(run, jobs))
            finally:
                torch.set_num_threads(n)
        else:
            for job in jobs:
                run(job)
        out *= torch.from_numpy(self.plan.scale).to(self.device)[:, :, None]
        return log_scale_torch(out, ref) if log else out


def hcqt_torch(y: np.ndarray, sr: int = SR, device: str = "cpu", log: bool = True) -> torch.Tensor:
    """Convenience: ``HCQT(sr, device=device)(y, log=log)``."""
    return HCQT(sr, device=device)(y, log=log)
