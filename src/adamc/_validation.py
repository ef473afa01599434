"""Every rule adamc checks, and every message it raises: the one home of checks.

Pure Python on purpose: ``adamc.reference`` must not need the compiled
extension.  The compiled layer (``_kernels.pyx``) only mirrors some of these
rules as fast yes/no tests (the table in its docstring pairs each with its
rule here); when one says no, the optimizer (``_base.py``) calls the rule
here, which raises the message.  Each function either returns the checked
value or raises ``TypeError``/``ValueError`` naming the argument and the fix,
before anything is changed.
"""

from __future__ import annotations

import bisect
import math
import numbers
import secrets
from collections.abc import Mapping

import numpy as np

from . import _spec
from ._spec import OPTION, OPTIONS, SLOT_NAMES, SYNONYMS, Hypers

#: The keys of a param group that are hyperparameters (synonyms included).
HYPER_KEYS = tuple(o.name for o in OPTIONS)
GROUP_KEYS = HYPER_KEYS + tuple(SYNONYMS)


def _where(where):
    return f" in {where}" if where else ""


def check_real(value, name, where="", *, beta=False, positive=False):
    """Return ``value`` as a float after checking it is a finite real >= 0.

    With ``beta=True`` the range is [0, 1) instead; with ``positive=True``
    it is > 0.
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
    elif positive and not x > 0.0:
        raise ValueError(f"{name} must be > 0, got {x!r}{_where(where)}")
    elif x < 0.0:
        raise ValueError(f"{name} must be >= 0, got {x!r}{_where(where)}")
    return x


def check_bool(value, name, where=""):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be True or False, got {type(value).__name__}{_where(where)}"
        )
    return bool(value)


def check_choice(value, name, choices, where=""):
    if value not in choices or not (isinstance(value, str) or value is None):
        raise (ValueError if isinstance(value, str) else TypeError)(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            f"{_where(where)}"
        )
    return value


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


def _check_option(o, value, where):
    """One option's value, checked by its kind (the spec's Option.kind)."""
    if o.kind == "lr":
        return (check_lr(value, where),)
    if o.kind == "betas":
        return check_betas(value, where)
    if o.kind == "real":
        return (check_real(value, o.name, where),)
    if o.kind == "bool":
        return (check_bool(value, o.name, where),)
    if o.kind == "optbool":
        return (None if value is None else check_bool(value, o.name, where),)
    if o.kind == "seed":
        return (check_seed(value, where),)
    if o.kind == "count":
        return (check_count(value, o.name, where),)
    return (check_choice(value, o.name, o.choices, where),)


def check_count(value, name, where=""):
    """An int >= 0 (a number of elements)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= 0, got {type(value).__name__}{_where(where)}")
    if not 0 <= int(value) < 2**62:
        raise ValueError(f"{name} must be in [0, 2**62), got {value}{_where(where)}")
    return int(value)


def check_seed(seed, where=""):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be an int in [0, 2**64) or None, got {type(seed).__name__}"
            f"{_where(where)}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}{_where(where)}")
    return int(seed)


def resolve_synonyms(options, where="", *, complete=False):
    """``options`` (name -> value, as given) with each old keyword
    (``eps_inside_sqrt``) folded into its option, in a new dict.  True sets
    the option unless it was given otherwise (a ValueError); False only
    contradicts an option given as the synonym's meaning, or with
    ``complete`` (a saved group from before the option, which the synonym
    described whole) sets the option's default; None says nothing."""
    out = dict(options)
    for syn, (name, meaning) in SYNONYMS.items():
        if syn not in out:
            continue
        flag = out.pop(syn)
        if flag is None:
            continue
        flag = check_bool(flag, syn, where)
        given = out.get(name, meaning if flag else None)
        if (given == meaning) != flag:
            raise ValueError(
                f"{syn}={flag} contradicts {name}={given!r}{_where(where)}; "
                f"{syn}=True means {name}={meaning!r}: give only {name}"
            )
        if flag:
            out[name] = meaning
        elif complete and name not in out:
            out[name] = OPTION[name].default
    return out


def group_values(group, where=""):
    """Validate a param group's hyperparameters; return them as a Hypers.

    ``lr`` comes back as given when it is a callable schedule, else as a float.
    """
    missing = [k for k in HYPER_KEYS if k not in group]
    if missing:
        raise ValueError(f"missing hyperparameter(s) {missing}{_where(where)}")
    if any(s in group for s in SYNONYMS):
        group = resolve_synonyms({k: group[k] for k in GROUP_KEYS if k in group}, where)
    vals = []
    for o in OPTIONS:
        vals.extend(_check_option(o, group[o.name], where))
    return Hypers(*vals)


def options_for(variant, given, where, base=None):
    """The options of a group or constructor: ``base`` (the variant's
    defaults when None), then ``given`` (name -> value, only what the caller
    gave) with synonyms folded in, then the variant's forced values; every
    value checked."""
    opts = dict(_spec.defaults(variant) if base is None else base)
    opts.update(resolve_synonyms(given, where))
    opts.update(_spec.forced(variant))
    h = group_values(opts, where)
    if h.stochastic_rounding and h.seed is None:  # drawn once: state_dict records it
        opts["seed"] = secrets.randbits(63)
    if isinstance(opts["betas"], list):
        opts["betas"] = tuple(opts["betas"])
    return opts


MAX_STEP = _spec.MAX_STEP


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


TORCH_HELP = "README.md, 'Using adamc with PyTorch'"


def dtype_name(dt):
    """The storage name ("float16", "bfloat16", "float32", "float64") of a
    dtype adamc steps, or None."""
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return {2: "float16", 4: "float32", 8: "float64"}[dt.itemsize]
    if dt.name == "bfloat16" and dt.itemsize == 2:  # ml_dtypes.bfloat16
        return "bfloat16"
    return None


def state_name(dt):
    """The storage name of a state array's dtype: dtype_name's, or "int8"
    for the uint8 codes of 8-bit state."""
    if dt == np.uint8:
        return "int8"
    return dtype_name(dt)


