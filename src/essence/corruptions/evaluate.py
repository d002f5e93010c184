"""The robustness benchmark on Fashion-MNIST: corrupted test sets generated on the fly in batches (-C), the
perturbation sequences (-P), the CE / mCE / relative-mCE tables and the figures."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from essence.core.progress import ProgressBar
from essence.corruptions.api import corrupt_tensor
from essence.corruptions.functional import corruption_names
from essence.corruptions.perturbations import PERTURBATIONS, perturbation_sequence
from essence.corruptions.train import images_to_tensor, predict_logits
from essence.metrics import robustness as R

__all__ = ["evaluate_corruptions", "evaluate_perturbations", "ce_table", "severity_figure", "gallery_figure",
           "load_baseline", "save_errors", "condition_seed", "corrupted_test_set", "per_item_errors"]

Preprocess = Callable[[torch.Tensor], torch.Tensor]


def condition_seed(seed: int, name: str, severity: int) -> int:
    """A stable seed per (corruption, severity); image i of the test set draws from (this seed, i), so the
    corrupted set does not depend on the batch size."""
    return (seed * 1_000_003 + zlib.crc32(f"{name}/{severity}".encode())) % (2**62)


@torch.no_grad()
def evaluate_corruptions(models: Mapping[str, torch.nn.Module], images: np.ndarray, labels: np.ndarray, *,
                         names: Sequence[str] | None = None, seed: int = 0, param_set: str = "auto",
                         batch_size: int = 500, preprocess: Mapping[str, Preprocess] | None = None,
                         precision: str = "auto") -> tuple[dict[str, float], dict[str, dict[str, list[float]]]]:
    """Clean errors {model: E_clean} and errors {model: {corruption: [E_1..E_5]}} on uint8 images (N, H, W).

    Each (corruption, severity) set is generated once per batch (quantised to uint8 like a stored dataset)
    and fed to every model; ``preprocess[model]`` (e.g. CLAHE) is applied to that model's input.
    """
    names = list(names) if names is not None else corruption_names("common")
    preprocess = dict(preprocess or {})
    x_all = images_to_tensor(images)
    y_all = torch.from_numpy(labels).long()
    wrong_clean = {m: 0 for m in models}
    wrong = {m: np.zeros((len(names), 5)) for m in models}

    def score(x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
        out = {}
        for m, model in models.items():
            xin = preprocess[m](x) if m in preprocess else x
            out[m] = int((predict_logits(model, xin, precision=precision).argmax(1) != y).sum())
        return out

    for start in range(0, len(x_all), batch_size):
        for m, k in score(x_all[start:start + batch_size], y_all[start:start + batch_size]).items():
            wrong_clean[m] += k
    with ProgressBar(len(names) * 5, desc="corrupted test sets", unit="set") as bar:
        for ci, name in enumerate(names):
            for s in range(1, 6):
                for start in range(0, len(x_all), batch_size):
                    xb, yb = x_all[start:start + batch_size], y_all[start:start + batch_size]
                    xc = corrupt_tensor(xb, name, s, seed=condition_seed(seed, name, s), start=start,
                                        param_set=param_set)
                    xc = torch.floor(xc.clamp(0, 1) * 255 + 1e-4) / 255
                    for m, k in score(xc, yb).items():
                        wrong[m][ci, s - 1] += k
                bar.update(1)
    n = len(x_all)
    clean = {m: wrong_clean[m] / n for m in models}
    errors = {m: {c: (wrong[m][i] / n).tolist() for i, c in enumerate(names)} for m in models}
    return clean, errors


def corrupted_test_set(images: np.ndarray, names: Sequence[str], *, seed: int = 0, param_set: str = "auto",
                       batch_size: int = 1000, cache: bool = True, jpeg_quality: int | None = None) -> np.ndarray:
    """Every (corruption, severity) version of uint8 images (N, H, W[, C]), generated once: uint8
    (C, 5, N, ch, H, W). Image i under (c, s) draws from (condition_seed(seed, c, s), i), so the set does
    not depend on ``batch_size``. ``jpeg_quality`` (e.g. 85): the release's JPEG storage step after
    corrupting (:func:`.api.jpeg_storage`). With ``cache``, stored under ``$ESSENCE_CACHE/corruptions`` keyed by the
    images' hash, the names, the seed and the parameter set (a rerun reloads it instead of regenerating)."""
    import hashlib

    from essence.data.cache import cache_dir, cache_key

    path = None
    if cache:
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
        key = cache_key("corrupted-test-set/v1", digest, list(images.shape), list(names), seed, param_set,
                        jpeg_quality)
        path = cache_dir("corruptions") / f"testset-{key}.npy"
        if path.exists():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    out = np.empty((len(names), 5, *x.shape), dtype=np.uint8)
    from essence.corruptions.api import corrupt, jpeg_storage

    with ProgressBar(len(names) * 5, desc="corrupt the test set", unit="set") as bar:
        for ci, name in enumerate(names):
            for s in range(1, 6):
                for start in range(0, len(x), batch_size):
                    y = corrupt(x[start:start + batch_size], name, s, seed=condition_seed(seed, name, s),
                                start=start, param_set=param_set)
                    if jpeg_quality is not None:
                        y = jpeg_storage(y, jpeg_quality)
                    out[ci, s - 1, start:start + batch_size] = y.numpy()
                bar.update(1)
    if path is not None:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


