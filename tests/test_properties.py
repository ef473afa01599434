"""Property-based tests: every kernel variant against adamc.reference.

Random shapes (0-d, 1-D, N-D, zero-size), dtypes, memory orders, unaligned
offsets, hyperparameters (betas 0 and near 1, eps 0, every boolean option,
lr schedules), thread counts and serial cutoffs; the compiled step must equal
the NumPy reference within ``conftest.assert_matches``'s stated tolerance
(bit for bit on the baseline x86-64 variant), give bitwise the same result
for every thread count, and put NaN/Inf exactly where the reference does.
A rule-based state machine drives random sequences of steps, param-group
edits, state_dict round trips (into the same or a freshly built optimizer)
and thread changes against the reference optimizer stepped identically.

Profiles: see tests/_hypothesis_profiles.py (ADAMC_HYPOTHESIS_PROFILE).
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import platform
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, event, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import _hypothesis_profiles as profiles  # noqa: E402  (registers and loads the profile)
import adamc  # noqa: E402
from adamc import reference  # noqa: E402
from conftest import assert_matches, exact, tolerance  # noqa: E402

from adamc import _spec  # noqa: E402

HYPER_KEYS = tuple(o.name for o in _spec.OPTIONS)
BOOL_OPTIONS = tuple(o.name for o in _spec.OPTIONS if o.kind == "bool")
CHOICE_OPTIONS = {o.name: o.choices for o in _spec.OPTIONS if o.kind == "choice"}
STATE_KEYS = _spec.SLOT_NAMES

# The `variant` fixture (conftest) switches the kernel once per test, not per
# example: sharing it across a test's examples is what we want.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- arrays

GUARD = -7.0  # the value of the elements around every test array


class Spec:
    """How to lay out one array: shape, dtype, memory order, and the offset
    (in elements) of the view into its own larger buffer."""

    def __init__(self, shape, dtype, order, offset):
        self.shape, self.dtype, self.order, self.offset = tuple(shape), np.dtype(dtype), order, offset

    def __repr__(self):
        return f"Spec({self.shape}, {self.dtype.name}, {self.order!r}, offset={self.offset})"

    def alloc(self, values=None, offset=None):
        """A writeable view `offset` elements into a fresh buffer (so it is not
        16/32/64-byte aligned for odd offsets), filled with `values`."""
        off = self.offset if offset is None else offset
        n = math.prod(self.shape)
        base = np.full(n + off + 3, GUARD, dtype=self.dtype)  # guard elements around it
        flat = base[off:off + n]
        a = flat.reshape(self.shape) if self.order == "C" else flat.reshape(self.shape[::-1]).T
        assert a.flags.c_contiguous if self.order == "C" else a.flags.f_contiguous
        assert n == 0 or np.shares_memory(a, base)
        if values is not None:
            a[...] = values
        return a


def assert_guards_intact(a, what):
    """The guard elements around a Spec.alloc view (before it, up to its
    offset, and the 3 after it) were not written: no out-of-bounds stores
    from vector tails or thread splits."""
    base = a.base
    while base is not None and base.base is not None:
        base = base.base
    assert isinstance(base, np.ndarray), what
    start = (a.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // a.itemsize
    outside = np.concatenate([base[:start], base[start + a.size:]])
    assert outside.size >= 3 and np.all(outside == GUARD), f"{what}: wrote outside its buffer"


def alloc_like(a, values, offset):
    """A new view like `a` (same shape, dtype, order) at another offset."""
    order = "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"
    return Spec(a.shape, a.dtype, order, offset).alloc(values)


small_shapes = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)
medium_shapes = st.one_of(
    st.integers(1, 3000).map(lambda n: (n,)),  # vector bodies, tails, thread splits
    st.tuples(st.integers(1, 70), st.integers(1, 70)),
)
shapes = st.one_of(small_shapes, small_shapes, medium_shapes)
dtypes = st.sampled_from([np.float32, np.float64])
orders = st.sampled_from(["C", "F"])
offsets = st.one_of(st.just(0), st.integers(1, 9))


@st.composite
def specs(draw, shape=shapes):
    return Spec(draw(shape), draw(dtypes), draw(orders), draw(offsets))


def random_values(rng, shape, dtype, exponent, spread):
    """Finite values of magnitude ~10**exponent, each element scaled by a
    further 10**U(-spread, spread): varied magnitudes within one array."""
    x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-spread, spread, shape)
    return np.array(x * 10.0 ** exponent, dtype=dtype)  # an ndarray even for shape ()


def sprinkle(rng, g, fraction):
    """g with about `fraction` of its elements replaced by NaN, +Inf or -Inf."""
    g = g.copy(order="K")
    if g.size:
        hit = rng.random(g.shape) < fraction
        g[hit] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=g.dtype), size=int(hit.sum()))
    return g


# ---------------------------------------------------------------- hyperparameters

near_one = [0.9, 0.99, 0.999, 0.9999999, 1 - 2.0**-24, 1 - 2.0**-53]
betas_values = st.one_of(st.sampled_from([0.0, 0.5] + near_one),
                         st.floats(0.0, 1.0, exclude_max=True))
lr_values = st.one_of(st.sampled_from([0.0, 1e-3, 0.1, 1.0]), st.floats(1e-8, 10.0))
eps_values = st.one_of(st.sampled_from([0.0, 1e-8, 1e-30, 1e-3, 1.0]), st.floats(0.0, 1.0))
wd_values = st.one_of(st.sampled_from([0.0, 1e-2, 0.5]), st.floats(0.0, 10.0))


class Warmup:
    """A picklable, comparable learning-rate schedule lr(t)."""

    def __init__(self, base, steps):
        self.base, self.steps = base, steps

    def __call__(self, t):
        return self.base * min(1.0, t / self.steps)

    def __eq__(self, other):
        return isinstance(other, Warmup) and (self.base, self.steps) == (other.base, other.steps)

    def __hash__(self):
        return hash((self.base, self.steps))

    def __repr__(self):
        return f"Warmup({self.base!r}, {self.steps!r})"


schedules = st.builds(Warmup, lr_values, st.integers(1, 5))
lrs_or_schedules = st.one_of(lr_values, lr_values, schedules)


@st.composite
def hypers(draw, schedule=False):
    """A full set of hyperparameters, every option drawn."""
    h = {
        "lr": draw(lrs_or_schedules if schedule else lr_values),
        "betas": (draw(betas_values), draw(betas_values)),
        "eps": draw(eps_values),
        "weight_decay": draw(wd_values),
    }
    for k in BOOL_OPTIONS:
        h[k] = draw(st.booleans())
    for k, choices in CHOICE_OPTIONS.items():
        h[k] = draw(st.sampled_from(choices))
    return h


# ---------------------------------------------------------------- conditioning
#
# The FMA variants (avx2, avx512) differ from the reference by one rounding
# per fused operation; assert_matches allows 8 ulp per step for that.  Some
# drawn examples are ill-conditioned: with coupled (L2) weight decay, g + wd*p
# can cancel and (beta2 ~ 0, eps ~ 0) the update then divides by a tiny
# number, or p overshoots by ~lr and comes back, so one ulp in p becomes
# thousands in a step or two, far beyond any rounding-level tolerance (the
# failing examples are in the report, /tmp/issue5_bugs.md).  No correct
# implementation that rounds differently could meet the tolerance there, so
# on the FMA variants each example is also run through two "noisy" references
# whose inputs (parameters, state, gradients) are moved by one ulp before
# every step, all up in one, all down in the other (systematic, so the nudges
# cannot cancel out).  If a noisy reference itself leaves the tolerance, the
# example is ill-conditioned: its values are not compared on that variant
# (counted in the Hypothesis statistics; the state machine resynchronises
# instead).  The tolerance itself is conftest's, unchanged,
# and the baseline variant must equal the reference bit for bit on every
# example.

NUDGES = (np.inf, -np.inf)  # the directions of the two noisy references


def nudged(a, toward):
    """A copy of `a` (same layout) with every finite nonzero element moved one
    ulp toward +inf or -inf."""
    out = np.array(a, copy=True, order="K")
    if out.size:
        ok = np.isfinite(out) & (out != 0)
        out[ok] = np.nextafter(out[ok], out.dtype.type(toward))
    return out


def within_tolerance(actual, expected, steps):
    """assert_matches's tolerance test (the non-exact branch), as a boolean."""
    rtol, atol = tolerance(actual.dtype, steps)
    scale = max(float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)), 1.0)
    with np.errstate(all="ignore"):
        return bool(np.allclose(actual, expected, rtol=rtol, atol=atol * scale, equal_nan=True))


