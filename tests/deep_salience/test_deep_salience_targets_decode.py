"""Targets (Gaussian-blurred F0 bins), decoding (peak picking, argmax + voicing) and the mir_eval wiring."""

import numpy as np
import pytest
from scipy.signal import argrelmax

from essence.deep_salience.data import PatchSampler, Track, annotation_target
from essence.deep_salience.decode import decode, f0_to_notes, multif0_peaks, single_f0, sweep_threshold
from essence.deep_salience.hcqt import freq_grid, time_grid
from essence.metrics.pitch import MelodyScores, MultipitchScores, melody_scores, multipitch_scores

F = freq_grid()


def test_target_values_follow_the_blurred_renormalised_formula():
    # f slightly off-centre still goes to its nearest bin (edges = midpoints between centres)
    times = [0.0, 0.0, 256 / 22050 * 3]
    freqs = [F[100] * 2 ** (9 / 1200), F[200], F[50] * 2 ** (-9 / 1200)]
    y = annotation_target(times, freqs, 6)
    assert y.shape == (360, 6) and y.dtype == np.float32
    g = np.exp(-0.5 * np.arange(-3, 4) ** 2)          # sigma = 1 bin, renormalised so the centre is exactly 1
    assert np.allclose(y[97:104, 0], g, atol=1e-3)    # truncation of the scipy kernel aside
    assert np.allclose(y[197:204, 0], g, atol=1e-3)
    assert np.allclose(y[47:54, 3], g, atol=1e-3)
    assert y[:, [1, 2, 4, 5]].max() == 0.0            # blur is along frequency only
    assert y[100, 0] == 1.0 and abs(y[101, 0] - 0.6065) < 1e-3 and abs(y[102, 0] - 0.1353) < 1e-3


def test_target_nearest_bin_boundary_and_unvoiced():
    mid = (F[10] + F[11]) / 2                         # arithmetic midpoints, as the original grid_to_bins
    y = annotation_target([0.0, 0.0, 0.0], [mid * 0.9999, 0.0, 5000.0], 1, blur=False)
    assert y[:, 0].nonzero()[0].tolist() == [10]      # unvoiced (0 Hz) and off-grid (5 kHz) pairs are dropped
    y = annotation_target([0.0], [mid * 1.0001], 1, blur=False)
    assert y[:, 0].nonzero()[0].tolist() == [11]
    with pytest.raises(ValueError, match="NaN"):
        annotation_target([0.0], [np.nan], 1)


def test_multif0_peaks_equals_the_originals_argrelmax_threshold():
    rng = np.random.default_rng(0)
    s = rng.random((360, 40)).astype(np.float32) ** 3
    got = multif0_peaks(s, 0.4)
    peaks = np.zeros_like(s)
    idx = argrelmax(s, axis=0)
    peaks[idx] = s[idx]
    for t in range(40):
        expected = F[np.nonzero(peaks[:, t] >= 0.4)[0]]
        assert np.allclose(got[t], expected)


def test_single_f0_argmax_and_negative_unvoiced():
    s = np.zeros((360, 3), np.float32)
    s[120, 0], s[50, 1], s[200, 2] = 0.9, 0.2, 0.31
    f = single_f0(s, 0.3)
    assert np.allclose(f, [F[120], -F[50], F[200]])
    assert single_f0(s, 0.3, use_neg=False)[1] == 0.0
    times, f2 = decode(s, "melody", 0.3)
    assert np.allclose(times, np.arange(3) * 256 / 22050) and np.allclose(f2, f)
    with pytest.raises(ValueError, match="task"):
        decode(s, "drums")
    with pytest.raises(ValueError, match="NaN"):
        single_f0(np.full((360, 2), np.nan), 0.3)


def test_multipitch_wiring_against_hand_counts():
    t = np.arange(4) * 0.01
    ref = [np.array([440.0]), np.array([440.0, 220.0]), np.array([]), np.array([330.0])]
    est = [np.array([445.0]), np.array([440.0]), np.array([100.0]), np.array([330.0 * 2 ** (60 / 1200)])]
    s = multipitch_scores(t, ref, t, est)
    tp, n_ref, n_est = 2, 4, 4                       # 445 Hz is 20 cents off (match), 330*2^(60/1200) is not
    assert s["Precision"] == pytest.approx(tp / n_est)
    assert s["Recall"] == pytest.approx(tp / n_ref)
    assert s["Accuracy"] == pytest.approx(tp / (tp + (n_est - tp) + (n_ref - tp)))
    assert s["Miss Error"] == pytest.approx(1 / 4)    # frame 2 misses one of two references
    m = MultipitchScores()
    m.update(t, ref, t, est)
    m.update(t, ref, t, ref)
    out = m.compute()
    assert out["tracks"] == 2 and out["Accuracy"] == pytest.approx((s["Accuracy"] + 1.0) / 2)


def test_melody_wiring_with_negative_unvoiced_convention():
    t = np.arange(100) * 0.01
    ref = np.where(np.arange(100) < 50, 440.0, 0.0)
    est = np.where(np.arange(100) < 50, 440.0, 0.0)
    est[:10] = -440.0                                # unvoiced guess with the right pitch
    s = melody_scores(t, ref, t, est)
    assert s["Voicing Recall"] == pytest.approx(0.8)
    assert s["Raw Pitch Accuracy"] == pytest.approx(1.0)   # pitch counted although unvoiced
    assert s["Voicing False Alarm"] == 0.0
    assert s["Overall Accuracy"] == pytest.approx(0.9)
    m = MelodyScores()
    m.update(t, ref, t, est)
    assert m.compute()["Overall Accuracy"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="one value per frame"):
        melody_scores(t, ref[:5], t, est)


def test_threshold_sweep_peaks_at_the_right_tau():
    rng = np.random.default_rng(0)
    ref_bins = rng.integers(60, 300, size=(50, 2))
    s = (rng.random((360, 50)) * 0.25).astype(np.float32)
    for t, (a, b) in enumerate(ref_bins):
        s[a, t], s[b, t] = 0.7, 0.55
    refs = [(time_grid(50), [F[np.unique(r)] for r in ref_bins])]
    best, table = sweep_threshold([s], refs, "multif0")
    assert best in (0.3, 0.4, 0.5) and table[best] == pytest.approx(1.0)
    assert table[0.1] < table[best] and table[0.9] < table[best]


def test_f0_to_notes():
    times = time_grid(20)
    f0 = np.where(np.arange(20) < 10, 440.0, -440.0)
    notes = f0_to_notes(times, f0)
    assert notes == [(0.0, pytest.approx(10 * 256 / 22050), 69)]


def test_patch_sampler_shapes_and_mux():
    tracks = [Track(f"t{i}", np.full((6, 360, 80), i, np.float16), np.full((360, 80), i, np.float32))
              for i in range(12)]
    sampler = PatchSampler(tracks, batch_size=16, n_t=50, n_active=10, rate=5, seed=0)
    seen = set()
    for _ in range(30):
        x, y = sampler.batch()
        assert x.shape == (16, 6, 360, 50) and y.shape == (16, 360, 50)
        assert np.all(x[:, 0, 0, 0].numpy() == y[:, 0, 0].numpy())  # patch and target come from the same track
        seen |= set(y[:, 0, 0].int().tolist())
    assert len(seen) == 12                            # streams are replaced after their Poisson budget
