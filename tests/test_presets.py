"""Every implemented method has the four presets DESIGN.md requires, and each resolves to a valid config."""

from __future__ import annotations

import pytest

from essence.methods import METHODS, import_method

REQUIRED = ("tiny", "quick", "standard", "paper")


def _implemented():
    return [METHODS.get(n).cli_name for n in METHODS if METHODS.get(n).implemented]


@pytest.mark.parametrize("method", _implemented())
def test_method_has_tiny_quick_standard_paper(method):
    presets = import_method(method, "config").PRESETS
    missing = [p for p in REQUIRED if p not in presets.names()]
    assert not missing, f"{method}: presets {missing} missing (has {presets.names()})"
    for name in REQUIRED:
        cfg = presets.build(name)
        assert cfg.to_dict(), f"{method}/{name} builds an empty config"


@pytest.mark.parametrize("method", _implemented())
def test_reproduce_cli_accepts_standard(method):
    """`essence <method> reproduce --preset standard` parses (the run itself is a slow test)."""
    import contextlib
    import io

    cli = import_method(method, "cli")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "--help"])
    assert exc.value.code == 0
    assert "standard" in out.getvalue(), f"{method} reproduce --help does not offer the standard preset"
