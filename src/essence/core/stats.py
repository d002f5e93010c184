"""Statistics that decide a reproduction's claims: estimates with 95% confidence intervals, and verdicts.

A claim is a comparison with a direction taken from the paper ("MoCo beats the random encoder"; "accuracy rises
with K"). Its effect (a difference, a correlation, a ratio) is estimated with a confidence interval, and
:func:`decide` turns the interval into a verdict (DESIGN.md, "Reproduction protocol"):

- **reproduced** when the whole interval lies on the paper's side of zero (or of a stated margin);
- **not reproduced** when the whole interval lies on the other side;
- **inconclusive** otherwise, with the number of items (or seeds) that would decide it if the effect stayed at its
  estimate.

Which interval, for which data (all from ``scipy.stats``):

=====================================  ==============================================================
data                                   function
=====================================  ==============================================================
per-item scores of one system          :func:`mean_ci` (bootstrap over items; Student t for < 20 values)
two systems on the same items          :func:`paired_difference` (paired bootstrap; Wilcoxon p-value)
two systems, independent runs (seeds)  :func:`difference` (bootstrap / Welch t over seeds)
seeds x items matrices, same items     :func:`hierarchical_difference` (resample seeds and items)
a monotone trend                       :func:`spearman` (bootstrap over points of the curve)
k successes out of n                   :func:`proportion` (exact binomial test interval)
=====================================  ==============================================================

Example::

    est = paired_difference(correct_moco, correct_random)      # per test image, 0/1
    d = decide(est, direction="greater")                        # the paper: MoCo > random
    report.claim("MoCo features beat a random encoder (linear)", decision=d)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "Estimate",
    "Decision",
    "REPRODUCED",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "mean_ci",
    "difference",
    "paired_difference",
    "hierarchical_difference",
    "hierarchical_mean",
    "spearman",
    "proportion",
    "decide",
    "combine",
    "SeedResults",
    "over_seeds",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
CONFIDENCE = 0.95
N_RESAMPLES = 4999
_SMALL = 20  # below this many values the bootstrap's interval is too narrow: use Student t


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval.

    Attributes:
        value: the estimate (a mean, a difference of means, a correlation...).
        low, high: the ends of the ``confidence`` interval.
        n: the number of units resampled (test items, seeds, curve points).
        method: how the interval was made, in words ("paired bootstrap over 10000 test images").
        unit: what ``n`` counts ("items", "seeds", "points").
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    unit: str = "items"
    confidence: float = CONFIDENCE
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """``0.812 [0.801, 0.823]``; ``scale=100`` shows fractions as percentage points."""
        v, lo, hi = (x * scale for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]"

    def pm(self, digits: int = 3, scale: float = 1.0) -> str:
        """``0.812 ± 0.011`` (the half-width of the interval; use :meth:`format` for skewed intervals)."""
        return f"{self.value * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"

    def as_dict(self) -> dict[str, Any]:
        out = {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "unit": self.unit,
               "method": self.method, "confidence": self.confidence}
        out.update({k: v for k, v in self.extra.items() if isinstance(v, (int, float, str, bool)) or v is None})
        return out


@dataclass(frozen=True)
class Decision:
    """A verdict on one comparison: the estimate, the side the paper claims, and what decided it."""

    estimate: Estimate
    direction: Literal["greater", "less"]
    margin: float
    verdict: str
    needed_n: int | None = None   # for an inconclusive verdict: n at which the interval would exclude the margin

    @property
    def test(self) -> str:
        return self.estimate.method

    def describe(self, digits: int = 3, scale: float = 1.0, name: str = "effect") -> str:
        """One line for a report: the effect, its interval, n, the method, the paper's side."""
        side = ">" if self.direction == "greater" else "<"
        text = (f"{name} {self.estimate.format(digits, scale)} (95% CI, n={self.estimate.n} "
                f"{self.estimate.unit}, {self.estimate.method}); paper: {side} {self.margin * scale:g}")
        p = self.estimate.extra.get("p_value")
        if isinstance(p, float) and math.isfinite(p):
            text += f"; p={p:.2g}"
        if self.verdict == INCONCLUSIVE:
            text += ("; would need n~" + str(self.needed_n) + f" {self.estimate.unit} to decide"
                     if self.needed_n else "; no effect to decide at any n")
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "direction": self.direction, "margin": self.margin,
                "needed_n": self.needed_n, "estimate": self.estimate.as_dict()}