def check_storage(param_dtype, h, label, where="", size=None, functional=False):
    """The storage options of a group (``h``: its Hypers) fit a parameter of
    this dtype (a name) and size; refused combinations say why.
    ``functional``: adam_step's, whose storage is its buffers' dtypes (the
    messages name those, not options it has no keyword for)."""
    sixteen = param_dtype in _spec.SIXTEEN_BIT
    if functional:
        chose = ("uint8 (8-bit) exp_avg" if h.state_dtype == "int8"
                 else f"exp_avg in {h.state_dtype}")
        keep64, float_state, want = ("pass float64 moments", "float moments",
                                     "pass float32 moments (np.zeros_like(param, np.float32))")
    else:
        chose = f"state_dtype={h.state_dtype!r}"
        keep64, float_state, want = ("keep float64 state (state_dtype=None)",
                                     "a float state_dtype", "use 'float32' (or None)")
    if h.state_dtype == "int8" and h.amsgrad:
        raise ValueError(
            f"{chose}{_where(where)} with amsgrad=True: amsgrad's running "
            "maximum of v needs more precision than 8-bit codes keep (its maximum "
            f"would be requantized every step); use amsgrad=False, or {float_state}")
    if h.state_dtype == "int8" and param_dtype == "float64":
        raise ValueError(
            f"{chose}{_where(where)} with {label} in float64: 8-bit "
            "moments lose more than float64 parameters gain; use float32 (or 16-bit) "
            f"parameters, or {keep64}")
    if h.master_weights and not sixteen:
        raise ValueError(
            (f"master_param given, but {label} is {param_dtype}: " if functional else
             f"master_weights=True{_where(where)}, but {label} is {param_dtype}: ")
            + "master weights are a float32 copy of a float16/bfloat16 parameter; "
            + ("drop master_param" if functional
               else "leave master_weights=None (or False) for it"))
    state = _spec.state_dtype_for(param_dtype, h, size)
    if param_dtype == "float64" and state != "float64":
        raise ValueError(
            f"{chose}{_where(where)} with {label} in float64: "
            "rounding its moments to fewer bits loses more than float64 parameters "
            f"gain; {keep64} or use float32 parameters")
    if state == "float64" and param_dtype != "float64":
        raise ValueError(
            f"{'exp_avg in float64' if functional else chose}{_where(where)} is for float64 "
            f"parameters; {label} is {param_dtype}: {want}")
    # (sys.modules["ml_dtypes"] is None where an import of it was blocked)
    if state == "bfloat16" and __import__("sys").modules.get("ml_dtypes") is None:
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            raise ValueError(
                f"state_dtype='bfloat16'{_where(where)} needs ml_dtypes for NumPy's "
                "bfloat16 arrays: pip install ml_dtypes (or \"adamc[bfloat16]\")"
            ) from None


def rounds_to_16_bits(param_dtype, h, size=None):
    """Whether a parameter of this dtype writes any 16-bit value when stepped."""
    return (_spec.state_dtype_for(param_dtype, h, size) in _spec.SIXTEEN_BIT
            or (param_dtype in _spec.SIXTEEN_BIT and not _spec.uses_master(param_dtype, h)))


def check_group_storage(h, params, labels, where):
    """Every parameter of a group fits its storage options, and stochastic
    rounding has a 16-bit rounding to do."""
    names = [dtype_name(p.dtype) for p in params]
    for name, p, lab in zip(names, params, labels):
        check_storage(name, h, lab, where, p.size)
    if h.stochastic_rounding and not any(rounds_to_16_bits(n, h, p.size)
                                         for n, p in zip(names, params)):
        raise ValueError(
            f"stochastic_rounding=True{_where(where)}, but no parameter of the group "
            "is rounded to 16 bits (float16/bfloat16 parameters without master "
            "weights, or 16-bit state_dtype); drop it or choose such storage")


def library_of(a):
    """The top-level module of a's class ("torch" for a torch.Tensor)."""
    return type(a).__module__.split(".")[0]


def _foreign_array_hint(a, label, updated):
    """The advice that works for another library's array object."""
    module = library_of(a)
    name = f"{module}.{type(a).__name__}"
    if module == "torch":
        if not updated:   # (read only: a copy is fine)
            return (f"{label} is a {name}; pass p.grad.numpy() (a copy is fine for a "
                    f"gradient: p.grad.float().cpu().numpy() for a GPU or bfloat16 one): "
                    f"see {TORCH_HELP}")
        return (f"{label} is a {name}; pass a NumPy view of a CPU tensor's storage, "
                f"p.detach().numpy() (same dtype; after .cpu() or a dtype change it "
                f"is a copy and the model would not train): see {TORCH_HELP}")
    if updated:
        return (f"{label} is a {name}; adamc updates NumPy arrays in place, and "
                f"np.asarray on a {name} may copy it, so adamc would step the copy and "
                f"your model would not change; pass a NumPy array that shares the "
                f"parameter's memory (if {module} offers one) and keep using it")
    return (f"{label} is a {name}; convert it with np.asarray(g) (a copy is fine "
            "for a gradient)")


