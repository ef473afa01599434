"""Fuzzing opt.load_state_dict with broken state_dicts (the pools, the
checks and the property: _fuzzing.py)."""

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
    ARRAY_KINDS, KNOWN_BUG_STEPS, NP, after_attack, bad_array, hyper_pairs, known, make_victim,
    note, outcome, victim_configs,
)
from _toolkit import SLOT_NAMES, alloc_like, order_of, snapshot  # noqa: E402


# ---------------------------------------------------------------- load_state_dict

SD_EDITS = [
    "not-a-dict:list", "not-a-dict:None", "not-a-dict:str", "del:state", "del:param_groups",
    "state:list", "state:None", "state:tuple", "groups:dict", "groups:None", "groups:int",
    "groups:tuple", "groups:str", "group:append", "group:pop", "group:None", "group:list",
    "group:del-params", "group:params-int", "group:params-None", "group:params-str",
    "group:params-short", "group:params-long", "group:params-dup", "group:params-unhashable",
    "group:params-shift", "group:del-hyper", "group:hyper-bad", "group:param_names",
    "group:decoupled-False", "group:extra-key",
    "state:pop", "state:unknown-id", "state:str-id", "state:entry-None", "state:entry-list",
    "state:del-key", "state:extra-key", "state:step-bad", "state:array-bad", "state:del-max",
]
STEP_VALUES = [1.5, "3", None, True, -1, np.int64(-3), [2], np.float64(2.0), 2**62,
               np.int64(5), np.uint8(7), 0] + known(KNOWN_BUG_STEPS)

sd_edits = st.lists(
    st.tuples(st.sampled_from(SD_EDITS), st.integers(0, NP - 1), st.integers(0, 1),
              st.sampled_from(ARRAY_KINDS), st.sampled_from(SLOT_NAMES),
              st.sampled_from(STEP_VALUES), hyper_pairs),
    min_size=1, max_size=3)


def corrupt(sd, edits, seed):
    """Apply the edits to a deep copy of sd; returns the corrupted object."""
    sd = copy.deepcopy(sd)
    for what, i, gi, akind, key, step, (hkey, hval) in edits:
        if not isinstance(sd, dict):
            break
        groups, state = sd.get("param_groups"), sd.get("state")
        if what.startswith("not-a-dict:"):
            sd = {"list": [sd], "None": None, "str": "state"}[what.split(":")[1]]
        elif what.startswith("del:"):
            sd.pop(what[4:], None)
        elif what in ("state:list", "state:None", "state:tuple"):
            entries = state if isinstance(state, dict) else {}
            sd["state"] = {"state:list": list(entries.values()), "state:None": None,
                           "state:tuple": tuple(entries.items())}[what]
        elif what.startswith("groups:"):
            sd["param_groups"] = {"dict": {0: groups}, "None": None, "int": 2,
                                  "tuple": tuple(groups) if isinstance(groups, (list, tuple)) else (),
                                  "str": "groups"}[what[7:]]
        elif what.startswith("group:") and isinstance(groups, list) and groups:
            g = groups[gi % len(groups)]
            op = what[6:]
            if op == "append":
                groups.append(copy.deepcopy(g))
            elif op == "pop":
                groups.pop()
            elif op == "None":
                groups[gi % len(groups)] = None
            elif op == "list":
                groups[gi % len(groups)] = list(g.items()) if isinstance(g, dict) else []
            elif isinstance(g, dict):
                ps = g.get("params")
                if op == "del-params":
                    g.pop("params", None)
                elif op == "params-int":
                    g["params"] = 3
                elif op == "params-None":
                    g["params"] = None
                elif op == "params-str":
                    g["params"] = "ab"
                elif op == "params-short" and isinstance(ps, list):
                    g["params"] = ps[:-1]
                elif op == "params-long" and isinstance(ps, list) and all(isinstance(x, int) for x in ps):
                    g["params"] = ps + [max(ps) + 10]
                elif op == "params-dup" and isinstance(ps, list) and ps:
                    g["params"] = [ps[0]] * len(ps)
                elif op == "params-unhashable" and isinstance(ps, list):
                    g["params"] = [[x] for x in ps]
                elif op == "params-shift" and isinstance(ps, list) and all(isinstance(x, int) for x in ps):
                    g["params"] = [x + 100 for x in ps]
                elif op == "del-hyper":
                    g.pop(hkey, None)  # allowed: the optimizer's own value is kept
                elif op == "hyper-bad":
                    g[hkey] = copy.copy(hval)
                elif op == "param_names":
                    g["param_names"] = ["zz"] * len(ps) if isinstance(ps, list) else ["zz"]
                elif op == "decoupled-False":
                    g["decoupled_weight_decay"] = False
                elif op == "extra-key":
                    g["momentum"] = 0.9  # unknown group keys are ignored, as torch does
        elif what.startswith("state:") and isinstance(state, dict):
            op = what[6:]
            ids = sorted(k for k in state if isinstance(k, int))
            sid = ids[i % len(ids)] if ids else 0
            e = state.get(sid)
            if op == "pop":
                state.pop(sid, None)
            elif op == "unknown-id":
                state[1000 + i] = copy.deepcopy(e) if e is not None else {}
            elif op == "str-id" and e is not None:
                state[str(sid)] = state.pop(sid)
            elif op == "entry-None":
                state[sid] = None
            elif op == "entry-list":
                state[sid] = list(e.items()) if isinstance(e, dict) else []
            elif isinstance(e, dict):
                if op == "del-key":
                    e.pop(key if key != "max_exp_avg_sq" else "step", None)
                elif op == "extra-key":
                    e["momentum_buffer"] = np.zeros(1)
                elif op == "step-bad":
                    e["step"] = step
                elif op == "del-max":
                    e.pop("max_exp_avg_sq", None)  # allowed
                elif op == "array-bad":
                    ref_arr = e.get("exp_avg")
                    if isinstance(ref_arr, np.ndarray):
                        e[key] = bad_array(akind, ref_arr.shape, ref_arr.dtype, order_of(ref_arr), seed)
    return sd


@given(cfg=victim_configs, edits=sd_edits, seed=st.integers(0, 2**16),
       source=st.sampled_from(["own", "fresh", "other-config"]))
def test_fuzz_load_state_dict(cfg, edits, seed, source):
    opt, ref = make_victim(adamc, cfg), make_victim(reference, cfg)
    if source == "own":
        good = opt.state_dict()
    elif source == "fresh":  # a state_dict with no state yet
        good = getattr(adamc, cfg["cls"])(
            [{"params": [alloc_like(p, 0.0) for p in opt._params[:2]]},
             {"params": [alloc_like(p, 0.0) for p in opt._params[2:]]}]).state_dict()
    else:  # from an optimizer of another class / layout
        other = dict(cfg, cls="AdamW" if cfg["cls"] == "Adam" else "Adam", named=not cfg["named"])
        good = make_victim(adamc, other).state_dict()
    bad = corrupt(good, edits, seed)
    note(f"state_dict: {bad!r}")
    snap = snapshot(opt)
    mine = outcome(lambda: opt.load_state_dict(bad))
    with np.errstate(all="ignore"):
        theirs = outcome(lambda: ref.load_state_dict(copy.deepcopy(bad)))
    after_attack(mine, theirs, opt, ref, snap, f"load_state_dict {edits} from {source}")
