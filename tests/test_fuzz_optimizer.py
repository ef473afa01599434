"""Fuzzing the optimizer's methods: the constructors, opt.step and
opt.add_param_group (the pools, the checks and the property: _fuzzing.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import adamc  # noqa: E402
from adamc import reference  # noqa: E402

from _fuzzing import (  # noqa: E402
    ARRAY_KINDS, GRAD_KINDS, KNOWN_BUG_GROUP_EDITS, KNOWN_BUG_PARAM_MUTATIONS, NAMES, NP,
    after_attack, bad_array, check_outcomes, entries_grads, hyper_pairs, known, make_victim,
    numpy_mutates_in_place, outcome, set_in_place, step_twins, sweep, valid_grads, values_for,
    victim_configs,
)
from _toolkit import alloc, alloc_like, assert_unchanged, snapshot  # noqa: E402


# ---------------------------------------------------------------- opt.step

CONTAINERS = ["None", "int", "str", "ndarray", "dict", "list-for-named", "short", "long",
              "generator", "set", "string-of-right-length", "tuple", "all-None", "empty"]

# In-place reshapes and dtype views only while NumPy still allows them.
PARAM_MUTATIONS = ["readonly"] + (
    ["reshape", "reshape-same-size"] + known(KNOWN_BUG_PARAM_MUTATIONS)
    if numpy_mutates_in_place() else [])
GROUP_STRUCTURE = (["del-key", "params-appended", "params-popped", "params-replaced", "params-tuple",
                    "params-none", "group-popped", "group-copy", "groups-tuple"]
                   + [f"bug:{i}" for i in range(len(known(KNOWN_BUG_GROUP_EDITS)))])

step_attacks = st.one_of(
    st.tuples(st.just("container"), st.sampled_from(CONTAINERS)),
    st.tuples(st.just("entries"),
              st.lists(st.tuples(st.integers(0, NP - 1), st.sampled_from(GRAD_KINDS)),
                       min_size=1, max_size=3)),
    st.tuples(st.just("group-edit"), st.integers(0, 1), hyper_pairs),
    st.tuples(st.just("group-structure"), st.integers(0, 1), st.sampled_from(GROUP_STRUCTURE)),
    st.tuples(st.just("param-mutation"), st.integers(0, NP - 1), st.sampled_from(PARAM_MUTATIONS)),
)


def build_step_call(attack, opt, seed):
    """(call, undo) for one attack on `opt`."""
    kind = attack[0]
    names = opt._names
    undo = lambda: None  # noqa: E731

    def wrap(lst):
        return dict(zip(names, lst)) if names is not None else lst

    if kind == "container":
        c = attack[1]
        good = [alloc_like(p, values_for(seed + i, p.shape)) for i, p in enumerate(opt._params)]
        grads = {
            "None": None, "int": 3, "str": "grads", "ndarray": np.zeros(NP),
            "dict": {i: g for i, g in enumerate(good)}, "list-for-named": good,
            "short": wrap(good[:-1]) if names is None else dict(zip(names[:-1], good)),
            "long": good + [good[0].copy()] if names is None else {**wrap(good), "extra": good[0]},
            "generator": (g for g in good), "set": {1, 2}, "string-of-right-length": "x" * NP,
            "tuple": tuple(good) if names is None else wrap(good),
            "all-None": wrap([None] * NP), "empty": [] if names is None else {},
        }[c]
        return (lambda: opt.step(grads)), undo
    if kind == "entries":
        g = entries_grads(opt, attack[1], seed)
        return (lambda: opt.step(g)), undo
    grads = valid_grads(opt, seed)
    if kind == "group-edit":
        gi, (key, value) = attack[1], attack[2]
        group = opt.param_groups[gi]
        had, old = key in group, group.get(key)  # a synonym is not a group key
        group[key] = copy.copy(value)

        def undo():
            if had:
                group[key] = old
            else:
                del group[key]
        return (lambda: opt.step(grads)), undo
    if kind == "group-structure":
        gi, what = attack[1], attack[2]
        groups = opt.param_groups
        saved_list = list(groups)
        group = groups[gi]
        saved_group = dict(group)
        saved_params = list(group["params"])
        if what == "del-key":
            del group["eps"]
        elif what == "params-appended":
            group["params"].append(np.zeros(3))
        elif what == "params-popped":
            group["params"].pop()
        elif what == "params-replaced":
            group["params"][0] = group["params"][0].copy()
        elif what == "params-tuple":
            group["params"] = tuple(group["params"])
        elif what == "params-none":
            group["params"] = None
        elif what == "group-popped":
            groups.pop(gi)
        elif what == "groups-tuple":
            opt.param_groups = tuple(groups)
        elif what == "group-copy":
            groups[gi] = dict(group)  # a new dict with the same params list: fine
        elif what.startswith("bug:"):
            how, val = known(KNOWN_BUG_GROUP_EDITS)[int(what[4:])]
            if how == "replace":
                groups[gi] = val
            else:
                groups.append(copy.copy(val))

        def undo():
            saved_group_params = saved_params
            group.clear()
            group.update(saved_group)
            group["params"][:] = saved_group_params
            opt.param_groups = groups
            groups[:] = saved_list
        return (lambda: opt.step(grads)), undo
    if kind == "param-mutation":
        i, how = attack[1], attack[2]
        p = opt._params[i]
        shape, dtype = p.shape, p.dtype
        if how == "readonly":
            p.flags.writeable = False
        elif how == "reshape":
            set_in_place(p, shape=shape + (1,))
        elif how == "reshape-same-size":
            set_in_place(p, shape=(1,) + shape)  # same elements, one more axis
        elif how == "dtype-view":
            set_in_place(p, dtype=np.int32 if dtype == np.float32 else np.int64)

        def undo():
            set_in_place(p, dtype=dtype, shape=shape)
            p.flags.writeable = True
        if how != "readonly":  # a reshaped parameter needs gradients of the new shape
            gl = list(grads.values()) if names is not None else list(grads)
            if gl[i] is not None:
                gl[i] = alloc_like(p, values_for(seed, p.shape))
            grads = wrap(gl)
        return (lambda: opt.step(grads)), undo
    raise AssertionError(attack)


@given(cfg=victim_configs, attack=step_attacks, seed=st.integers(0, 2**16))
def test_fuzz_step(cfg, attack, seed):
    opt, ref = make_victim(adamc, cfg), make_victim(reference, cfg)
    snap = snapshot(opt)
    call, undo = build_step_call(attack, opt, seed)
    mine = outcome(call)
    undo()
    rcall, rundo = build_step_call(attack, ref, seed)
    with np.errstate(all="ignore"):
        theirs = outcome(rcall)
    rundo()
    after_attack(mine, theirs, opt, ref, snap, f"step {attack}")


@pytest.mark.parametrize("named", [False, True])
def test_every_step_attack_kind(named):
    """Every grads container, param-group structure edit and parameter mutation."""
    cfg = {"cls": "Adam", "named": named, "amsgrad": True}
    attacks = [("container", c) for c in CONTAINERS]
    attacks += [("group-structure", gi, what) for gi in (0, 1) for what in GROUP_STRUCTURE]
    attacks += [("param-mutation", i, how) for i in range(NP) for how in PARAM_MUTATIONS]
    for attack in attacks:
        def run(o, attack=attack):
            call, undo = build_step_call(attack, o, 11)
            try:
                call()
            finally:
                undo()
        sweep(f"step {attack}", lambda m: make_victim(m, cfg), run)


# ---------------------------------------------------------------- add_param_group

group_attacks = st.tuples(
    st.sampled_from(["not-dict:list", "not-dict:None", "not-dict:array", "no-params",
                     "params:array", "params:int", "params:empty", "params:generator",
                     "params:existing", "params:existing-view", "params:overlap",
                     "params:dup-new", "params:mapping-mismatch", "params:dup-name",
                     "params:fresh", "params:fresh-bad-array", "params:mixed-dicts",
                     "params:bad-hyper", "params:param_names-key"]),
    st.sampled_from(ARRAY_KINDS),
    st.integers(0, NP - 1),
    hyper_pairs,
)


def build_group(attack, opt, seed):
    what, akind, i, (hkey, hval) = attack
    named = opt._names is not None
    p = opt._params[i]
    fresh = [alloc((4,), np.float32, "C", 1, values_for(seed, (4,))),
             alloc((2, 2), np.float64, "F", 0, values_for(seed + 1, (2, 2)))]

    def ps(arrays, names=None):
        if named:
            return dict(zip(names or [f"n{k}" for k in range(len(arrays))], arrays))
        return list(arrays)

    if what.startswith("not-dict:"):
        return {"list": [fresh[0]], "None": None, "array": fresh[0]}[what[9:]]
    if what == "no-params":
        return {"lr": 0.1}
    if what == "params:array":
        return {"params": fresh[0]}
    if what == "params:int":
        return {"params": 7}
    if what == "params:empty":
        return {"params": {} if named else []}
    if what == "params:generator":
        return {"params": (a for a in fresh)} if not named else {"params": ps(fresh)}
    if what == "params:existing":
        return {"params": ps([fresh[0], p])}
    if what == "params:existing-view":
        return {"params": ps([p.reshape(p.shape)])}
    if what == "params:overlap":
        base = np.zeros(10)
        return {"params": ps([base[:6], base[4:]])}
    if what == "params:dup-new":
        return {"params": ps([fresh[0], fresh[0]], ["a", "b"])}
    if what == "params:mapping-mismatch":
        return {"params": {"x": fresh[0]} if not named else [fresh[0]]}
    if what == "params:dup-name":
        return {"params": ps([fresh[0]], [NAMES[i]])}
    if what == "params:fresh":
        return {"params": ps(fresh)}
    if what == "params:fresh-bad-array":
        return {"params": ps([fresh[0], bad_array(akind, (3,), np.float32, "C", seed)])}
    if what == "params:mixed-dicts":
        return {"params": [fresh[0], {"params": [fresh[1]]}]}
    if what == "params:bad-hyper":
        return {"params": ps(fresh), hkey: copy.copy(hval)}
    if what == "params:param_names-key":
        return {"params": ps(fresh), "param_names": ["q", "r"]}
    raise AssertionError(what)


@given(cfg=victim_configs, attack=group_attacks, seed=st.integers(0, 2**16))
def test_fuzz_add_param_group(cfg, attack, seed):
    opt, ref = make_victim(adamc, cfg), make_victim(reference, cfg)
    snap = snapshot(opt)
    n = len(opt._params)
    group = build_group(attack, opt, seed)
    mine = outcome(lambda: opt.add_param_group(group))
    rgroup = build_group(attack, ref, seed)
    theirs = outcome(lambda: ref.add_param_group(rgroup))
    check_outcomes(mine, theirs, f"add_param_group {attack}")
    if mine[0] == "raised":
        assert len(opt._params) == n and len(opt.param_groups) == 2
        assert_unchanged(opt, snap, f"add_param_group {attack}")
    # either way: still steps like the reference (new groups included)
    assert len(opt._params) == len(ref._params)
    step_twins(opt, ref, 5, 3, f"add_param_group {attack}, then a step")


# ---------------------------------------------------------------- constructors

CTOR_PARAMS = ["non-iterable:int", "non-iterable:None", "non-iterable:float", "ndarray", "string",
               "empty-list", "empty-dict", "bad-array", "mixed", "group-no-params",
               "group-params-array", "group-params-empty", "group-mapping-partial", "duplicate",
               "overlap", "adjacent", "mapping", "mapping-bad-array", "generator",
               "dup-names", "good-list", "good-groups", "bytes", "group-not-dict"]

ctor_attacks = st.tuples(
    st.sampled_from(["Adam", "AdamW"]),
    st.sampled_from(CTOR_PARAMS),
    st.sampled_from(ARRAY_KINDS),
    st.lists(hyper_pairs, max_size=2),
    st.sampled_from([None, "unknown-kw", "decoupled-kw", "group-hyper"]),
)


def build_ctor(attack, seed):
    cls, pkind, akind, hypers, extra = attack
    a = alloc((4,), np.float32, "C", 1, values_for(seed, (4,)))
    b = alloc((2, 3), np.float64, "F", 0, values_for(seed + 1, (2, 3)))
    bad = bad_array(akind, (3,), np.float32, "C", seed)
    base = np.zeros(12)
    params = {
        "non-iterable:int": lambda: 3, "non-iterable:None": lambda: None,
        "non-iterable:float": lambda: 1.5, "ndarray": lambda: a, "string": lambda: "ab",
        "bytes": lambda: b"ab", "empty-list": lambda: [], "empty-dict": lambda: {},
        "bad-array": lambda: [a, bad], "mixed": lambda: [a, {"params": [b]}],
        "group-no-params": lambda: [{"lr": 0.1}], "group-params-array": lambda: [{"params": a}],
        "group-params-empty": lambda: [{"params": [a]}, {"params": []}],
        "group-mapping-partial": lambda: [{"params": {"a": a}}, {"params": [b]}],
        "duplicate": lambda: [a, b, a], "overlap": lambda: [base[:7], base[5:]],
        "adjacent": lambda: [base[:6], base[6:]], "mapping": lambda: {"a": a, "b": b},
        "mapping-bad-array": lambda: {"a": a, "bad": bad}, "generator": lambda: (x for x in [a, b]),
        "dup-names": lambda: [{"params": {"a": a}}, {"params": {"a": b}}],
        "good-list": lambda: [a, b], "good-groups": lambda: [{"params": [a]}, {"params": [b], "lr": 0.5}],
        "group-not-dict": lambda: [{"params": [a]}, [b]],
    }[pkind]()
    kw = {k: copy.copy(v) for k, v in hypers}
    if extra == "unknown-kw":
        kw["momentum"] = 0.9
    elif extra == "decoupled-kw":
        kw["decoupled_weight_decay"] = True
    elif extra == "group-hyper" and isinstance(params, list) and params and isinstance(params[0], dict):
        params = [dict(params[0], **kw)] + params[1:]
        kw = {}
    arrays = [x for x in (a, b, bad, base) if isinstance(x, np.ndarray)]
    return cls, params, kw, arrays


@given(attack=ctor_attacks, seed=st.integers(0, 2**16))
def test_fuzz_constructors(attack, seed):
    cls, params, kw, arrays = build_ctor(attack, seed)
    before = [x.copy(order="K") for x in arrays]
    mine = outcome(lambda: getattr(adamc, cls)(params, **kw))
    rcls, rparams, rkw, rarrays = build_ctor(attack, seed)
    theirs = outcome(lambda: getattr(reference, rcls)(rparams, **rkw))
    check_outcomes(mine, theirs, f"{cls}{attack[1:]}")
    for x, y in zip(arrays, before):
        if x.dtype.kind != "O":
            assert x.tobytes(order="A") == y.tobytes(order="A"), (
                f"{cls}{attack[1:]}: an array was changed by the constructor")
    if mine[0] == "ok":
        opt, ref = mine[1], theirs[1]
        for k in range(2):
            step_twins(opt, ref, seed + k, k + 1, f"{cls}{attack[1:]}, then step {k + 1}")
