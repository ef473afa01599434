"""Each fast check of the compiled shim agrees with the rule it mirrors in
_validation (the table in _kernels.pyx's docstring).  A fast check may send
a valid input to the full check (a Python int beyond 2**53, a NumPy scalar):
it must never accept an invalid one; on plain Python values and on arrays
the two must agree exactly."""

import numpy as np
import pytest

from adamc import _kernels, _spec
from adamc import _validation as V

FAST = _kernels.fast_checks()


def accepts(rule, *args, **kw):
    try:
        rule(*args, **kw)
    except (TypeError, ValueError):
        return False
    return True


PLAIN_REALS = [0, 1, 7, 2**53, -(2**53), 2**53 + 1, 10**400, 0.0, -0.0, 0.5, 0.9999999999,
               1.0, 1.5, -1e-300, 1e308, float("inf"), float("-inf"), float("nan"), True,
               False]
OTHER_REALS = [np.float64(0.5), np.float32(0.25), np.int64(3), np.bool_(True), "0.1", None,
               1j, [0.1], type("F", (float,), {})(0.5)]


@pytest.mark.parametrize("beta", [False, True])
def test_real(beta):
    for x in PLAIN_REALS + OTHER_REALS:
        fast = FAST["real"](x, beta)
        full = accepts(V.check_real, x, "x", beta=beta)
        assert not fast or full, x  # never accepts what the rule refuses
        plain = type(x) is float or (type(x) is int and abs(x) <= 2**53)
        if plain:
            assert fast == full, x


def test_bool():
    for x in [True, False, 0, 1, None, "True", np.bool_(True), 1.0]:
        fast, full = FAST["bool"](x), accepts(V.check_bool, x, "x")
        assert not fast or full, x
        if type(x) is bool or not full:
            assert fast == full, x


@pytest.mark.parametrize("option", [o for o in _spec.OPTIONS if o.kind == "choice"])
def test_choice(option):
    names = [c for c in option.choices if c is not None]
    for x in list(option.choices) + ["", names[0].upper(), None, 0, b"hat", ["hat"]]:
        fast = FAST["choice"](x, option.choices)
        full = accepts(V.check_choice, x, option.name, option.choices)
        assert not fast or full, x
        if isinstance(x, str) or not full:  # a None choice: the full check decides
            assert fast == full, x


def arrays():
    """One array per rule of check_array/check_writeable, and valid ones."""
    out = {
        "f32": np.zeros(5, np.float32), "f64": np.zeros((2, 3)), "F": np.zeros((3, 2), order="F"),
        "0d": np.array(1.0), "empty": np.zeros((0, 3)), "f16": np.zeros(5, np.float16),
        "int": np.zeros(5, np.int64), "swapped": np.zeros(5, ">f8" if np.little_endian else "<f8"),
        "strided": np.zeros(10)[::2], "list": [0.0, 1.0], "scalar": np.float64(1.0),
    }
    raw = np.zeros(8 * 5 + 1, np.uint8)
    out["unaligned"] = raw[1:].view(np.float64)
    ro = np.zeros(4)
    ro.flags.writeable = False
    out["readonly"] = ro
    return out


@pytest.mark.parametrize("writeable", [False, True])
def test_buffer(writeable):
    for name, a in arrays().items():
        fast = FAST["buffer"](a, writeable)

        def rule(a=a):
            V.check_array(a, "a")
            if writeable:
                V.check_writeable(a, "a")
        assert fast == accepts(rule), name


@pytest.mark.parametrize("any_float", [False, True])
def test_alike(any_float):
    ref = np.zeros((2, 3), np.float32)
    cases = [np.zeros((2, 3), np.float32), np.zeros((2, 3)), np.zeros((3, 2), np.float32),
             np.zeros((2, 3), np.float32, order="F"), np.zeros(6, np.float32),
             np.zeros((1, 1), np.float32)]
    for a in cases:
        fast = FAST["alike"](a, ref, any_float)
        full = accepts(V.check_like, a, ref, "a", "ref", any_float=any_float)
        assert fast == full, (a.shape, a.dtype, a.flags.f_contiguous)
    one = np.zeros((1, 1), np.float32, order="F")  # size 1: any order matches
    assert FAST["alike"](one, np.zeros((1, 1), np.float32), any_float)


def test_share_bytes():
    buf = np.zeros(10)
    cases = [(buf[:5], buf[5:]), (buf[:6], buf[5:]), (buf, buf), (buf[:0], buf),
             (buf.view(np.float32)[:3], buf[:1]), (np.zeros(3), np.zeros(3))]
    for a, b in cases:
        fast = FAST["share_bytes"](a, b)
        full = not accepts(V.check_disjoint, [a, b], ["a", "b"])
        assert fast == full, (a, b)
