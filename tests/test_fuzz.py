"""Fuzzing every public entry point with malformed input.

adamc.Adam, adamc.AdamW, opt.step, opt.load_state_dict, opt.add_param_group,
adamc.adam_step and adamc.set_num_threads get wrong types, shapes and dtypes
(int, float16, complex, object, byte-swapped, ...), non-contiguous,
unaligned and read-only arrays, grads aliasing params or state, bad
hyperparameters (huge, NaN, Inf, negative, wrong types), edited param groups,
mutated parameters and broken state_dicts.  The property, per call:

* it raises TypeError or ValueError and nothing else (never a crash), and
  leaves the optimizer's parameters, state and step counts (or the
  functional step's buffers, or the thread setting) exactly as they were;
  the optimizer then still steps like the reference optimizer;
* or it succeeds (some generated inputs are legitimately valid: read-only
  gradients, None gradients, tuples, ...), in which case the reference
  (adamc.reference, the same checks in pure Python) must accept it too and
  the results must match the reference;
* and adamc and the reference agree: the same exception type, or both succeed.

Inputs that found adamc bugs are in the pools (KNOWN_BUG_*, "groups-tuple";
all fixed since) and pinned by regression tests at the end of this file.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap
import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given  # noqa: E402
from hypothesis import event as _event  # noqa: E402
from hypothesis import note as _note  # noqa: E402
from hypothesis.errors import InvalidArgument  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import _hypothesis_profiles  # noqa: E402,F401  (registers and loads the profile)
import adamc  # noqa: E402
from adamc import _spec, reference  # noqa: E402
from conftest import assert_matches  # noqa: E402

ALLOWED = (TypeError, ValueError)
# The option lists come from the spec; the synonyms are fuzzed as options too.
HYPER_KEYS = tuple(o.name for o in _spec.OPTIONS) + tuple(_spec.SYNONYMS)
BOOL_KEYS = tuple(o.name for o in _spec.OPTIONS if o.kind == "bool") + tuple(_spec.SYNONYMS)
CHOICE_KEYS = tuple(o.name for o in _spec.OPTIONS if o.kind == "choice")
STATE_KEYS = _spec.SLOT_NAMES
SWAPPED = ">" if np.little_endian else "<"

# Inputs that found bugs (now fixed; regression tests at the end): fuzzed too.
INCLUDE_KNOWN_BUGS = True
KNOWN_BUG_REALS = [10**400]                     # float(int) -> OverflowError
KNOWN_BUG_STEPS = [2**63, 2**63 - 1, 2**64]      # int64 overflow in load_state_dict / adam_step
KNOWN_BUG_GROUP_EDITS = [("replace", None), ("replace", 5), ("append", {"params": []})]
KNOWN_BUG_PARAM_MUTATIONS = ["dtype-view"]


def known(values):
    return list(values) if INCLUDE_KNOWN_BUGS else []


# ---------------------------------------------------------------- helpers

def order_of(a):
    return "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"


def alloc(shape, dtype, order="C", offset=0, values=None):
    """A writeable view `offset` elements into its own buffer."""
    n = math.prod(shape)
    base = np.zeros(n + offset + 2, dtype=dtype)
    flat = base[offset:offset + n]
    a = flat.reshape(shape) if order == "C" else flat.reshape(shape[::-1]).T
    if values is not None:
        a[...] = values
    return a


def like(p, values, offset=0):
    return alloc(p.shape, p.dtype, order_of(p), offset, values)


def values_for(seed, shape, dtype=np.float64):
    return np.array(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def note(text):
    """hypothesis.note inside a Hypothesis test, nothing outside one (the sweeps)."""
    try:
        _note(text)
    except InvalidArgument:
        pass


def event(text):
    """hypothesis.event (shown by --hypothesis-show-statistics) inside a test only."""
    try:
        _event(text)
    except InvalidArgument:
        pass


def outcome(fn):
    """('ok', result) or ('raised', exception); anything outside ALLOWED is
    returned too, and the caller fails on it with the example attached."""
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the point is to see every type
        return "raised", e


def check_outcomes(mine, theirs, what, record=True):
    """adamc's outcome is allowed and agrees with the reference's."""
    kind, val = mine
    if record:  # the share of accepted inputs, for --hypothesis-show-statistics
        event(f"attack: adamc {'accepted it' if kind == 'ok' else 'raised ' + type(val).__name__}")
    if kind == "raised":
        assert isinstance(val, ALLOWED), (
            f"{what}: adamc raised {type(val).__name__} (not TypeError/ValueError): {val!r}")
        note(f"adamc raised {type(val).__name__}: {val}")
    rkind, rval = theirs
    if kind == "ok":
        assert rkind == "ok", (
            f"{what}: adamc accepted it but the reference raised {type(rval).__name__}: {rval}")
    else:
        assert rkind == "raised", f"{what}: adamc raised {val!r}, the reference accepted it"
        assert type(val) is type(rval), (
            f"{what}: adamc raised {type(val).__name__} ({val}), the reference "
            f"{type(rval).__name__} ({rval})")


def bitwise_equal(a, b, what):
    """The same shape, dtype and bytes (NaN-safe; any dtype)."""
    assert a.shape == b.shape and a.dtype == b.dtype, what
    if a.dtype.kind == "O":
        assert a.tolist() == b.tolist(), what
    else:
        assert a.tobytes(order="A") == b.tobytes(order="A"), what


def snapshot(opt):
    return ([p.copy(order="K") for p in opt._params], opt.state_dict(),
            [{k: copy.copy(v) for k, v in g.items() if k not in ("params",)}
             for g in opt.param_groups])


def assert_unchanged(opt, snap, what):
    params, sd, groups = snap
    for i, (a, b) in enumerate(zip(opt._params, params)):
        bitwise_equal(a, b, f"{what}: params[{i}] changed by a failed call")
    now = opt.state_dict()
    assert now["state"].keys() == sd["state"].keys(), f"{what}: state entries changed"
    for i, e in sd["state"].items():
        assert now["state"][i].keys() == e.keys(), f"{what}: state[{i}] keys changed"
        assert now["state"][i]["step"] == e["step"], f"{what}: step count of params[{i}] changed"
        for k in STATE_KEYS:
            if k in e:
                bitwise_equal(now["state"][i][k], e[k], f"{what}: {k} of params[{i}] changed")
    assert now["param_groups"] == sd["param_groups"], f"{what}: param_groups changed"


def assert_twins_match(opt, ref, steps, what):
    for i, (a, b) in enumerate(zip(opt._params, ref._params)):
        assert_matches(a, b, steps, f"{what}: params[{i}]")
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what}: NaNs of params[{i}]")
    sd, rsd = opt.state_dict(), ref.state_dict()
    assert sd["state"].keys() == rsd["state"].keys(), what
    for i, e in rsd["state"].items():
        assert sd["state"][i]["step"] == e["step"], f"{what}: step count of params[{i}]"
        assert sd["state"][i].keys() == e.keys(), what
        for k in STATE_KEYS:
            if k in e:
                assert_matches(sd["state"][i][k], e[k], steps, f"{what}: {k} of params[{i}]")


# ---------------------------------------------------------------- bad values

class Sched:
    """A learning-rate schedule returning a fixed (possibly bad) value."""

    def __init__(self, value):
        self.value = value

    def __call__(self, t):
        if isinstance(self.value, type) and issubclass(self.value, Exception):
            raise self.value("schedule refused")
        return self.value

    def __repr__(self):
        return f"Sched({self.value!r})"


NAN, INF = float("nan"), float("inf")
# Mostly invalid values for lr / eps / weight_decay; a few valid ones.
BAD_REALS = [-1.0, -1e-300, NAN, INF, -INF, np.float32("nan"), np.float64(-2.0), "0.1", None,
             True, np.bool_(False), 1 + 0j, [0.1], (0.1,), np.array(0.1), np.array([0.1]),
             Decimal("0.1"), b"1"]
VALID_REALS = [1e308, 0, -0.0, Fraction(1, 10), np.float32(0.5), np.int64(0), 5]
REALS = BAD_REALS + VALID_REALS + known(KNOWN_BUG_REALS)
LRS = REALS + [Sched(NAN), Sched(-1.0), Sched("x"), Sched(None), Sched(INF), Sched(1j),
               Sched(ValueError), Sched(TypeError), Sched(0.5)]
BAD_BETAS = [(0.9,), (0.9, 0.99, 0.999), 0.9, "ab", (1.0, 0.9), (0.9, 1.0), (-0.1, 0.9),
             (NAN, 0.9), (0.9, INF), {0.9, 0.99}, np.array([0.9, 0.99]), None, (0.9, "0.99"),
             (0.9, None), (True, 0.9), (1 + 1e-16, 0.5), (0.9, 1 - 1e-17), ((0.9,), 0.99), ()]
VALID_BETAS = [[0.9, 0.99], (0.0, 0.0), (np.float32(0.5), 0.25), (0, 0)]
BETAS = BAD_BETAS + VALID_BETAS
# choice options (eps_mode): every valid choice, and near misses
CHOICES = ["outside", "inside", "hat", "Outside", "", None, 0, b"hat", ["hat"]]
BAD_BOOLS = [0, 1, None, "True", 1.0, [True], np.int8(1)]
VALID_BOOLS = [np.bool_(True), False]
BOOLS = BAD_BOOLS + VALID_BOOLS


def hyper_value(key):
    if key == "lr":
        return st.sampled_from(LRS)
    if key == "betas":
        return st.sampled_from(BETAS)
    if key in BOOL_KEYS:
        return st.sampled_from(BOOLS)
    if key in CHOICE_KEYS:
        return st.sampled_from(CHOICES)
    return st.sampled_from(REALS)


hyper_pairs = st.sampled_from(HYPER_KEYS).flatmap(lambda k: st.tuples(st.just(k), hyper_value(k)))


# ---------------------------------------------------------------- bad arrays

ARRAY_KINDS = [
    "good", "good-offset", "readonly", "other-order", "strided", "unaligned", "subclass",
    "dtype:int8", "dtype:int32", "dtype:int64", "dtype:uint8", "dtype:bool", "dtype:float16",
    "dtype:complex64", "dtype:complex128", "dtype:object", "dtype:longdouble", "dtype:swapped",
    "dtype:other-float", "shape:extra-dim", "shape:drop-dim", "shape:grow", "shape:empty",
    "shape:0d", "shape:transposed", "notarray:list", "notarray:float", "notarray:str",
    "notarray:dict", "notarray:npscalar", "notarray:memoryview",
]


def make_array(kind, shape, dtype, order, seed):
    """An array (or not) of the given kind, meant to stand in for one with
    this shape, dtype and memory order."""
    dtype = np.dtype(dtype)
    vals = values_for(seed, shape)
    if kind == "good":
        return alloc(shape, dtype, order, 0, vals)
    if kind == "good-offset":
        return alloc(shape, dtype, order, 3, vals)
    if kind == "readonly":
        a = alloc(shape, dtype, order, 0, vals)
        a.flags.writeable = False
        return a
    if kind == "other-order":
        return alloc(shape, dtype, "F" if order == "C" else "C", 0, vals)
    if kind == "strided":
        big = np.zeros(tuple(shape[:-1]) + (2 * shape[-1],) if shape else (2,), dtype=dtype)
        a = big[..., ::2] if shape else big[::2].reshape(())
        a[...] = vals
        return a
    if kind == "unaligned":
        n = math.prod(shape)
        buf = bytearray(n * dtype.itemsize + 1)
        a = np.frombuffer(buf, dtype=dtype, count=n, offset=1).reshape(shape)
        return a  # writeable (bytearray) but not item-aligned (unless n == 0)
    if kind == "subclass":
        class Sub(np.ndarray):
            pass
        return alloc(shape, dtype, order, 0, vals).view(Sub)
    if kind.startswith("dtype:"):
        name = kind[6:]
        if name == "swapped":
            dt = dtype.newbyteorder(SWAPPED)
        elif name == "other-float":
            dt = np.dtype(np.float64 if dtype == np.float32 else np.float32)
        else:
            dt = np.dtype(name)
        a = np.zeros(shape, dtype=dt, order=order)
        if dt.kind in "fc":
            a[...] = vals
        return a
    if kind.startswith("shape:"):
        name = kind[6:]
        new = {"extra-dim": tuple(shape) + (1,), "drop-dim": tuple(shape[1:]),
               "grow": tuple(shape[:-1]) + (shape[-1] + 1,) if shape else (1,),
               "empty": (0,), "0d": (), "transposed": tuple(shape[::-1])}[name]
        return alloc(new, dtype, order, 0, values_for(seed, new))
    return {"notarray:list": lambda: vals.tolist(), "notarray:float": lambda: 1.0,
            "notarray:str": lambda: "grad", "notarray:dict": lambda: {},
            "notarray:npscalar": lambda: dtype.type(1.0),
            "notarray:memoryview": lambda: memoryview(alloc(shape, dtype, "C", 0, vals))}[kind]()


# ---------------------------------------------------------------- the victim optimizer

LAYOUT = [((5,), np.float32, "C", 0), ((3, 4), np.float64, "F", 0), ((7,), np.float32, "C", 1),
          ((), np.float64, "C", 0), ((2, 3), np.float32, "F", 3)]
NP = len(LAYOUT)
NAMES = [f"w{i}" for i in range(NP)]


def valid_grads(opt, seed, skip=()):
    out = [None if i in skip else like(p, values_for(seed * 31 + i, p.shape), offset=i % 3)
           for i, p in enumerate(opt._params)]
    return dict(zip(opt._names, out)) if opt._names is not None else out


def make_victim(module, cfg):
    """A small optimizer in two groups, stepped twice (state everywhere)."""
    arrays = [alloc(s, d, o, off, values_for(100 + i, s)) for i, (s, d, o, off) in enumerate(LAYOUT)]
    split = 2
    if cfg["named"]:
        g0 = {NAMES[i]: arrays[i] for i in range(split)}
        g1 = {NAMES[i]: arrays[i] for i in range(split, NP)}
    else:
        g0, g1 = arrays[:split], arrays[split:]
    opt = getattr(module, cfg["cls"])(
        [{"params": g0, "amsgrad": cfg["amsgrad"]}, {"params": g1, "lr": 0.01}], lr=0.003)
    opt.step(valid_grads(opt, 1, skip={3}))
    opt.step(valid_grads(opt, 2))
    return opt


victim_configs = st.fixed_dictionaries({
    "cls": st.sampled_from(["Adam", "AdamW"]),
    "named": st.booleans(),
    "amsgrad": st.booleans(),
})


def after_attack(mine, theirs, opt, ref, snap, what):
    """Common checks once both twins saw the attack (and any edits were undone)."""
    check_outcomes(mine, theirs, what)
    if mine[0] == "raised":
        assert_unchanged(opt, snap, what)
        steps = 2
    else:
        steps = 3
    assert_twins_match(opt, ref, steps, what)
    # and the optimizer still works, exactly like the reference
    step_twins(opt, ref, 99, steps + 1, f"{what}, then a valid step")


def step_twins(opt, ref, seed, steps, what):
    """A step with valid gradients on both twins, which must then match.
    (An accepted lr schedule may return bad values: then the step must fail
    cleanly, the same way in both, and change nothing.)"""
    g = valid_grads(opt, seed)
    snap = snapshot(opt)
    mine = outcome(lambda: opt.step(g))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: ref.step(g))
    check_outcomes(mine, theirs, what, record=False)
    if mine[0] == "raised":
        assert_unchanged(opt, snap, what)
    assert_twins_match(opt, ref, steps, what)


# ---------------------------------------------------------------- opt.step

CONTAINERS = ["None", "int", "str", "ndarray", "dict", "list-for-named", "short", "long",
              "generator", "set", "string-of-right-length", "tuple", "all-None", "empty"]

GRAD_KINDS = ARRAY_KINDS + ["None", "alias:param", "alias:param-view", "alias:other-param",
                            "alias:state", "alias:base-overlap", "alias:max-state"]

def set_in_place(a, **attrs):
    """a.shape = ... / a.dtype = ...: what users can do to a parameter in
    place; NumPy 2.5 deprecates both (AttributeError once removed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, value in attrs.items():
            setattr(a, name, value)


def _numpy_mutates_in_place():
    try:
        set_in_place(np.zeros(2, np.float32), shape=(2, 1), dtype=np.int32)
    except AttributeError:  # pragma: no cover - a NumPy that removed it
        return False
    return True


# In-place reshapes and dtype views only while NumPy still allows them.
PARAM_MUTATIONS = ["readonly"] + (
    ["reshape", "reshape-same-size"] + known(KNOWN_BUG_PARAM_MUTATIONS)
    if _numpy_mutates_in_place() else [])
GROUP_STRUCTURE = (["del-key", "params-appended", "params-popped", "params-replaced", "params-tuple",
                    "params-none", "group-popped", "group-copy", "groups-tuple"]
                   + [f"bug:{i}" for i in range(len(known(KNOWN_BUG_GROUP_EDITS)))])

step_attacks = st.one_of(
    st.tuples(st.just("container"), st.sampled_from(CONTAINERS)),
    st.tuples(st.just("entries"),
              st.lists(st.tuples(st.integers(0, NP - 1), st.sampled_from(GRAD_KINDS)),
                       min_size=1, max_size=3)),
    st.tuples(st.just("group-edit"), st.integers(0, 1), hyper_pairs),
    st.tuples(st.just("group-structure"), st.integers(0, 1), st.sampled_from(GROUP_STRUCTURE)),
    st.tuples(st.just("param-mutation"), st.integers(0, NP - 1), st.sampled_from(PARAM_MUTATIONS)),
)


def make_grad(kind, i, opt, seed):
    p = opt._params[i]
    if kind == "None":
        return None
    if kind == "alias:param":
        return p
    if kind == "alias:param-view":
        return p.reshape(p.shape)  # a new view of the same memory
    if kind == "alias:other-param":
        # another parameter's memory, shaped like p when sizes allow
        for q in opt._params:
            if q is not p and q.size >= p.size and q.dtype == p.dtype:
                flat = q.reshape(-1, order="A")  # a view: q is contiguous
                return flat[:p.size].reshape(p.shape, order=order_of(p))
        return p
    if kind in ("alias:state", "alias:max-state"):
        key = "max_exp_avg_sq" if kind == "alias:max-state" else "exp_avg"
        s = (opt._engine.get_state(i) or {}).get(key)
        return s if s is not None else like(p, 0.0)
    if kind == "alias:base-overlap":
        # the same buffer as p, one element further: overlaps all but one element
        if p.base is None or p.size == 0:
            return p
        base = p.base if p.base.base is None else p.base.base
        start = (p.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // p.itemsize
        flat = base.reshape(-1)[start + 1:start + 1 + p.size]
        if flat.size < p.size:
            return p
        return flat.reshape(p.shape) if order_of(p) == "C" else flat.reshape(p.shape[::-1]).T
    return make_array(kind, p.shape, p.dtype, order_of(p), seed)


def build_step_call(attack, opt, seed):
    """(call, undo) for one attack on `opt`."""
    kind = attack[0]
    names = opt._names
    undo = lambda: None  # noqa: E731

    def wrap(lst):
        return dict(zip(names, lst)) if names is not None else lst

    if kind == "container":
        c = attack[1]
        good = [like(p, values_for(seed + i, p.shape)) for i, p in enumerate(opt._params)]
        grads = {
            "None": None, "int": 3, "str": "grads", "ndarray": np.zeros(NP),
            "dict": {i: g for i, g in enumerate(good)}, "list-for-named": good,
            "short": wrap(good[:-1]) if names is None else dict(zip(names[:-1], good)),
            "long": good + [good[0].copy()] if names is None else {**wrap(good), "extra": good[0]},
            "generator": (g for g in good), "set": {1, 2}, "string-of-right-length": "x" * NP,
            "tuple": tuple(good) if names is None else wrap(good),
            "all-None": wrap([None] * NP), "empty": [] if names is None else {},
        }[c]
        return (lambda: opt.step(grads)), undo
    if kind == "entries":
        grads = [like(p, values_for(seed + i, p.shape)) for i, p in enumerate(opt._params)]
        for j, (i, gk) in enumerate(attack[1]):
            grads[i] = make_grad(gk, i, opt, seed + 1000 + j)
        g = wrap(grads)
        return (lambda: opt.step(g)), undo
    grads = valid_grads(opt, seed)
    if kind == "group-edit":
        gi, (key, value) = attack[1], attack[2]
        group = opt.param_groups[gi]
        missing = key not in group   # a synonym (eps_inside_sqrt) may be absent
        old = group.get(key)
        group[key] = copy.copy(value)

        def undo():
            if missing:
                del group[key]
            else:
                group[key] = old
        return (lambda: opt.step(grads)), undo
    if kind == "group-structure":
        gi, what = attack[1], attack[2]
        groups = opt.param_groups
        saved_list = list(groups)
        group = groups[gi]
        saved_group = dict(group)
        saved_params = list(group["params"])
        if what == "del-key":
            del group["eps"]
        elif what == "params-appended":
            group["params"].append(np.zeros(3))
        elif what == "params-popped":
            group["params"].pop()
        elif what == "params-replaced":
            group["params"][0] = group["params"][0].copy()
        elif what == "params-tuple":
            group["params"] = tuple(group["params"])
        elif what == "params-none":
            group["params"] = None
        elif what == "group-popped":
            groups.pop(gi)
        elif what == "groups-tuple":
            opt.param_groups = tuple(groups)
        elif what == "group-copy":
            groups[gi] = dict(group)  # a new dict with the same params list: fine
        elif what.startswith("bug:"):
            how, val = known(KNOWN_BUG_GROUP_EDITS)[int(what[4:])]
            if how == "replace":
                groups[gi] = val
            else:
                groups.append(copy.copy(val))

        def undo():
            saved_group_params = saved_params
            group.clear()
            group.update(saved_group)
            group["params"][:] = saved_group_params
            opt.param_groups = groups
            groups[:] = saved_list
        return (lambda: opt.step(grads)), undo
    if kind == "param-mutation":
        i, how = attack[1], attack[2]
        p = opt._params[i]
        shape, dtype = p.shape, p.dtype
        if how == "readonly":
            p.flags.writeable = False
        elif how == "reshape":
            set_in_place(p, shape=shape + (1,))
        elif how == "reshape-same-size":
            set_in_place(p, shape=(1,) + shape)  # same elements, one more axis
        elif how == "dtype-view":
            set_in_place(p, dtype=np.int32 if dtype == np.float32 else np.int64)

        def undo():
            set_in_place(p, dtype=dtype, shape=shape)
            p.flags.writeable = True
        if how != "readonly":  # a reshaped parameter needs gradients of the new shape
            gl = list(grads.values()) if names is not None else list(grads)
            if gl[i] is not None:
                gl[i] = like(p, values_for(seed, p.shape))
            grads = wrap(gl)
        return (lambda: opt.step(grads)), undo
    raise AssertionError(attack)


@given(cfg=victim_configs, attack=step_attacks, seed=st.integers(0, 2**16))
def test_fuzz_step(cfg, attack, seed):
    opt, ref = make_victim(adamc, cfg), make_victim(reference, cfg)
    snap = snapshot(opt)
    call, undo = build_step_call(attack, opt, seed)
    mine = outcome(call)
    undo()
    rcall, rundo = build_step_call(attack, ref, seed)
    with np.errstate(all="ignore"):
        theirs = outcome(rcall)
    rundo()
    after_attack(mine, theirs, opt, ref, snap, f"step {attack}")


# ---------------------------------------------------------------- load_state_dict

SD_EDITS = [
    "not-a-dict:list", "not-a-dict:None", "not-a-dict:str", "del:state", "del:param_groups",
    "state:list", "state:None", "state:tuple", "groups:dict", "groups:None", "groups:int",
    "groups:tuple", "groups:str", "group:append", "group:pop", "group:None", "group:list",
    "group:del-params", "group:params-int", "group:params-None", "group:params-str",
    "group:params-short", "group:params-long", "group:params-dup", "group:params-unhashable",
    "group:params-shift", "group:del-hyper", "group:hyper-bad", "group:param_names",
    "group:decoupled-False", "group:extra-key",
    "state:pop", "state:unknown-id", "state:str-id", "state:entry-None", "state:entry-list",
    "state:del-key", "state:extra-key", "state:step-bad", "state:array-bad", "state:del-max",
]
STEP_VALUES = [1.5, "3", None, True, -1, np.int64(-3), [2], np.float64(2.0), 2**62,
               np.int64(5), np.uint8(7), 0] + known(KNOWN_BUG_STEPS)

sd_edits = st.lists(
    st.tuples(st.sampled_from(SD_EDITS), st.integers(0, NP - 1), st.integers(0, 1),
              st.sampled_from(ARRAY_KINDS), st.sampled_from(STATE_KEYS),
              st.sampled_from(STEP_VALUES), hyper_pairs),
    min_size=1, max_size=3)


def corrupt(sd, edits, seed):
    """Apply the edits to a deep copy of sd; returns the corrupted object."""
    sd = copy.deepcopy(sd)
    for what, i, gi, akind, key, step, (hkey, hval) in edits:
        if not isinstance(sd, dict):
            break
        groups, state = sd.get("param_groups"), sd.get("state")
        if what.startswith("not-a-dict:"):
            sd = {"list": [sd], "None": None, "str": "state"}[what.split(":")[1]]
        elif what.startswith("del:"):
            sd.pop(what[4:], None)
        elif what in ("state:list", "state:None", "state:tuple"):
            entries = state if isinstance(state, dict) else {}
            sd["state"] = {"state:list": list(entries.values()), "state:None": None,
                           "state:tuple": tuple(entries.items())}[what]
        elif what.startswith("groups:"):
            sd["param_groups"] = {"dict": {0: groups}, "None": None, "int": 2,
                                  "tuple": tuple(groups) if isinstance(groups, (list, tuple)) else (),
                                  "str": "groups"}[what[7:]]
        elif what.startswith("group:") and isinstance(groups, list) and groups:
            g = groups[gi % len(groups)]
            op = what[6:]
            if op == "append":
                groups.append(copy.deepcopy(g))
            elif op == "pop":
                groups.pop()
            elif op == "None":
                groups[gi % len(groups)] = None
            elif op == "list":
                groups[gi % len(groups)] = list(g.items()) if isinstance(g, dict) else []
            elif isinstance(g, dict):
                ps = g.get("params")
                if op == "del-params":
                    g.pop("params", None)
                elif op == "params-int":
                    g["params"] = 3
                elif op == "params-None":
                    g["params"] = None
                elif op == "params-str":
                    g["params"] = "ab"
                elif op == "params-short" and isinstance(ps, list):
                    g["params"] = ps[:-1]
                elif op == "params-long" and isinstance(ps, list) and all(isinstance(x, int) for x in ps):
                    g["params"] = ps + [max(ps) + 10]
                elif op == "params-dup" and isinstance(ps, list) and ps:
                    g["params"] = [ps[0]] * len(ps)
                elif op == "params-unhashable" and isinstance(ps, list):
                    g["params"] = [[x] for x in ps]
                elif op == "params-shift" and isinstance(ps, list) and all(isinstance(x, int) for x in ps):
                    g["params"] = [x + 100 for x in ps]
                elif op == "del-hyper":
                    g.pop(hkey, None)  # allowed: the optimizer's own value is kept
                elif op == "hyper-bad":
                    g[hkey] = copy.copy(hval)
                elif op == "param_names":
                    g["param_names"] = ["zz"] * len(ps) if isinstance(ps, list) else ["zz"]
                elif op == "decoupled-False":
                    g["decoupled_weight_decay"] = False
                elif op == "extra-key":
                    g["momentum"] = 0.9  # unknown group keys are ignored, as torch does
        elif what.startswith("state:") and isinstance(state, dict):
            op = what[6:]
            ids = sorted(k for k in state if isinstance(k, int))
            sid = ids[i % len(ids)] if ids else 0
            e = state.get(sid)
            if op == "pop":
                state.pop(sid, None)
            elif op == "unknown-id":
                state[1000 + i] = copy.deepcopy(e) if e is not None else {}
            elif op == "str-id" and e is not None:
                state[str(sid)] = state.pop(sid)
            elif op == "entry-None":
                state[sid] = None
            elif op == "entry-list":
                state[sid] = list(e.items()) if isinstance(e, dict) else []
            elif isinstance(e, dict):
                if op == "del-key":
                    e.pop(key if key != "max_exp_avg_sq" else "step", None)
                elif op == "extra-key":
                    e["momentum_buffer"] = np.zeros(1)
                elif op == "step-bad":
                    e["step"] = step
                elif op == "del-max":
                    e.pop("max_exp_avg_sq", None)  # allowed
                elif op == "array-bad":
                    ref_arr = e.get("exp_avg")
                    if isinstance(ref_arr, np.ndarray):
                        e[key] = make_array(akind, ref_arr.shape, ref_arr.dtype, order_of(ref_arr), seed)
    return sd


@given(cfg=victim_configs, edits=sd_edits, seed=st.integers(0, 2**16),
       source=st.sampled_from(["own", "fresh", "other-config"]))
def test_fuzz_load_state_dict(cfg, edits, seed, source):
    opt, ref = make_victim(adamc, cfg), make_victim(reference, cfg)
    if source == "own":
        good = opt.state_dict()
    elif source == "fresh":  # a state_dict with no state yet
        good = getattr(adamc, cfg["cls"])(
            [{"params": [like(p, 0.0) for p in opt._params[:2]]},
             {"params": [like(p, 0.0) for p in opt._params[2:]]}]).state_dict()
    else:  # from an optimizer of another class / layout
        other = dict(cfg, cls="AdamW" if cfg["cls"] == "Adam" else "Adam", named=not cfg["named"])
        good = make_victim(adamc, other).state_dict()
    bad = corrupt(good, edits, seed)
    note(f"state_dict: {bad!r}")
    snap = snapshot(opt)
    mine = outcome(lambda: opt.load_state_dict(bad))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: ref.load_state_dict(copy.deepcopy(bad)))
    after_attack(mine, theirs, opt, ref, snap, f"load_state_dict {edits} from {source}")


# ---------------------------------------------------------------- add_param_group

group_attacks = st.tuples(
    st.sampled_from(["not-dict:list", "not-dict:None", "not-dict:array", "no-params",
                     "params:array", "params:int", "params:empty", "params:generator",
                     "params:existing", "params:existing-view", "params:overlap",
                     "params:dup-new", "params:mapping-mismatch", "params:dup-name",
                     "params:fresh", "params:fresh-bad-array", "params:mixed-dicts",
                     "params:bad-hyper", "params:param_names-key"]),
    st.sampled_from(ARRAY_KINDS),
    st.integers(0, NP - 1),
    hyper_pairs,
)


def build_group(attack, opt, seed):
    what, akind, i, (hkey, hval) = attack
    named = opt._names is not None
    p = opt._params[i]
    fresh = [alloc((4,), np.float32, "C", 1, values_for(seed, (4,))),
             alloc((2, 2), np.float64, "F", 0, values_for(seed + 1, (2, 2)))]

    def ps(arrays, names=None):
        if named:
            return dict(zip(names or [f"n{k}" for k in range(len(arrays))], arrays))
        return list(arrays)

    if what.startswith("not-dict:"):
        return {"list": [fresh[0]], "None": None, "array": fresh[0]}[what[9:]]
    if what == "no-params":
        return {"lr": 0.1}
    if what == "params:array":
        return {"params": fresh[0]}
    if what == "params:int":
        return {"params": 7}
    if what == "params:empty":
        return {"params": {} if named else []}
    if what == "params:generator":
        return {"params": (a for a in fresh)} if not named else {"params": ps(fresh)}
    if what == "params:existing":
        return {"params": ps([fresh[0], p])}
    if what == "params:existing-view":
        return {"params": ps([p.reshape(p.shape)])}
    if what == "params:overlap":
        base = np.zeros(10)
        return {"params": ps([base[:6], base[4:]])}
    if what == "params:dup-new":
        return {"params": ps([fresh[0], fresh[0]], ["a", "b"])}
    if what == "params:mapping-mismatch":
        return {"params": {"x": fresh[0]} if not named else [fresh[0]]}
    if what == "params:dup-name":
        return {"params": ps([fresh[0]], [NAMES[i]])}
    if what == "params:fresh":
        return {"params": ps(fresh)}
    if what == "params:fresh-bad-array":
        return {"params": ps([fresh[0], make_array(akind, (3,), np.float32, "C", seed)])}
    if what == "params:mixed-dicts":
        return {"params": [fresh[0], {"params": [fresh[1]]}]}
    if what == "params:bad-hyper":
        return {"params": ps(fresh), hkey: copy.copy(hval)}
    if what == "params:param_names-key":
        return {"params": ps(fresh), "param_names": ["q", "r"]}
    raise AssertionError(what)


@given(cfg=victim_configs, attack=group_attacks, seed=st.integers(0, 2**16))
def test_fuzz_add_param_group(cfg, attack, seed):
    opt, ref = make_victim(adamc, cfg), make_victim(reference, cfg)
    snap = snapshot(opt)
    n = len(opt._params)
    group = build_group(attack, opt, seed)
    mine = outcome(lambda: opt.add_param_group(group))
    rgroup = build_group(attack, ref, seed)
    theirs = outcome(lambda: ref.add_param_group(rgroup))
    check_outcomes(mine, theirs, f"add_param_group {attack}")
    if mine[0] == "raised":
        assert len(opt._params) == n and len(opt.param_groups) == 2
        assert_unchanged(opt, snap, f"add_param_group {attack}")
    # either way: still steps like the reference (new groups included)
    assert len(opt._params) == len(ref._params)
    step_twins(opt, ref, 5, 3, f"add_param_group {attack}, then a step")


# ---------------------------------------------------------------- adamc.adam_step

FUNC_BUFFERS = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
ALIASES = [("grad", "param"), ("exp_avg", "exp_avg_sq"), ("max_exp_avg_sq", "exp_avg"),
           ("grad", "exp_avg"), ("grad", "max_exp_avg_sq"), ("exp_avg_sq", "param"),
           ("param", "max_exp_avg_sq")]
FUNC_SCALARS = {
    "step": [0, -1, 1.5, True, "1", None, np.int64(3), 2**62, np.float64(2.0), 10**30 + 0j]
    + known(KNOWN_BUG_STEPS),
    "lr": REALS, "beta1": [v for b in BAD_BETAS[:6] for v in (b,)] + REALS,
    "beta2": [1.0, 1.5, -0.0, 0.999999999, NAN] + REALS, "eps": REALS, "weight_decay": REALS,
    "decoupled_weight_decay": BOOLS, "amsgrad": BOOLS, "maximize": BOOLS,
    "bias_correction": BOOLS, "eps_inside_sqrt": BOOLS, "eps_mode": CHOICES,
}

func_attacks = st.tuples(
    st.lists(st.tuples(st.sampled_from(FUNC_BUFFERS), st.sampled_from(ARRAY_KINDS + ["None"])),
             max_size=2),
    st.lists(st.sampled_from(ALIASES), max_size=1),
    st.lists(st.sampled_from(sorted(FUNC_SCALARS)).flatmap(
        lambda k: st.tuples(st.just(k), st.sampled_from(FUNC_SCALARS[k]))), max_size=2),
    st.sampled_from([((6,), np.float32, "C", 1), ((2, 3), np.float64, "F", 0), ((), np.float32, "C", 0)]),
    st.booleans(),
)


def build_functional(attack, seed):
    bad_bufs, aliases, scalars, (shape, dtype, order, off), amsgrad = attack
    bufs = {name: alloc(shape, dtype, order, off if name == "param" else 0,
                        values_for(seed + k, shape) if name in ("param", "grad") else 0.0)
            for k, name in enumerate(FUNC_BUFFERS)}
    for name, kind in bad_bufs:
        bufs[name] = None if kind == "None" else make_array(kind, shape, dtype, order, seed)
    for a, b in aliases:
        bufs[a] = bufs[b]
    kw = {"step": 3, "lr": 0.01, "amsgrad": amsgrad}
    kw.update({k: copy.copy(v) for k, v in scalars})
    return bufs, kw


def call_functional(module, bufs, kw):
    return module.adam_step(bufs["param"], bufs["grad"], bufs["exp_avg"], bufs["exp_avg_sq"],
                            max_exp_avg_sq=bufs["max_exp_avg_sq"], **kw)


def copies(bufs):
    return [b.copy(order="K") if isinstance(b, np.ndarray) else b for b in bufs.values()]


@given(attack=func_attacks, seed=st.integers(0, 2**16))
def test_fuzz_adam_step(attack, seed):
    bufs, kw = build_functional(attack, seed)
    before = copies(bufs)
    rbufs, rkw = build_functional(attack, seed)
    mine = outcome(lambda: call_functional(adamc, bufs, kw))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: call_functional(reference, rbufs, rkw))
    check_outcomes(mine, theirs, f"adam_step {attack}")
    if mine[0] == "raised":
        for name, a, b in zip(FUNC_BUFFERS, bufs.values(), before):
            if isinstance(b, np.ndarray):
                bitwise_equal(a, b, f"adam_step {attack}: {name} changed by a failed call")
    else:
        for name in FUNC_BUFFERS:
            a, b = bufs[name], rbufs[name]
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype.itemsize in (4, 8):
                assert_matches(np.asarray(a), np.asarray(b), 1, f"adam_step {attack}: {name}")


