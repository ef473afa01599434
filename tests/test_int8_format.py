"""8-bit blockwise-quantized state (issue 13): the format.

adamc.reference.dynamic_map / quantize_blockwise / dequantize_blockwise
(docs/int8-state.md) and the reference optimizer's int8 path; the compiled
kernels against them are in test_int8_state.py.
"""

from fractions import Fraction

import numpy as np
import pytest

from adamc import _kernels, _spec
from adamc import reference as R

BLOCK = _spec.QUANT_BLOCK

# ---------------------------------------------------------------------------
# The maps


def _exact_map(signed):
    """The dynamic map from first principles, in exact rationals: decade j
    holds the midpoints of `count` equal steps of [0.1, 1], times 10^(j-6)."""
    vals = [Fraction(0), Fraction(1)]
    for j in range(7):
        count = 2**j if signed else 2**(j + 1)
        step = Fraction(9, 10) / count
        for k in range(count):
            v = (Fraction(1, 10) + (k + Fraction(1, 2)) * step) * Fraction(10) ** (j - 6)
            vals.append(v)
            if signed:
                vals.append(-v)
    return sorted(vals)


@pytest.mark.parametrize("signed", [True, False])
def test_map_is_the_dynamic_map(signed):
    m = R.dynamic_map(signed)
    assert m.dtype == np.float32 and m.shape == (256,)
    assert np.all(np.diff(m) > 0), "sorted, 256 distinct values"
    assert m[-1] == 1.0 and 0.0 in m
    assert (m[0] == -0.99296874) if signed else (m[0] == 0.0)
    exact = _exact_map(signed)
    # float32 arithmetic (linspace, midpoint, product) moves each value by a few ulp
    for got, want in zip(m.tolist(), exact):
        assert abs(Fraction(got) - want) <= 4 * abs(want) * Fraction(2) ** -24, (got, want)
    assert not m.flags.writeable


@pytest.mark.parametrize("signed", [True, False])
def test_map_matches_bitsandbytes(signed):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    assert np.array_equal(F.create_dynamic_map(signed=signed).numpy(), R.dynamic_map(signed))
    del torch


def _wide(rng, n, signed):
    x = rng.standard_normal(n).astype(np.float32)
    x *= np.float32(10.0) ** rng.integers(-9, 3, n).astype(np.float32)
    return x if signed else np.abs(x)


@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_the_nearest_map_value(signed):
    rng = np.random.default_rng(3)
    x = _wide(rng, 20 * BLOCK + 37, signed)
    codes, absmax = R.quantize_blockwise(x, signed)
    assert codes.dtype == np.uint8 and codes.shape == x.shape
    assert absmax.shape == (21,)
    blocks = np.concatenate([x, np.zeros(21 * BLOCK - x.size, np.float32)]).reshape(21, BLOCK)
    assert np.array_equal(absmax, np.abs(blocks).max(axis=1))
    m = R.dynamic_map(signed).astype(np.float64)
    s = (x.reshape(-1) * np.repeat(np.float32(1) / absmax, BLOCK)[:x.size]).astype(np.float64)
    dist = np.abs(s[:, None] - m[None, :])
    if not signed:  # exp_avg_sq: the nearest NONZERO value (never code 0)
        dist[:, 0] = np.inf
        assert codes.min() >= 1
    best = dist.min(axis=1)
    got = dist[np.arange(s.size), codes]
    # nearest up to the float32 rounding of the midpoint it is compared with
    assert np.all(got - best <= 2.0**-24 * np.abs(s) + 1e-45)


def test_exp_avg_sq_never_rounds_to_zero():
    """A tiny positive v (and a zero one) takes the smallest nonzero code, so
    a nonzero m beside it cannot step the weight by lr * m / eps."""
    x = np.zeros(2 * BLOCK, np.float32)
    x[0] = 1.0
    x[1:6] = [1e-7, 1e-9, 1e-30, 1e-45, 0.0]
    for quantize in (R.quantize_blockwise, _kernels.quantize_blockwise):
        codes, absmax = quantize(x, False)
        assert codes[0] == 255 and np.all(codes[1:6] == 1) and np.all(codes[BLOCK:] == 1)
        back = R.dequantize_blockwise(codes, absmax, False)
        assert back[1] == R.dynamic_map(False)[1] and np.all(back[BLOCK:] == 0)  # absmax 0
    assert R.quantize_blockwise(x, True)[0][2] == 127  # the signed map keeps its 0


@pytest.mark.parametrize("signed", [True, False])
def test_midpoint_ties_take_the_lower_code(signed):
    mid = R._midpoints(signed)
    first = 0 if signed else 1   # the unsigned map's first midpoint is -inf: code >= 1
    assert signed or mid[0] == -np.inf
    x = np.concatenate([mid[first:], [1.0]]).astype(np.float32)   # absmax 1: normalized = x
    codes, absmax = R.quantize_blockwise(x, signed)
    assert absmax[0] == 1.0
    assert np.array_equal(codes[:-1], np.arange(first, 255))
    above = np.nextafter(mid[first:], np.float32(2))
    codes, _ = R.quantize_blockwise(np.concatenate([above, [1.0]]).astype(np.float32), signed)
    assert np.array_equal(codes[:-1], np.arange(first + 1, 256))


