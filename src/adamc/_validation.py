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
from collections.abc import Mapping

import numpy as np

from . import _spec
from ._spec import OPTION, OPTIONS, SLOT_NAMES, SYNONYMS, Hypers

#: The keys of a param group that are hyperparameters (synonyms included).
HYPER_KEYS = tuple(o.name for o in OPTIONS)
GROUP_KEYS = HYPER_KEYS + tuple(SYNONYMS)


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


def check_choice(value, name, choices, where=""):
    if not isinstance(value, str) or value not in choices:
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
    return (check_choice(value, o.name, o.choices, where),)


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
    group_values(opts, where)
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


def _foreign_array_hint(a, label, updated):
    """The advice that works for another library's array object."""
    module = type(a).__module__.split(".")[0]
    name = f"{module}.{type(a).__name__}"
    if module == "torch":
        view = ("p.detach().numpy()" if updated else "p.grad.numpy()")
        return (f"{label} is a {name}; pass a NumPy view of a CPU tensor's storage, "
                f"{view} (same dtype; after .cpu() or a dtype change it is a copy "
                f"and the model would not train): see {TORCH_HELP}")
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
        if type(a).__module__.split(".")[0] not in ("builtins", "numpy") and (
                hasattr(a, "__array__") or hasattr(a, "__dlpack__")
                or hasattr(a, "__array_interface__")):
            raise TypeError(_foreign_array_hint(a, label, updated))
        raise TypeError(
            f"{label} must be a numpy.ndarray, got {type(a).__name__}; "
            f"convert it with np.asarray(x, dtype=np.float32){keep}"
        )
    dt = a.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(
            f"{label} must have dtype float32 or float64, got {dt}; "
            f"convert it with .astype(np.float32){keep}"
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
    check_array(grad, "grad", role="grad")
    check_like(grad, param, "grad", "param", any_float=True)
    written = [param] + [a for _, a in named]
    labels = ["param"] + [name for name, _ in named]
    check_disjoint(written, labels)
    check_no_overlap(grad, "grad", spans_of(written, labels))


def functional_values(step, options):
    """Check adam_step's step and option keywords (``options``: name ->
    value, unknown names refused); return (t, Hypers)."""
    t = check_step(step)
    unknown = [k for k in options if k not in _spec.FUNCTIONAL_NAMES and k not in SYNONYMS]
    if unknown:
        raise TypeError(
            f"adam_step() got an unexpected keyword argument {unknown[0]!r}; its "
            f"options are {', '.join(_spec.FUNCTIONAL_NAMES)}"
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


def check_functional(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, options):
    """Validate adam_step's arguments; return (t, Hypers)."""
    t, h = functional_values(step, options)
    check_step_buffers(param, grad, exp_avg, exp_avg_sq, h.amsgrad, max_exp_avg_sq)
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


def check_state_dict(sd, param_groups, params, names, variant):
    """Check a state_dict against the optimizer whole; return (hyperparameter
    updates per group, {flat index: state entry})."""
    if not isinstance(sd, Mapping) or "state" not in sd or "param_groups" not in sd:
        raise TypeError(
            "state_dict must be a dict with 'state' and 'param_groups', as "
            "returned by state_dict()"
        )
    groups, state = sd["param_groups"], sd["state"]
    if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
        raise TypeError(
            "state_dict['param_groups'] must be a list and state_dict['state'] a dict"
        )
    if len(groups) != len(param_groups):
        raise ValueError(
            f"state_dict has {len(groups)} param groups but the optimizer has "
            f"{len(param_groups)}"
        )
    index = {}  # saved index -> our flat index
    flat = 0
    updates = []
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
        merged = {k: v for k, v in ours.items() if k not in SYNONYMS}
        merged.update(hyper)
        group_values(merged, where)
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
            flat += 1
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
        required = [s.name for s in _spec.SLOTS if s.needs is None]
        extra = set(e) - {"step", *SLOT_NAMES}
        if extra or "step" not in e or any(k not in e for k in required):
            optional = [s for s in SLOT_NAMES if s not in required]
            raise ValueError(
                f"{where} must have keys step, {', '.join(required)} (and optionally "
                f"{', '.join(optional)}); got {sorted(map(str, e))}"
            )
        step = e["step"]
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"{where}['step'] must be an int, got {type(step).__name__}")
        if not 0 <= step < MAX_STEP:
            raise ValueError(
                f"{where}['step'] must be between 0 and 2**62 - 1, got {step}")
        p = params[i]
        for key in SLOT_NAMES:
            if key not in e:
                continue
            a = e[key]
            lab = f"{where}[{key!r}]"
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{lab} must be a numpy.ndarray, got {type(a).__name__}")
            if a.dtype != p.dtype:
                raise TypeError(
                    f"{lab} has dtype {a.dtype} but {param_label(names, i)} has {p.dtype}"
                )
            if a.shape != p.shape:
                raise ValueError(
                    f"{lab} has shape {a.shape} but {param_label(names, i)} has {p.shape}"
                )
        checked[i] = e
    return updates, checked
