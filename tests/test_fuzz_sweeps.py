"""Every value in the fuzzers' pools at every entry point.

Hypothesis explores combinations; these sweeps make sure that every single
value in the pools of _fuzzing.py (bad hyperparameters, array kinds) reaches
every entry point on every run.  (The sweep of every step attack kind is in
test_fuzz_optimizer.py.)
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("hypothesis")

import adamc  # noqa: E402
from adamc import _spec, reference  # noqa: E402

from _fuzzing import (  # noqa: E402
    ARRAY_KINDS, FUNC_SCALARS, FUZZED_KEYS, GRAD_KINDS, NP, bad_array, check_outcomes,
    entries_grads, functional_twins, hyper_pool, make_victim, outcome, sweep, valid_grads,
    values_for,
)
from _toolkit import FUNC_BUFFERS, SLOT_NAMES, alloc, order_of  # noqa: E402


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_every_hyperparameter_value_everywhere(cls):
    cfg = {"cls": cls, "named": False, "amsgrad": True}
    forced = _spec.forced(cls)
    # AdamW differs from Adam only in the options it forces (decoupled_weight_decay)
    for key in FUZZED_KEYS if cls == "Adam" else list(_spec.forced("AdamW")):
        for value in hyper_pool(key):
            label = f"{cls} {key}={value!r}"
            # constructor (keyword and param-group forms)
            for form in ("kw", "group"):
                def build(module):
                    a = alloc((3,), np.float32, "C", 1, values_for(1, (3,)))
                    if key in forced:
                        return getattr(module, cls)([{"params": [a], key: copy.copy(value)}])
                    if form == "kw":
                        return getattr(module, cls)([a], **{key: copy.copy(value)})
                    return getattr(module, cls)([{"params": [a], key: copy.copy(value)}])
                mine, theirs = outcome(lambda: build(adamc)), outcome(lambda: build(reference))
                check_outcomes(mine, theirs, f"{label} ({form})")
            # param-group edit, then step
            def edit_and_step(o, key=key, value=value):
                g = o.param_groups[1]
                had, old = key in g, g.get(key)  # a synonym is not a group key
                g[key] = copy.copy(value)
                try:
                    o.step(valid_grads(o, 3))
                finally:
                    if had:
                        g[key] = old
                    else:
                        del g[key]
            sweep(f"{label} (edit, step)", lambda m: make_victim(m, cfg), edit_and_step)
            # load_state_dict
            def load(o, key=key, value=value):
                sd = o.state_dict()
                sd["param_groups"][0][key] = copy.copy(value)
                o.load_state_dict(sd)
            sweep(f"{label} (load_state_dict)", lambda m: make_victim(m, cfg), load)
            # add_param_group
            def add(o, key=key, value=value):
                o.add_param_group({"params": [alloc((2,), np.float64, "C", 0, 1.0)],
                                   key: copy.copy(value)})
            sweep(f"{label} (add_param_group)", lambda m: make_victim(m, cfg), add)
    # adam_step's scalars
    for key, values in FUNC_SCALARS.items() if cls == "Adam" else ():
        for value in values:
            functional_twins(([], [], [(key, value)], ((5,), np.float32, "C", 1), True),
                             f"adam_step {key}={value!r}")


@pytest.mark.parametrize("named", [False, True])
def test_every_array_kind_everywhere(named):
    cfg = {"cls": "Adam", "named": named, "amsgrad": True}
    for kind in GRAD_KINDS:
        for i in range(NP):
            # as a gradient
            sweep(f"grads[{i}] {kind}", lambda m: make_victim(m, cfg),
                  lambda o, i=i, kind=kind: o.step(entries_grads(o, [(i, kind)], 7)))
        if kind in GRAD_KINDS[len(ARRAY_KINDS):]:
            continue  # aliases only make sense for gradients
        # as a parameter, in the constructor and in add_param_group
        for shape, dtype, order in [((4,), np.float32, "C"), ((2, 3), np.float64, "F"), ((), np.float32, "C")]:
            def ctor(module, kind=kind, shape=shape, dtype=dtype, order=order):
                bad = bad_array(kind, shape, dtype, order, 3)
                other = alloc((3,), np.float32, "C", 0, 1.0)
                return module.Adam({"a": other, "b": bad} if named else [other, bad])
            mine, theirs = outcome(lambda: ctor(adamc)), outcome(lambda: ctor(reference))
            check_outcomes(mine, theirs, f"Adam(params with {kind} {shape} {order})")

            def add(o, kind=kind, shape=shape, dtype=dtype, order=order):
                bad = bad_array(kind, shape, dtype, order, 3)
                o.add_param_group({"params": {"new": bad} if named else [bad]})
            sweep(f"add_param_group {kind} {shape}", lambda m: make_victim(m, cfg), add)
        if named:
            continue  # the rest does not depend on how parameters are named
        # as a state_dict buffer
        for key in SLOT_NAMES:
            def load(o, kind=kind, key=key):
                sd = o.state_dict()
                e = sd["state"][1]
                e[key] = bad_array(kind, e["exp_avg"].shape, e["exp_avg"].dtype,
                                   order_of(e["exp_avg"]), 3)
                o.load_state_dict(sd)
            sweep(f"state_dict[1][{key}] {kind}", lambda m: make_victim(m, cfg), load)
        # as each buffer of adam_step
        for name in FUNC_BUFFERS:
            functional_twins(([(name, kind)], [], [], ((2, 3), np.float64, "F", 1), True),
                             f"adam_step {name}={kind}")