# ---------------------------------------------------------------- constructors

CTOR_PARAMS = ["non-iterable:int", "non-iterable:None", "non-iterable:float", "ndarray", "string",
               "empty-list", "empty-dict", "bad-array", "mixed", "group-no-params",
               "group-params-array", "group-params-empty", "group-mapping-partial", "duplicate",
               "overlap", "adjacent", "mapping", "mapping-bad-array", "generator",
               "dup-names", "good-list", "good-groups", "bytes", "group-not-dict"]

ctor_attacks = st.tuples(
    st.sampled_from(["Adam", "AdamW"]),
    st.sampled_from(CTOR_PARAMS),
    st.sampled_from(ARRAY_KINDS),
    st.lists(hyper_pairs, max_size=2),
    st.sampled_from([None, "unknown-kw", "decoupled-kw", "group-hyper"]),
)


def build_ctor(attack, seed):
    cls, pkind, akind, hypers, extra = attack
    a = alloc((4,), np.float32, "C", 1, values_for(seed, (4,)))
    b = alloc((2, 3), np.float64, "F", 0, values_for(seed + 1, (2, 3)))
    bad = make_array(akind, (3,), np.float32, "C", seed)
    base = np.zeros(12)
    params = {
        "non-iterable:int": lambda: 3, "non-iterable:None": lambda: None,
        "non-iterable:float": lambda: 1.5, "ndarray": lambda: a, "string": lambda: "ab",
        "bytes": lambda: b"ab", "empty-list": lambda: [], "empty-dict": lambda: {},
        "bad-array": lambda: [a, bad], "mixed": lambda: [a, {"params": [b]}],
        "group-no-params": lambda: [{"lr": 0.1}], "group-params-array": lambda: [{"params": a}],
        "group-params-empty": lambda: [{"params": [a]}, {"params": []}],
        "group-mapping-partial": lambda: [{"params": {"a": a}}, {"params": [b]}],
        "duplicate": lambda: [a, b, a], "overlap": lambda: [base[:7], base[5:]],
        "adjacent": lambda: [base[:6], base[6:]], "mapping": lambda: {"a": a, "b": b},
        "mapping-bad-array": lambda: {"a": a, "bad": bad}, "generator": lambda: (x for x in [a, b]),
        "dup-names": lambda: [{"params": {"a": a}}, {"params": {"a": b}}],
        "good-list": lambda: [a, b], "good-groups": lambda: [{"params": [a]}, {"params": [b], "lr": 0.5}],
        "group-not-dict": lambda: [{"params": [a]}, [b]],
    }[pkind]()
    kw = {k: copy.copy(v) for k, v in hypers}
    if extra == "unknown-kw":
        kw["momentum"] = 0.9
    elif extra == "decoupled-kw":
        kw["decoupled_weight_decay"] = True
    elif extra == "group-hyper" and isinstance(params, list) and params and isinstance(params[0], dict):
        params = [dict(params[0], **kw)] + params[1:]
        kw = {}
    arrays = [x for x in (a, b, bad, base) if isinstance(x, np.ndarray)]
    return cls, params, kw, arrays


