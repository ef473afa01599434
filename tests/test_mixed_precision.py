"""Mixed precision: float16/bfloat16 parameters, gradients and state, float32
master weights, stochastic rounding.  The baseline kernel equals
adamc.reference bit for bit; the FMA variants within a few 16-bit ulps; the
results never depend on the thread count."""

import itertools
import os

import numpy as np
import pytest

import adamc
from _toolkit import load_example, state_of, step_on_threads
from adamc import reference

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
NAMES = {F16: "float16", BF16: "bfloat16", F32: "float32", F64: "float64"}

# (param dtype, options): every storage combination the options allow
STORAGE = [
    (F16, {}), (BF16, {}),                                        # float32 master and state
    (F16, {"master_weights": False}), (BF16, {"master_weights": False}),
    (BF16, {"master_weights": False, "state_dtype": "bfloat16"}),  # all 16-bit
    (F16, {"master_weights": False, "state_dtype": "float16"}),
    (BF16, {"state_dtype": "bfloat16"}),                           # master, 16-bit state
    (F32, {"state_dtype": "bfloat16"}), (F32, {"state_dtype": "float16"}),
    (F32, {}), (F64, {}),
]
GRADS = [F16, BF16, F32, F64]
MATH = [{}, {"amsgrad": True, "weight_decay": 0.01, "decoupled_weight_decay": True},
        {"maximize": True, "eps_mode": "hat", "weight_decay": 0.05}]


def sixteen(dt):
    return dt.itemsize == 2


def run(module, pdt, gdt, options, n=3001, steps=3, threads=1, seed=0, order="C"):
    rng = np.random.default_rng(seed)
    p = np.asarray(rng.standard_normal((n,)).astype(pdt), order=order)
    grads = [(rng.standard_normal(n) * 10.0 ** rng.integers(-3, 2)).astype(gdt)
             for _ in range(steps)]
    opt = module.Adam([p], lr=1e-2, **options)
    step_on_threads(opt, grads, threads)
    return p, opt


def ulps16(a, b, dt):
    """Differences in units of the 16-bit type's spacing at b."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    spacing = np.abs(b) * float(np.finfo(dt).eps) + float(np.finfo(dt).smallest_subnormal)
    return np.max(np.abs(a - b) / spacing, initial=0.0)


def assert_close(a, b, variant, state16=None, steps=3, lr=1e-2):
    """Bitwise on the baseline variant.  On the FMA variants one fused
    rounding can flip a 16-bit rounding: a 16-bit array then ends within 2
    of its ulps, and a wider parameter stepped from 16-bit state within
    steps * lr * 2 ulps of the state's type."""
    if variant == "baseline":
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    elif sixteen(a.dtype):
        assert ulps16(a, b, a.dtype) <= 2
    else:
        flip = steps * lr * 2 * float(np.finfo(state16).eps) if state16 is not None else 0.0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 + flip)


@pytest.mark.parametrize("pdt, options", STORAGE, ids=lambda x: str(x))
@pytest.mark.parametrize("gdt", GRADS, ids=str)
@pytest.mark.parametrize("math", MATH, ids=lambda m: ",".join(m) or "default")
def test_every_combination_matches_the_reference(variant, pdt, options, gdt, math):
    options = {**options, **math}
    pa, a = run(adamc, pdt, gdt, options)
    pb, b = run(reference, pdt, gdt, options)
    assert pa.dtype == pdt
    sd = options.get("state_dtype")
    assert_close(pa, pb, variant, state16=np.dtype(BF16 if sd == "bfloat16" else sd)
                 if sd in ("bfloat16", "float16") else None)
    sa, sb = state_of(a, 0), state_of(b, 0)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype
        assert_close(sa[k], sb[k], variant)
    want_master = sixteen(pdt) and options.get("master_weights") is not False
    assert ("master_param" in sa) == want_master
    if want_master:  # the parameter is the master copy, rounded to nearest
        np.testing.assert_array_equal(pa, sa["master_param"].astype(pdt))