def check_array(a, label, role="param"):
    """A float32/float64, native-order, item-aligned, contiguous ndarray.

    ``role``: "param" (updated in place: a conversion hint says to keep
    using the converted array), "grad" or "state" (read, or ours)."""
    updated = role == "param"
    keep = (" and keep using that array: adamc updates the array you pass, not the "
            "original" if updated else "")
    if not isinstance(a, np.ndarray):
        if library_of(a) not in ("builtins", "numpy") and (
                hasattr(a, "__array__") or hasattr(a, "__dlpack__")
                or hasattr(a, "__array_interface__")):
            raise TypeError(_foreign_array_hint(a, label, updated))
        if updated and isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str):
            raise TypeError(
                f"{label} is a (name, array) pair, as torch's named_parameters() yields; "
                f"pass the named parameters as a dict instead: adamc.Adam(dict(pairs))")
        raise TypeError(
            f"{label} must be a numpy.ndarray, got {type(a).__name__}; "
            f"convert it with np.asarray(x, dtype=np.float32){keep}"
        )
    dt = a.dtype
    if dtype_name(dt) is None and not (role == "codes" and dt == np.uint8):
        raise TypeError(
            f"{label} must have dtype float32 or float64 (or float16, or "
            f"ml_dtypes.bfloat16), got {dt}; convert it with .astype(np.float32){keep}"
        )
    if not dt.isnative:
        raise TypeError(
            f"{label} has non-native byte order ({dt.str}); convert it with "
            f".astype(np.dtype('{dt.name}')){keep}"
        )
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError(
            f"{label} is not contiguous (strides {a.strides}); adamc works on "
            "C- or F-contiguous buffers: pass np.ascontiguousarray(x)"
            + (keep or "")
        )
    if not a.flags.aligned:
        raise ValueError(
            f"{label} is not aligned to its {dt.itemsize}-byte item size; "
            f"copy it with np.require(x, requirements='A'){keep}"
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


def check_like(a, ref, label, ref_label, *, any_float=False):
    """a must match ref's dtype (any float dtype adamc takes, with
    any_float), shape and memory order."""
    if a.dtype != ref.dtype and not any_float:
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


#: What a per-block scale of 8-bit codes is, for the messages that refuse one.
_SCALE_IS = "a block's scale is its largest |value|, finite and >= 0"


def check_scales(codes, scales, label, codes_label):
    """The float32 per-block scales of a functional step's 8-bit codes: a
    negative one is refused (no step writes one).  A NaN or Inf one is
    what a step with Inf or NaN gradients leaves, and steps on, as the
    optimizer's own state does."""
    if scales is None:
        raise ValueError(
            f"{codes_label} holds 8-bit codes (uint8): pass {label}=, its float32 "
            f"scales, one per {_spec.QUANT_BLOCK} elements (zeros before the first step)")
    check_array(scales, label, role="state")
    check_writeable(scales, label)
    nb = _spec.nblocks(codes.size)
    if scales.dtype != np.float32 or scales.shape != (nb,):
        raise ValueError(
            f"{label} must be float32 of shape ({nb},) for {codes.size} elements "
            f"(one scale per {_spec.QUANT_BLOCK}), got {scales.dtype} {scales.shape}")
    if np.any(scales < 0):
        i = int(np.argmax(scales < 0))
        raise ValueError(f"{label}[{i}] is {float(scales[i])!r}: {_SCALE_IS} (a corrupted "
                         "state?)")


def check_step_buffers(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master_param, h,
                       exp_avg_absmax=None, exp_avg_sq_absmax=None):
    """Validate the buffers of a functional step (shared with the reference):
    the state buffers share one dtype, which the storage rules allow for the
    parameter (``h``: the step's Hypers; its state_dtype and master_weights
    are taken from the buffers).  uint8 moments are 8-bit codes, with their
    scales in exp_avg_absmax and exp_avg_sq_absmax."""
    check_array(param, "param")
    check_writeable(param, "param")
    pname = dtype_name(param.dtype)
    q8 = isinstance(exp_avg, np.ndarray) and exp_avg.dtype == np.uint8
    if q8:
        check_storage(pname, h._replace(state_dtype="int8"), "param", functional=True)
        for name, a in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            check_array(a, name, role="codes")
            check_writeable(a, name)
            if a.dtype != np.uint8:
                raise TypeError(f"{name} must be uint8 codes like exp_avg, got {a.dtype}")
            check_like(a, param, name, "param", any_float=True)
        check_scales(exp_avg, exp_avg_absmax, "exp_avg_absmax", "exp_avg")
        check_scales(exp_avg_sq, exp_avg_sq_absmax, "exp_avg_sq_absmax", "exp_avg_sq")
    elif exp_avg_absmax is not None or exp_avg_sq_absmax is not None:
        raise ValueError("exp_avg_absmax/exp_avg_sq_absmax go with uint8 (8-bit) "
                         "exp_avg and exp_avg_sq; drop them for float moments")
    named = [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)]
    if h.amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError(
                "amsgrad=True needs max_exp_avg_sq: pass an array like exp_avg_sq, "
                "zero-initialised before the first step"
            )
        named.append(("max_exp_avg_sq", max_exp_avg_sq))
    for name, a in ([] if q8 else named):
        check_array(a, name)
        check_writeable(a, name)
        check_like(a, exp_avg if name != "exp_avg" else param, name,
                   "exp_avg" if name != "exp_avg" else "param", any_float=name == "exp_avg")
    written = [param] + [a for _, a in named]
    labels = ["param"] + [name for name, _ in named]
    if q8:
        written += [exp_avg_absmax, exp_avg_sq_absmax]
        labels += ["exp_avg_absmax", "exp_avg_sq_absmax"]
    if master_param is not None:
        check_array(master_param, "master_param")
        check_writeable(master_param, "master_param")
        if master_param.dtype != np.float32:
            raise TypeError(f"master_param must be float32, got {master_param.dtype}")
        check_like(master_param, param, "master_param", "param", any_float=True)
        written.append(master_param)
        labels.append("master_param")
    storage = h._replace(state_dtype=state_name(exp_avg.dtype),
                         master_weights=master_param is not None)
    check_storage(pname, storage, "param", functional=True)
    if h.stochastic_rounding and not rounds_to_16_bits(pname, storage):
        raise ValueError(
            "stochastic_rounding=True, but nothing is rounded to 16 bits (a "
            "float16/bfloat16 param without master_param, or 16-bit state); drop it")
    if h.stochastic_rounding and h.seed is None:
        raise ValueError("stochastic_rounding=True needs seed=int (the rounding is a "
                         "pure function of seed, step and element index)")
    check_array(grad, "grad", role="grad")
    check_like(grad, param, "grad", "param", any_float=True)
    check_disjoint(written, labels)
    check_no_overlap(grad, "grad", spans_of(written, labels))


def check_torch_only(keywords, where):
    """Refuse the first of ``keywords`` (a mapping name -> value) that is a
    torch.optim-only option, saying why adamc has no such option."""
    for k in keywords:
        if k in _spec.TORCH_ONLY:
            raise TypeError(
                f"{where} got {k}={keywords[k]!r}, a torch.optim option with no "
                f"counterpart in adamc ({_spec.TORCH_ONLY[k]}); drop it")


def functional_values(step, options):
    """Check adam_step's step and option keywords (``options``: name ->
    value, unknown names refused); return (t, Hypers)."""
    t = check_step(step)
    unknown = [k for k in options if k not in _spec.FUNCTIONAL_NAMES and k not in SYNONYMS]
    check_torch_only({k: options[k] for k in unknown}, "adam_step()")
    if unknown:
        raise TypeError(
            f"adam_step() got an unexpected keyword argument {unknown[0]!r}; its "
            f"options are {', '.join(_spec.FUNCTIONAL_NAMES)} (the state's dtype "
            "comes from exp_avg, master weights from master_param)"
        )
    opts = resolve_synonyms(options)
    vals = []
    for o in OPTIONS:
        if o.kind == "betas":
            b = (opts.get("beta1", o.default[0]), opts.get("beta2", o.default[1]))
            vals += [check_real(b[0], "beta1", beta=True), check_real(b[1], "beta2", beta=True)]
        elif o.kind == "lr":
            vals.append(check_real(opts.get(o.name, o.default), "lr"))
        else:
            vals.extend(_check_option(o, opts.get(o.name, o.default_for("adam_step")), ""))
    return t, Hypers(*vals)


def check_functional(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master_param, step,
                     options, exp_avg_absmax=None, exp_avg_sq_absmax=None):
    """Validate adam_step's arguments; return (t, Hypers)."""
    t, h = functional_values(step, options)
    check_step_buffers(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master_param, h,
                       exp_avg_absmax, exp_avg_sq_absmax)
    return t, h


# --------------------------------------------------------------------------
# Optimizer construction: params, groups and their arrays.


def param_label(names, i):
    return f"params[{names[i]!r}]" if names is not None else f"params[{i}]"


def grad_label(names, i):
    return f"grads[{names[i]!r}]" if names is not None else f"grads[{i}]"


