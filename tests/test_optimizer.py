"""Optimizer semantics: param groups, None grads, schedules, mappings, groups added later."""

import numpy as np
import pytest

import adamc
from adamc import reference

from _toolkit import assert_matches, random_array, random_like


def reference_steps(p, grads, lrs, **kw):
    """p after the functional reference steps with lrs[t-1] at step t."""
    p = p.copy(order="K")
    m, v, x = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        reference.adam_step(p, g, m, v, step=t, lr=lr, max_exp_avg_sq=x, **kw)
    return p


def test_param_groups_and_lr_change_mid_run(rng):
    a = random_array(rng, (20,), np.float32, "C")
    b = random_array(rng, (3, 5), np.float64, "F")
    a0, b0 = a.copy(), b.copy(order="K")
    opt = adamc.Adam([{"params": [a]}, {"params": [b], "lr": 0.05, "amsgrad": True}], lr=0.01)
    ga = [random_like(rng, a) for _ in range(6)]
    gb = [random_like(rng, b) for _ in range(6)]
    for t in range(6):
        if t == 3:
            for g in opt.param_groups:
                g["lr"] *= 0.5
        opt.step([ga[t], gb[t]])
    assert_matches(a, reference_steps(a0, ga, [0.01] * 3 + [0.005] * 3), 6)
    assert_matches(b, reference_steps(b0, gb, [0.05] * 3 + [0.025] * 3, amsgrad=True), 6)


def test_betas_edited_in_place_as_list(rng):
    a = random_array(rng, (9,), np.float64, "C")
    a0 = a.copy()
    opt = adamc.Adam([a], lr=0.01)
    grads = [random_like(rng, a) for _ in range(4)]
    opt.step([grads[0]])
    opt.step([grads[1]])
    opt.param_groups[0]["betas"] = [0.5, 0.9]
    opt.step([grads[2]])
    opt.param_groups[0]["betas"][0] = 0.8  # in-place edit of the list
    opt.step([grads[3]])
    # reference: same sequence with the functional step
    p, m, v = a0.copy(), np.zeros(9), np.zeros(9)
    for t, (g, (b1, b2)) in enumerate(
            zip(grads, [(0.9, 0.999)] * 2 + [(0.5, 0.9), (0.8, 0.9)]), start=1):
        reference.adam_step(p, g, m, v, step=t, lr=0.01, beta1=b1, beta2=b2)
    assert_matches(a, p, 4)


def test_none_grad_skips_parameter(rng):
    a = random_array(rng, (10,), np.float32, "C")
    b = random_array(rng, (10,), np.float32, "C")
    a0, b0 = a.copy(), b.copy()
    opt = adamc.Adam([a, b], lr=0.01)
    ga = [random_like(rng, a) for _ in range(4)]
    gb = [random_like(rng, b) for _ in range(2)]
    opt.step([ga[0], None])
    assert 1 not in opt.state_dict()["state"]
    np.testing.assert_array_equal(b, b0)
    opt.step([ga[1], gb[0]])
    opt.step([ga[2], None])
    opt.step([ga[3], gb[1]])
    sd = opt.state_dict()["state"]
    assert sd[0]["step"] == 4 and sd[1]["step"] == 2
    assert_matches(a, reference_steps(a0, ga, [0.01] * 4), 4)
    assert_matches(b, reference_steps(b0, gb, [0.01] * 2), 2)


def test_all_none_changes_nothing(rng):
    a = random_array(rng, (5,), np.float64, "C")
    a0 = a.copy()
    opt = adamc.Adam([a])
    opt.step([None])
    np.testing.assert_array_equal(a, a0)
    assert opt.state_dict()["state"] == {}


def test_lr_schedule_callable(rng):
    a = random_array(rng, (16,), np.float64, "C")
    a0 = a.copy()
    seen = []

    def sched(t):
        seen.append(t)
        return 0.1 / t

    opt = adamc.Adam([a], lr=sched)
    grads = [random_like(rng, a) for _ in range(5)]
    for g in grads:
        opt.step([g])
    assert seen == [1, 2, 3, 4, 5]
    assert_matches(a, reference_steps(a0, grads, [0.1 / t for t in range(1, 6)]), 5)