# ---------------------------------------------------------------------------------------------------------
def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1) if not np.isscalar(values) else np.asarray([values])
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a confidence interval needs at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable, *, paired: bool, seed: int,
               n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    from scipy import stats

    n = len(data[0])
    # BCa needs a jackknife of size n x n; use it only where that is cheap, and fall back to the percentile
    # interval where BCa is undefined (a degenerate jackknife, e.g. almost all differences equal)
    methods = ("BCa", "percentile") if n <= 1000 else ("percentile",)
    low = high = float("nan")
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(data, statistic, paired=paired, vectorized=True, n_resamples=n_resamples,
                                  confidence_level=CONFIDENCE, method=method,
                                  random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    if not (math.isfinite(low) and math.isfinite(high)):  # all values equal
        value = float(statistic(*[d[None] for d in data], axis=-1)[0])
        low, high = value, value
    return low, high


def _mean(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(xs[0], axis=axis)


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    n = values.size
    mean = float(values.mean())
    if n < 2:
        return -math.inf, math.inf
    sem = float(values.std(ddof=1) / math.sqrt(n))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(CONFIDENCE, df=n - 1, loc=mean, scale=sem)
    return float(low), float(high)


def mean_ci(values: Sequence[float] | np.ndarray, *, unit: str = "items", seed: int = 0) -> Estimate:
    """The mean of ``values`` with a 95% interval: bootstrap (>= 20 values) or Student t (fewer, e.g. seeds).

    One value gives an infinite interval: a single seed cannot bound anything.
    """
    x = _as_1d(values, "values")
    if x.size >= _SMALL:
        low, high = _bootstrap((x,), _mean, paired=False, seed=seed)
        method = f"bootstrap over {unit}"
    else:
        low, high = _t_interval(x)
        method = f"Student t over {unit}"
    return Estimate(float(x.mean()), low, high, int(x.size), method, unit)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, unit: str = "items",
                      seed: int = 0) -> Estimate:
    """mean(a) - mean(b) for two systems scored on the same items (``a[i]``, ``b[i]``: item ``i``).

    Paired bootstrap over items, with the Wilcoxon signed-rank p-value as ``extra['p_value']``; below 20 items
    the Student t interval on the differences, with the matching one-sample t p-value (the signed-rank test
    cannot go below 2 / 2^n there: 0.0625 for 5 items, however clear the effect).
    """
    from scipy import stats

    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same items: got {x.size} and {y.size} values")
    d = x - y
    if d.size >= _SMALL:
        low, high = _bootstrap((d,), _mean, paired=False, seed=seed)
        method = f"paired bootstrap over {unit}"
    else:
        low, high = _t_interval(d)
        method = f"paired Student t over {unit}"
    p = float("nan")
    if np.any(d != 0):
        try:
            p = float(stats.wilcoxon(d, zero_method="wilcox").pvalue if d.size >= _SMALL
                      else stats.ttest_1samp(d, 0.0).pvalue)
        except ValueError:
            pass
    return Estimate(float(d.mean()), low, high, int(d.size), method, unit, extra={"p_value": p})


def difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, unit: str = "seeds",
               seed: int = 0) -> Estimate:
    """mean(a) - mean(b) for independent runs (e.g. one final score per seed and arm).

    Welch's t interval when either arm has fewer than 20 values, else an unpaired bootstrap.
    """
    from scipy import stats

    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    value = float(x.mean() - y.mean())
    n = int(min(x.size, y.size))
    if min(x.size, y.size) >= _SMALL:
        def stat(u, v, axis=-1):
            return np.mean(u, axis=axis) - np.mean(v, axis=axis)
        low, high = _bootstrap((x, y), stat, paired=False, seed=seed)
        method = f"bootstrap over {unit}"
    elif x.size < 2 or y.size < 2:
        low, high, method = -math.inf, math.inf, f"one {unit[:-1] if unit.endswith('s') else unit} per arm"
    else:
        vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        se = math.sqrt(vx + vy)
        if se == 0:
            low = high = value
        else:
            df = (vx + vy) ** 2 / ((vx ** 2) / (x.size - 1) + (vy ** 2) / (y.size - 1))
            q = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
            low, high = value - q * se, value + q * se
        method = f"Welch t over {unit}"
    return Estimate(value, float(low), float(high), n, method, unit)


