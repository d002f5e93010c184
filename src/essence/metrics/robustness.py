"""Robustness metrics of ImageNet-C / ImageNet-P (Hendrycks & Dietterich, ICLR 2019, sections 3-4).

Conventions: errors are fractions in [0, 1] (top-1 error); ``errors`` maps a corruption name to its five
per-severity errors E_{s,c}. CE values are returned as ratios (1.0 = the baseline); multiply by 100 for the
paper's percentages.

- Corruption Error   CE_c   = sum_s E^f_{s,c} / sum_s E^base_{s,c}
- mCE                       = mean_c CE_c over the 15 benchmark corruptions (AlexNet-normalised)
- Relative CE        RelCE_c = sum_s (E^f_{s,c} - E^f_clean) / sum_s (E^base_{s,c} - E^base_clean)
  (the clean error is subtracted for every severity, 5 times in all; only this reading reproduces the
  paper's ResNet-50 relative mCE of 105)
- Flip probability   FP_p: temporal sequences compare adjacent frames (stride = difficulty, all phases
  pooled per clip); noise sequences compare every frame with the clean frame 0 (stride 1). Per-clip means,
  averaged over clips (ImageNet-P/test.py).
- Top-5 distance     d(tau(x), tau(x')) = sum_{i=1..5} |min(i-1, 5) - min(sigma(i)-1, 5)| with
  sigma = tau(x)^-1 o tau(x'), i.e. how far the top-5 of x moved in the ranking of x'.
- FR_p = FP_p / FP^base_p, T5D_p = uT5D_p / uT5D^base_p; mFR / mT5D: means over perturbations.

"Unnormalised" mean errors are what the official ImageNet-C/test.py prints; they are NOT the mCE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from essence.metrics.base import Metric

__all__ = ["ALEXNET_ERRORS", "ALEXNET_CLEAN_ERROR", "BENCHMARK_CORRUPTIONS", "corruption_error", "mce",
           "relative_corruption_error", "relative_mce", "unnormalized_mean_error", "flip_probability",
           "top5_distance", "flip_rate", "mean_flip_rate", "top5_ratio", "mean_top5_distance",
           "CorruptionErrors", "FlipProbability", "Top5Distance", "NOISE_PERTURBATIONS"]

BENCHMARK_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                         "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                         "elastic_transform", "pixelate", "jpeg_compression")

# AlexNet (torchvision weights) top-1 errors on ImageNet-C per severity 1..5: hendrycks/robustness issue #10
# (the authors' spreadsheet), as carried by timm / augmix metric helpers. Clean error: Table 1 of the paper.
ALEXNET_ERRORS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (.69528, .82542, .93554, .98138, .99452),
    "shot_noise": (.71224, .85108, .93574, .98182, .99146),
    "impulse_noise": (.78374, .89808, .94870, .98720, .99548),
    "defocus_blur": (.65624, .73202, .85036, .91364, .94714),
    "glass_blur": (.64308, .75054, .88806, .91622, .93344),
    "motion_blur": (.58430, .70048, .82108, .89750, .92638),
    "zoom_blur": (.70008, .76992, .80784, .84198, .87198),
    "snow": (.71726, .88392, .86468, .91870, .94952),
    "frost": (.61390, .79734, .88790, .89942, .93430),
    "fog": (.67474, .76050, .84378, .87260, .94500),
    "brightness": (.45140, .48502, .54048, .62166, .72440),
    "contrast": (.64548, .76150, .88874, .97760, .99270),
    "elastic_transform": (.52596, .70116, .55686, .64076, .80554),
    "pixelate": (.52218, .54620, .73728, .87092, .91262),
    "jpeg_compression": (.51002, .54718, .57294, .65458, .74778),
}
ALEXNET_CLEAN_ERROR = 0.435

NOISE_PERTURBATIONS = ("gaussian_noise", "shot_noise", "speckle_noise")


def _five(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (5,):
        raise ValueError(f"{what} must hold 5 per-severity errors, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or (arr < 0).any() or (arr > 1).any():
        raise ValueError(f"{what} must be errors in [0, 1], got {arr.tolist()}")
    return arr


def corruption_error(errors: Sequence[float], baseline: Sequence[float]) -> float:
    """CE_c = sum_s E^f_{s,c} / sum_s E^base_{s,c} (a ratio; x100 for the paper's %)."""
    e, b = _five(errors, "errors"), _five(baseline, "baseline errors")
    if b.sum() <= 0:
        raise ValueError("the baseline's errors sum to 0; CE is undefined")
    return float(e.sum() / b.sum())


def _common(errors: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]],
            corruptions: Sequence[str] | None, allow_partial: bool = False) -> list[str]:
    names = list(corruptions) if corruptions is not None else [c for c in BENCHMARK_CORRUPTIONS if c in errors]
    if not names:
        raise ValueError("no corruptions to average over (errors has none of the benchmark corruptions)")
    if corruptions is None and not allow_partial and len(names) < len(BENCHMARK_CORRUPTIONS):
        absent = [c for c in BENCHMARK_CORRUPTIONS if c not in errors]
        raise ValueError(f"errors cover {len(names)} of the 15 benchmark corruptions (missing {absent}); an mCE "
                         "over a subset is not the benchmark's: pass corruptions=[...] or allow_partial=True")
    missing = [c for c in names if c not in errors or c not in baseline]
    if missing:
        raise ValueError(f"errors or baseline lack corruptions {missing}")
    return names


