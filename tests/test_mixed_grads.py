"""Gradients of the other float dtype (float32 parameter with float64
gradient, and the reverse): converted to the parameter's dtype in registers
(round to nearest), never copied, in every entry point."""

import tracemalloc

import numpy as np
import pytest

import adamc
from adamc import _spec, reference
from _toolkit import step_on_threads

PAIRS = [(np.float32, np.float64), (np.float64, np.float32)]
OPTIONS = [{}, {"amsgrad": True, "weight_decay": 0.1}, {"maximize": True, "eps_mode": "hat"},
           {"weight_decay": 0.05, "decoupled_weight_decay": True, "eps_mode": "inside"}]


def run(module, p0, grads, options, threads):
    p = p0.copy(order="K")
    opt = module.Adam([p], lr=1e-2, **options)
    step_on_threads(opt, grads, threads)
    return p, opt.state_dict()["state"][0]


@pytest.mark.parametrize("pdtype, gdtype", PAIRS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("n, threads", [(1001, 1), (300_007, 2)])
def test_mixed_gradients_equal_converting_first(variant, pdtype, gdtype, options, n, threads):
    rng = np.random.default_rng(n)
    p0 = rng.standard_normal(n).astype(pdtype)
    grads = [(rng.standard_normal(n) * 3).astype(gdtype) for _ in range(4)]
    mixed, st = run(adamc, p0, grads, options, threads)
    cast, st_cast = run(adamc, p0, [g.astype(pdtype) for g in grads], options, threads)
    np.testing.assert_array_equal(mixed, cast)  # bitwise: the conversion is the cast
    for k in _spec.SLOT_NAMES:
        if k in st:
            np.testing.assert_array_equal(st[k], st_cast[k])
    ref, _ = run(reference, p0, grads, options, 1)
    if variant == "baseline":
        np.testing.assert_array_equal(mixed, ref)
    else:
        np.testing.assert_allclose(mixed, ref, rtol=0, atol=64 * np.finfo(pdtype).eps)


@pytest.mark.parametrize("pdtype, gdtype", PAIRS)
def test_functional_and_f_order(variant, pdtype, gdtype):
    rng = np.random.default_rng(5)
    p0 = np.asfortranarray(rng.standard_normal((9, 4)).astype(pdtype))
    g = np.asfortranarray(rng.standard_normal((9, 4)).astype(gdtype))
    outs = []
    for module, grad in ((adamc, g), (adamc, g.astype(pdtype)), (reference, g)):
        p, m, v = p0.copy(order="F"), np.zeros_like(p0), np.zeros_like(p0)
        for t in (1, 2, 3):
            module.adam_step(p, grad, m, v, step=t, lr=1e-2, weight_decay=0.01)
        outs.append(p)
    np.testing.assert_array_equal(outs[0], outs[1])
    if variant == "baseline":
        np.testing.assert_array_equal(outs[0], outs[2])


def test_float64_gradient_for_float32_parameter_is_not_copied():
    n = 2_000_000
    p = np.zeros(n, dtype=np.float32)
    g = np.full(n, 0.5)  # float64: a float32 copy would be 8 MB
    opt = adamc.Adam([p])
    opt.step([g])  # state allocated here
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        opt.step([g])
        adamc.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the functional call's two zero buffers are 16 MB; a copy would add 8 MB
    assert peak < 2 * 4 * n + 1_000_000, peak


@pytest.mark.parametrize("module", [adamc, reference])
def test_other_gradient_dtypes_are_still_refused(module):
    p = np.ones(4, dtype=np.float32)
    opt = module.Adam([p])
    for g, exc, msg in [
        (np.ones(4, dtype=np.complex64), TypeError, r"grads\[0\] must have dtype float32 or float64"),
        (np.ones(4, dtype=np.int64), TypeError, "float32 or float64"),
        (np.ones(5), ValueError, r"grads\[0\] has shape \(5,\) but params\[0\] has shape"),
        (np.ones(4, dtype=">f8"), TypeError, "non-native byte order"),
    ]:
        with pytest.raises(exc, match=msg):
            opt.step([g])
        np.testing.assert_array_equal(p, 1)
    # a float64 gradient over the float32 parameter's bytes is still aliasing
    buf = np.ones(8, dtype=np.float32)
    q = buf[:4]
    opt = module.Adam([q])
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[0\]"):
        opt.step([buf.view(np.float64)])
    np.testing.assert_array_equal(q, 1)