def parse_params(params):
    """The constructor's ``params`` as a list of group dicts."""
    if isinstance(params, np.ndarray):
        raise TypeError(
            "params must be a sequence of arrays, param-group dicts or a "
            "mapping name -> array, not a single array; pass [array]"
        )
    if isinstance(params, Mapping):
        return [{"params": params}]
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            "params must be a sequence of arrays, param-group dicts or a "
            f"mapping name -> array, got {type(params).__name__}"
        ) from None
    if not items:
        raise ValueError("params is empty; pass at least one array to optimize")
    dicts = [isinstance(x, Mapping) for x in items]
    if all(dicts):
        named = [isinstance(g.get("params"), Mapping) for g in items]
        if any(named) and not all(named):
            raise TypeError(
                "params: either every group gives its parameters as a mapping "
                "name -> array, or none does"
            )
        return items
    if any(dicts):
        raise TypeError(
            "params mixes arrays and param-group dicts; pass either a list "
            "of arrays or a list of dicts {'params': [...], ...}"
        )
    return [{"params": items}]


def make_group(group, gi, named, variant, defaults):
    """A new param group from the user's dict: its arrays (not yet checked),
    names, the given hyperparameters over ``defaults``, every value checked."""
    where = f"param_groups[{gi}]"
    if "params" not in group:
        raise ValueError(f"{where} has no 'params' entry")
    check_torch_only(group, where)
    ps = group["params"]
    if isinstance(ps, Mapping) != named:
        raise TypeError(
            f"{where}['params'] must be a mapping name -> array exactly when the "
            "optimizer's parameters are given as mappings"
        )
    if named:
        names, arrays = list(ps.keys()), list(ps.values())
    else:
        if isinstance(ps, np.ndarray):
            raise TypeError(f"{where}['params'] must be a list of arrays; pass [array]")
        try:
            arrays = list(ps)
        except TypeError:
            raise TypeError(
                f"{where}['params'] must be a list of arrays, got {type(ps).__name__}"
            ) from None
        names = None
    if not arrays:
        raise ValueError(f"{where}['params'] is empty; give the group at least one array")
    given = {k: v for k, v in group.items() if k not in ("params", "param_names")}
    extra = {k: v for k, v in given.items() if k not in GROUP_KEYS}
    g = options_for(variant, {k: v for k, v in given.items() if k in GROUP_KEYS}, where,
                    base=defaults)
    g.update(extra)  # unknown keys are kept, as torch keeps them
    g["params"] = arrays
    if names is not None:
        g["param_names"] = names
    return g


def check_new_params(old_params, old_names, new_groups):
    """Check the arrays of groups about to be added, before adding any."""
    arrays = list(old_params)
    labels = [param_label(old_names, i) for i in range(len(arrays))]
    names = list(old_names or [])
    for g in new_groups:
        for j, a in enumerate(g["params"]):
            lab = (f"params[{g['param_names'][j]!r}]" if "param_names" in g
                   else f"params[{len(arrays)}]")
            check_array(a, lab)
            check_writeable(a, lab)
            arrays.append(a)
            labels.append(lab)
        names.extend(g.get("param_names", ()))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"params: duplicate parameter name(s) {dup}")
    seen = {}
    for a, lab in zip(arrays, labels):
        if id(a) in seen:
            raise ValueError(
                f"{seen[id(a)]} and {lab} are the same array; pass each parameter once"
            )
        seen[id(a)] = lab
    check_disjoint(arrays, labels)


def check_param_group_arg(param_group, named):
    if not isinstance(param_group, Mapping):
        raise TypeError(
            f"param_group must be a dict {{'params': [...], ...}}, got "
            f"{type(param_group).__name__}"
        )
    if isinstance(param_group.get("params"), Mapping) != named:
        raise TypeError(
            "param_group['params'] must be a mapping name -> array "
            "exactly when the optimizer was built from mappings"
        )


# --------------------------------------------------------------------------
# A step: the gradients, the groups' structure, each parameter and gradient.


#: step()'s default: no gradients given (the torch habit), an error.
NO_GRADS = type("NoGrads", (), {"__repr__": lambda self: "<no grads>"})()

_GRADS_ARE_ARGUMENTS = (
    "adamc takes the gradients as step's argument, opt.step([g0, g1, ...]) in "
    "parameter order (or a mapping by name), and does not read a .grad attribute")


def no_zero_grad():
    raise TypeError(
        f"zero_grad() has nothing to do: {_GRADS_ARE_ARGUMENTS}; drop the call")


def grads_list(grads, n, names):
    """grads as a list in parameter order, or an error naming the mismatch."""
    if grads is NO_GRADS:
        raise TypeError(f"step() needs the gradients: {_GRADS_ARE_ARGUMENTS}")
    if callable(grads):
        raise TypeError(
            "step() got a function (torch's step(closure)); adamc does not evaluate the "
            "loss: compute the loss and the gradients first, and pass the gradients "
            f"({_GRADS_ARE_ARGUMENTS})")
    if names is not None:
        if not isinstance(grads, Mapping):
            raise TypeError(
                "grads must be a mapping name -> array (the optimizer was built "
                f"from a mapping), got {type(grads).__name__}"
            )
        missing = [k for k in names if k not in grads]
        extra = [k for k in grads if k not in set(names)]
        if missing or extra:
            raise ValueError(
                f"grads keys do not match the parameters: missing {missing}, "
                f"unexpected {extra}; pass None for a parameter to skip it"
            )
        return [grads[k] for k in names]
    if isinstance(grads, (np.ndarray, Mapping)) or not hasattr(grads, "__len__"):
        raise TypeError(
            "grads must be a list with one array (or None) per parameter, "
            f"got {type(grads).__name__}"
        )
    if len(grads) != n:
        raise ValueError(
            f"grads has {len(grads)} entries but the optimizer has {n} "
            "parameters; pass one gradient (or None) per parameter, in order"
        )
    return list(grads)


def check_structure(groups, group_params, params):
    """param_groups may have new hyperparameters, not new parameters:
    ``group_params`` are the params lists as built, ``params`` the flat list."""
    if not isinstance(groups, list) or len(groups) != len(group_params):
        raise ValueError(
            f"param_groups must stay a list of the optimizer's {len(group_params)} "
            "group(s); add groups with add_param_group"
        )
    i = 0
    for gi, g in enumerate(groups):
        if not isinstance(g, Mapping):
            raise TypeError(
                f"param_groups[{gi}] must be a dict, got {type(g).__name__}; "
                "edit its values instead of replacing it"
            )
        ps = g.get("params")
        if not isinstance(ps, list) or any(
            a is not b for a, b in zip(ps, params[i : i + len(ps)])
        ) or i + len(ps) > len(params):
            raise ValueError(
                f"param_groups[{gi}]['params'] was changed; parameters can be "
                "added only with add_param_group"
            )
        i += len(ps)
    if i != len(params):
        raise ValueError(
            "param_groups lost parameters since construction; parameters "
            "cannot be removed from an optimizer"
        )


