"""Regression tests: bugs the fuzzers found (all fixed; their inputs stay in
the pools of _fuzzing.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("hypothesis")

import adamc  # noqa: E402
from adamc import reference  # noqa: E402

from _fuzzing import (  # noqa: E402
    ALLOWED, check_outcomes, numpy_mutates_in_place, outcome, set_in_place,
)


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
    if not numpy_mutates_in_place():  # pragma: no cover
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


# Found by a differential fuzzer (kernel against reference, bitwise):

# was:  amsgrad's running maximum on a tie of -0.0 and +0.0: the kernel kept the
#       old value (as torch.maximum), the reference's np.maximum the new one
def test_regression_amsgrad_signed_zero_tie(variant):
    bits = []
    for module in (adamc, reference):
        p, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
        vmax = np.array([-0.0, 0.0, -0.0, 1.0], np.float32)   # as a loaded state may hold
        module.adam_step(p, zeros, zeros.copy(), zeros.copy(), step=1, amsgrad=True,
                         max_exp_avg_sq=vmax)
        bits.append(vmax.view(np.uint32).copy())
    np.testing.assert_array_equal(bits[0], bits[1])


# was:  8-bit exp_avg_sq codes of a value normalized to -inf (a block with a NaN
#       is normalized by 1 / 1e-38, and a negative value then overflows): the
#       reference's search gave code 0 (which exp_avg_sq never takes), the kernel 1
def test_regression_int8_sq_code_never_zero(variant):
    from adamc import _kernels

    x = np.full(256, 0.5, np.float32)
    x[:2] = np.nan, -10.0
    with np.errstate(invalid="ignore", over="ignore"):
        ref, _ = reference.quantize_blockwise(x, False)
    kern, _ = _kernels.quantize_blockwise(x, False)
    np.testing.assert_array_equal(kern, ref)
    assert ref.min() >= 1


# was:  maximize with a NaN gradient: the reference negated it (flipping the NaN's
#       sign bit), the kernel multiplies by -1 (on x86 the NaN keeps its sign)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_maximize_nan_bits(variant, dtype):
    if variant != "baseline":
        pytest.skip("the FMA variants may round differently; the NaN is the point here")
    state = []
    for module in (adamc, reference):
        g = np.array([np.nan, 1.0, -np.nan, 2.0], dtype)
        p, m, v = np.ones(4, dtype), np.zeros(4, dtype), np.zeros(4, dtype)
        with np.errstate(invalid="ignore"):
            module.adam_step(p, g, m, v, step=1, maximize=True)
        state.append([a.view(np.uint64 if dtype == np.float64 else np.uint32).copy()
                      for a in (p, m, v)])
    for a, b in zip(*state):
        np.testing.assert_array_equal(a, b)
