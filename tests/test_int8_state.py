"""8-bit blockwise-quantized Adam state (state_dtype="int8", issue 13).

The compiled kernels against the reference (the format itself:
test_int8_format.py); the optimizers' int8 path end to end.
"""

import numpy as np
import pytest

import adamc
from adamc import _kernels, _spec
from adamc import reference as R

BLOCK = _spec.QUANT_BLOCK

# ---------------------------------------------------------------------------
# The compiled kernels against the reference


@pytest.fixture
def variant():
    old = _kernels.kernel_name()
    yield _kernels.use_variant
    _kernels.use_variant(old)


def _variants():
    return _kernels.variants()[1]


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("signed", [True, False])
def test_c_quantization_matches_reference_around_every_midpoint(variant, signed, name):
    """Each variant's quantizer (the code its step uses) gives the
    reference's codes, bit for bit."""
    if name not in _variants():
        pytest.skip(f"{name} not available on this CPU/build")
    variant(name)
    mid = R._midpoints(signed)
    # each midpoint and its 8 float32 neighbours each side, a dense grid of
    # [-1, 1], zeros, tiny values, values beyond 1 and NaN; absmax 1 or 2
    near = (mid.view(np.int32)[:, None] + np.arange(-8, 9, dtype=np.int32)[None, :]).ravel()
    grid = np.linspace(-1, 1, 2_000_001, dtype=np.float32)
    extra = np.array([0.0, -0.0, 1e-38, -1e-38, 1e-7, -1e-7, 1.5, -1.5, np.nan], np.float32)
    vals = np.concatenate([near.view(np.float32), grid, extra])
    vals = np.concatenate([vals, np.zeros(-vals.size % (BLOCK - 1), np.float32)])
    rows = vals.reshape(-1, BLOCK - 1)
    for top in (1.0, 2.0):   # one element per block fixes the scale
        x = np.concatenate([rows, np.full((rows.shape[0], 1), top, np.float32)], axis=1)
        x = np.ascontiguousarray(x[:, ::-1]).ravel()
        if not signed:
            x = np.abs(x)
        c, a = _kernels.quantize_blockwise(x, signed)
        rc, ra = R.quantize_blockwise(x, signed)
        np.testing.assert_array_equal(a.view(np.uint32), ra.view(np.uint32))
        np.testing.assert_array_equal(c, rc)


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("signed", [True, False])
def test_c_quantization_ragged_tail_and_nan(variant, signed, name):
    """Lengths that end inside a block and inside a vector, a NaN in the last
    vector's tail: each variant's codes and scales are the reference's."""
    if name not in _variants():
        pytest.skip(f"{name} not available on this CPU/build")
    variant(name)
    rng = np.random.default_rng(5)
    for n in (1, 7, 15, 17, 255, 257, 1000 + 7):
        x = rng.standard_normal(n).astype(np.float32)
        x = x if signed else np.abs(x)
        for y in (x, np.concatenate([x[:-1], [np.nan]]).astype(np.float32)):
            c, a = _kernels.quantize_blockwise(y, signed)
            rc, ra = R.quantize_blockwise(y, signed)
            np.testing.assert_array_equal(a.view(np.uint32), ra.view(np.uint32))
            np.testing.assert_array_equal(c, rc)


def _run_pair(pdtype, options, shapes=((70, 300), (4099,), (300,)), steps=4, seed=0,
              grad_dtype=None, factor=None):
    rng = np.random.default_rng(seed)
    ps = [(rng.standard_normal(s) * 0.5).astype(pdtype) for s in shapes]
    qs = [p.copy() for p in ps]
    o = adamc.Adam(ps, **options)
    r = R.Adam(qs, **options)
    for _ in range(steps):
        gs = [(rng.standard_normal(s) * 0.1).astype(grad_dtype or pdtype) for s in shapes]
        if factor:
            o.step(gs, **factor)
            r.step(gs, **factor)
        else:
            o.step(gs)
            r.step(gs)
    return ps, qs, o.state_dict(), r.state_dict()


