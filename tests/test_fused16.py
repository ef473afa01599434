"""The one-pass 16-bit loops (csrc/fused16.inc, avx2 and avx512 variants)
against adamc.reference, bit for bit on every variant.

With these hyperparameters every fused multiply-add of the update has one
exact product (beta1 = 0.75, beta2 = 0, no bias correction, a power-of-two
lr and weight decay), so the FMA variants round exactly as the reference
does and any difference would come from the vectorised conversions: round
to nearest and stochastic rounding to float16 (subnormal results included)
and bfloat16, the vectorised random bits, and the padded last partial
vector of a range."""

import os

import numpy as np
import pytest

import adamc
from _toolkit import state_of, step_on_threads
from adamc import reference

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16, F32 = np.dtype(np.float16), np.dtype(np.float32)
# the NaN and infinite inputs make the reference's NumPy warn
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

EXACT = {"lr": 2.0 ** -6, "betas": (0.75, 0.0), "bias_correction": False}

# (param dtype, gradient dtype, options): the instantiated combinations
COMBOS = [
    (BF16, BF16, {"master_weights": False, "state_dtype": "bfloat16"}),
    (F16, F16, {"master_weights": False, "state_dtype": "float16"}),
    (F32, F32, {"state_dtype": "bfloat16"}),
    (F32, F32, {"state_dtype": "float16"}),
    (BF16, BF16, {}),
    (F16, F16, {}),
    (BF16, BF16, {"state_dtype": "bfloat16"}),
    (F16, F16, {"state_dtype": "float16"}),
    (F32, BF16, {}),
    (F32, F16, {}),
]
MATH = [{}, {"amsgrad": True, "weight_decay": 2.0 ** -4},
        {"maximize": True, "weight_decay": 2.0 ** -3, "decoupled_weight_decay": True}]


def inputs(pdt, gdt, n, steps, seed):
    """Values over many binades: float16 subnormals and overflow in the
    state, with NaN and infinities among the first elements."""
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * 4).astype(np.float32)
    grads = [(rng.standard_normal(n) * 2.0 ** rng.integers(-16, 8, n)).astype(np.float32)
             for _ in range(steps)]
    if n >= 8:
        p[:3] = [np.nan, np.inf, -3e-6]
        grads[0][3:8] = [np.nan, -np.inf, 300.0, 2.0 ** -20, -(2.0 ** -14)]
    with np.errstate(over="ignore"):
        return p.astype(pdt), [g.astype(gdt) for g in grads]


def run(module, pdt, gdt, options, n, threads=1, steps=3, seed=0):
    p, grads = inputs(pdt, gdt, n, steps, seed)
    opt = module.Adam([p], **EXACT, **options)
    step_on_threads(opt, grads, threads)
    return p, state_of(opt, 0)


def same_bits(a, b, what):
    """Bit for bit, except that a NaN's sign and payload may differ (README:
    NaN payloads): NaNs only where the other has them."""
    assert a.dtype == b.dtype, what
    na, nb = np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32))
    np.testing.assert_array_equal(na, nb, err_msg=what)
    ints = np.uint16 if a.dtype.itemsize == 2 else np.uint32
    np.testing.assert_array_equal(a.view(ints)[~na], b.view(ints)[~nb], err_msg=what)


def assert_same_bits(pa, sa, pb, sb):
    same_bits(pa, pb, "param")
    assert sorted(sa) == sorted(sb)
    for k in sa:
        same_bits(sa[k], sb[k], k)


