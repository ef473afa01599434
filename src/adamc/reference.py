"""Pure NumPy Adam/AdamW: the oracle adamc's kernels are tested against.

The same functional step (:func:`adam_step`) and optimizers (:class:`Adam`,
:class:`AdamW`) as the compiled ones, with the same arguments, checks and
state layout, computed with NumPy ufuncs in the parameter's dtype.  It
follows torch.optim.Adam's for-loop implementation operation by operation
(see ``_update``), with scalars narrowed to the array dtype as torch does.
It is also the "pure Python" baseline in benchmarks: it allocates
temporaries and runs one ufunc at a time.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as V
from ._base import _AdamBase

__all__ = ["Adam", "AdamW", "adam_step"]


def _update(p, grad, m, v, vmax, t, lr, beta1, beta2, eps, wd, decoupled,
            amsgrad, maximize, bias_correction, eps_inside_sqrt):
    """Kingma & Ba 2015, Algorithm 1 (torch's arrangement), in place."""
    dt = p.dtype.type
    g = -grad if maximize else grad
    if wd != 0.0:
        if decoupled:
            p *= dt(1.0 - lr * wd)  # Loshchilov & Hutter 2019
        else:
            g = g + dt(wd) * p
    w = 1.0 - beta1
    if abs(w) < 0.5:  # torch.lerp's two formulas
        m += dt(w) * (g - m)
    else:
        m[...] = g - (g - m) * (dt(1.0) - dt(w))
    v *= dt(beta2)
    v += (dt(1.0 - beta2) * g) * g
    bc1 = 1.0 - beta1**t if bias_correction else 1.0
    bc2 = 1.0 - beta2**t if bias_correction else 1.0
    if amsgrad:
        np.maximum(vmax, v, out=vmax)  # propagates NaN, as torch.maximum
        vv = vmax
    else:
        vv = v
    # torch divides by sqrt(bc2); multiplying by its reciprocal (computed
    # once, in double) differs by rounding only and is what the kernel does.
    if eps_inside_sqrt:
        denom = np.sqrt(vv * dt(1.0 / bc2) + dt(eps))
    else:
        denom = np.sqrt(vv) * dt(1.0 / math.sqrt(bc2)) + dt(eps)
    p += dt(-(lr / bc1)) * (m / denom)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
              amsgrad=False, max_exp_avg_sq=None, maximize=False,
              bias_correction=True, eps_inside_sqrt=False):
    """The NumPy twin of :func:`adamc.adam_step` (same arguments and checks).

    Examples
    --------
    >>> import numpy as np
    >>> from adamc import reference
    >>> p = np.array([1.0, 2.0]); m = np.zeros(2); v = np.zeros(2)
    >>> reference.adam_step(p, np.array([0.5, -0.5]), m, v, step=1, lr=0.01)
    >>> p
    array([0.99, 2.01])
    """
    vals = V.check_functional(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
        eps, weight_decay, decoupled_weight_decay, amsgrad, maximize,
        bias_correction, eps_inside_sqrt,
    )
    t, lr, b1, b2, eps, wd, dec, ams, mx, bc, ein = vals
    _update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, t, lr, b1, b2, eps,
            wd, dec, ams, mx, bc, ein)


class Adam(_AdamBase):
    """The NumPy twin of :class:`adamc.Adam` (same arguments and state layout)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, *, amsgrad=False, maximize=False,
                 decoupled_weight_decay=False, bias_correction=True,
                 eps_inside_sqrt=False):
        super().__init__(params, dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            amsgrad=amsgrad, maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction, eps_inside_sqrt=eps_inside_sqrt))

    def _apply(self, grads):
        glist = self._grads_list(grads)
        self._check_structure()
        vals = [V.group_values(g, f"param_groups[{gi}]")
                for gi, g in enumerate(self.param_groups)]
        active = []
        spans = self._written_spans()
        for i, g in enumerate(glist):
            if g is not None:
                self._explain_param(i)
                self._explain_grad(i, g, spans)
                active.append(i)
        lrs = {}
        for i in active:
            gi = self._group_of[i]
            lrs[i] = V.scheduled_lr(vals[gi][0], int(self._steps[i]) + 1,
                                    f"param_groups[{gi}]")
        self._allocate(active, lambda i: vals[self._group_of[i]][5])
        for i in active:
            _, b1, b2, eps, wd, ams, mx, dec, bc, ein = vals[self._group_of[i]]
            _update(self._params[i], glist[i], self._exp_avg[i], self._exp_avg_sq[i],
                    self._max_exp_avg_sq[i], int(self._steps[i]) + 1, lrs[i], b1, b2,
                    eps, wd, dec, ams, mx, bc, ein)
            self._steps[i] += 1


class AdamW(Adam):
    """The NumPy twin of :class:`adamc.AdamW`."""

    _forced = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2, *, amsgrad=False, maximize=False,
                 bias_correction=True, eps_inside_sqrt=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True,
                         bias_correction=bias_correction,
                         eps_inside_sqrt=eps_inside_sqrt)
