"""Bad input: a clear TypeError/ValueError naming the culprit, and nothing changed."""

import copy

import numpy as np
import pytest

import adamc
from adamc import reference

from _toolkit import assert_unchanged, random_array, random_like, snapshot, state_of


@pytest.fixture
def stepped(rng, impl):
    """An optimizer with three parameters, stepped twice."""
    ps = [random_array(rng, (5,), np.float32, "C"),
          random_array(rng, (3, 4), np.float64, "F"),
          random_array(rng, (7,), np.float32, "C")]
    opt = impl.Adam(ps, lr=0.01, amsgrad=True)
    for _ in range(2):
        opt.step([random_like(rng, p) for p in ps])
    return opt, ps


# ---------------------------------------------------------------- construction

BAD_ARRAYS = [
    (lambda: np.ones(3, dtype=np.int64), TypeError, "float32 or float64"),
    (lambda: np.ones(3, dtype=np.complex64), TypeError, "float32 or float64"),
    (lambda: np.array([1.0, None], dtype=object), TypeError, "float32 or float64"),
    (lambda: np.ones(3, dtype=">f8" if np.little_endian else "<f8"), TypeError, "byte order"),
    (lambda: [1.0, 2.0], TypeError, "numpy.ndarray"),
    (lambda: np.ones((4, 4))[:, ::2], ValueError, "not contiguous"),
    (lambda: np.frombuffer(bytearray(8 * 4 + 1), dtype=np.float64, count=4, offset=1),
     ValueError, "read-only|aligned"),
]


@pytest.mark.parametrize("make,exc,msg", BAD_ARRAYS)
def test_bad_param_arrays(impl, make, exc, msg):
    with pytest.raises(exc, match=msg) as e:
        impl.Adam([np.zeros(2), make()])
    assert "params[1]" in str(e.value)


def test_unaligned_writeable_param_rejected(impl):
    buf = bytearray(8 * 4 + 1)
    a = np.frombuffer(buf, dtype=np.uint8)[1:].view(np.float64)
    assert not a.flags.aligned and a.flags.writeable
    with pytest.raises(ValueError, match="aligned"):
        impl.Adam([a])


def test_read_only_param(impl):
    a = np.zeros(3)
    a.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        impl.Adam([a])


def test_empty_and_wrong_params(impl):
    with pytest.raises(ValueError, match="empty"):
        impl.Adam([])
    with pytest.raises(TypeError, match="single array"):
        impl.Adam(np.zeros(3))
    with pytest.raises(TypeError, match="sequence"):
        impl.Adam(5)
    with pytest.raises(TypeError, match="mixes"):
        impl.Adam([np.zeros(2), {"params": [np.zeros(2)]}])
    with pytest.raises(ValueError, match="empty"):
        impl.Adam([{"params": []}])
    with pytest.raises(ValueError, match="no 'params'"):
        impl.Adam([{"lr": 0.1}])


def test_duplicate_and_overlapping_params(impl):
    a = np.zeros(10)
    with pytest.raises(ValueError, match="same array"):
        impl.Adam([a, a])
    with pytest.raises(ValueError, match="share memory"):
        impl.Adam([a[:6], a[4:]])
    with pytest.raises(ValueError, match="share memory"):
        impl.Adam([{"params": [a]}, {"params": [a.reshape(2, 5)]}])
    impl.Adam([a[:5], a[5:]])  # adjacent, not overlapping: fine


