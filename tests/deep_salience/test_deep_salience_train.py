"""Training pieces: the bkld loss, config validation, a short training run, checkpoints, chorale labels, and
the tiny reproduction."""

import numpy as np
import pytest
import torch

from essence.deep_salience.config import PRESETS
from essence.deep_salience.data import Item
from essence.deep_salience.hcqt import freq_grid, time_grid
from essence.deep_salience.train import bkld, load_essence_checkpoint, salience_of, save_model, train


def test_bkld_equals_the_keras_formula():
    rng = np.random.default_rng(0)
    y = rng.random((2, 360, 5)).astype(np.float32)
    p = rng.random((2, 360, 5)).astype(np.float32)
    p[0, 0, 0], y[0, 0, 1] = 0.0, 1.0                  # clipping at eps = 1e-7 keeps it finite
    yc, pc = np.clip(y, 1e-7, 1 - 1e-7), np.clip(p, 1e-7, 1 - 1e-7)
    expected = np.mean(-yc * np.log(pc) - (1 - yc) * np.log(1 - pc))
    assert float(bkld(torch.from_numpy(p), torch.from_numpy(y))) == pytest.approx(expected, rel=1e-5)


def test_config_validation_and_overrides():
    cfg = PRESETS.build("paper")
    assert cfg.model.widths == (128, 64, 64, 64, 8) and cfg.optim.lr == 1e-3 and cfg.train.early_stopping == 25
    assert PRESETS.build("tiny", ["model.harmonics=1.0"]).model.channels == (1,)
    with pytest.raises(ValueError, match="widths"):
        PRESETS.build("tiny", ["model.widths=1,2,3"])
    with pytest.raises(ValueError, match="harmonics"):
        PRESETS.build("tiny", ["model.harmonics=7.0"])
    with pytest.raises(ValueError):
        PRESETS.build("tiny", ["train.task=drums"])


def _items(n, seed):
    """Synthetic items whose HCQT holds a bump at the label bin: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = 80
        bins = rng.integers(40, 320, size=T // 10).repeat(10)
        X = (rng.random((6, 360, T)) * 0.1).astype(np.float16)
        X[:, bins, np.arange(T)] = 1.0
        times = time_grid(T)
        f = freq_grid()[bins]
        out.append(Item(f"s{i}", np.zeros(T * 256, np.float32), X, times, [np.array([x]) for x in f], f, f))
    return out


def test_short_training_lowers_the_loss_and_round_trips_a_checkpoint(tmp_path):
    cfg = PRESETS.build("tiny", ["train.steps_per_epoch=8", "train.max_epochs=2", "optim.lr=0.003",
                                 "train.lr_patience=5", "optim.batch_size=4", "optim.patch_frames=20"])
    items = _items(3, 0)
    res = train(cfg, items, _items(2, 1), progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert res.steps == 16 and losses[1] < losses[0]
    path = save_model(tmp_path / "m.safetensors", res.model, cfg, threshold=0.4)
    model, cfg2, state = load_essence_checkpoint(path)
    assert cfg2 == cfg and state["threshold"] == 0.4 and state["task"] == "multif0"
    a, b = salience_of(res.model, items[:1])[0], salience_of(model, items[:1])[0]
    assert np.array_equal(a, b)


def test_rendered_chorale_labels_match_the_score():
    pytest.importorskip("tinysoundfont")
    from essence.data.chorales import Chorale, midi_to_hz, render_chorale

    c = Chorale("toy", (((0.0, 1.0, 72),), ((0.0, 2.0, 67),), ((1.0, 1.0, 60),), ((0.0, 2.0, 48),)))
    r = render_chorale(c, bpm=60.0, cache=False)             # 1 quarter = 1 s
    assert len(r.audio) == pytest.approx(2.5 * 22050, abs=2)
    times = np.array([0.5, 1.5, 2.2])
    f = r.f0_on_grid(times)
    assert np.allclose(f[0], midi_to_hz([48, 67, 72])) and np.allclose(f[1], midi_to_hz([48, 60, 67]))
    assert len(f[2]) == 0
    assert np.allclose(r.voice_on_grid(times, 0), [midi_to_hz(72), 0, 0])
    # the audio really has that pitch: the soprano's C5 is the strongest h=1 peak above C5 - 1 semitone
    from essence.deep_salience.hcqt import HCQT

    X = HCQT(harmonics=(1.0,))(r.audio).numpy()[0]
    col = X[:, int(0.5 * 22050 / 256)]
    k = int(np.argmin(np.abs(freq_grid() - midi_to_hz(72))))
    assert abs(int(np.argmax(col[k - 5:])) - 5) <= 1
    aug = render_chorale(c, augment=True, seed=1, cache=False)
    assert aug.programs != (40, 71, 66, 70) or aug.bpm != 90.0


@pytest.mark.slow
def test_tiny_reproduction_writes_a_report(tmp_path):
    pytest.importorskip("tinysoundfont")
    from essence.core.runs import Run
    from essence.deep_salience.reproduce import reproduce

    report = reproduce(Run(tmp_path, method="deep-salience", preset="tiny"), preset="tiny", device="cpu")
    path = report.write()
    text = path.read_text()
    assert "Multi-f0 on the test clips" in text and len(report.claims) >= 6
    assert "constant predictor" in text
    assert (tmp_path / "checkpoints" / "multif0-hcqt.safetensors").exists()
