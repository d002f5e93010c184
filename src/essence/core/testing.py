"""Assertions shared by the test suites of several methods (kept in the package so every test file can import them).

:func:`assert_within_float32_error` is the tolerance rule of the multi-process (DDP) gradient tests: a tolerance
derived from the float error of the computation itself, never from one machine's run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["assert_within_float32_error"]


def assert_within_float32_error(got: Sequence[torch.Tensor], ref32: Sequence[torch.Tensor],
                                ref64: Sequence[torch.Tensor], *, what: str, names: Sequence[str] | None = None,
                                factor: float = 8.0) -> None:
    """Each tensor of ``got`` (float32, from the processes) equals the exact value up to float32 rounding error.

    The processes sum the same terms as one process does, in another order (per process, then across processes),
    which changes the float32 result by rounding error only. That error is measured for this computation, not
    guessed: the distance of the one-process float32 result ``ref32`` to the same computation in float64
    (``ref64``). ``got`` must lie within ``factor`` times (that error + float32 eps x the largest magnitude, the
    resolution of float32 where the error rounds to 0) of the float64 result. A wrong gradient (a missing
    negative, a wrong average) is off by orders of magnitude more.

    Raises:
        AssertionError: naming the tensor, the distance and the tolerance.
    """
    eps = torch.finfo(torch.float32).eps
    scale = max(float(r.abs().max()) for r in ref64)
    for i, (g, r32, r64) in enumerate(zip(got, ref32, ref64, strict=True)):
        err32 = float((r32.double() - r64).abs().max())
        diff = float((g.double() - r64).abs().max())
        tol = factor * (err32 + eps * scale)
        label = names[i] if names else i
        assert diff <= tol, (f"{what} {label}: |processes - float64| = {diff:.3g} > {tol:.3g} = {factor:g} x "
                             f"(float32 error {err32:.3g} + eps x {scale:.3g})")
