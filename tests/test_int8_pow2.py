"""8-bit state with map version 2 (quant_map="pow2", docs/int8-state.md):
the format, every variant and thread count against adamc.reference bit for
bit, state_dicts and checkpoints, the converters."""

import struct

import numpy as np
import pytest

import adamc
from adamc import _kernels, _spec, checkpoint, interop
from adamc import reference as R
from _toolkit import step_on_threads

BLOCK = _spec.QUANT_BLOCK
POW2 = {"state_dtype": "int8", "quant_map": "pow2"}
# every fused multiply-add of the update has one exact product with these
# (tests/test_fused16.py): the FMA variants then round as the reference does
EXACT = {"lr": 2.0 ** -6, "betas": (0.75, 0.0), "bias_correction": False}
# the NaN and infinite inputs make the reference's NumPy warn
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture
def variant():
    old = _kernels.kernel_name()
    yield _kernels.use_variant
    _kernels.use_variant(old)


def _need(name):
    if name not in _kernels.variants()[1]:
        pytest.skip(f"{name} not available on this CPU/build")


# ---------------------------------------------------------------------------
# The format


def _code(s, signed):
    """One normalized value's code, from the rule in docs/int8-state.md
    written with Python ints (struct), independently of the reference."""
    s = 0.0 if s != s else s
    bits = struct.unpack("<I", struct.pack("<f", s))[0]
    q = (min(bits & 0x7FFFFFFF, 0x3F800000) + 0x80000) >> 20
    if signed:
        return (bits >> 31) << 7 | min(max(q - 889, 0), 127)
    return min(max(q - 761, 1), 255)


@pytest.mark.parametrize("signed", [True, False])
def test_map_values(signed):
    m = R.pow2_map(signed)
    assert m.dtype == np.float32 and m.shape == (256,) and not m.flags.writeable
    if signed:
        pos = m[1:128]
        assert m[0] == 0 and m[128] == 0 and np.signbit(m[128])
        assert np.array_equal(m[129:], -pos)
        assert pos[0] == 1.25 * 2.0 ** -16 and pos[-1] == 1.0
    else:
        pos = m[1:]
        assert pos[0] == 1.25 * 2.0 ** -32 and pos[-1] == 1.0
    assert np.all(np.diff(pos) > 0)
    # eight values per binade, evenly spaced: (1 + k/8) * 2^e
    e = np.floor(np.log2(pos))
    frac = pos / 2.0 ** e - 1
    assert np.array_equal(frac * 8, np.round(frac * 8))


