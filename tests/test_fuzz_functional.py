"""Fuzzing the module's functions: adamc.adam_step and adamc.set_num_threads
(the pools, the checks and the property: _fuzzing.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import adamc  # noqa: E402
from adamc import reference  # noqa: E402

from _fuzzing import (  # noqa: E402
    ALIASES, ALLOWED, ARRAY_KINDS, FUNC_SCALARS, assert_buffers_unchanged, build_functional,
    call_functional, check_outcomes, copies, outcome,
)
from _toolkit import FUNC_BUFFERS, assert_matches  # noqa: E402


# ---------------------------------------------------------------- adamc.adam_step

func_attacks = st.tuples(
    st.lists(st.tuples(st.sampled_from(FUNC_BUFFERS), st.sampled_from(ARRAY_KINDS + ["None"])),
             max_size=2),
    st.lists(st.sampled_from(ALIASES), max_size=1),
    st.lists(st.sampled_from(sorted(FUNC_SCALARS)).flatmap(
        lambda k: st.tuples(st.just(k), st.sampled_from(FUNC_SCALARS[k]))), max_size=2),
    st.sampled_from([((6,), np.float32, "C", 1), ((2, 3), np.float64, "F", 0), ((), np.float32, "C", 0)]),
    st.booleans(),
)


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
        assert_buffers_unchanged(bufs, before, f"adam_step {attack}")
    else:
        for name in FUNC_BUFFERS:
            a, b = bufs[name], rbufs[name]
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype.itemsize in (4, 8):
                assert_matches(np.asarray(a), np.asarray(b), 1, f"adam_step {attack}: {name}")


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
