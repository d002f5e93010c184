"""predict: chunked salience equals whole-file salience, audio validation, the CLI and its output files."""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from essence.deep_salience.cli import main
from essence.deep_salience.hcqt import HCQT
from essence.deep_salience.model import SalienceNet
from essence.deep_salience.predict import Predictor, SilentAudioWarning, load_audio, prepare_audio
from essence.deep_salience.train import save_model

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "deep_salience" / "weights"


def _tone(seconds=2.0, sr=22050, f0=220.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))).astype(np.float32)


def _small_model(seed=0):
    torch.manual_seed(seed)
    return SalienceNet(widths=(4, 4, 4, 4, 4)).eval()


def test_chunked_prediction_equals_whole_file():
    rng = np.random.default_rng(0)
    y = np.concatenate([_tone(2.0, f0=196.0), _tone(2.0, f0=330.0)]) + 0.01 * rng.standard_normal(4 * 22050)
    y = y.astype(np.float32)
    model = _small_model()
    whole = Predictor(model, chunk_seconds=60.0).salience(y)
    chunked = Predictor(model, chunk_seconds=1.2, cnn_frames=37).salience(y)
    assert whole.shape == chunked.shape == (360, 1 + len(y) // 256)
    assert np.abs(whole - chunked).max() < 1e-3
    # and the whole-file path is the model applied to the full HCQT (global max reference)
    X = HCQT()(y)
    with torch.no_grad():
        direct = model(X[None])[0].numpy()
    assert np.abs(direct - whole).max() < 1e-4


def test_prepare_audio_resamples_and_downmixes():
    y = _tone(1.0, sr=44100)
    stereo = np.stack([y, y], axis=1)
    out = prepare_audio(stereo, 44100)
    assert out.dtype == np.float32 and abs(len(out) - 22050) <= 1
    pcm = (np.clip(y, -1, 1) * 32767).astype(np.int16)
    assert np.allclose(prepare_audio(pcm, 22050)[:100], y[:100], atol=1e-3)


@pytest.mark.parametrize("audio, match", [
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.1, np.nan] * 500, np.float32), "NaN"),
    (np.array([0.1, np.inf] * 500, np.float32), "NaN or inf"),
    (np.zeros(100, np.float32), "shorter than one frame"),
    (np.zeros((2, 3, 4), np.float32), "1-D or 2-D"),
])
def test_bad_audio_arrays(audio, match):
    with pytest.raises(ValueError, match=match):
        prepare_audio(audio, 22050)


def test_silent_audio_warns_and_returns_zero_salience():
    with pytest.warns(SilentAudioWarning):
        s = Predictor(_small_model()).salience(np.zeros(22050, np.float32))
    assert s.shape == (360, 87) and s.max() == 0.0


def test_bad_audio_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF....garbage" * 10)
    with pytest.raises(ValueError, match="cannot read audio"):
        load_audio(tmp_path / "junk.wav")


def _checkpoint(tmp_path, task="multif0"):
    from essence.deep_salience.config import PRESETS

    cfg = PRESETS.build("tiny", [f"train.task={task}"])
    return save_model(tmp_path / "run" / "checkpoints" / f"{task}-hcqt.safetensors", _small_model(), cfg,
                      threshold=0.4)


def test_cli_predict_writes_csv_npz_png_midi(tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.stack([_tone(1.0, 44100)] * 2, axis=1), 44100)       # stereo, 44.1 kHz
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "out.csv"
    code = main(["predict", str(wav), "--task", "multif0", "--weights", str(ckpt), "-o", str(out),
                 "--salience", str(tmp_path / "s.npz"), "--plot", str(tmp_path / "s.png"),
                 "--midi", str(tmp_path / "s.mid"), "--threshold", "0.0", "--device", "cpu"])
    assert code == 0
    rows = list(csv.reader(out.open(), delimiter="\t"))
    d = np.load(tmp_path / "s.npz")
    assert d["salience"].shape == (360, len(rows)) and np.allclose(d["times"], [float(r[0]) for r in rows],
                                                                     atol=1e-5)
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "s.mid").exists()
    # melody CSV: exactly one frequency per row; the run directory form of --weights
    _checkpoint(tmp_path, "melody")
    out2 = tmp_path / "mel"
    assert main(["predict", str(wav), "--task", "melody", "--weights", str(tmp_path / "run"), "-o",
                 str(out2), "--device", "cpu"]) == 0
    rows = list(csv.reader((out2 / "tone_melody.csv").open(), delimiter="\t"))
    assert all(len(r) == 2 for r in rows)


