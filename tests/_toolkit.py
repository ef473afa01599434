"""The tests' one toolkit: option lists, arrays, snapshots and comparisons.

Import it as ``import _toolkit`` or ``from _toolkit import ...`` (tests/ is
on sys.path: pytest puts the rootdir of conftest.py there).  conftest.py
holds fixtures only; everything else tests share lives here:

* option, state-slot and functional names, read from ``adamc._spec`` (never
  written out by hand), and the option cases the comparison tests run;
* one array factory, :func:`alloc` (shape, dtype, memory order, an offset
  from a 64-byte boundary, guard elements around the array), and the random
  arrays built on it;
* :func:`state_of`, the one way tests reach an optimizer's live state;
* :func:`snapshot` / :func:`assert_unchanged` for calls that must fail
  without changing anything;
* the tolerance a kernel is held to against ``adamc.reference``
  (:func:`exact`, :func:`tolerance`, :func:`assert_matches`) and the bitwise
  comparisons.

It imports nothing optional (no Hypothesis), so any test file can use it.
"""

from __future__ import annotations

import importlib.util
import math
import platform
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import adamc
from adamc import _spec

# ---------------------------------------------------------------- names, from the spec

#: The options of a param group, in the spec's order.
HYPER_KEYS = tuple(o.name for o in _spec.OPTIONS)
#: Old keywords accepted as another way to set an option (eps_inside_sqrt).
SYNONYM_KEYS = tuple(_spec.SYNONYMS)
#: Options the user may edit in any class's param group (none a class forces).
FREE_OPTIONS = tuple(o.name for o in _spec.OPTIONS if not o.forced)
#: The per-parameter state buffers, in the spec's order.
SLOT_NAMES = _spec.SLOT_NAMES
#: The keys of one state_dict["state"] entry that has every slot.
#: (float32/float64 parameters: no master copy).
STATE_ENTRY_KEYS = frozenset(("step",) + tuple(s.name for s in _spec.SLOTS
                                            if s.needs not in ("master", "int8")))
#: adam_step's keyword names for the options (betas split in two).
FUNCTIONAL_NAMES = _spec.FUNCTIONAL_NAMES
#: adam_step's array arguments: the parameter, its gradient and the slots.
FUNC_BUFFERS = ("param", "grad") + SLOT_NAMES


def _functional_options():
    """{adam_step keyword: the Option it sets}, walked as the spec builds Hypers."""
    names, out = iter(FUNCTIONAL_NAMES), {}
    for o in _spec.OPTIONS:
        if not o.functional:
            continue
        for _ in range(2 if o.kind == "betas" else 1):
            out[next(names)] = o
    assert next(names, None) is None, "FUNCTIONAL_NAMES and OPTIONS disagree"
    return out


#: {adam_step keyword: Option}; both halves of "betas" map to the betas Option.
FUNCTIONAL_OPTION = _functional_options()
#: The two adam_step keywords that "betas" splits into (beta1, beta2).
BETA_NAMES = tuple(n for n, o in FUNCTIONAL_OPTION.items() if o.kind == "betas")


def functional_kwargs(options):
    """Constructor-style options as adam_step keywords: betas split in two,
    the storage options adam_step takes from its buffers left out."""
    kw = dict(options)
    for o in _spec.OPTIONS:
        if o.kind == "betas" and o.name in kw:
            kw.update(zip(BETA_NAMES, kw.pop(o.name)))
        elif not o.functional:
            kw.pop(o.name, None)
    return kw


# ---------------------------------------------------------------- cases of the comparison tests

DTYPES = [np.float32, np.float64]

# (shape, layout) cases for random_array: "C" and "F" as usual, "offset" a
# C-ordered array one element past a 64-byte boundary (not 16/32/64-byte aligned).
LAYOUTS = [
    ((), "C"),
    ((1,), "C"),
    ((7,), "C"),
    ((1001,), "C"),
    ((3, 4, 5), "C"),
    ((6, 7), "F"),
    ((2, 3, 4), "F"),
    ((257,), "offset"),
    ((5, 9), "offset"),
    ((0,), "C"),
    ((3, 0), "C"),
]

