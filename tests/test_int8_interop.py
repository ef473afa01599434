"""adamc.interop: 8-bit state to and from bitsandbytes' and torchao's layouts,
and full precision to 8 bits and back (docs/int8-state.md), NumPy only:
layouts, round trips, values against adamc.reference.dequantize_blockwise,
and the refusals.  Against the real libraries: test_int8_interop_libs.py.
"""

import numpy as np
import pytest

import adamc
from adamc import interop
from adamc import reference as R
from _int8_cases import BLOCK, assert_entries_equal, bnb_values, random_params, trained_int8


# ---------------------------------------------------------------------------
# bitsandbytes' layout


def test_to_bitsandbytes_layout_and_values():
    opt, params = trained_int8()
    sd = opt.state_dict()
    b = interop.to_bitsandbytes(sd)
    assert sorted(b) == ["param_groups", "state"]
    assert b["param_groups"] == [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8,
                                  "weight_decay": 0.0, "params": [0, 1, 2]}]
    for i, p in enumerate(params):
        e, ours = b["state"][i], sd["state"][i]
        assert e["step"] == 3 and isinstance(e["step"], int)
        if p.size < 4096:
            assert sorted(e) == ["state1", "state2", "step"]
            assert e["state1"].dtype == np.float32 and np.array_equal(e["state1"], ours["exp_avg"])
            assert np.array_equal(e["state2"], ours["exp_avg_sq"])
            continue
        assert sorted(e) == ["absmax1", "absmax2", "qmap1", "qmap2", "state1", "state2", "step"]
        nb = -(-p.size // BLOCK)
        for n, m, signed in ((1, "exp_avg", True), (2, "exp_avg_sq", False)):
            assert e[f"state{n}"].dtype == np.uint8 and e[f"state{n}"].shape == p.shape
            assert e[f"absmax{n}"].dtype == np.float32 and e[f"absmax{n}"].shape == (nb,)
            assert np.array_equal(e[f"qmap{n}"], R.dynamic_map(signed))
            # bitsandbytes' dequantization of the converted state gives, bit
            # for bit, the values adamc steps with
            want = R.dequantize_blockwise(ours[m], ours[f"{m}_absmax"], signed)
            got = bnb_values(e[f"state{n}"], e[f"absmax{n}"], e[f"qmap{n}"])
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
        # copies: the converted dict does not alias the optimizer's state_dict
        assert not np.shares_memory(e["state1"], ours["exp_avg"])


def test_bitsandbytes_round_trip_resumes_bit_identically():
    opt, params = trained_int8()
    sd = opt.state_dict()
    back = interop.from_bitsandbytes(interop.to_bitsandbytes(sd))
    assert_entries_equal(back["state"], sd["state"])
    assert back["param_groups"] == [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8,
                                     "weight_decay": 0.0, "params": [0, 1, 2]}]
    # the converted state, loaded into a new optimizer, steps as the original
    twin_params = [p.copy() for p in params]
    twin = R.Adam(twin_params, lr=1e-2, state_dtype="int8")
    twin.load_state_dict(back)
    rng = np.random.default_rng(9)
    for _ in range(2):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step(grads)
        twin.step([g.copy() for g in grads])
    for p, q in zip(params, twin_params):
        assert np.array_equal(p, q)
    assert_entries_equal(opt.state_dict()["state"], twin.state_dict()["state"])


def test_from_bitsandbytes_takes_the_nested_layout():
    sd = trained_int8()[0].state_dict()
    flat = interop.to_bitsandbytes(sd)
    nested = {"param_groups": flat["param_groups"], "state": {}}
    for pid, e in flat["state"].items():
        nested["state"][pid] = {"step": e["step"], interop.BNB_NESTED:
                                {k: v for k, v in e.items() if k != "step"}}
    assert_entries_equal(interop.from_bitsandbytes(nested)["state"],
                          interop.from_bitsandbytes(flat)["state"])