def _clean(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
            not np.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be an error rate in [0, 1], got {value!r}")
    return float(value)


def mce(errors: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]] | None = None,
        corruptions: Sequence[str] | None = None, *, allow_partial: bool = False) -> float:
    """Mean CE over ``corruptions``, normalised by ``baseline`` (default: AlexNet on ImageNet-C).

    Without ``corruptions``, ``errors`` must cover the 15 benchmark corruptions (a ValueError names the missing
    ones) unless ``allow_partial=True``, which averages over the benchmark corruptions present."""
    baseline = ALEXNET_ERRORS if baseline is None else baseline
    names = _common(errors, baseline, corruptions, allow_partial)
    return float(np.mean([corruption_error(errors[c], baseline[c]) for c in names]))


def relative_corruption_error(errors: Sequence[float], clean_error: float, baseline: Sequence[float],
                              baseline_clean_error: float) -> float:
    """RelCE_c = sum_s (E^f_{s,c} - E^f_clean) / sum_s (E^base_{s,c} - E^base_clean)."""
    e, b = _five(errors, "errors"), _five(baseline, "baseline errors")
    clean_error = _clean(clean_error, "clean_error")
    baseline_clean_error = _clean(baseline_clean_error, "baseline_clean_error")
    denom = float((b - baseline_clean_error).sum())
    if abs(denom) < 1e-12:
        raise ValueError("the baseline's errors equal its clean error; relative CE is undefined")
    return float((e - clean_error).sum() / denom)


def relative_mce(errors: Mapping[str, Sequence[float]], clean_error: float,
                 baseline: Mapping[str, Sequence[float]] | None = None, baseline_clean_error: float | None = None,
                 corruptions: Sequence[str] | None = None, *, allow_partial: bool = False) -> float:
    """Mean relative CE (default baseline: AlexNet, clean error 43.5%); ``corruptions`` / ``allow_partial`` as
    in :func:`mce`."""
    if baseline is None:
        baseline, baseline_clean_error = ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR
    if baseline_clean_error is None:
        raise ValueError("relative mCE needs the baseline's clean error")
    names = _common(errors, baseline, corruptions, allow_partial)
    return float(np.mean([relative_corruption_error(errors[c], clean_error, baseline[c], baseline_clean_error)
                          for c in names]))


def unnormalized_mean_error(errors: Mapping[str, Sequence[float]], corruptions: Sequence[str] | None = None) -> float:
    """Mean top-1 error over corruptions and severities, NOT normalised (what ImageNet-C/test.py prints)."""
    names = _common(errors, errors, corruptions, allow_partial=True)
    return float(np.mean([_five(errors[c], c).mean() for c in names]))


# ------------------------------------------------------------------------------------------- ImageNet-P
def _stride(noise: bool, difficulty: int, frames: int) -> int:
    if difficulty not in (1, 2, 3):
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    step = 1 if noise else difficulty
    if frames <= step:
        raise ValueError(f"sequences need more than {step} frames, got {frames}")
    return step


def _per_clip_flips(predictions: torch.Tensor, noise: bool, difficulty: int) -> torch.Tensor:
    p = torch.as_tensor(predictions)
    if p.ndim != 2:
        raise ValueError(f"predictions must be (clips, frames), got shape {tuple(p.shape)}")
    step = _stride(noise, difficulty, p.shape[1])
    flips = (p[:, 1:] != p[:, :1]) if noise else (p[:, step:] != p[:, :-step])
    return flips.double().mean(1)


def flip_probability(predictions: torch.Tensor | np.ndarray, *, noise: bool, difficulty: int = 1) -> float:
    """FP of top-1 predictions (clips, frames): the probability that the prediction flips between adjacent
    frames (stride ``difficulty``) or, for noise perturbations, against the clean frame 0."""
    return float(_per_clip_flips(predictions, noise, difficulty).mean())


def _rank_of(logits: torch.Tensor) -> torch.Tensor:
    """1-based ordinal ranks of -logits (scipy rankdata(-x, 'ordinal')): rank[k] of class k."""
    order = torch.argsort(-logits, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(1, logits.shape[-1] + 1, device=logits.device).expand_as(order))
    return ranks


