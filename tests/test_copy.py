"""pickle, copy.copy and copy.deepcopy of an optimizer, as torch.optim users
expect: a pickled or deep-copied optimizer is independent (own parameters,
state, lock and engine) and continues bit-identically; a shallow copy is a
second handle on the same optimizer (shared state, engine and lock)."""

import copy
import pickle
import threading

import numpy as np
import pytest

import adamc
from _toolkit import state_of
from adamc import _spec, reference


def schedule(t):  # module level, so that it pickles
    return 1e-2 / t**0.5


def build(module, cls, rng, named):
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((5, 2)))
    c = rng.standard_normal(7)
    if named:
        groups = [{"params": {"a": a}}, {"params": {"b": b, "c": c}, "lr": schedule,
                                         "amsgrad": True}]
    else:
        groups = [{"params": [a]}, {"params": [b, c], "lr": schedule, "amsgrad": True}]
    return getattr(module, cls)(groups, eps_mode="hat"), [a, b, c]


def grads_for(params, rng, named):
    g = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    g = [np.asfortranarray(x) if p.flags.f_contiguous and p.ndim > 1 else x
         for x, p in zip(g, params)]
    return dict(zip("abc", g)) if named else g


def params_of(opt):
    return [p for g in opt.param_groups for p in (g["params"].values()
            if isinstance(g["params"], dict) else g["params"])]


def assert_same(opt_a, opt_b):
    for x, y in zip(params_of(opt_a), params_of(opt_b)):
        assert x.dtype == y.dtype and x.flags.f_contiguous == y.flags.f_contiguous
        np.testing.assert_array_equal(x, y)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]  # the schedule pickles by name
    for i, e in sa["state"].items():
        assert e["step"] == sb["state"][i]["step"]
        for k in _spec.SLOT_NAMES:
            if k in e:
                np.testing.assert_array_equal(e[k], sb["state"][i][k])


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_independent_copy_continues_bit_identically(module, cls, named, how):
    rng = np.random.default_rng(7)
    opt, params = build(module, cls, rng, named)
    for _ in range(3):
        opt.step(grads_for(params, rng, named))
    twin = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    assert type(twin) is type(opt)
    assert twin._lock is not opt._lock and twin._engine is not opt._engine
    tparams = params_of(twin)
    for x, y in zip(params, tparams):
        assert not np.shares_memory(x, y)
    for i in range(len(params)):
        for k, a in state_of(opt, i).items():
            assert not np.shares_memory(a, state_of(twin, i)[k])
    assert_same(opt, twin)
    # both continue identically from the same gradients
    for _ in range(3):
        g = grads_for(params, rng, named)
        opt.step(g)
        twin.step(g)
    assert_same(opt, twin)
    # and independently: stepping one leaves the other alone
    before = [p.copy() for p in params]
    twin.step(grads_for(params, rng, named))
    for x, y in zip(params, before):
        np.testing.assert_array_equal(x, y)
    assert opt.state_dict()["state"][0]["step"] == 6
    assert twin.state_dict()["state"][0]["step"] == 7


@pytest.mark.parametrize("module", [adamc, reference])
def test_pickle_before_the_first_step(module):
    p = np.ones(3)
    opt = module.Adam([p], lr=0.1)
    twin = pickle.loads(pickle.dumps(opt))
    twin.step([np.ones(3)])
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(params_of(twin)[0], p)
    assert twin.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("module", [adamc, reference])
def test_shallow_copy_is_a_second_handle(module):
    p = np.ones(3)
    opt = module.Adam([p], lr=0.1)
    alias = copy.copy(opt)
    assert alias._lock is opt._lock and alias._engine is opt._engine
    alias.step([np.ones(3)])
    opt.step([np.ones(3)])
    assert opt.state_dict()["state"][0]["step"] == 2  # one state, stepped twice
    assert alias.state_dict()["state"][0]["step"] == 2


@pytest.mark.parametrize("module", [adamc, reference])
def test_a_shallow_copy_sees_what_the_other_handle_rebinds(module):
    """add_param_group through one handle replaces the engine: the other
    handle steps, saves and loads the new one (it kept the old engine, one
    parameter short, and crashed); the maps and last_step are shared too."""
    p = np.ones(3)
    opt = module.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    alias = copy.copy(opt)
    q = np.ones(2)
    opt.add_param_group({"params": [q]})
    assert alias._engine is opt._engine
    alias.step([np.ones(3), np.ones(2)])
    sd = alias.state_dict()
    assert [sd["state"][i]["step"] for i in (0, 1)] == [2, 1]
    alias.load_state_dict(opt.state_dict())
    opt.step([np.ones(3), np.ones(2)], max_grad_norm=1.0)
    assert alias.last_step is opt.last_step and alias._maps is opt._maps
    assert q[0] < 1


def test_shallow_copies_never_step_one_state_unguarded():
    """Two handles stepping from two threads: every step lands (the shared
    lock serialises them), exactly as one optimizer stepped twice as often."""
    n = 50_000
    p, q = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    a = adamc.Adam([p], lr=1e-3)
    b = copy.copy(a)
    g = np.linspace(-1, 1, n, dtype=np.float32)

    def work(o):
        for _ in range(50):
            o.step([g])
    threads = [threading.Thread(target=work, args=(o,)) for o in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    one = adamc.Adam([q], lr=1e-3)
    for _ in range(100):
        one.step([g])
    assert a.state_dict()["state"][0]["step"] == 100
    np.testing.assert_array_equal(p, q)


def test_an_estimator_holding_an_optimizer_pickles():
    """scikit-learn estimators must pickle; so must one keeping adamc inside."""

    est = Estimator()
    est.partial_fit(np.ones(4))
    clone = pickle.loads(pickle.dumps(est))
    est.partial_fit(np.ones(4))
    clone.partial_fit(np.ones(4))
    np.testing.assert_array_equal(est.w, clone.w)
    assert clone.opt._params[0] is clone.w  # the optimizer steps the clone's own weights


class Estimator:
    def __init__(self):
        self.w = np.zeros(4)
        self.opt = adamc.AdamW([self.w], lr=0.1)

    def partial_fit(self, g):
        self.opt.step([self.w - g])
        return self