@pytest.mark.parametrize("signed", [True, False])
def test_codes_follow_the_rule_and_round_to_nearest(signed):
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1, 1, 4 * BLOCK) * 2.0 ** rng.integers(-40, 1, 4 * BLOCK))
    x = x.astype(np.float32)
    x[::BLOCK] = 1.0          # every block's scale is 1: s = x
    x[1:8] = [0.0, -0.0, np.nan, 2.0 ** -17, -(2.0 ** -16), 1e-45, 0.99]
    if not signed:
        x = np.abs(x)
    codes, absmax = R.quantize_blockwise(x, signed, 2)
    assert np.all(absmax[1:] == 1.0) and np.isnan(absmax[0])
    sane = x.copy()
    sane[3] = 0.0
    codes, absmax = R.quantize_blockwise(sane, signed, 2)
    assert codes.tolist() == [_code(float(s), signed) for s in sane]
    # the nearest map value, for values at or above the smallest nonzero one
    vals = R.pow2_map(signed)[codes]
    smallest = R.pow2_map(signed)[1]
    big = np.abs(sane) >= smallest
    assert np.all(np.abs(vals[big] - sane[big]) <= np.abs(sane[big]) * 2.0 ** -4)
    if not signed:
        assert codes.min() >= 1   # v never takes code 0


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("signed", [True, False])
def test_c_quantization_matches_reference_around_every_code_boundary(variant, signed, name):
    """Each variant's quantizer (the code its step uses) gives the
    reference's codes: both sides of every rounding boundary, zeros, tiny,
    subnormal, beyond 1, NaN and infinite values, absmax 1 or 2, blocks
    with a NaN or an infinity (their scale NaN or inf)."""
    _need(name)
    variant(name)
    q = np.arange(700, 1030, dtype=np.int64)
    edge = ((q << 20) - 0x80000)[:, None] + np.arange(-3, 4)[None, :]
    edge = edge.ravel().astype(np.uint32).view(np.float32)
    grid = np.linspace(-1, 1, 200_001, dtype=np.float32)
    extra = np.array([0.0, -0.0, 1e-38, -1e-38, 1e-45, -1e-45, 1.5, -1.5, 1.0001,
                      np.nan, -np.nan, np.inf, -np.inf], np.float32)
    vals = np.concatenate([edge, -edge, grid, extra])
    vals = np.concatenate([vals, np.zeros(-vals.size % (BLOCK - 1), np.float32)])
    rows = vals.reshape(-1, BLOCK - 1)
    for top in (1.0, 2.0):   # one element per block fixes the scale (but NaN/inf)
        x = np.concatenate([rows, np.full((rows.shape[0], 1), top, np.float32)], axis=1)
        x = np.ascontiguousarray(x[:, ::-1]).ravel()
        for data in (x, x[:-77]):   # whole blocks; a short last block
            if not signed:
                data = np.abs(data)
            c, a = _kernels.quantize_blockwise(data, signed, 2)
            rc, ra = R.quantize_blockwise(data, signed, 2)
            np.testing.assert_array_equal(a.view(np.uint32), ra.view(np.uint32))
            np.testing.assert_array_equal(c, rc)


def test_dequantize_is_map_times_scale():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, 1000).astype(np.uint8)
    absmax = rng.random(4).astype(np.float32)
    for signed in (True, False):
        got = R.dequantize_blockwise(codes, absmax, signed, 2)
        want = R.pow2_map(signed)[codes] * np.repeat(absmax, BLOCK)[:1000]
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="map_version"):
        R.dequantize_blockwise(codes, absmax, True, 3)


# ---------------------------------------------------------------------------
# The step: every variant, 1 and 2 threads, against the reference


def _inputs(pdt, gdt, n, steps, seed=0):
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * 4).astype(np.float32)
    grads = [(rng.standard_normal(n) * 2.0 ** rng.integers(-16, 8, n)).astype(np.float32)
             for _ in range(steps)]
    p[:3] = [np.nan, np.inf, -3e-6]          # a NaN block, an infinite parameter
    grads[0][3:8] = [np.nan, -np.inf, 300.0, 2.0 ** -20, -(2.0 ** -14)]
    grads[1][BLOCK:2 * BLOCK] = 0.0          # a block whose moments decay
    return p.astype(pdt), [g.astype(gdt) for g in grads]


def _run(module, pdt, gdt, options, n, threads=1, steps=4):
    p, grads = _inputs(pdt, gdt, n, steps)
    opt = module.Adam([p], **EXACT, **POW2, **options)
    step_on_threads(opt, grads, threads if module is adamc else None)
    return p, opt.state_dict()["state"][0]


def _bits(a):
    """The bits of a float (or code) array, every NaN as one pattern (a NaN's
    sign and payload may differ: README, "NaN payloads aside")."""
    a = np.asarray(a)
    if a.dtype.itemsize == 1:
        return a.view(np.uint8)
    b = a.view(f"u{a.dtype.itemsize}").copy()
    b[np.isnan(a.astype(np.float32))] = 1
    return b