def test_bitsandbytes_weight_decay_is_decoupled():
    sd = trained_int8(R.AdamW, weight_decay=0.1)[0].state_dict()
    b = interop.to_bitsandbytes(sd)
    assert b["param_groups"][0]["weight_decay"] == 0.1
    assert interop.from_bitsandbytes(b)["param_groups"][0]["decoupled_weight_decay"] is True
    l2 = trained_int8(weight_decay=0.1)[0].state_dict()
    with pytest.raises(ValueError, match="decoupled"):
        interop.to_bitsandbytes(l2)


def test_fortran_order_is_requantized_in_c_order():
    opt, params = trained_int8(shapes=[(128, 96)], order="F")
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].flags.f_contiguous
    b = interop.to_bitsandbytes(sd)
    e = b["state"][0]
    assert e["state1"].flags.c_contiguous
    for n, m, signed in ((1, "exp_avg", True), (2, "exp_avg_sq", False)):
        want = R.dequantize_blockwise(sd["state"][0][m], sd["state"][0][f"{m}_absmax"], signed)
        got = bnb_values(e[f"state{n}"], e[f"absmax{n}"], e[f"qmap{n}"])
        # requantized once more: the codes are the nearest to the values
        codes, absmax = R.quantize_blockwise(np.ascontiguousarray(want), signed)
        assert np.array_equal(e[f"state{n}"], codes)
        assert np.array_equal(e[f"absmax{n}"], absmax)
        # a second rounding moves a value by at most about one map step of its block
        # (the largest relative gap of the map, 0.2 of the value near 0.1: use 5%
        # of the block's scale as a loose bound)
        scale = np.repeat(absmax, BLOCK)[:want.size].reshape(want.shape)
        assert np.all(np.abs(got - want) <= 0.05 * scale)


def test_tensor_hook_applies_to_every_array():
    sd = trained_int8()[0].state_dict()
    seen = []

    def hook(a):
        seen.append(a.dtype)
        return ("wrapped", a)

    b = interop.to_bitsandbytes(sd, tensor=hook)
    e = b["state"][0]
    assert all(v[0] == "wrapped" for k, v in e.items() if k != "step")
    assert e["step"] == 3
    assert len(seen) == 6 + 6 + 2  # two 8-bit entries, one float32


# ---------------------------------------------------------------------------
# torchao's layout


def test_torchao_layout_and_round_trip():
    opt, params = trained_int8()
    sd = opt.state_dict()
    t = interop.to_torchao(sd)
    assert t["param_groups"] == [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8,
                                  "weight_decay": 0.0, "amsgrad": False,
                                  "params": [0, 1, 2]}]
    e = t["state"][0]
    assert e["step"].dtype == np.float32 and e["step"].shape == () and e["step"] == 3
    for m, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        q = e[m]
        assert q["signed"] is signed and q["block_size"] == BLOCK
        assert q["codes"].shape == params[0].shape and q["codes"].dtype == np.uint8
        assert q["scale"].shape == (params[0].size // BLOCK,)
        assert np.array_equal(q["qmap"], R.dynamic_map(signed))
        want = R.dequantize_blockwise(sd["state"][0][m], sd["state"][0][f"{m}_absmax"], signed)
        assert np.array_equal(bnb_values(q["codes"], q["scale"], q["qmap"]), want)
    # 5000 elements: not whole blocks, which torchao keeps in float: the
    # values adamc steps with
    for m, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        a = t["state"][1][m]
        assert a.dtype == np.float32 and a.shape == (5000,)
        assert np.array_equal(a, R.dequantize_blockwise(
            sd["state"][1][m], sd["state"][1][f"{m}_absmax"], signed))
    back = interop.from_torchao(t)
    assert back["param_groups"] == [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8,
                                     "weight_decay": 0.0, "params": [0, 1, 2]}]
    for pid in (0, 2):
        assert_entries_equal({pid: back["state"][pid]}, {pid: sd["state"][pid]})
    # the float32 state of the 5000-element tensor quantizes back to 8 bits:
    # the same values but for a second rounding (not always the same codes: a
    # block whose largest |m| is negative dequantizes it to -0.99297 * scale,
    # the map's most negative value, so its scale shrinks on requantizing)
    requantized = interop.quantize_state(back)["state"][1]
    for m, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        want = R.dequantize_blockwise(sd["state"][1][m], sd["state"][1][f"{m}_absmax"], signed)
        got = R.dequantize_blockwise(requantized[m], requantized[f"{m}_absmax"], signed)
        scale = np.repeat(sd["state"][1][f"{m}_absmax"], BLOCK)[:5000]
        assert np.all(np.abs(got - want) <= 0.05 * scale)
    assert np.array_equal(requantized["exp_avg_sq"], sd["state"][1]["exp_avg_sq"])