def hierarchical_difference(a: np.ndarray, b: np.ndarray, *, unit: str = "items", seed: int = 0,
                            n_resamples: int = 2000) -> Estimate:
    """mean(a) - mean(b) where ``a`` is (seeds_a, items) and ``b`` is (seeds_b, items) on the same items.

    Each resample draws items with replacement (shared by both arms: paired) and each arm's seeds with
    replacement, so the interval carries both the test-set and the training-seed variation. Percentile
    interval. With one seed per arm it reduces to the paired bootstrap over items.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a[None] if a.ndim == 1 else a
    b = b[None] if b.ndim == 1 else b
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (seeds, items) arrays over the same items, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores contain NaN or infinite values")
    rng = np.random.default_rng(seed)
    n_items = a.shape[1]
    stats_ = np.empty(n_resamples)
    # per-item means over a resampled set of seeds = (weights over seeds) @ scores
    for r in range(n_resamples):
        items = rng.integers(0, n_items, n_items)
        wa = np.bincount(rng.integers(0, a.shape[0], a.shape[0]), minlength=a.shape[0]) / a.shape[0]
        wb = np.bincount(rng.integers(0, b.shape[0], b.shape[0]), minlength=b.shape[0]) / b.shape[0]
        stats_[r] = (wa @ a[:, items]).mean() - (wb @ b[:, items]).mean()
    low, high = np.quantile(stats_, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    value = float(a.mean() - b.mean())
    method = (f"bootstrap over {unit} and seeds ({a.shape[0]} vs {b.shape[0]})" if max(a.shape[0], b.shape[0]) > 1
              else f"paired bootstrap over {unit}")
    return Estimate(value, float(low), float(high), n_items, method, unit,
                    extra={"seeds_a": a.shape[0], "seeds_b": b.shape[0]})


def hierarchical_mean(scores: np.ndarray, *, unit: str = "items", seed: int = 0, n_resamples: int = 2000) -> Estimate:
    """The mean of (seeds, items) per-item scores, resampling items and seeds (see
    :func:`hierarchical_difference`)."""
    scores = np.asarray(scores, dtype=np.float64)
    est = hierarchical_difference(scores, np.zeros_like(scores[:1]), unit=unit, seed=seed, n_resamples=n_resamples)
    method = (f"bootstrap over {unit} and {scores.shape[0]} seeds" if scores.ndim == 2 and scores.shape[0] > 1
              else f"bootstrap over {unit}")
    return Estimate(est.value, est.low, est.high, est.n, method, unit,
                    extra={"seeds": 1 if scores.ndim == 1 else scores.shape[0]})


def spearman(x: Sequence[float], y: Sequence[float], *, unit: str = "points", seed: int = 0) -> Estimate:
    """Spearman's rank correlation of ``y`` with ``x`` and its 95% interval.

    Bootstrap over the (x, y) points from 20 points on; Fisher z with the Bonett-Wright standard error for
    4-19 points; with 3 points no interval ([-1, 1]). ``extra['p_value']`` is scipy's test of zero correlation.
    For a trend over 3-4 settings (K = 256, 1024, 4096) prefer pairwise comparisons of neighbours joined
    with :func:`combine`.
    """
    from scipy import stats

    u, v = _as_1d(x, "x"), _as_1d(y, "y")
    if u.shape != v.shape or u.size < 3:
        raise ValueError(f"spearman needs two equal-length sequences of >= 3 values, got {u.size} and {v.size}")
    res = stats.spearmanr(u, v)
    rho = float(res.statistic) if math.isfinite(res.statistic) else 0.0
    p = float(res.pvalue) if math.isfinite(res.pvalue) else float("nan")
    if u.size >= _SMALL:
        rng = np.random.default_rng(seed)
        boots = np.empty(N_RESAMPLES)
        for r in range(N_RESAMPLES):
            idx = rng.integers(0, u.size, u.size)
            ok = np.ptp(u[idx]) > 0 and np.ptp(v[idx]) > 0  # a resample without variation carries no order
            boots[r] = float(stats.spearmanr(u[idx], v[idx]).statistic) if ok else 0.0
        low, high = np.quantile(boots, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
        method = f"Spearman rho, bootstrap over {unit}"
    elif u.size > 3:
        # Fisher z with the Bonett-Wright standard error for Spearman's rho (a bootstrap over a handful of
        # points gives degenerate intervals)
        z = math.atanh(max(-0.99, min(0.99, rho)))  # atanh(+-1) is infinite
        se = math.sqrt((1 + rho ** 2 / 2) / (u.size - 3))
        q = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
        low, high = math.tanh(z - q * se), math.tanh(z + q * se)
        method = f"Spearman rho, Fisher z (Bonett-Wright) over {unit}"
        if u.size <= 8:
            # the normal approximation is loose for a handful of points: the interval may only exclude 0 where
            # the exact permutation test (all n! orderings) rejects rho = 0 at the same level
            p = _spearman_exact_p(u, v, rho)
            method += ", exact permutation test"
            if p >= 1 - CONFIDENCE:
                low, high = min(low, 0.0), max(high, 0.0)
    else:
        low, high = -1.0, 1.0
        method = f"Spearman rho over 3 {unit} (no interval)"
    return Estimate(rho, float(low), float(high), int(u.size), method, unit, extra={"p_value": p})


def _spearman_exact_p(u: np.ndarray, v: np.ndarray, rho: float) -> float:
    """Two-sided p-value of Spearman's rho by enumerating every ordering of ``v`` against ``u`` (n <= 8)."""
    import itertools

    from scipy import stats

    ru, rv = stats.rankdata(u), stats.rankdata(v)
    count = total = 0
    for perm in itertools.permutations(rv):
        total += 1
        r = float(np.corrcoef(ru, perm)[0, 1]) if np.ptp(perm) > 0 and np.ptp(ru) > 0 else 0.0
        if abs(r) >= abs(rho) - 1e-12:
            count += 1
    return count / total