@pytest.mark.parametrize("kw,exc,msg", [
    ({"lr": -1.0}, ValueError, "lr must be >= 0"),
    ({"lr": float("nan")}, ValueError, "lr must be finite"),
    ({"lr": float("inf")}, ValueError, "lr must be finite"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number"),
    ({"lr": True}, TypeError, "lr must be a real number"),
    ({"eps": -1e-8}, ValueError, "eps must be >= 0"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
    ({"weight_decay": float("nan")}, ValueError, "weight_decay must be finite"),
    ({"betas": (1.0, 0.999)}, ValueError, r"betas\[0\].*\[0, 1\)"),
    ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\].*\[0, 1\)"),
    ({"betas": (0.9, float("nan"))}, ValueError, "finite"),
    ({"betas": (0.9,)}, ValueError, "exactly 2"),
    ({"betas": (0.9, 0.99, 0.999)}, ValueError, "exactly 2"),
    ({"betas": 0.9}, TypeError, "tuple"),
    ({"amsgrad": 1}, TypeError, "amsgrad must be True or False"),
    ({"maximize": None}, TypeError, "maximize must be True or False"),
    ({"bias_correction": "yes"}, TypeError, "bias_correction"),
    ({"eps_inside_sqrt": 0}, TypeError, "eps_inside_sqrt"),
])
def test_bad_hyperparameters(impl, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        impl.Adam([np.zeros(2)], **kw)
    with pytest.raises(exc, match=msg + r"|param_groups\[1\]"):
        impl.Adam([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)], **kw}])


def test_unknown_keyword(impl):
    with pytest.raises(TypeError):
        impl.Adam([np.zeros(2)], momentum=0.9)
    with pytest.raises(TypeError):
        impl.AdamW([np.zeros(2)], decoupled_weight_decay=False)


def test_duplicate_names(impl):
    with pytest.raises(ValueError, match="duplicate"):
        impl.Adam([{"params": {"a": np.zeros(2)}}, {"params": {"a": np.zeros(2)}}])


# ---------------------------------------------------------------- step

def bad_grads(ps, rng):
    g = [random_like(rng, p) for p in ps]
    last = len(ps) - 1

    def with_last(x):
        return g[:last] + [x]

    return [
        ("count", g[:last], ValueError, "grads has 2 entries"),
        ("count+", g + [g[0]], ValueError, "grads has 4 entries"),
        ("ndarray", np.stack([g[0]]), TypeError, "list"),
        ("dict", {"a": 1}, TypeError, "list"),
        ("shape", with_last(np.zeros(8, np.float32)), ValueError, r"grads\[2\] has shape"),
        ("int", with_last(np.zeros(7, np.int32)), TypeError, "float32 or float64"),
        ("c64", with_last(np.zeros(7, np.complex64)), TypeError, "float32 or float64"),
        ("swapped", with_last(np.zeros(7, ">f4" if np.little_endian else "<f4")),
         TypeError, "byte order"),
        ("list", with_last([0.0] * 7), TypeError, "numpy.ndarray"),
        ("strided", with_last(np.zeros(14, np.float32)[::2]), ValueError, "not contiguous"),
        ("alias-param", with_last(ps[last]), ValueError, r"shares memory with params\[2\]"),
    ]


