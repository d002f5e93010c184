"""Salience and F0 from audio: loading and validating audio, chunked HCQT + CNN with bounded memory, and the
output files (the original's CSV, ``.npz`` salience, a PNG plot, MIDI notes).

Chunking keeps the result equal to whole-file processing: (1) the HCQT is log-scaled against the maximum of the
*whole file* (the original's ``ref=np.max``), found in a first pass over the chunks when the file is longer than
one chunk; (2) every chunk's HCQT is computed with 4 s of audio context on both sides (more than the half-width
of the lowest CQT filter, 2.6 s, and of its sparsified FFT window, 3 s) and the CNN sees 8 frames of context on
both sides of every (sub-)chunk (its receptive field is +-7 frames), so there are no chunk-border artefacts (the
original used non-overlapping 2000-frame chunks). Memory is bounded by the chunk sizes; the mono 22,050 Hz
signal itself is held (88 kB per second of audio), and the salience map only when ``--salience`` or ``--plot``
asks for it.

Degenerate input: silent or near-silent audio (peak CQT magnitude below the 1e-5 floor of the log scaling)
gives a warning and an all-zero salience (no F0 anywhere), chunk by chunk; unsigned PCM (8-bit WAV) is centred on
its mid value; unreadable, empty, NaN/inf and shorter-than-one-frame audio raise ``ValueError``.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from essence.deep_salience.hcqt import HCQT, HOP_LENGTH, SR, freq_grid, log_scale_torch, time_grid
from essence.deep_salience.model import SalienceNet

__all__ = ["load_audio", "prepare_audio", "Predictor", "write_csv", "write_npz", "write_midi", "write_notes_csv",
           "write_detailed_csv", "write_sonification", "write_jams", "require_jams", "plot_salience",
           "SilentAudioWarning", "PACKAGED_WEIGHTS", "packaged_weights", "load_pretrained"]

AMIN = 1e-5  # the log scaling's amplitude floor (librosa's amin)
_CONTEXT_S = 4.0
_CNN_CONTEXT = 8
PACKAGED_WEIGHTS = Path(__file__).parent / "weights"   # essence's own models: see weights/MODEL_CARD.md


def packaged_weights(task: str) -> Path | None:
    """essence's own ``<task>.safetensors`` shipped inside the package (None if this install has none)."""
    path = PACKAGED_WEIGHTS / f"{task}.safetensors"
    return path if path.is_file() else None


def load_pretrained(task: str = "multif0") -> tuple[SalienceNet, float]:
    """essence's own trained model for ``task`` ('multif0', 'melody' or 'bass') in eval mode, and its
    validation-tuned threshold tau (weights/MODEL_CARD.md says how they were trained and how they score)."""
    from essence.deep_salience.train import load_essence_checkpoint

    if task not in ("multif0", "melody", "bass"):
        raise ValueError(f"task must be 'multif0', 'melody' or 'bass', got {task!r}")
    path = packaged_weights(task)
    if path is None:
        raise FileNotFoundError(f"this install ships no {task} model ({PACKAGED_WEIGHTS}); pass the released "
                                f"Keras weights to load_keras_h5 instead")
    model, _, state = load_essence_checkpoint(path)
    return model, float(state["threshold"])


class SilentAudioWarning(UserWarning):
    """The audio is digital silence: the salience is all zero and no F0 is reported."""


def prepare_audio(y: np.ndarray, sr: int, *, name: str = "audio") -> np.ndarray:
    """Validate, down-mix (channels last or first) and resample to 22,050 Hz mono float32."""
    y = np.asarray(y)
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"{name}: sample rate must be a positive integer, got {sr!r}")
    if y.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a numeric audio array, got dtype {y.dtype}")
    if y.dtype.kind == "i":  # signed PCM integers -> [-1, 1)
        y = y.astype(np.float32) / float(np.iinfo(y.dtype).max + 1)
    elif y.dtype.kind == "u":  # unsigned PCM (8-bit WAV) is offset binary: silence is the mid value
        half = float(np.iinfo(y.dtype).max + 1) / 2.0
        y = (y.astype(np.float64) - half).astype(np.float32) / half
    if y.ndim == 2:  # (n, channels) as soundfile gives, or (channels, n) as librosa gives
        y = y.mean(axis=1) if y.shape[0] >= y.shape[1] else y.mean(axis=0)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D or 2-D (samples x channels) array, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name}: the audio is empty (0 samples)")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: the audio contains NaN or inf samples")
    y = y.astype(np.float32)
    if sr != SR:
        import soxr

        y = np.asarray(soxr.resample(y, sr, SR, quality="soxr_hq"), dtype=np.float32)
    if len(y) < HOP_LENGTH:
        raise ValueError(f"{name}: the audio is shorter than one frame ({len(y)} samples at {SR} Hz; at least "
                         f"{HOP_LENGTH} = {1000 * HOP_LENGTH / SR:.1f} ms are needed)")
    return y


