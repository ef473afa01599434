"""The fused training step's decision: from the gradients' sum of squares to
the factor the step applies (or a skip), with torch's rules.  Pure Python,
shared by the compiled optimizer, the reference and adamc.training."""

from __future__ import annotations

import math
from typing import NamedTuple


class StepInfo(NamedTuple):
    """What a fused step did (``opt.last_step``: the last fused step's; a
    plain step, without the fused options, leaves it as it was).

    norm : float
        The global L2 norm of the gradients, after unscaling, before clipping.
    factor : float
        What every gradient was multiplied by: ``clip / grad_scale``.
    skipped : bool
        A gradient was Inf or NaN and ``skip_nonfinite`` was set: nothing
        changed (no parameter, moment or step count).  A float64 gradient
        of a float32 or 16-bit parameter counts as its float32 rounding (the
        step converts it first): an element beyond float32's range is Inf.
    """

    norm: float
    factor: float
    skipped: bool


def fused_factor(sumsq, scale, max_norm, skip, grads=(), params=()):
    """The fused step's decision from the gradients' sum of squares, in double,
    with torch's rules: clip_grad_norm_'s ``max_norm / (norm + 1e-6)``
    clamped to 1, GradScaler's skip when any gradient is not finite.

    An infinite sum of squares of finite gradients (float64 ones beyond
    about 1e154 overflow it) is no skip: with ``grads`` given (arrays or
    None) the norm is then taken again, rescaled (``root_of``).  With their
    ``params``, a float64 gradient of a parameter the step computes in
    float32 with an element float32 cannot hold (Inf once converted, as the
    step converts it) makes the norm Inf."""
    norm = root_of(sumsq, grads) / (scale or 1.0)
    if params and math.isfinite(norm) and _beyond_float32(sumsq, grads, params):
        norm = math.inf
    if skip and not math.isfinite(norm):
        return StepInfo(norm, 0.0, True)
    clip = 1.0
    if max_norm is not None:
        coef = max_norm / (norm + 1e-6)
        clip = 1.0 if coef >= 1.0 else coef  # (a NaN norm gives a NaN factor, as torch)
    return StepInfo(norm, clip / (scale or 1.0), False)


#: The smallest double whose float32 rounding is infinite.
_F32_INF_FROM = 3.4028235677973366e38


def _beyond_float32(sumsq, grads, params):
    """Whether a float64 gradient of a non-float64 parameter holds an element
    that rounds to Inf in float32.  Such an element's square is at most
    the sum of squares: below that, nothing to look at (the common case);
    above it, one pass over those gradients (max and min: no copies)."""
    if not sumsq >= _F32_INF_FROM * _F32_INF_FROM:
        return False
    return any(g is not None and g.dtype.itemsize == 8 and p.dtype.itemsize != 8 and g.size
               and (g.max() >= _F32_INF_FROM or g.min() <= -_F32_INF_FROM)
               for g, p in zip(grads, params))


def root_of(sumsq, grads=()):
    """The L2 norm from the sum of squares: its square root, or where that
    overflowed and ``grads`` hold float64 arrays (only their squares can
    overflow a double sum: the squares of float32 and 16-bit values stay
    below 2^256), the norm taken again rescaled.  An infinite sum without
    float64 gradients is an Inf or NaN element: nothing more to look at."""
    root = math.sqrt(sumsq)
    if root != math.inf or not any(g is not None and g.dtype.itemsize == 8 for g in grads):
        return root
    return _rescaled_norm([g for g in grads if g is not None])


def _rescaled_norm(gs):
    """The L2 norm of gradients whose sum of squares overflowed, as
    m * sqrt(sum((g / m)**2)) with m the largest |element| (NumPy, one
    thread: the same for any thread count; one gradient's float64 copy at
    a time); inf if any element is not finite, or if the norm itself
    exceeds double's range."""
    import numpy as np

    if not all(np.isfinite(g).all() for g in gs):
        return math.inf
    m = max(float(np.max(np.abs(g))) for g in gs if g.size)
    with np.errstate(over="ignore"):
        return m * math.sqrt(sum(float(np.sum(np.square(np.asarray(g, dtype=np.float64) / m)))
                                 for g in gs))
