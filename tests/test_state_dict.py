"""state_dict: torch's layout, copies, pickle and np.savez round trips, bitwise resume."""

import io
import pickle

import numpy as np
import pytest

import adamc
from adamc import reference

from _toolkit import STATE_ENTRY_KEYS, random_array, random_like


def make_opt(rng, cls=adamc.Adam, **kw):
    ps = [random_array(rng, (17,), np.float32, "C"), random_array(rng, (4, 6), np.float64, "F")]
    return ps, cls([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.02}], **kw)


def test_layout(rng):
    ps, opt = make_opt(rng, amsgrad=True)
    opt.step([random_like(rng, p) for p in ps])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == [0]
    assert sd["param_groups"][1]["params"] == [1]
    assert sd["param_groups"][1]["lr"] == 0.02
    e = sd["state"][1]
    assert set(e) == STATE_ENTRY_KEYS
    assert e["step"] == 1 and isinstance(e["step"], int)
    assert e["exp_avg"].shape == (4, 6) and e["exp_avg"].dtype == np.float64
    assert e["exp_avg"].flags.f_contiguous


def test_saved_dict_is_a_copy(rng):
    ps, opt = make_opt(rng)
    opt.step([random_like(rng, p) for p in ps])
    sd = opt.state_dict()
    before = sd["state"][0]["exp_avg"].copy()
    opt.step([random_like(rng, p) for p in ps])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)
    assert sd["state"][0]["step"] == 1
    sd["param_groups"][0]["lr"] = 123.0
    assert opt.param_groups[0]["lr"] != 123.0


def roundtrip_pickle(sd):
    return pickle.loads(pickle.dumps(sd))


def roundtrip_savez(sd):
    buf = io.BytesIO()
    np.savez(buf, state_dict=np.array(sd, dtype=object))
    buf.seek(0)
    with np.load(buf, allow_pickle=True) as f:
        return f["state_dict"].item()


def roundtrip_savez_flat(sd):
    """Arrays as npz members, no pickled objects: the portable way."""
    flat = {}
    for i, e in sd["state"].items():
        for k, v in e.items():
            flat[f"state/{i}/{k}"] = np.asarray(v)
    for gi, g in enumerate(sd["param_groups"]):
        for k, v in g.items():
            if v is not None:  # (None values cannot go into a plain .npz: left out)
                flat[f"group/{gi}/{k}"] = np.asarray(v)
    buf = io.BytesIO()
    np.savez(buf, **flat)
    buf.seek(0)
    out = {"state": {}, "param_groups": [dict() for _ in sd["param_groups"]]}
    with np.load(buf) as f:
        for name in f.files:
            kind, a, k = name.split("/")
            v = f[name]
            if kind == "state":
                e = out["state"].setdefault(int(a), {})
                e[k] = int(v) if k == "step" else v
            else:
                if k in ("params",):
                    v = [int(x) for x in v]
                elif k == "betas":
                    v = tuple(float(x) for x in v)
                elif v.dtype == bool:
                    v = bool(v)
                elif v.dtype.kind == "U":
                    v = str(v)
                elif v.dtype.kind in "iu":
                    v = int(v)
                else:
                    v = float(v)
                out["param_groups"][int(a)][k] = v
    return out


@pytest.mark.parametrize("trip", [roundtrip_pickle, roundtrip_savez, roundtrip_savez_flat])
@pytest.mark.parametrize("cls", [adamc.Adam, adamc.AdamW])
def test_bitwise_resume(rng, trip, cls):
    grads = None
    ps, opt = make_opt(rng, cls, amsgrad=True, weight_decay=0.01)
    grads = [[random_like(rng, p) for p in ps] for _ in range(10)]
    # uninterrupted run
    ps_a = [p.copy(order="K") for p in ps]
    opt_a = cls([{"params": ps_a[:1]}, {"params": ps_a[1:], "lr": 0.02}],
                amsgrad=True, weight_decay=0.01)
    for g in grads:
        opt_a.step(g)
    # run, stop at 4, save, build a fresh optimizer on copies, load, continue
    for g in grads[:4]:
        opt.step(g)
    sd = trip(opt.state_dict())
    ps_b = [p.copy(order="K") for p in ps]
    opt_b = cls([{"params": ps_b[:1]}, {"params": ps_b[1:], "lr": 0.5}],
                amsgrad=True, weight_decay=0.01)
    opt_b.load_state_dict(sd)
    assert opt_b.param_groups[1]["lr"] == 0.02
    for g in grads[4:]:
        opt_b.step(g)
    for a, b in zip(ps_a, ps_b):
        np.testing.assert_array_equal(a, b)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for i in sa["state"]:
        for k in sa["state"][i]:
            np.testing.assert_array_equal(sa["state"][i][k], sb["state"][i][k])