def written_spans(params, states, names):
    """Sorted spans of every buffer a step writes (parameters and state)."""
    arrays, labels = [], []
    for j, (q, st) in enumerate(zip(params, states)):
        lab = param_label(names, j)
        arrays.append(q)
        labels.append(lab)
        for slot, a in (st or {}).items():
            arrays.append(a)
            labels.append(f"the {slot} of {lab}")
    return spans_of(arrays, labels)


def explain_param(p, lab, state, changed=False):
    """Raise the error for parameter ``p`` (its state: slot -> array or
    None), if it has one; with changed=True (the engine saw it differ from
    construction) always raise."""
    check_array(p, lab)
    check_writeable(p, lab)
    m = (state or {}).get("exp_avg")
    if m is not None and (m.shape != p.shape or m.dtype != p.dtype
                          or (p.size > 1 and order_of(m) != order_of(p))):
        raise ValueError(
            f"{lab} changed shape, dtype or memory order since its state was "
            f"created (now {p.shape} {p.dtype}, state {m.shape} {m.dtype}); "
            "parameters must keep their shape, dtype and layout"
        )
    if changed:
        raise ValueError(
            f"{lab} changed shape, dtype or memory order since the optimizer was "
            "built; parameters must keep their shape, dtype and layout"
        )


def explain_grad(p, g, plab, glab, spans):
    """Raise the error for gradient ``g`` of parameter ``p``, if it has one."""
    check_array(p, plab)
    check_writeable(p, plab)
    check_array(g, glab, role="grad")
    check_like(g, p, glab, plab, any_float=True)
    check_no_overlap(g, glab, spans)


# --------------------------------------------------------------------------
# load_state_dict


def check_optimizer(opt, call):
    """``opt`` of ``call`` (e.g. "save_state(opt, path)") is an optimizer,
    not the arguments swapped or one left out."""
    if not all(callable(getattr(opt, m, None)) for m in ("step", "state_dict",
                                                          "load_state_dict")):
        raise TypeError(
            f"{call}: opt must be an adamc optimizer (adamc.Adam, adamc.AdamW, or "
            f"adamc.distributed's), got {type(opt).__name__}; the optimizer comes first")


def check_state_dict(sd, param_groups, params, names, variant):
    """Check a state_dict against the optimizer whole; return (hyperparameter
    updates per group, {flat index: state entry})."""
    if isinstance(sd, (str, bytes)) or hasattr(sd, "__fspath__"):
        raise TypeError(
            "state_dict must be a dict, got a path: adamc.load_state(opt, path) loads a "
            "checkpoint file")
    if not isinstance(sd, Mapping) or "state" not in sd or "param_groups" not in sd:
        raise TypeError(
            "state_dict must be a dict with 'state' and 'param_groups', as "
            "returned by state_dict()"
        )
    groups, state = sd["param_groups"], sd["state"]
    version = check_map_version(sd, "state_dict")
    if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
        raise TypeError(
            "state_dict['param_groups'] must be a list and state_dict['state'] a dict"
        )
    coded = {sid for sid, e in state.items() if isinstance(e, Mapping) and any(
        isinstance(a, np.ndarray) and a.dtype == np.uint8 for a in e.values())}
    maps_used = set()
    if len(groups) != len(param_groups):
        raise ValueError(
            f"state_dict has {len(groups)} param groups but the optimizer has "
            f"{len(param_groups)}"
        )
    index = {}  # saved index -> our flat index
    flat = 0
    updates, group_hypers, group_of = [], [], []
    for gi, (saved, ours) in enumerate(zip(groups, param_groups)):
        where = f"state_dict['param_groups'][{gi}]"
        if not isinstance(saved, Mapping) or "params" not in saved:
            raise TypeError(f"{where} must be a dict with a 'params' list")
        ids = list(saved["params"])
        if len(ids) != len(ours["params"]):
            raise ValueError(
                f"{where} has {len(ids)} parameters but param_groups[{gi}] has "
                f"{len(ours['params'])}"
            )
        if "param_names" in saved and "param_names" in ours:
            if list(saved["param_names"]) != list(ours["param_names"]):
                raise ValueError(f"{where}['param_names'] do not match this optimizer's")
        # a state_dict from before eps_mode carries eps_inside_sqrt instead
        hyper = resolve_synonyms({k: v for k, v in saved.items() if k in GROUP_KEYS}, where,
                                 complete=True)
        hyper.update({k: v for k, v in saved.items()
                      if k not in GROUP_KEYS and k not in ("params", "param_names")})
        if coded.intersection(ids):
            # codes are read with the map they were written with: a group
            # saved before quant_map existed holds dynamic-map codes
            hyper.setdefault("quant_map", _spec.OPTION["quant_map"].default)
            maps_used.add(_spec.QUANT_MAPS.get(hyper["quant_map"], 0))
        merged = {k: v for k, v in ours.items() if k not in SYNONYMS}
        merged.update(hyper)
        h = group_values(merged, where)
        ps = ours["params"] if not isinstance(ours["params"], Mapping) else list(
            ours["params"].values())
        check_group_storage(h, ps, [param_label(names, flat + j) for j in range(len(ps))],
                            where)
        group_hypers.append(h)
        for key, val in _spec.forced(variant).items():
            if merged[key] != val:
                raise ValueError(
                    f"{where}['{key}'] is {merged[key]!r} but {variant} requires {val!r}"
                )
        updates.append({k: (tuple(v) if k == "betas" else v) for k, v in hyper.items()})
        for sid in ids:
            if sid in index:
                raise ValueError(f"{where}: parameter index {sid!r} appears twice")
            index[sid] = flat
            group_of.append(gi)
            flat += 1
    check_maps_agree(version, maps_used, "state_dict")
    checked = {}
    for sid, e in state.items():
        if sid not in index:
            raise ValueError(
                f"state_dict['state'] has an entry for parameter {sid!r}, which "
                "no param group lists"
            )
        i = index[sid]
        where = f"state_dict['state'][{sid!r}]"
        if not isinstance(e, Mapping):
            raise TypeError(f"{where} must be a dict")
        required = [s.name for s in _spec.SLOTS if s.needs == "always"]
        extra = set(e) - {"step", *SLOT_NAMES}
        if extra or "step" not in e or any(k not in e for k in required):
            optional = [s for s in SLOT_NAMES if s not in required]
            raise ValueError(
                f"{where} must have keys step, {', '.join(required)} (and optionally "
                f"{', '.join(optional)}); got {sorted(map(str, e))}"
            )
        # an int, or a whole number as torch keeps it (a float tensor, a
        # 0-d array after .numpy())
        step = check_interop_step(e["step"], f"{where}['step']")
        p = params[i]
        h = group_hypers[group_of[i]]
        # amsgrad's maximum is kept while amsgrad is off (it resumes from it);
        # 8-bit state has none
        int8 = _spec.state_dtype_for(dtype_name(p.dtype), h, p.size) == "int8"
        want = _spec.slots_for(h._replace(amsgrad=not int8), dtype_name(p.dtype), p.size)
        entry = {"step": int(step)}
        check_int8_entry(e, want, p, where, param_label(names, i))
        for key in SLOT_NAMES:
            if key not in e:
                continue
            a = e[key]
            lab = f"{where}[{key!r}]"
            if not isinstance(a, np.ndarray):
                hint = ("; convert a torch.optim state_dict with "
                        "adamc.interop.from_torch(sd)" if library_of(a) == "torch" else "")
                raise TypeError(f"{lab} must be a numpy.ndarray, got {type(a).__name__}{hint}")
            if key in _spec.SCALE_SLOT.values():
                entry[key] = (a, want[key])   # checked with its codes above
                continue
            if key not in want:
                raise ValueError(
                    f"{lab}: {param_label(names, i)} has no {key} with these options "
                    f"(its slots: {', '.join(want)})")
            if a.dtype == np.uint8 and want[key] == "int8":
                entry[key] = (a, want[key])
                continue
            if dtype_name(a.dtype) is None:
                raise TypeError(
                    f"{lab} has dtype {a.dtype}; state is float16, bfloat16, float32 or "
                    "float64 (it is converted to the state's dtype, "
                    f"{want[key]}, by value, never reinterpreted)")
            if a.shape != p.shape:
                raise ValueError(
                    f"{lab} has shape {a.shape} but {param_label(names, i)} has {p.shape}"
                )
            entry[key] = (a, want[key])
        checked[i] = entry
    return updates, checked