def test_torchao_accepts_objects_with_attributes():
    sd = trained_int8()[0].state_dict()
    t = interop.to_torchao(sd)

    class State8bit:  # what OptimState8bit exposes
        def __init__(self, d):
            self.codes, self.scale, self.qmap, self.signed = (
                d["codes"], d["scale"], d["qmap"], d["signed"])

    for e in t["state"].values():
        for m in ("exp_avg", "exp_avg_sq"):
            if isinstance(e[m], dict):
                e[m] = State8bit(e[m])
    assert_entries_equal(interop.from_torchao(t)["state"],
                          interop.from_torchao(interop.to_torchao(sd))["state"])


def test_torchao_keeps_l2_weight_decay():
    sd = trained_int8(weight_decay=0.1)[0].state_dict()
    assert interop.to_torchao(sd)["param_groups"][0]["weight_decay"] == 0.1


# ---------------------------------------------------------------------------
# full precision <-> 8 bits


def test_quantize_state_loads_into_an_int8_optimizer():
    rng = np.random.default_rng(4)
    params = random_params(rng)
    full = R.Adam(params, lr=1e-2)
    for _ in range(3):
        full.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    sd = full.state_dict()
    q = interop.quantize_state(sd)
    assert q["param_groups"][0]["state_dtype"] == "int8"
    for i, p in enumerate(params):
        for m, signed in (("exp_avg", True), ("exp_avg_sq", False)):
            if p.size >= 4096:
                codes, absmax = R.quantize_blockwise(sd["state"][i][m], signed)
                assert np.array_equal(q["state"][i][m], codes)
                assert np.array_equal(q["state"][i][f"{m}_absmax"], absmax)
            else:
                assert np.array_equal(q["state"][i][m], sd["state"][i][m])
    eight = R.Adam([p.copy() for p in params], lr=1e-2, state_dtype="int8")
    eight.load_state_dict(q)
    assert_entries_equal(eight.state_dict()["state"], q["state"])
    # and back: the float32 values are map[code] * scale
    f = interop.dequantize_state(eight.state_dict())
    assert f["param_groups"][0]["state_dtype"] == "float32"
    for i in range(len(params)):
        for m, signed in (("exp_avg", True), ("exp_avg_sq", False)):
            want = (R.dequantize_blockwise(q["state"][i][m], q["state"][i][f"{m}_absmax"],
                                           signed) if params[i].size >= 4096
                    else sd["state"][i][m])
            assert np.array_equal(f["state"][i][m], want)
    back = R.Adam([p.copy() for p in params], lr=1e-2)
    back.load_state_dict(f)
    assert_entries_equal(back.state_dict()["state"], f["state"])


