"""Hyperparameter checks shared by the compiled optimizer and the reference.

Pure Python on purpose: ``adamc.reference`` must not need the compiled
extension, and these checks run only at construction, at ``load_state_dict``
and at ``step`` when a group's values were replaced (the compiled step keeps
the last validated values and compares identities first).
"""

from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

# The hyperparameters of a param group, in the order group_values returns them.
HYPER_KEYS = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "amsgrad",
    "maximize",
    "decoupled_weight_decay",
    "bias_correction",
    "eps_inside_sqrt",
)
BOOL_KEYS = HYPER_KEYS[4:]


def _where(where):
    return f" in {where}" if where else ""


def check_real(value, name, where="", *, beta=False):
    """Return ``value`` as a float after checking it is a finite real >= 0.

    With ``beta=True`` the range is [0, 1) instead.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__}"
            f"{_where(where)}; pass a Python float"
        )
    try:
        x = float(value)
    except OverflowError:  # a Python int beyond float range
        x = math.inf
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}{_where(where)}")
    if beta:
        if not 0.0 <= x < 1.0:
            raise ValueError(
                f"{name} must be in [0, 1), got {x!r}{_where(where)}; "
                "typical values are 0.9 and 0.999"
            )
    elif x < 0.0:
        raise ValueError(f"{name} must be >= 0, got {x!r}{_where(where)}")
    return x


def check_bool(value, name, where=""):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be True or False, got {type(value).__name__}{_where(where)}"
        )
    return bool(value)


def check_betas(betas, where=""):
    if not isinstance(betas, (tuple, list)):
        raise TypeError(
            f"betas must be a tuple (beta1, beta2), got {type(betas).__name__}"
            f"{_where(where)}"
        )
    if len(betas) != 2:
        raise ValueError(
            f"betas must have exactly 2 values (beta1, beta2), got {len(betas)}"
            f"{_where(where)}"
        )
    return (
        check_real(betas[0], "betas[0] (beta1)", where, beta=True),
        check_real(betas[1], "betas[1] (beta2)", where, beta=True),
    )


def check_lr(lr, where=""):
    """An lr is a number >= 0 or a callable ``lr(step) -> float``."""
    if callable(lr) and not isinstance(lr, numbers.Real):
        return lr
    return check_real(lr, "lr", where)


def scheduled_lr(lr, step, where=""):
    """The learning rate for timestep ``step``: calls a schedule, checks it."""
    if callable(lr) and not isinstance(lr, numbers.Real):
        return check_real(lr(step), f"lr({step}) (the schedule's value)", where)
    return float(lr)


def group_values(group, where=""):
    """Validate a param group's hyperparameters and return them in HYPER_KEYS order.

    ``lr`` comes back as given when it is a callable schedule, else as a float.
    """
    missing = [k for k in HYPER_KEYS if k not in group]
    if missing:
        raise ValueError(f"missing hyperparameter(s) {missing}{_where(where)}")
    b1, b2 = check_betas(group["betas"], where)
    return (
        check_lr(group["lr"], where),
        b1,
        b2,
        check_real(group["eps"], "eps", where),
        check_real(group["weight_decay"], "weight_decay", where),
    ) + tuple(check_bool(group[k], k, where) for k in BOOL_KEYS)


# Timesteps stay far from int64 overflow (t + 1 is computed in C).
MAX_STEP = 2**62


def check_step(step, where=""):
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(step).__name__}{_where(where)}")
    step = int(step)
    if not 1 <= step <= MAX_STEP:
        raise ValueError(
            f"step must be between 1 and 2**62 (the timestep t of this update), "
            f"got {step}{_where(where)}"
        )
    return step


# --------------------------------------------------------------------------
# Arrays.  The compiled step tests the same conditions with C-level field
# reads and, when one fails, calls these to raise the message.


def check_array(a, label):
    """A float32/float64, native-order, item-aligned, contiguous ndarray."""
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{label} must be a numpy.ndarray, got {type(a).__name__}; "
            "convert it with np.asarray(x, dtype=np.float32)"
        )
    dt = a.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(
            f"{label} must have dtype float32 or float64, got {dt}; "
            "convert it with .astype(np.float32)"
        )
    if not dt.isnative:
        raise TypeError(
            f"{label} has non-native byte order ({dt.str}); convert it with "
            f".astype(np.dtype('{dt.name}'))"
        )
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError(
            f"{label} is not contiguous (strides {a.strides}); adamc works on "
            "C- or F-contiguous buffers: pass np.ascontiguousarray(x) and keep "
            "using that array"
        )
    if not a.flags.aligned:
        raise ValueError(
            f"{label} is not aligned to its {dt.itemsize}-byte item size; "
            "copy it with np.require(x, requirements='A')"
        )


def check_writeable(a, label):
    if not a.flags.writeable:
        raise ValueError(
            f"{label} is read-only; adamc updates it in place, so pass a "
            "writeable array (np.array(x) makes a writeable copy)"
        )


def order_of(a):
    """'C' or 'F': the memory order a buffer of a's shape must match."""
    return "C" if a.flags.c_contiguous else "F"


