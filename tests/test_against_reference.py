"""adamc's compiled step against adamc.reference, over dtype x option x layout x steps."""

import numpy as np
import pytest

import adamc
from adamc import reference

from _toolkit import (DTYPES, LAYOUTS, OPTION_CASES, SLOT_NAMES, assert_guards_intact,
                      assert_matches, functional_kwargs, option_id, random_array, random_like)

STEPS = 12

# every test here runs once per kernel variant the CPU can run
pytestmark = pytest.mark.usefixtures("variant")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", OPTION_CASES, ids=option_id)
@pytest.mark.parametrize("shape,layout", LAYOUTS, ids=lambda x: str(x))
def test_functional_step(rng, dtype, opt, shape, layout):
    kw = functional_kwargs(opt)
    p = random_array(rng, shape, dtype, layout)
    bufs = [random_like(rng, p, scale=0.0) for _ in SLOT_NAMES]  # moments start at zero
    pr = p.copy(order="K")
    ref_bufs = [b.copy(order="K") for b in bufs]
    for t in range(1, STEPS + 1):
        g = random_like(rng, p, scale=10.0 ** rng.integers(-3, 3))
        adamc.adam_step(p, g, bufs[0], bufs[1], step=t, lr=1e-2,
                        max_exp_avg_sq=bufs[2], **kw)
        reference.adam_step(pr, g, ref_bufs[0], ref_bufs[1], step=t, lr=1e-2,
                            max_exp_avg_sq=ref_bufs[2], **kw)
    assert_matches(p, pr, STEPS, "param")
    for name, a, b in zip(SLOT_NAMES, bufs, ref_bufs):
        assert_matches(a, b, STEPS, name)
    # layout untouched: still the same kind of array, nothing written around it
    assert p.flags.c_contiguous or p.flags.f_contiguous
    assert_guards_intact(p, "param")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", OPTION_CASES, ids=option_id)
def test_optimizer_many_params(rng, dtype, opt):
    """Every layout in one optimizer, stepped together, against the reference optimizer."""
    params = [random_array(rng, s, dtype, lay) for s, lay in LAYOUTS]
    ref_params = [p.copy(order="K") for p in params]
    cls, rcls = (adamc.Adam, reference.Adam)
    o = cls(params, lr=3e-3, **opt)
    r = rcls(ref_params, lr=3e-3, **opt)
    for _ in range(STEPS):
        grads = [random_like(rng, p) for p in params]
        o.step(grads)
        r.step(grads)
    for i, (a, b) in enumerate(zip(params, ref_params)):
        assert_matches(a, b, STEPS, f"param {i}")
        assert_guards_intact(a, f"param {i}")
    so, sr = o.state_dict(), r.state_dict()
    assert so["param_groups"] == sr["param_groups"]
    assert so["state"].keys() == sr["state"].keys()
    for i in so["state"]:
        assert so["state"][i]["step"] == sr["state"][i]["step"] == STEPS
        for k in so["state"][i]:
            if k != "step":
                assert_matches(so["state"][i][k], sr["state"][i][k], STEPS, f"{k} {i}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_class(rng, dtype):
    p = random_array(rng, (33,), dtype, "C")
    q = p.copy()
    o = adamc.AdamW([p], lr=0.01)
    r = reference.Adam([q], lr=0.01, weight_decay=1e-2, decoupled_weight_decay=True)
    assert o.defaults["weight_decay"] == 1e-2 and o.defaults["decoupled_weight_decay"]
    for _ in range(5):
        g = random_like(rng, p)
        o.step([g])
        r.step([g])
    assert_matches(p, q, 5)


def test_mixed_dtypes_one_optimizer(rng):
    ps = [random_array(rng, (100,), np.float32, "C"), random_array(rng, (50,), np.float64, "C")]
    qs = [p.copy() for p in ps]
    o, r = adamc.Adam(ps), reference.Adam(qs)
    for _ in range(4):
        gs = [random_like(rng, p) for p in ps]
        o.step(gs)
        r.step(gs)
    for a, b in zip(ps, qs):
        assert_matches(a, b, 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_gradients_propagate_like_reference(rng, dtype):
    p = random_array(rng, (64,), dtype, "C")
    q = p.copy()
    o = adamc.Adam([p], amsgrad=True)
    r = reference.Adam([q], amsgrad=True)
    for t in range(4):
        g = random_like(rng, p)
        g[t] = np.nan
        g[10 + t] = np.inf
        g[20 + t] = -np.inf
        o.step([g])
        with np.errstate(invalid="ignore", over="ignore"):
            r.step([g])
    np.testing.assert_array_equal(np.isnan(p), np.isnan(q))
    assert np.isnan(p).any()
    assert_matches(p, q, 4)


def test_large_lerp_weight_gives_exact_gradient(rng):
    """beta1 = 0 makes exp_avg the gradient itself, exactly (torch's lerp branch)."""
    p = random_array(rng, (40,), np.float32, "C")
    o = adamc.Adam([p], betas=(0.0, 0.999))
    g = random_like(rng, p)
    o.step([g])
    np.testing.assert_array_equal(o.state_dict()["state"][0]["exp_avg"], g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("prefetch", [True, False])
def test_roofline_probe_adds_the_gradient(rng, dtype, threads, prefetch, monkeypatch,
                                          restore_threads):
    """The benchmarks' probes run the step's loop (with and without its
    prefetches) with one add per array: exactly p+g, m+g, v+g, whatever
    the size (below, at and above the prefetch threshold of 1 MiB a stream)
    and split."""
    from adamc import _kernels

    monkeypatch.setenv("ADAMC_SERIAL_CUTOFF", "0")
    adamc.set_num_threads(threads)
    sizes = [1, 63, 8191, 2**17 - 1, 2**17 + 1, 2**18, 2**18 + 1, 600_001]
    quads = [tuple(random_array(rng, (n,), dtype, "offset") for _ in range(4)) for n in sizes]
    want = [(p + g, g.copy(), m + g, v + g) for p, g, m, v in quads]
    _kernels.probe_buffers(quads, prefetch)
    for n, got, exp in zip(sizes, quads, want):
        for name, a, b in zip("pgmv", got, exp):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, n={n}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", [{}, {"amsgrad": True, "weight_decay": 0.1}], ids=option_id)
@pytest.mark.parametrize("threads", [1, 2])
def test_prefetched_ranges_match_reference(rng, dtype, opt, threads, monkeypatch,
                                           restore_threads):
    """Ranges of 1 MiB a stream or more run with software prefetch (and
    amsgrad prefetches a fifth stream): unaligned buffers just below and
    above that size, on one thread and split across two."""
    monkeypatch.setenv("ADAMC_SERIAL_CUTOFF", "0")
    adamc.set_num_threads(threads)
    n_min = (1 << 20) // np.dtype(dtype).itemsize
    for n in (n_min - 1, 2 * n_min + 1001):
        p = random_array(rng, (n,), dtype, "offset")
        q = p.copy()
        o = adamc.Adam([p], lr=1e-2, **opt)
        r = reference.Adam([q], lr=1e-2, **opt)
        for _ in range(3):
            g = random_like(rng, p)
            o.step([g])
            r.step([g])
        assert_matches(p, q, 3, f"param, n={n}")
        assert_guards_intact(p, f"param, n={n}")
