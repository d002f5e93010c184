"""CPU fast paths: OpenCV / Pillow / numpy versions of a few corruptions for CPU tensors.

The torch implementations in :mod:`.ops` / :mod:`.functional` stay the reference and run on every other
device; these functions do the same computation with the library call the original generator used (OpenCV's
``filter2D`` for defocus blur, a separable filter for the Gaussian blur, Pillow's BOX resize, libjpeg), one
2-D plane at a time on the (N * C, H, W) view of a contiguous batch, so no layout conversion is needed.
``tests/corruptions/test_corruptions_fastpath.py`` checks that both paths agree (within float rounding, or
bit for bit where the library is the reference).

The ``*_u8`` variants take and return uint8 batches (values 0..255) and skip the float round trip: a filter
with non-negative weights summing to one is applied to the values 0..255 and truncated as
``np.uint8(clip(y, 0, 1) * 255)`` would be.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["pool", "for_each", "cpu_float", "filter2d_planes", "sep_filter_planes", "gaussian_taps",
           "box_enlarge_index", "pixelate_planes_u8",
           "jpeg_planes_u8", "numpy_rng", "impulse_positions", "poisson_capped_counts", "is_uint8_levels"]


@lru_cache(maxsize=1)
def pool():
    """Threads for the per-plane loops (OpenCV and Pillow release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from essence.core.runtime import available_cores

    return ThreadPoolExecutor(max_workers=max(1, min(8, torch.get_num_threads(), available_cores())))


def for_each(count: int, body) -> None:
    """``body(i)`` for i in range(count): in contiguous groups on the thread pool when torch uses several
    threads, else in a plain loop."""
    workers = min(count, max(1, torch.get_num_threads()), pool()._max_workers)  # noqa: SLF001
    if workers <= 1:
        for i in range(count):
            body(i)
        return
    bounds = np.linspace(0, count, workers + 1).astype(int)
    list(pool().map(lambda ab: [body(i) for i in range(ab[0], ab[1])], zip(bounds[:-1], bounds[1:])))


def cpu_float(x: torch.Tensor) -> bool:
    """True for a CPU float32 / float64 tensor (the dtypes OpenCV filters natively)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _planes(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1, *t.shape[-2:]).numpy()


def _truncate_into(y255: np.ndarray, dst: np.ndarray) -> None:
    """dst = np.uint8(clip(y255, 0, 255) + 1e-4) (floor of non-negative values: the originals' truncation)."""
    np.add(y255, 1e-4, out=y255)
    np.clip(y255, 0, 255, out=y255)
    np.copyto(dst, y255, casting="unsafe")


def _apply_planes(x: torch.Tensor, filt) -> torch.Tensor:
    """``filt(src_plane, dst_plane)`` for every (H, W) plane; float batches in, same dtype out."""
    xc = x.detach().contiguous()
    out = torch.empty_like(xc)
    src, dst = _planes(xc), _planes(out)
    for_each(len(src), lambda i: filt(src[i], dst[i]))
    return out


def _apply_planes_u8(u8: torch.Tensor, filt) -> torch.Tensor:
    """The same for uint8 batches: each plane is filtered to float32 (values 0..255) and truncated."""
    xc = u8.contiguous()
    out = torch.empty_like(xc)
    src, dst = _planes(xc), _planes(out)

    def one(i):
        buf = np.empty(src.shape[1:], dtype=np.float32)
        filt(src[i].astype(np.float32), buf)
        _truncate_into(buf, dst[i])

    for_each(len(src), one)
    return out


def filter2d_planes(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """``cv2.filter2D(plane, -1, kernel, borderType=BORDER_REFLECT_101)`` for every plane of a float or uint8
    CPU batch (the kernel must be smaller than the image)."""
    import cv2

    k = np.asarray(kernel, dtype=np.float64 if x.dtype == torch.float64 else np.float32)

    def filt(s, d):
        cv2.filter2D(s, -1, k, dst=d, borderType=cv2.BORDER_REFLECT_101)

    return _apply_planes_u8(x, filt) if x.dtype == torch.uint8 else _apply_planes(x, filt)


def gaussian_taps(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian weights: radius int(truncate sigma + 0.5), normalised (float64)."""
    radius = int(truncate * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * k**2)
    return w / w.sum()


def sep_filter_planes(x: torch.Tensor, taps: np.ndarray) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(mode='nearest')`` per plane with OpenCV's separable filter
    (BORDER_REPLICATE = scipy 'nearest'); float or uint8 CPU batch, taps shorter than twice the image."""
    import cv2

    k = np.asarray(taps, dtype=np.float64 if x.dtype == torch.float64 else np.float32)[:, None]

    def filt(s, d):
        cv2.sepFilter2D(s, -1, k, k, dst=d, borderType=cv2.BORDER_REPLICATE)

    return _apply_planes_u8(x, filt) if x.dtype == torch.uint8 else _apply_planes(x, filt)


@lru_cache(maxsize=64)
def box_enlarge_index(in_size: int, out_size: int) -> np.ndarray | None:
    """Source index of every output pixel of Pillow's BOX resize when enlarging (one tap of weight 1 per
    output, from :func:`.ops._pil_box_coeffs`, Pillow's own arithmetic), or None where a row is not a single
    full tap. Pillow's NEAREST filter is not a substitute: its 16.16 fixed-point stepping picks other pixels
    for some sizes (e.g. 36 -> 61)."""
    from essence.corruptions.ops import _PRECISION_BITS, _pil_box_coeffs

    coeffs = _pil_box_coeffs(in_size, out_size)
    if not np.all((coeffs == (1 << _PRECISION_BITS)).sum(1) == 1) or not np.all((coeffs != 0).sum(1) == 1):
        return None
    return coeffs.argmax(1).astype(np.intp)


@lru_cache(maxsize=64)
def _cv2_nearest_matches(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether ``cv2.resize(INTER_NEAREST_EXACT)`` picks the same source pixels as Pillow's BOX enlargement
    for these sizes (checked on index ramps; OpenCV's 16.16 fixed point differs for some size pairs)."""
    import cv2

    for axis in (0, 1):
        want = box_enlarge_index(in_hw[axis], out_hw[axis])
        if want is None:
            return False
        ramp = np.arange(in_hw[axis], dtype=np.uint16)
        ramp = np.repeat(ramp[:, None], 2, 1) if axis == 0 else np.repeat(ramp[None, :], 2, 0)
        size = (2, out_hw[0]) if axis == 0 else (out_hw[1], 2)
        got = cv2.resize(ramp, size, interpolation=cv2.INTER_NEAREST_EXACT)
        if not np.array_equal(got[:, 0] if axis == 0 else got[0], want):
            return False
    return True


@lru_cache(maxsize=64)
def _pil_nearest_matches(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether Pillow's NEAREST enlargement picks the same source pixels as its BOX enlargement for these sizes
    (checked on 32-bit index ramps; its 16.16 fixed-point stepping differs for some size pairs, e.g. 36 -> 61)."""
    from PIL import Image

    for axis in (0, 1):
        want = box_enlarge_index(in_hw[axis], out_hw[axis])
        if want is None:
            return False
        ramp = np.arange(in_hw[axis], dtype=np.int32)[:, None] if axis == 0 else \
            np.arange(in_hw[axis], dtype=np.int32)[None, :]
        img = Image.fromarray(np.ascontiguousarray(ramp), mode="I")
        got = np.asarray(img.resize((1, out_hw[0]) if axis == 0 else (out_hw[1], 1), Image.NEAREST))
        if not np.array_equal(got[:, 0] if axis == 0 else got[0], want):
            return False
    return True


def _aligned_factor(in_size: int, out_size: int) -> int | None:
    """The integer factor r of a reduction by whole blocks (in = r * out) for a power of two r up to 64 (block
    sums stay in uint16 and ``cv2.split`` within its channel limit), else None."""
    r, rem = divmod(in_size, out_size)
    return r if rem == 0 and 2 <= r <= 64 and not r & (r - 1) else None


def _block_mean_u8(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Pillow's BOX reduction of a 2-D uint8 array by whole blocks of r (a power of two) along ``axis``:
    floor(S / r + 1/2) of each block sum S (Pillow's 22-bit coefficient 2^22 / r is exact for such r). The r
    members of the blocks are r planes: de-interleaved by ``cv2.split`` (axis 1) or row views (axis 0); OpenCV
    sums them in uint16 and ``convertScaleAbs`` rounds S / r + 1 / (2r), which is never a half (r even), so its
    half-to-even rounding gives Pillow's half-up. The tests check every block sum against Pillow."""
    import cv2

    h, w = a.shape
    parts = cv2.split(a.reshape(h, w // r, r)) if axis == 1 else list(a.reshape(h // r, r, w).transpose(1, 0, 2))
    total = cv2.add(parts[0], parts[1], dtype=cv2.CV_16U)
    for p in parts[2:]:
        total = cv2.add(total, p, dtype=cv2.CV_16U)
    return cv2.convertScaleAbs(total, alpha=1.0 / r, beta=0.5 / r)


def _pixelate_aligned(src: np.ndarray, dst: np.ndarray, rh: int, rw: int, c: int) -> None:
    """Both reductions by whole blocks (:func:`_aligned_factor`): each image's planes stacked into one 2-D
    array (no block straddles two planes), Pillow's horizontal then vertical pass, and the enlargement (Pillow's
    BOX enlargement by an integer factor repeats every pixel) by ``cv2.merge`` of rw copies (the columns) and
    rh row-block copies. Per image at 224 px, one thread: 3.6x (-> 112) and 1.6x (-> 56) faster than the
    Pillow path."""
    import cv2

    m, h, w = src.shape

    def one(j):
        a = src[j * c:(j + 1) * c].reshape(c * h, w)
        small = _block_mean_u8(_block_mean_u8(a, rw, axis=1), rh, axis=0)
        wide = cv2.merge([small] * rw).reshape(small.shape[0], w)
        rows = dst[j * c:(j + 1) * c].reshape(small.shape[0], rh, w)
        for k in range(rh):
            rows[:, k] = wide

    for_each(m // c, one)


def pixelate_planes_u8(u8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow ``resize(size, BOX)`` then ``resize((W, H), BOX)`` of every image.

    Where both sides shrink by whole blocks of a power of two, OpenCV block sums (:func:`_pixelate_aligned`).
    Else the reduction runs on the RGB image for three planes (Pillow's four-byte pixel loop shares the
    coefficients: one call instead of three), built from the planes by ``Image.merge`` without an interleaving
    copy in Python, else one plane at a time as a mode-L image (Pillow's 8-bit resampling is per channel with the
    same coefficients and rounding, so both equal the RGB image's result; the tests compare with Pillow on RGB
    images). The enlargement, a single tap per output pixel, is Pillow's NEAREST resize of the reduced RGB image
    where it picks the BOX filter's source pixels (:func:`_pil_nearest_matches`; ``cv2.split`` then
    de-interleaves it straight into the output planes), else OpenCV's exact nearest-neighbour resize of each
    reduced plane where that does, else a gather with Pillow's indices (:func:`box_enlarge_index`)."""
    import cv2
    from PIL import Image

    n, c, h, w = u8.shape
    xc = u8.contiguous()
    out = torch.empty_like(xc)
    src, dst = _planes(xc), _planes(out)
    rh, rw = _aligned_factor(h, size[0]), _aligned_factor(w, size[1])
    if rh and rw:                      # whole blocks (224 -> 112 or 56: ImageNet-C severities 2 and 5), same pixels
        _pixelate_aligned(src, dst, rh, rw, c)
        return out
    rows, cols = box_enlarge_index(size[0], h), box_enlarge_index(size[1], w)
    use_cv2 = _cv2_nearest_matches(size, (h, w))

    def enlarge(small, i):
        if use_cv2:
            cv2.resize(np.asarray(small), (w, h), dst=dst[i], interpolation=cv2.INTER_NEAREST_EXACT)
        elif rows is None or cols is None:
            dst[i] = np.asarray(small.resize((w, h), Image.BOX))
        else:
            dst[i] = np.asarray(small).take(rows, axis=0).take(cols, axis=1)

    def plane(i):
        enlarge(Image.fromarray(src[i]).resize((size[1], size[0]), Image.BOX), i)

    pil_nearest = _pil_nearest_matches(size, (h, w))

    def rgb(j):
        planes = [Image.frombuffer("L", (w, h), src[j * 3 + k], "raw", "L", 0, 1) for k in range(3)]
        small = Image.merge("RGB", planes).resize((size[1], size[0]), Image.BOX)
        if pil_nearest:     # one RGB enlargement, then the planes out: cv2.split writes into the output planes
            cv2.split(np.asarray(small.resize((w, h), Image.NEAREST)), [dst[j * 3 + k] for k in range(3)])
            return
        for k, plane_img in enumerate(small.split()):
            enlarge(plane_img, j * 3 + k)

    if c == 3:
        for_each(n, rgb)
    else:
        for_each(n * c, plane)
    return out


def jpeg_planes_u8(u8: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG encode + decode at ``quality`` with libjpeg through OpenCV (baseline, 4:2:0, islow DCT: the
    settings of ``PIL.Image.save(format='JPEG', quality=q)``; the tests check the pixels equal Pillow's).
    RGB planes are interleaved by ``cv2.merge`` in BGR order and split back, grey planes are encoded as
    one-channel JPEGs."""
    import cv2

    n, c = u8.shape[:2]
    xc = u8.contiguous()
    out = torch.empty_like(xc)
    src, dst = _planes(xc), _planes(out)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]

    def one(i):
        if c == 1:
            ok, enc = cv2.imencode(".jpg", src[i], params)
            dst[i] = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
        else:
            ok, enc = cv2.imencode(".jpg", cv2.merge([src[3 * i + 2], src[3 * i + 1], src[3 * i]]), params)
            b, g, r = cv2.split(cv2.imdecode(enc, cv2.IMREAD_COLOR))
            dst[3 * i], dst[3 * i + 1], dst[3 * i + 2] = r, g, b
        if not ok:  # pragma: no cover
            raise RuntimeError("OpenCV failed to encode a JPEG")

    for_each(n, one)
    return out


# ------------------------------------------------------------------------------------------------------
# random draws for the noise corruptions
# ------------------------------------------------------------------------------------------------------
def numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy PCG64 generator seeded by one 63-bit draw from the torch ``generator`` (deterministic given it;
    numpy's vectorised samplers are several times faster than drawing every value from torch's CPU
    Mersenne twister)."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, dtype=torch.int64))
    return np.random.Generator(np.random.PCG64(seed))


def impulse_positions(size: int, amount: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the salted and peppered values among ``size``: each value is flipped with probability
    ``amount`` (a Bernoulli process, drawn as geometric gaps between flips), then salt or pepper with equal
    odds, as ``skimage.util.random_noise(mode='s&p', salt_vs_pepper=0.5)``."""
    if amount <= 0 or size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    if amount >= 1:
        pos = np.arange(size, dtype=np.int64)
    else:
        mean = size * amount
        chunks, end = [], -1
        while end < size - 1:     # gaps until the last flip lies beyond the end (one block almost always)
            m = int(mean + 6 * math.sqrt(mean) + 64)
            gaps = rng.geometric(amount, size=m)
            block = end + np.cumsum(gaps)
            chunks.append(block)
            end = int(block[-1])
        pos = np.concatenate(chunks)
        pos = pos[:np.searchsorted(pos, size)]
    salt = rng.random(len(pos)) < 0.5
    return pos[salt], pos[~salt]


def is_uint8_levels(x: torch.Tensor) -> torch.Tensor | None:
    """The levels round(255 x) as uint8 when every value of x is within 1e-3 / 255 of one (an image that
    was uint8), else None."""
    q = torch.round(x.detach() * 255)
    if float((x.detach() * 255 - q).abs().max()) > 1e-3:
        return None
    return q.clamp_(0, 255).to(torch.uint8)


_GUIDE_BITS = 10   # 1024 buckets of u per level


def _poisson_tables(c: float, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """CDF rows F[r, j] = P(Poisson(r c / 255) <= j), j = 0..cap-1, with a sentinel 2 at j = cap
    (flattened), and the guide table G[r, b] = #{j : F[r, j] <= b / 1024} (the smallest possible count
    for a uniform in bucket b)."""
    lam = np.arange(256, dtype=np.float64)[:, None] * (float(c) / 255.0)
    j = np.arange(cap, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        logpmf = j * np.log(lam) - lam - np.array([math.lgamma(v + 1) for v in range(cap)])[None, :]
    pmf = np.where(lam == 0, (j == 0).astype(np.float64), np.exp(logpmf))
    cdf = np.minimum(np.cumsum(pmf, axis=1), 1.0)
    buckets = np.arange(1 << _GUIDE_BITS, dtype=np.float64) / (1 << _GUIDE_BITS)
    guide = np.stack([np.searchsorted(row, buckets, side="right") for row in cdf]).astype(np.int32)
    return np.concatenate([cdf, np.full((256, 1), 2.0)], 1).reshape(-1), guide.reshape(-1)


_TABLES: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}


def poisson_capped_counts(levels: np.ndarray, c: float, rng: np.random.Generator | np.ndarray
                          ) -> tuple[np.ndarray, int]:
    """min(Poisson(levels c / 255), cap) with cap = ceil(c), for uint8 levels, by inverse-CDF sampling (one
    uniform u per value: the count is #{j : F_j <= u}, found from a guide table and a few exact steps); the
    counts at or above ``c`` all give the clipped value 1, so the capped count determines
    ``clip(Poisson(x c) / c, 0, 1)`` exactly. ``rng``: a numpy generator, or the uniforms themselves (one per
    value, in [0, 1))."""
    cap = max(int(math.ceil(c)), 1)
    key = (float(c), cap)
    if key not in _TABLES:
        _TABLES[key] = _poisson_tables(c, cap)
    cdf, guide = _TABLES[key]
    r = levels.reshape(-1).astype(np.int32)
    u = rng.random(r.size) if isinstance(rng, np.random.Generator) else np.asarray(rng, np.float64).reshape(-1)
    if u.size != r.size:
        raise ValueError(f"need one uniform per value: {u.size} for {r.size}")
    k = guide[(r << _GUIDE_BITS) | (u * (1 << _GUIDE_BITS)).astype(np.int32)]
    row = r * (cap + 1)
    todo = np.nonzero(cdf[row + k] <= u)[0]          # F_k <= u: the count is larger (few values)
    while todo.size:
        k[todo] += 1
        todo = todo[cdf[row[todo] + k[todo]] <= u[todo]]
    return k.reshape(levels.shape), cap
