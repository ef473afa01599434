"""adamc.interop against the real libraries, when torch and bitsandbytes (or
torchao) import: a real Adam8bit state goes into adamc and back, and both
libraries step from the same state (docs/int8-state.md).
"""

import numpy as np
import pytest

import adamc
from adamc import _spec
from adamc import interop
from adamc import reference as R
from _int8_cases import BLOCK, assert_entries_equal, random_params, trained_int8


# ---------------------------------------------------------------------------
# against the real libraries (torch + bitsandbytes / torchao installed)


@pytest.fixture
def bnb():
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch, bnb
    torch.set_num_threads(before)


def _bnb_optimizer(torch, bnb, params, **kw):
    tp = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    return bnb.optim.Adam8bit(tp, **kw), tp


def test_adamc_state_into_bitsandbytes_and_back(bnb):
    torch, bnb = bnb
    opt, params = trained_int8(adamc.Adam, lr=1e-3)
    sd = opt.state_dict()
    b_opt, tp = _bnb_optimizer(torch, bnb, params, lr=1e-3)
    b_opt.load_state_dict(interop.to_bitsandbytes(sd, tensor=torch.from_numpy))
    # bitsandbytes took it as its own state: 8-bit where adamc had it
    assert b_opt.state[tp[0]]["state1"].dtype == torch.uint8
    assert b_opt.state[tp[2]]["state1"].dtype == torch.float32
    back = interop.from_bitsandbytes(b_opt.state_dict())
    assert_entries_equal(back["state"], sd["state"])
    # bitsandbytes' own dequantization agrees with adamc's, bit for bit
    F = pytest.importorskip("bitsandbytes.functional")
    st = b_opt.state[tp[1]]
    got = F.dequantize_blockwise(st["state1"], absmax=st["absmax1"], code=st["qmap1"],
                                 blocksize=BLOCK).numpy()
    want = R.dequantize_blockwise(sd["state"][1]["exp_avg"], sd["state"][1]["exp_avg_absmax"],
                                  True)
    assert np.array_equal(got, want)


# Both libraries step from one state.  They compute the same update from the
# same dequantized moments, but round differently: bitsandbytes' m is
# b1 * m + (1 - b1) * g (adamc: torch's lerp), and its CPU quantizer picks a
# code by an approximate search, not always the nearest (docs/int8-state.md).
# Each step moves a weight by about lr at most.  Measured over 5 steps
# (bitsandbytes 0.50.2, seed 11): the weights differ by 6e-5 * lr * steps on
# average and 0.024 * lr * steps at worst; the bounds leave 150x and 8x.
STEPS = 5
LR = 1e-3


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_bitsandbytes_and_adamc_step_alike(bnb, decay):
    torch, bnb = bnb
    rng = np.random.default_rng(11)
    params = random_params(rng)
    ours = [p.copy() for p in params]
    opt = adamc.AdamW(ours, lr=LR, weight_decay=decay, state_dtype="int8")
    b_opt, tp = _bnb_optimizer(torch, bnb, params, lr=LR, weight_decay=decay)
    for step in range(STEPS):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step([g.copy() for g in grads])
        for t, g in zip(tp, grads):
            t.grad = torch.from_numpy(g.copy())
        b_opt.step()
        if step == 0:
            # after one step from zero state both hold the same quantized moments
            # up to the quantizers' code choice
            b_sd = interop.from_bitsandbytes(b_opt.state_dict())
            for i in range(len(params)):
                a = interop.dequantize_state(opt.state_dict())["state"][i]["exp_avg"]
                b = interop.dequantize_state(b_sd)["state"][i]["exp_avg"]
                scale = np.abs(a).max()
                assert np.mean(np.abs(a - b)) <= 1e-3 * scale
    for p0, a, t in zip(params, ours, tp):
        b = t.detach().numpy()
        moved = np.abs(a - p0).max()
        assert moved > 0.5 * LR * STEPS  # both really stepped
        diff = np.abs(a - b)
        assert diff.mean() <= 0.01 * LR * STEPS, diff.mean()
        assert diff.max() <= 0.2 * LR * STEPS, diff.max()


def test_bitsandbytes_state_into_adamc(bnb):
    torch, bnb = bnb
    rng = np.random.default_rng(12)
    params = random_params(rng)
    b_opt, tp = _bnb_optimizer(torch, bnb, params, lr=LR)
    for _ in range(3):
        for t in tp:
            t.grad = torch.from_numpy(rng.standard_normal(tuple(t.shape)).astype(np.float32))
        b_opt.step()
    sd = interop.from_bitsandbytes(b_opt.state_dict())
    ours = [t.detach().numpy().copy() for t in tp]
    opt = adamc.Adam(ours, lr=LR, state_dtype="int8")
    opt.load_state_dict(sd)
    assert_entries_equal(opt.state_dict()["state"], sd["state"])
    # one more step each from the same state and weights
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    opt.step([g.copy() for g in grads])
    for t, g in zip(tp, grads):
        t.grad = torch.from_numpy(g.copy())
    b_opt.step()
    for a, t in zip(ours, tp):
        assert np.abs(a - t.detach().numpy()).max() <= 0.2 * LR


