"""precision=auto follows the hardware: bf16 only where it is native, fp32 otherwise; no preset hard-codes bf16."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from essence.core import precision as P
from essence.core.loop import Precision


def test_auto_without_native_bf16_is_fp32(monkeypatch):
    monkeypatch.setenv(P.ENV_OVERRIDE, "0")
    choice = P.resolve_precision("auto", "cpu")
    assert choice.mode == "fp32"
    assert "auto" in choice.reason and "ESSENCE_NATIVE_BF16=0" in choice.reason
    prec = Precision("auto", "cpu")
    assert prec.mode == "fp32" and prec.dtype == torch.float32
    assert prec.reason.startswith("fp32")


def test_auto_with_native_bf16_is_bf16(monkeypatch):
    monkeypatch.setenv(P.ENV_OVERRIDE, "1")
    assert P.resolve_precision("auto", "cpu").mode == "bf16"
    assert Precision("auto", "cpu").dtype == torch.bfloat16


def test_flags_decide_on_x86(monkeypatch):
    monkeypatch.delenv(P.ENV_OVERRIDE, raising=False)
    for flags, native in ((frozenset({"sse2", "avx2", "fma"}), False),
                          (frozenset({"sse2", "avx2", "avx512f", "avx512_bf16"}), True),
                          (frozenset({"sse2", "avx2", "amx_bf16", "amx_tile"}), True)):
        monkeypatch.setattr(P, "_cpu_flags", lambda flags=flags: flags)
        got, why = P.cpu_native_bf16()
        assert got is native, (flags, why)
        assert P.resolve_precision("auto", "cpu").mode == ("bf16" if native else "fp32")


def test_unknown_cpu_falls_back_to_a_cached_timing(monkeypatch, tmp_path):
    monkeypatch.delenv(P.ENV_OVERRIDE, raising=False)
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path))
    monkeypatch.setattr(P, "_cpu_flags", lambda: None)
    monkeypatch.setattr(P, "_torch_cpu_bf16", lambda: None)
    native, why = P.cpu_native_bf16()
    assert "timing" in why
    assert (tmp_path / "precision.json").exists()
    # the cached answer is reused (no second timing)
    monkeypatch.setattr(P.time, "perf_counter", lambda: (_ for _ in ()).throw(AssertionError("timed again")))
    assert P.cpu_native_bf16()[0] is native


def test_explicit_bf16_on_slow_cpu_warns_once(monkeypatch):
    monkeypatch.setenv(P.ENV_OVERRIDE, "0")
    monkeypatch.setattr(P, "_warned", set())
    with pytest.warns(UserWarning, match="slower than fp32"):
        choice = P.resolve_precision("bf16", "cpu")
    assert choice.mode == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.resolve_precision("bf16", "cpu")  # second time: silent


def test_bad_names_and_fp16_on_cpu():
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="CUDA"):
        P.resolve_precision("fp16", "cpu")


def test_machine_line_names_cpu_threads_and_precision(monkeypatch):
    monkeypatch.setenv(P.ENV_OVERRIDE, "0")
    line = P.machine_line(precision="auto")
    assert "CPU" in line and "threads" in line and "precision fp32" in line


def _implemented_presets():
    from essence.methods import METHODS, import_method

    out = []
    for name in METHODS:
        info = METHODS.get(name)
        if not info.implemented:
            continue
        cfg_mod = import_method(info.cli_name, "config")
        out.append((info.cli_name, cfg_mod.PRESETS))
    return out


def _precision_fields(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _precision_fields(value, f"{prefix}{f.name}.")
        elif f.name in ("precision", "bf16", "amp", "fp16"):
            yield f"{prefix}{f.name}", value


@pytest.mark.parametrize("method,presets", _implemented_presets(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_preset_hard_codes_low_precision(method, presets):
    """Every preset of every implemented method leaves precision to `auto` (or exact fp32), never bf16/fp16."""
    for name in presets.names():
        cfg = presets.build(name)
        fields = dict(_precision_fields(cfg))
        assert fields, f"{method}/{name}: no precision field found"
        for key, value in fields.items():
            assert value in ("auto", "fp32"), f"{method} preset {name}: {key} = {value!r} (use 'auto')"