# Option sets the compiled step is compared with the reference under (the
# values are the point; every key is checked against the spec below).
OPTION_CASES = [
    {},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True},
    {"maximize": True},
    {"bias_correction": False},
    {"eps_inside_sqrt": True},
    {"betas": (0.0, 0.99)},   # the large-weight branch of lerp
    {"betas": (0.5, 0.0)},
    {"amsgrad": True, "weight_decay": 0.05, "maximize": True, "eps_inside_sqrt": True},
    {"amsgrad": True, "weight_decay": 0.05, "decoupled_weight_decay": True,
     "bias_correction": False},
]
_unknown = {k for case in OPTION_CASES for k in case} - set(HYPER_KEYS) - set(SYNONYM_KEYS)
assert not _unknown, f"OPTION_CASES use names the spec does not declare: {_unknown}"


def option_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


# ---------------------------------------------------------------- arrays

GUARD = -7.0   #: the value of every guard element
PAD = 3        #: guard elements after every array
ALIGN = 64     #: bytes of guard before the boundary an array's offset counts from

_LAYOUT = {"C": ("C", 0), "F": ("F", 0), "offset": ("C", 1)}


def alloc(shape, dtype, order="C", offset=0, values=None):
    """A writeable ``order``-contiguous array: the one array factory.

    The array is a view into a larger buffer.  It starts ``offset`` elements
    past a 64-byte boundary (offset 0: 64-byte aligned; an odd offset: not
    16/32/64-byte aligned, though still aligned to its item size).  Every
    other element of the buffer is a guard holding GUARD: at least 64 bytes
    and the ``offset`` elements before the array, PAD elements after it
    (:func:`assert_guards_intact` checks them).  Filled with ``values``
    (broadcast), or zeros.
    """
    shape, dtype = tuple(shape), np.dtype(dtype)
    size = dtype.itemsize
    assert ALIGN % size == 0, dtype
    n = math.prod(shape)
    lead = ALIGN // size + offset
    raw = np.empty(lead + n + PAD + ALIGN // size, dtype=dtype)
    raw[...] = GUARD
    addr = raw.__array_interface__["data"][0]
    shift = (-addr) % ALIGN // size  # elements up to the first 64-byte boundary
    flat = raw[shift + lead:shift + lead + n]
    a = flat.reshape(shape) if order == "C" else flat.reshape(shape[::-1]).T
    assert a.flags.c_contiguous if order == "C" else a.flags.f_contiguous
    if n:  # (an empty view's data pointer is not meaningful)
        assert np.shares_memory(a, raw)
        assert (a.__array_interface__["data"][0] - offset * size) % ALIGN == 0
    a[...] = 0 if values is None else values
    return a


def order_of(a):
    """ "F" for an F-ordered array that is not also C-ordered, else "C"."""
    return "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"


def alloc_like(a, values=None, offset=0):
    """A new array with ``a``'s shape, dtype and memory order (see alloc)."""
    return alloc(a.shape, a.dtype, order_of(a), offset, values)


def random_array(rng, shape, dtype, layout="C", scale=1.0):
    """A random standard normal array (times ``scale``) of one of the LAYOUTS
    kinds: "C", "F" or "offset" (C order, one element past a 64-byte boundary)."""
    data = (rng.standard_normal(shape) * scale).astype(dtype)
    order, offset = _LAYOUT[layout]
    a = alloc(shape, dtype, order, offset, data)
    assert offset == 0 or a.ctypes.data % 16 != 0
    return a


def random_like(rng, a, scale=1.0):
    """A random array with ``a``'s shape, dtype and memory order."""
    return random_array(rng, a.shape, a.dtype, order_of(a), scale)


def buffer_of(a):
    """The array that owns ``a``'s memory (the whole guarded buffer, for alloc's)."""
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base


def assert_guards_intact(a, what=""):
    """The guard elements around an alloc'd array (before it and the PAD
    after it) still hold GUARD: no out-of-bounds stores from vector tails or
    thread splits."""
    base = buffer_of(a)
    assert base is not a, f"{what}: not a view into a guarded buffer"
    start = (a.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // a.itemsize
    flat = base.reshape(-1)
    outside = np.concatenate([flat[:start], flat[start + a.size:]])
    assert outside.size >= PAD and np.all(outside == GUARD), f"{what}: wrote outside its buffer"


# ---------------------------------------------------------------- an optimizer's state

def state_of(opt, i):
    """params[i]'s live state, {slot: array} (the optimizer's own buffers,
    not copies), or None before its first step.  adamc and reference alike."""
    return opt._engine.get_state(i)


class Snapshot(NamedTuple):
    params: list        # copies of the parameters
    state_dict: dict    # opt.state_dict() (its arrays are copies)


def snapshot(opt):
    """Everything a failed call must leave as it was (see assert_unchanged)."""
    return Snapshot([p.copy(order="K") for p in opt._params], opt.state_dict())


def assert_unchanged(opt, snap, what="", groups=True):
    """The parameters (bits and memory order), every state entry (keys, step
    count and its type, slot buffers bit for bit) and, unless groups=False,
    the param groups (values and their types) are as in ``snap``."""
    assert len(opt._params) == len(snap.params), f"{what}: parameters added or removed"
    for i, (a, b) in enumerate(zip(opt._params, snap.params)):
        assert_identical(a, b, f"{what}: params[{i}] changed by a failed call")
    assert_state_dicts_identical(snap.state_dict, opt.state_dict(), what, groups)


# ---------------------------------------------------------------- bitwise comparisons

def assert_identical(a, b, what="", nan_bits=True, layout=True):
    """The same shape, dtype and bytes (object arrays: equal items); with
    layout=True also the same memory order; with nan_bits=False any NaN
    equals any NaN (sign and payload ignored)."""
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), what
    assert a.shape == b.shape and a.dtype == b.dtype, what
    if layout:
        assert (a.flags.c_contiguous, a.flags.f_contiguous) == \
            (b.flags.c_contiguous, b.flags.f_contiguous), f"{what}: memory order"
    if a.dtype.kind == "O":
        assert a.tolist() == b.tolist(), what
    elif nan_bits:
        assert a.tobytes(order="A") == b.tobytes(order="A"), what
    else:
        ua, ub = a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")
        both = np.isnan(a) & np.isnan(b)
        np.testing.assert_array_equal(np.where(both, 0, ua), np.where(both, 0, ub), err_msg=what)


def assert_state_dicts_identical(a, b, what="", groups=True):
    """Two state_dicts hold the same state entries (keys, step counts that are
    ints, slot buffers identical) and, unless groups=False, equal param groups
    whose values have the same types."""
    assert sorted(a["state"]) == sorted(b["state"]), f"{what}: state entries changed"
    for i, ea in a["state"].items():
        eb = b["state"][i]
        assert set(ea) == set(eb), f"{what}: keys of state[{i}] changed"
        assert ea["step"] == eb["step"], f"{what}: step count of params[{i}] changed"
        assert type(eb["step"]) is int, f"{what}: step count of params[{i}] not an int"
        for k in ea:
            if k != "step":
                assert_identical(ea[k], eb[k], f"{what}: {k} of params[{i}] changed")
    if groups:
        assert len(a["param_groups"]) == len(b["param_groups"]), f"{what}: param groups"
        for ga, gb in zip(a["param_groups"], b["param_groups"]):
            assert ga == gb, f"{what}: param_groups changed"
            for k in ga:
                assert type(ga[k]) is type(gb[k]), f"{what}: type of param group value {k!r}"


# ---------------------------------------------------------------- against the reference

def exact(variant=None):
    """Whether a kernel variant (default: the one in use) must equal the
    reference bit for bit.

    The baseline x86-64 variant performs the reference's operations in the
    reference's order without FMA, so it must be identical; variants that
    fuse multiply-adds differ by rounding (see tolerance()).
    """
    if variant is None:
        variant = adamc.cpu_info()["isa"]
    return variant == "baseline" and platform.machine() in ("x86_64", "AMD64", "i686", "x86")


def tolerance(dtype, steps):
    """(rtol, atol) for comparing a kernel with FMA against the reference.

    Each fused multiply-add changes one rounding (<= 0.5 ulp) per operation;
    an Adam step has 4, and errors in the moments feed later steps, so the
    bound grows linearly with the number of steps: 8 ulp per step, relative,
    plus the same absolute (for values that cancel to near zero).
    """
    ulp = np.finfo(dtype).eps
    tol = 8 * ulp * max(steps, 1)
    return tol, tol


def _bounds(actual, expected, steps, scale=0.0):
    """(rtol, atol) of the tolerance, atol scaled by the largest finite
    |expected| or ``scale`` (the largest magnitude the steps computed: an
    update that cancels most of a parameter leaves a small value whose error
    is ulps of the update), at least 1."""
    rtol, atol = tolerance(actual.dtype, steps)
    big = max(float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)),
              float(scale), 1.0)
    return rtol, atol * big


