"""What a training loop wraps around the step: dynamic loss scaling and
gradient clipping by the global norm.

``LossScaler`` follows torch.cuda.amp.GradScaler's rules and defaults; the
step itself takes ``grad_scale``, ``max_grad_norm`` and ``skip_nonfinite``
(``Adam.step``), so unscaling, clipping and the Inf/NaN check cost one read
of the gradients before the step instead of separate passes.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _kernels
from . import _validation as V
from ._fused import fused_factor, root_of

__all__ = ["LossScaler", "global_norm", "clip_grad_norm"]


def global_norm(grads) -> float:
    """The L2 norm of all elements of ``grads`` (arrays, None skipped), in
    double, in the kernels' fixed order (the same for any thread count).

    Examples
    --------
    >>> import numpy as np, adamc
    >>> adamc.global_norm([np.array([3.0]), np.array([4.0], dtype=np.float32)])
    5.0
    """
    grads = V.check_grad_arrays(grads)
    return root_of(_kernels.grad_sumsq(grads), grads)


def clip_grad_norm(grads, max_norm) -> float:
    """Scale ``grads`` in place so that their global norm is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_`` (factor
    ``max_norm / (norm + 1e-6)`` when below 1); returns the norm before.
    Each element is multiplied as the fused step does: in float32 (float64
    for float64 gradients), rounded once to the gradient's dtype."""
    grads = V.check_grad_arrays(grads)
    max_norm = V.check_positive(max_norm, "max_norm")
    for i, g in enumerate(grads):
        V.check_writeable(g, f"grads[{i}]")
    info = fused_factor(_kernels.grad_sumsq(grads), None, max_norm, False, grads)
    if info.factor != 1.0:
        for g in grads:
            wide = np.float64 if g.dtype == np.float64 else np.float32
            np.multiply(g, wide(info.factor), out=g, dtype=wide, casting="same_kind")
    return info.norm


class LossScaler:
    """Dynamic loss scaling with torch's GradScaler rules and defaults.

    Multiply the loss (or its gradient seed) by ``scale`` (a float
    attribute, where torch has a ``scale(loss)`` method) before the
    backward pass, then ``scaler.step(opt, grads)``: the fused step divides
    the gradients by the scale, skips the step if any is Inf or NaN, and the
    scale backs off (x0.5) after a skipped step or grows (x2) after
    ``growth_interval`` clean ones.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> w = np.ones(2, dtype=np.float32)
    >>> opt, scaler = adamc.Adam([w], lr=0.1), adamc.LossScaler(init_scale=4.0)
    >>> scaler.step(opt, [np.array([np.inf, 1.0], dtype=np.float32)])
    False
    >>> scaler.scale, w
    (2.0, array([1., 1.], dtype=float32))
    """

    _KEYS = ("scale", "growth_factor", "backoff_factor", "growth_interval", "growth_tracker")

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
        # in float32, as torch's
        self.scale = float(np.float32(V.check_loss_scale(init_scale, "init_scale")))
        self.growth_factor = V.check_positive(growth_factor, "growth_factor")
        self.backoff_factor = V.check_positive(backoff_factor, "backoff_factor")
        if not self.growth_factor > 1.0 or not self.backoff_factor < 1.0:
            raise ValueError("growth_factor must be > 1 and backoff_factor < 1 (torch's "
                             "defaults: 2.0 and 0.5)")
        if isinstance(growth_interval, (bool, np.bool_)) \
                or not isinstance(growth_interval, numbers.Integral) or growth_interval < 1:
            raise ValueError(f"growth_interval must be an int >= 1, got {growth_interval!r}")
        self.growth_interval = int(growth_interval)
        self.growth_tracker = 0

    def step(self, opt, grads, *, max_grad_norm=None):
        """``opt.step(grads, grad_scale=self.scale, skip_nonfinite=True, ...)``
        then :meth:`update`; returns True if the step was taken."""
        V.check_optimizer(opt, "LossScaler.step(opt, grads)")
        opt.step(grads, grad_scale=self.scale, max_grad_norm=max_grad_norm,
                 skip_nonfinite=True)
        self.update(opt.last_step.skipped)
        return not opt.last_step.skipped

    def update(self, skipped):
        """GradScaler.update: back off after a skipped step, grow after
        ``growth_interval`` steps in a row without one.  As torch keeps the
        scale in float32: each new scale is the product rounded to float32,
        and a growth that would reach float32's infinity is not taken."""
        if V.check_bool(skipped, "skipped"):   # (not below the smallest loss scale)
            self.scale = max(float(np.float32(self.scale * self.backoff_factor)),
                             V.MIN_LOSS_SCALE)
            self.growth_tracker = 0
        else:
            self.growth_tracker += 1
            if self.growth_tracker == self.growth_interval:
                with np.errstate(over="ignore"):
                    grown = np.float32(self.scale * self.growth_factor)
                if np.isfinite(grown):
                    self.scale = float(grown)
                self.growth_tracker = 0

    def state_dict(self):
        return {k: getattr(self, k) for k in self._KEYS}

    def load_state_dict(self, sd):
        """Checked whole before anything changes.  torch GradScaler's
        state_dict (its tracker under '_growth_tracker') loads too."""
        scale, tracker = V.check_scaler_state(sd, self._KEYS)
        fresh = LossScaler(scale, sd["growth_factor"], sd["backoff_factor"],
                           sd["growth_interval"])  # checks the rest
        fresh.growth_tracker = tracker
        self.__dict__.update(fresh.__dict__)

    def __repr__(self):
        return (f"LossScaler(scale={self.scale!r}, growth_tracker={self.growth_tracker}, "
                f"growth_interval={self.growth_interval})")