def check_int8_entry(e, want, p, where, plab):
    """The 8-bit parts of one state_dict entry: uint8 codes come with their
    scales (finite, >= 0, one per 256 elements), only into a parameter whose
    options ask for 8-bit state, contiguous (codes in the other memory order
    than the parameter's are requantized by value on load); full-precision
    moments for an 8-bit parameter are quantized by value (no scales)."""
    for key, scale in _spec.SCALE_SLOT.items():
        a, sc = e.get(key), e.get(scale)
        if isinstance(a, np.ndarray) and a.dtype == np.uint8:
            if want.get(key) != "int8":
                raise ValueError(
                    f"{where}[{key!r}] holds 8-bit codes, but {plab} keeps "
                    f"{want.get(key, 'no')} {key} with these options: load it into an "
                    "optimizer with state_dtype='int8' and a min_8bit_size this "
                    f"parameter reaches (8-bit state needs one block, {_spec.QUANT_BLOCK} "
                    "elements, or more), or convert it first: adamc.interop.quantize_state("
                    "sd, min_8bit_size=...) with this optimizer's, or dequantize_state(sd)")
            if not isinstance(sc, np.ndarray):
                raise ValueError(
                    f"{where} has 8-bit {key} codes but no {scale!r} array (its "
                    "per-block scales)")
            if a.shape != p.shape:
                raise ValueError(
                    f"{where}[{key!r}] has shape {a.shape} but {plab} has {p.shape}")
            if p.ndim > 1 and not (a.flags.c_contiguous or a.flags.f_contiguous):
                raise ValueError(
                    f"{where}[{key!r}] is not contiguous: 8-bit blocks follow memory "
                    f"order; pass the codes as state_dict() gave them")
            nb = _spec.nblocks(p.size)
            if sc.dtype != np.float32 or sc.shape != (nb,):
                raise ValueError(
                    f"{where}[{scale!r}] must be float32 of shape ({nb},) (one scale per "
                    f"{_spec.QUANT_BLOCK} elements of {plab}), got {sc.dtype} {sc.shape}")
            if np.any(sc < 0):
                raise ValueError(
                    f"{where}[{scale!r}] has a negative scale: {_SCALE_IS} (a corrupted "
                    "state?)")
            if not np.all(np.isfinite(sc)):
                raise ValueError(
                    f"{where}[{scale!r}] has a non-finite scale: {_SCALE_IS}.  A step with "
                    "Inf or NaN gradients "
                    "leaves such scales (the run had diverged: step with "
                    "skip_nonfinite=True to keep them finite), else the state is corrupted")
        elif sc is not None:
            raise stray_scales(f"{where}[{scale!r}]", key, a)


def storage_dtype(name):
    """The NumPy dtype of a storage name (bfloat16 through ml_dtypes; "int8":
    the uint8 codes of 8-bit state)."""
    if name == "int8":
        return np.dtype(np.uint8)
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def check_state_fits(state, want, label, old_map=None, new_map=None):
    """A parameter's existing state has the slots' dtypes its options now
    ask for (state_dtype and master_weights are fixed once state exists),
    and its 8-bit codes the map (quant_map) they were written with."""
    codes = state and any(a.dtype == np.uint8 for a in state.values())
    if codes and old_map is not None and new_map != old_map:
        raise ValueError(
            f"the 8-bit codes of {label} index the {old_map!r} map, but the options now "
            f"ask for quant_map={new_map!r}: quant_map cannot change after the first "
            "step; convert through state_dict(), "
            f"adamc.interop.quantize_state(sd, quant_map={new_map!r}) and "
            "load_state_dict()")
    for slot, a in (state or {}).items():
        if slot in want and state_name(a.dtype) != want[slot]:
            raise ValueError(
                f"the {slot} of {label} is {state_name(a.dtype)}, but the options now "
                f"ask for {want[slot]}: state_dtype, min_8bit_size and master_weights "
                "cannot change after the first step; build the optimizer with them, or convert "
                "through state_dict()/load_state_dict() on a new optimizer")
        if slot == "master_param" and slot not in want:
            raise ValueError(
                f"{label} has a master copy, but the options now ask for none: "
                "master_weights cannot change after the first step")


# --------------------------------------------------------------------------
# The fused training step (grad_scale, max_grad_norm, skip_nonfinite), the
# loss scaler and the standalone clipping.


def check_shardable(hypers, deterministic, where):
    """What adamc.distributed cannot shard as promised, per group's Hypers.
    8-bit state is quantized in blocks of 256 elements of each tensor; a
    process's shard starts wherever the balanced split puts it, so its
    blocks (and scales) would not be the single-process ones.  Stochastic
    rounding draws its bits by the element's index in the stepped array,
    which for a shard is the view's, so deterministic=True (bitwise equal to
    one process) cannot hold with it."""
    for gi, h in enumerate(hypers):
        if h.state_dtype == "int8":
            raise ValueError(
                f"{where}: param_groups[{gi}] has state_dtype='int8', which the sharded "
                "optimizer does not support (its shards do not start on the 8-bit state's "
                "256-element blocks); use a 16-bit or float32 state_dtype, or adamc.Adam "
                "in one process")
        if deterministic and h.stochastic_rounding:
            raise ValueError(
                f"{where}: param_groups[{gi}] has stochastic_rounding=True, which "
                "deterministic=True cannot make bitwise equal to one process (a shard's "
                "random bits follow its own element indices); use deterministic=False "
                "(results then match one process to the rounding) or round to nearest")


