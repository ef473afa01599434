"""The optimizer state and bookkeeping shared by adamc's optimizers and the reference.

Holds the param groups, the per-parameter state (moments, step counts), the
lock, the state_dict format and the checks on everything the user passes.
Subclasses supply the update: ``adamc.reference`` implements ``_apply(grads)``
(validate the grads, then a NumPy loop), which ``step`` calls under the
lock; ``adamc.optim`` overrides ``step`` itself to call its compiled engine,
which validates and updates in one pass.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _validation as V
from ._validation import HYPER_KEYS


def _param_label(names, i):
    return f"params[{names[i]!r}]" if names is not None else f"params[{i}]"


class _AdamBase:
    _forced = {}  # hyperparameters a subclass fixes (AdamW: decoupled weight decay)

    def __init__(self, params, defaults):
        name = type(self).__name__
        defaults = dict(defaults, **self._forced)
        V.group_values(defaults, f"{name}()")
        if isinstance(defaults["betas"], list):
            defaults["betas"] = tuple(defaults["betas"])
        self.defaults = defaults
        self.param_groups = []
        self._params = []  # flat, in group order
        self._names = None  # flat names when built from mappings
        self._group_of = []
        self._n_groups = 0
        self._steps = np.zeros(0, dtype=np.int64)
        self._exp_avg = []
        self._exp_avg_sq = []
        self._max_exp_avg_sq = []
        self._lock = threading.Lock()

        groups = self._parse_params(params)
        named = [isinstance(g.get("params"), Mapping) for g in groups]
        if any(named) and not all(named):
            raise TypeError(
                "params: either every group gives its parameters as a mapping "
                "name -> array, or none does"
            )
        new = [self._make_group(g, gi, all(named)) for gi, g in enumerate(groups)]
        self._check_new_params(new)
        for g in new:
            self._add_group(g)
        self._rebuild()

    # ------------------------------------------------------------------
    # construction

    @staticmethod
    def _parse_params(params):
        if isinstance(params, np.ndarray):
            raise TypeError(
                "params must be a sequence of arrays, param-group dicts or a "
                "mapping name -> array, not a single array; pass [array]"
            )
        if isinstance(params, Mapping):
            return [{"params": params}]
        try:
            items = list(params)
        except TypeError:
            raise TypeError(
                "params must be a sequence of arrays, param-group dicts or a "
                f"mapping name -> array, got {type(params).__name__}"
            ) from None
        if not items:
            raise ValueError("params is empty; pass at least one array to optimize")
        dicts = [isinstance(x, Mapping) for x in items]
        if all(dicts):
            return items
        if any(dicts):
            raise TypeError(
                "params mixes arrays and param-group dicts; pass either a list "
                "of arrays or a list of dicts {'params': [...], ...}"
            )
        return [{"params": items}]

    def _make_group(self, group, gi, named):
        where = f"param_groups[{gi}]"
        if "params" not in group:
            raise ValueError(f"{where} has no 'params' entry")
        ps = group["params"]
        if named:
            names = list(ps.keys())
            arrays = list(ps.values())
        else:
            if isinstance(ps, np.ndarray):
                raise TypeError(f"{where}['params'] must be a list of arrays; pass [array]")
            try:
                arrays = list(ps)
            except TypeError:
                raise TypeError(
                    f"{where}['params'] must be a list of arrays, got {type(ps).__name__}"
                ) from None
            names = None
        if not arrays:
            raise ValueError(f"{where}['params'] is empty; give the group at least one array")
        g = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        for k, v in self.defaults.items():
            g.setdefault(k, v)
        g.update(self._forced)
        V.group_values(g, where)
        if isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
        g["params"] = arrays
        if names is not None:
            g["param_names"] = names
        return g

    def _check_new_params(self, new_groups):
        """Check the arrays of groups about to be added, before adding any."""
        start = len(self._params)
        arrays, labels = list(self._params), [self._label(i) for i in range(start)]
        names = list(self._names or [])
        for g in new_groups:
            for j, a in enumerate(g["params"]):
                lab = (
                    f"params[{g['param_names'][j]!r}]"
                    if "param_names" in g
                    else f"params[{len(arrays)}]"
                )
                V.check_array(a, lab)
                V.check_writeable(a, lab)
                arrays.append(a)
                labels.append(lab)
            names.extend(g.get("param_names", ()))
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"params: duplicate parameter name(s) {dup}")
        seen = {}
        for a, lab in zip(arrays, labels):
            if id(a) in seen:
                raise ValueError(
                    f"{seen[id(a)]} and {lab} are the same array; pass each parameter once"
                )
            seen[id(a)] = lab
        V.check_disjoint(arrays, labels)

    def _add_group(self, g):
        gi = len(self.param_groups)
        if "param_names" in g:
            self._names = (self._names or []) + list(g["param_names"])
        n = len(g["params"])
        self.param_groups.append(g)
        self._n_groups += 1
        self._params.extend(g["params"])
        self._group_of.extend([gi] * n)
        self._steps = np.concatenate([self._steps, np.zeros(n, dtype=np.int64)])
        self._exp_avg.extend([None] * n)
        self._exp_avg_sq.extend([None] * n)
        self._max_exp_avg_sq.extend([None] * n)

    def _label(self, i):
        return _param_label(self._names, i)

    def _rebuild(self):
        """Called whenever parameters or state buffers change identity."""

    # ------------------------------------------------------------------
    # public API

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters (a dict as in the constructor's list form).

        Its arrays must be new to this optimizer; unspecified hyperparameters
        take the optimizer's defaults.
        """
        if not isinstance(param_group, Mapping):
            raise TypeError(
                f"param_group must be a dict {{'params': [...], ...}}, got "
                f"{type(param_group).__name__}"
            )
        with self._lock:
            named = self._names is not None
            if isinstance(param_group.get("params"), Mapping) != named:
                raise TypeError(
                    "param_group['params'] must be a mapping name -> array "
                    "exactly when the optimizer was built from mappings"
                )
            g = self._make_group(param_group, len(self.param_groups), named)
            self._check_new_params([g])
            self._add_group(g)
            self._rebuild()

    def step(self, grads) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : sequence or mapping of ndarray or None
            One gradient per parameter, in the optimizer's parameter order
            (groups flattened in order), or a mapping with the parameters'
            names when the optimizer was built from a mapping.  Each matches
            its parameter's shape, dtype and memory order.  ``None`` skips
            that parameter: its state and step count stay as they are.
        """
        with self._lock:
            self._apply(grads)

    def _apply(self, grads):
        raise NotImplementedError

    def _grads_list(self, grads):
        """grads as a list in parameter order, or an error naming the mismatch."""
        n = len(self._params)
        if self._names is not None:
            if not isinstance(grads, Mapping):
                raise TypeError(
                    "grads must be a mapping name -> array (the optimizer was built "
                    f"from a mapping), got {type(grads).__name__}"
                )
            missing = [k for k in self._names if k not in grads]
            extra = [k for k in grads if k not in set(self._names)]
            if missing or extra:
                raise ValueError(
                    f"grads keys do not match the parameters: missing {missing}, "
                    f"unexpected {extra}; pass None for a parameter to skip it"
                )
            return [grads[k] for k in self._names]
        if isinstance(grads, (np.ndarray, Mapping)) or not hasattr(grads, "__len__"):
            raise TypeError(
                "grads must be a list with one array (or None) per parameter, "
                f"got {type(grads).__name__}"
            )
        if len(grads) != n:
            raise ValueError(
                f"grads has {len(grads)} entries but the optimizer has {n} "
                "parameters; pass one gradient (or None) per parameter, in order"
            )
        return list(grads)

    def _check_structure(self):
        """param_groups may have new hyperparameters, not new parameters."""
        groups = self.param_groups
        if not isinstance(groups, list) or len(groups) != self._n_groups:
            raise ValueError(
                f"param_groups must stay a list of the optimizer's {self._n_groups} "
                "group(s); add groups with add_param_group"
            )
        i = 0
        for gi, g in enumerate(groups):
            if not isinstance(g, Mapping):
                raise TypeError(
                    f"param_groups[{gi}] must be a dict, got {type(g).__name__}; "
                    "edit its values instead of replacing it"
                )
            ps = g.get("params")
            if not isinstance(ps, list) or any(
                a is not b for a, b in zip(ps, self._params[i : i + len(ps)])
            ) or i + len(ps) > len(self._params):
                raise ValueError(
                    f"param_groups[{gi}]['params'] was changed; parameters can be "
                    "added only with add_param_group"
                )
            i += len(ps)
        if i != len(self._params):
            raise ValueError(
                "param_groups lost parameters since construction; parameters "
                "cannot be removed from an optimizer"
            )

    def _written_spans(self):
        """Sorted spans of every buffer a step writes (parameters and state)."""
        arrays, labels = [], []
        for j, q in enumerate(self._params):
            lab = self._label(j)
            arrays += [q, self._exp_avg[j], self._exp_avg_sq[j], self._max_exp_avg_sq[j]]
            labels += [lab, f"the exp_avg of {lab}", f"the exp_avg_sq of {lab}",
                       f"the max_exp_avg_sq of {lab}"]
        return V.spans_of(arrays, labels)

    def _explain_grad(self, i, g, spans=None):
        """Raise the error for grad i, if it has one (the compiled step calls
        this only after its fast checks failed)."""
        p = self._params[i]
        plab = self._label(i)
        glab = "g" + plab[1:].replace("arams", "rads", 1)
        V.check_array(p, plab)
        V.check_writeable(p, plab)
        V.check_array(g, glab)
        V.check_like(g, p, glab, plab)
        V.check_no_overlap(g, glab, self._written_spans() if spans is None else spans)

    def _explain_param(self, i, changed=False):
        """Raise the error for parameter i, if it has one.  With changed=True
        (the compiled step saw it differ from construction) always raise."""
        p = self._params[i]
        lab = self._label(i)
        V.check_array(p, lab)
        V.check_writeable(p, lab)
        m = self._exp_avg[i]
        if m is not None and (m.shape != p.shape or m.dtype != p.dtype
                              or (p.size > 1 and V.order_of(m) != V.order_of(p))):
            raise ValueError(
                f"{lab} changed shape, dtype or memory order since its state was "
                f"created (now {p.shape} {p.dtype}, state {m.shape} {m.dtype}); "
                "parameters must keep their shape, dtype and layout"
            )
        if changed:
            raise ValueError(
                f"{lab} changed shape, dtype or memory order since the optimizer was "
                "built; parameters must keep their shape, dtype and layout"
            )

    def _allocate(self, active, amsgrad_of):
        """Create missing state for the parameters about to step.

        All-or-nothing: new buffers are made first and stored only when every
        allocation has succeeded.  Buffers take the parameter's memory order.
        """
        new = []
        for i in active:
            p = self._params[i]
            m = self._exp_avg[i]
            need_ms = m is None
            need_x = amsgrad_of(i) and self._max_exp_avg_sq[i] is None
            if need_ms or need_x:
                new.append(
                    (
                        i,
                        np.zeros_like(p) if need_ms else None,
                        np.zeros_like(p) if need_ms else None,
                        np.zeros_like(p) if need_x else None,
                    )
                )
        for i, m, v, x in new:
            if m is not None:
                self._exp_avg[i] = m
                self._exp_avg_sq[i] = v
            if x is not None:
                self._max_exp_avg_sq[i] = x
        return bool(new)

    # ------------------------------------------------------------------
    # state_dict

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in torch.optim's layout, with NumPy copies.

        ``{"state": {index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}},
        "param_groups": [{hyperparameters..., "params": [indices]}]}``.  Only
        parameters that have stepped have an entry in ``state``.
        """
        with self._lock:
            self._check_structure()
            state = {}
            for i in range(len(self._params)):
                if self._exp_avg[i] is None:
                    continue
                e = {
                    "step": int(self._steps[i]),
                    "exp_avg": self._exp_avg[i].copy(order="K"),
                    "exp_avg_sq": self._exp_avg_sq[i].copy(order="K"),
                }
                if self._max_exp_avg_sq[i] is not None:
                    e["max_exp_avg_sq"] = self._max_exp_avg_sq[i].copy(order="K")
                state[i] = e
            groups, start = [], 0
            for g in self.param_groups:
                d = {k: v for k, v in g.items() if k not in ("params", "param_names")}
                d["betas"] = tuple(d["betas"])
                if "param_names" in g:
                    d["param_names"] = list(g["param_names"])
                d["params"] = list(range(start, start + len(g["params"])))
                start += len(g["params"])
                groups.append(d)
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state_dict; validated whole before anything changes.

        Arrays are copied in (the dict stays the caller's).  Resuming from
        ``state_dict()`` gives a bit-identical trajectory.
        """
        with self._lock:
            groups, state = self._check_state_dict(state_dict)
            # Build every new buffer first; assignments below cannot fail.
            n = len(self._params)
            steps = np.zeros(n, dtype=np.int64)
            new = [None] * n
            for i, e in state.items():
                p = self._params[i]
                bufs = []
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in e:
                        b = np.empty_like(p)
                        b[...] = e[key]
                        bufs.append(b)
                    else:
                        bufs.append(None)
                steps[i] = int(e["step"])
                new[i] = bufs
            hypers = [{k: (tuple(v) if k == "betas" else v) for k, v in saved.items()
                       if k not in ("params", "param_names")} for saved in groups]
            try:
                for i in range(n):
                    m, v, x = new[i] if new[i] is not None else (None, None, None)
                    self._exp_avg[i], self._exp_avg_sq[i], self._max_exp_avg_sq[i] = m, v, x
                self._steps = steps
                for g, h in zip(self.param_groups, hypers):
                    g.update(h)
            finally:
                self._rebuild()  # the compiled engine must never see stale buffers

    def _check_state_dict(self, sd):
        if not isinstance(sd, Mapping) or "state" not in sd or "param_groups" not in sd:
            raise TypeError(
                "state_dict must be a dict with 'state' and 'param_groups', as "
                "returned by state_dict()"
            )
        groups, state = sd["param_groups"], sd["state"]
        if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
            raise TypeError(
                "state_dict['param_groups'] must be a list and state_dict['state'] a dict"
            )
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(groups)} param groups but the optimizer has "
                f"{len(self.param_groups)}"
            )
        index = {}  # saved index -> our flat index
        flat = 0
        for gi, (saved, ours) in enumerate(zip(groups, self.param_groups)):
            where = f"state_dict['param_groups'][{gi}]"
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise TypeError(f"{where} must be a dict with a 'params' list")
            ids = list(saved["params"])
            if len(ids) != len(ours["params"]):
                raise ValueError(
                    f"{where} has {len(ids)} parameters but param_groups[{gi}] has "
                    f"{len(ours['params'])}"
                )
            if "param_names" in saved and "param_names" in ours:
                if list(saved["param_names"]) != list(ours["param_names"]):
                    raise ValueError(f"{where}['param_names'] do not match this optimizer's")
            merged = dict(ours)
            merged.update({k: v for k, v in saved.items() if k in HYPER_KEYS})
            V.group_values(merged, where)
            for forced, val in self._forced.items():
                if merged[forced] != val:
                    raise ValueError(
                        f"{where}['{forced}'] is {merged[forced]!r} but "
                        f"{type(self).__name__} requires {val!r}"
                    )
            for sid in ids:
                if sid in index:
                    raise ValueError(f"{where}: parameter index {sid!r} appears twice")
                index[sid] = flat
                flat += 1
        checked = {}
        for sid, e in state.items():
            if sid not in index:
                raise ValueError(
                    f"state_dict['state'] has an entry for parameter {sid!r}, which "
                    "no param group lists"
                )
            i = index[sid]
            where = f"state_dict['state'][{sid!r}]"
            if not isinstance(e, Mapping):
                raise TypeError(f"{where} must be a dict")
            allowed = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
            extra = set(e) - allowed
            if extra or "step" not in e or "exp_avg" not in e or "exp_avg_sq" not in e:
                raise ValueError(
                    f"{where} must have keys step, exp_avg, exp_avg_sq (and optionally "
                    f"max_exp_avg_sq); got {sorted(map(str, e))}"
                )
            step = e["step"]
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
                raise TypeError(f"{where}['step'] must be an int, got {type(step).__name__}")
            if not 0 <= step < V.MAX_STEP:
                raise ValueError(
                    f"{where}['step'] must be between 0 and 2**62 - 1, got {step}")
            p = self._params[i]
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key not in e:
                    continue
                a = e[key]
                lab = f"{where}[{key!r}]"
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{lab} must be a numpy.ndarray, got {type(a).__name__}")
                if a.dtype != p.dtype:
                    raise TypeError(
                        f"{lab} has dtype {a.dtype} but {self._label(i)} has {p.dtype}"
                    )
                if a.shape != p.shape:
                    raise ValueError(
                        f"{lab} has shape {a.shape} but {self._label(i)} has {p.shape}"
                    )
            checked[i] = e
        return groups, checked

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(k for k in g if k not in ("params", "param_names")):
                lines.append(f"    {k}: {g[k]!r}")
        lines.append(")")
        return "\n".join(lines)