def proportion(k: int, n: int, *, unit: str = "items") -> Estimate:
    """k successes out of n with the exact (Clopper-Pearson) interval of ``scipy.stats.binomtest``."""
    from scipy import stats

    if not (isinstance(n, (int, np.integer)) and n > 0 and 0 <= k <= n):
        raise ValueError(f"proportion needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high), int(n), "exact binomial interval", unit)


# ---------------------------------------------------------------------------------------------------------
def decide(estimate: Estimate, *, direction: Literal["greater", "less"] = "greater",
           margin: float = 0.0) -> Decision:
    """The verdict for ``estimate`` against the paper's side of ``margin``.

    ``direction="greater"``: the paper says the effect exceeds ``margin`` (for "A beats B", the effect A - B
    and margin 0; for "A matches B within 1 point", A - B and margin -0.01). ``less`` is the mirror image.
    """
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    lo, hi = estimate.low, estimate.high
    if direction == "greater":
        verdict = REPRODUCED if lo > margin else NOT_REPRODUCED if hi < margin else INCONCLUSIVE
    else:
        verdict = REPRODUCED if hi < margin else NOT_REPRODUCED if lo > margin else INCONCLUSIVE
    needed = None
    if verdict == INCONCLUSIVE:
        gap = abs(estimate.value - margin)
        half = estimate.half_width
        if gap > 0 and math.isfinite(half) and half > 0:
            # the half-width shrinks as 1/sqrt(n): the n at which it equals the gap
            needed = int(math.ceil(estimate.n * (half / gap) ** 2)) + 1
            needed = max(needed, estimate.n + 1)
    return Decision(estimate, direction, float(margin), verdict, needed)


def combine(decisions: Sequence[Decision | str]) -> str:
    """One verdict for a claim made of several comparisons (every step of "rises with K").

    reproduced if all are; not reproduced if any comparison is; inconclusive otherwise.
    """
    verdicts = [d.verdict if isinstance(d, Decision) else d for d in decisions]
    if not verdicts:
        raise ValueError("combine needs at least one decision")
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


# ---------------------------------------------------------------------------------------------------------
@dataclass
class SeedResults:
    """Metrics of one arm over several seeds: ``values[metric]`` is a list, one entry per seed.

    ``items[metric]`` optionally holds per-item scores per seed ((seeds, items) once stacked), for
    :func:`hierarchical_difference` between arms scored on the same test items.
    """

    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    items: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, seed: int, metrics: Mapping[str, Any]) -> None:
        self.seeds.append(seed)
        for key, value in metrics.items():
            arr = np.asarray(value)
            if arr.ndim == 0:
                self.values.setdefault(key, []).append(float(arr))
            else:  # per-item scores: keep them, and their mean as the seed's value
                self.items.setdefault(key, []).append(arr.astype(np.float64).reshape(-1))
                self.values.setdefault(key, []).append(float(arr.mean()))

    def estimate(self, metric: str) -> Estimate:
        """Mean over seeds with its interval; with per-item scores, items and seeds are both resampled."""
        if metric not in self.values:
            raise KeyError(f"no metric {metric!r}; have {sorted(self.values)}")
        if metric in self.items:
            return hierarchical_mean(np.stack(self.items[metric]))
        return mean_ci(self.values[metric], unit="seeds")

    def matrix(self, metric: str) -> np.ndarray:
        """(seeds, items) per-item scores of ``metric``."""
        return np.stack(self.items[metric])

    def as_dict(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "values": self.values}


def over_seeds(fn: Callable[[int], Mapping[str, Any]], seeds: Sequence[int], *, label: str = "") -> SeedResults:
    """Run ``fn(seed)`` for every seed and gather its metrics (scalars, or per-item score arrays).

    Shows a progress line per seed. ``fn`` gets the seed and returns a mapping of metric -> value.
    """
    if len(seeds) == 0:
        raise ValueError("over_seeds needs at least one seed")
    from essence.core.progress import console

    out = SeedResults()
    for i, s in enumerate(seeds):
        console.print(f"{label or 'arm'}: seed {s} ({i + 1}/{len(seeds)})", highlight=False)
        out.add(int(s), fn(int(s)))
    return out
