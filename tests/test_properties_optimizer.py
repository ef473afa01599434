"""Property: adamc.Adam/AdamW on every kernel variant equal the reference
optimizer (within _toolkit.assert_matches's stated tolerance; bit for bit on
the baseline x86-64 variant) over random parameter layouts, param groups,
hyperparameters and schedules, None gradients and gradients sprinkled with
NaN/Inf (which must land exactly where the reference's do); bitwise the same
for every thread count, nothing written outside the parameters.  Strategies
and conditioning: _strategies.py.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import adamc  # noqa: E402
from adamc import reference  # noqa: E402

from _strategies import (  # noqa: E402
    FIXTURE_OK, NUDGES, build, comparable, cutoffs, grads_for, noisy_pairs, noisy_step,
    optimizer_setups, random_values, ref_step, thread_counts, threads,
)
from _toolkit import (  # noqa: E402
    assert_guards_intact, assert_identical, assert_twins_match, exact,
)


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
    moved = [0.0] * len(params)   # each parameter's largest step in the reference
    for k in range(case["nsteps"]):
        grads = grads_for(opt, params, rng, case["grad_exponent"], case["spread"],
                          case["skips"][k], case["fraction"])
        with threads(case["threads"], case["cutoff"]):
            opt.step(grads)
        with threads(1, None):
            one.step(grads)
        ref_step(ref, grads, moved)
        for d, o in noisy.items():
            noisy_step(o, grads, d)
    for i, (a, b) in enumerate(zip(params, serial)):
        assert_identical(a, b, f"param {i}: {case['threads']} threads vs 1", nan_bits=False)
    assert all(a is b for a, b in zip(opt._params, params))
    for i, a in enumerate(params):
        assert_guards_intact(a, f"param {i}")
    return opt, ref, noisy, moved


def check_optimizer_case(case):
    opt, ref, noisy, moved = run_optimizer_case(case)
    n = case["nsteps"]
    if comparable(noisy_pairs(noisy.values(), ref), n):
        assert_twins_match(opt, ref, n, groups=True, moved=moved)  # NaN/Inf placement too
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
    check_optimizer_case(case)


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
        assert_identical(run(1), run(2), "1 thread vs 2 threads")
    finally:
        _kernels.use_variant(before)
        os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