def check_positive(value, name, where=""):
    """A finite real > 0 (a loss scale, a maximum norm)."""
    return check_real(value, name, where, positive=True)


#: The loss scales: float32 values whose reciprocal is a finite float32
#: too (torch's GradScaler keeps its scale in float32; the kernels unscale
#: float32 gradients by its reciprocal in float32).  The smallest is a
#: float32 itself (the float32 above 1 / MAX_LOSS_SCALE, a subnormal), so
#: that a scale rounded to float32 never falls below it.
MAX_LOSS_SCALE = float(np.finfo(np.float32).max)
_NEAREST = np.float32(1.0 / MAX_LOSS_SCALE)   # (compared with it in double below)
MIN_LOSS_SCALE = float(_NEAREST if float(_NEAREST) >= 1.0 / MAX_LOSS_SCALE
                       else np.nextafter(_NEAREST, np.float32(1.0)))


def check_loss_scale(value, name):
    """A loss scale: from MIN_LOSS_SCALE to MAX_LOSS_SCALE."""
    x = check_positive(value, name)
    if not MIN_LOSS_SCALE <= x <= MAX_LOSS_SCALE:
        raise ValueError(
            f"{name} must be between {MIN_LOSS_SCALE:.6g} and {MAX_LOSS_SCALE:.6g} (the "
            f"scale is kept, and gradients unscaled by its reciprocal, in float32), "
            f"got {x!r}")
    return x


def check_fused(grad_scale, max_grad_norm, skip_nonfinite):
    """step()'s fused options: (scale or None, max norm or None, skip)."""
    scale = None if grad_scale is None else check_loss_scale(grad_scale, "grad_scale")
    max_norm = None if max_grad_norm is None else check_positive(max_grad_norm,
                                                                 "max_grad_norm")
    return scale, max_norm, check_bool(skip_nonfinite, "skip_nonfinite")


def check_grad_arrays(grads, what="grads"):
    """A list of gradient arrays for global_norm / clip_grad_norm."""
    if isinstance(grads, np.ndarray):
        grads = [grads]
    if isinstance(grads, Mapping):
        grads = list(grads.values())
    try:
        grads = [g for g in grads if g is not None]
    except TypeError:
        raise TypeError(f"{what} must be a list of arrays, got {type(grads).__name__}") from None
    for i, g in enumerate(grads):
        check_array(g, f"{what}[{i}]", role="grad")
    return grads


def check_scaler_state(sd, keys):
    """A LossScaler state_dict (or torch GradScaler's, whose tracker key is
    '_growth_tracker'): (scale, growth tracker)."""
    if isinstance(sd, Mapping) and "_growth_tracker" in sd and "growth_tracker" not in sd:
        sd = {("growth_tracker" if k == "_growth_tracker" else k): v for k, v in sd.items()}
    if not isinstance(sd, Mapping) or set(sd) != set(keys):
        raise ValueError(
            f"a LossScaler state_dict has exactly the keys {sorted(keys)}, got "
            f"{sorted(map(str, sd)) if isinstance(sd, Mapping) else type(sd).__name__}")
    scale = check_loss_scale(sd["scale"], "state_dict['scale']")
    tracker, interval = sd["growth_tracker"], sd["growth_interval"]
    if isinstance(tracker, (bool, np.bool_)) or not isinstance(tracker, numbers.Integral) \
            or tracker < 0:
        raise ValueError(f"state_dict['growth_tracker'] must be an int >= 0, got {tracker!r}")
    if isinstance(interval, numbers.Integral) and not isinstance(interval, (bool, np.bool_)) \
            and tracker >= interval:
        raise ValueError(
            f"state_dict['growth_tracker'] ({tracker}) must be below growth_interval "
            f"({interval}): it counts the clean steps since the scale last changed")
    return scale, int(tracker)


# ----------------------------------------------------------------------
# 8-bit state interchange (adamc.interop): the rules a state_dict of
# bitsandbytes, torchao or adamc's 8-bit layout must meet before it is
# converted.  Arrays come from anything np.asarray reads (NumPy, CPU torch
# tensors); nothing here imports torch.

#: The top-level state_dict key holding the (highest) map version of its 8-bit codes.
MAP_VERSION_KEY = "quant_map_version"

def check_interop_state_dict(sd, what):
    """``sd`` is shaped as a torch.optim state_dict: a mapping with a mapping
    'state' and a list 'param_groups' of mappings with a 'params' list."""
    if not isinstance(sd, Mapping) or "state" not in sd or "param_groups" not in sd:
        raise TypeError(
            f"{what} must be a dict with 'state' and 'param_groups', as an "
            f"optimizer's state_dict() returns it; got {type(sd).__name__}")
    if not isinstance(sd["state"], Mapping):
        raise TypeError(f"{what}['state'] must be a dict, got {type(sd['state']).__name__}")
    groups = sd["param_groups"]
    if not isinstance(groups, (list, tuple)):
        raise TypeError(f"{what}['param_groups'] must be a list, got {type(groups).__name__}")
    listed = set()
    for gi, g in enumerate(groups):
        if not isinstance(g, Mapping) or "params" not in g:
            raise TypeError(f"{what}['param_groups'][{gi}] must be a dict with a 'params' list")
        for pid in g["params"]:
            if pid in listed:
                raise ValueError(
                    f"{what}['param_groups'][{gi}]: parameter index {pid!r} appears twice")
            listed.add(pid)
    for pid, e in sd["state"].items():
        if pid not in listed:
            raise ValueError(
                f"{what}['state'] has an entry for parameter {pid!r}, which no param "
                "group lists")
        if not isinstance(e, Mapping):
            raise TypeError(f"{what}['state'][{pid!r}] must be a dict, got {type(e).__name__}")


def stray_scales(label, key, a):
    """The error for 8-bit scales (at ``label``) whose moment ``key`` is not
    uint8 codes (``a``: the moment, or None): never read float state as
    codes, nor codes cast to float as values."""
    return ValueError(
        f"{label} goes with uint8 {key} codes, but {key} is "
        f"{'missing' if a is None else getattr(a, 'dtype', type(a).__name__)}")