@given(attack=ctor_attacks, seed=st.integers(0, 2**16))
def test_fuzz_constructors(attack, seed):
    cls, params, kw, arrays = build_ctor(attack, seed)
    before = [x.copy(order="K") for x in arrays]
    mine = outcome(lambda: getattr(adamc, cls)(params, **kw))
    rcls, rparams, rkw, rarrays = build_ctor(attack, seed)
    theirs = outcome(lambda: getattr(reference, rcls)(rparams, **rkw))
    check_outcomes(mine, theirs, f"{cls}{attack[1:]}")
    for x, y in zip(arrays, before):
        if x.dtype.kind != "O":
            assert x.tobytes(order="A") == y.tobytes(order="A"), (
                f"{cls}{attack[1:]}: an array was changed by the constructor")
    if mine[0] == "ok":
        opt, ref = mine[1], theirs[1]
        for k in range(2):
            step_twins(opt, ref, seed + k, k + 1, f"{cls}{attack[1:]}, then step {k + 1}")


# ---------------------------------------------------------------- every pool value, every entry point
#
# Hypothesis explores combinations; these two sweeps make sure that every
# single value in the pools above reaches every entry point on every run.

def _sweep(label, make_twins, attack):
    """attack(obj) on adamc's and the reference's twin; the usual checks."""
    opt, ref = make_twins(adamc), make_twins(reference)
    snap = snapshot(opt)
    mine = outcome(lambda: attack(opt))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: attack(ref))
    after_attack(mine, theirs, opt, ref, snap, label)


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_every_hyperparameter_value_everywhere(cls):
    cfg = {"cls": cls, "named": False, "amsgrad": True}
    # AdamW differs from Adam only in its forced decoupled_weight_decay
    for key in HYPER_KEYS if cls == "Adam" else ["decoupled_weight_decay"]:
        values = (LRS if key == "lr" else BETAS if key == "betas"
                  else BOOLS if key in BOOL_KEYS else CHOICES if key in CHOICE_KEYS
                  else REALS)
        for value in values:
            label = f"{cls} {key}={value!r}"
            # constructor (keyword and param-group forms)
            for form in ("kw", "group"):
                def build(module):
                    a = alloc((3,), np.float32, "C", 1, values_for(1, (3,)))
                    if key == "decoupled_weight_decay" and cls == "AdamW":
                        return getattr(module, cls)([{"params": [a], key: copy.copy(value)}])
                    if form == "kw":
                        return getattr(module, cls)([a], **{key: copy.copy(value)})
                    return getattr(module, cls)([{"params": [a], key: copy.copy(value)}])
                mine, theirs = outcome(lambda: build(adamc)), outcome(lambda: build(reference))
                check_outcomes(mine, theirs, f"{label} ({form})")
            # param-group edit, then step
            def edit_and_step(o, key=key, value=value):
                g = o.param_groups[1]
                had, old = key in g, g.get(key)  # a synonym is not a group key
                g[key] = copy.copy(value)
                try:
                    o.step(valid_grads(o, 3))
                finally:
                    if had:
                        g[key] = old
                    else:
                        del g[key]
            _sweep(f"{label} (edit, step)", lambda m: make_victim(m, cfg), edit_and_step)
            # load_state_dict
            def load(o, key=key, value=value):
                sd = o.state_dict()
                sd["param_groups"][0][key] = copy.copy(value)
                o.load_state_dict(sd)
            _sweep(f"{label} (load_state_dict)", lambda m: make_victim(m, cfg), load)
            # add_param_group
            def add(o, key=key, value=value):
                o.add_param_group({"params": [alloc((2,), np.float64, "C", 0, 1.0)],
                                   key: copy.copy(value)})
            _sweep(f"{label} (add_param_group)", lambda m: make_victim(m, cfg), add)
    # adam_step's scalars
    for key, values in FUNC_SCALARS.items() if cls == "Adam" else ():
        for value in values:
            _functional_twins(([], [], [(key, value)], ((5,), np.float32, "C", 1), True),
                              f"adam_step {key}={value!r}")