def _same(a, b):
    if not isinstance(a, np.ndarray):
        return a == b
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.array_equal(a.ravel(order="K").view(np.uint8),
                               b.ravel(order="K").view(np.uint8)))


def _combos():
    out = [
        (np.float32, {}),
        (np.float32, {"weight_decay": 0.1}),
        (np.float32, {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
        (np.float32, {"eps_mode": "hat", "betas": (0.5, 0.9)}),
        (np.float32, {"eps_mode": "inside", "bias_correction": False}),
        (np.float16, {}),
        (np.float16, {"master_weights": False}),
        (np.float16, {"master_weights": False, "stochastic_rounding": True, "seed": 7}),
    ]
    try:
        import ml_dtypes
    except ImportError:  # optional: bfloat16 cases only where it imports
        return out
    return out + [(ml_dtypes.bfloat16, {}), (ml_dtypes.bfloat16, {"master_weights": False}),
                  (ml_dtypes.bfloat16, {"master_weights": False, "stochastic_rounding": True,
                                        "seed": 3})]


@pytest.mark.parametrize("pdtype,options", _combos(),
                         ids=lambda x: getattr(x, "__name__", None) or str(x))
def test_baseline_is_bitwise_the_reference(variant, pdtype, options):
    variant("baseline")
    opts = {"lr": 0.01, "state_dtype": "int8", "min_8bit_size": 1000, **options}
    ps, qs, a, b = _run_pair(pdtype, opts)
    for p, q in zip(ps, qs):
        assert _same(p, q)
    assert a["state"][0]["exp_avg"].dtype == np.uint8
    assert a["state"][2]["exp_avg"].dtype == np.float32   # below min_8bit_size
    for i in a["state"]:
        for k in a["state"][i]:
            assert _same(a["state"][i][k], b["state"][i][k]), (i, k)


def test_baseline_fused_step_and_float64_grads(variant):
    variant("baseline")
    opts = {"lr": 0.01, "state_dtype": "int8", "min_8bit_size": 0}
    ps, qs, a, b = _run_pair(np.float32, opts, grad_dtype=np.float64,
                             factor={"grad_scale": 4.0, "max_grad_norm": 0.5})
    for p, q in zip(ps, qs):
        assert _same(p, q)


@pytest.mark.parametrize("name", ["avx2", "avx512"])
def test_fma_variants_within_bound(variant, name):
    """FMA variants: each step's update is within an ulp or so of the baseline's;
    a moment within an ulp of a midpoint may take the neighbouring code (one
    step of the map, times the block's scale), which moves later steps by about
    that much: the bound is checked on the parameters after 4 steps."""
    if name not in _variants():
        pytest.skip(f"{name} not available on this CPU")
    opts = {"lr": 0.01, "state_dtype": "int8", "min_8bit_size": 0}
    variant(name)
    ps, qs, a, b = _run_pair(np.float32, opts)
    for p, q in zip(ps, qs):
        # lr 0.01, 4 steps: an update moves by at most ~lr per step
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5)
    for i in a["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            ca, cb = a["state"][i][k], b["state"][i][k]
            if ca.dtype == np.uint8:
                assert np.abs(ca.astype(int) - cb.astype(int)).max() <= 1
                assert np.mean(ca != cb) < 0.01


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
def test_one_and_two_threads_bitwise(variant, name):
    if name not in _variants():
        pytest.skip(f"{name} not available on this CPU")
    variant(name)
    res = []
    for threads in (1, 2):
        adamc.set_num_threads(threads)
        try:
            shapes = [(300_017,), (1000, 257), (5000,)]
            res.append(_run_pair(np.float32, {"lr": 0.01, "state_dtype": "int8"},
                                 shapes=shapes, steps=3)[::2])
        finally:
            adamc.set_num_threads(None)
    (p1, s1), (p2, s2) = res
    for a, b in zip(p1, p2):
        assert _same(a, b)
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert _same(s1["state"][i][k], s2["state"][i][k])


def test_blocks_never_split_by_chunks(variant, monkeypatch):
    """Tiny chunks (ADAMC_CHUNK) cut tensors at every place: same bits."""
    variant("baseline")
    opts = {"lr": 0.01, "state_dtype": "int8", "min_8bit_size": 0}
    shapes = [(3001,), (700, 33), (257,)]
    base = _run_pair(np.float32, opts, shapes=shapes, steps=2)
    monkeypatch.setenv("ADAMC_CHUNK", "1000")
    adamc.set_num_threads(2)
    try:
        cut = _run_pair(np.float32, opts, shapes=shapes, steps=2)
    finally:
        adamc.set_num_threads(None)
    for a, b in zip(base[0], cut[0]):
        assert _same(a, b)


# ---------------------------------------------------------------------------
# state_dict, memory, bad input


def test_state_nbytes_int8_is_a_quarter():
    n = 1 << 20
    a = adamc.Adam([np.ones(n, np.float32)])
    b = adamc.Adam([np.ones(n, np.float32)], state_dtype="int8")
    assert a.state_nbytes() == 0
    for o in (a, b):
        o.step([np.full(n, 0.1, np.float32)])
    assert a.state_nbytes() == 8 * n
    assert b.state_nbytes() == 2 * n + 2 * 4 * (n // 256)
    assert b.state_nbytes() <= 0.27 * a.state_nbytes()


@pytest.mark.parametrize("module", [adamc, R], ids=["adamc", "reference"])
def test_state_dict_round_trip_is_bitwise(module):
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal((64, 100)).astype(np.float32)
    gs = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(6)]
    p = p0.copy()
    o = module.Adam([p], lr=0.01, state_dtype="int8", min_8bit_size=0)
    for g in gs:
        o.step([g])
    q = p0.copy()
    o2 = module.Adam([q], lr=0.01, state_dtype="int8", min_8bit_size=0)
    for g in gs[:3]:
        o2.step([g])
    sd = o2.state_dict()
    assert sd["quant_map_version"] == 1
    q2 = q.copy()
    o3 = module.Adam([q2], lr=0.01, state_dtype="int8", min_8bit_size=0)
    o3.load_state_dict(sd)
    for g in gs[3:]:
        o3.step([g])
    assert _same(q2, p)


def test_checkpoint_round_trip(tmp_path):
    from adamc.checkpoint import load_state, save_state
    rng = np.random.default_rng(2)
    p = rng.standard_normal(5000).astype(np.float32)
    o = adamc.Adam([p], lr=0.01, state_dtype="int8")
    o.step([rng.standard_normal(5000).astype(np.float32)])
    save_state(o, tmp_path / "s.npz")
    o2 = adamc.Adam([p.copy()], lr=0.01, state_dtype="int8")
    load_state(o2, tmp_path / "s.npz")
    a, b = o.state_dict()["state"][0], o2.state_dict()["state"][0]
    for k in a:
        assert _same(a[k], b[k])


def test_full_precision_state_is_quantized_on_load():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(5000).astype(np.float32)
    o = adamc.Adam([p.copy()], lr=0.01)
    o.step([rng.standard_normal(5000).astype(np.float32)])
    sd = o.state_dict()
    o8 = adamc.Adam([p.copy()], lr=0.01, state_dtype="int8")
    # a state_dict carries its groups' options: ask for 8-bit state in it
    sd["param_groups"][0]["state_dtype"] = "int8"
    o8.load_state_dict(sd)
    st = o8.state_dict()["state"][0]
    for k, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        codes, scales = R.quantize_blockwise(sd["state"][0][k], signed)
        assert np.array_equal(st[k], codes)
        assert np.array_equal(st[k.replace("exp_avg", "exp_avg") + "_absmax"], scales)
        back = R.dequantize_blockwise(st[k], st[k + "_absmax"], signed)
        np.testing.assert_allclose(back, sd["state"][0][k],
                                   atol=float(scales.max()) * 0.008)
    # and back: dequantized values into a float32-state optimizer
    sd8 = o8.state_dict()
    back = {"step": sd8["state"][0]["step"]}
    for k, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        back[k] = R.dequantize_blockwise(sd8["state"][0][k], sd8["state"][0][k + "_absmax"],
                                         signed)
    sd32 = {"state": {0: back}, "param_groups": sd8["param_groups"]}
    sd32["param_groups"][0]["state_dtype"] = None
    o32 = adamc.Adam([p.copy()], lr=0.01)
    o32.load_state_dict(sd32)
    assert np.array_equal(o32.state_dict()["state"][0]["exp_avg"], back["exp_avg"])


def _int8_sd():
    rng = np.random.default_rng(4)
    o = adamc.Adam([rng.standard_normal(5000).astype(np.float32)], state_dtype="int8")
    o.step([rng.standard_normal(5000).astype(np.float32)])
    return o.state_dict()


def _bad(mutate):
    sd = _int8_sd()
    mutate(sd["state"][0])
    return sd


@pytest.mark.parametrize("mutate,match", [
    (lambda e: e["exp_avg_absmax"].__setitem__(3, np.nan), "has a non-finite scale"),
    (lambda e: e["exp_avg_sq_absmax"].__setitem__(0, -1.0), "has a negative scale"),
    (lambda e: e.__setitem__("exp_avg_absmax", e["exp_avg_absmax"][:-1]), r"shape \(20,\)"),
    (lambda e: e.__setitem__("exp_avg", e["exp_avg"][:-1]), "shape"),
    (lambda e: e.pop("exp_avg_sq_absmax"), "no 'exp_avg_sq_absmax'"),
], ids=["nan-scale", "negative-scale", "short-scales", "short-codes", "no-scales"])
def test_bad_int8_state_is_refused_and_nothing_changes(mutate, match):
    rng = np.random.default_rng(5)
    p = rng.standard_normal(5000).astype(np.float32)
    o = adamc.Adam([p], state_dtype="int8")
    o.step([rng.standard_normal(5000).astype(np.float32)])
    before = o.state_dict()
    with pytest.raises(ValueError, match=match):
        o.load_state_dict(_bad(mutate))
    after = o.state_dict()
    for k in before["state"][0]:
        assert _same(before["state"][0][k], after["state"][0][k])


def test_int8_state_into_another_layout_is_refused():
    sd = _int8_sd()
    o = adamc.Adam([np.ones(5000, np.float32)])
    for key, value in (("state_dtype", None), ("min_8bit_size", 10_000)):
        bad = {"state": sd["state"], "param_groups": [{**sd["param_groups"][0], key: value}]}
        with pytest.raises(ValueError, match="holds 8-bit codes"):
            o.load_state_dict(bad)
        assert o.state_dict()["state"] == {}
        assert o.param_groups[0]["state_dtype"] is None
    for version in (3, 2):   # unknown; dynamic-map codes said to be version 2
        sd["quant_map_version"] = version
        with pytest.raises(ValueError, match="quant_map_version"):
            adamc.Adam([np.ones(5000, np.float32)], state_dtype="int8").load_state_dict(sd)


def test_least_squares_converges_like_float32_state():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((512, 64)).astype(np.float32)
    x_true = rng.standard_normal((64, 128)).astype(np.float32)
    B = A @ x_true + 0.01 * rng.standard_normal((512, 128)).astype(np.float32)
    losses = {}
    for sd in (None, "int8"):
        X = np.zeros((64, 128), np.float32)
        opt = adamc.Adam([X], lr=0.05, state_dtype=sd)
        for t in range(600):
            R_ = A @ X - B
            opt.step([(A.T @ R_ / A.shape[0]).astype(np.float32)])
        losses[sd] = float(np.mean((A @ X - B) ** 2))
    assert losses["int8"] <= losses[None] * 1.01 + 1e-6, losses


@pytest.mark.parametrize("module", [adamc, R], ids=["adamc", "reference"])
def test_functional_int8_step_matches_the_optimizer(module, variant):
    variant("baseline")
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal((33, 100)).astype(np.float32)
    gs = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(3)]
    p = p0.copy()
    mc, ma = R.quantize_blockwise(np.zeros_like(p), True)
    vc, va = R.quantize_blockwise(np.zeros_like(p), False)
    for t, g in enumerate(gs, 1):
        module.adam_step(p, g, mc, vc, step=t, lr=0.01, weight_decay=0.1,
                         exp_avg_absmax=ma, exp_avg_sq_absmax=va)
    q = p0.copy()
    o = R.Adam([q], lr=0.01, weight_decay=0.1, state_dtype="int8", min_8bit_size=0)
    for g in gs:
        o.step([g])
    st = o.state_dict()["state"][0]
    assert _same(p, q)
    assert _same(mc, st["exp_avg"]) and _same(ma, st["exp_avg_absmax"])
    assert _same(vc, st["exp_avg_sq"]) and _same(va, st["exp_avg_sq_absmax"])


@pytest.mark.parametrize("module", [adamc, R], ids=["adamc", "reference"])
def test_functional_int8_bad_buffers(module):
    p = np.ones(600, np.float32)
    g = np.full(600, 0.1, np.float32)
    c = np.zeros(600, np.uint8)
    a = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="pass exp_avg_absmax="):
        module.adam_step(p, g, c, c.copy(), step=1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        module.adam_step(p, g, c, c.copy(), step=1, exp_avg_absmax=a[:2],
                         exp_avg_sq_absmax=a.copy())
    with pytest.raises(TypeError, match="uint8 codes"):
        module.adam_step(p, g, c, np.zeros(600, np.float32), step=1, exp_avg_absmax=a,
                         exp_avg_sq_absmax=a.copy())
    with pytest.raises(ValueError, match="amsgrad"):
        module.adam_step(p, g, c, c.copy(), step=1, exp_avg_absmax=a,
                         exp_avg_sq_absmax=a.copy(), amsgrad=True,
                         max_exp_avg_sq=np.zeros(600, np.float32))
    with pytest.raises(ValueError, match="go with uint8"):
        module.adam_step(p, g, np.zeros(600, np.float32), np.zeros(600, np.float32),
                         step=1, exp_avg_absmax=a)
    assert np.all(p == 1) and np.all(c == 0) and np.all(a == 0)
    # a negative scale: no step writes one (issue 13's corrupted scale)
    bad = np.array([0.5, -1.0, 0.0], np.float32)
    with pytest.raises(ValueError, match=r"exp_avg_sq_absmax\[1\] is -1.0: a block's scale"):
        module.adam_step(p, g, c, c.copy(), step=1, exp_avg_absmax=a, exp_avg_sq_absmax=bad)
    assert np.all(p == 1) and np.all(c == 0) and np.all(a == 0) and bad[1] == -1


def test_fortran_order_blocks_follow_memory(variant):
    variant("baseline")
    rng = np.random.default_rng(6)
    p = np.asfortranarray(rng.standard_normal((300, 70)).astype(np.float32))
    q = p.copy(order="K")
    o = adamc.Adam([p], state_dtype="int8", lr=1e-2)
    r = R.Adam([q], state_dtype="int8", lr=1e-2)
    for _ in range(3):
        g = np.asfortranarray(rng.standard_normal(p.shape).astype(np.float32))
        o.step([g])
        r.step([g])
    a, b = o.state_dict()["state"][0], r.state_dict()["state"][0]
    assert _same(p, q) and a["exp_avg"].flags.f_contiguous
    for k in a:
        assert _same(a[k], b[k])
    codes, scales = R.quantize_blockwise(
        R.dequantize_blockwise(a["exp_avg"], a["exp_avg_absmax"], True), True)
    assert codes.flags.f_contiguous and scales.shape == a["exp_avg_absmax"].shape
    # codes in the other memory order (bitsandbytes' and torchao's are C order)
    # load by value: dequantized in their order, quantized in the parameter's
    sd = o.state_dict()
    e = sd["state"][0]
    c_codes = [R.quantize_blockwise(np.ascontiguousarray(R.dequantize_blockwise(
        e[k], e[k + "_absmax"], k == "exp_avg")), k == "exp_avg") for k in ("exp_avg", "exp_avg_sq")]
    (e["exp_avg"], e["exp_avg_absmax"]), (e["exp_avg_sq"], e["exp_avg_sq_absmax"]) = c_codes
    assert e["exp_avg"].flags.c_contiguous and not e["exp_avg"].flags.f_contiguous
    loaded = adamc.Adam([p.copy(order="K")], state_dtype="int8")
    loaded.load_state_dict(sd)
    got = loaded.state_dict()["state"][0]
    for k, (codes, scales) in zip(("exp_avg", "exp_avg_sq"), c_codes):
        values = np.asfortranarray(R.dequantize_blockwise(codes, scales, k == "exp_avg"))
        want = R.quantize_blockwise(values, k == "exp_avg")
        assert got[k].flags.f_contiguous and _same(got[k], want[0])
        assert _same(got[k + "_absmax"], want[1])
    strided = np.zeros((300, 140), np.uint8)[:, ::2]
    strided[...] = sd["state"][0]["exp_avg"]
    sd["state"][0]["exp_avg"] = strided
    with pytest.raises(ValueError, match="is not contiguous"):
        adamc.Adam([p.copy(order="K")], state_dtype="int8").load_state_dict(sd)


@pytest.mark.parametrize("module", [adamc, R])
def test_an_edited_quant_map_never_relabels_existing_codes(module):
    """After codes exist, quant_map in param_groups cannot change (step()
    refuses); state_dict(), checkpoints, deepcopy and pickle keep the map
    the codes index, so nothing ever decodes them with the other map."""
    import copy
    import pickle
    rng = np.random.default_rng(3)
    ps = [rng.standard_normal(2048).astype(np.float32) for _ in range(2)]
    gs = [[rng.standard_normal(2048).astype(np.float32) for _ in range(2)] for _ in range(3)]
    groups = [{"params": [ps[0]], "quant_map": "dynamic"}, {"params": [ps[1]], "quant_map": "pow2"}]
    opt = module.Adam(groups, lr=1e-2, state_dtype="int8", min_8bit_size=256)
    twin = module.Adam([{"params": [p.copy()], "quant_map": q} for p, q in
                        zip(ps, ("dynamic", "pow2"))], lr=1e-2, state_dtype="int8", min_8bit_size=256)
    opt.step(gs[0])
    twin.step(gs[0])
    opt.param_groups[0]["quant_map"] = "pow2"           # refused at the next step
    with pytest.raises(ValueError, match="index the 'dynamic' map"):
        opt.step(gs[1])
    sd = opt.state_dict()
    assert [g["quant_map"] for g in sd["param_groups"]] == ["dynamic", "pow2"]
    fresh = module.Adam([{"params": [p.copy()]} for p in ps], lr=1e-2, state_dtype="int8", min_8bit_size=256)
    fresh.load_state_dict(sd)                           # decodes as written
    for c in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        with pytest.raises(ValueError, match="index the 'dynamic' map"):
            c.step(gs[1])
    qs = fresh.param_groups[0]["params"] + fresh.param_groups[1]["params"]
    for g in gs[1:]:
        fresh.step(g)
        twin.step(g)
    for q, t in zip(qs, twin.param_groups[0]["params"] + twin.param_groups[1]["params"]):
        np.testing.assert_array_equal(q, t)
