"""Run directories: ``runs/<method>/<YYYYmmdd-HHMMSS>-<preset>/`` with config, metrics, checkpoints, report.

    run = Run.create("moco", "quick")          # or Run.create(..., out="my/dir")
    run.save_config(cfg)
    run.log(step=10, loss=1.23)                # appends a JSON line to metrics.jsonl (main process only)
    run.write_summary({"knn_top1": 0.81})
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from essence.core.distributed import broadcast_object, is_main

__all__ = ["Run", "RunExistsError", "run_files", "default_runs_root", "read_metrics"]


class RunExistsError(ValueError):
    """``--out`` names a directory that already holds a run, and the command is not resuming it."""


_RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "report.md")


def run_files(path: str | Path) -> list[str]:
    """What makes ``path`` an existing run directory (its run files and checkpoints); empty when it is not one."""
    path = Path(path)
    if not path.is_dir():
        return []
    found = [name for name in _RUN_FILES if (path / name).exists()]
    if any((path / "checkpoints").glob("*.safetensors")):
        found.append("checkpoints/")
    return found


# Run directories this process created (not resumed, not pre-existing): discard_empty_runs may remove them.
_CREATED: list[Path] = []
_RESULT_FILES = ("metrics.jsonl", "summary.json", "report.md")


def _holds_results(path: Path) -> bool:
    if any((path / name).exists() for name in _RESULT_FILES):
        return True
    return any(f.is_file() for sub in ("checkpoints", "figures") for f in (path / sub).rglob("*"))


def forget_new_runs() -> None:
    """Stop tracking the run directories created so far (``run_cli`` calls it around each command)."""
    _CREATED.clear()


def discard_empty_runs() -> list[Path]:
    """Remove the run directories this process created that hold no result: no metrics, summary, report,
    checkpoint or figure (only the config and setup files written before the first step). A command that fails
    before it has done anything calls this, so it leaves no empty run behind for the next ``--out`` to trip
    over. Returns the removed directories."""
    removed = []
    while _CREATED:
        path = _CREATED.pop()
        if is_main() and path.is_dir() and not _holds_results(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def default_runs_root() -> Path:
    return Path(os.environ.get("ESSENCE_RUNS", "runs"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _clean(value: Any) -> Any:
    """NaN / inf become null so that metrics.jsonl stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Run:
    """One run directory. Only the main process writes; all processes agree on the path."""

    def __init__(self, path: str | Path, *, method: str = "", preset: str = ""):
        self.dir = Path(path)
        self.method = method
        self.preset = preset
        self.precision: str | None = None  # the resolved precision's one-line reason, once recorded
        if is_main():
            for sub in ("", "checkpoints", "figures"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, method: str, preset: str, out: str | Path | None = None, *, exact: bool = False,
               resume: bool = False, resumable: bool = False) -> Run:
        """A new run dir. ``out`` is the place itself when ``exact`` (``--out DIR``), else a parent folder.

        An exact ``out`` that already holds a run (config.json, metrics.jsonl, checkpoints, ...) is refused with
        :class:`RunExistsError` unless ``resume`` (continuing that run); ``resumable`` says whether the command has
        a ``--resume`` to suggest.
        """
        if out is not None and exact:
            path = Path(out)
            found = run_files(path)
            if found and not resume:   # checked on every process before the broadcast: all agree, none waits
                hint = "pass --resume to continue it or choose another --out" if resumable else (
                    "choose another --out (or delete that directory)")
                raise RunExistsError(f"--out {path} is an existing run directory (it has {', '.join(found)}); "
                                     f"{hint}")
        else:
            root = Path(out) if out is not None else default_runs_root()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = root / method / f"{stamp}-{preset}"
            n = 1
            while is_main() and path.exists():
                n += 1
                path = root / method / f"{stamp}-{preset}-{n}"
        path = Path(broadcast_object(str(path)))
        new = not path.exists()
        run = cls(path, method=method, preset=preset)
        if new and not resume:
            _CREATED.append(path)
        return run

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def figures_dir(self) -> Path:
        return self.dir / "figures"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def save_config(self, config: Any) -> None:
        if is_main():
            data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            (self.dir / "config.json").write_text(json.dumps(data, indent=2, default=_json_default) + "\n")

    def record_precision(self, precision: Any, *, quiet: bool = False) -> str:
        """Log the resolved precision (a ``Precision`` or ``PrecisionChoice``) and the machine, and keep them
        in ``runtime.json`` (reports show the same line). Returns the one-line reason."""
        from essence.core.precision import machine_info

        choice = getattr(precision, "choice", precision)
        self.precision = choice.reason
        if is_main():
            if not quiet:
                from essence.core.progress import console

                console.print(f"precision: {choice.reason}", highlight=False)
            path = self.dir / "runtime.json"
            data = {"precision": choice.as_dict(), "machine": machine_info()}
            path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        return choice.reason

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Append one record to metrics.jsonl: ``{"step": .., "time": .., **metrics}``."""
        if not is_main():
            return
        record = {"step": step, "time": round(time.time(), 3)} if step is not None else {"time": time.time()}
        record.update({k: _clean(v.item() if hasattr(v, "item") else v) for k, v in metrics.items()})
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.dir / "summary.json"
        if is_main():
            path.write_text(json.dumps(dict(summary), indent=2, default=_json_default) + "\n")
        return path

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file (or a run directory) into a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