def comparable(pairs, steps):
    """Whether values are compared in this example: always on the exact
    variant; on FMA variants only if every (noisy, clean) reference pair
    agrees within the tolerance (see above)."""
    pairs = list(pairs)
    if exact():
        return True
    if all(within_tolerance(n, c, steps) for n, c in pairs):
        event("values compared (well-conditioned)")
        return True
    event("values not compared: ill-conditioned, FMA variant")
    return False


def optimizer_arrays(opt):
    """Parameters and every state buffer, in a fixed order."""
    out = list(opt._params)
    states = [opt._engine.get_state(i) or {} for i in range(len(opt._params))]
    for slot in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        out += [st[slot] for st in states if slot in st]
    return out


def noisy_step(opt, grads, toward):
    """Step a reference optimizer after nudging its parameters, its state and
    the gradients by one ulp toward `toward`."""
    for a in optimizer_arrays(opt):
        a[...] = nudged(a, toward)
    if isinstance(grads, dict):
        grads = {k: None if g is None else nudged(g, toward) for k, g in grads.items()}
    else:
        grads = [None if g is None else nudged(g, toward) for g in grads]
    with np.errstate(all="ignore"):
        opt.step(grads)


def noisy_pairs(noisy, ref):
    """(noisy, clean) array pairs of the noisy reference optimizers and `ref`."""
    return [pair for o in noisy for pair in zip(optimizer_arrays(o), optimizer_arrays(ref))]


