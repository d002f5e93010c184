"""essence.core.runtime.tune_allocator: on, off by ESSENCE_MALLOC=default, and the user's MALLOC_* settings win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from essence.core.runtime import tune_allocator as t; a = t(); print(a, t() == a)"


def _run(**env) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "ESSENCE_MALLOC"}
    out = subprocess.run([sys.executable, "-c", CODE], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_tune_allocator_switches():
    assert _run() == "True True"
    assert _run(ESSENCE_MALLOC="default") == "False True"
    assert _run(MALLOC_TRIM_THRESHOLD_="0") == "False True"
