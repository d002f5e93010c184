"""Per-image random streams: an image's corruption depends only on (seed, its index).

Every random corruption draws image i's randomness from its own CPU ``torch.Generator``, seeded with
``image_seed(seed, start + i)`` (SplitMix64 of the pair), and only then moves it to the device. So the same
seed gives the same pixels whatever the batch size, the chunking of a CPU batch, or the device (CPU or GPU):

    corrupt(x, "fog", 3, seed=7)[i]  ==  corrupt(x[i:i + 1], "fog", 3, seed=7, start=i)[0]

A ``torch.Generator`` passed instead of a seed gives up one 63-bit draw, the batch's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["ImageRNG", "image_seeds", "as_image_rng", "MAX_SEED"]

MAX_SEED = 2**63 - 1
_U64 = np.uint64


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea, Flood 2014) on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def image_seeds(seed: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The 63-bit seed of each image index under ``seed`` (int64 array), a hash of the pair (seed, index)."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and idx.min() < 0:
        raise ValueError(f"image indices must be >= 0, got {int(idx.min())}")
    s = _splitmix64(np.full(idx.shape, int(seed), dtype=_U64))
    out = _splitmix64(s ^ _splitmix64(idx.astype(_U64)))
    return (out & _U64(MAX_SEED)).astype(np.int64)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in 0..2**63-1, got {seed!r}")
    return int(seed)


class ImageRNG:
    """One CPU ``torch.Generator`` per image of a batch, created on first use and then stateful (so the
    several draws a corruption makes for an image continue one stream). Slicing (``rng[a:b]``) shares the
    generators, so a chunk of the batch draws exactly what the whole batch would for those images."""

    def __init__(self, seeds: Sequence[int] | np.ndarray):
        self.seeds = [int(s) for s in np.asarray(seeds, dtype=np.int64).reshape(-1)]
        self._gens: list[torch.Generator | None] = [None] * len(self.seeds)

    @classmethod
    def from_seed(cls, seed: int, n: int, start: int = 0) -> ImageRNG:
        """Images start .. start + n - 1 under ``seed``."""
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"start must be a non-negative integer, got {start!r}")
        return cls(image_seeds(_check_seed(seed), np.arange(start, start + n)))

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, item: slice) -> ImageRNG:
        if not isinstance(item, slice):
            raise TypeError("ImageRNG supports slices only")
        sub = ImageRNG.__new__(ImageRNG)
        sub.seeds = self.seeds[item]
        for i in range(len(self.seeds))[item]:   # create the shared generators first
            self.generator(i)
        sub._gens = self._gens[item]
        return sub

    def generator(self, i: int) -> torch.Generator:
        g = self._gens[i]
        if g is None:
            g = self._gens[i] = torch.Generator().manual_seed(self.seeds[i])
        return g

    # ---- draws, stacked over the images: (N, *shape) on the CPU
    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.empty((len(self), *shape), dtype=dtype)
        for i in range(len(self)):          # written in place: no stacking copy
            torch.randn(tuple(shape), generator=self.generator(i), dtype=dtype, out=out[i])
        return out

    def rand(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        out = torch.empty((len(self), *shape), dtype=dtype)
        for i in range(len(self)):
            torch.rand(tuple(shape), generator=self.generator(i), dtype=dtype, out=out[i])
        return out

    def uniform(self, low: float, high: float, shape: Sequence[int] = (), dtype=torch.float64) -> torch.Tensor:
        return low + (high - low) * self.rand(shape, dtype)

    def randint(self, low: int, high: int, shape: Sequence[int] = ()) -> torch.Tensor:
        return torch.stack([torch.randint(low, high, tuple(shape), generator=self.generator(i))
                            for i in range(len(self))])

    def numpy(self, i: int) -> np.random.Generator:
        """A numpy PCG64 generator for image i, seeded by one 63-bit draw from its stream (numpy's vectorised
        samplers are several times faster than torch's CPU Mersenne twister for the noise corruptions)."""
        seed = int(torch.randint(0, MAX_SEED, (1,), generator=self.generator(i), dtype=torch.int64))
        return np.random.Generator(np.random.PCG64(seed))


def as_image_rng(n: int, *, seed: int | None = None, generator: torch.Generator | ImageRNG | None = None,
                 start: int = 0) -> ImageRNG:
    """The per-image streams of a batch of ``n`` images: from ``seed``; from a ``torch.Generator`` (one draw
    gives the batch's seed); an :class:`ImageRNG` itself; or, with neither, a fresh random seed."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if isinstance(generator, ImageRNG):
        if len(generator) != n:
            raise ValueError(f"the ImageRNG has {len(generator)} streams for a batch of {n} images")
        return generator
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (randomness is drawn on the CPU so that "
                             "CPU and GPU give the same corruption)")
        seed = int(torch.randint(0, MAX_SEED, (1,), generator=generator, dtype=torch.int64))
    elif seed is None:
        seed = int(torch.randint(0, MAX_SEED, (1,), dtype=torch.int64))
    return ImageRNG.from_seed(seed, n, start)