def functional_kwargs(h):
    kw = dict(h)
    kw["beta1"], kw["beta2"] = kw.pop("betas")
    return kw


# ---------------------------------------------------------------- threads

@contextmanager
def threads(n, cutoff):
    """Use n threads (adamc.set_num_threads) and the given ADAMC_SERIAL_CUTOFF
    (read at every step; small values make small steps run in parallel)."""
    old = os.environ.get("ADAMC_SERIAL_CUTOFF")
    try:
        adamc.set_num_threads(n)
        if cutoff is None:
            os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
        else:
            os.environ["ADAMC_SERIAL_CUTOFF"] = str(cutoff)
        yield
    finally:
        adamc.set_num_threads(None)
        if old is None:
            os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
        else:
            os.environ["ADAMC_SERIAL_CUTOFF"] = old


thread_counts = st.integers(1, 4)
cutoffs = st.sampled_from([None, 0, 1, 64, 1000])


# ---------------------------------------------------------------- comparisons

def assert_same_nonfinite(actual, expected, what):
    """NaN where the reference has NaN, and the same signed infinities."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg=f"{what}: +Inf positions")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=f"{what}: -Inf positions")


def assert_state_matches(opt, ref, steps, nonfinite=False):
    """Parameters, state and step counts of `opt` match `ref`'s."""
    for i, (a, b) in enumerate(zip(opt._params, ref._params)):
        assert_matches(a, b, steps, f"param {i}")
        if nonfinite:
            assert_same_nonfinite(a, b, f"param {i}")
    sd, rsd = opt.state_dict(), ref.state_dict()
    assert sd["state"].keys() == rsd["state"].keys()
    for i, e in rsd["state"].items():
        mine = sd["state"][i]
        assert mine.keys() == e.keys(), i
        assert mine["step"] == e["step"], f"step count of param {i}"
        for k in STATE_KEYS:
            if k in e:
                assert_matches(mine[k], e[k], steps, f"{k} of param {i}")
                if nonfinite:
                    assert_same_nonfinite(mine[k], e[k], f"{k} of param {i}")
    assert len(sd["param_groups"]) == len(rsd["param_groups"])
    for g, rg in zip(sd["param_groups"], rsd["param_groups"]):
        assert g == rg


def assert_bitwise(a, b, what, nan_bits=True):
    """The same bits; with nan_bits=False any NaN equals any NaN (sign and
    payload ignored; see test_nan_bits_independent_of_thread_count)."""
    assert a.dtype == b.dtype and a.shape == b.shape, what
    ua, ub = a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")
    if not nan_bits:
        both = np.isnan(a) & np.isnan(b)
        ua, ub = np.where(both, 0, ua), np.where(both, 0, ub)
    np.testing.assert_array_equal(ua, ub, err_msg=what)


