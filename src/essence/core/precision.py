"""One place that decides the numeric precision of a run: ``auto`` follows what the hardware does natively.

bf16 autocast is only a speed-up where the device has bf16 arithmetic: CUDA GPUs of compute capability 8.0+
(and the CUDA build says so), CPUs with AMX or AVX512-BF16. On a CPU with only AVX2, PyTorch emulates bf16
and autocast makes a plain matmul ~60x *slower* than fp32. So ``auto`` resolves to

- ``bf16`` on CUDA devices with bf16 support, ``fp16`` (with a GradScaler) on older CUDA devices;
- ``bf16`` on CPUs whose flags include ``amx_bf16`` or ``avx512_bf16`` (x86); on CPUs whose capability cannot be
  read (non-x86), a tiny timing of a matmul in both precisions, cached per machine, decides;
- ``fp32`` everywhere else (AVX2-only CPUs, MPS).

The choice is made once per process and device and explained in one line (:attr:`PrecisionChoice.reason`),
which every run logs and stores in its config and report. An explicit ``bf16`` on a CPU without native bf16
runs, but warns once that it is slow.

``ESSENCE_NATIVE_BF16=0`` (or ``1``) overrides the CPU capability check: CI uses it to exercise the fp32 branch
on any machine, and users can use it to force either branch.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = [
    "PRECISIONS",
    "PrecisionChoice",
    "resolve_precision",
    "cpu_native_bf16",
    "cpu_model",
    "machine_info",
    "machine_line",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
ENV_OVERRIDE = "ESSENCE_NATIVE_BF16"


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved precision of a run and why it was chosen."""

    requested: str     # what the config asked for: auto / fp32 / bf16 / fp16
    mode: str          # what runs: fp32 / bf16 / fp16
    device: str        # device type: cpu / cuda / mps
    reason: str        # one line, e.g. "fp32 (auto: CPU without native bf16)"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags on Linux (None where they cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _torch_cpu_bf16() -> bool | None:
    """torch's own view of the CPU's bf16 support on x86 (None when torch cannot tell)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    checks = [c for c in checks if c is not None]
    if not checks or platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    try:
        return any(bool(c()) for c in checks)
    except Exception:  # pragma: no cover - defensive: private API
        return None


def cpu_native_bf16() -> tuple[bool, str]:
    """(does this CPU run bf16 natively, the evidence in words).

    Order: the ``ESSENCE_NATIVE_BF16`` override, the x86 flags (``amx_bf16`` / ``avx512_bf16``), torch's own
    capability query, and, when none of these can tell (non-x86 CPUs), a cached timing of both precisions.
    """
    forced = os.environ.get(ENV_OVERRIDE)
    if forced is not None and forced.strip() != "":
        value = forced.strip().lower() in ("1", "true", "yes", "on")
        return value, f"{ENV_OVERRIDE}={forced.strip()}"
    flags = _cpu_flags()
    if flags is not None and ("avx2" in flags or "avx512f" in flags or "sse2" in flags):  # x86 flags present
        native = sorted({"amx_bf16", "avx512_bf16"} & flags)
        if native:
            return True, "CPU with " + " and ".join(native)
        return False, "CPU without native bf16 (no amx_bf16 / avx512_bf16)"
    torch_view = _torch_cpu_bf16()
    if torch_view is not None:
        return torch_view, "CPU with native bf16 (torch capability)" if torch_view else "CPU without native bf16"
    faster = _timed_bf16_faster()
    return faster, f"bf16 {'faster' if faster else 'not faster'} than fp32 in a matmul timing on this CPU"


def _cache_file() -> Path:
    root = os.environ.get("ESSENCE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "essence")
    return Path(root) / "precision.json"


def _timed_bf16_faster(size: int = 512, repeats: int = 5) -> bool:
    """Time a matmul in fp32 and under bf16 autocast; cached per CPU, torch version and thread count."""
    key = f"{cpu_model()}|{platform.machine()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), dict) and "bf16_faster" in cache[key]:
        return bool(cache[key]["bf16_faster"])
    x = torch.randn(size, size)
    timings = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                (x @ x).sum().item()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    faster = timings["bf16"] * 1.2 < timings["fp32"]  # a clear win only
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = {"bf16_faster": faster, "seconds": timings}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
    return faster


_warned: set[str] = set()


def resolve_precision(requested: str = "auto", device: torch.device | str = "cpu") -> PrecisionChoice:
    """Resolve ``auto`` / ``fp32`` / ``bf16`` / ``fp16`` for ``device``.

    Raises:
        ValueError: for an unknown name, or fp16 on a device other than CUDA.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dev = torch.device(device)
    kind = dev.type
    if kind == "cuda":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if requested == "auto":
            if bf16_ok:
                return PrecisionChoice(requested, "bf16", kind, "bf16 (auto: CUDA device with bf16)")
            return PrecisionChoice(requested, "fp16", kind, "fp16 + GradScaler (auto: CUDA device without bf16)")
        return PrecisionChoice(requested, requested, kind, f"{requested} (requested)")
    if requested == "fp16":
        raise ValueError("fp16 autocast needs a CUDA device; use bf16 or auto on the CPU")
    if kind == "mps":
        if requested == "auto":
            return PrecisionChoice(requested, "fp32", kind, "fp32 (auto: MPS)")
        return PrecisionChoice(requested, requested, kind, f"{requested} (requested)")
    # CPU (and anything else torch autocasts like the CPU)
    native, why = cpu_native_bf16()
    if requested == "auto":
        return PrecisionChoice(requested, "bf16" if native else "fp32", kind,
                               f"{'bf16' if native else 'fp32'} (auto: {why})")
    if requested == "bf16" and not native:
        if "bf16-slow" not in _warned:
            _warned.add("bf16-slow")
            warnings.warn(f"precision bf16 was requested where bf16 is not native ({why}): bf16 autocast is "
                          "emulated there and can be tens of times slower than fp32; use precision=auto", stacklevel=2)
        return PrecisionChoice(requested, "bf16", kind, f"bf16 (requested; slow: {why})")
    return PrecisionChoice(requested, requested, kind, f"{requested} (requested)")


def machine_info(device: torch.device | str | None = None, precision: str | None = None) -> dict[str, object]:
    """The facts a timing or a report depends on: CPU model, torch's CPU capability, threads, GPU, precision."""
    cpu = getattr(torch.backends, "cpu", None)
    capability = cpu.get_cpu_capability() if cpu is not None and hasattr(cpu, "get_cpu_capability") else "unknown"
    native, why = cpu_native_bf16()
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": capability,
        "threads": torch.get_num_threads(),
        "cpu_native_bf16": native,
        "cpu_bf16_evidence": why,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if precision is not None:
        info["precision"] = resolve_precision(precision, device or "cpu").reason
    return info


def machine_line(device: torch.device | str | None = None, precision: str | None = None) -> str:
    """:func:`machine_info` as one line, for the top of a benchmark's output or a report."""
    info = machine_info(device, precision)
    parts = [f"CPU {info['cpu']} ({info['cores']} cores, torch capability {info['torch_cpu_capability']}, "
             f"{'native' if info['cpu_native_bf16'] else 'no native'} bf16)",
             f"torch {info['torch']}, {info['threads']} threads"]
    if "gpu" in info:
        parts.append(f"GPU {info['gpu']}")
    if "precision" in info:
        parts.append(f"precision {info['precision']}")
    return "; ".join(parts)
