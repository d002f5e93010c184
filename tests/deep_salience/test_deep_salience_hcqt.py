"""HCQT: torch implementation vs the librosa reference (the original compute_hcqt), and the log scaling."""

import librosa
import numpy as np
import pytest
import torch

from essence.deep_salience.hcqt import HARMONICS, HCQT, N_BINS, freq_grid, hcqt_reference, log_scale, log_scale_torch


def _signal(seconds=3.0, sr=22050, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(0.3 / k * np.sin(2 * np.pi * 196.0 * k * t) for k in range(1, 8))
    y = y + 0.2 * np.sin(2 * np.pi * 1480.0 * t) * (t > 1.0) + 0.02 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def test_torch_hcqt_matches_librosa_reference_per_channel():
    y = _signal()
    ref = hcqt_reference(y, log=False)
    fast = HCQT()(y, log=False).numpy()
    assert ref.shape == fast.shape == (6, N_BINS, 1 + len(y) // 256)
    for c in range(len(HARMONICS)):
        rel = np.linalg.norm(fast[c] - ref[c]) / np.linalg.norm(ref[c])
        assert rel <= 1e-3, (c, rel)      # the tolerance; measured ~3e-7
    log_ref, log_fast = log_scale(ref), HCQT()(y).numpy()
    assert np.abs(log_ref - log_fast).max() < 1e-3


def test_odd_length_and_other_sample_rate():
    y = _signal(1.3)[:28001]
    ref = hcqt_reference(y, log=False)
    fast = HCQT()(y, log=False).numpy()
    assert ref.shape == fast.shape
    assert np.linalg.norm(fast - ref) / np.linalg.norm(ref) < 1e-3
    y44 = librosa.resample(y, orig_sr=22050, target_sr=44100)
    ref44 = np.abs(librosa.cqt(y44, sr=44100, hop_length=256, fmin=32.7 * 3, n_bins=360, bins_per_octave=60))
    fast44 = HCQT(sr=44100, harmonics=(3.0,))(y44, log=False).numpy()[0]
    n = min(ref44.shape[1], fast44.shape[1])
    assert np.linalg.norm(fast44[:, :n] - ref44[:, :n]) / np.linalg.norm(ref44[:, :n]) < 1e-3


def test_log_scale_is_the_originals_amplitude_to_db():
    mag = np.abs(np.random.default_rng(1).standard_normal((6, 360, 20))).astype(np.float32) ** 4
    expected = librosa.amplitude_to_db(mag, ref=np.max) / 80.0 + 1.0
    assert np.allclose(log_scale(mag), expected, atol=1e-6)
    assert np.allclose(log_scale_torch(torch.from_numpy(mag)).numpy(), expected, atol=1e-5)
    assert log_scale(mag).min() >= 0.0 and log_scale(mag).max() == pytest.approx(1.0)


def test_harmonic_stacking_puts_partials_on_the_f0_bin():
    """Bin k of channel h has frequency h * f_k: a 220 Hz harmonic tone peaks at the same bin in every channel."""
    sr = 22050
    t = np.arange(sr) / sr
    y = sum(np.sin(2 * np.pi * 220.0 * k * t) for k in (1, 2, 3, 4, 5)).astype(np.float32)
    X = HCQT(harmonics=(1.0, 2.0, 3.0, 4.0, 5.0))(y, log=False).numpy()[:, :, 20:60].mean(axis=2)
    f0_bin = int(np.argmin(np.abs(freq_grid() - 220.0)))
    for c in range(5):
        window = X[c, f0_bin - 10: f0_bin + 11]
        assert abs(int(np.argmax(window)) - 10) <= 1, c


def test_hcqt_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mono"):
        HCQT()(np.zeros((2, 1000), np.float32))