ml_dtypes = pytest.importorskip("ml_dtypes")
BF16, F16, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)
COMBOS = [  # (param, grad, options): the one-pass loops (q8fused.inc) and blocked.inc
    (F32, F32, {}),
    (BF16, BF16, {"master_weights": False}),
    (F16, F16, {"master_weights": False}),
    (BF16, BF16, {}),
    (F16, F16, {}),
    (BF16, BF16, {"master_weights": False, "stochastic_rounding": True, "seed": 3}),
    (F16, F16, {"master_weights": False, "stochastic_rounding": True, "seed": 5}),
    (F32, BF16, {}),                             # blocked.inc
    (F32, F32, {"eps_mode": "inside"}),          # blocked.inc
]
MATH = [{}, {"weight_decay": 2.0 ** -4},
        {"maximize": True, "weight_decay": 2.0 ** -3, "decoupled_weight_decay": True}]


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("combo", range(len(COMBOS)))
@pytest.mark.parametrize("math", range(len(MATH)))
def test_step_matches_reference_bitwise(variant, name, combo, math):
    _need(name)
    variant(name)
    pdt, gdt, options = COMBOS[combo]
    options = {**options, **MATH[math]}
    for n in (4096, 4096 + 136, 70_003):
        want_p, want = _run(R, pdt, gdt, options, n)
        for threads in (1, 2):
            got_p, got = _run(adamc, pdt, gdt, options, n, threads)
            np.testing.assert_array_equal(_bits(got_p), _bits(want_p), err_msg=f"{n} {threads}")
            for k in want:
                if k != "step":
                    np.testing.assert_array_equal(_bits(got[k]), _bits(want[k]),
                                                  err_msg=f"{k} {n} {threads}")


def test_many_blocks_two_threads_same_bits(variant):
    """A step large enough to run on both threads (and many blocks pending
    in the one-pass loop) gives the one-thread bits, FMA variants too."""
    variant(_kernels.variants()[1][-1])
    start = np.random.default_rng(5).standard_normal(1_000_003).astype(np.float32)
    grads = np.random.default_rng(6).standard_normal((3, start.size)).astype(np.float32)
    out = []
    for threads in (1, 2):
        p = start.copy()
        opt = adamc.AdamW([p], lr=1e-3, **POW2)
        step_on_threads(opt, grads, threads)
        out.append((p, opt.state_dict()["state"][0]))
    np.testing.assert_array_equal(out[0][0].view(np.uint32), out[1][0].view(np.uint32))
    for k in ("exp_avg", "exp_avg_sq", "exp_avg_absmax", "exp_avg_sq_absmax"):
        np.testing.assert_array_equal(_bits(out[0][1][k]), _bits(out[1][1][k]))