def test_torchao_state_into_adamc_and_back(bnb):
    torch, _ = bnb
    pytest.importorskip("torchao")
    try:
        from torchao.optim import AdamW8bit
        from torchao.optim.subclass_8bit import OptimState8bit
    except ImportError:
        pytest.skip("this torchao has no torchao.optim.AdamW8bit")
    rng = np.random.default_rng(13)
    params = random_params(rng, [(64, 128), (300,)])
    tp = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    t_opt = AdamW8bit(tp, lr=LR, weight_decay=0.0)
    for t in tp:
        t.grad = torch.from_numpy(rng.standard_normal(tuple(t.shape)).astype(np.float32))
    t_opt.step()
    sd = interop.from_torchao(t_opt.state_dict())
    st = t_opt.state[tp[0]]
    assert np.array_equal(sd["state"][0]["exp_avg"], st["exp_avg"].codes.numpy())
    assert np.array_equal(sd["state"][0]["exp_avg_sq_absmax"], st["exp_avg_sq"].scale.numpy())
    ours = [t.detach().numpy().copy() for t in tp]
    opt = adamc.AdamW(ours, lr=LR, weight_decay=0.0, state_dtype="int8")
    opt.load_state_dict(sd)
    # and back into a fresh torchao optimizer, as OptimState8bit tensors
    back = interop.to_torchao(opt.state_dict(), tensor=torch.from_numpy)
    for e in back["state"].values():
        for m in ("exp_avg", "exp_avg_sq"):
            if isinstance(e[m], dict):
                d = e[m]
                e[m] = OptimState8bit(d["codes"], d["scale"], d["qmap"], d["signed"])
    t2 = AdamW8bit([torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ours], lr=LR,
                   weight_decay=0.0)
    t2.load_state_dict(back)
    again = interop.from_torchao(t2.state_dict())
    assert_entries_equal(again["state"], sd["state"])
    # the loaded torchao optimizer steps (its lr must come back a tensor),
    # as adamc does from the same state
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in ours]
    for t, g in zip(t2.param_groups[0]["params"], grads):
        t.grad = torch.from_numpy(g.copy())
    t2.step()
    opt.step(grads)
    for t, p in zip(t2.param_groups[0]["params"], ours):
        np.testing.assert_allclose(t.detach().numpy(), p, rtol=0, atol=1e-6)


def test_map_version_travels():
    sd = trained_int8()[0].state_dict()
    assert sd["quant_map_version"] == _spec.QUANT_MAP_VERSION
    for there, back in ((interop.to_bitsandbytes, interop.from_bitsandbytes),
                        (interop.to_torchao, interop.from_torchao)):
        assert back(there(sd))["quant_map_version"] == _spec.QUANT_MAP_VERSION
    assert "quant_map_version" not in interop.dequantize_state(sd)
    assert interop.quantize_state(interop.dequantize_state(sd))["quant_map_version"] == 1
    sd["quant_map_version"] = 3   # a map this adamc does not know
    for convert in (interop.to_bitsandbytes, interop.to_torchao, interop.dequantize_state):
        with pytest.raises(ValueError, match=r"map versions 1 \('dynamic'\), 2 \('pow2'\) only"):
            convert(sd)


def test_quantize_state_gives_the_codes_load_state_dict_makes():
    # load_state_dict quantizes full-precision moments by value when the
    # groups say state_dtype="int8" (a float optimizer's state_dict says
    # otherwise, and its groups win: that is what quantize_state changes);
    # both paths give the same codes
    rng = np.random.default_rng(6)
    params = random_params(rng)
    full = adamc.Adam(params, lr=1e-2)
    full.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    sd = full.state_dict()
    eight = adamc.Adam([p.copy() for p in params], lr=1e-2, state_dtype="int8")
    eight.load_state_dict({**sd, "param_groups": [
        {**g, "state_dtype": "int8"} for g in sd["param_groups"]]})
    assert_entries_equal(eight.state_dict()["state"], interop.quantize_state(sd)["state"])


def test_to_layouts_refuse_moments_of_different_shapes():
    sd = trained_int8()[0].state_dict()
    sd["state"][2]["exp_avg_sq"] = np.zeros(301, np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        interop.to_bitsandbytes(sd)


def test_bfloat16_parameters_convert_and_master_copies_are_refused():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(8)
    p = rng.standard_normal((64, 128)).astype(ml_dtypes.bfloat16)
    opt = adamc.Adam([p], lr=1e-2, state_dtype="int8", master_weights=False)
    opt.step([rng.standard_normal(p.shape).astype(ml_dtypes.bfloat16)])
    sd = opt.state_dict()
    back = interop.from_bitsandbytes(interop.to_bitsandbytes(sd))
    assert_entries_equal(back["state"], sd["state"])
    with_master = adamc.Adam([p.copy()], lr=1e-2, state_dtype="int8")
    with_master.step([rng.standard_normal(p.shape).astype(ml_dtypes.bfloat16)])
    for convert in (interop.to_bitsandbytes, interop.to_torchao):
        with pytest.raises(ValueError, match="master"):
            convert(with_master.state_dict())


def test_torchao_bfloat16_model_converts():
    """torchao keeps a small parameter's moments in its dtype: for a bfloat16
    model, bfloat16 tensors, which NumPy cannot take (from_torchao refused
    them with a TypeError); they widen to float32 exactly."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        pytest.skip("this torchao has no torchao.optim.AdamW8bit")
    torch.manual_seed(0)
    tp = [torch.nn.Parameter(torch.randn(shape, dtype=torch.bfloat16))
          for shape in ((64, 128), (300,))]
    t_opt = AdamW8bit(tp, lr=LR, weight_decay=0.0)
    for t in tp:
        t.grad = torch.randn(t.shape, dtype=torch.bfloat16)
    t_opt.step()
    sd = interop.from_torchao(t_opt.state_dict())
    small = t_opt.state[tp[1]]
    for m in ("exp_avg", "exp_avg_sq"):
        assert small[m].dtype == torch.bfloat16
        assert sd["state"][1][m].dtype == np.float32
        assert np.array_equal(sd["state"][1][m], small[m].float().numpy())
    assert np.array_equal(sd["state"][0]["exp_avg"], t_opt.state[tp[0]]["exp_avg"].codes.numpy())