def load_audio(path: str | Path) -> np.ndarray:
    """Read any file soundfile (or, as a fallback, librosa/audioread) can decode: mono 22,050 Hz float32."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    import soundfile as sf

    try:
        return _read_streaming(path, sf)
    except ValueError:
        raise
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y, sr = librosa.load(str(path), sr=None, mono=True)
        except Exception:
            raise ValueError(f"cannot read audio file {path}: {err}") from None
    return prepare_audio(y, int(sr), name=str(path))


def _read_streaming(path: Path, sf, block: int = 1 << 18) -> np.ndarray:
    """Decode in blocks, down-mix and resample (soxr stream) to 22,050 Hz mono: memory ~ the mono output."""
    import soxr

    with sf.SoundFile(str(path)) as f:
        sr = int(f.samplerate)
        stream = soxr.ResampleStream(sr, SR, 1, dtype="float32", quality="HQ") if sr != SR else None
        parts = []
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            last = len(data) < block
            mono = data.mean(axis=1) if len(data) else np.zeros(0, np.float32)
            if not np.all(np.isfinite(mono)):
                raise ValueError(f"{path}: the audio contains NaN or inf samples")
            parts.append(stream.resample_chunk(mono, last=last) if stream is not None else mono)
            if last:
                break
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return prepare_audio(y, SR, name=str(path))


class Predictor:
    """HCQT -> CNN salience, chunked.

    Args:
        model: a :class:`SalienceNet` (eval mode is set here).
        device: where the HCQT filter banks and the CNN run.
        chunk_seconds: audio per HCQT chunk (30 s); cnn_frames: frames per CNN forward (512).
        channels: HCQT channels the model takes (``None`` = all six; ``(1,)`` for a single-harmonic model).
    """

    def __init__(self, model: SalienceNet, device: str | torch.device = "cpu", *, chunk_seconds: float = 30.0,
                 cnn_frames: int = 512, channels: tuple[int, ...] | None = None):
        if chunk_seconds <= 0 or cnn_frames <= 0:
            raise ValueError("chunk_seconds and cnn_frames must be positive")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.hcqt = HCQT(device=self.device)
        self.chunk = max(HOP_LENGTH, int(chunk_seconds * SR) // HOP_LENGTH * HOP_LENGTH)
        self.context = int(_CONTEXT_S * SR) // HOP_LENGTH * HOP_LENGTH
        self.cnn_frames = cnn_frames
        self.channels = list(channels) if channels is not None else None

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // HOP_LENGTH

    def _hcqt_chunks(self, y: np.ndarray, ref: float | None) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """Per chunk: (first frame f0, frames n, left context lc, HCQT of frames [f0 - lc, f0 + n + rc)).

        The CNN context (8 frames) is included on both sides where the file has frames; ``ref`` None gives
        magnitudes, else the log-scaled HCQT against ``ref``.
        """
        n_total = self.n_frames(len(y))
        for s0 in range(0, len(y), self.chunk):
            f0 = s0 // HOP_LENGTH
            f1 = n_total if s0 + self.chunk >= len(y) else (s0 + self.chunk) // HOP_LENGTH
            e0, e1 = max(0, f0 - _CNN_CONTEXT), min(n_total, f1 + _CNN_CONTEXT)
            a0 = max(0, e0 * HOP_LENGTH - self.context)
            a1 = min(len(y), e1 * HOP_LENGTH + self.context)
            mag = self.hcqt(y[a0:a1], log=False)
            lo = e0 - a0 // HOP_LENGTH
            part = mag[:, :, lo: lo + (e1 - e0)]
            if part.shape[-1] < e1 - e0:  # a centred-frame remainder at the very end: repeat the edge frame
                part = torch.nn.functional.pad(part, (0, e1 - e0 - part.shape[-1]), mode="replicate")
            yield f0, f1 - f0, f0 - e0, (part if ref is None else log_scale_torch(part, ref))

    @torch.no_grad()
    def _cnn(self, X: torch.Tensor, lc: int = 0, n: int | None = None, model: SalienceNet | None = None,
             channels=None) -> torch.Tensor:
        """Salience (360, n) of frames [lc, lc + n) of an HCQT (C, 360, T), in sub-chunks with context."""
        if model is None:
            model, channels = self.model, self.channels
        if channels is not None:
            X = X[list(channels)]
        T = X.shape[-1]
        n = T - lc if n is None else n
        out = torch.empty(360, n, device=self.device)
        for t0 in range(lc, lc + n, self.cnn_frames):
            t1 = min(lc + n, t0 + self.cnn_frames)
            c0, c1 = max(0, t0 - _CNN_CONTEXT), min(T, t1 + _CNN_CONTEXT)
            s = model(X[None, :, :, c0:c1])[0]
            out[:, t0 - lc: t1 - lc] = s[:, t0 - c0: t0 - c0 + (t1 - t0)]
        return out

    def iter_salience(self, y: np.ndarray, progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame, salience chunk (360, n) float32) over the whole signal (22,050 Hz mono)."""
        for f0, chunks in self.iter_saliences(y, None, progress):
            yield f0, chunks["main"]

    def iter_saliences(self, y: np.ndarray, heads: dict | None = None,
                       progress: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (first frame, {name: salience chunk}) for several models on ONE HCQT per chunk.

        ``heads``: {name: (model, channels)}; ``None`` = this predictor's model as ``"main"``.
        """
        heads = {"main": (self.model, self.channels)} if heads is None else heads
        for model, _ in heads.values():
            model.to(self.device).eval()
        y = prepare_audio(y, SR)
        n_chunks = math.ceil(len(y) / self.chunk)

        def zeros():
            for f0, z in self._zeros(len(y)):
                yield f0, dict.fromkeys(heads, z)

        if float(np.abs(y).max()) == 0.0:
            warnings.warn("the audio is silent: the salience is all zero and no F0 is reported",
                          SilentAudioWarning, stacklevel=3)
            yield from zeros()
            return
        if n_chunks == 1:
            mag = self.hcqt(y, log=False)
            ref = float(mag.max())
            chunks: Iterator[tuple[int, int, int, torch.Tensor]] = iter([(0, mag.shape[-1], 0,
                                                                           log_scale_torch(mag, ref))])
        else:  # first pass: the whole file's maximum, as the original's ref=np.max
            ref = max(float(m.max()) for _, _, _, m in self._hcqt_chunks(y, None))
            chunks = self._hcqt_chunks(y, ref)
        if ref < AMIN:  # every bin would clamp to the floor and read as 0 dB (1.0) everywhere
            warnings.warn(f"the audio is near-silent (peak CQT magnitude {ref:.2g} is below the {AMIN:g} floor of "
                          f"the log scaling): the salience is all zero and no F0 is reported",
                          SilentAudioWarning, stacklevel=3)
            yield from zeros()
            return
        from essence.core.progress import ProgressBar

        with ProgressBar(total=n_chunks, desc="salience", unit="chunk", disable=not progress or n_chunks == 1) as bar:
            for f0, n, lc, X in chunks:
                yield f0, {name: self._cnn(X, lc, n, model, ch).float().cpu().numpy()
                           for name, (model, ch) in heads.items()}
                bar.update(1)

    def _zeros(self, n_samples: int) -> Iterator[tuple[int, np.ndarray]]:
        """All-zero salience chunk by chunk (a long silent file never allocates its whole map here)."""
        n_total = self.n_frames(n_samples)
        step = max(1, self.chunk // HOP_LENGTH)
        for f0 in range(0, n_total, step):
            yield f0, np.zeros((360, min(step, n_total - f0)), np.float32)

    def salience(self, y: np.ndarray, progress: bool = False) -> np.ndarray:
        """The whole (360, T) salience map."""
        return np.concatenate([s for _, s in self.iter_salience(y, progress)], axis=1)


# ----------------------------------------------------------------------------------------------------------
# output files
# ----------------------------------------------------------------------------------------------------------
def write_csv(path: str | Path, times: np.ndarray, f0, append: bool = False) -> None:
    """The original's format: tab-separated, one row per frame: time, then the frequencies (or one value)."""
    with open(path, "a" if append else "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        for t, f in zip(times, f0):
            w.writerow([f"{t:.6f}", *(f"{x:.4f}" for x in np.atleast_1d(f))])


def write_detailed_csv(path: str | Path, times: np.ndarray, f0, confidence, append: bool = False) -> None:
    """Comma-separated with a header (``time_s,f0_hz,confidence``), one row per frame and estimate: the sub-bin
    refined frequency (:func:`decode.refine_f0`) and the salience at its peak; a frame without any estimate gets
    one row with f0 0 and confidence 0 (melody / bass: an unvoiced frame keeps its negative pitch guess)."""
    with open(path, "a" if append else "w", newline="") as fh:
        w = csv.writer(fh)
        if not append:
            w.writerow(["time_s", "f0_hz", "confidence"])
        for t, f, c in zip(times, f0, confidence):
            f, c = np.atleast_1d(f), np.atleast_1d(c)
            if len(f) == 0:
                w.writerow([f"{t:.6f}", "0", "0"])
            for fi, ci in zip(f, c):
                w.writerow([f"{t:.6f}", f"{fi:.3f}", f"{ci:.4f}"])


def write_npz(path: str | Path, salience: np.ndarray) -> None:
    """``salience`` (360, T), ``times`` (T,) s, ``freqs`` (360,) Hz, as the original's ``--save_salience``."""
    np.savez_compressed(path, salience=salience.astype(np.float32), times=time_grid(salience.shape[1]),
                        freqs=freq_grid())


def write_midi(path: str | Path, times: np.ndarray, f0, program: int = 0, confidence=None) -> int:
    """Notes from decoded F0 (see :func:`decode.f0_to_notes`) as a MIDI file; returns the note count.

    With ``confidence`` (:func:`decode.salience_at` of ``f0``) each note's velocity follows its mean salience;
    else every velocity is 90.
    """
    import pretty_midi

    from essence.deep_salience.decode import f0_to_note_events, f0_to_notes

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    if confidence is None:
        events = [(s, e, p, 90) for s, e, p in f0_to_notes(times, f0)]
    else:
        events = [(s, e, p, v) for s, e, p, v, _ in f0_to_note_events(times, f0, confidence)]
    inst.notes = [pretty_midi.Note(v, p, s, e) for s, e, p, v in events if 0 <= p <= 127]
    pm.instruments.append(inst)
    pm.write(str(path))
    return len(inst.notes)


def write_notes_csv(path: str | Path, times: np.ndarray, f0, confidence) -> int:
    """Note events as CSV with a header: start_s, end_s, pitch_midi, velocity, mean_salience; returns the count."""
    from essence.deep_salience.decode import f0_to_note_events

    events = f0_to_note_events(times, f0, confidence)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["start_s", "end_s", "pitch_midi", "velocity", "mean_salience"])
        for s, e, p, v, m in events:
            w.writerow([f"{s:.4f}", f"{e:.4f}", p, v, f"{m:.4f}"])
    return len(events)


JAMS_INSTALL = "pip install jams"


def require_jams():
    """The ``jams`` module, or an ImportError that says how to install it (JAMS output is optional)."""
    try:
        import jams
    except ImportError as err:
        raise ImportError(f"JAMS output needs the jams package: {JAMS_INSTALL}") from err
    return jams


def write_jams(path: str | Path, times: np.ndarray, f0, task: str, duration: float, *, source: str = "") -> int:
    """The decoded F0 as a JAMS file (``pitch_contour`` namespace); returns the number of observations.

    Multi-f0: every pitch of a frame is one observation ``{index: i, frequency: f, voiced: true}`` (i numbers the
    pitches of the frame from low to high). Melody / bass: one contour (index 0); unvoiced frames are kept with
    ``voiced: false`` and the frequency of the guess when the CSV would write it as -f (else 0).
    """
    jams = require_jams()
    jam = jams.JAMS()
    jam.file_metadata.duration = float(duration)
    ann = jams.Annotation(namespace="pitch_contour", time=0.0, duration=float(duration))
    ann.annotation_metadata.annotator = {"name": "essence deep-salience", "task": task}
    ann.annotation_metadata.data_source = source or "essence deep-salience predict"
    n = 0
    for t, f in zip(times, f0):
        pitches = [float(x) for x in np.atleast_1d(f)] if task == "multif0" else [float(f)]
        for i, fi in enumerate(sorted(pitches) if task == "multif0" else pitches):
            ann.append(time=float(t), duration=0.0, confidence=None,
                       value={"index": i, "frequency": abs(fi), "voiced": bool(fi > 0)})
            n += 1
    jam.annotations.append(ann)
    jam.save(str(path))
    return n


def write_sonification(path: str | Path, times: np.ndarray, f0, task: str, n_samples: int, sr: int = SR) -> None:
    """The decoded F0 as audio (``mir_eval.sonify``): sine tones per frame, to listen to the result.

    Melody / bass: ``pitch_contour`` (unvoiced frames, <= 0, are silent); multi-f0: ``time_frequency`` over the
    360-bin grid with the decoded peaks switched on.
    """
    import mir_eval
    import soundfile as sf

    times = np.asarray(times, dtype=np.float64)
    if task == "multif0":
        grid = freq_grid()
        gram = np.zeros((len(grid), len(times)), np.float32)
        for t, f in enumerate(f0):
            f = np.asarray(f, dtype=np.float64)
            f = f[f > 0]
            if len(f):
                gram[np.clip(np.round(60 * np.log2(f / grid[0])).astype(int), 0, len(grid) - 1), t] = 1.0
        y = mir_eval.sonify.time_frequency(gram, grid, times, fs=sr, length=n_samples)
    else:
        f = np.asarray(f0, dtype=np.float64)
        y = mir_eval.sonify.pitch_contour(times, np.where(f > 0, f, 0.0), fs=sr, length=n_samples)
    peak = float(np.abs(y).max()) if len(y) else 0.0
    sf.write(str(path), (0.5 * y / peak if peak > 0 else y).astype(np.float32), sr)


def plot_salience(path: str | Path, salience: np.ndarray, f0, task: str, title: str = "") -> None:
    """Salience map (time x log-frequency) with the decoded F0 drawn over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essence.core.report import save_figure

    times, freqs = time_grid(salience.shape[1]), freq_grid()
    step = max(1, salience.shape[1] // 4000)  # at most ~4000 columns in the image
    fig, ax = plt.subplots(figsize=(12, 5))
    ax.imshow(salience[:, ::step], origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1,
              extent=(0, times[-1] + times[1] if len(times) > 1 else 0.01, 0, 360))
    to_bin = lambda f: 60 * np.log2(np.asarray(f) / freqs[0])  # noqa: E731
    if task == "multif0":
        tt = np.concatenate([np.full(len(f), t) for t, f in zip(times, f0)]) if len(times) else []
        ff = np.concatenate([np.asarray(f) for f in f0]) if len(times) else []
        ax.scatter(tt, to_bin(ff) if len(ff) else [], s=0.5, c="cyan", label="decoded F0")
    else:
        f = np.asarray(f0, dtype=np.float64)
        v = f > 0
        ax.scatter(times[v], to_bin(f[v]), s=0.5, c="cyan", label="decoded F0 (voiced)")
    octaves = np.arange(0, 361, 60)
    ax.set_yticks(octaves, [f"{freqs[0] * 2 ** (k / 60):.0f}" for k in octaves])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title or f"Deep Salience: {task}")
    ax.legend(loc="upper right", markerscale=10)
    save_figure(fig, path)