@pytest.mark.parametrize("pdt, gdt, options", COMBOS, ids=str)
@pytest.mark.parametrize("math", MATH, ids=lambda m: ",".join(m) or "default")
@pytest.mark.parametrize("sr", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("n", [5, 16, 37, 1003])
def test_fused_loops_match_the_reference_bitwise(variant, pdt, gdt, options, math, sr, n):
    options = {**options, **math}
    rounds16 = pdt.itemsize == 2 and options.get("master_weights") is False \
        or options.get("state_dtype") in ("bfloat16", "float16")
    if sr:
        if not rounds16:
            pytest.skip("nothing rounds stochastically in this combination")
        options = {**options, "stochastic_rounding": True, "seed": 99}
    pa, sa = run(adamc, pdt, gdt, options, n)
    pb, sb = run(reference, pdt, gdt, options, n)
    assert_same_bits(pa, sa, pb, sb)


@pytest.mark.parametrize("pdt, gdt, options", COMBOS[:4], ids=str)
def test_fused_loops_do_not_depend_on_the_thread_split(variant, pdt, gdt, options, clean_env):
    options = {**options, "stochastic_rounding": True, "seed": 5, "amsgrad": True}
    pa, sa = run(adamc, pdt, gdt, options, 70_001)
    os.environ["ADAMC_SERIAL_CUTOFF"] = "0"
    pc, sc = run(adamc, pdt, gdt, options, 70_001, threads=2)
    assert_same_bits(pa, sa, pc, sc)
    pb, sb = run(reference, pdt, gdt, options, 70_001)
    assert_same_bits(pa, sa, pb, sb)


def float16_edges(n, seed):
    """float32 values at float16's edges: around the largest finite value
    (65504; 65520 and up round to infinity), the normal/subnormal boundary
    2^-14, subnormal results and values below half the smallest subnormal,
    exact boundaries and signed zeros; first mixed at random (every vector
    with a few of each), then in runs of one kind (vectors with no overflow
    candidate take the conversion's fast path)."""
    rng = np.random.default_rng(seed)
    kinds = [rng.uniform(65000.0, 66000.0, n), 2.0 ** -14 * rng.uniform(0.9, 1.1, n),
             rng.uniform(0.0, 2.0 ** -14, n), 2.0 ** -24 * rng.uniform(0.0, 2.0, n),
             2.0 ** rng.uniform(-45.0, -24.0, n),
             # one float32 unit below a subnormal grid point: a rounding
             # to nearest of x + r 2^-40 would cross the point for a few r
             rng.integers(513, 1024, 64 * n) * 2.0 ** -24 - 2.0 ** -38]
    exact = np.array([0.0, 65504.0, 65519.996, 65520.0, 65535.996, 65536.0,
                      2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14 - 2.0 ** -37])
    runs = np.concatenate(kinds).astype(np.float32)
    mixed = rng.permutation(runs)
    g = np.concatenate([exact, mixed, runs]).astype(np.float32)
    return g * rng.choice(np.float32([-1.0, 1.0]), g.size)


@pytest.mark.parametrize("pdt, options", [
    (F32, {"state_dtype": "float16"}),
    (F16, {"master_weights": False, "state_dtype": "float16"}),
], ids=["fp32-params", "all-fp16"])
def test_float16_stochastic_rounding_at_the_range_edges(variant, pdt, options):
    """The vectorised float16 stochastic rounding (a truncating conversion,
    with a branch for vectors that may overflow) gives the reference's bits
    over float16's edges: parameters start at the edge values and move by
    2^-20 of an update; the gradients are 4x the edge values, so that the
    first step's exp_avg, a quarter of the gradient, is.  Several steps:
    several random draws per value."""
    options = {**options, "stochastic_rounding": True, "seed": 3, "betas": (0.75, 0.0),
               "lr": 2.0 ** -20, "bias_correction": False}
    with np.errstate(over="ignore"):
        p0 = float16_edges(200, 10).astype(pdt)
        grads = [(4 * float16_edges(200, s)).astype(pdt) for s in range(4)]
    out = []
    for module in (adamc, reference):
        p = p0.copy()
        opt = module.Adam([p], **options)
        step_on_threads(opt, grads, None)
        out.append((p, state_of(opt, 0)))
    assert_same_bits(*out[0], *out[1])