def test_adam_step_takes_pow2_codes():
    n = 3000
    start = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    g = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    res = []
    for mod in (adamc, R):
        p = start.copy()
        m, v = np.zeros(n, np.uint8), np.ones(n, np.uint8)
        am, av = np.zeros(-(-n // BLOCK), np.float32), np.zeros(-(-n // BLOCK), np.float32)
        for t in (1, 2):
            mod.adam_step(p, g, m, v, step=t, exp_avg_absmax=am, exp_avg_sq_absmax=av,
                          quant_map="pow2", lr=2.0 ** -6, beta1=0.75, beta2=0.0,
                          bias_correction=False)
        res.append((p, m, v, am, av))
    for a, b in zip(*res):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # they are map-2 codes: the dynamic map's codes of the same values differ
    values = R.dequantize_blockwise(res[0][1], res[0][3], True, 2)
    assert not np.array_equal(res[0][1], R.quantize_blockwise(values, True)[0])
    np.testing.assert_array_equal(res[0][1], R.quantize_blockwise(values, True, 2)[0])


# ---------------------------------------------------------------------------
# Options, state_dicts, checkpoints


def test_option_checked_and_ignored_without_int8():
    w = np.ones(5000, np.float32)
    with pytest.raises(ValueError, match="quant_map must be one of 'dynamic', 'pow2'"):
        adamc.Adam([w], state_dtype="int8", quant_map="fp8")
    a, b = np.ones(5000, np.float32), np.ones(5000, np.float32)
    g = np.linspace(-1, 1, 5000, dtype=np.float32)
    adamc.Adam([a]).step([g])
    adamc.Adam([b], quant_map="pow2").step([g])
    np.testing.assert_array_equal(a, b)


def _trained(cls=adamc.Adam, steps=3, **options):
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(s).astype(np.float32) for s in ((64, 128), (5000,), (300,))]
    opt = cls(params, lr=1e-2, **{**POW2, **options})
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    return opt, params


def test_state_dict_records_version_2_and_resumes_bitwise(tmp_path):
    opt, params = _trained()
    sd = opt.state_dict()
    assert sd["quant_map_version"] == 2
    assert sd["param_groups"][0]["quant_map"] == "pow2"
    g = [np.full(p.shape, 0.5, np.float32) for p in params]
    twin = adamc.Adam([p.copy() for p in params], lr=1e-2, state_dtype="int8")
    twin.load_state_dict(sd)     # the saved groups' quant_map wins, as every option
    assert twin.param_groups[0]["quant_map"] == "pow2"
    path = tmp_path / "s.npz"
    checkpoint.save_state(opt, path)
    third = adamc.Adam([p.copy() for p in params], lr=1e-2, state_dtype="int8")
    checkpoint.load_state(third, path)
    opt.step(g)
    for other in (twin, third):
        other.step(g)
        for a, b in zip(params, other._params):
            np.testing.assert_array_equal(a, b)
    import json
    import zipfile
    with zipfile.ZipFile(path) as z:
        raw = np.load(z.open("header.npy")).tobytes()
    doc = json.loads(raw.decode())
    assert doc["version"] == 4 and doc["quant_map_version"] == 2


def test_dynamic_map_checkpoints_keep_format_3(tmp_path):
    opt, _ = _trained(quant_map="dynamic")
    assert opt.state_dict()["quant_map_version"] == 1
    checkpoint.save_state(opt, tmp_path / "d.npz")
    import json
    import zipfile
    with zipfile.ZipFile(tmp_path / "d.npz") as z:
        doc = json.loads(np.load(z.open("header.npy")).tobytes().decode())
    assert doc["version"] == 3 and "quant_map_version" not in doc


def test_codes_never_read_with_another_map():
    opt, params = _trained()
    sd = opt.state_dict()
    # the version says 2 but the groups say dynamic: refused
    bad = {**sd, "param_groups": [{**sd["param_groups"][0], "quant_map": "dynamic"}]}
    fresh = adamc.Adam([p.copy() for p in params], state_dtype="int8")
    with pytest.raises(ValueError, match="quant_map_version"):
        fresh.load_state_dict(bad)
    # a group saved before quant_map existed holds dynamic-map codes
    old, _ = _trained(quant_map="dynamic")
    osd = old.state_dict()
    for g in osd["param_groups"]:
        del g["quant_map"]
    into = adamc.Adam([p.copy() for p in params], **POW2)
    into.load_state_dict(osd)
    assert into.param_groups[0]["quant_map"] == "dynamic"
    # the option cannot change once codes exist
    opt.param_groups[0]["quant_map"] = "dynamic"
    with pytest.raises(ValueError, match="quant_map cannot change after the first step"):
        opt.step([np.ones(p.shape, np.float32) for p in params])
    opt.param_groups[0]["quant_map"] = "pow2"
    opt.step([np.ones(p.shape, np.float32) for p in params])


# ---------------------------------------------------------------------------
# Converters


def _values(sd, version):
    return {pid: {m: R.dequantize_blockwise(e[m], e[_spec.SCALE_SLOT[m]], m == "exp_avg",
                                            version)
                  for m in ("exp_avg", "exp_avg_sq") if e[m].dtype == np.uint8}
            for pid, e in sd["state"].items()}


def _within_rounding(sd, version, ref):
    """sd's decoded values (its codes index map ``version``) are ``ref``'s
    values rounded once by that map: each within half the gap of the map
    values around it, plus the map's smallest nonzero value (the pow2 map
    flushes what lies below it), times the block's scale."""
    got = _values(sd, version)
    for pid in ref:
        e = sd["state"][pid]
        for m, want in ref[pid].items():
            signed = m == "exp_avg"
            mp = np.unique((R.pow2_map if version == 2 else R.dynamic_map)(signed))
            scale = np.repeat(e[_spec.SCALE_SLOT[m]], BLOCK)[:want.size].reshape(want.shape)
            s = np.clip(want / np.where(scale > 0, scale, 1), mp[0], mp[-1])
            i = np.clip(np.searchsorted(mp, s), 1, mp.size - 1)
            bound = (mp[i] - mp[i - 1]) / 2 + mp[mp > 0][0]
            err = np.abs(got[pid][m] - want)
            assert np.all(err <= bound * scale * (1 + 1e-6) + 1e-30), (pid, m, version)


def test_quantize_state_converts_between_maps():
    opt, params = _trained()
    sd = opt.state_dict()
    v2 = _values(sd, 2)
    dyn = interop.quantize_state(sd, quant_map="dynamic")
    assert dyn["quant_map_version"] == 1
    assert {g["quant_map"] for g in dyn["param_groups"]} == {"dynamic"}
    _within_rounding(dyn, 1, v2)
    back = interop.quantize_state(dyn, quant_map="pow2")
    assert back["quant_map_version"] == 2
    _within_rounding(back, 2, _values(dyn, 1))
    # loadable, and a dynamic-map optimizer steps from it
    fresh = adamc.Adam([p.copy() for p in params], lr=1e-2, state_dtype="int8")
    fresh.load_state_dict(dyn)
    fresh.step([np.ones(p.shape, np.float32) for p in params])
    # same map: codes copied
    same = interop.quantize_state(sd, quant_map="pow2")
    for pid, e in sd["state"].items():
        np.testing.assert_array_equal(same["state"][pid]["exp_avg"], e["exp_avg"])
    deq = interop.dequantize_state(sd)
    for pid in v2:
        for m in v2[pid]:
            np.testing.assert_array_equal(deq["state"][pid][m], v2[pid][m])


def test_to_and_from_bitsandbytes_and_torchao_requantize():
    opt, params = _trained(cls=adamc.AdamW)
    sd = opt.state_dict()
    v2 = _values(sd, 2)
    bnb = interop.to_bitsandbytes(sd)
    as_adamc = {"state": {pid: {"exp_avg": e["state1"], "exp_avg_sq": e["state2"],
                                "exp_avg_absmax": e["absmax1"], "exp_avg_sq_absmax": e["absmax2"]}
                          for pid, e in bnb["state"].items() if e["state1"].dtype == np.uint8}}
    for e in bnb["state"].values():
        if e["state1"].dtype == np.uint8:
            np.testing.assert_array_equal(e["qmap1"], R.dynamic_map(True))
            np.testing.assert_array_equal(e["qmap2"], R.dynamic_map(False))
    _within_rounding(as_adamc, 1, {pid: v2[pid] for pid in as_adamc["state"]})
    back = interop.from_bitsandbytes(bnb, quant_map="pow2")
    assert back["quant_map_version"] == 2
    assert back["param_groups"][0]["quant_map"] == "pow2"
    fresh = adamc.AdamW([p.copy() for p in params], lr=1e-2, **POW2)
    fresh.load_state_dict(back)
    ao = interop.to_torchao(sd)
    back = interop.from_torchao(ao, quant_map="pow2")
    assert back["quant_map_version"] == 2
    assert interop.from_torchao(ao)["quant_map_version"] == 1
    with pytest.raises(ValueError, match="quant_map must be one of"):
        interop.from_bitsandbytes(bnb, quant_map="fp8")
