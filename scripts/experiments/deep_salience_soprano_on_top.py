"""How often is the melody (soprano) of a Bach chorale the highest sounding voice?

Deep Salience's claim 5 compares the melody network with "the highest peak of the multi-f0 output" read as a
melody. On MedleyDB (the paper's data) the melody is often not the top line; on four-part chorales the soprano
almost always is, so a perfect multi-f0 model's highest peak would already be a near-perfect melody. This script
measures that from the scores alone (no audio, no model): on a grid of 1/16 quarter note, over the frames where
the soprano sounds, the share where its pitch is at least every other sounding voice's (the upper bound of the
highest-peak baseline's raw pitch accuracy under perfect multi-f0), per split of the fixed chorale split.

    python scripts/experiments/deep_salience_soprano_on_top.py --split test
"""

from __future__ import annotations

import argparse

import numpy as np

from essence.data.chorales import chorale_paths, chorale_split, load_chorale

GRID = 1 / 16   # quarter notes per frame


def soprano_on_top(voices) -> tuple[int, int]:
    """(frames where the soprano sounds, of which the soprano is the highest or tied-highest sounding pitch)."""
    end = max(on + d for v in voices for on, d, _ in v)
    n = int(np.ceil(end / GRID))
    pitch = np.full((len(voices), n), -1, dtype=np.int16)        # -1 = silent
    for k, v in enumerate(voices):
        for on, d, m in v:
            lo, hi = int(round(on / GRID)), int(round((on + d) / GRID))
            pitch[k, lo:hi] = np.maximum(pitch[k, lo:hi], m)
    sounding = pitch[0] >= 0
    top = pitch[0] >= pitch[1:].max(axis=0)
    return int(sounding.sum()), int((sounding & top).sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="test", choices=("train", "validation", "test", "all"))
    args = p.parse_args()
    sound = top = used = 0
    per = []
    for path in chorale_paths():
        if args.split != "all" and chorale_split(path.stem) != args.split:
            continue
        ch = load_chorale(path)
        if ch is None:
            continue
        s, t = soprano_on_top(ch.voices)
        sound, top, used = sound + s, top + t, used + 1
        per.append(t / max(s, 1))
    per = np.array(per)
    print(f"{args.split}: {used} four-voice chorales; soprano is the highest sounding voice in {top:,} of {sound:,} "
          f"soprano frames = {100 * top / max(sound, 1):.2f}% (per chorale: min {100 * per.min():.1f}%, median "
          f"{100 * np.median(per):.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