def check_like(a, ref, label, ref_label):
    """a must match ref's dtype, shape and memory order."""
    if a.dtype != ref.dtype:
        raise TypeError(
            f"{label} has dtype {a.dtype} but {ref_label} has {ref.dtype}; "
            f"pass a {ref.dtype} array"
        )
    if a.shape != ref.shape:
        raise ValueError(
            f"{label} has shape {a.shape} but {ref_label} has shape {ref.shape}"
        )
    if a.size > 1 and order_of(a) != order_of(ref):
        raise ValueError(
            f"{label} is {order_of(a)}-contiguous but {ref_label} is "
            f"{order_of(ref)}-contiguous; pass np.asarray(x, order='{order_of(ref)}')"
        )


def bounds(a):
    """[start, end) byte addresses of a contiguous array's buffer."""
    lo = a.__array_interface__["data"][0]
    return lo, lo + a.nbytes


def spans_of(arrays, labels):
    """Sorted (start, end, label) of the non-empty arrays' buffers."""
    return sorted(
        (bounds(a) + (lab,) for a, lab in zip(arrays, labels) if a is not None and a.nbytes),
        key=lambda s: s[0],
    )


def check_disjoint(arrays, labels):
    """No two of the (contiguous) arrays share a byte of memory."""
    spans = spans_of(arrays, labels)
    for (lo0, hi0, lab0), (lo1, hi1, lab1) in zip(spans, spans[1:]):
        if lo1 < hi0:
            raise ValueError(
                f"{lab0} and {lab1} share memory; every buffer adamc writes "
                "must be its own array (pass a copy of one of them)"
            )


def check_no_overlap(a, label, spans):
    """a (read only) must not share memory with any of the sorted, disjoint
    written spans (from spans_of)."""
    if not a.nbytes:
        return
    lo, hi = bounds(a)
    k = bisect.bisect_left(spans, hi, key=lambda s: s[0]) - 1  # last span starting before hi
    if k >= 0 and spans[k][1] > lo:
        raise ValueError(
            f"{label} shares memory with {spans[k][2]}, which the step writes; "
            "pass a separate gradient array (for example a copy)"
        )


def check_step_buffers(param, grad, exp_avg, exp_avg_sq, amsgrad, max_exp_avg_sq):
    """Validate the buffers of a functional step (shared with the reference)."""
    check_array(param, "param")
    check_writeable(param, "param")
    named = [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)]
    if amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError(
                "amsgrad=True needs max_exp_avg_sq: pass an array like exp_avg_sq, "
                "zero-initialised before the first step"
            )
        named.append(("max_exp_avg_sq", max_exp_avg_sq))
    for name, a in named:
        check_array(a, name)
        check_writeable(a, name)
        check_like(a, param, name, "param")
    check_array(grad, "grad")
    check_like(grad, param, "grad", "param")
    written = [param] + [a for _, a in named]
    labels = ["param"] + [name for name, _ in named]
    check_disjoint(written, labels)
    check_no_overlap(grad, "grad", spans_of(written, labels))


def check_functional(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr,
                     beta1, beta2, eps, weight_decay, decoupled_weight_decay,
                     amsgrad, maximize, bias_correction, eps_inside_sqrt):
    """Validate adam_step's arguments; return (step, lr, beta1, beta2, eps,
    weight_decay, decoupled, amsgrad, maximize, bias_correction, eps_inside)."""
    t = check_step(step)
    lr = check_real(lr, "lr")
    b1 = check_real(beta1, "beta1", beta=True)
    b2 = check_real(beta2, "beta2", beta=True)
    eps = check_real(eps, "eps")
    weight_decay = check_real(weight_decay, "weight_decay")
    flags = tuple(
        check_bool(x, name)
        for x, name in (
            (decoupled_weight_decay, "decoupled_weight_decay"),
            (amsgrad, "amsgrad"),
            (maximize, "maximize"),
            (bias_correction, "bias_correction"),
            (eps_inside_sqrt, "eps_inside_sqrt"),
        )
    )
    check_step_buffers(param, grad, exp_avg, exp_avg_sq, flags[1], max_exp_avg_sq)
    return (t, lr, b1, b2, eps, weight_decay) + flags
