"""Bach chorales from the music21 corpus, rendered to audio with exact F0 labels (a Bach10-like set, offline).

Pipeline (ANCHORS.md §10.1; paper card §7): music21 score (four voices S, A, T, B) -> note list -> MIDI
(``pretty_midi``, one General MIDI program per voice) -> audio with ``tinysoundfont`` and the TimGM6mb soundfont
that ships inside ``pretty_midi`` (GPL-2; used, not vendored) -> mono float32 at 22,050 Hz. Labels come from the
notes themselves: f0 = 440 * 2 ** ((m - 69) / 12) while a note is held (release tails are not labelled).

* Bach10 instruments per voice (``BACH10``): violin (GM 41), clarinet (72), tenor sax (67), bassoon (71).
* Augmentation (``render_chorale(..., augment=True)``): each voice's instrument is drawn from a pool of
  sustained GM instruments in its register, the tempo from 70..110 BPM, a transposition from -3..+3 semitones and
  note velocities from 70..110; the seed makes it repeatable.
* Fixed split by chorale (``chorale_split``): every four-part chorale file, sorted by name, is assigned to
  train / validation / test by a hash of its name (80 / 10 / 10 %), so the split never depends on which subset
  is used.
* Renders are cached under ``essence.data.cache_dir("chorales")`` keyed by chorale, settings and versions.

Licence note: the music21 corpus states that some encodings are not for commercial use (research use is fine).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from essence.data.cache import cache_dir, cache_key, missing_source_error, package_path

__all__ = ["Chorale", "Rendered", "chorale_paths", "chorale_split", "load_chorale", "render_chorale",
           "soundfont_path", "BACH10", "VOICES", "midi_to_hz", "chorale_to_midi", "TRAIN_POOLS", "HELD_OUT_POOLS",
           "KNOWN_SOUNDFONTS"]

SR = 22050
VOICES = ("soprano", "alto", "tenor", "bass")
BACH10 = (40, 71, 66, 70)  # 0-based GM programs: violin, clarinet, tenor sax, bassoon
# sustained instruments per voice register (0-based GM programs) for instrument augmentation
_POOL = (
    (40, 73, 68, 71, 56, 65, 52),      # soprano: violin, flute, oboe, clarinet, trumpet, alto sax, choir
    (40, 41, 71, 68, 65, 60, 52),      # alto: violin, viola, clarinet, oboe, alto sax, horn, choir
    (41, 42, 66, 60, 57, 70, 52),      # tenor: viola, cello, tenor sax, horn, trombone, bassoon, choir
    (42, 70, 58, 43, 67, 57),          # bass: cello, bassoon, tuba, contrabass, baritone sax, trombone
)
TRAIN_POOLS = _POOL
# held-out instruments per voice (0-based GM programs), none of them in any training pool: validation and test
# renders for an out-of-domain evaluation (another soundfont, other timbres)
HELD_OUT_POOLS = (
    (74, 69, 64, 22),                  # soprano: recorder, English horn, soprano sax, harmonica
    (69, 53, 59, 21),                  # alto: English horn, voice oohs, muted trumpet, accordion
    (53, 61, 21, 19),                  # tenor: voice oohs, brass section, accordion, church organ
    (19, 32, 48, 61),                  # bass: church organ, acoustic bass, string ensemble, brass section
)
# soundfonts known by name: Debian's FluidR3 (fluid-soundfont-gm), a different GM bank than TimGM6mb
KNOWN_SOUNDFONTS = {"fluidr3": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "apt-get install fluid-soundfont-gm"),
                    "timgm6mb": ("", "pip install pretty_midi")}
_INSTALL_M21 = "pip install music21"
_INSTALL_TSF = "pip install --no-deps tinysoundfont==0.3.7"


def midi_to_hz(m) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


@dataclass(frozen=True)
class Chorale:
    """A chorale's notes: per voice a list of (onset, duration, MIDI pitch), times in quarter notes."""

    name: str
    voices: tuple[tuple[tuple[float, float, int], ...], ...]