def test_cli_predict_writes_jams_that_match_the_csv(tmp_path):
    jams = pytest.importorskip("jams")
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(1.0), 22050)
    for task in ("multif0", "melody"):
        ckpt = _checkpoint(tmp_path, task)
        out = tmp_path / task
        assert main(["predict", str(wav), "--task", task, "--weights", str(ckpt), "-o", str(out / "f0.csv"),
                     "--jams", str(out / "f0.jams"), "--threshold", "0.0", "--device", "cpu"]) == 0
        rows = list(csv.reader((out / "f0.csv").open(), delimiter="\t"))
        jam = jams.load(str(out / "f0.jams"))          # validates against the JAMS schema
        ann = jam.annotations[0]
        assert ann.namespace == "pitch_contour" and jam.file_metadata.duration == pytest.approx(1.0)
        obs = ann.data
        if task == "multif0":   # one observation per pitch in the CSV, frequencies equal
            want = [(float(r[0]), float(f)) for r in rows for f in sorted(map(float, r[1:]))]
            got = np.array([(o.time, o.value["frequency"]) for o in obs])
            assert got.shape == (len(want), 2) and np.allclose(got, want, atol=1e-4)
            assert all(o.value["voiced"] for o in obs)
        else:                   # one observation per frame; negative CSV values are unvoiced guesses
            assert len(obs) == len(rows)
            assert [o.value["voiced"] for o in obs] == [float(r[1]) > 0 for r in rows]
            assert [o.value["frequency"] for o in obs] == pytest.approx([abs(float(r[1])) for r in rows], abs=1e-3)


def test_cli_jams_without_the_package_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jams(name, *args, **kwargs):
        if name == "jams":
            raise ImportError("No module named 'jams'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jams)
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(0.5), 22050)
    ckpt = _checkpoint(tmp_path, "melody")
    assert main(["predict", str(wav), "--task", "melody", "--weights", str(ckpt), "-o", str(tmp_path / "o.csv"),
                 "--jams", str(tmp_path / "o.jams")]) == 2
    err = capsys.readouterr().err
    assert "pip install jams" in err and not (tmp_path / "o.csv").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(0.5), 22050)
    ckpt = _checkpoint(tmp_path, "melody")
    assert main(["predict", str(wav), "--task", "bass", "--weights", str(ckpt), "-o", str(tmp_path / "o.csv")]) == 2
    assert "trained for task 'melody'" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["predict", str(wav), "--weights", str(bad), "-o", str(tmp_path / "o.csv")]) == 2
    assert main(["predict", str(tmp_path / "missing.wav"), "--weights", str(ckpt), "-o", "x.csv"]) == 2
    assert main(["predict", str(wav), "--weights", str(ckpt), "--threshold", "2", "-o", "x.csv"]) == 2
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(10, np.float32), 22050)
    assert main(["predict", str(empty), "--task", "melody", "--weights", str(ckpt), "-o", "x.csv"]) == 2
    assert "shorter than one frame" in capsys.readouterr().err


@pytest.mark.skipif(not (WEIGHTS / "multif0.h5").exists(), reason=f"original weights not in {WEIGHTS}")
def test_original_weights_find_the_notes_of_a_chord(tmp_path):
    t = np.arange(22050) / 22050
    freqs = (196.0, 293.66)
    y = sum(0.3 / k * np.sin(2 * np.pi * f * k * t) for f in freqs for k in range(1, 8)).astype(np.float32)
    from essence.deep_salience.decode import multif0_peaks
    from essence.deep_salience.model import load_keras_h5

    s = Predictor(load_keras_h5(WEIGHTS / "multif0.h5")).salience(y)
    found = multif0_peaks(s[:, 20:60], 0.3)
    hits = np.mean([all(len(fr) and np.min(np.abs(1200 * np.log2(fr / f))) < 50 for f in freqs) for fr in found])
    assert hits > 0.9
    assert np.mean([len(fr) for fr in found]) < 2.5     # and few spurious peaks


def test_streaming_file_reader_equals_in_memory_resampling(tmp_path):
    y = np.stack([_tone(3.0, 44100), 0.5 * _tone(3.0, 44100, f0=330.0)], axis=1)
    sf.write(tmp_path / "st.wav", y, 44100, subtype="FLOAT")
    streamed = load_audio(tmp_path / "st.wav")
    direct = prepare_audio(y, 44100)
    assert abs(len(streamed) - len(direct)) <= 2
    n = min(len(streamed), len(direct)) - 200
    assert np.abs(streamed[200:n] - direct[200:n]).max() < 1e-3