def test_quantize_state_threshold_and_amsgrad():
    rng = np.random.default_rng(5)
    params = random_params(rng)
    full = R.Adam(params, lr=1e-2)
    full.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    q = interop.quantize_state(full.state_dict(), min_8bit_size=300)
    assert [q["state"][i]["exp_avg"].dtype for i in range(3)] == [np.uint8] * 3
    assert q["param_groups"][0]["min_8bit_size"] == 300
    q = interop.quantize_state(full.state_dict(), min_8bit_size=10**6)
    assert [q["state"][i]["exp_avg"].dtype for i in range(3)] == [np.float32] * 3
    ams = R.Adam(params, lr=1e-2, amsgrad=True)
    ams.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    with pytest.raises(ValueError, match="amsgrad"):
        interop.quantize_state(ams.state_dict())
    with pytest.raises(TypeError, match="min_8bit_size"):
        interop.quantize_state(full.state_dict(), min_8bit_size=1.5)


@pytest.mark.parametrize("module", [adamc, R])
def test_quantize_state_keeps_an_8bit_layout_loadable(module):
    """Converting an 8-bit state to the other map keeps each group's
    min_8bit_size (None), so it loads into an optimizer built as the
    original; an explicit larger min_8bit_size turns the smaller 8-bit
    entries into their float32 values."""
    rng = np.random.default_rng(8)
    ps = [rng.standard_normal(1024).astype(np.float32), rng.standard_normal(8192).astype(np.float32)]
    opt = module.Adam(ps, lr=1e-3, state_dtype="int8", min_8bit_size=512)
    opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in ps])
    sd = opt.state_dict()
    q = interop.quantize_state(sd, quant_map="pow2")
    assert q["param_groups"][0]["min_8bit_size"] == 512
    assert [q["state"][i]["exp_avg"].dtype for i in range(2)] == [np.uint8] * 2
    new = module.Adam([p.copy() for p in ps], lr=1e-3, state_dtype="int8", min_8bit_size=512,
                      quant_map="pow2")
    new.load_state_dict(q)
    assert_entries_equal(new.state_dict()["state"], q["state"])
    q = interop.quantize_state(sd, min_8bit_size=2048)
    assert q["param_groups"][0]["min_8bit_size"] == 2048
    for m, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        assert np.array_equal(q["state"][0][m], R.dequantize_blockwise(
            sd["state"][0][m], sd["state"][0][m + "_absmax"], signed, 1))
        assert q["state"][1][m].dtype == np.uint8
    module.Adam([p.copy() for p in ps], lr=1e-3, state_dtype="int8",
                min_8bit_size=2048).load_state_dict(q)


# ---------------------------------------------------------------------------
# refusals: a clear error, the input untouched


def _bnb(**change):
    b = interop.to_bitsandbytes(trained_int8()[0].state_dict())
    for key, val in change.items():
        b["state"][0][key] = val
    return b


@pytest.mark.parametrize("key, value, error, match", [
    ("absmax1", np.full(32, np.nan, np.float32), ValueError, r"absmax1'\]\[0\] is nan"),
    ("absmax2", -np.ones(32, np.float32), ValueError, r"finite and >= 0"),
    ("absmax1", np.ones(31, np.float32), ValueError, r"need \(32,\)"),
    ("state1", np.zeros((64, 128), np.int8), TypeError, "uint8"),
    ("state2", np.zeros((64, 127), np.uint8), ValueError, "shape"),
    ("qmap1", np.linspace(-1, 1, 256).astype(np.float32), ValueError, "signed"),
    ("qmap2", R.dynamic_map(True), ValueError, "unsigned"),
    ("max1", np.zeros(1, np.float32), ValueError, "max1"),
    ("step", 2.5, ValueError, "whole number"),
    ("step", -1, ValueError, "between 0"),
    ("state1", None, TypeError, "None"),
])
def test_from_bitsandbytes_refuses(key, value, error, match):
    b = _bnb(**{key: value})
    with pytest.raises(error, match=match):
        interop.from_bitsandbytes(b)