def _functional_twins(attack, label):
    """One adam_step attack on adamc and on the reference: same outcome, and
    where adamc raised, none of its array buffers changed."""
    bufs, kw = build_functional(attack, 0)
    rbufs, rkw = build_functional(attack, 0)
    before = copies(bufs)
    mine = outcome(lambda: call_functional(adamc, bufs, kw))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: call_functional(reference, rbufs, rkw))
    check_outcomes(mine, theirs, label)
    if mine[0] == "raised":
        for a, b in zip(bufs.values(), before):
            if isinstance(b, np.ndarray):  # a non-array "buffer" is the attack itself
                bitwise_equal(a, b, f"{label} changed a buffer")


@pytest.mark.parametrize("named", [False, True])
def test_every_array_kind_everywhere(named):
    cfg = {"cls": "Adam", "named": named, "amsgrad": True}
    for kind in GRAD_KINDS:
        for i in range(NP):
            # as a gradient
            _sweep(f"grads[{i}] {kind}", lambda m: make_victim(m, cfg),
                   lambda o, i=i, kind=kind: _entries(o, i, kind))
        if kind in GRAD_KINDS[len(ARRAY_KINDS):]:
            continue  # aliases only make sense for gradients
        # as a parameter, in the constructor and in add_param_group
        for shape, dtype, order in [((4,), np.float32, "C"), ((2, 3), np.float64, "F"), ((), np.float32, "C")]:
            def ctor(module, kind=kind, shape=shape, dtype=dtype, order=order):
                bad = make_array(kind, shape, dtype, order, 3)
                other = alloc((3,), np.float32, "C", 0, 1.0)
                return module.Adam({"a": other, "b": bad} if named else [other, bad])
            mine, theirs = outcome(lambda: ctor(adamc)), outcome(lambda: ctor(reference))
            check_outcomes(mine, theirs, f"Adam(params with {kind} {shape} {order})")

            def add(o, kind=kind, shape=shape, dtype=dtype, order=order):
                bad = make_array(kind, shape, dtype, order, 3)
                o.add_param_group({"params": {"new": bad} if named else [bad]})
            _sweep(f"add_param_group {kind} {shape}", lambda m: make_victim(m, cfg), add)
        if named:
            continue  # the rest does not depend on how parameters are named
        # as a state_dict buffer
        for key in STATE_KEYS:
            def load(o, kind=kind, key=key):
                sd = o.state_dict()
                e = sd["state"][1]
                e[key] = make_array(kind, e["exp_avg"].shape, e["exp_avg"].dtype,
                                    order_of(e["exp_avg"]), 3)
                o.load_state_dict(sd)
            _sweep(f"state_dict[1][{key}] {kind}", lambda m: make_victim(m, cfg), load)
        # as each buffer of adam_step
        for name in FUNC_BUFFERS:
            _functional_twins(([(name, kind)], [], [], ((2, 3), np.float64, "F", 1), True),
                              f"adam_step {name}={kind}")


