"""The fuzzers' pools and builders, shared by the test_fuzz_*.py files.

Every public entry point (adamc.Adam, adamc.AdamW, opt.step,
opt.load_state_dict, opt.add_param_group, adamc.adam_step and
adamc.set_num_threads) gets wrong types, shapes and dtypes (int, float16,
complex, object, byte-swapped, ...), non-contiguous, unaligned and read-only
arrays, grads aliasing params or state, bad hyperparameters (huge, NaN, Inf,
negative, wrong types), edited param groups, mutated parameters and broken
state_dicts.  The property, per call:

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
all fixed since) and pinned by test_fuzz_regressions.py.  The option and
slot names come from adamc._spec (through _toolkit), the synonyms fuzzed as
options too.
"""

from __future__ import annotations

import copy
import math
import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import event as _event
from hypothesis import note as _note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import _hypothesis_profiles  # noqa: F401  (registers and loads the profile)
import adamc
from adamc import _spec, reference

from _toolkit import (BETA_NAMES, FUNC_BUFFERS, FUNCTIONAL_NAMES, FUNCTIONAL_OPTION,
                      HYPER_KEYS, SYNONYM_KEYS, alloc, alloc_like, assert_identical,
                      assert_twins_match, assert_unchanged, buffer_of, order_of, snapshot,
                      state_of)

ALLOWED = (TypeError, ValueError)
#: Every group option and every synonym.
FUZZED_KEYS = HYPER_KEYS + SYNONYM_KEYS
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


OPTBOOLS = [None, True, False, 0, 1, "True", np.bool_(True)]
SEEDS = [None, 0, 1, 2**64 - 1, 2**64, -1, 1.5, "1", True, np.int64(5)]
COUNTS = [0, 1, 4096, 2**62 - 1, 2**62, -1, 1.5, "1", True, np.int64(5), None]


def hyper_pool(key):
    """The values fuzzed for a group option or synonym, by its kind in the spec."""
    if key in SYNONYM_KEYS:
        return BOOLS
    o = _spec.OPTION[key]
    if o.kind == "choice":  # every valid choice, and near misses
        return list(o.choices) + [c for c in CHOICES if c not in o.choices] + ["float8"]
    return {"lr": LRS, "betas": BETAS, "bool": BOOLS, "real": REALS, "optbool": OPTBOOLS,
            "seed": SEEDS, "count": COUNTS}[o.kind]


def hyper_value(key):
    return st.sampled_from(hyper_pool(key))


hyper_pairs = st.sampled_from(FUZZED_KEYS).flatmap(lambda k: st.tuples(st.just(k), hyper_value(k)))


# ---------------------------------------------------------------- bad arrays

ARRAY_KINDS = [
    "good", "good-offset", "readonly", "other-order", "strided", "unaligned", "subclass",
    "dtype:int8", "dtype:int32", "dtype:int64", "dtype:uint8", "dtype:bool", "dtype:float16",
    "dtype:complex64", "dtype:complex128", "dtype:object", "dtype:longdouble", "dtype:swapped",
    "dtype:other-float", "shape:extra-dim", "shape:drop-dim", "shape:grow", "shape:empty",
    "shape:0d", "shape:transposed", "notarray:list", "notarray:float", "notarray:str",
    "notarray:dict", "notarray:npscalar", "notarray:memoryview",
]


def bad_array(kind, shape, dtype, order, seed):
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
    out = [None if i in skip else alloc_like(p, values_for(seed * 31 + i, p.shape), offset=i % 3)
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


def sweep(label, make_twins, attack):
    """attack(obj) on adamc's and the reference's twin; the usual checks."""
    opt, ref = make_twins(adamc), make_twins(reference)
    snap = snapshot(opt)
    mine = outcome(lambda: attack(opt))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: attack(ref))
    after_attack(mine, theirs, opt, ref, snap, label)


# ---------------------------------------------------------------- gradients and parameters