def test_from_bitsandbytes_refuses_structure():
    with pytest.raises(TypeError, match="'state' and 'param_groups'"):
        interop.from_bitsandbytes({"state": {}})
    b = _bnb()
    b["param_groups"][0]["betas"] = (0.9, 0.999, 0.9999)
    with pytest.raises(ValueError, match="AdEMAMix"):
        interop.from_bitsandbytes(b)
    b = _bnb()
    b["state"][7] = b["state"][0]
    with pytest.raises(ValueError, match="no param group lists"):
        interop.from_bitsandbytes(b)
    b = _bnb()
    del b["state"][0]["absmax1"]
    with pytest.raises(ValueError, match="no 'absmax1'"):
        interop.from_bitsandbytes(b)


@pytest.mark.parametrize("options, match", [
    ({"maximize": True}, "maximize"),
    ({"bias_correction": False}, "bias_correction"),
    ({"eps_mode": "inside"}, "eps_mode"),
    ({"lr": lambda t: 0.01}, "lr"),
])
def test_to_layouts_refuse_options_they_cannot_express(options, match):
    sd = trained_int8(**options)[0].state_dict()
    for convert in (interop.to_bitsandbytes, interop.to_torchao):
        with pytest.raises(ValueError, match=match):
            convert(sd)


def test_to_bitsandbytes_refuses_corrupted_adamc_state():
    sd = trained_int8()[0].state_dict()
    sd["state"][0]["exp_avg_absmax"] = sd["state"][0]["exp_avg_absmax"].copy()
    sd["state"][0]["exp_avg_absmax"][3] = np.inf
    before = sd["state"][0]["exp_avg_absmax"].copy()
    with pytest.raises(ValueError, match=r"exp_avg_absmax'\]\[3\] is inf"):
        interop.to_bitsandbytes(sd)
    assert np.array_equal(sd["state"][0]["exp_avg_absmax"], before)
    sd = trained_int8()[0].state_dict()
    del sd["state"][1]["exp_avg_sq_absmax"]
    with pytest.raises(ValueError, match="no 'exp_avg_sq_absmax'"):
        interop.to_torchao(sd)
    sd = trained_int8()[0].state_dict()
    sd["state"][0]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        interop.to_bitsandbytes(sd)


def _torchao(m="exp_avg", **change):
    t = interop.to_torchao(trained_int8()[0].state_dict())
    t["state"][0][m].update(change)
    return t


@pytest.mark.parametrize("m, change, match", [
    ("exp_avg", {"signed": False}, "signed=False"),
    ("exp_avg_sq", {"signed": True}, "signed=True"),
    ("exp_avg", {"scale": np.ones(64, np.float32)}, "blocks of 256"),
    ("exp_avg", {"scale": np.full(32, -1, np.float32)}, "finite and >= 0"),
    ("exp_avg", {"qmap": R.dynamic_map(False)}, "signed"),
])
def test_from_torchao_refuses(m, change, match):
    with pytest.raises(ValueError, match=match):
        interop.from_torchao(_torchao(m, **change))


def test_from_torchao_refuses_amsgrad_state():
    t = _torchao()
    t["state"][0]["max_exp_avg_sq"] = t["state"][0]["exp_avg_sq"]
    with pytest.raises(ValueError, match="amsgrad"):
        interop.from_torchao(t)


# Found by a fuzzer of the converters (independent review): dicts that
# load_state_dict refuses were converted into wrong values.

ADAMC_CONVERTERS = [interop.to_bitsandbytes, interop.to_torchao, interop.quantize_state,
                    interop.dequantize_state]


@pytest.mark.parametrize("convert", ADAMC_CONVERTERS)
def test_codes_cast_to_float_are_not_read_as_moments(convert):
    """exp_avg's codes cast to float32 with their scales still there: the code
    numbers 0-255 were taken as the moment's values."""
    sd = trained_int8()[0].state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].astype(np.float32)
    with pytest.raises(ValueError, match=r"\['exp_avg_absmax'\] goes with uint8 exp_avg"):
        convert(sd)
    with pytest.raises(ValueError, match="goes with uint8 exp_avg"):
        adamc.Adam([p.copy() for p in trained_int8()[1]], state_dtype="int8").load_state_dict(sd)


