"""Deep Salience speed, against the anchors measured in the same run (ANCHORS.md §8).

1. HCQT seconds per second of audio: essence's batched torch HCQT vs the librosa reference (the original
   ``compute_hcqt``), same 30 s clip, CPU; with the relative L2 error per channel at that speed. Both at ONE
   thread each and at the default thread count (torch threads and the BLAS/FFT pools of numpy/scipy, through
   threadpoolctl), each cold (first call, torch's filter-bank planning included) and warm (best of the same
   number of repeats for both). The >= 5x goal is judged at one thread, warm torch against librosa's ordinary
   call.
2. ``predict`` end to end (audio -> HCQT -> full-size CNN -> decoded F0): real-time factor on the CPU.
3. The CNN's achieved GFLOP/s (2 x MACs / time) against a plain fp32 matmul peak measured in this run.
4. basic-pitch 0.4.0 (ONNX) real-time factor on the same clip.

    python benchmarks/deep_salience.py [--seconds 30] [--threads N] [--device cpu|cuda] [--repeats 3]
    python benchmarks/deep_salience.py --drift 16    # only the librosa-version measurement, on 16 test clips

``--drift N``: the HCQT of today's librosa (= essence's torch HCQT) against an emulation of the 2017 librosa
defaults (``hcqt_reference(legacy=True)``: tuning estimated per call, reflect padding, kaiser_best resampling),
on N out-of-domain test clips (FluidR3, held-out instruments, 8 s): relative L2 difference per channel and the
released multif0.h5's Accuracy with each input (paired over clips, tau tuned on 8 validation clips for each).

The clip is a rendered Bach chorale (music21 + tinysoundfont), or a synthetic chord sequence if those are
missing. Timings on a shared machine vary 2-4x between runs: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _clip(seconds: float) -> tuple[np.ndarray, str]:
    try:
        from essence.data.chorales import chorale_paths, render_chorale

        parts, names = [], []
        for p in chorale_paths()[:20]:
            try:
                r = render_chorale(p)
            except ValueError:
                continue
            parts.append(r.audio)
            names.append(r.name)
            if sum(map(len, parts)) >= seconds * 22050:
                break
        y = np.concatenate(parts)[: int(seconds * 22050)]
        return y, "rendered chorales " + ", ".join(names)
    except Exception as err:  # noqa: BLE001 - fall back to synthetic audio
        t = np.arange(int(seconds * 22050)) / 22050
        f0 = 220 * 2 ** (np.floor(t * 2) % 12 / 12)
        y = sum(0.2 / k * np.sin(2 * np.pi * np.cumsum(f0 * k) / 22050) for k in range(1, 6))
        return y.astype(np.float32), f"synthetic ({err})"


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()

    def run():
        torch.mm(a, b)
        sync()

    return 2 * n**3 / _best(run, repeats) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="the default thread count compared with one thread (default: torch's, the core count)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", default=None, help="multif0.h5 (default: ../shared/deep_salience/weights)")
    ap.add_argument("--drift", type=int, default=0, help="run only the librosa-version measurement on N clips")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.drift:
        return _drift(args.drift, args.weights)
    warnings.filterwarnings("ignore")
    dev = torch.device(args.device)

    from essence.deep_salience.hcqt import HARMONICS, HCQT, hcqt_reference
    from essence.deep_salience.model import SalienceNet, load_keras_h5
    from essence.deep_salience.predict import Predictor

    y, what = _clip(args.seconds)
    dur = len(y) / 22050
    from essence.core.precision import machine_line

    print(machine_line(dev, "fp32"))
    print(f"clip: {dur:.1f} s ({what}); torch {torch.__version__}, {args.threads} threads, device {dev}")

    # 1. HCQT ------------------------------------------------------------------------------------------------
    from threadpoolctl import threadpool_limits

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print("\n## HCQT (6 x 360 bins, hop 256 @ 22.05 kHz), seconds per second of audio")
    print("| threads | librosa cold | librosa warm | torch cold | torch warm | warm ratio | cold ratio |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            t0 = time.perf_counter()
            hcqt_reference(y, log=False)
            ref_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            hcqt = HCQT(device=dev)                      # filter banks are planned on the first call
            hcqt(y, log=False)
            sync()
            fast_cold = time.perf_counter() - t0
            ref_warm = _best(lambda: hcqt_reference(y, log=False), args.repeats)

            def fast(h=hcqt):
                h(y, log=False)
                sync()

            fast_warm = _best(fast, args.repeats)
        results[threads] = (ref_warm, fast_warm)
        print(f"| {threads} | {ref_cold / dur:.4f} | {ref_warm / dur:.4f} | {fast_cold / dur:.4f} | "
              f"{fast_warm / dur:.4f} | {ref_warm / fast_warm:.1f}x | {ref_cold / fast_cold:.1f}x |")
    r1 = results[1][0] / results[1][1]
    print(f"goal: warm torch >= 5x librosa at one thread: {r1:.1f}x -> {'met' if r1 >= 5 else 'NOT met'} "
          f"({args.repeats} repeats each, best of)")
    torch.set_num_threads(args.threads)
    ref = hcqt_reference(y, log=False)
    out = hcqt(y, log=False).cpu().numpy()
    errs = [float(np.linalg.norm(out[c] - ref[c]) / np.linalg.norm(ref[c])) for c in range(len(HARMONICS))]
    print("relative L2 error per channel: " + ", ".join(f"h={h:g}: {e:.1e}" for h, e in zip(HARMONICS, errs)))

    # 2. + 3. predict and the CNN ----------------------------------------------------------------------------
    wpath = Path(args.weights) if args.weights else \
        Path(__file__).resolve().parents[1].parent / "shared" / "deep_salience" / "weights" / "multif0.h5"
    model = load_keras_h5(wpath) if wpath.exists() else SalienceNet().eval()
    predictor = Predictor(model, dev)
    from essence.deep_salience.decode import decode

    def predict():
        s = predictor.salience(y)
        decode(s, "multif0", 0.3)

    predict()
    t_pred = _best(predict, args.repeats)
    print(f"\n## predict end to end (full-size network, {'released weights' if wpath.exists() else 'random init'})")
    print(f"{t_pred:.2f} s for {dur:.1f} s of audio: real-time factor {t_pred / dur:.3f} "
          f"({dur / t_pred:.1f}x faster than real time)")

    X = hcqt(y)[None]
    frames = X.shape[-1]
    macs = model.macs_per_frame() * frames

    def cnn(m=model, x=X):
        with torch.no_grad():
            m(x)
        sync()

    for label, mdl, x in (("fp32", model.to(dev), X),
                          ("fp32 channels_last", model.to(memory_format=torch.channels_last),
                           X.contiguous(memory_format=torch.channels_last))):
        cnn(mdl, x[..., :64])
        t_cnn = _best(lambda mdl=mdl, x=x: cnn(mdl, x), args.repeats)
        gflops = 2 * macs / t_cnn / 1e9
        peak = _matmul_peak(dev)
        print(f"CNN {label:18s}: {t_cnn:.2f} s for {frames} frames, {gflops:.1f} GFLOP/s; matmul peak "
              f"{peak:.1f} GFLOP/s -> {100 * gflops / peak:.0f}% of peak (goal >= 50%)")
    model.to(memory_format=torch.contiguous_format)

    # 4. basic-pitch -----------------------------------------------------------------------------------------
    from essence.deep_salience.evaluate import _basic_pitch, basic_pitch_available, basic_pitch_notes

    if basic_pitch_available():
        bp = _basic_pitch()
        basic_pitch_notes(y[:22050 * 3], model=bp)  # warm-up (numba / onnxruntime)
        t_bp = _best(lambda: basic_pitch_notes(y, model=bp), args.repeats)
        print(f"\n## basic-pitch 0.4.0 (ONNX, CPU)\n{t_bp:.2f} s: real-time factor {t_bp / dur:.3f}; essence "
              f"predict / basic-pitch time = {t_pred / t_bp:.1f}")
    else:
        print("\nbasic-pitch not installed (scripts/install.d/deep_salience.sh); skipped")


def _drift(n: int, weights: str | None) -> None:
    """Today's HCQT vs the emulated 2017 one: input difference and the released model's accuracy with each."""
    from essence.core.precision import machine_line
    from essence.core.stats import mean_ci, paired_difference
    from essence.deep_salience.data import build_split
    from essence.deep_salience.evaluate import per_clip, salience_decoder, sweep_system
    from essence.deep_salience.hcqt import HARMONICS, hcqt_reference, log_scale
    from essence.deep_salience.model import load_keras_h5
    from essence.deep_salience.train import salience_of

    print(machine_line("cpu", "fp32"))
    wpath = Path(weights) if weights else \
        Path(__file__).resolve().parents[1].parent / "shared" / "deep_salience" / "weights" / "multif0.h5"
    model = load_keras_h5(wpath, task="multif0")
    ev = dict(max_seconds=8.0, soundfont="fluidr3", augment=True, instruments="held_out", segments=2,
              progress=False)
    val, test = build_split("validation", 4, **ev), build_split("test", max(1, n // 2), **ev)[:n]
    errs = np.zeros(len(HARMONICS))
    for items in (val, test):
        for it in items:
            legacy = hcqt_reference(it.audio, log=False, legacy=True)
            now = hcqt_reference(it.audio, log=False)
            T = min(legacy.shape[-1], now.shape[-1])
            legacy, now = legacy[..., :T], now[..., :T]
            errs += [np.linalg.norm(legacy[c] - now[c]) / np.linalg.norm(now[c]) for c in range(len(HARMONICS))]
            X = log_scale(legacy).astype(np.float16)
            pad = it.hcqt.shape[-1] - X.shape[-1]
            it.legacy = np.pad(X, ((0, 0), (0, 0), (0, max(0, pad))), mode="edge")[..., : it.hcqt.shape[-1]]
    errs /= len(val) + len(test)
    print(f"\n## librosa drift: today's HCQT vs the emulated 2017 defaults ({len(test)} test clips, 8 s)")
    print("relative L2 difference per channel: " + ", ".join(f"h={h:g}: {e:.3f}" for h, e in zip(HARMONICS, errs)))
    scores = {}
    for label in ("today", "2017 emulation"):
        if label != "today":
            for it in val + test:
                it.hcqt, it.legacy = it.legacy, it.hcqt
        sv, st = salience_of(model, val), salience_of(model, test)
        tau, _ = sweep_system(salience_decoder(sv, "multif0"), val, "multif0")
        scores[label] = per_clip(salience_decoder(st, "multif0"), test, "multif0", tau)["Accuracy"]
        print(f"released multif0.h5 with the {label} HCQT: Accuracy {mean_ci(scores[label]).format(3)} "
              f"(tau {tau:.1f})")
    d = paired_difference(scores["2017 emulation"], scores["today"], unit="clips")
    print(f"2017 emulation - today: {d.format(3)} (95% CI, {d.method}, n={d.n})")


if __name__ == "__main__":
    main()
