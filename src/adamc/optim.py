"""adamc.Adam, adamc.AdamW and adamc.adam_step: the fused compiled step."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

from . import _kernels, _spec
from . import _validation as V
from ._base import _Optimizer

__all__ = ["Adam", "AdamW", "adam_step"]

#: What ``params`` may be: arrays, param-group dicts, or a mapping name -> array.
Params = Union[Sequence[np.ndarray], Sequence[Mapping[str, Any]], Mapping[str, np.ndarray]]
#: A learning rate: a number, or a schedule called with the timestep t >= 1.
LR = Union[float, Callable[[int], float]]
#: One gradient per parameter (None skips it), or a mapping for named parameters.
Grads = Union[Sequence[Union[np.ndarray, None]], Mapping[str, Union[np.ndarray, None]]]


class Adam(_Optimizer):
    _Engine = _kernels.Engine

    __doc__ = f"""Adam (Kingma & Ba 2015), optionally with decoupled weight decay (AdamW).

    Parameters
    ----------
    params : sequence of ndarray, sequence of dict, or mapping str -> ndarray
        The arrays to optimize, updated in place: float16, bfloat16
        (ml_dtypes), float32 or float64, native byte order, writeable, C- or
        F-contiguous, no two sharing memory.
        Param-group dicts ``{{"params": [...], "lr": ...}}`` override the
        defaults per group, as in ``torch.optim``.  With a mapping, ``step``
        takes a mapping of gradients with the same keys.
{_spec.parameters_doc("Adam")}

    Notes
    -----
    Each optimizer has a lock: ``step``, ``state_dict`` and
    ``load_state_dict`` from several threads run one at a time, while
    different optimizers step in parallel (the kernel releases the GIL).
    An optimizer pickles (with its parameters and state) and deep-copies
    into an independent one; ``copy.copy`` gives a second handle on the
    same one.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> w = np.zeros(3, dtype=np.float32)
    >>> opt = adamc.Adam([w], lr=0.1)
    >>> opt.step([np.array([1.0, -2.0, 0.0], dtype=np.float32)])
    >>> w
    array([-0.1,  0.1,  0. ], dtype=float32)
    """


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

    _variant = "AdamW"


def adam_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
              exp_avg_sq: np.ndarray, *, step: int,
              max_exp_avg_sq: np.ndarray | None = None,
              master_param: np.ndarray | None = None,
              exp_avg_absmax: np.ndarray | None = None,
              exp_avg_sq_absmax: np.ndarray | None = None, **options: Any) -> None:
    """One fused Adam/AdamW update of one parameter, in place.

    Parameters
    ----------
    param : ndarray, float16, bfloat16, float32 or float64, contiguous,
        writeable                                                 # IN/OUT
    grad : ndarray, param's shape and order, any of those dtypes  # IN
    exp_avg, exp_avg_sq : ndarray, param's shape and order        # IN/OUT
        First and second moment estimates (zeros before step 1); their
        dtype is the state's (float32 or 16-bit; float64 for float64 param).
    step : int
        The timestep t >= 1 of this update (for the bias corrections).
    max_exp_avg_sq : ndarray, like param, optional                # IN/OUT
        Required with ``amsgrad=True``.
    master_param : ndarray, float32, param's shape, optional      # IN/OUT
        The float32 master copy of a 16-bit param (start: param's values):
        it is stepped, and param receives its rounded value.
    exp_avg_absmax, exp_avg_sq_absmax : ndarray, float32, optional  # IN/OUT
        With 8-bit moments (exp_avg and exp_avg_sq uint8 codes: state_dtype
        "int8"), their per-block scales, ceil(param.size / 256) each (zeros
        and codes of 0.0 before step 1: ``reference.quantize_blockwise``).
    {options} (keywords)
        As for :class:`Adam` (``lr`` must be a number here; ``betas`` is
        given as ``beta1`` and ``beta2``).

    Examples
    --------
    >>> import numpy as np, adamc
    >>> p = np.array([1.0, 2.0]); g = np.array([0.5, -0.5])
    >>> m = np.zeros(2); v = np.zeros(2)
    >>> adamc.adam_step(p, g, m, v, step=1, lr=0.01)
    >>> p
    array([0.99, 2.01])
    """
    if master_param is not None or exp_avg_absmax is not None \
            or exp_avg_sq_absmax is not None or not _kernels.try_adam_step(
                param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, options):
        t, h = V.check_functional(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                                  master_param, step, options, exp_avg_absmax,
                                  exp_avg_sq_absmax)
        _kernels.step_buffers(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, t, h,
                              master_param, exp_avg_absmax, exp_avg_sq_absmax)


adam_step.__signature__ = _spec.functional_signature()
adam_step.__doc__ = adam_step.__doc__.replace("{options}", ", ".join(_spec.FUNCTIONAL_NAMES))
