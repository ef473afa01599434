"""adamc.interop.to_torch / from_torch: torch.optim.Adam's state_dict layout,
both ways.  Without torch, torch's layout is built from NumPy arrays (the
converters take anything np.asarray reads); with torch, real optimizers."""

import numpy as np
import pytest

import adamc
from adamc import interop, reference

from _toolkit import random_array, random_like

TORCH_GROUP = {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1,
               "amsgrad": True, "maximize": False, "foreach": None, "capturable": False,
               "differentiable": False, "fused": None, "decoupled_weight_decay": True}


def trained(rng, cls=adamc.Adam, steps=3, **kw):
    ps = [random_array(rng, (7, 5), np.float32, "C"), random_array(rng, (300,), np.float32, "C")]
    opt = cls(ps, lr=0.01, **kw)
    grads = [[random_like(rng, p) for p in ps] for _ in range(2 * steps)]
    for gs in grads[:steps]:
        opt.step(gs)
    return ps, opt, grads[steps:]


@pytest.mark.parametrize("impl", [adamc, reference])
@pytest.mark.parametrize("kw", [{"amsgrad": True, "weight_decay": 0.1},
                                {"decoupled_weight_decay": True, "weight_decay": 0.1,
                                 "maximize": True},
                                {"state_dtype": "int8", "min_8bit_size": 256}])
def test_a_round_trip_through_torchs_layout_resumes_bitwise(rng, impl, kw):
    ps, opt, rest = trained(rng, impl.Adam, **kw)
    sd = interop.to_torch(opt.state_dict())
    e = sd["state"][1]
    assert e["step"].dtype == np.float32 and e["step"].shape == () and e["step"] == 3
    assert set(e) == {"step", "exp_avg", "exp_avg_sq"} | (
        {"max_exp_avg_sq"} if kw.get("amsgrad") else set())
    g = sd["param_groups"][0]
    assert set(g) == {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                      "decoupled_weight_decay", "params"}
    assert (g["amsgrad"], g["maximize"], g["decoupled_weight_decay"]) == (
        kw.get("amsgrad", False), kw.get("maximize", False),
        kw.get("decoupled_weight_decay", False))
    if "state_dtype" in kw:   # 8-bit moments go out as the values the step uses
        want = interop.dequantize_state(opt.state_dict())["state"][1]["exp_avg_sq"]
        np.testing.assert_array_equal(e["exp_avg_sq"], want)
        assert e["exp_avg_sq"].dtype == np.float32
    back = interop.from_torch(sd)
    assert back["state"][1]["step"] == 3 and isinstance(back["state"][1]["step"], int)
    if "state_dtype" in kw:   # back in float32: dequantize_state's values
        want = interop.dequantize_state(opt.state_dict())["state"]
        for i, e in back["state"].items():
            for k in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_array_equal(e[k], want[i][k])
        return
    qs = [p.copy() for p in ps]
    resumed = impl.Adam(qs, lr=0.5)
    resumed.load_state_dict(back)
    for gs in rest:
        opt.step(gs)
        resumed.step(gs)
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p, q)


def test_from_torch_reads_torchs_layout(rng):
    m, v = random_array(rng, (4, 3), np.float32, "C") ** 2, random_array(rng, (4, 3), np.float32, "C") ** 2
    sd = {"state": {0: {"step": np.array(5.0, np.float32), "exp_avg": m, "exp_avg_sq": v,
                        "max_exp_avg_sq": v}},
          "param_groups": [{**TORCH_GROUP, "initial_lr": 0.02, "params": [0]}]}
    out = interop.from_torch(sd)
    e = out["state"][0]
    assert e["step"] == 5 and type(e["step"]) is int
    np.testing.assert_array_equal(e["exp_avg"], m)
    assert not np.shares_memory(e["exp_avg"], m)
    g = out["param_groups"][0]
    assert g == {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1,
                 "amsgrad": True, "maximize": False, "decoupled_weight_decay": True,
                 "initial_lr": 0.02, "params": [0]}
    w = np.zeros((4, 3), np.float32)
    opt = adamc.Adam([w], lr=0.3)
    opt.load_state_dict(out)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["amsgrad"]
    assert opt.param_groups[0]["decoupled_weight_decay"]
    opt.step([np.ones((4, 3), np.float32)])
    assert opt.state[0]["step"] == 6


@pytest.mark.parametrize("change, match", [
    ({"bias_correction": False}, r"\['bias_correction'\] is False, which torch.optim.Adam "
                                 r"has no option for"),
    ({"eps_mode": "inside"}, r"\['eps_mode'\] is 'inside'"),
    ({"lr": lambda t: 0.1}, r"\['lr'\] is .*torch.optim.Adam stores a number"),
])
def test_to_torch_refuses_what_torch_cannot_step(rng, change, match):
    _, opt, _ = trained(rng)
    sd = opt.state_dict()
    sd["param_groups"][0].update(change)
    with pytest.raises(ValueError, match=match):
        interop.to_torch(sd)


