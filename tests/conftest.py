"""Shared helpers: test arrays in every layout, and the comparison tolerances."""

import numpy as np
import pytest

import adamc

DTYPES = [np.float32, np.float64]

# (shape, layout) cases; layout "F" makes a Fortran-ordered array, "offset"
# a view starting one element into a larger buffer (not 16/32/64-byte
# aligned), "C" a fresh C-ordered array.
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

OPTIONS = [
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


def option_id(opt):
    return ",".join(f"{k}={v}" for k, v in opt.items()) or "default"


def make_array(rng, shape, dtype, layout, scale=1.0):
    """A random array of the given layout (never all zeros)."""
    data = (rng.standard_normal(shape) * scale).astype(dtype)
    if layout == "C":
        return np.ascontiguousarray(data)
    if layout == "F":
        return np.asfortranarray(data)
    if layout == "offset":
        n = int(np.prod(shape))
        base = np.empty(n + 1, dtype=dtype)
        view = base[1:].reshape(shape)
        view[...] = data
        assert view.ctypes.data % 16 != 0
        return view
    raise ValueError(layout)


def like(rng, a, scale=1.0):
    """A random array with a's shape, dtype and memory layout."""
    layout = "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"
    return make_array(rng, a.shape, a.dtype, layout, scale)


def exact():
    """Whether the kernel in use must equal the reference bit for bit.

    The baseline x86-64 variant performs the reference's operations in the
    reference's order without FMA, so it must be identical; variants that
    fuse multiply-adds differ by rounding (see tolerance()).
    """
    import platform

    return adamc.cpu_info()["isa"] == "baseline" and platform.machine() in (
        "x86_64", "AMD64", "i686", "x86")


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


def assert_matches(actual, expected, steps, what=""):
    """actual (kernel) against expected (reference), within the stated tolerance."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    if exact():
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        rtol, atol = tolerance(actual.dtype, steps)
        scale = max(float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)), 1.0)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale,
                                   err_msg=what)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """For tests that call adamc.set_num_threads: back to the default after."""
    yield
    adamc.set_num_threads(None)


def _runnable_variants():
    from adamc import _kernels

    return _kernels.variants()[1]


@pytest.fixture(params=_runnable_variants())
def variant(request):
    """Run the test once per kernel variant this CPU can run, then restore."""
    from adamc import _kernels

    before = _kernels.kernel_name()
    _kernels.use_variant(request.param)
    yield request.param
    _kernels.use_variant(before)
