"""Property: a rule-based state machine drives random sequences of steps,
param-group edits, state_dict round trips (into the same or a freshly built
optimizer) and thread changes on adamc's optimizer and on the reference
optimizer stepped identically; after every rule they match (within
_toolkit.assert_matches's tolerance) and nothing was written outside the
parameters.  Strategies and conditioning: _strategies.py.
"""

from __future__ import annotations

import collections
import copy
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import _hypothesis_profiles as profiles  # noqa: E402  (registers and loads the profile)
import adamc  # noqa: E402
from adamc import _spec, reference  # noqa: E402

from _strategies import (  # noqa: E402
    NUDGES, REAL_VALUES, betas_values, build, comparable, cutoffs, grads_for, hypers,
    lrs_or_schedules, medium_shapes, noisy_pairs, noisy_step, offsets, optimizer_setups,
    random_values, ref_step, small_shapes, thread_counts,
)
from _toolkit import (  # noqa: E402
    FREE_OPTIONS, alloc_like, assert_guards_intact, assert_twins_match, exact,
)


# ---------------------------------------------------------------- state machine

def legal_edits():
    """(key, value) edits of a param group that step must accept: every option
    no class forces, by its kind in the spec ("toggle": flip the flag)."""
    edits = []
    for o in _spec.OPTIONS:
        if o.name not in FREE_OPTIONS or o.storage:  # storage: fixed after the first step
            continue
        if o.kind == "lr":
            edits.append(st.tuples(st.just(o.name), lrs_or_schedules))
        elif o.kind == "betas":
            edits.append(st.tuples(st.just(o.name), st.tuples(betas_values, betas_values)))
            edits.append(st.tuples(st.just(o.name),
                                   st.lists(betas_values, min_size=2, max_size=2)))
        elif o.kind == "real":
            edits.append(st.tuples(st.just(o.name), REAL_VALUES[o.name]))
        elif o.kind == "bool":
            edits.append(st.tuples(st.just(o.name), st.just("toggle")))
        elif o.kind == "choice":
            edits.append(st.tuples(st.just(o.name), st.sampled_from(o.choices)))
        else:
            raise AssertionError(f"no edits for {o.kind!r} options ({o.name})")
    return st.one_of(*edits)


class AdamMachine(RuleBasedStateMachine):
    """adamc's optimizer and the reference optimizer, driven identically."""

    def __init__(self):
        super().__init__()
        self.steps = 0
        self.moved = collections.defaultdict(float)   # parameter -> its largest step

    @initialize(setup=optimizer_setups(max_params=3, shape=st.one_of(small_shapes, small_shapes,
                                                                     medium_shapes)),
                seed=st.integers(0, 2**32 - 1))
    def build(self, setup, seed):
        self.setup = setup
        self.rng = np.random.default_rng(seed)
        init = [random_values(self.rng, s.shape, s.dtype, 0, 1) for s in setup["layouts"]]
        self.params = [s.alloc(v) for s, v in zip(setup["layouts"], init)]
        self.ref_params = [s.alloc(v, offset=0) for s, v in zip(setup["layouts"], init)]
        self.opt = build(adamc, setup, self.params)
        self.ref = build(reference, setup, self.ref_params)
        # the noisy reference (see "conditioning"), on FMA variants only
        self.noisy = {} if exact() else {
            d: build(reference, setup, [s.alloc(v, offset=0) for s, v in zip(setup["layouts"], init)])
            for d in NUDGES}
        self.resyncs = 0

    def optimizers(self):
        return [self.opt, self.ref, *self.noisy.values()]

    @rule(skip=st.lists(st.booleans(), min_size=1, max_size=3),
          exponent=st.integers(-8, 8), spread=st.integers(0, 3))
    def step(self, skip, exponent, spread):
        grads = grads_for(self.opt, self.params, self.rng, exponent, spread, skip)
        self.opt.step(grads)
        ref_step(self.ref, grads, self.moved)
        for d, o in self.noisy.items():
            noisy_step(o, grads, d)
        self.steps += 1

    @rule(group=st.integers(0, 2), edit=legal_edits())
    def edit_group(self, group, edit):
        key, value = edit
        gi = group % len(self.opt.param_groups)
        if value == "toggle":
            value = not self.opt.param_groups[gi][key]
        for o in self.optimizers():
            o.param_groups[gi][key] = copy.copy(value)

    @rule(how=st.sampled_from(["as is", "pickle", "deepcopy"]))
    def roundtrip_same(self, how):
        for o in self.optimizers():
            sd = o.state_dict()
            if how == "pickle":
                sd = pickle.loads(pickle.dumps(sd))
            elif how == "deepcopy":
                sd = copy.deepcopy(sd)
            o.load_state_dict(sd)

    @rule(offset=offsets, other=hypers(schedule=False), pickled=st.booleans())
    def roundtrip_fresh(self, offset, other, pickled):
        """Save, build a new optimizer over copies of the parameters (at other
        offsets, with other defaults), load, and continue with it."""
        setup = dict(self.setup, defaults=dict(other), overrides=[{} for _ in self.setup["overrides"]])
        for k in _spec.forced(setup["cls"]):
            setup["defaults"].pop(k)
        sd, rsd = self.opt.state_dict(), self.ref.state_dict()
        if pickled:
            sd, rsd = pickle.loads(pickle.dumps(sd)), pickle.loads(pickle.dumps(rsd))
        params = [alloc_like(p, p, offset) for p in self.params]
        ref_params = [alloc_like(p, p, 0) for p in self.ref_params]
        opt, ref = build(adamc, setup, params), build(reference, setup, ref_params)
        opt.load_state_dict(sd)
        ref.load_state_dict(rsd)
        for d, o in self.noisy.items():
            self.noisy[d] = build(reference, setup, [alloc_like(p, p, 0) for p in o._params])
            self.noisy[d].load_state_dict(o.state_dict())
        self.opt, self.ref, self.params, self.ref_params = opt, ref, params, ref_params

    @rule(n=st.one_of(st.none(), thread_counts), cutoff=cutoffs)
    def set_threads(self, n, cutoff):
        adamc.set_num_threads(n)
        if cutoff is None:
            os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
        else:
            os.environ["ADAMC_SERIAL_CUTOFF"] = str(cutoff)

    @invariant()
    def matches_reference(self):
        if not hasattr(self, "opt"):
            return
        assert all(a is b for a, b in zip(self.opt._params, self.params))
        for i, a in enumerate(self.params):
            assert_guards_intact(a, f"param {i}")
        steps = max(self.steps, 1)
        if not comparable(noisy_pairs(self.noisy.values(), self.ref), steps):
            self.resync()
        assert_twins_match(self.opt, self.ref, max(self.steps, 1), groups=True,
                           moved=self.moved)

    def resync(self):
        """Ill-conditioned on an FMA variant (see "conditioning"): the
        differences so far mean nothing, so restart adamc (and the noisy
        reference) from the reference's values and count steps afresh."""
        self.resyncs += 1
        note(f"ill-conditioned after {self.steps} steps: resynchronised with the reference")
        sd = self.ref.state_dict()
        for o in [self.opt, *self.noisy.values()]:
            params = self.params if o is self.opt else o._params
            for p, r in zip(params, self.ref_params):
                p[...] = r
            o.load_state_dict(copy.deepcopy(sd))
        self.steps = 0
        self.moved.clear()

    def teardown(self):
        adamc.set_num_threads(None)
        os.environ.pop("ADAMC_SERIAL_CUTOFF", None)


def test_state_machine(variant, clean_env):
    run_state_machine_as_test(AdamMachine, settings=settings(max_examples=profiles.scaled(0.5)))
