"""eps_mode: "outside" (torch), "inside" (eps under the root) and "hat" (the
paper's epsilon-hat form, as Keras and scikit-learn compute it), in every
entry point, the reference, state_dicts and checkpoints."""

import math

import numpy as np
import pytest

import adamc
from adamc import _spec, reference

MODES = _spec.EPS_MODES


def hat_by_hand(p, grads, lr, b1, b2, eps):
    """Kingma & Ba 2015, section 2's epsilon-hat form, written out in float64
    independently of adamc.reference (plain moment updates, no lerp)."""
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        p = p - lr_t * m / (np.sqrt(v) + eps)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", [{}, {"amsgrad": True}, {"weight_decay": 0.1},
                                     {"weight_decay": 0.1, "decoupled_weight_decay": True},
                                     {"bias_correction": False, "maximize": True}])
def test_every_mode_matches_reference(variant, dtype, mode, options):
    """Optimizer, functional step and reference agree (bit for bit on the
    baseline variant, to FMA rounding elsewhere) for every mode."""
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(1001).astype(dtype)
    grads = [rng.standard_normal(1001).astype(dtype) for _ in range(6)]
    a, b, c = p0.copy(), p0.copy(), p0.copy()
    opt = adamc.Adam([a], lr=1e-2, eps=1e-3, eps_mode=mode, **options)
    ref = reference.Adam([b], lr=1e-2, eps=1e-3, eps_mode=mode, **options)
    m, v, x = np.zeros_like(c), np.zeros_like(c), np.zeros_like(c)
    for t, g in enumerate(grads, 1):
        opt.step([g])
        ref.step([g])
        adamc.adam_step(c, g, m, v, step=t, lr=1e-2, eps=1e-3, eps_mode=mode,
                        max_exp_avg_sq=x, **options)
    if variant == "baseline":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=64 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(a, c)  # one kernel, two entry points


def test_hat_is_the_papers_form():
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(257)
    grads = [rng.standard_normal(257) for _ in range(20)]
    for module in (adamc, reference):
        p = p0.copy()
        opt = module.Adam([p], lr=3e-2, betas=(0.8, 0.99), eps=1e-4, eps_mode="hat")
        for g in grads:
            opt.step([g])
        np.testing.assert_allclose(p, hat_by_hand(p0, grads, 3e-2, 0.8, 0.99, 1e-4),
                                   rtol=1e-12, atol=1e-14)


def test_modes_differ_where_eps_matters():
    """A large eps separates the three forms (so no mode silently runs another)."""
    out = {}
    for mode in MODES:
        p = np.ones(4)
        opt = adamc.Adam([p], lr=0.1, eps=0.5, eps_mode=mode)
        opt.step([np.array([1.0, -2.0, 0.5, 3.0])])
        opt.step([np.array([0.5, -1.0, 0.25, 2.0])])
        out[mode] = p
    assert not np.array_equal(out["outside"], out["inside"])
    assert not np.array_equal(out["outside"], out["hat"])
    assert not np.array_equal(out["inside"], out["hat"])