def test_from_bitsandbytes_refuses_codes_cast_to_float():
    b = _bnb()
    b["state"][0]["state1"] = b["state"][0]["state1"].astype(np.float32)
    b["state"][0]["state2"] = b["state"][0]["state2"].astype(np.float32)
    with pytest.raises(ValueError, match=r"\['absmax1'\] goes with uint8 state1"):
        interop.from_bitsandbytes(b)


@pytest.mark.parametrize("convert", ADAMC_CONVERTERS)
@pytest.mark.parametrize("version, quant_map", [(2, None), (1, "pow2")])
def test_map_version_and_groups_must_agree(convert, version, quant_map):
    """quant_map_version against the groups' quant_map: the codes were
    decoded with the wrong map (values up to 200% off)."""
    sd = trained_int8(quant_map="pow2")[0].state_dict()
    assert sd["quant_map_version"] == 2
    sd["quant_map_version"] = version
    for g in sd["param_groups"]:
        if quant_map is None:
            del g["quant_map"]
        else:
            g["quant_map"] = quant_map
    with pytest.raises(ValueError, match="inconsistent state_dict"):
        convert(sd)


def test_foreign_lr_of_several_elements_is_named():
    b = _bnb()
    b["param_groups"][0]["lr"] = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match=r"\['lr'\] must be one number, got an array of shape"):
        interop.from_bitsandbytes(b)


def test_codes_an_optimizer_keeps_as_float_point_to_quantize_state():
    """The refusal named "the same min_8bit_size", which cannot help for
    bitsandbytes' codes of a tensor below one block; its advice now works."""
    opt, params = trained_int8()
    sd = opt.state_dict()
    big = max(p.size for p in params)
    # as from_bitsandbytes gives it: the optimizer's own min_8bit_size
    del sd["param_groups"][0]["min_8bit_size"]
    other = adamc.Adam([p.copy() for p in params], lr=1e-2, state_dtype="int8",
                       min_8bit_size=big + 1)
    with pytest.raises(ValueError, match=r"quantize_state\(sd, min_8bit_size=\.\.\.\)"):
        other.load_state_dict(sd)
    other.load_state_dict(interop.quantize_state(sd, min_8bit_size=big + 1))
    assert all(e["exp_avg"].dtype == np.float32 for e in other.state_dict()["state"].values())


@pytest.mark.parametrize("convert", ADAMC_CONVERTERS)
def test_map_version_is_checked_for_second_moment_codes(convert):
    """The map check looked at entries whose exp_avg was 8-bit only: with
    float exp_avg and 8-bit exp_avg_sq, a quant_map_version the groups
    contradict went unnoticed and the codes were decoded with the wrong map."""
    sd = trained_int8(quant_map="pow2")[0].state_dict()
    for e in sd["state"].values():
        if "exp_avg_absmax" in e:
            e["exp_avg"] = R.dequantize_blockwise(e["exp_avg"], e.pop("exp_avg_absmax"),
                                                  True, 2)
    assert sd["quant_map_version"] == 2
    for g in sd["param_groups"]:
        g["quant_map"] = "dynamic"   # (map version 1)
    with pytest.raises(ValueError, match="inconsistent state_dict"):
        convert(sd)


@pytest.mark.parametrize("convert, make", [
    (interop.from_torchao, lambda sd: interop.to_torchao(sd)),
    (interop.from_bitsandbytes, lambda sd: interop.to_bitsandbytes(sd))])
def test_foreign_amsgrad_groups_are_refused_before_any_state(convert, make):
    """amsgrad=True in a foreign group with no state yet (nothing stepped)
    converted into a group that silently dropped it."""
    foreign = make(trained_int8()[0].state_dict())
    foreign["state"] = {}
    foreign["param_groups"][0]["amsgrad"] = True
    with pytest.raises(ValueError, match=r"amsgrad=True; .* built with amsgrad=False"):
        convert(foreign)
    foreign["param_groups"][0]["amsgrad"] = False
    assert convert(foreign)["state"] == {}