@dataclass
class Rendered:
    """Audio (n,) float32 at ``sr`` and exact labels: ``notes`` per voice as (start s, end s, f0 Hz)."""

    name: str
    audio: np.ndarray
    sr: int
    notes: list[list[tuple[float, float, float]]]
    programs: tuple[int, ...]
    bpm: float
    transpose: int

    def f0_on_grid(self, times: np.ndarray, voices: tuple[int, ...] | None = None) -> list[np.ndarray]:
        """Multi-f0 labels at ``times``: per frame the f0s (ascending) of the notes held at that time."""
        times = np.asarray(times, dtype=np.float64)
        out: list[list[float]] = [[] for _ in times]
        for v in (range(len(self.notes)) if voices is None else voices):
            for start, end, f0 in self.notes[v]:
                lo, hi = np.searchsorted(times, [start, end], side="left")
                for i in range(lo, hi):
                    out[i].append(f0)
        return [np.array(sorted(set(f))) for f in out]

    def voice_on_grid(self, times: np.ndarray, voice: int) -> np.ndarray:
        """One f0 per frame for one voice (0 = silent): the melody (soprano, 0) or the bass line (3)."""
        f = self.f0_on_grid(times, (voice,))
        return np.array([x.max() if len(x) else 0.0 for x in f])


def _music21():
    if importlib.util.find_spec("music21") is None:
        raise missing_source_error("music21 (Bach chorale corpus)", _INSTALL_M21)
    import music21

    return music21


def chorale_paths() -> list[Path]:
    """Files of the Bach chorales in the music21 corpus (sorted by name)."""
    m21 = _music21()
    paths = sorted(Path(p) for p in m21.corpus.getComposer("bach"))
    if not paths:
        raise missing_source_error("the music21 Bach corpus", _INSTALL_M21)
    return paths


def chorale_split(name: str) -> str:
    """The fixed split of a chorale by name: 'train' (80 %), 'validation' (10 %) or 'test' (10 %)."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10
    return "test" if h == 0 else "validation" if h == 1 else "train"


def load_chorale(path: str | Path) -> Chorale | None:
    """Parse one corpus file; ``None`` if it does not have exactly four single-line voices."""
    m21 = _music21()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"chorale file not found: {path}")
    score = m21.corpus.parse(str(path)) if path.suffix in (".mxl", ".xml", ".krn") else m21.converter.parse(path)
    parts = list(score.parts)
    if len(parts) != 4:
        return None
    voices = []
    for part in parts:
        notes = []
        for n in part.stripTies().flatten().notes:
            for p in n.pitches:
                notes.append((float(n.offset), float(n.quarterLength), int(p.midi)))
        if not notes:
            return None
        voices.append(tuple(notes))
    return Chorale(path.stem, tuple(voices))


def chorale_to_midi(chorale: Chorale, programs, bpm: float, transpose: int = 0, velocities=None):
    """A ``pretty_midi.PrettyMIDI`` with one instrument (and channel) per voice."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    spq = 60.0 / bpm
    for v, notes in enumerate(chorale.voices):
        inst = pretty_midi.Instrument(program=int(programs[v]), name=VOICES[v])
        for i, (onset, dur, m) in enumerate(notes):
            vel = 100 if velocities is None else int(velocities[v][i % len(velocities[v])])
            inst.notes.append(pretty_midi.Note(vel, int(m) + transpose, onset * spq, (onset + dur) * spq))
        pm.instruments.append(inst)
    return pm


def soundfont_path(path: str | Path | None = None) -> Path:
    """The GM soundfont: ``path`` (a .sf2 file, or a known name: ``fluidr3``, ``timgm6mb``), else the TimGM6mb.sf2
    inside pretty_midi.

    Raises FileNotFoundError naming the install line when a named soundfont is not installed.
    """
    if path is not None and str(path).lower() in KNOWN_SOUNDFONTS:
        file, install = KNOWN_SOUNDFONTS[str(path).lower()]
        if not file:
            path = None
        elif Path(file).is_file():
            return Path(file)
        else:
            raise FileNotFoundError(f"soundfont {path!r} not found at {file}: {install}")
    return package_path("pretty_midi", "TimGM6mb.sf2", what="the TimGM6mb soundfont (inside pretty_midi)",
                        install="pip install pretty_midi", path=path)