@torch.no_grad()
def per_item_errors(model: torch.nn.Module, clean: np.ndarray, corrupted: np.ndarray, labels: np.ndarray, *,
                    preprocess: Preprocess | None = None, precision: str = "fp32",
                    batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """0/1 errors of one model: clean (N,) and corrupted (C, 5, N), from uint8 images (N, ch, H, W) and the
    set of :func:`corrupted_test_set`."""
    y = torch.from_numpy(np.asarray(labels)).long()

    def wrong(u8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(u8)).float().div_(255)
        if preprocess is not None:
            x = preprocess(x)
        return (predict_logits(model, x, precision=precision, batch_size=batch_size).argmax(1) != y).numpy()

    clean_wrong = wrong(clean)
    out = np.empty(corrupted.shape[:3], dtype=bool)
    for c in range(corrupted.shape[0]):
        for s in range(5):
            out[c, s] = wrong(corrupted[c, s])
    return clean_wrong, out


@torch.no_grad()
def evaluate_perturbations(models: Mapping[str, torch.nn.Module], images: np.ndarray, *,
                           perturbations: Sequence[str], pad: int = 0, seed: int = 0, difficulty: int = 1,
                           precision: str = "auto", param_set: str = "auto",
                           ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """FP and uT5D {model: {perturbation: value}} on sequences made from uint8 images (N, H, W).

    Geometric sequences act on a zero-padded canvas (H + 2 pad) and are centre-cropped back to H x W (pad 0:
    on the image itself, as CIFAR-10-P). ``param_set`` chooses the P table (auto: by size).
    """
    x = images_to_tensor(images)
    h, w = x.shape[-2:]
    canvas = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    fps: dict[str, dict[str, float]] = {m: {} for m in models}
    t5: dict[str, dict[str, float]] = {m: {} for m in models}
    for p in perturbations:
        info = PERTURBATIONS.get(p)
        gen = torch.Generator().manual_seed(condition_seed(seed, p, difficulty))
        frames = perturbation_sequence(canvas if info.geometric else x, p, difficulty, crop=(h, w), generator=gen,
                                      param_set=param_set)
        flat = frames.reshape(-1, *frames.shape[2:])
        for m, model in models.items():
            logits = predict_logits(model, flat, precision=precision).reshape(frames.shape[0], frames.shape[1], -1)
            fps[m][p] = R.flip_probability(logits.argmax(-1), noise=info.noise, difficulty=difficulty)
            t5[m][p] = R.top5_distance(logits, noise=info.noise, difficulty=difficulty)
    return fps, t5


def ce_table(errors: Mapping[str, Sequence[float]], clean: float, baseline: Mapping[str, Sequence[float]],
             baseline_clean: float) -> tuple[list[str], list[list]]:
    """Rows: corruption, E_1..E_5 (%), CE (%), relative CE (%); last row: mCE and relative mCE."""
    headers = ["corruption", "E s1", "E s2", "E s3", "E s4", "E s5", "CE", "rel. CE"]
    rows = []
    names = [c for c in errors if c in baseline]
    for c in names:
        e = errors[c]
        rows.append([c, *[f"{100 * v:.1f}" for v in e], f"{100 * R.corruption_error(e, baseline[c]):.1f}",
                     f"{100 * R.relative_corruption_error(e, clean, baseline[c], baseline_clean):.1f}"])
    bench = [c for c in names if c in R.BENCHMARK_CORRUPTIONS] or names
    label = "mCE / rel. mCE" + (" (15 benchmark corruptions)" if len(bench) == 15 else f" ({len(bench)} corruptions)")
    rows.append([f"**{label}**", "", "", "", "", "", f"**{100 * R.mce(errors, baseline, bench):.1f}**",
                 f"**{100 * R.relative_mce(errors, clean, baseline, baseline_clean, bench):.1f}**"])
    return headers, rows


def severity_figure(errors: Mapping[str, Mapping[str, Sequence[float]]], clean: Mapping[str, float]):
    """Error vs severity, one panel per corruption, one line per model (severity 0 = clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(errors.values())))
    cols = 5
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), sharey=True, squeeze=False)
    for ax, c in zip(axes.flat, names):
        for m, errs in errors.items():
            ax.plot(range(6), [100 * clean[m], *[100 * v for v in errs[c]]], marker="o", ms=3, label=m)
        ax.set_title(c, fontsize=9)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("top-1 error (%)")
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("severity (0 = clean)")
    fig.tight_layout()
    return fig


def gallery_figure(image: np.ndarray, names: Sequence[str] | None = None, *, seed: int = 0, param_set: str = "auto"):
    """Every corruption (rows) at every severity (columns) of one uint8 image (H, W) or (H, W, C)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essence.corruptions.api import corrupt

    names = list(names) if names is not None else corruption_names("all")
    fig, axes = plt.subplots(len(names), 6, figsize=(6 * 1.6, len(names) * 1.6), squeeze=False)
    cmap = "gray" if image.ndim == 2 else None
    for r, name in enumerate(names):
        for s in range(6):
            ax = axes[r, s]
            img = image if s == 0 else corrupt(image, name, s, seed=seed, param_set=param_set)
            ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if s == 0 else f"severity {s}", fontsize=8)
            if s == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def save_errors(path: str | Path, *, clean: float, errors: Mapping[str, Sequence[float]], model: str = "",
                **extra) -> Path:
    """errors.json: the per-(corruption, severity) errors of one model, reusable as a ``--baseline``."""
    path = Path(path)
    path.write_text(json.dumps({"model": model, "clean_error": clean, "errors": errors, **extra}, indent=2) + "\n")
    return path


def load_baseline(run: str | Path) -> tuple[float, dict[str, list[float]]]:
    """(clean error, errors) of a baseline from a run directory (its errors.json) or an errors.json file."""
    path = Path(run)
    if path.is_dir():
        path = path / "errors.json"
    if not path.exists():
        raise FileNotFoundError(f"baseline {run}: no errors.json (run `essence corruptions evaluate` on the "
                                "baseline model first and pass its run directory)")
    data = json.loads(path.read_text())
    if "errors" not in data or "clean_error" not in data:
        raise ValueError(f"{path} is not an essence corruptions errors.json (needs 'errors' and 'clean_error')")
    return float(data["clean_error"]), {k: list(v) for k, v in data["errors"].items()}