@pytest.mark.parametrize("named", [False, True])
def test_every_step_attack_kind(named):
    """Every grads container, param-group structure edit and parameter mutation."""
    cfg = {"cls": "Adam", "named": named, "amsgrad": True}
    attacks = [("container", c) for c in CONTAINERS]
    attacks += [("group-structure", gi, what) for gi in (0, 1) for what in GROUP_STRUCTURE]
    attacks += [("param-mutation", i, how) for i in range(NP) for how in PARAM_MUTATIONS]
    for attack in attacks:
        def run(o, attack=attack):
            call, undo = build_step_call(attack, o, 11)
            try:
                call()
            finally:
                undo()
        _sweep(f"step {attack}", lambda m: make_victim(m, cfg), run)


def _entries(o, i, kind):
    call, _ = build_step_call(("entries", [(i, kind)]), o, 7)
    return call()


# ---------------------------------------------------------------- set_num_threads

THREAD_VALUES = [0, -1, 65537, 2**70, -(2**70), 1.5, 2.0, "2", True, False, np.int64(2),
                 [2], (2,), b"2", 1j, None, 1, 2, 3, 4, 65536]


@given(value=st.sampled_from(THREAD_VALUES), prior=st.sampled_from([None, 1, 3]))
def test_fuzz_set_num_threads(value, prior):
    try:
        adamc.set_num_threads(prior)
        before = (adamc.get_num_threads(), adamc.cpu_info()["user_num_threads"])
        kind, e = outcome(lambda: adamc.set_num_threads(value))
        if kind == "raised":
            assert isinstance(e, ALLOWED), f"set_num_threads({value!r}) raised {type(e).__name__}: {e}"
            assert (adamc.get_num_threads(), adamc.cpu_info()["user_num_threads"]) == before
        else:
            expected = value if value is not None else None
            assert adamc.cpu_info()["user_num_threads"] == expected
            # and a parallel-sized step still works and equals the reference
            p = np.linspace(-1, 1, 40000)
            opt, ref = adamc.Adam([p]), reference.Adam([p.copy()])
            g = np.cos(np.arange(40000.0))
            opt.step([g])
            ref.step([g])
            assert_matches(opt._params[0], ref._params[0], 1)
    finally:
        adamc.set_num_threads(None)


