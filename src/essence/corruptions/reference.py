"""Access to the ``imagecorruptions`` package (bethgelab, PyPI 1.1.2), the reference used by the tests and
benchmarks/corruptions.py. Never used by the corruptions themselves (they only read its frost textures).

On today's stack the release fails at import (``pkg_resources`` was removed from setuptools >= 81) and three
of its corruptions crash: ``glass_blur`` and ``gaussian_blur`` (scikit-image dropped ``multichannel=``) and
``fog`` (numpy 2 dropped ``np.float_``). :func:`load_imagecorruptions` imports it with a minimal
``pkg_resources.resource_filename`` stand-in; ``patched=True`` additionally maps ``multichannel=True`` to
``channel_axis=-1`` and restores ``np.float_`` so that the three crashing corruptions can be timed (the
benchmark labels those rows as patched).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

__all__ = ["load_imagecorruptions", "imagecorruptions_version", "CRASHING"]

CRASHING = ("glass_blur", "gaussian_blur", "fog")


def imagecorruptions_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("imagecorruptions")
    except Exception:
        return None


def _install_pkg_resources_shim() -> None:
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return
    shim = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        spec = importlib.util.find_spec(package)
        base = list(spec.submodule_search_locations)[0] if spec.submodule_search_locations else \
            os.path.dirname(spec.origin)
        return os.path.normpath(os.path.join(base, resource))

    shim.resource_filename = resource_filename
    sys.modules["pkg_resources"] = shim


def load_imagecorruptions(patched: bool = False):
    """The ``imagecorruptions`` module, or None when it is not installed."""
    if importlib.util.find_spec("imagecorruptions") is None:
        return None
    _install_pkg_resources_shim()
    mod = importlib.import_module("imagecorruptions")
    if patched:
        import numpy as np
        from skimage import filters

        corr = importlib.import_module("imagecorruptions.corruptions")
        if not hasattr(np, "float_"):
            np.float_ = np.float64  # type: ignore[attr-defined]
        if not getattr(corr.gaussian, "_essence_patched", False):
            original = filters.gaussian

            def gaussian(image, sigma=1, *args, multichannel=None, **kwargs):
                if multichannel:
                    kwargs.setdefault("channel_axis", -1)
                return original(image, sigma, *args, **kwargs)

            gaussian._essence_patched = True
            corr.gaussian = gaussian
    return mod