@pytest.mark.parametrize("pdt, options", [
    (BF16, {"master_weights": False, "state_dtype": "bfloat16", "stochastic_rounding": True}),
    (F16, {"master_weights": False, "state_dtype": "float16", "stochastic_rounding": True}),
    (F16, {"master_weights": False, "stochastic_rounding": True, "amsgrad": True}),
    (F32, {"state_dtype": "bfloat16", "stochastic_rounding": True, "amsgrad": True}),
    (BF16, {"state_dtype": "float16", "stochastic_rounding": True}),
], ids=str)
def test_stochastic_rounding_is_reproducible_and_matches_the_reference(variant, pdt, options,
                                                                       clean_env):
    options = {**options, "seed": 2024}
    pa, a = run(adamc, pdt, F32, options, n=50_003)
    pb, _ = run(reference, pdt, F32, options, n=50_003)
    sd = options.get("state_dtype")
    assert_close(pa, pb, variant, state16=np.dtype(BF16 if sd == "bfloat16" else sd)
                 if sd in ("bfloat16", "float16") else None)
    # any thread count, any split: the same bits
    os.environ["ADAMC_SERIAL_CUTOFF"] = "0"
    pc, c = run(adamc, pdt, F32, options, n=50_003, threads=2)
    np.testing.assert_array_equal(pa.view(np.uint16 if sixteen(pdt) else np.uint32),
                                  pc.view(np.uint16 if sixteen(pdt) else np.uint32))
    for k, v in state_of(a, 0).items():
        np.testing.assert_array_equal(v, state_of(c, 0)[k])
    # another seed rounds otherwise
    pd, _ = run(adamc, pdt, F32, {**options, "seed": 2025}, n=50_003)
    assert not np.array_equal(pa, pd)


def test_stochastic_rounding_is_unbiased():
    """Many seeds round one value up in the proportion of its distance to the
    value below (float16 normal and subnormal targets, bfloat16)."""
    for dt, x in [(F16, 1.0 + 0.3 * 2.0**-10), (F16, 0.7 * 2.0**-24 + 3 * 2.0**-24),
                  (BF16, -(1.0 + 0.2 * 2.0**-7)), (F16, 5e-8)]:
        x32 = np.full(200_000, x, dtype=np.float32)
        out = reference.round_to(x32, dt, key=12345).astype(np.float64)
        lo, hi = np.sort(np.unique(out))[[0, -1]]
        assert len(np.unique(out)) == 2
        frac = (float(np.float32(x)) - lo) / (hi - lo)
        assert abs(np.mean(out == hi) - frac) < 5 * np.sqrt(frac * (1 - frac) / x32.size), dt


def test_stored_values_of_an_element_round_independently():
    """One hash per element feeds all of its stored values (convert.h's
    adamc_sr_take gives each its own bits): whether one value rounds up
    must say nothing about another's, nor about the next element's.  For
    each pair of values (and p, m, v together) the fraction of elements
    where all round up is the product of their proportions."""
    n = 400_000
    fracs = {"param": 0.3, "exp_avg": 0.6, "exp_avg_sq": 0.45, "max_exp_avg_sq": 0.7}
    for key in (12345, reference.sr_key(7, 3, 1000)):
        up, want = {}, {}
        for name, q in fracs.items():
            x = np.full(n, 1.0 + q * 2.0**-7, dtype=np.float32)  # bfloat16's gap above 1: 2^-7
            out = reference.round_to(x, BF16, key=key, value=reference.SR_VALUE[name])
            up[name] = out.astype(np.float32) > 1.0
            want[name] = (float(x[0]) - 1.0) / 2.0**-7
            assert abs(up[name].mean() - want[name]) < 5 * np.sqrt(q * (1 - q) / n), name
        names = list(fracs)
        groups = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        for group in groups + [("param", "exp_avg", "exp_avg_sq")]:
            both = np.logical_and.reduce([up[a] for a in group]).mean()
            prob = np.prod([want[a] for a in group])
            assert abs(both - prob) < 5 * np.sqrt(prob * (1 - prob) / n), group
        for name in names:  # neighbouring elements
            both = (up[name][1:] & up[name][:-1]).mean()
            prob = want[name] ** 2
            assert abs(both - prob) < 5 * np.sqrt(prob * (1 - prob) / n), name