def _synthesize(pm, sr: int, soundfont: Path, tail: float = 0.5) -> np.ndarray:
    """Render a PrettyMIDI with tinysoundfont (events in time order, one channel per instrument) to mono."""
    if importlib.util.find_spec("tinysoundfont") is None:
        raise missing_source_error("tinysoundfont (MIDI synthesiser)", _INSTALL_TSF)
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sr, gain=-6.0)
    sfid = synth.sfload(str(soundfont))
    events = []
    for ch, inst in enumerate(pm.instruments):
        synth.program_select(ch, sfid, 0, inst.program)
        for n in inst.notes:
            events.append((n.start, 1, ch, n.pitch, n.velocity))
            events.append((n.end, 0, ch, n.pitch, 0))  # note-offs (0) sort before note-ons (1) at one time
    events.sort()
    chunks, cursor = [], 0
    for t, on, ch, pitch, vel in events:
        n = int(round(t * sr)) - cursor
        if n > 0:
            chunks.append(np.frombuffer(synth.generate(n), dtype=np.float32).copy())
            cursor += n
        if on:
            synth.noteon(ch, pitch, vel)
        else:
            synth.noteoff(ch, pitch)
    chunks.append(np.frombuffer(synth.generate(int(tail * sr)), dtype=np.float32).copy())
    stereo = np.concatenate(chunks).reshape(-1, 2)
    return stereo.mean(axis=1).astype(np.float32)


def render_chorale(chorale: Chorale | str | Path, *, augment: bool = False, seed: int = 0,
                   programs: tuple[int, ...] = BACH10, bpm: float = 90.0, transpose: int = 0,
                   max_seconds: float | None = None, sr: int = SR, soundfont: str | Path | None = None,
                   cache: bool = True, pools: tuple[tuple[int, ...], ...] = TRAIN_POOLS) -> Rendered:
    """Render one chorale (a :class:`Chorale`, or a corpus path) and return audio with exact labels.

    With ``augment`` the instruments (one per voice from ``pools``: :data:`TRAIN_POOLS`, or
    :data:`HELD_OUT_POOLS` for out-of-domain evaluation renders), tempo, transposition and velocities are drawn
    from ``seed`` (ignoring ``programs``/``bpm``/``transpose``). ``max_seconds`` crops audio and labels. Cached
    when ``cache``.
    """
    if len(pools) != 4 or not all(len(p) for p in pools):
        raise ValueError(f"pools must hold one non-empty program list per voice (4), got {pools!r}")
    if not isinstance(chorale, Chorale):
        loaded = load_chorale(chorale)
        if loaded is None:
            raise ValueError(f"{chorale} does not have four single-line voices")
        chorale = loaded
    rng = np.random.default_rng([seed, int(hashlib.sha256(chorale.name.encode()).hexdigest()[:8], 16)])
    if augment:
        programs = tuple(int(rng.choice(pool)) for pool in pools)
        bpm = float(rng.uniform(70.0, 110.0))
        transpose = int(rng.integers(-3, 4))
        velocities = [rng.integers(70, 111, size=len(v)) for v in chorale.voices]
    else:
        velocities = None
    sf = soundfont_path(soundfont)
    key = cache_key(chorale.name, chorale.voices.__hash__(), programs, round(bpm, 6), transpose, seed if augment
                    else None, max_seconds, sr, sf.name, sf.stat().st_size, "v1")
    path = cache_dir("chorales") / f"{chorale.name}-{key}.npz" if cache else None
    if path is not None and path.exists():
        d = np.load(path, allow_pickle=False)
        notes = [[tuple(r) for r in d[f"notes{v}"].tolist()] for v in range(4)]
        return Rendered(chorale.name, d["audio"], sr, notes, programs, bpm, transpose)
    pm = chorale_to_midi(chorale, programs, bpm, transpose, velocities)
    audio = _synthesize(pm, sr, sf)
    peak = float(np.abs(audio).max())
    if peak > 0:
        audio = (audio / peak * 0.9).astype(np.float32)
    notes = [[(float(n.start), float(n.end), float(midi_to_hz(n.pitch))) for n in inst.notes]
             for inst in pm.instruments]
    if max_seconds is not None:
        audio = audio[: int(max_seconds * sr)]
        notes = [[(s, min(e, max_seconds), f) for s, e, f in v if s < max_seconds] for v in notes]
    if path is not None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, audio=audio, **{f"notes{v}": np.array(notes[v], dtype=np.float64).reshape(-1, 3)
                                     for v in range(4)})
        tmp.replace(path)
    return Rendered(chorale.name, audio, sr, notes, tuple(programs), bpm, transpose)
