"""Property: adamc.adam_step on every kernel variant equals adamc.reference's
(within _toolkit.assert_matches's stated tolerance; bit for bit on the baseline
x86-64 variant) for random layouts, offsets, hyperparameters, running states,
timesteps, thread counts and serial cutoffs, never writes the gradient or
outside its buffers.  Strategies and conditioning: _strategies.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import adamc  # noqa: E402
from adamc import reference  # noqa: E402

from _strategies import (  # noqa: E402
    FIXTURE_OK, NUDGES, Spec, comparable, cutoffs, grad_toward, hypers, nudged, offsets,
    random_values, specs, thread_counts, threads,
)
from _toolkit import (  # noqa: E402
    SLOT_NAMES, alloc_like, assert_guards_intact, assert_identical, assert_matches, exact,
    functional_kwargs,
)


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


def _found(spec, lr, betas, eps, maximize, bias_correction, grad_exponent, spread,
           param_exponent, seed):
    """An example a ci-profile run found (it failed before the fixes that
    _toolkit._bounds and _strategies.grad_toward describe)."""
    h = {o.name: o.default for o in adamc._spec.OPTIONS}
    h.update(lr=lr, betas=betas, eps=eps, weight_decay=0.01, maximize=maximize,
             bias_correction=bias_correction)
    return dict(spec=spec, state_offsets=[0, 0, 0, 0], hyper=h, first_step=1, nsteps=2,
                zero_state=True, grad_exponent=grad_exponent, spread=spread,
                param_exponent=param_exponent, threads=1, cutoff=None, seed=seed)


@FIXTURE_OK
@example(case=_found(Spec((306,), np.float64, "C", 0), 7.65625, (0.265625, 0.265625), 0.0,
                     True, False, -3, 0, -1, 0))   # an update cancelling most of p
@example(case=_found(Spec((767,), np.float64, "C", 0), 0.984375, (0.0, 0.34375), 1e-08,
                     True, True, -3, 2, -2, 152))  # maximize: wd * p - g cancelling
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
    moved = 0.0   # the largest step the reference took: the tolerance's scale for p
    with threads(case["threads"], case["cutoff"]):
        for k in range(case["nsteps"]):
            g = alloc_like(p, random_values(rng, spec.shape, spec.dtype,
                                            case["grad_exponent"], case["spread"]), o_grad)
            g0 = g.copy(order="K")
            t = case["first_step"] + k
            adamc.adam_step(p, g, bufs[0], bufs[1], step=t, max_exp_avg_sq=bufs[2], **kw)
            with np.errstate(all="ignore"):
                before = pr.copy(order="K")
                reference.adam_step(pr, g0, rbufs[0], rbufs[1], step=t, max_exp_avg_sq=rbufs[2],
                                    **kw)
                delta = np.abs(pr.astype(np.float64) - before)
                moved = max(moved, float(np.max(delta[np.isfinite(delta)], initial=0.0)))
                for d, nb in noisy.items() if not exact() else ():
                    for a in nb:
                        a[...] = nudged(a, d)
                    reference.adam_step(nb[0], nudged(g0, grad_toward(d, h["maximize"])),
                                        nb[1], nb[2], step=t, max_exp_avg_sq=nb[3], **kw)
            assert_identical(g, g0, "the gradient was written")
    n = case["nsteps"]
    if comparable([pair for nb in noisy.values() for pair in zip(nb, [pr] + rbufs)], n):
        assert_matches(p, pr, n, "param", scale=moved)
        for name, a, b in zip(SLOT_NAMES, bufs, rbufs):
            assert_matches(a, b, n, name)
    assert p.ctypes.data == data  # updated in place, layout untouched
    for name, a in zip(("param",) + SLOT_NAMES, [p] + bufs):
        assert_guards_intact(a, name)