def test_round_to_nearest_is_numpys_and_ml_dtypes_cast():
    """The reference's rounding (and so, through the bitwise tests above, the
    kernel's) is the libraries' own cast, edge cases included."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    edge = np.array([0, 0x80000000, 0x33000000, 0x33000001, 0x387fffff, 0x38800000, 0x477fefff,
                     0x477ff000, 0x477fffff, 0x7f7fffff, 0x7f800000, 0xff800000, 0x00000001,
                     0x3f7fffff, 0x7f7f8000], dtype=np.uint32)
    x = np.concatenate([bits, edge]).view(np.float32)
    x = x[~np.isnan(x)]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(reference.round_to(x, F16).view(np.uint16),
                                      x.astype(np.float16).view(np.uint16))
        np.testing.assert_array_equal(reference.round_to(x, BF16).view(np.uint16),
                                      x.astype(BF16).view(np.uint16))


@pytest.mark.parametrize("pdt", [F16, BF16])
def test_functional_step_with_master_param(variant, pdt):
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(257).astype(pdt)
    outs = []
    for module in (adamc, reference):
        p, mp = p0.copy(), p0.astype(np.float32)
        m, v = np.zeros(257, np.float32), np.zeros(257, np.float32)
        for t in (1, 2, 3):
            g = np.linspace(-1, 1, 257).astype(pdt) * t
            module.adam_step(p, g, m, v, step=t, lr=1e-2, master_param=mp)
        outs.append((p, mp))
    assert_close(outs[0][0], outs[1][0], variant)
    assert_close(outs[0][1], outs[1][1], variant)
    np.testing.assert_array_equal(outs[0][0], outs[0][1].astype(pdt))


@pytest.mark.parametrize("impl", [adamc, reference])
@pytest.mark.parametrize("pdt, kw, exc, msg", [
    (F32, {"master_weights": True}, ValueError, r"master_weights=True.*params\[0\] is float32"),
    (F64, {"state_dtype": "bfloat16"}, ValueError, "loses more than float64 parameters gain"),
    (F32, {"state_dtype": "float64"}, ValueError, "'float64' .* is for float64 parameters"),
    (F32, {"state_dtype": "int4"}, ValueError, "state_dtype must be one of"),
    (F32, {"state_dtype": np.float16}, TypeError, "state_dtype must be one of"),
    (F16, {"seed": 1.5}, TypeError, "seed must be an int"),
    (F16, {"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*64\)"),
    (F32, {"stochastic_rounding": True}, ValueError, "no parameter of the group is rounded"),
    (F16, {"stochastic_rounding": True}, ValueError, "no parameter of the group is rounded"),
    (F16, {"master_weights": 1}, TypeError, "master_weights must be True or False"),
])
def test_bad_storage_options_are_refused(impl, pdt, kw, exc, msg):
    p = np.ones(4, pdt)
    with pytest.raises(exc, match=msg):
        impl.Adam([p], **kw)
    # and as a group edit after the first step: nothing changes
    opt = impl.Adam([p])
    opt.step([np.ones(4, pdt)])
    before = opt.state_dict()
    p_before = p.copy()
    opt.param_groups[0].update(kw)
    with pytest.raises(exc, match=msg):
        opt.step([np.ones(4, pdt)])
    np.testing.assert_array_equal(p, p_before)
    assert opt.state_dict()["state"][0]["step"] == before["state"][0]["step"]


@pytest.mark.parametrize("impl", [adamc, reference])
def test_state_dtype_cannot_change_after_the_first_step(impl):
    p = np.ones(4, np.float32)
    opt = impl.Adam([p])
    opt.step([np.ones(4, np.float32)])
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    with pytest.raises(ValueError, match="cannot change after the first step"):
        opt.step([np.ones(4, np.float32)])


@pytest.mark.parametrize("pdt, options", [(BF16, {}), (F16, {"master_weights": False,
                                                            "state_dtype": "float16"}),
                                          (F32, {"state_dtype": "bfloat16"})], ids=str)
def test_state_dict_round_trip_resumes_bitwise(pdt, options):
    pa, a = run(adamc, pdt, F32, options, steps=2)
    sd = a.state_dict()
    st = state_of(a, 0)
    assert all(sd["state"][0][k].dtype == v.dtype for k, v in st.items())
    pb = pa.copy()
    b = adamc.Adam([pb], lr=1e-2, **options)
    b.load_state_dict(sd)
    g = np.linspace(-1, 1, pa.size).astype(np.float32)
    a.step([g])
    b.step([g])
    np.testing.assert_array_equal(pa, pb)
    for k, v in state_of(a, 0).items():
        np.testing.assert_array_equal(v, state_of(b, 0)[k])


def test_state_of_another_state_dtype_converts_by_value():
    p = np.ones(8, np.float32)
    a = adamc.Adam([p])
    a.step([np.full(8, 0.3, np.float32)])
    b = adamc.Adam([p.copy()])
    sd = a.state_dict()  # a state_dict's groups carry the storage options, as any option
    sd["param_groups"][0]["state_dtype"] = "bfloat16"
    b.load_state_dict(sd)
    assert b.param_groups[0]["state_dtype"] == "bfloat16"
    m = state_of(b, 0)["exp_avg"]
    assert m.dtype == BF16
    np.testing.assert_array_equal(m, state_of(a, 0)["exp_avg"].astype(BF16))


def test_all_combinations_cover_the_rules():
    """Every (param, state) pair the rules allow is in STORAGE (so the
    reference test above reaches each kernel path)."""
    seen = {(p, (o.get("state_dtype") or ("float32" if sixteen(p) else NAMES[p])),
             o.get("master_weights") is not False and sixteen(p)) for p, o in STORAGE}
    for p, s, m in itertools.product([F16, BF16], ["float32"], [True, False]):
        assert (p, s, m) in seen


@pytest.mark.parametrize("pdt, options", [(BF16, {"amsgrad": True}),
                                          (F16, {"master_weights": False,
                                                 "state_dtype": "float16"}),
                                          (F32, {"state_dtype": "bfloat16"})], ids=str)
def test_checkpoints_carry_16_bit_state_and_master_weights(tmp_path, pdt, options):
    pa, a = run(adamc, pdt, F32, options, steps=2)
    adamc.save_state(a, tmp_path / "mp.npz")
    pb = pa.copy()
    b = adamc.Adam([pb], lr=1e-2, **options)
    adamc.load_state(b, tmp_path / "mp.npz")
    for k, v in state_of(a, 0).items():
        assert state_of(b, 0)[k].dtype == v.dtype
        np.testing.assert_array_equal(state_of(b, 0)[k], v)
    g = np.linspace(-1, 1, pa.size).astype(np.float32)
    a.step([g])
    b.step([g])
    np.testing.assert_array_equal(pa, pb)


def test_mlp_example_trains_in_16_bits():
    """examples/train_mlp.py: bfloat16 weights with master weights, and all-
    bfloat16 with stochastic rounding, end within 1 point of float32 held-out
    accuracy on digits (6 epochs; the README gives the 20-epoch figures)."""
    pytest.importorskip("sklearn")
    mlp = load_example("train_mlp")
    data = mlp.load_data(np.float32, 0)
    acc = {}
    for name, dtype, kw in [
            ("fp32", np.float32, {}), ("bf16 master", BF16, {}),
            ("all bf16 SR", BF16, {"master_weights": False, "state_dtype": "bfloat16",
                                   "stochastic_rounding": True})]:
        run = mlp.train("adamc", epochs=6, dtype=dtype, data=data, log=None, **kw)
        assert all(p.dtype == dtype for p in run["params"].values())
        acc[name] = run["test_accuracy"][-1]
    assert acc["fp32"] > 0.95
    assert abs(acc["bf16 master"] - acc["fp32"]) <= 0.01, acc
    assert abs(acc["all bf16 SR"] - acc["fp32"]) <= 0.01, acc


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_interop_example_in_16_bits(dtype):
    """examples/torch_interop.py steps a 16-bit torch model through views
    (no copies) and trains as well as torch.optim.Adam in the same dtype."""
    pytest.importorskip("torch")
    interop = load_example("torch_interop")
    r = interop.compare(steps=60, dtype=dtype)
    ours, theirs = r["adamc_losses"][-1], r["torch_losses"][-1]
    assert np.isfinite(ours) and ours < r["adamc_losses"][0]
    assert not np.isfinite(theirs) or ours <= 1.1 * theirs