def test_to_torch_refuses_a_master_copy_and_counts_big_steps_in_float64(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = random_array(rng, (300,), np.float32, "C").astype(ml_dtypes.bfloat16)
    opt = adamc.Adam([w])
    opt.step([np.ones(300, np.float32)])
    with pytest.raises(ValueError, match=r"has 'master_param'.*torch.optim keeps none"):
        interop.to_torch(opt.state_dict())
    _, opt, _ = trained(rng, steps=1)
    sd = opt.state_dict()
    for e in sd["state"].values():
        e["step"] = 2 ** 24 + 1   # float32 would count it as 2**24
    out = interop.to_torch(sd)["state"][0]["step"]
    assert out.dtype == np.float64 and int(out) == 2 ** 24 + 1


@pytest.mark.parametrize("entry, exc, match", [
    ({"step": np.array(2.5, np.float32)}, ValueError, r"\['step'\] must be a whole number"),
    ({"momentum_buffer": np.zeros(3, np.float32)}, ValueError, r"momentum_buffer"),
    ({"exp_avg": None}, TypeError, r"\['exp_avg'\] is None"),
])
def test_from_torch_refuses_what_is_not_adams_state(entry, exc, match):
    z = np.zeros(3, np.float32)
    e = {"step": np.array(1.0, np.float32), "exp_avg": z, "exp_avg_sq": z, **entry}
    sd = {"state": {0: e}, "param_groups": [{**TORCH_GROUP, "params": [0]}]}
    with pytest.raises(exc, match=match):
        interop.from_torch(sd)
    with pytest.raises(ValueError, match=r"a third \(AdEMAMix\)"):
        interop.from_torch({"state": {}, "param_groups": [
            {**TORCH_GROUP, "betas": (0.9, 0.99, 0.999), "params": [0]}]})


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_real_torch_optimizers_both_ways(rng, cls, dtype):
    """Train 3 steps in one library and 3 in the other: the same as 6 in
    torch, to float rounding (adamc and torch differ by that already)."""
    torch = pytest.importorskip("torch")
    kw = {"amsgrad": True, "weight_decay": 0.1} if cls == "Adam" else {"weight_decay": 0.1}
    w0 = [random_array(rng, s, np.float32, "C") for s in [(7, 5), (300,)]]
    grads = [[random_like(rng, w) for w in w0] for _ in range(6)]
    tdt = getattr(torch, dtype)

    def torch_run(steps, start=None):
        tp = [torch.nn.Parameter(torch.from_numpy(w.copy()).to(tdt)) for w in (start or w0)]
        to = getattr(torch.optim, cls)(tp, lr=0.01, **kw)
        for gs in steps:
            for p, g in zip(tp, gs):
                p.grad = torch.from_numpy(g).to(tdt)
            to.step()
        return tp, to

    tp, to = torch_run(grads[:3])
    ws = [p.detach().float().numpy() for p in tp]
    opt = getattr(adamc, cls)(ws, lr=0.5)   # lr, amsgrad, decay: from the state_dict
    opt.load_state_dict(interop.from_torch(to.state_dict()))
    for gs in grads[3:]:
        opt.step(gs)
        for p, g in zip(tp, gs):
            p.grad = torch.from_numpy(g).to(tdt)
        to.step()
    tol = 1e-6 if dtype == "float32" else 2e-2
    for a, p in zip(ws, tp):
        np.testing.assert_allclose(a, p.detach().float().numpy(), rtol=tol, atol=tol)

    ws = [w.copy() for w in w0]
    opt = getattr(adamc, cls)(ws, lr=0.01, **kw)
    for gs in grads[:3]:
        opt.step(gs)
    tp, to = torch_run([], start=ws)
    to.param_groups[0]["lr"] = 0.5
    to.load_state_dict(interop.to_torch(opt.state_dict(), tensor=torch.from_numpy))
    assert to.param_groups[0]["lr"] == 0.01 and to.state[tp[0]]["step"] == 3
    for gs in grads[3:]:
        opt.step(gs)
        for p, g in zip(tp, gs):
            p.grad = torch.from_numpy(g).to(tdt)
        to.step()
    for a, p in zip(ws, tp):
        np.testing.assert_allclose(a, p.detach().float().numpy(), rtol=tol, atol=tol)


def test_to_torch_gives_what_torch_can_take_and_step(rng):
    """A review: bfloat16 state went out as ml_dtypes arrays (torch.from_numpy
    cannot read them); amsgrad turned on after steps gave entries without
    max_exp_avg_sq (torch's next step raised KeyError)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ps, opt, rest = trained(rng, state_dtype="bfloat16")
    out = interop.to_torch(opt.state_dict())["state"][0]
    assert out["exp_avg"].dtype == np.float32
    np.testing.assert_array_equal(out["exp_avg"], opt.state[0]["exp_avg"].astype(np.float32))
    assert opt.state[0]["exp_avg"].dtype == ml_dtypes.bfloat16

    ps, opt, rest = trained(rng)
    opt.param_groups[0]["amsgrad"] = True
    sd = interop.to_torch(opt.state_dict())
    for e in sd["state"].values():
        np.testing.assert_array_equal(e["max_exp_avg_sq"], np.zeros_like(e["exp_avg_sq"]))
    qs = [p.copy() for p in ps]
    resumed = adamc.Adam(qs)
    resumed.load_state_dict(interop.from_torch(sd))
    for gs in rest:   # zeros: what adamc starts the maximum from
        opt.step(gs)
        resumed.step(gs)
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p, q)


def test_from_torch_turns_tensors_in_other_group_keys_into_numpy():
    """A review: a scheduler's initial_lr beside a tensor lr stayed a tensor,
    and save_state refused the group later."""
    Tensor = type("Tensor", (), {"__module__": "torch", "__array__":
                                 lambda self, dtype=None, copy=None: np.array(0.02)})
    sd = {"state": {}, "param_groups": [{**TORCH_GROUP, "lr": Tensor(),
                                         "initial_lr": Tensor(), "params": [0]}]}
    g = interop.from_torch(sd)["param_groups"][0]
    assert g["lr"] == 0.02 and g["initial_lr"] == 0.02 and type(g["initial_lr"]) is float
