"""Evaluation per generation: clean test accuracy, and robustness with ``essence.corruptions``.

- :func:`accuracy` / :func:`correct`: top-1 on the (full) Fashion-MNIST test split, per item for paired intervals.
- :func:`robustness`: the corrupted test sets of the corruptions method (its 15 benchmark corruptions x 5
  severities, CIFAR-10-C parameters for 28 px, seeded per (corruption, severity, batch) and quantised to uint8)
  scored by every model on the same images; the perturbation sequences (``essence.corruptions.perturbations``)
  for the flip probability. CE / mCE / relative mCE / FP come from :mod:`essence.metrics.robustness`, with the
  teacher (generation 0) as the baseline (the paper uses AlexNet; the ratio against the teacher is what says
  whether the student is more robust).
- :func:`evaluate_checkpoint`: ``essence noisy-student evaluate RUN``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from essence.noisy_student.data import normalize
from essence.noisy_student.model import predict_logits

__all__ = ["accuracy", "correct", "robustness", "per_clip_flips", "evaluate_checkpoint", "condition_seed"]


def correct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, precision=None,
            batch_size: int = 1000) -> np.ndarray:
    """Per-item 0/1 correctness (N,) of eval-mode predictions on uint8 (or [0, 1] float) images."""
    logits = predict_logits(model, normalize(images), batch_size=batch_size, precision=precision)
    return (logits.argmax(1) == labels.cpu()).numpy().astype(np.float64)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, precision=None,
             batch_size: int = 1000) -> float:
    return float(correct(model, images, labels, precision=precision, batch_size=batch_size).mean())


def condition_seed(seed: int, name: str, severity: int, start: int) -> int:
    """The corruptions method's seed per (corruption, severity, batch start): every model sees the same set."""
    return (seed * 1_000_003 + zlib.crc32(f"{name}/{severity}/{start}".encode())) % (2**62)


def per_clip_flips(predictions: torch.Tensor, *, noise: bool) -> np.ndarray:
    """Flip probability of each clip (clips, frames) at difficulty 1: against frame 0 for noise sequences,
    frame to frame otherwise (its mean is :func:`essence.metrics.robustness.flip_probability`)."""
    p = torch.as_tensor(predictions)
    flips = (p[:, 1:] != p[:, :1]) if noise else (p[:, 1:] != p[:, :-1])
    return flips.double().mean(1).numpy()


