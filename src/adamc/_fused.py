"""The fused training step's decision: from the gradients' sum of squares to
the factor the step applies (or a skip), with torch's rules.  Pure Python,
shared by the compiled optimizer, the reference and adamc.training."""

from __future__ import annotations

import math
from typing import NamedTuple


class StepInfo(NamedTuple):
    """What a fused step did (``opt.last_step``).

    norm : float
        The global L2 norm of the gradients, after unscaling, before clipping.
    factor : float
        What every gradient was multiplied by: ``clip / grad_scale``.
    skipped : bool
        A gradient was Inf or NaN and ``skip_nonfinite`` was set: nothing
        changed (no parameter, moment or step count).
    """

    norm: float
    factor: float
    skipped: bool


def fused_factor(sumsq, scale, max_norm, skip):
    """The fused step's decision from the gradients' sum of squares, in double,
    with torch's rules: clip_grad_norm_'s ``max_norm / (norm + 1e-6)``
    clamped to 1, GradScaler's skip when any gradient is not finite."""
    norm = math.sqrt(sumsq) / (scale or 1.0)
    if skip and not math.isfinite(norm):
        return StepInfo(norm, 0.0, True)
    clip = 1.0
    if max_norm is not None:
        coef = max_norm / (norm + 1e-6)
        clip = 1.0 if coef >= 1.0 else coef  # (a NaN norm gives a NaN factor, as torch)
    return StepInfo(norm, clip / (scale or 1.0), False)
