"""The reproduction's verdicts, from measured numbers only (no training here, so tests can feed numbers that flip
each verdict).

Accuracy claims compare per-context hits (R@1, 0/1 per test context) of arms scored on the same test contexts:
a (seeds, contexts) matrix per arm, compared by :func:`essence.core.stats.hierarchical_difference` (bootstrap over
contexts, paired between arms, and over training seeds). Latency claims compare per-context times (seconds) on
the log scale, so that a ratio threshold (x1.5, x100) is a margin on a difference of logs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from essence.core.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    Decision,
    combine,
    decide,
    difference,
    hierarchical_difference,
    hierarchical_mean,
    paired_difference,
)

__all__ = ["Measured", "ClaimResult", "judge", "cross_still_rising"]


@dataclass
class Measured:
    """What a reproduction measured (the arms' names are ``zero-shot``, ``bi``, ``poly-<m>``, ``cross``).

    Attributes:
        hits: arm -> (seeds, n_test) R@1/C 0/1 per test context (the same contexts, the same order, every arm).
        cross_hits: (seeds, n_cross) for the cross-encoder on the *first* n_cross of those contexts.
        cross_curve: the cross-encoder's validation R@1 by step [(step, r1), ...], step 0 (untrained W) first.
        latency: arm -> C -> per-context seconds (bi and poly arms, timed interleaved, the same contexts).
        cross_pair_seconds: seconds per (context, candidate) pair of the cross-encoder, one value per timed chunk.
        synthetic: arm -> (seeds, n_test) hits on the synthetic interaction task (None: not run).
        candidates: C of the accuracy claims (20: R@1/20).
    """

    hits: dict[str, np.ndarray]
    cross_hits: np.ndarray | None = None
    cross_curve: list[tuple[int, float]] = field(default_factory=list)
    latency: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    cross_pair_seconds: np.ndarray | None = None
    synthetic: dict[str, np.ndarray] | None = None
    candidates: int = 20


@dataclass
class ClaimResult:
    claim: str
    decisions: list[Decision]
    verdict: str
    evidence: str = ""
    reason: str = ""
    scale: float = 100.0      # how the decisions print: 100 for accuracies (points), 1 for log-ratios
    name: str = "effect"


def _m(arr) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    return a[None] if a.ndim == 1 else a


def _polys(names) -> list[str]:
    return sorted((n for n in names if n.startswith("poly-")), key=lambda n: int(n.split("-")[1]))


def _pct(arm: np.ndarray) -> str:
    return hierarchical_mean(_m(arm), unit="contexts").format(1, 100)


def cross_still_rising(curve: list[tuple[int, float]]) -> bool:
    """The cross-encoder's validation curve has not peaked: its best R@1 is at its last evaluation and above
    step 0's (training was cut by the budget, not by convergence)."""
    if len(curve) < 2:
        return False
    values = [v for _, v in curve]
    return values[-1] >= max(values) and values[-1] > values[0]


def judge(m: Measured) -> list[ClaimResult]:
    """Every claim of the reproduction with its decisions and verdict."""
    out: list[ClaimResult] = []
    key = f"R@1/{m.candidates}"
    polys = _polys(m.hits)
    if "zero-shot" in m.hits and "bi" in m.hits:
        d = decide(hierarchical_difference(_m(m.hits["bi"]), _m(m.hits["zero-shot"]), unit="contexts"))
        out.append(ClaimResult(
            f"Fine-tuning helps: the fine-tuned bi-encoder beats the zero-shot encoder ({key})", [d], d.verdict,
            f"bi {_pct(m.hits['bi'])} vs zero-shot {_pct(m.hits['zero-shot'])}", name="bi - zero-shot"))
    if polys and "bi" in m.hits:
        ds = [decide(hierarchical_difference(_m(m.hits[p]), _m(m.hits["bi"]), unit="contexts")) for p in polys]
        out.append(ClaimResult(
            f"Poly-encoder >= bi-encoder ({key}; Table 4: 86.3-86.8 vs 84.8)", ds, combine(ds),
            ", ".join(f"{p} {_pct(m.hits[p])}" for p in polys) + f"; bi {_pct(m.hits['bi'])}; the effects, in "
            f"order: " + ", ".join(f"{p} - bi" for p in polys), name="effect"))
    if m.cross_hits is not None and polys:
        p = polys[-1]
        n = _m(m.cross_hits).shape[1]
        d = decide(hierarchical_difference(_m(m.cross_hits), _m(m.hits[p])[:, :n], unit="contexts"))
        verdict, reason = d.verdict, ""
        curve = ", ".join(f"{s}: {100 * v:.1f}" for s, v in m.cross_curve)
        chance = 1.0 / m.candidates
        alone = hierarchical_mean(_m(m.cross_hits), unit="contexts")
        if d.verdict == NOT_REPRODUCED and alone.low <= chance:
            # an arm that has not learned anything cannot test the architecture claim
            verdict = INCONCLUSIVE
            reason = (f"the cross-encoder did not learn within its budget: its test R@1 {alone.format(1, 100)} does "
                      f"not exceed chance ({100 * chance:.1f})" + (f" (validation R@1/20 by step: {curve})"
                                                                   if curve else "")
                      + "; the paper compares trained models, so this budget cannot decide the claim")
        elif d.verdict == NOT_REPRODUCED and cross_still_rising(m.cross_curve):
            verdict = INCONCLUSIVE
            reason = (f"the cross-encoder was still improving when its budget ended (validation R@1/20 by step: "
                      f"{curve}); the paper compares converged models, so this budget cannot decide the claim")
        elif curve:
            reason = f"cross-encoder validation R@1/20 by step: {curve}"
        out.append(ClaimResult(
            f"Cross-encoder >= poly-encoder ({key} on the first {n} test contexts; Table 4: 87.9 vs 86.8)", [d],
            verdict, f"cross {_pct(m.cross_hits)} vs {p} {_pct(_m(m.hits[p])[:, :n])}", reason,
            name=f"cross - {p}"))
    lat_polys = _polys(m.latency)
    if "bi" in m.latency and lat_polys:
        Cs = sorted(m.latency["bi"])
        C0, Cn = Cs[0], Cs[-1]
        worst = lat_polys[-1]
        log_ratio = {C: np.log(m.latency[worst][C]) - np.log(m.latency["bi"][C]) for C in Cs}
        d = decide(paired_difference(np.log(m.latency[worst][C0]), np.log(m.latency["bi"][C0]), unit="contexts"),
                   direction="less", margin=math.log(1.5))
        out.append(ClaimResult(
            f"Poly-encoder latency is close to the bi-encoder's at {C0:,} cached candidates (within x1.5; Table 5: "
            f"126 vs 115 ms on CPU)", [d], d.verdict,
            f"{worst} {1e3 * np.median(m.latency[worst][C0]):,.1f} ms vs bi "
            f"{1e3 * np.median(m.latency['bi'][C0]):,.1f} ms (medians); effect = log({worst} / bi), "
            f"x1.5 = {math.log(1.5):.3f}", scale=1.0, name=f"log({worst}/bi)"))
        if m.cross_pair_seconds is not None:
            cross = np.log(np.asarray(m.cross_pair_seconds) * C0)
            d = decide(difference(cross, np.log(m.latency[worst][C0]), unit="timings"), margin=math.log(100))
            speed = float(np.exp(cross.mean() - np.log(m.latency[worst][C0]).mean()))
            out.append(ClaimResult(
                f"Poly-encoder is at least 100x faster than the cross-encoder at {C0:,} candidates (Table 5: x172 "
                f"on CPU)", [d], d.verdict, f"x{speed:,.0f} (geometric means); effect = log(cross / {worst}), "
                f"x100 = {math.log(100):.2f}", scale=1.0, name=f"log(cross/{worst})"))
        if Cn != C0:
            d = decide(difference(log_ratio[Cn], log_ratio[C0], unit="timings"))
            out.append(ClaimResult(
                "The poly / bi latency ratio grows with the candidates, O(C m d) vs O(C d) (Table 5: x1.1 at 1k, "
                "x4.3 at 100k on CPU)", [d], d.verdict,
                f"{worst} / bi: x{np.exp(log_ratio[C0].mean()):.2f} at {C0:,}, x{np.exp(log_ratio[Cn].mean()):.2f} "
                f"at {Cn:,} (geometric means)", scale=1.0, name="growth of log(poly/bi)"))
    if m.synthetic:
        syn_polys = _polys(m.synthetic)
        s = m.synthetic
        table = ", ".join(f"{a} {_pct(s[a])}" for a in ["bi", *syn_polys, "cross"] if a in s)
        if syn_polys and "bi" in s and "cross" in s:
            big = syn_polys[-1]
            ds = [decide(hierarchical_difference(_m(s[big]), _m(s["bi"]), unit="contexts")),
                  decide(hierarchical_difference(_m(s["cross"]), _m(s[big]), unit="contexts"))]
            out.append(ClaimResult(
                f"Synthetic interaction task (card §7.2): accuracy orders bi < {big} < cross at equal budgets",
                ds, combine(ds), f"{table}; the two effects: {big} - bi, then cross - {big}", name="effect"))
        if len(syn_polys) > 1:
            small, big = syn_polys[0], syn_polys[-1]
            d = decide(hierarchical_difference(_m(s[big]), _m(s[small]), unit="contexts"))
            out.append(ClaimResult(
                f"Synthetic task: a larger m helps ({big} > {small}; paper: 'larger m helps in every variant')",
                [d], d.verdict, table, name=f"{big} - {small}"))
    return out
