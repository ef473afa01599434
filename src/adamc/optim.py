"""adamc.Adam, adamc.AdamW and adamc.adam_step: the fused compiled step."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

from . import _kernels
from ._base import _AdamBase

__all__ = ["Adam", "AdamW", "adam_step"]

#: What ``params`` may be: arrays, param-group dicts, or a mapping name -> array.
Params = Union[Sequence[np.ndarray], Sequence[Mapping[str, Any]], Mapping[str, np.ndarray]]
#: A learning rate: a number, or a schedule called with the timestep t >= 1.
LR = Union[float, Callable[[int], float]]
#: One gradient per parameter (None skips it), or a mapping for named parameters.
Grads = Union[Sequence[Union[np.ndarray, None]], Mapping[str, Union[np.ndarray, None]]]


class Adam(_AdamBase):
    """Adam (Kingma & Ba 2015), optionally with decoupled weight decay (AdamW).

    Parameters
    ----------
    params : sequence of ndarray, sequence of dict, or mapping str -> ndarray
        The arrays to optimize, updated in place: float32 or float64, native
        byte order, writeable, C- or F-contiguous, no two sharing memory.
        Param-group dicts ``{"params": [...], "lr": ...}`` override the
        defaults per group, as in ``torch.optim``.  With a mapping, ``step``
        takes a mapping of gradients with the same keys.
    lr : float or callable, default 1e-3
        Learning rate, or a schedule ``lr(step) -> float`` called once per
        step with the timestep t (1-based) of the parameters it applies to.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        L2 penalty added to the gradient, or with ``decoupled_weight_decay``
        a multiplicative decay ``p *= 1 - lr * weight_decay`` (AdamW).
    amsgrad : bool, default False
        Use the running maximum of the second moment (Reddi et al. 2018).
    maximize : bool, default False
        Maximize the objective (negate the gradient).
    decoupled_weight_decay : bool, default False
        Apply weight decay as AdamW does (Loshchilov & Hutter 2019).
    bias_correction : bool, default True
        Divide the moments by ``1 - beta^t``; False drops both corrections.
    eps_inside_sqrt : bool, default False
        Use ``sqrt(v_hat + eps)`` instead of ``sqrt(v_hat) + eps``.

    Notes
    -----
    Each optimizer has a lock: ``step``, ``state_dict`` and
    ``load_state_dict`` from several threads run one at a time, while
    different optimizers step in parallel (the kernel releases the GIL).

    Examples
    --------
    >>> import numpy as np, adamc
    >>> w = np.zeros(3, dtype=np.float32)
    >>> opt = adamc.Adam([w], lr=0.1)
    >>> opt.step([np.array([1.0, -2.0, 0.0], dtype=np.float32)])
    >>> w
    array([-0.1,  0.1,  0. ], dtype=float32)
    """

    def __init__(
        self,
        params: Params,
        lr: LR = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        eps_inside_sqrt: bool = False,
    ) -> None:
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                maximize=maximize,
                decoupled_weight_decay=decoupled_weight_decay,
                bias_correction=bias_correction,
                eps_inside_sqrt=eps_inside_sqrt,
            ),
        )

    def _rebuild(self):
        if getattr(self, "_engine", None) is None:
            self._engine = _kernels.Engine(self)
        else:
            self._engine.rebuild()

    def step(self, grads: Grads) -> None:
        with self._lock:  # the base class's step, minus one call: this is the hot path
            self._engine.step(grads)

    step.__doc__ = _AdamBase.step.__doc__


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    The same as ``Adam(..., decoupled_weight_decay=True)`` with a default
    ``weight_decay`` of 1e-2; see :class:`Adam` for the parameters.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> w = np.ones(2)
    >>> opt = adamc.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> opt.step([np.array([1.0, -1.0])])
    >>> w   # 1 * (1 - 0.1 * 0.5) -+ 0.1
    array([0.85, 1.05])
    """

    _forced = {"decoupled_weight_decay": True}

    def __init__(
        self,
        params: Params,
        lr: LR = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        bias_correction: bool = True,
        eps_inside_sqrt: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
            bias_correction=bias_correction,
            eps_inside_sqrt=eps_inside_sqrt,
        )


def adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    max_exp_avg_sq: np.ndarray | None = None,
    maximize: bool = False,
    bias_correction: bool = True,
    eps_inside_sqrt: bool = False,
) -> None:
    """One fused Adam/AdamW update of one parameter, in place.

    Parameters
    ----------
    param : ndarray, float32 or float64, contiguous, writeable   # IN/OUT
    grad : ndarray, like param (read only)                        # IN
    exp_avg, exp_avg_sq : ndarray, like param                     # IN/OUT
        First and second moment estimates (zeros before step 1).
    step : int
        The timestep t >= 1 of this update (for the bias corrections).
    max_exp_avg_sq : ndarray, like param, optional                # IN/OUT
        Required with ``amsgrad=True``.
    lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, amsgrad,
    maximize, bias_correction, eps_inside_sqrt
        As for :class:`Adam` (``lr`` must be a number here).

    Examples
    --------
    >>> import numpy as np, adamc
    >>> p = np.array([1.0, 2.0]); g = np.array([0.5, -0.5])
    >>> m = np.zeros(2); v = np.zeros(2)
    >>> adamc.adam_step(p, g, m, v, step=1, lr=0.01)
    >>> p
    array([0.99, 2.01])
    """
    # every check (the same as reference.adam_step's) runs in the compiled layer
    _kernels.adam_step(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
        eps, weight_decay, decoupled_weight_decay, amsgrad, maximize,
        bias_correction, eps_inside_sqrt,
    )