@pytest.mark.parametrize("module", [adamc, reference])
def test_eps_inside_sqrt_is_a_synonym(module):
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(4)]
    runs = []
    for kw in ({"eps_mode": "inside"}, {"eps_inside_sqrt": True},
               {"eps_inside_sqrt": True, "eps_mode": "inside"}):
        p = p0.copy()
        opt = module.Adam([p], lr=1e-2, eps=1e-2, **kw)
        assert opt.param_groups[0]["eps_mode"] == "inside"
        assert "eps_inside_sqrt" not in opt.param_groups[0]
        for g in grads:
            opt.step([g])
        runs.append(p)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    # the functional form too
    p, m, v = p0.copy(), np.zeros(50), np.zeros(50)
    module.adam_step(p, grads[0], m, v, step=1, eps=1e-2, eps_inside_sqrt=True)
    q, m, v = p0.copy(), np.zeros(50), np.zeros(50)
    module.adam_step(q, grads[0], m, v, step=1, eps=1e-2, eps_mode="inside")
    np.testing.assert_array_equal(p, q)
    # a group can use the synonym as well
    p = p0.copy()
    opt = module.Adam([{"params": [p], "eps_inside_sqrt": True}])
    assert opt.param_groups[0]["eps_mode"] == "inside"


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("kw, exc, msg", [
    ({"eps_mode": "Hat"}, ValueError, r"eps_mode must be one of 'outside', 'inside', 'hat'"),
    ({"eps_mode": None}, TypeError, "eps_mode must be one of"),
    ({"eps_mode": 1}, TypeError, "eps_mode must be one of"),
    ({"eps_mode": "hat", "eps_inside_sqrt": True}, ValueError,
     r"eps_inside_sqrt=True contradicts eps_mode='hat'.*give only eps_mode"),
    ({"eps_mode": "inside", "eps_inside_sqrt": False}, ValueError,
     "eps_inside_sqrt=False contradicts eps_mode='inside'"),
    ({"eps_inside_sqrt": 1}, TypeError, "eps_inside_sqrt must be True or False"),
])
def test_bad_modes_refused_before_anything_changes(module, kw, exc, msg):
    p = np.ones(3)
    with pytest.raises(exc, match=msg):
        module.Adam([p], **kw)
    m, v = np.zeros(3), np.zeros(3)
    func = {k: v for k, v in kw.items()}
    with pytest.raises(exc, match=msg):
        module.adam_step(p, np.ones(3), m, v, step=1, **func)
    assert (p == 1).all() and not m.any() and not v.any()
    # editing a group to a bad mode: the next step refuses, nothing changes
    opt = module.Adam([p])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    before = p.copy()
    opt.param_groups[0].update(kw)
    with pytest.raises(exc, match=msg):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before)
    assert opt.state_dict()["state"][0]["step"] == sd["state"][0]["step"]


@pytest.mark.parametrize("module", [adamc, reference])
def test_mode_changes_mid_run_take_effect(module):
    p, q = np.ones(5), np.ones(5)
    a = module.Adam([p], lr=0.1, eps=0.3)
    b = module.Adam([q], lr=0.1, eps=0.3)
    g = np.linspace(-1, 1, 5)
    a.step([g])
    b.step([g])
    a.param_groups[0]["eps_mode"] = "hat"
    a.step([g])
    b.step([g])
    assert not np.array_equal(p, q)
    c = module.Adam([np.ones(5)], lr=0.1, eps=0.3)
    c.load_state_dict(a.state_dict())
    assert c.param_groups[0]["eps_mode"] == "hat"


def test_state_dict_and_checkpoint_record_the_mode(tmp_path):
    p = np.ones(3, dtype=np.float32)
    opt = adamc.AdamW([p], eps_mode="hat")
    opt.step([np.full(3, 0.5, dtype=np.float32)])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["eps_mode"] == "hat"
    adamc.save_state(opt, tmp_path / "opt.npz")
    other = adamc.AdamW([p.copy()])
    adamc.load_state(other, tmp_path / "opt.npz")
    assert other.param_groups[0]["eps_mode"] == "hat"


@pytest.mark.parametrize("flag, mode", [(True, "inside"), (False, "outside")])
def test_old_state_dicts_with_eps_inside_sqrt_load(flag, mode):
    """A state_dict written before eps_mode carries eps_inside_sqrt."""
    p = np.ones(3)
    opt = adamc.Adam([p])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    del sd["param_groups"][0]["eps_mode"]
    sd["param_groups"][0]["eps_inside_sqrt"] = flag
    fresh = adamc.Adam([np.ones(3)], eps_mode="hat" if not flag else "outside")
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["eps_mode"] == mode
    assert "eps_inside_sqrt" not in fresh.param_groups[0]


def test_version_1_checkpoint_from_before_eps_mode_loads_and_resumes(tmp_path):
    """tests/data/checkpoint_v1.npz was written by adamc at 936456c (groups
    with eps_inside_sqrt); p4/q4 are that release's next step on the
    baseline kernel."""
    from pathlib import Path

    from adamc import _kernels
    data = Path(__file__).parent / "data"
    want = np.load(data / "checkpoint_v1_expected.npz")
    p, q = want["p3"].copy(), want["q3"].copy()
    opt = adamc.Adam([{"params": [p]}, {"params": [q], "amsgrad": True}], lr=0.01)
    adamc.load_state(opt, data / "checkpoint_v1.npz")
    assert [g["eps_mode"] for g in opt.param_groups] == ["inside", "outside"]
    old = _kernels.kernel_name()
    _kernels.use_variant("baseline")
    try:
        opt.step([np.full((2, 3), 0.25, np.float32), np.linspace(-1, 1, 5)])
    finally:
        _kernels.use_variant(old)
    np.testing.assert_array_equal(p, want["p4"])
    np.testing.assert_array_equal(q, want["q4"])