def test_load_copies_arrays_in(rng):
    ps, opt = make_opt(rng)
    opt.step([random_like(rng, p) for p in ps])
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    saved = sd["state"][0]["exp_avg"].copy()
    opt.step([random_like(rng, p) for p in ps])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)


def test_load_empty_state_resets(rng):
    ps, opt = make_opt(rng)
    fresh = opt.state_dict()
    opt.step([random_like(rng, p) for p in ps])
    opt.load_state_dict(fresh)
    assert opt.state_dict()["state"] == {}


def test_state_dict_with_none_grads_resumes(rng):
    ps, opt = make_opt(rng)
    opt.step([random_like(rng, ps[0]), None])
    sd = opt.state_dict()
    assert list(sd["state"]) == [0]
    ps2 = [p.copy(order="K") for p in ps]
    opt2 = adamc.Adam([{"params": ps2[:1]}, {"params": ps2[1:], "lr": 0.02}])
    opt2.load_state_dict(sd)
    g = [random_like(rng, p) for p in ps]
    opt.step(g)
    opt2.step(g)
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("module", [adamc, reference])
def test_steps_as_torch_keeps_them_load(module):
    """torch's state_dict holds each step as a float tensor (a 0-d float32
    array after .numpy()): whole numbers load as the int count."""
    p = np.ones(4, dtype=np.float32)
    opt = module.Adam([p], lr=0.1)
    opt.step([np.ones(4, dtype=np.float32)])
    sd = opt.state_dict()
    for step in (np.array(1.0, dtype=np.float32), 1.0, np.float64(1.0)):
        sd["state"][0]["step"] = step
        twin = module.Adam([np.ones(4, dtype=np.float32)], lr=0.1)
        twin.load_state_dict(sd)
        assert twin.state_dict()["state"][0]["step"] == 1
    sd["state"][0]["step"] = np.array(1.5, dtype=np.float32)
    with pytest.raises(ValueError, match=r"\['step'\] must be a whole number of steps"):
        module.Adam([np.ones(4, dtype=np.float32)]).load_state_dict(sd)


@pytest.mark.parametrize("impl", [adamc, reference])
@pytest.mark.parametrize("kw", [{"amsgrad": True},
                                {"state_dtype": "int8", "min_8bit_size": 256}])
def test_state_is_live_read_only_views(rng, impl, kw):
    ps = [random_array(rng, (300,), np.float32, "C"), random_array(rng, (4, 6), np.float32, "F")]
    opt = impl.Adam(ps, lr=0.01, **kw)
    assert opt.state == {}
    opt.step([random_like(rng, ps[0]), None])
    live = opt.state
    assert list(live) == [0]
    sd = opt.state_dict()["state"]
    assert set(live[0]) == set(sd[0]) and live[0]["step"] == 1
    for k, a in live[0].items():
        if k != "step":
            assert not a.flags.writeable and a.dtype == sd[0][k].dtype
            np.testing.assert_array_equal(a, sd[0][k])
            with pytest.raises(ValueError, match="read-only"):
                a[...] = 0
            with pytest.raises(ValueError, match="WRITEABLE"):   # a review: it could be
                a.flags.writeable = True                        # flipped back
            base = a.base
            while isinstance(base, np.ndarray):
                with pytest.raises(ValueError, match="read-only"):
                    base[...] = 0
                base = base.base
    first = live[0]["exp_avg"].copy()
    opt.step([random_like(rng, p) for p in ps])
    sd = opt.state_dict()["state"]
    np.testing.assert_array_equal(live[0]["exp_avg"], sd[0]["exp_avg"])   # live: the new values
    assert not np.array_equal(live[0]["exp_avg"], first)
    assert opt.state[0]["step"] == 2 and opt.state[1]["step"] == 1
    assert opt.state[1]["exp_avg"].flags.f_contiguous


@pytest.mark.parametrize("impl", [adamc, reference])
def test_state_of_a_named_optimizer_is_keyed_by_name(rng, impl):
    ps = {"w": random_array(rng, (5,), np.float64, "C"), "b": random_array(rng, (2,), np.float64, "C")}
    opt = impl.AdamW(ps)
    opt.step({"w": None, "b": random_like(rng, ps["b"])})
    assert list(opt.state) == ["b"]
    np.testing.assert_array_equal(opt.state["b"]["exp_avg_sq"],
                                  opt.state_dict()["state"][1]["exp_avg_sq"])