def test_bad_grads_change_nothing(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    for name, grads, exc, msg in bad_grads(ps, rng):
        with pytest.raises(exc, match=msg):
            opt.step(grads)
        assert_unchanged(opt, snap)


def test_grad_order_mismatch(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    g = [random_like(rng, p) for p in ps]
    g[1] = np.ascontiguousarray(g[1])  # param 1 is F-ordered
    with pytest.raises(ValueError, match=r"grads\[1\] is C-contiguous but params\[1\] is F"):
        opt.step(g)
    assert_unchanged(opt, snap)


def test_grad_aliasing_state_buffer(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    g = [random_like(rng, p) for p in ps]
    g[2] = state_of(opt, 0)["exp_avg_sq"][:0]  # empty view: harmless, but wrong shape
    with pytest.raises(ValueError, match="shape"):
        opt.step(g)
    big = [random_array(rng, (7,), np.float32, "C") for _ in range(2)]
    opt2 = type(opt)(big)
    opt2.step([random_like(rng, p) for p in big])
    with pytest.raises(ValueError, match=r"exp_avg of params\[0\]"):
        opt2.step([state_of(opt2, 0)["exp_avg"], random_like(rng, big[1])])
    with pytest.raises(ValueError, match=r"max_exp_avg_sq of params\[2\]"):
        opt.step(g[:2] + [state_of(opt, 2)["max_exp_avg_sq"]])
    assert_unchanged(opt, snap)


def test_edited_hyperparameters_checked_at_step(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    g = [random_like(rng, p) for p in ps]
    for key, val, exc in [("lr", -0.1, ValueError), ("eps", float("nan"), ValueError),
                          ("betas", (0.9, 1.0), ValueError), ("amsgrad", "no", TypeError),
                          ("weight_decay", -1.0, ValueError)]:
        old = opt.param_groups[0][key]
        opt.param_groups[0][key] = val
        with pytest.raises(exc, match=rf"{key}.*param_groups\[0\]|param_groups\[0\]"):
            opt.step(g)
        opt.param_groups[0][key] = old
        assert_unchanged(opt, snap)
    opt.param_groups[0]["betas"] = [0.9, 1.5]
    with pytest.raises(ValueError, match="betas"):
        opt.step(g)
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    del opt.param_groups[0]["eps"]
    with pytest.raises(ValueError, match="missing"):
        opt.step(g)
    opt.param_groups[0]["eps"] = 1e-8
    opt.step(g)  # fixed again: works


def test_schedule_error_changes_nothing(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    g = [random_like(rng, p) for p in ps]
    opt.param_groups[0]["lr"] = lambda t: -1.0
    with pytest.raises(ValueError, match=r"lr\(3\)"):
        opt.step(g)
    assert_unchanged(opt, snap, groups=False)

    def boom(t):
        raise RuntimeError("schedule failed")

    opt.param_groups[0]["lr"] = boom
    with pytest.raises(RuntimeError, match="schedule failed"):
        opt.step(g)
    assert_unchanged(opt, snap, groups=False)


def test_param_list_edits_rejected(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    g = [random_like(rng, p) for p in ps]
    opt.param_groups[0]["params"].append(np.zeros(3))
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step(g)
    opt.param_groups[0]["params"].pop()
    opt.param_groups[0]["params"][0] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step(g)
    opt.param_groups[0]["params"][0] = ps[0]
    opt.step(g)
    assert opt.state_dict()["state"][0]["step"] == snap.state_dict["state"][0]["step"] + 1


def set_shape(a, shape):
    """Reshape in place, as users can (deprecated from NumPy 2.5)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            a.shape = shape
        except AttributeError:  # pragma: no cover - once NumPy removes it
            pytest.skip("this NumPy no longer reshapes arrays in place")


def test_param_made_read_only_or_reshaped(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    g = [random_like(rng, p) for p in ps]
    ps[2].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[2\] is read-only"):
        opt.step(g)
    ps[2].flags.writeable = True
    assert_unchanged(opt, snap)
    set_shape(ps[0], (5, 1))
    with pytest.raises(ValueError, match=r"params\[0\] changed shape"):
        opt.step([g[0].reshape(5, 1)] + g[1:])
    set_shape(ps[0], (5,))
    assert_unchanged(opt, snap)


def test_mapping_grads_errors(rng, impl):
    w = random_array(rng, (3,), np.float64, "C")
    opt = impl.Adam({"w": w, "b": random_array(rng, (2,), np.float64, "C")})
    with pytest.raises(TypeError, match="mapping"):
        opt.step([np.zeros(3), np.zeros(2)])
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        opt.step({"w": np.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected \['c'\]"):
        opt.step({"w": np.zeros(3), "b": np.zeros(2), "c": np.zeros(2)})
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape"):
        opt.step({"w": np.zeros(3), "b": np.zeros(3)})
    assert opt.state_dict()["state"] == {}


# ---------------------------------------------------------------- load_state_dict

def test_bad_state_dicts_change_nothing(rng, stepped):
    opt, ps = stepped
    snap = snapshot(opt)
    good = opt.state_dict()

    def edit(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    cases = [
        ("not a dict", [1, 2], TypeError),
        ("no state", {"param_groups": good["param_groups"]}, TypeError),
        ("groups", edit(lambda s: s["param_groups"].append(dict(s["param_groups"][0]))), ValueError),
        ("n params", edit(lambda s: s["param_groups"][0]["params"].append(9)), ValueError),
        ("index", edit(lambda s: s["state"].__setitem__(7, s["state"].pop(0))), ValueError),
        ("shape", edit(lambda s: s["state"][0].__setitem__("exp_avg", np.zeros(4, np.float32))),
         ValueError),
        # (another float dtype is converted by value: tests/test_checkpoint_corrupt.py)
        ("dtype", edit(lambda s: s["state"][0].__setitem__("exp_avg", np.zeros(5, np.int32))),
         TypeError),
        ("not array", edit(lambda s: s["state"][0].__setitem__("exp_avg_sq", [0.0] * 5)), TypeError),
        ("missing key", edit(lambda s: s["state"][0].pop("exp_avg_sq")), ValueError),
        ("extra key", edit(lambda s: s["state"][0].__setitem__("momentum", 1)), ValueError),
        ("step type", edit(lambda s: s["state"][0].__setitem__("step", 1.5)), ValueError),
        ("step<0", edit(lambda s: s["state"][0].__setitem__("step", -1)), ValueError),
        ("lr", edit(lambda s: s["param_groups"][0].__setitem__("lr", -1.0)), ValueError),
        ("betas", edit(lambda s: s["param_groups"][0].__setitem__("betas", (0.9,))), ValueError),
        ("dup index", edit(lambda s: s["param_groups"][0].__setitem__("params", [0, 0, 1])),
         ValueError),
    ]
    # the last parameter's entry is the broken one wherever possible
    cases.append(("last shape", edit(lambda s: s["state"][2].__setitem__(
        "exp_avg", np.zeros(3, np.float32))), ValueError))
    for name, sd, exc in cases:
        with pytest.raises(exc):
            opt.load_state_dict(sd)
        assert_unchanged(opt, snap)


def test_adamw_refuses_coupled_state(rng):
    p = random_array(rng, (3,), np.float32, "C")
    sd = adamc.Adam([p.copy()]).state_dict()
    with pytest.raises(ValueError, match="decoupled_weight_decay"):
        adamc.AdamW([p]).load_state_dict(sd)


# ---------------------------------------------------------------- functional

def test_functional_errors(impl, rng):
    p = random_array(rng, (4,), np.float32, "C")
    g, m, v = random_like(rng, p), np.zeros_like(p), np.zeros_like(p)
    p0 = p.copy()
    for kw, exc, msg in [
        ({"step": 0}, ValueError, r"step must be between 1 and 2\*\*62"),
        ({"step": 2**62 + 1}, ValueError, r"step must be between 1 and 2\*\*62"),
        ({"step": 1.0}, TypeError, "step must be an int"),
        ({"step": 1, "beta1": 1.0}, ValueError, "beta1"),
        ({"step": 1, "lr": -1}, ValueError, "lr"),
        ({"step": 1, "amsgrad": True}, ValueError, "max_exp_avg_sq"),
    ]:
        with pytest.raises(exc, match=msg):
            impl.adam_step(p, g, m, v, **kw)
    with pytest.raises(ValueError, match="exp_avg has shape"):
        impl.adam_step(p, g, np.zeros(5, np.float32), v, step=1)
    with pytest.raises(TypeError, match="exp_avg_sq has dtype"):
        impl.adam_step(p, g, m, np.zeros(4), step=1)
    with pytest.raises(ValueError, match="share memory"):
        impl.adam_step(p, g, m, m, step=1)
    with pytest.raises(ValueError, match="grad shares memory with param"):
        impl.adam_step(p, p, m, v, step=1)
    np.testing.assert_array_equal(p, p0)
    assert not m.any() and not v.any()


def test_functional_fast_checks_agree_with_full_checks(rng, monkeypatch):
    """adamc.adam_step recognises plain Python scalars and well-formed arrays
    in the compiled layer and sends everything else through _validation.
    Both routes must accept the same inputs with the same results and refuse
    the same inputs with the same messages, changing nothing."""
    from adamc import _validation

    full = []  # one entry per call that took the full (Python) checks
    check = _validation.check_functional
    monkeypatch.setattr(_validation, "check_functional",
                        lambda *a: full.append(a) or check(*a))
    p = random_array(rng, (6,), np.float64, "C")
    g = random_like(rng, p)
    plain = dict(step=3, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=True, maximize=False, amsgrad=True)
    numpy_typed = dict(step=np.int64(3), lr=np.float64(1e-2), beta1=np.float32(0.9),
                       beta2=np.float64(0.99), eps=np.float64(1e-8),
                       weight_decay=np.int32(0), decoupled_weight_decay=np.bool_(True),
                       maximize=np.bool_(False), amsgrad=np.bool_(True))
    numpy_typed["beta1"] = np.float64(0.9)  # same value as the float 0.9
    out = []
    for kw, calls in ((plain, 0), (numpy_typed, 3)):
        q, m, v, x = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        del full[:]
        for _ in range(3):
            adamc.adam_step(q, g, m, v, max_exp_avg_sq=x, **kw)
        assert len(full) == calls  # the route each took
        ref = [a.copy() for a in (p, np.zeros_like(p), np.zeros_like(p), np.zeros_like(p))]
        for _ in range(3):
            reference.adam_step(ref[0], g, ref[1], ref[2], max_exp_avg_sq=ref[3], **kw)
        out.append((q, m, v, x))
        for a, b in zip((q, m, v, x), ref):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)

    m, v = np.zeros_like(p), np.zeros_like(p)
    f = np.asfortranarray(np.zeros((2, 3)))
    big = np.zeros(12)
    cases = [
        ({"step": True}, TypeError, "step must be an int"),
        ({"step": 2**62}, None, None),
        ({"step": 2**63}, ValueError, r"2\*\*62"),
        ({"lr": 2**60}, None, None),                 # a large int: full route, valid
        ({"lr": 10**400}, ValueError, "lr must be finite"),
        ({"lr": float("nan")}, ValueError, "lr must be finite"),
        ({"lr": float("inf")}, ValueError, "lr must be finite"),
        ({"eps": -0.0}, None, None),
        ({"beta2": 0.0}, None, None),
        ({"beta2": -1e-300}, ValueError, r"beta2 must be in \[0, 1\)"),
        ({"beta1": 1}, ValueError, r"beta1 must be in \[0, 1\)"),
        ({"weight_decay": True}, TypeError, "weight_decay must be a real number"),
        ({"maximize": 1}, TypeError, "maximize must be True or False"),
        ({"eps_inside_sqrt": 1}, TypeError, "eps_inside_sqrt must be True or False"),
    ]
    for kw, exc, msg in cases:
        q, m0, v0 = p.copy(), m.copy(), v.copy()
        args = {"step": 1, **kw}
        if exc is None:
            del full[:]
            adamc.adam_step(q, g, m0, v0, **args)
            assert len(full) == (1 if kw == {"lr": 2**60} else 0), kw  # ints > 2**53: full
            r = [p.copy(), m.copy(), v.copy()]
            reference.adam_step(r[0], g, r[1], r[2], **args)
            for a, b in zip((q, m0, v0), r):
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
            continue
        for impl_ in (adamc, reference):
            with pytest.raises(exc, match=msg):
                impl_.adam_step(q, g, m0, v0, **args)
            np.testing.assert_array_equal(q, p)
            assert not m0.any() and not v0.any()
    # buffers: each breaks one rule the fast route tests (built afresh per case)
    def ro():
        a = np.zeros_like(p)
        a.flags.writeable = False
        return a

    z = lambda: np.zeros_like(p)  # noqa: E731
    fz = lambda: np.asfortranarray(np.zeros((2, 3)))  # noqa: E731
    for make, exc, msg in [
        (lambda: (p.copy(), g, ro(), z()), ValueError, "exp_avg is read-only"),
        (lambda: (p.copy(), g.astype(np.float32), z(), z()), None, None),  # mixed dtypes
        (lambda: (p.copy(), g, z().astype(np.float32), z()), TypeError,
         "exp_avg_sq has dtype float64 but exp_avg has float32"),
        (lambda: (p.copy(), g, z().astype(np.float32), z().astype(np.float32)), ValueError,
         "exp_avg in float32 with param in float64"),
        (lambda: (p.copy(), g, z(), np.zeros(12)[::2]), ValueError, "not contiguous"),
        (lambda: (p.copy(), g, z(), np.zeros(12)[6:]), None, None),
        (lambda: (lambda b: (p.copy(), g, b[:6], b[6:]))(np.zeros(12)), None, None),
        (lambda: (lambda b: (p.copy(), g, b[:6], b[5:11]))(np.zeros(12)), ValueError,
         "share memory"),
        (lambda: (lambda b: (p.copy(), b[5:11], b[:6], z()))(np.zeros(12)), ValueError,
         "grad shares memory with exp_avg"),
        (lambda: (fz(), np.zeros((2, 3)), fz(), fz()), ValueError,
         "grad is C-contiguous but param is F-contiguous"),
        (lambda: (p.reshape(2, 3).copy(), g, z().reshape(2, 3), z().reshape(2, 3)),
         ValueError, "grad has shape"),
        (lambda: (p.astype(np.int16), g, z(), z()), TypeError, "param must have dtype"),
        (lambda: (list(p), g, z(), z()), TypeError, "param must be a numpy.ndarray"),
    ]:
        if exc is None:
            args, r = make(), make()
            del full[:]
            adamc.adam_step(*args, step=1)
            assert not full  # well-formed arrays: the compiled checks
            reference.adam_step(*r, step=1)
            for a, b in zip(args, r):
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
            continue
        for impl_ in (adamc, reference):
            args = make()
            before = [np.array(a, copy=True) for a in args]
            with pytest.raises(exc, match=msg):
                impl_.adam_step(*args, step=1)
            for a, b in zip(args, before):
                np.testing.assert_array_equal(np.asarray(a), b)


def test_named_parameter_pairs_point_to_a_dict():
    pairs = [("w", np.ones(3)), ("b", np.ones(2))]
    with pytest.raises(TypeError, match=r"params\[0\] is a \(name, array\) pair.*adamc.Adam\(dict"):
        adamc.Adam(pairs)
    opt = adamc.Adam(dict(pairs))
    opt.step({"w": np.ones(3), "b": np.ones(2)})
    opt.param_groups[0]["betas"] = 0.9   # an invalid edit: state_dict shows it, step says
    assert opt.state_dict()["param_groups"][0]["betas"] == 0.9
    with pytest.raises((TypeError, ValueError), match="betas"):
        opt.step({"w": np.ones(3), "b": np.ones(2)})


@pytest.mark.parametrize("module", [adamc, reference])
def test_a_schedule_using_its_optimizer_is_an_error_not_a_hang(module):
    """Schedules run under the optimizer's lock during a step: a schedule
    calling state_dict() (or step) waited for itself forever."""
    p = np.ones(3)
    holder = {}
    def lr(t):
        holder["sd"] = holder["opt"].state_dict()
        return 0.1
    opt = module.Adam([p], lr=lr)
    holder["opt"] = opt
    with pytest.raises(RuntimeError, match="from inside one of its learning-rate schedules"):
        opt.step([np.ones(3)])
    assert (p == 1).all() and opt.state_dict()["state"] == {}
    opt.param_groups[0]["lr"] = lambda t: 0.1
    opt.step([np.ones(3)])   # the lock was released: it steps
    assert (p < 1).all()


def test_swapped_or_missing_optimizer_arguments_are_named(tmp_path):
    """A first-hour review: the optimizer left out or passed second gave
    AttributeErrors from inside adamc ('list' object has no attribute
    'step'), and a path given to load_state_dict a generic message."""
    w = np.ones(3, np.float32)
    opt, scaler = adamc.Adam([w]), adamc.LossScaler()
    grads = [np.ones(3, np.float32)]
    with pytest.raises(TypeError, match=r"LossScaler.step\(opt, grads\): opt must be an adamc "
                                        r"optimizer .* got list; the optimizer comes first"):
        scaler.step(grads, opt)
    path = str(tmp_path / "a.npz")
    with pytest.raises(TypeError, match=r"save_state\(opt, path\): opt must be .* got str"):
        adamc.save_state(path, opt)
    adamc.save_state(opt, path)
    with pytest.raises(TypeError, match=r"load_state\(opt, path\): opt must be .* got str"):
        adamc.load_state(path, opt)
    with pytest.raises(TypeError, match=r"got a path: adamc.load_state\(opt, path\)"):
        opt.load_state_dict(path)
    assert np.all(w == 1) and scaler.scale == 2.0**16 and opt.state_dict()["state"] == {}