def check_maps_agree(version, maps_used, what):
    """A state_dict's quant_map_version against the map versions its groups'
    quant_map options say their 8-bit codes index (``maps_used``)."""
    if maps_used and max(maps_used) != version:
        raise ValueError(
            f"{what}[{MAP_VERSION_KEY!r}] is {version}, but its groups' quant_map "
            f"options say its 8-bit codes index map version {max(maps_used)}: an "
            "inconsistent state_dict (edited by hand?); codes are never read with "
            "another map")


def check_map_version(sd, what):
    """The highest map version an adamc state_dict's 8-bit codes index
    (absent: 1, as state_dict() writes it only when there are codes; each
    group's quant_map says which map its parameters' codes index)."""
    version = sd.get(MAP_VERSION_KEY, _spec.QUANT_MAP_VERSION)
    if isinstance(version, (bool, np.bool_)) or version not in _spec.QUANT_MAPS.values():
        known = ", ".join(f"{v} ({k!r})" for k, v in _spec.QUANT_MAPS.items())
        raise ValueError(
            f"{what}[{MAP_VERSION_KEY!r}] is {version!r}: this adamc's 8-bit codes index "
            f"map versions {known} only")
    return int(version)


def group_quant_map(g, where):
    """The map a state_dict group's 8-bit codes index: its quant_map (absent:
    "dynamic", the only map before quant_map existed)."""
    name = g.get("quant_map", _spec.OPTION["quant_map"].default)
    if name not in _spec.QUANT_MAPS:
        raise ValueError(f"{where}['quant_map'] is {name!r}; expected one of "
                         f"{', '.join(map(repr, _spec.QUANT_MAPS))}")
    return name


def interop_array(value, where):
    """``np.asarray(value)``, or a TypeError saying what could not be read."""
    if value is None:
        raise TypeError(f"{where} is None; an array was expected")
    try:
        a = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"{where} cannot be read as a NumPy array ({type(value).__name__}: {exc}); "
            "pass NumPy arrays or CPU tensors (tensor.cpu().float() for a GPU or "
            "bfloat16 tensor)") from None
    if a.dtype == object:
        raise TypeError(f"{where} cannot be read as a numeric array ({type(value).__name__})")
    return a


def check_interop_codes(codes, where, shape=None):
    """8-bit codes: a uint8 array (of ``shape`` when given)."""
    if codes.dtype != np.uint8:
        raise TypeError(f"{where} must hold uint8 codes, got {codes.dtype}")
    if shape is not None and codes.shape != tuple(shape):
        raise ValueError(f"{where} has shape {codes.shape}, but its parameter has "
                         f"{tuple(shape)}")
    return codes


def check_interop_scales(scales, size, where):
    """Per-block scales of ``size`` 8-bit codes: one finite float >= 0 per
    block of _spec.QUANT_BLOCK, returned as float32."""
    nb = _spec.nblocks(size)
    if scales.dtype.kind != "f":
        raise TypeError(f"{where} must hold float scales, got {scales.dtype}")
    if scales.shape != (nb,):
        raise ValueError(
            f"{where} has shape {scales.shape}, but {size} codes in blocks of "
            f"{_spec.QUANT_BLOCK} need ({nb},): one scale per block")
    out = scales.astype(np.float32)
    bad = ~(np.isfinite(out) & (out >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{where}[{i}] is {float(out[i])!r}: {_SCALE_IS}; the state is "
                         "corrupted")
    return out


def check_interop_qmap(qmap, expected, where, signed):
    """A stored quantization map equals adamc's dynamic map, bit for bit."""
    kind = "signed (exp_avg)" if signed else "unsigned (exp_avg_sq)"
    if qmap.shape != expected.shape or qmap.dtype.kind != "f" or not np.array_equal(
            qmap.astype(np.float32).view(np.uint32), expected.view(np.uint32)):
        raise ValueError(
            f"{where} is not the {kind} dynamic map of bitsandbytes' "
            f"create_dynamic_map (adamc's map version {_spec.QUANT_MAP_VERSION}): codes "
            "of another map cannot be reused; dequantize them with their own map "
            "and quantize again (adamc.interop.quantize_state)")


def check_interop_step(step, where):
    """A step count: an int, or an integral float (torchao keeps a float
    tensor), in [0, 2**62)."""
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"{where} must be a step count, got a bool")
    if not isinstance(step, numbers.Real):
        a = interop_array(step, where)
        if a.shape not in ((), (1,)) or a.dtype.kind not in "iuf":
            raise TypeError(f"{where} must be one number (a step count), got shape "
                            f"{a.shape}, {a.dtype}")
        step = a.reshape(()).item()
    if isinstance(step, float) and not (math.isfinite(step) and step == int(step)):
        raise ValueError(f"{where} must be a whole number of steps, got {step!r}")
    if not 0 <= step < _spec.MAX_STEP:
        raise ValueError(f"{where} must be between 0 and 2**62 - 1, got {step}")
    return int(step)


def check_interop_keys(entry, allowed, where, what):
    """A state entry has no key outside ``allowed`` (whose meaning would be lost)."""
    extra = sorted(map(str, set(entry) - set(allowed)))
    if extra:
        raise ValueError(
            f"{where} has key(s) {extra} that adamc has no equivalent for (it knows "
            f"{sorted(allowed)}); {what}")


def check_interop_group(group, where, target, decay_both_ways=False, has=()):
    """An adamc param group's options can be expressed by ``target``
    (bitsandbytes' Adam8bit, torchao's Adam8bit/AdamW8bit, torch.optim.Adam:
    it ``has`` those options)."""
    lr = group.get("lr")
    if callable(lr) or isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real):
        raise ValueError(
            f"{where}['lr'] is {lr!r}; {target} stores a number: set the group's lr "
            "to the value for the next step before converting")
    wanted = {"amsgrad": False, "maximize": False, "bias_correction": True,
              "eps_mode": "outside"}
    for key, val in wanted.items():
        if key in group and group[key] != val and key not in has:
            raise ValueError(
                f"{where}['{key}'] is {group[key]!r}, which {target} has no option for "
                f"(it steps as {key}={val!r}); convert a state trained that way only "
                "to an adamc optimizer")
    if not decay_both_ways and group.get("weight_decay", 0) \
            and not group.get("decoupled_weight_decay", False):
        raise ValueError(
            f"{where} has weight_decay={group['weight_decay']!r} as an L2 penalty; "
            f"{target} decays weights decoupled (p *= 1 - lr * weight_decay, as AdamW): "
            "use decoupled_weight_decay=True (adamc.AdamW) for a state to convert")


def check_interop_betas(betas, where):
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(
            f"{where} must be two decay rates (beta1, beta2), got {betas!r}; a third "
            "(AdEMAMix) has no adamc equivalent") from None
    return (check_real(float(b1), "beta1", where, beta=True),
            check_real(float(b2), "beta2", where, beta=True))