@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_error_bound(signed):
    rng = np.random.default_rng(4)
    x = _wide(rng, 64 * BLOCK, signed)
    codes, absmax = R.quantize_blockwise(x, signed)
    y = R.dequantize_blockwise(codes, absmax, signed)
    m = R.dynamic_map(signed)
    half_gap = np.diff(m.astype(np.float64)).max() / 2 + 1e-7
    err = np.abs(y.astype(np.float64) - x) / np.repeat(absmax, BLOCK)
    assert err.max() <= half_gap
    # unsigned: each block's maximum comes back as itself (code 1.0), so the
    # round trip is a projection (signed blocks whose largest magnitude is
    # negative shrink by the map's -0.99296874 instead)
    if not signed:
        codes2, absmax2 = R.quantize_blockwise(y, signed)
        assert np.array_equal(absmax2, absmax)
        assert np.array_equal(codes2, codes)


def test_zero_and_nan_blocks():
    x = np.zeros(2 * BLOCK, np.float32)
    x[BLOCK + 3] = np.nan
    x[BLOCK + 4] = 0.5
    codes, absmax = R.quantize_blockwise(x, True)
    zero = int(np.nonzero(R.dynamic_map(True) == 0)[0][0])
    assert absmax[0] == 0 and np.all(codes[:BLOCK] == zero)
    assert np.isnan(absmax[1]) and codes[BLOCK + 3] == zero   # NaN normalizes to 0
    y = R.dequantize_blockwise(codes, absmax, True)
    assert np.all(y[:BLOCK] == 0) and np.all(np.isnan(y[BLOCK:]))


def test_dequantize_checks_sizes():
    with pytest.raises(ValueError, match="one scale per 256"):
        R.dequantize_blockwise(np.zeros(300, np.uint8), np.zeros(1, np.float32), True)
    with pytest.raises(TypeError, match="uint8"):
        R.dequantize_blockwise(np.zeros(300, np.int8), np.zeros(2, np.float32), True)


# ---------------------------------------------------------------------------
# The reference optimizer's int8 path


def test_reference_step_is_dequantize_update_requantize():
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal((40, 130)).astype(np.float32)
    grads = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(3)]
    p = p0.copy()
    opt = R.Adam([p], lr=0.01, state_dtype="int8", min_8bit_size=0)
    # by hand: float32 moments rounded through the codes after each step
    q = p0.copy()
    mc, ma = R.quantize_blockwise(np.zeros_like(q), True)
    vc, va = R.quantize_blockwise(np.zeros_like(q), False)
    for t, g in enumerate(grads, 1):
        opt.step([g])
        m = R.dequantize_blockwise(mc, ma, True)
        v = R.dequantize_blockwise(vc, va, False)
        R.adam_step(q, g, m, v, step=t, lr=0.01)   # fresh m, v step the parameter
        mc, ma = R.quantize_blockwise(m, True)
        vc, va = R.quantize_blockwise(v, False)
    st = opt.state_dict()["state"][0]
    assert np.array_equal(p, q)
    assert np.array_equal(st["exp_avg"], mc) and np.array_equal(st["exp_avg_absmax"], ma)
    assert np.array_equal(st["exp_avg_sq"], vc) and np.array_equal(st["exp_avg_sq_absmax"], va)
    assert st["exp_avg"].dtype == np.uint8 and st["exp_avg_absmax"].shape == (21,)


def test_small_tensors_keep_float32_state():
    ps = [np.ones(4095, np.float32), np.ones(4096, np.float32), np.ones(300, np.float32)]
    opt = R.Adam(ps, state_dtype="int8")
    opt.step([np.full(p.shape, 0.5, np.float32) for p in ps])
    st = opt.state_dict()["state"]
    assert st[0]["exp_avg"].dtype == np.float32 and "exp_avg_absmax" not in st[0]
    assert st[1]["exp_avg"].dtype == np.uint8 and st[1]["exp_avg_sq_absmax"].shape == (16,)
    assert st[2]["exp_avg"].dtype == np.float32
    opt = R.Adam([np.ones(300, np.float32), np.ones(255, np.float32)], state_dtype="int8",
                 min_8bit_size=0)
    opt.step([np.ones(300, np.float32), np.ones(255, np.float32)])
    st = opt.state_dict()["state"]
    assert st[0]["exp_avg"].dtype == np.uint8 and st[0]["exp_avg_absmax"].shape == (2,)
    assert st[1]["exp_avg"].dtype == np.float32   # smaller than one block


def test_int8_refuses_amsgrad_and_float64():
    with pytest.raises(ValueError, match="amsgrad"):
        R.Adam([np.ones(5000, np.float32)], state_dtype="int8", amsgrad=True).step(
            [np.ones(5000, np.float32)])
    with pytest.raises(ValueError, match="float64"):
        R.Adam([np.ones(5000)], state_dtype="int8").step([np.ones(5000)])
    with pytest.raises(TypeError, match="min_8bit_size must be an int"):
        R.Adam([np.ones(5000, np.float32)], state_dtype="int8", min_8bit_size=1.5)