# ---------------------------------------------------------------- regressions: bugs the fuzzer found

def run_isolated(code):
    """Run code in a fresh interpreter (a bug may crash it); returns (rc, output)."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


# was:  BUG: load_state_dict with a step >= 2**63 raises OverflowError after replacing  earlier entries' buffers without rebuilding the compiled engine; the next step  writes to freed memory (stale state or a segfault)
def test_regression_load_state_dict_huge_step():
    rc, out = run_isolated("""
        import numpy as np, adamc
        ps = [np.ones(1000), np.ones(4)]
        opt = adamc.Adam(ps, lr=0.1)
        opt.step([np.ones(1000), np.ones(4)])
        before = opt.state_dict()
        bad = opt.state_dict()
        bad["state"][0]["exp_avg"][:] = 123.0
        bad["state"][1]["step"] = 2**63
        try:
            opt.load_state_dict(bad)
        except (TypeError, ValueError):
            pass
        now = opt.state_dict()
        assert np.array_equal(now["state"][0]["exp_avg"], before["state"][0]["exp_avg"]), "state changed"
        opt.step([np.ones(1000), np.ones(4)])
        ref = adamc.reference.Adam([np.ones(1000), np.ones(4)], lr=0.1)
        ref.step([np.ones(1000), np.ones(4)]); ref.step([np.ones(1000), np.ones(4)])
        assert np.allclose(opt.state_dict()["state"][0]["exp_avg"], ref.state_dict()["state"][0]["exp_avg"])
        print("OK")
    """)
    assert rc == 0 and "OK" in out, out


# was:  BUG: a state_dict step of 2**63 - 1 is accepted; the compiled step's t = step + 1  overflows int64 (parameters become NaN, the count wraps negative)
def test_regression_step_count_overflow():
    p = np.ones(3)
    opt = adamc.Adam([p])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = 2**63 - 1
    try:
        opt.load_state_dict(sd)
    except ALLOWED:
        return  # rejecting it is a fix
    try:
        opt.step([np.ones(3)])
    except ALLOWED:
        return
    assert np.isfinite(p).all(), p
    assert opt.state_dict()["state"][0]["step"] > 0


# was:  BUG: Python ints too large for a float (lr=10**400, also eps, weight_decay, betas)  raise OverflowError instead of ValueError
@pytest.mark.parametrize("call", [
    lambda: adamc.Adam([np.zeros(2)], lr=10**400),
    lambda: adamc.Adam([np.zeros(2)], eps=10**400),
    lambda: adamc.Adam([np.zeros(2)], betas=(10**400, 0.9)),
    lambda: adamc.adam_step(np.zeros(2), np.ones(2), np.zeros(2), np.zeros(2), step=1,
                            weight_decay=10**400),
], ids=["Adam-lr", "Adam-eps", "Adam-betas", "adam_step-wd"])
def test_regression_huge_int_hyperparameter(call):
    with pytest.raises(ALLOWED):
        call()


# was:  BUG: adam_step(step=2**63) raises OverflowError (from the int64 conversion)  instead of ValueError
def test_regression_adam_step_huge_step():
    p = np.ones(2)
    with pytest.raises(ALLOWED):
        adamc.adam_step(p, np.ones(2), np.zeros(2), np.zeros(2), step=2**63)


# was:  BUG: a parameter whose dtype was changed in place (p.dtype = np.int32) since  construction is stepped as float by the compiled step; the reference raises TypeError
def test_regression_param_dtype_changed_in_place():
    p = np.ones(4, dtype=np.float32)
    opt = adamc.Adam([p])
    opt.step([np.ones(4, np.float32)])
    if not _numpy_mutates_in_place():  # pragma: no cover
        pytest.skip("this NumPy no longer changes an array's dtype in place")
    set_in_place(p, dtype=np.int32)
    before = p.copy()
    with pytest.raises(TypeError):
        opt.step([np.ones(4, np.float32)])
    np.testing.assert_array_equal(p, before)


# was:  BUG: a param group replaced by a non-dict (opt.param_groups[0] = None) makes step  raise AttributeError (adamc and the reference)
def test_regression_param_group_not_a_dict():
    opt = adamc.Adam([np.ones(3)])
    opt.param_groups[0] = None
    with pytest.raises(ALLOWED):
        opt.step([np.ones(3)])


# was:  BUG: a group appended directly to param_groups with no parameters is ignored by  the compiled step (the reference raises ValueError for its missing  hyperparameters), and state_dict() then raises KeyError
def test_regression_appended_empty_group():
    opt = adamc.Adam([np.ones(3)])
    opt.param_groups.append({"params": []})
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step([np.ones(3)])
    with pytest.raises(ValueError, match="add_param_group"):
        opt.state_dict()  # a clear error, not a KeyError
    opt.param_groups.pop()
    opt.step([np.ones(3)])


# was:  opt.param_groups replaced by a tuple: the compiled step raised Cython's
#       TypeError('Expected list, got tuple'), the reference a ValueError
def test_regression_param_groups_replaced_by_tuple():
    outcomes = []
    for module in (adamc, reference):
        opt = module.Adam([np.ones(3)])
        opt.param_groups = tuple(opt.param_groups)
        outcomes.append(outcome(lambda: opt.step([np.ones(3)])))
    check_outcomes(outcomes[0], outcomes[1], "param_groups = tuple(...)")