def assert_matches(actual, expected, steps, what="", scale=0.0):
    """actual (kernel) against expected (reference): bit for bit where exact(),
    else within the stated tolerance.  NaN and +-Inf where expected has them."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    if exact():
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        rtol, atol = _bounds(actual, expected, steps, scale)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def within_tolerance(actual, expected, steps):
    """assert_matches's tolerance test (the non-exact branch), as a boolean."""
    rtol, atol = _bounds(actual, expected, steps)
    with np.errstate(all="ignore"):
        return bool(np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True))


def assert_same_nonfinite(actual, expected, what=""):
    """NaN where the reference has NaN, and the same signed infinities."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg=f"{what}: +Inf positions")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=f"{what}: -Inf positions")


def assert_twins_match(opt, ref, steps, what="", groups=False, moved=None):
    """Optimizer ``opt`` and its twin ``ref`` (the reference optimizer, stepped
    alike): parameters and slots match (assert_matches, NaN and +-Inf in the
    same places; ``moved[i]``: parameter i's largest step, its scale), the
    same state entries and step counts and, with groups=True, equal param
    groups."""
    for i, (a, b) in enumerate(zip(opt._params, ref._params)):
        assert_matches(a, b, steps, f"{what}: params[{i}]", scale=moved[i] if moved else 0.0)
        assert_same_nonfinite(a, b, f"{what}: params[{i}]")
    sd, rsd = opt.state_dict(), ref.state_dict()
    assert sd["state"].keys() == rsd["state"].keys(), what
    for i, e in rsd["state"].items():
        mine = sd["state"][i]
        assert mine.keys() == e.keys(), f"{what}: keys of state[{i}]"
        assert mine["step"] == e["step"], f"{what}: step count of params[{i}]"
        for k in SLOT_NAMES:
            if k in e:
                assert_matches(mine[k], e[k], steps, f"{what}: {k} of params[{i}]")
                assert_same_nonfinite(mine[k], e[k], f"{what}: {k} of params[{i}]")
    if groups:
        assert len(sd["param_groups"]) == len(rsd["param_groups"]), what
        for g, rg in zip(sd["param_groups"], rsd["param_groups"]):
            assert g == rg, what


# ---------------------------------------------------------------- examples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def step_on_threads(opt, grads, threads):
    """``opt.step([g])`` for each g of ``grads`` (one parameter) with adamc's
    thread count set to ``threads``, restored afterwards."""
    adamc.set_num_threads(threads)
    try:
        for g in grads:
            opt.step([g])
    finally:
        adamc.set_num_threads(None)


def load_example(name):
    """Import examples/<name>.py as a module without putting examples/ on
    sys.path; skips the test when examples/ is absent (an installed copy)."""
    if not (EXAMPLES / f"{name}.py").exists():
        pytest.skip("examples/ not found: tests run from outside the source tree")
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
