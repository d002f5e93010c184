"""essence.corruptions vs imagecorruptions 1.1.2 on the same images (one process).

CPU, 224x224 RGB uint8, batches of 64: images/s per corruption (all five severities) for both, the ratio,
and the time of a full 19 x 5 pass. imagecorruptions works one image at a time; it is timed on
``--anchor-images`` images per severity (``--anchor-images-glass`` for its slow glass blur) and its
per-image time is extrapolated to the batch. Each severity is timed up to ``--repeat`` times (within about a
second) on both sides and the fastest run is kept (the machine may be shared). Its three corruptions that
crash on today's numpy / scikit-image (glass_blur, gaussian_blur, fog) are timed with the minimal patch of
essence.corruptions.reference (marked "patched").

    .venv/bin/python benchmarks/corruptions.py [--batch 64] [--anchor-images 16] [--device cpu|cuda]
        [--threads 1] [--repeat 3] [--names all|noise|...|shot_noise,pixelate]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from essence.corruptions import corrupt, corruption_names
from essence.corruptions.reference import CRASHING, imagecorruptions_version, load_imagecorruptions


def images(n: int, size: int = 224) -> np.ndarray:
    from PIL import Image

    from essence.data import load_photo, photo_names

    photos = []
    for name in photo_names():
        try:
            img = np.asarray(load_photo(name))
        except Exception:  # a photo that needs a download (pooch) is skipped
            continue
        if img.ndim == 3 and min(img.shape[:2]) >= 128:
            photos.append(np.asarray(Image.fromarray(img[..., :3]).resize((size, size), Image.BILINEAR)))
    return np.stack([photos[i % len(photos)] for i in range(n)])


def best_of(fn, repeat: int, budget: float = 1.0) -> float:
    """The fastest of up to ``repeat`` timed calls of fn (stopping once ``budget`` seconds are spent): the
    machine may be shared, and the minimum is the least disturbed run. Both sides are timed the same way."""
    best, spent = float("inf"), 0.0
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent > budget:
            break
    return best


def time_essence(batch: np.ndarray, name: str, device: str, repeat: int = 1) -> float:
    """uint8 (N, C, H, W) in, uint8 out, like imagecorruptions' uint8 HWC in / out."""
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(device)
    gen = torch.Generator().manual_seed(0)
    corrupt(x[:2], name, 1, generator=gen)                   # warm-up (caches, frost textures)

    def run(s):
        corrupt(x, name, s, generator=gen)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = sum(best_of(lambda s=s: run(s), repeat) for s in range(1, 6))
    return total / (5 * len(batch))                          # seconds per image-severity


def time_anchor(ic, batch: np.ndarray, name: str, k: int, repeat: int = 1) -> float:
    ic.corrupt(batch[0], 1, name)

    def run(s):
        for img in batch[:k]:
            ic.corrupt(img, s, name)

    return sum(best_of(lambda s=s: run(s), repeat) for s in range(1, 6)) / (5 * k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--anchor-images", type=int, default=16, help="images per severity timed for imagecorruptions")
    ap.add_argument("--anchor-images-glass", type=int, default=2, help="the same for its ~1 img/s glass blur")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--names", default="all", help="a subset name or comma-separated corruption names")
    ap.add_argument("--repeat", type=int, default=3,
                    help="time each severity up to this many times (within ~1 s) and keep the fastest, both sides")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = corruption_names(args.names) if "," not in args.names and args.names in (
        "all", "common", "noise", "blur", "weather", "digital", "extra") else args.names.split(",")
    ic = load_imagecorruptions(patched=True)
    batch = images(args.batch)
    from essence.core.precision import machine_line

    print(machine_line() + " (corruptions run in float32: no autocast on either side)")
    print(f"essence vs imagecorruptions {imagecorruptions_version()} | {args.batch} x 224x224 RGB | device "
          f"{args.device} | torch threads {args.threads}")
    print(f"{'corruption':18s} {'essence img/s':>14s} {'imagecorr img/s':>16s} {'ratio':>8s}")
    tot_e = tot_a = 0.0
    glass = (0.0, 0.0)
    for name in names:
        te = time_essence(batch, name, args.device, args.repeat)
        k = args.anchor_images_glass if name == "glass_blur" else args.anchor_images
        ta = time_anchor(ic, batch, name, k, args.repeat) if ic is not None else float("nan")
        tot_e += te
        tot_a += ta
        if name == "glass_blur":
            glass = (te, ta)
        mark = " (patched)" if name in CRASHING else ""
        print(f"{name:18s} {1 / te:14.1f} {1 / ta:16.1f} {ta / te:7.1f}x{mark}", flush=True)
    n = args.batch
    print(f"full {len(names)}x5 pass over {n} images: essence {tot_e * 5 * n:.1f} s, imagecorruptions "
          f"{tot_a * 5 * n:.1f} s (extrapolated), ratio {tot_a / tot_e:.1f}x")
    if glass[0] and len(names) > 1:   # the anchor's pure-Python glass blur loop dominates its total
        e, a = tot_e - glass[0], tot_a - glass[1]
        print(f"without glass_blur ({len(names) - 1}x5): essence {e * 5 * n:.1f} s, imagecorruptions "
              f"{a * 5 * n:.1f} s (extrapolated), ratio {a / e:.1f}x")


if __name__ == "__main__":
    main()