@torch.no_grad()
def robustness(models: Mapping[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor, *,
               corruptions: str | Sequence[str] = "common", clips: int = 100,
               perturbations: Sequence[str] = ("gaussian_noise", "rotate"), seed: int = 0, batch_size: int = 500,
               precision=None, progress: bool = True) -> dict[str, dict]:
    """Corruption errors and flip probabilities of every model on the same corrupted images and sequences.

    Args:
        models: name -> classifier (normalised-input).
        images, labels: uint8 (N, 1, H, W) test images and their labels.
        corruptions: an ``essence.corruptions`` subset name or a list of corruption names.
        clips: the first ``clips`` images become perturbation sequences (difficulty 1).
    Returns:
        name -> {"clean_error", "errors" {c: [E_1..E_5]}, "item_error" (N,) mean error of each test image over
        all (corruption, severity) sets, "fp" {p: FP}, "clip_fp" (clips,) per-clip FP averaged over perturbations}.
    """
    from essence.core.progress import ProgressBar
    from essence.corruptions import corrupt_tensor, corruption_names
    from essence.corruptions.perturbations import PERTURBATIONS, perturbation_sequence
    from essence.metrics import robustness as R

    names = corruption_names(corruptions) if isinstance(corruptions, str) else list(corruptions)
    x_all = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    y_all = labels.long().cpu()
    n = x_all.shape[0]
    wrong = {m: np.zeros((len(names), 5, n)) for m in models}

    def preds(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {m: predict_logits(model, normalize(x), batch_size=batch_size, precision=precision)
                for m, model in models.items()}

    clean = {m: float((lg.argmax(1) != y_all).double().mean()) for m, lg in preds(x_all).items()}
    with ProgressBar(len(names) * 5, desc="corrupted test sets", unit="set", disable=None if progress else True) as bar:
        for ci, name in enumerate(names):
            for s in range(1, 6):
                for start in range(0, n, batch_size):
                    xb, yb = x_all[start:start + batch_size], y_all[start:start + batch_size]
                    gen = torch.Generator().manual_seed(condition_seed(seed, name, s, start))
                    xc = corrupt_tensor(xb, name, s, generator=gen)
                    xc = torch.floor(xc.clamp(0, 1) * 255 + 1e-4) / 255
                    for m, lg in preds(xc).items():
                        wrong[m][ci, s - 1, start:start + len(yb)] = (lg.argmax(1) != yb).numpy()
                bar.update(1)
    out: dict[str, dict] = {}
    for m in models:
        errors = {c: wrong[m][i].mean(1).tolist() for i, c in enumerate(names)}
        out[m] = {"clean_error": clean[m], "errors": errors, "item_error": wrong[m].mean((0, 1)),
                  "mean_error": float(wrong[m].mean()), "fp": {}, "clip_fp": np.zeros(0)}
    if clips and perturbations:
        x = x_all[:clips]
        h, w = x.shape[-2:]
        pad = 4
        canvas = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        per_clip = {m: [] for m in models}
        for p in perturbations:
            info = PERTURBATIONS.get(p)
            gen = torch.Generator().manual_seed(condition_seed(seed, p, 1, 0))
            frames = perturbation_sequence(canvas if info.geometric else x, p, 1, crop=(h, w), generator=gen)
            flat = frames.reshape(-1, *frames.shape[2:])
            for m, lg in preds(flat).items():
                pr = lg.argmax(1).reshape(frames.shape[0], frames.shape[1])
                out[m]["fp"][p] = R.flip_probability(pr, noise=info.noise, difficulty=1)
                per_clip[m].append(per_clip_flips(pr, noise=info.noise))
        for m in models:
            out[m]["clip_fp"] = np.mean(per_clip[m], axis=0)
            out[m]["mean_fp"] = float(np.mean(list(out[m]["fp"].values())))
    return out


def relative_scores(results: Mapping[str, dict], baseline: str) -> dict[str, dict[str, float]]:
    """mCE, relative mCE and mFR of every model against ``baseline`` (e.g. the teacher), via
    :mod:`essence.metrics.robustness`."""
    from essence.metrics import robustness as R

    base = results[baseline]
    names = list(base["errors"])
    out = {}
    for m, r in results.items():
        row = {}
        try:
            row["mCE"] = R.mce(r["errors"], base["errors"], names)
        except ValueError:
            row["mCE"] = float("nan")
        try:
            row["relative_mCE"] = R.relative_mce(r["errors"], r["clean_error"], base["errors"], base["clean_error"],
                                                 names)
        except ValueError:
            row["relative_mCE"] = float("nan")
        if r["fp"]:
            try:
                row["mFR"] = R.mean_flip_rate(r["fp"], base["fp"])
            except ValueError:
                row["mFR"] = float("nan")
        out[m] = row
    return out


def evaluate_checkpoint(path: str | Path, *, device: str = "cpu", robust: bool = False,
                        overrides: tuple[str, ...] = ()) -> dict:
    """Test accuracy of every finished generation of a run (or of one model file), and optionally robustness."""
    from essence.core.loop import Precision
    from essence.noisy_student.data import load_data
    from essence.noisy_student.train import load_generation

    path = Path(path)
    files = sorted((path / "generations").glob("gen*.safetensors"), key=lambda p: int(p.stem[3:])) \
        if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no finished generation (generations/gen*.safetensors)")
    models, cfg = {}, None
    for f in files:
        model, c, st = load_generation(f, device=device)
        cfg = cfg or c.with_overrides(overrides)
        models[f"gen{st.get('generation', f.stem[3:])}"] = model
    data = load_data(cfg.data)
    prec = Precision(cfg.train.precision, torch.device(device))
    res = {"accuracy": {m: accuracy(model, data.test_x, data.test_y, precision=prec) for m, model in models.items()}}
    if robust:
        rob = robustness(models, data.test_x[:cfg.eval.robust_test], data.test_y[:cfg.eval.robust_test],
                         corruptions=cfg.eval.corruptions, clips=cfg.eval.clips, perturbations=cfg.eval.perturbations,
                         seed=cfg.eval.corruption_seed, precision=prec)
        base = next(iter(models))
        rel = relative_scores(rob, base)
        res["robustness"] = {m: {"clean_error": r["clean_error"], "mean_error": r["mean_error"],
                                 "mean_fp": r.get("mean_fp"), **rel[m]} for m, r in rob.items()}
    return res