# ---------------------------------------------------------------- functional step

@st.composite
def functional_cases(draw):
    spec = draw(specs())
    return dict(
        spec=spec,
        state_offsets=[draw(offsets) for _ in range(4)],  # grad, m, v, vmax
        hyper=draw(hypers()),
        first_step=draw(st.one_of(st.just(1), st.integers(1, 50), st.integers(1, 10**7))),
        nsteps=draw(st.integers(1, 4)),
        zero_state=draw(st.booleans()),
        grad_exponent=draw(st.integers(-12, 12)),
        spread=draw(st.integers(0, 4)),
        param_exponent=draw(st.integers(-3, 3)),
        threads=draw(thread_counts),
        cutoff=draw(cutoffs),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@FIXTURE_OK
@given(case=functional_cases())
def test_functional_step_matches_reference(variant, case):
    spec, h = case["spec"], case["hyper"]
    rng = np.random.default_rng(case["seed"])
    p0 = random_values(rng, spec.shape, spec.dtype, case["param_exponent"], 1)
    if case["zero_state"]:
        m0 = v0 = x0 = np.zeros(spec.shape, spec.dtype)
    else:  # a plausible running state: |m| ~ |g|, v ~ g^2, vmax >= v
        m0 = random_values(rng, spec.shape, spec.dtype, case["grad_exponent"], case["spread"])
        v0 = np.array(np.square(random_values(rng, spec.shape, spec.dtype, case["grad_exponent"],
                                              case["spread"])))
        x0 = np.array(v0 + np.square(random_values(rng, spec.shape, spec.dtype,
                                                   case["grad_exponent"], 0)))
    o_grad, o_m, o_v, o_x = case["state_offsets"]
    p = spec.alloc(p0)
    bufs = [alloc_like(p, b, o) for b, o in ((m0, o_m), (v0, o_v), (x0, o_x))]
    pr = alloc_like(p, p0, 0)  # same layout (the reference checks memory order too)
    rbufs = [alloc_like(p, b, 0) for b in (m0, v0, x0)]
    noisy = {d: [alloc_like(p, b, 0) for b in (p0, m0, v0, x0)] for d in NUDGES}  # "conditioning"
    data = p.ctypes.data
    kw = functional_kwargs(h)
    with threads(case["threads"], case["cutoff"]):
        for k in range(case["nsteps"]):
            g = alloc_like(p, random_values(rng, spec.shape, spec.dtype,
                                            case["grad_exponent"], case["spread"]), o_grad)
            g0 = g.copy(order="K")
            t = case["first_step"] + k
            adamc.adam_step(p, g, bufs[0], bufs[1], step=t, max_exp_avg_sq=bufs[2], **kw)
            with np.errstate(all="ignore"):
                reference.adam_step(pr, g0, rbufs[0], rbufs[1], step=t, max_exp_avg_sq=rbufs[2],
                                    **kw)
                for d, nb in noisy.items() if not exact() else ():
                    for a in nb:
                        a[...] = nudged(a, d)
                    reference.adam_step(nb[0], nudged(g0, d), nb[1], nb[2], step=t,
                                        max_exp_avg_sq=nb[3], **kw)
            assert_bitwise(g, g0, "the gradient was written")
    n = case["nsteps"]
    if comparable([pair for nb in noisy.values() for pair in zip(nb, [pr] + rbufs)], n):
        assert_matches(p, pr, n, "param")
        for name, a, b in zip(STATE_KEYS, bufs, rbufs):
            assert_matches(a, b, n, name)
    assert p.ctypes.data == data  # updated in place, layout untouched
    for name, a in zip(("param",) + STATE_KEYS, [p] + bufs):
        assert_guards_intact(a, name)


# ---------------------------------------------------------------- optimizer step

@st.composite
def optimizer_setups(draw, max_params=4, shape=shapes, schedule=True):
    """Arguments for building an optimizer: class, parameter layouts, groups
    (as lists or name -> array mappings), defaults and per-group overrides."""
    cls = draw(st.sampled_from(["Adam", "AdamW"]))
    nparams = draw(st.integers(1, max_params))
    layouts = [draw(specs(shape)) for _ in range(nparams)]
    ngroups = draw(st.integers(1, min(3, nparams)))
    cuts = sorted(draw(st.lists(st.integers(1, nparams - 1), min_size=ngroups - 1,
                                max_size=ngroups - 1, unique=True))) if nparams > 1 else []
    bounds = [0] + cuts + [nparams]
    defaults = draw(hypers(schedule=schedule))
    overrides = []
    for _ in range(len(bounds) - 1):
        own = draw(hypers(schedule=schedule))
        keys = draw(st.lists(st.sampled_from(HYPER_KEYS), unique=True))
        overrides.append({k: own[k] for k in keys})
    if cls == "AdamW":
        defaults.pop("decoupled_weight_decay")
    return dict(cls=cls, layouts=layouts, bounds=bounds, defaults=defaults,
                overrides=overrides, named=draw(st.booleans()))


def build(module, setup, arrays):
    """module.Adam/AdamW over `arrays` as the setup describes."""
    groups = []
    b = setup["bounds"]
    for gi in range(len(b) - 1):
        ps = list(range(b[gi], b[gi + 1]))
        params = {f"p{i}": arrays[i] for i in ps} if setup["named"] else [arrays[i] for i in ps]
        groups.append({"params": params, **setup["overrides"][gi]})
    return getattr(module, setup["cls"])(groups, **setup["defaults"])


def grads_for(opt, arrays, rng, exponent, spread, skip, fraction=0.0):
    """Gradients (None where skip[i]), in each parameter's layout at a random
    offset; as a list or a name -> array mapping, as the optimizer wants."""
    out = []
    for i, p in enumerate(arrays):
        if skip[i % len(skip)]:
            out.append(None)
            continue
        g = random_values(rng, p.shape, p.dtype, exponent, spread)
        if fraction:
            g = sprinkle(rng, g, fraction)
        out.append(alloc_like(p, g, int(rng.integers(0, 8))))
    if opt._names is not None:
        return dict(zip(opt._names, out))
    return out


@st.composite
def optimizer_cases(draw, nonfinite=False):
    setup = draw(optimizer_setups())
    n = len(setup["layouts"])
    nsteps = draw(st.integers(1, 4))
    return dict(
        setup=setup,
        nsteps=nsteps,
        skips=[draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(nsteps)],
        grad_exponent=draw(st.integers(-12, 12)),
        spread=draw(st.integers(0, 4)),
        fraction=draw(st.sampled_from([0.02, 0.2, 1.0])) if nonfinite else 0.0,
        threads=draw(thread_counts),
        cutoff=draw(cutoffs),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def run_optimizer_case(case):
    setup = case["setup"]
    rng = np.random.default_rng(case["seed"])
    init = [random_values(rng, s.shape, s.dtype, 0, 1) for s in setup["layouts"]]
    params = [s.alloc(v) for s, v in zip(setup["layouts"], init)]
    serial = [s.alloc(v) for s, v in zip(setup["layouts"], init)]  # same, 1 thread
    ref_params = [s.alloc(v, offset=0) for s, v in zip(setup["layouts"], init)]
    opt = build(adamc, setup, params)
    one = build(adamc, setup, serial)
    ref = build(reference, setup, ref_params)
    noisy = {} if exact() else {  # see "conditioning"
        d: build(reference, setup, [s.alloc(v, offset=0) for s, v in zip(setup["layouts"], init)])
        for d in NUDGES}
    for k in range(case["nsteps"]):
        grads = grads_for(opt, params, rng, case["grad_exponent"], case["spread"],
                          case["skips"][k], case["fraction"])
        with threads(case["threads"], case["cutoff"]):
            opt.step(grads)
        with threads(1, None):
            one.step(grads)
        with np.errstate(all="ignore"):
            ref.step(grads)
        for d, o in noisy.items():
            noisy_step(o, grads, d)
    for i, (a, b) in enumerate(zip(params, serial)):
        assert_bitwise(a, b, f"param {i}: {case['threads']} threads vs 1", nan_bits=False)
    assert all(a is b for a, b in zip(opt._params, params))
    for i, a in enumerate(params):
        assert_guards_intact(a, f"param {i}")
    return opt, ref, noisy


def check_optimizer_case(case, nonfinite=False):
    opt, ref, noisy = run_optimizer_case(case)
    n = case["nsteps"]
    if comparable(noisy_pairs(noisy.values(), ref), n):
        assert_state_matches(opt, ref, n, nonfinite)
    else:  # ill-conditioned on an FMA variant: the structure still matches
        sd, rsd = opt.state_dict(), ref.state_dict()
        assert {i: sorted(e) for i, e in sd["state"].items()} == \
            {i: sorted(e) for i, e in rsd["state"].items()}
        assert [e["step"] for e in sd["state"].values()] == [e["step"] for e in rsd["state"].values()]


@FIXTURE_OK
@given(case=optimizer_cases())
def test_optimizer_matches_reference(variant, case):
    check_optimizer_case(case)


@FIXTURE_OK
@given(case=optimizer_cases(nonfinite=True))
def test_nonfinite_grads_match_reference(variant, case):
    """NaN and Inf in gradients are not errors; they propagate exactly as in
    the reference (same positions of NaN, +Inf and -Inf in params and state)."""
    check_optimizer_case(case, nonfinite=True)


# ---------------------------------------------------------------- state machine

def legal_edits():
    """(key, value) edits of a param group that step must accept."""
    return st.one_of(
        st.tuples(st.just("lr"), lrs_or_schedules),
        st.tuples(st.just("betas"), st.tuples(betas_values, betas_values)),
        st.tuples(st.just("betas"), st.lists(betas_values, min_size=2, max_size=2)),
        st.tuples(st.just("weight_decay"), wd_values),
        st.tuples(st.just("eps"), eps_values),
        st.tuples(st.just("amsgrad"), st.just("toggle")),
        st.tuples(st.sampled_from(["maximize", "bias_correction"]), st.just("toggle")),
        *[st.tuples(st.just(k), st.sampled_from(c)) for k, c in CHOICE_OPTIONS.items()],
    )


class AdamMachine(RuleBasedStateMachine):
    """adamc's optimizer and the reference optimizer, driven identically."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    @initialize(setup=optimizer_setups(max_params=3, shape=st.one_of(small_shapes, small_shapes,
                                                                     medium_shapes)),
                seed=st.integers(0, 2**32 - 1))
    def build(self, setup, seed):
        self.setup = setup
        self.rng = np.random.default_rng(seed)
        init = [random_values(self.rng, s.shape, s.dtype, 0, 1) for s in setup["layouts"]]
        self.params = [s.alloc(v) for s, v in zip(setup["layouts"], init)]
        self.ref_params = [s.alloc(v, offset=0) for s, v in zip(setup["layouts"], init)]
        self.opt = build(adamc, setup, self.params)
        self.ref = build(reference, setup, self.ref_params)
        # the noisy reference (see "conditioning"), on FMA variants only
        self.noisy = {} if exact() else {
            d: build(reference, setup, [s.alloc(v, offset=0) for s, v in zip(setup["layouts"], init)])
            for d in NUDGES}
        self.resyncs = 0

    def optimizers(self):
        return [self.opt, self.ref, *self.noisy.values()]

    @rule(skip=st.lists(st.booleans(), min_size=1, max_size=3),
          exponent=st.integers(-8, 8), spread=st.integers(0, 3))
    def step(self, skip, exponent, spread):
        grads = grads_for(self.opt, self.params, self.rng, exponent, spread, skip)
        self.opt.step(grads)
        with np.errstate(all="ignore"):
            self.ref.step(grads)
        for d, o in self.noisy.items():
            noisy_step(o, grads, d)
        self.steps += 1

    @rule(group=st.integers(0, 2), edit=legal_edits())
    def edit_group(self, group, edit):
        key, value = edit
        gi = group % len(self.opt.param_groups)
        if value == "toggle":
            value = not self.opt.param_groups[gi][key]
        for o in self.optimizers():
            o.param_groups[gi][key] = copy.copy(value)

    @rule(how=st.sampled_from(["as is", "pickle", "deepcopy"]))
    def roundtrip_same(self, how):
        for o in self.optimizers():
            sd = o.state_dict()
            if how == "pickle":
                sd = pickle.loads(pickle.dumps(sd))
            elif how == "deepcopy":
                sd = copy.deepcopy(sd)
            o.load_state_dict(sd)

    @rule(offset=offsets, other=hypers(schedule=False), pickled=st.booleans())
    def roundtrip_fresh(self, offset, other, pickled):
        """Save, build a new optimizer over copies of the parameters (at other
        offsets, with other defaults), load, and continue with it."""
        setup = dict(self.setup, defaults=dict(other), overrides=[{} for _ in self.setup["overrides"]])
        if setup["cls"] == "AdamW":
            setup["defaults"].pop("decoupled_weight_decay")
        sd, rsd = self.opt.state_dict(), self.ref.state_dict()
        if pickled:
            sd, rsd = pickle.loads(pickle.dumps(sd)), pickle.loads(pickle.dumps(rsd))
        params = [alloc_like(p, p, offset) for p in self.params]
        ref_params = [alloc_like(p, p, 0) for p in self.ref_params]
        opt, ref = build(adamc, setup, params), build(reference, setup, ref_params)
        opt.load_state_dict(sd)
        ref.load_state_dict(rsd)
        for d, o in self.noisy.items():
            self.noisy[d] = build(reference, setup, [alloc_like(p, p, 0) for p in o._params])
            self.noisy[d].load_state_dict(o.state_dict())
        self.opt, self.ref, self.params, self.ref_params = opt, ref, params, ref_params

    @rule(n=st.one_of(st.none(), thread_counts), cutoff=cutoffs)
    def set_threads(self, n, cutoff):
        adamc.set_num_threads(n)
        if cutoff is None:
            os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
        else:
            os.environ["ADAMC_SERIAL_CUTOFF"] = str(cutoff)

    @invariant()
    def matches_reference(self):
        if not hasattr(self, "opt"):
            return
        assert all(a is b for a, b in zip(self.opt._params, self.params))
        for i, a in enumerate(self.params):
            assert_guards_intact(a, f"param {i}")
        steps = max(self.steps, 1)
        if not comparable(noisy_pairs(self.noisy.values(), self.ref), steps):
            self.resync()
        assert_state_matches(self.opt, self.ref, max(self.steps, 1))

    def resync(self):
        """Ill-conditioned on an FMA variant (see "conditioning"): the
        differences so far mean nothing, so restart adamc (and the noisy
        reference) from the reference's values and count steps afresh."""
        self.resyncs += 1
        note(f"ill-conditioned after {self.steps} steps: resynchronised with the reference")
        sd = self.ref.state_dict()
        for o in [self.opt, *self.noisy.values()]:
            params = self.params if o is self.opt else o._params
            for p, r in zip(params, self.ref_params):
                p[...] = r
            o.load_state_dict(copy.deepcopy(sd))
        self.steps = 0

    def teardown(self):
        adamc.set_num_threads(None)
        os.environ.pop("ADAMC_SERIAL_CUTOFF", None)


@pytest.fixture
def clean_env():
    old = os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
    yield
    adamc.set_num_threads(None)
    if old is not None:
        os.environ["ADAMC_SERIAL_CUTOFF"] = old


def test_state_machine(variant, clean_env):
    run_state_machine_as_test(AdamMachine, settings=settings(max_examples=profiles.scaled(0.5)))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the baseline variant differs by platform")
# Not strict: whether a NaN's sign differs depends on how the compiler split
# the loop into vector body and scalar tail (a sanitizer build, for one, does
# not show it).  The README documents the exception.
@pytest.mark.xfail(strict=False, reason=(
    "a NaN's sign bit may depend on the thread split (README, Threads and the GIL)"))
def test_nan_bits_independent_of_thread_count(clean_env):
    from adamc import _kernels

    def run(threads):
        adamc.set_num_threads(threads)
        a0, a1 = np.zeros((), np.float32), np.zeros((), np.float32)
        b = np.full(67, 0.5, np.float32)
        b[66] = 1.8897052
        opt = adamc.Adam([a0, a1, b], lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.01,
                         bias_correction=False)
        one = np.ones((), np.float32)
        for g66, skip in ((-np.inf, False), (0.23719229, False), (np.nan, True)):
            g = np.ones(67, np.float32)
            g[66] = g66
            opt.step([one, None if skip else one, g])  # the split moves when a1 is skipped
        return b

    before = _kernels.kernel_name()
    os.environ["ADAMC_SERIAL_CUTOFF"] = "0"  # a 68-element step on 2 threads
    try:
        _kernels.use_variant("baseline")
        assert_bitwise(run(1), run(2), "1 thread vs 2 threads")
    finally:
        _kernels.use_variant(before)
        os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