def _pair_top5(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Top-5 distance between the rankings of logits a and b (..., K)."""
    top_a = torch.argsort(-a, dim=-1, stable=True)[..., :5]                 # classes at ranks 1..5 of a
    rank_b = _rank_of(b).gather(-1, top_a)                                  # their 1-based ranks in b
    i = torch.arange(5, device=a.device)
    return (i - (rank_b - 1).clamp(max=5)).abs().sum(-1).double()


def _per_clip_t5d(logits: torch.Tensor, noise: bool, difficulty: int) -> torch.Tensor:
    x = torch.as_tensor(logits).double()
    if x.ndim != 3 or x.shape[-1] < 5:
        raise ValueError(f"logits must be (clips, frames, classes >= 5), got shape {tuple(x.shape)}")
    step = _stride(noise, difficulty, x.shape[1])
    if noise:
        d = _pair_top5(x[:, :1].expand_as(x[:, 1:]), x[:, 1:])
    else:
        d = _pair_top5(x[:, :-step], x[:, step:])
    return d.mean(1)


def top5_distance(logits: torch.Tensor | np.ndarray, *, noise: bool, difficulty: int = 1) -> float:
    """uT5D: the mean top-5 distance between frames (clips, frames, classes), paired as in FP."""
    return float(_per_clip_t5d(logits, noise, difficulty).mean())


def flip_rate(fp: float, baseline_fp: float) -> float:
    """FR_p = FP^f_p / FP^base_p."""
    if baseline_fp <= 0:
        raise ValueError("the baseline's flip probability is 0; the flip rate is undefined")
    return fp / baseline_fp


def mean_flip_rate(fps: Mapping[str, float], baseline_fps: Mapping[str, float]) -> float:
    """mFR: the mean of FP_p / FP^base_p over the perturbations in ``fps``."""
    if not fps:
        raise ValueError("no perturbations given")
    return float(np.mean([flip_rate(fps[p], baseline_fps[p]) for p in fps]))


def top5_ratio(t5d: float, baseline_t5d: float) -> float:
    if baseline_t5d <= 0:
        raise ValueError("the baseline's top-5 distance is 0; T5D is undefined")
    return t5d / baseline_t5d


def mean_top5_distance(t5ds: Mapping[str, float], baseline_t5ds: Mapping[str, float]) -> float:
    """mT5D: the mean of uT5D_p / uT5D^base_p over the perturbations in ``t5ds``."""
    if not t5ds:
        raise ValueError("no perturbations given")
    return float(np.mean([top5_ratio(t5ds[p], baseline_t5ds[p]) for p in t5ds]))


# --------------------------------------------------------------------------------------- Metric classes
class CorruptionErrors(Metric):
    """Top-1 errors per (corruption, severity) accumulated over batches and processes.

    ``update(logits, target, corruption, severity)``; ``compute()`` returns {corruption: [E_1..E_5]} (NaN
    where a severity was never seen).
    """

    def __init__(self, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> None:
        super().__init__()
        self.corruptions = list(corruptions)
        self.add_state("wrong", torch.zeros(len(self.corruptions), 5, dtype=torch.float64), reduce="sum")
        self.add_state("total", torch.zeros(len(self.corruptions), 5, dtype=torch.float64), reduce="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor, corruption: str, severity: int) -> None:
        if corruption not in self.corruptions:
            raise ValueError(f"unknown corruption {corruption!r}; this metric tracks {self.corruptions}")
        if not 1 <= severity <= 5:
            raise ValueError(f"severity must be in 1..5, got {severity}")
        i = self.corruptions.index(corruption)
        self.wrong[i, severity - 1] += float((logits.argmax(-1).cpu() != target.cpu()).sum())
        self.total[i, severity - 1] += target.numel()

    def _compute(self, wrong: torch.Tensor, total: torch.Tensor) -> dict[str, list[float]]:
        err = (wrong / total.clamp(min=1)).masked_fill(total == 0, float("nan"))
        return {c: err[i].tolist() for i, c in enumerate(self.corruptions)}


class FlipProbability(Metric):
    """FP over many batches of clips: ``update(predictions (clips, frames))``."""

    def __init__(self, *, noise: bool, difficulty: int = 1) -> None:
        super().__init__()
        self.noise, self.difficulty = noise, difficulty
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), reduce="sum")
        self.add_state("clips", torch.tensor(0.0, dtype=torch.float64), reduce="sum")

    def update(self, predictions: torch.Tensor) -> None:
        per = _per_clip_flips(predictions, self.noise, self.difficulty).cpu()
        self.total = self.total + per.sum()
        self.clips = self.clips + per.numel()

    def _compute(self, total: torch.Tensor, clips: torch.Tensor) -> float:
        return float(total / clips) if clips > 0 else float("nan")


class Top5Distance(FlipProbability):
    """uT5D over many batches of clips: ``update(logits (clips, frames, classes))``."""

    def update(self, logits: torch.Tensor) -> None:  # type: ignore[override]
        per = _per_clip_t5d(logits, self.noise, self.difficulty).cpu()
        self.total = self.total + per.sum()
        self.clips = self.clips + per.numel()