GRAD_KINDS = ARRAY_KINDS + ["None", "alias:param", "alias:param-view", "alias:other-param",
                            "alias:state", "alias:base-overlap", "alias:max-state"]


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
        s = (state_of(opt, i) or {}).get(key)
        return s if s is not None else alloc_like(p, 0.0)
    if kind == "alias:base-overlap":
        # the same buffer as p, one element further: overlaps all but one element
        if p.base is None or p.size == 0:
            return p
        base = buffer_of(p)
        start = (p.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // p.itemsize
        flat = base.reshape(-1)[start + 1:start + 1 + p.size]
        if flat.size < p.size:
            return p
        return flat.reshape(p.shape) if order_of(p) == "C" else flat.reshape(p.shape[::-1]).T
    return bad_array(kind, p.shape, p.dtype, order_of(p), seed)


def entries_grads(opt, entries, seed):
    """Valid gradients but for the (index, grad kind) entries; as opt.step wants them."""
    grads = [alloc_like(p, values_for(seed + i, p.shape)) for i, p in enumerate(opt._params)]
    for j, (i, gk) in enumerate(entries):
        grads[i] = make_grad(gk, i, opt, seed + 1000 + j)
    return dict(zip(opt._names, grads)) if opt._names is not None else grads


def set_in_place(a, **attrs):
    """a.shape = ... / a.dtype = ...: what users can do to a parameter in
    place; NumPy 2.5 deprecates both (AttributeError once removed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, value in attrs.items():
            setattr(a, name, value)


def numpy_mutates_in_place():
    try:
        set_in_place(np.zeros(2, np.float32), shape=(2, 1), dtype=np.int32)
    except AttributeError:  # pragma: no cover - a NumPy that removed it
        return False
    return True


# ---------------------------------------------------------------- adamc.adam_step

ALIASES = [("grad", "param"), ("exp_avg", "exp_avg_sq"), ("max_exp_avg_sq", "exp_avg"),
           ("grad", "exp_avg"), ("grad", "max_exp_avg_sq"), ("exp_avg_sq", "param"),
           ("param", "max_exp_avg_sq")]
BETA_POOLS = {BETA_NAMES[0]: BAD_BETAS[:6] + REALS,
              BETA_NAMES[1]: [1.0, 1.5, -0.0, 0.999999999, NAN] + REALS}


def functional_pool(name):
    """The values fuzzed for one of adam_step's option keywords, by its kind."""
    if name in BETA_POOLS:
        return BETA_POOLS[name]
    if FUNCTIONAL_OPTION[name].kind == "choice":
        return hyper_pool(name)
    return {"lr": REALS, "real": REALS, "bool": BOOLS, "seed": SEEDS}[
        FUNCTIONAL_OPTION[name].kind]


FUNC_SCALARS = {
    "step": [0, -1, 1.5, True, "1", None, np.int64(3), 2**62, np.float64(2.0), 10**30 + 0j]
    + known(KNOWN_BUG_STEPS),
    **{name: functional_pool(name) for name in FUNCTIONAL_NAMES},
    **{syn: BOOLS for syn in SYNONYM_KEYS},
}


def build_functional(attack, seed):
    bad_bufs, aliases, scalars, (shape, dtype, order, off), amsgrad = attack
    bufs = {name: alloc(shape, dtype, order, off if name == "param" else 0,
                        values_for(seed + k, shape) if name in ("param", "grad") else 0.0)
            for k, name in enumerate(FUNC_BUFFERS)}
    for name, kind in bad_bufs:
        bufs[name] = None if kind == "None" else bad_array(kind, shape, dtype, order, seed)
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


def assert_buffers_unchanged(bufs, before, what):
    """adam_step's array buffers as they were (a non-array "buffer" is the attack itself)."""
    for name, a, b in zip(bufs, bufs.values(), before):
        if isinstance(b, np.ndarray):
            assert_identical(a, b, f"{what}: {name} changed by a failed call", layout=False)


def functional_twins(attack, label):
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
        assert_buffers_unchanged(bufs, before, label)