def test_lr_schedule_same_in_reference(rng):
    a = random_array(rng, (16,), np.float32, "C")
    b = a.copy()
    o = adamc.Adam([a], lr=lambda t: 0.01 * 0.9**t)
    r = reference.Adam([b], lr=lambda t: 0.01 * 0.9**t)
    for _ in range(5):
        g = random_like(rng, a)
        o.step([g])
        r.step([g])
    assert_matches(a, b, 5)


def test_mapping_params_and_grads(rng):
    w = random_array(rng, (4, 3), np.float32, "C")
    bias = random_array(rng, (3,), np.float32, "C")
    w0, b0 = w.copy(), bias.copy()
    opt = adamc.Adam({"w": w, "b": bias}, lr=0.02)
    gw = [random_like(rng, w) for _ in range(3)]
    gb = [random_like(rng, bias) for _ in range(3)]
    for t in range(3):
        opt.step({"b": gb[t], "w": gw[t]})  # key order does not matter
    assert_matches(w, reference_steps(w0, gw, [0.02] * 3), 3)
    assert_matches(bias, reference_steps(b0, gb, [0.02] * 3), 3)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["w", "b"]


def test_add_param_group(rng):
    a = random_array(rng, (8,), np.float64, "C")
    b = random_array(rng, (8,), np.float64, "C")
    a0, b0 = a.copy(), b.copy()
    opt = adamc.Adam([a], lr=0.01)
    ga = [random_like(rng, a) for _ in range(3)]
    gb = [random_like(rng, b) for _ in range(2)]
    opt.step([ga[0]])
    opt.add_param_group({"params": [b], "lr": 0.03})
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    opt.step([ga[1], gb[0]])
    opt.step([ga[2], gb[1]])
    assert_matches(a, reference_steps(a0, ga, [0.01] * 3), 3)
    assert_matches(b, reference_steps(b0, gb, [0.03] * 2), 2)
    with pytest.raises(ValueError, match="share memory|same array"):
        opt.add_param_group({"params": [a]})


def test_amsgrad_switched_on_later(rng):
    """Turning amsgrad on mid-run starts its running max from zero (= max with v)."""
    a = random_array(rng, (12,), np.float64, "C")
    b = a.copy()
    o, r = adamc.Adam([a]), reference.Adam([b])
    for t in range(4):
        if t == 2:
            o.param_groups[0]["amsgrad"] = r.param_groups[0]["amsgrad"] = True
        g = random_like(rng, a)
        o.step([g])
        r.step([g])
    assert "max_exp_avg_sq" in o.state_dict()["state"][0]
    assert_matches(a, b, 4)


def test_params_updated_in_place_never_replaced(rng):
    a = random_array(rng, (6,), np.float32, "C")
    ptr = a.ctypes.data
    opt = adamc.Adam([a])
    opt.step([random_like(rng, a)])
    assert opt.param_groups[0]["params"][0] is a
    assert a.ctypes.data == ptr


def test_tuple_and_generator_grads(rng):
    a = random_array(rng, (6,), np.float32, "C")
    b = a.copy()
    o1, o2 = adamc.Adam([a]), adamc.Adam([b])
    g = random_like(rng, a)
    o1.step((g,))
    o2.step([g])
    np.testing.assert_array_equal(a, b)


def test_read_only_grad_is_fine(rng):
    a = random_array(rng, (6,), np.float32, "C")
    g = random_like(rng, a)
    g.flags.writeable = False
    adamc.Adam([a]).step([g])


def test_same_grad_for_two_params(rng):
    a = random_array(rng, (6,), np.float32, "C")
    b = random_array(rng, (6,), np.float32, "C")
    g = random_like(rng, a)
    adamc.Adam([a, b]).step([g, g])  # reading one gradient twice is allowed


def test_repr_lists_groups(rng):
    opt = adamc.AdamW([random_array(rng, (2,), np.float32, "C")])
    text = repr(opt)
    assert "AdamW" in text and "weight_decay: 0.01" in text


def test_version_and_info():
    assert isinstance(adamc.__version__, str)
    info = adamc.cpu_info()
    assert {"isa", "num_threads", "openmp"} <= info.keys()
