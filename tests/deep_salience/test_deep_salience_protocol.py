"""The fair-evaluation protocol (issue 13): verdicts that flip with the measured numbers, the baselines'
decoders, the output prior, the run-directory trap and the bad-input cases of predict."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from essence.core.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from essence.deep_salience import reproduce as R
from essence.deep_salience.cli import main
from essence.deep_salience.config import PRESETS
from essence.deep_salience.data import Item
from essence.deep_salience.evaluate import harmonic_sum_saliences, highest_peak_f0
from essence.deep_salience.hcqt import HARMONICS, freq_grid, time_grid
from essence.deep_salience.model import SalienceNet
from essence.deep_salience.predict import Predictor, SilentAudioWarning, prepare_audio
from essence.deep_salience.train import bkld, constant_loss, save_model, train

WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared" / "deep_salience" / "weights"
N = 44


def _arm(mean: float, seed: int, n_seeds: int = 2, spread: float = 0.05, **metrics) -> R.Arm:
    rng = np.random.default_rng(seed)
    arm = R.Arm()
    for _ in range(n_seeds):
        base = {k: np.clip(v + spread * rng.standard_normal(N), 0, 1) for k, v in metrics.items()}
        base["Accuracy"] = np.clip(mean + spread * rng.standard_normal(N), 0, 1)
        arm.add(base, 0.3)
    return arm


def _measured(hcqt=0.8, cqt=0.6, hsum=0.5, mel_oa=0.8, peak_oa=0.6, hsum_oa=0.4, released=0.5, bp=0.7):
    mf0 = {R.HCQT_NET: _arm(hcqt, 1, Recall=0.7), R.CQT_NET: _arm(cqt, 2), R.HSUM: _arm(hsum, 3, n_seeds=1),
           R.REL_MF0: _arm(released, 4, n_seeds=1), R.BP_FRAME: _arm(bp, 5, n_seeds=1),
           R.BP_NOTES: _arm(bp, 6, n_seeds=1)}
    mf0[R.HCQT_NET].extra = {"Accuracy@0.1": mf0[R.HCQT_NET].scores["Accuracy"] - 0.2,
                             "Accuracy@0.9": mf0[R.HCQT_NET].scores["Accuracy"] - 0.3}
    mel = {R.MEL_NET: _arm(0, 7, **{"Overall Accuracy": mel_oa, "Raw Pitch Accuracy": mel_oa + 0.05}),
           R.MEL_PEAK: _arm(0, 8, **{"Overall Accuracy": peak_oa, "Raw Pitch Accuracy": peak_oa}),
           R.MEL_HSUM: _arm(0, 9, n_seeds=1, **{"Overall Accuracy": hsum_oa, "Raw Pitch Accuracy": hsum_oa})}
    return mf0, mel


def _verdicts(mf0, mel) -> list[str]:
    from essence.core.stats import combine

    return [combine(d) for _, d, _ in R.claim_decisions(mf0, mel)]


def test_claim_verdicts_follow_the_numbers():
    # order: stacking, vs harmonic sum, tau sweep, RPA vs recall, melody vs highest peak, melody vs harmonic sum,
    # vs released, vs basic-pitch
    assert _verdicts(*_measured()) == [REPRODUCED] * 8
    flipped = _verdicts(*_measured(hcqt=0.5, cqt=0.8, hsum=0.8, mel_oa=0.3, peak_oa=0.8, hsum_oa=0.8,
                                   released=0.8, bp=0.9))
    assert flipped[0] == flipped[1] == NOT_REPRODUCED          # CNN on HCQT below the CQT net and harmonic sum
    assert flipped[3:8] == [NOT_REPRODUCED] * 5
    # equal systems with noise: no side can be claimed
    even = _verdicts(*_measured(hcqt=0.6, cqt=0.6, hsum=0.6, released=0.62, bp=0.62))
    assert even[0] == INCONCLUSIVE and even[1] == INCONCLUSIVE
    # "matches or beats" has a margin: 1 point behind the released model is still within it only if the CI is
    assert even[6] in (INCONCLUSIVE, REPRODUCED)


def test_claims_skip_systems_that_were_not_measured():
    mf0, mel = _measured()
    for k in (R.REL_MF0, R.BP_FRAME, R.BP_NOTES):
        del mf0[k]
    assert len(R.claim_decisions(mf0, mel)) == 6


def test_a_skipped_comparison_is_named_with_how_to_add_it():
    assert R.missing_comparisons(released_multif0=True, released_melody=True, basic_pitch=True) == []
    missing = R.missing_comparisons(released_multif0=False, released_melody=True, basic_pitch=False)
    assert len(missing) == 2
    assert "multif0.h5" in missing[0] and "ESSENCE_DEEP_SALIENCE_WEIGHTS" in missing[0]
    assert "basic-pitch" in missing[1]
    both = R.missing_comparisons(released_multif0=False, released_melody=False, basic_pitch=True)
    assert len(both) == 1 and "melody2.h5" in both[0] and "ESSENCE_DEEP_SALIENCE_WEIGHTS" in both[0]


def test_highest_peak_melody_takes_the_top_voice_and_keeps_a_negative_guess():
    s = np.zeros((360, 3), np.float32)
    s[50, 0], s[120, 0], s[200, 0] = 0.9, 0.7, 0.2      # top peak above tau is bin 120; bin 200 is a weak peak
    s[80, 1] = 0.25                                       # only a sub-threshold peak: unvoiced, -f guess
    f = highest_peak_f0(s, 0.5)
    g = freq_grid()
    assert f[0] == pytest.approx(g[120]) and f[1] == pytest.approx(-g[80]) and f[2] == 0.0
    assert highest_peak_f0(s, 0.1)[0] == pytest.approx(g[200])


def test_harmonic_sum_is_the_weighted_mean_of_the_harmonic_channels():
    rng = np.random.default_rng(0)
    X = rng.random((6, 360, 4)).astype(np.float16)
    item = Item("x", np.zeros(1024, np.float32), X, time_grid(4), [np.array([])] * 4, np.zeros(4), np.zeros(4))
    (h,) = harmonic_sum_saliences([item], alpha=0.5)
    w = np.array([1, 0.5, 0.25, 0.125, 0.0625])
    expected = sum(wi * X[HARMONICS.index(k)].astype(np.float32) for wi, k in zip(w, (1, 2, 3, 4, 5))) / w.sum()
    assert np.allclose(h, expected, atol=1e-6)


def _items(n, seed, T=60):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        bins = rng.integers(40, 320, size=T // 10).repeat(10)
        X = (rng.random((6, 360, T)) * 0.1).astype(np.float16)
        X[:, bins, np.arange(T)] = 1.0
        f = freq_grid()[bins]
        out.append(Item(f"s{i}", np.zeros(T * 256, np.float32), X, time_grid(T), [np.array([x]) for x in f], f, f))
    return out


def test_output_prior_warm_start_and_constant_loss(monkeypatch):
    monkeypatch.setenv("ESSENCE_NATIVE_BF16", "0")
    cfg = PRESETS.build("tiny", ["model.output_prior=true", "train.precision=fp32", "optim.patch_frames=20",
                                 "train.max_epochs=1", "train.steps_per_epoch=1"])
    items = _items(2, 0)
    res = train(cfg, items, _items(1, 1), progress=False)
    p = res.positive_rate
    assert p == pytest.approx(float(np.mean([it.target("multif0").mean() for it in items])), rel=1e-5)
    y = torch.rand(2, 360, 5)
    assert constant_loss([(None, y)], p) == pytest.approx(float(bkld(torch.full_like(y, p), y)), rel=1e-6)
    # before any step the bias is logit(p): check on a fresh zero-step model built the same way
    cfg0 = cfg.with_overrides({"train.steps_per_epoch": 1})
    init = SalienceNet(widths=cfg.model.widths)
    with torch.no_grad():
        init.bendy1.weight.fill_(0.01)
    warm = train(cfg0.with_overrides({"optim.lr": 1e-12}), items, _items(1, 1), progress=False, init=init)
    assert float(warm.model.squishy.bias) == pytest.approx(float(np.log(p / (1 - p))), abs=1e-4)
    assert torch.allclose(warm.model.bendy1.weight, init.bendy1.weight, atol=1e-6)
    assert np.isfinite(res.const_val_loss) and res.const_val_loss > 0


def test_standard_preset_is_out_of_domain_with_seeds():
    cfg = PRESETS.build("standard")
    assert cfg.data.eval_soundfont == "fluidr3" and cfg.data.eval_instruments == "held_out"
    assert cfg.data.n_test * cfg.data.eval_segments >= 40 and cfg.train.seeds >= 2
    assert cfg.train.warm_start and cfg.model.output_prior
    paper = PRESETS.build("paper")
    assert (paper.train.max_epochs, paper.train.early_stopping) == (100, 25)
    assert (paper.train.melody_epochs, paper.train.melody_early_stopping) == (50, 6)
    with pytest.raises(ValueError, match="eval_instruments"):
        PRESETS.build("tiny", ["data.eval_instruments=piano"])


def test_held_out_instruments_are_not_in_the_training_pools():
    from essence.data.chorales import HELD_OUT_POOLS, TRAIN_POOLS

    train_programs = {p for pool in TRAIN_POOLS for p in pool}
    assert not train_programs & {p for pool in HELD_OUT_POOLS for p in pool}


def test_named_soundfont_or_its_install_line():
    from essence.data.chorales import soundfont_path

    path = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
    if path.is_file():
        assert soundfont_path("fluidr3") == path
    else:
        with pytest.raises(FileNotFoundError, match="apt-get install fluid-soundfont-gm"):
            soundfont_path("fluidr3")
    assert soundfont_path("timgm6mb").name == "TimGM6mb.sf2"


# ---- predict: the run-directory trap and bad input ------------------------------------------------------
def _save(path, task="multif0", harmonics=None, seed=0):
    torch.manual_seed(seed)
    over = [f"train.task={task}"] + ([f"model.harmonics={harmonics}"] if harmonics else [])
    cfg = PRESETS.build("tiny", over)
    model = SalienceNet(in_channels=len(cfg.model.channels), widths=cfg.model.widths).eval()
    return save_model(path, model, cfg, threshold=0.4)


def _tone(seconds=1.0, sr=22050, f0=220.0, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def test_run_directory_resolves_to_the_main_model_and_says_so(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(), 22050)
    run = tmp_path / "run"
    _save(run / "checkpoints" / "multif0-cqt.safetensors", harmonics="1.0")   # sorts first: the ablation
    _save(run / "checkpoints" / "multif0-hcqt.safetensors")
    assert main(["predict", str(wav), "--weights", str(run), "-o", str(tmp_path / "o.csv"), "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    out = (cap.out + cap.err).replace("\n", "")
    assert "multif0-hcqt.safetensors" in out and "multif0-cqt" not in out


def test_folder_of_released_files_picks_the_task_file(tmp_path, capsys):
    if not (WEIGHTS / "multif0.h5").is_file():
        pytest.skip("the released Keras weights are not in shared/deep_salience/weights (optional)")
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("bass.h5", "multif0.h5"):
        shutil.copy(WEIGHTS / name, folder / name)
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(0.5), 22050)
    assert main(["predict", str(wav), "--weights", str(folder), "-o", str(tmp_path / "o.csv"), "--device",
                 "cpu"]) == 0
    cap = capsys.readouterr()
    assert "multif0.h5" in (cap.out + cap.err).replace("\n", "")
    (folder / "multif0.h5").unlink()
    assert main(["predict", str(wav), "--weights", str(folder), "-o", str(tmp_path / "o.csv")]) == 2
    assert "without multif0.h5" in capsys.readouterr().err.replace("\n", " ")


def test_renamed_released_file_is_recognised_and_nan_weights_refused(tmp_path):
    if not (WEIGHTS / "bass.h5").is_file():
        pytest.skip("the released Keras weights are not in shared/deep_salience/weights (optional)")
    import h5py

    from essence.deep_salience.model import WeightsError, load_keras_h5, task_of_keras_file

    renamed = tmp_path / "my_model.h5"
    shutil.copy(WEIGHTS / "bass.h5", renamed)
    assert task_of_keras_file(renamed) == "bass"
    with pytest.warns(UserWarning, match="released 'bass' model"):
        load_keras_h5(renamed, task="melody")
    with h5py.File(renamed, "r+") as f:
        root = f["model_weights"] if "model_weights" in f else f
        group = root["bendy1"]
        name = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]][0]
        data = group[name][...]
        data[0, 0, 0, 0] = np.nan
        group[name][...] = data
    with pytest.raises(WeightsError, match="NaN"):
        load_keras_h5(renamed)


def test_one_output_file_for_several_inputs_and_unwritable_outputs(tmp_path, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, _tone(0.5), 22050)
    sf.write(b, _tone(0.5), 22050)
    ckpt = _save(tmp_path / "m" / "multif0-hcqt.safetensors")
    assert main(["predict", str(a), str(b), "--weights", str(ckpt), "-o", str(tmp_path / "out.csv")]) == 2
    assert "names one file but 2 audio files" in capsys.readouterr().err
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["predict", str(a), "--weights", str(ckpt), "-o", str(blocker / "o.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_uint8_pcm_is_centred():
    y = (128 + 100 * np.sin(np.linspace(0, 40 * np.pi, 22050))).astype(np.uint8)
    x = prepare_audio(y, 22050)
    assert abs(float(x.mean())) < 0.01 and float(np.abs(x).max()) == pytest.approx(100 / 128, abs=0.01)


def test_near_silent_audio_is_silence_and_long_silence_comes_in_chunks():
    torch.manual_seed(0)
    pred = Predictor(SalienceNet(widths=(4, 4, 4, 4, 4)).eval(), chunk_seconds=1.0)
    with pytest.warns(SilentAudioWarning, match="near-silent"):
        s = pred.salience(_tone(1.0, amp=1e-9))
    assert s.shape[0] == 360 and not s.any()
    with pytest.warns(SilentAudioWarning):
        chunks = list(pred.iter_salience(np.zeros(5 * 22050, np.float32)))
    assert len(chunks) >= 5 and max(c.shape[1] for _, c in chunks) <= 22050 // 256
    assert sum(c.shape[1] for _, c in chunks) == 1 + 5 * 22050 // 256


def test_melody3_is_decoded_with_peak_picking():
    if not (WEIGHTS / "melody3.h5").is_file():
        pytest.skip("the released Keras weights are not in shared/deep_salience/weights (optional)")
    from essence.deep_salience.cli import resolve_weights

    *_, what, decoding = resolve_weights(str(WEIGHTS / "melody3.h5"), "melody")
    assert decoding == "multif0" and "multi-line" in what
    assert resolve_weights(str(WEIGHTS / "melody2.h5"), "melody")[-1] == "melody"


@pytest.mark.parametrize("task", ["multif0", "melody", "bass"])
def test_predict_without_weights_loads_essences_own_model(task, monkeypatch):
    from essence.deep_salience.cli import resolve_weights
    from essence.deep_salience.predict import packaged_weights
    from essence.deep_salience.train import load_essence_checkpoint

    monkeypatch.delenv("ESSENCE_DEEP_SALIENCE_WEIGHTS", raising=False)
    path = packaged_weights(task)
    assert path is not None, f"the package ships no {task}.safetensors (scripts/build_deep_salience_weights.py)"
    model, tau, channels, what, decoding = resolve_weights(None, task)
    assert str(path) in what and decoding == task and channels is None and 0.0 < tau < 1.0
    _, cfg, state = load_essence_checkpoint(path)
    assert state["task"] == task
    with torch.no_grad():
        out = model(torch.randn(1, len(HARMONICS), 360, 12))
    assert out.shape == (1, 360, 12) and bool(((out >= 0) & (out <= 1)).all())
    from essence.deep_salience import load_pretrained

    assert load_pretrained(task)[1] == tau
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert f"| {task} |" in card and "Held-out test scores" in card
    assert f"{'-'.join(map(str, cfg.model.widths))}, {sum(p.numel() for p in model.parameters()):,} parameters" in card


def test_load_pretrained_refuses_an_unknown_task():
    from essence.deep_salience import load_pretrained

    with pytest.raises(ValueError, match="'multif0', 'melody' or 'bass'"):
        load_pretrained("drums")


def test_the_released_weights_are_asked_for_by_name_or_by_the_environment(monkeypatch, tmp_path):
    from essence.deep_salience.cli import resolve_weights

    monkeypatch.setenv("ESSENCE_DEEP_SALIENCE_WEIGHTS", str(tmp_path))   # set: the released file, not ours
    for weights in (None, "released"):
        if (WEIGHTS / "multif0.h5").is_file():
            assert "Keras weights" in resolve_weights(weights, "multif0")[3]
        else:
            with pytest.raises(FileNotFoundError, match="weights for task 'multif0'"):
                resolve_weights(weights, "multif0")


def test_note_events_take_their_velocity_from_the_salience():
    from essence.deep_salience.decode import f0_to_note_events, salience_at

    g = freq_grid()
    k = int(np.argmin(np.abs(g - 440.0)))                  # A4 = MIDI 69
    s = np.zeros((360, 20), np.float32)
    s[k, :10], s[k, 10:] = 1.0, 0.5
    f0 = [np.array([g[k]])] * 10 + [np.array([])] * 2 + [np.array([g[k]])] * 8
    conf = salience_at(s, f0)
    ev = f0_to_note_events(time_grid(20), f0, conf)
    assert [(p, v) for _, _, p, v, _ in ev] == [(69, 127), (69, 64)]


def test_folder_of_audio_in_one_command_writes_csv_notes_midi_plot(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, f in enumerate((220.0, 330.0)):
        sf.write(folder / f"t{i}.wav", _tone(1.0, f0=f), 22050)
    (folder / "readme.txt").write_text("not audio")
    ckpt = _save(tmp_path / "m" / "multif0-hcqt.safetensors")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--weights", str(ckpt), "-o", str(out), "--notes", str(out),
                 "--midi", str(out), "--plot", str(out), "--sonify", str(out), "--threshold", "0.0",
                 "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"t{i}{s}" for i in (0, 1) for s in (".mid", ".png", "_multif0.csv", "_notes.csv",
                                                           "_sonified.wav")]
    y, sr = sf.read(out / "t0_sonified.wav")
    assert sr == 22050 and len(y) == 22050 and np.abs(y).max() > 0.1
    assert (out / "t0_notes.csv").read_text().splitlines()[0] == "start_s,end_s,pitch_midi,velocity,mean_salience"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--weights", str(ckpt), "-o", str(out)]) == 2


def test_evaluate_command_scores_mirex_files(tmp_path, capsys):
    from essence.deep_salience.cli import read_f0_file
    from essence.metrics.pitch import multipitch_scores

    ref, est = tmp_path / "ref.txt", tmp_path / "est.csv"
    ref.write_text("0.00\t220.0\t330.0\n0.01\t220.0\n0.02\n0.03\t440.0\n")
    est.write_text("time,f0\n0.00,220.0,330.0\n0.01,221.0\n0.02,100.0\n0.03\n")
    t, f = read_f0_file(ref, "multif0")
    assert list(t) == [0.0, 0.01, 0.02, 0.03] and [len(x) for x in f] == [2, 1, 0, 1]
    assert main(["evaluate", str(est), str(ref)]) == 0
    acc = multipitch_scores(t, f, *read_f0_file(est, "multif0"))["Accuracy"]
    assert acc == pytest.approx(3 / 5)                   # TP 3, FP 1, FN 1
    assert f"{acc:.4f}" in (lambda c: c.out + c.err)(capsys.readouterr())
    bad = tmp_path / "bad.txt"
    bad.write_text("0.0 220\n0.01 abc\n")
    assert main(["evaluate", str(bad), str(ref)]) == 2
    assert main(["evaluate", str(est), str(ref), "--task", "melody"]) == 2   # two frequencies in a melody row


def test_refined_pitch_moves_toward_the_heavier_neighbour_and_detailed_csv(tmp_path):
    from essence.deep_salience.decode import decode, refine_f0

    g = freq_grid()
    s = np.zeros((360, 3), np.float32)
    s[99:102, 0] = [0.0, 0.8, 0.0]                 # symmetric: stays on bin 100
    s[99:102, 1] = [0.0, 0.8, 0.8]                 # equal neighbour above: half a bin up (10 cents)
    f, c = refine_f0(s, decode(s, "melody", 0.5)[1])
    assert f[0] == pytest.approx(g[100], rel=1e-6) and c[0] == pytest.approx(0.8)
    assert 1200 * np.log2(f[1] / g[100]) == pytest.approx(10.0, abs=0.01)
    assert f[2] < 0 and c[2] == 0                  # unvoiced: a negative guess with zero salience
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(0.5), 22050)
    ckpt = _save(tmp_path / "m" / "multif0-hcqt.safetensors")
    assert main(["predict", str(wav), "--weights", str(ckpt), "-o", str(tmp_path / "d.csv"), "--detailed",
                 "--threshold", "0.0", "--device", "cpu"]) == 0
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert lines[0] == "time_s,f0_hz,confidence" and len(lines) > 44


def test_viterbi_ignores_a_one_frame_octave_jump():
    from essence.deep_salience.decode import single_f0, viterbi_f0

    s = np.full((360, 9), 0.01, np.float32)
    s[150, :] = 0.8
    s[210, 4], s[150, 4] = 0.9, 0.7                 # one frame where the octave above wins the argmax
    g = freq_grid()
    assert single_f0(s, 0.3)[4] == pytest.approx(g[210])
    v = viterbi_f0(s, 0.3)
    assert np.allclose(v, g[150])


def test_task_all_runs_three_models_on_one_hcqt(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(1.0), 22050)
    run = tmp_path / "run"
    for i, task in enumerate(("multif0", "melody", "bass")):
        _save(run / "checkpoints" / f"{task}-hcqt.safetensors", task=task, seed=i)
    out = tmp_path / "out"
    assert main(["predict", str(wav), "--task", "all", "--weights", str(run), "-o", str(out), "--midi", str(out),
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_bass.csv", "a_bass.mid", "a_melody.csv", "a_melody.mid",
                                                     "a_multif0.csv", "a_multif0.mid"]
    # each head equals the same model run alone
    from essence.deep_salience.predict import load_audio
    from essence.deep_salience.train import load_essence_checkpoint

    y = load_audio(wav)
    models = {t: load_essence_checkpoint(run / "checkpoints" / f"{t}-hcqt.safetensors")[0] for t in
              ("multif0", "melody")}
    pred = Predictor(models["multif0"])
    (_, both), = list(pred.iter_saliences(y, {t: (m, None) for t, m in models.items()}))
    assert np.array_equal(both["melody"], Predictor(models["melody"]).salience(y))
    assert main(["predict", str(wav), "--task", "all", "--weights", str(run), "-o", str(tmp_path / "x.csv")]) == 2
