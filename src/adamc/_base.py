"""What adamc's optimizers and their NumPy twins share: groups, state, the lock.

``_Optimizer`` holds the param groups, the lock and the state_dict format,
and drives an *engine* through the protocol of ``_spec`` (OK, NEED_GROUPS,
BAD_PARAM, ...): ``adamc.optim`` plugs in the compiled ``_kernels.Engine``,
``adamc.reference`` its NumPy ``Engine``.  The engine owns the step counters
and the state buffers; this class owns everything the user sees and every
decision that needs Python (checks and messages from ``_validation``,
schedules, allocation).  Nothing here runs per element.
"""

from __future__ import annotations

import copy
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _spec
from . import _validation as V
from ._fused import StepInfo, fused_factor  # noqa: F401  (StepInfo: opt.last_step)


def _read_only_view(a):
    """A view of contiguous ``a`` through a read-only buffer: its
    WRITEABLE flag cannot be set back, nor its base written."""
    order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
    flat = a.reshape(-1, order=order).view(np.uint8)
    return np.frombuffer(memoryview(flat).toreadonly(), np.uint8).view(a.dtype).reshape(
        a.shape, order=order)


class _Locked:
    """``with _Locked(opt):`` the optimizer's lock, except for a call from
    inside one of its own schedules during a step (the lock is held then):
    a RuntimeError, where waiting would never end.  (step() does the same
    inline: its per-call cost counts.)"""

    __slots__ = ("lock",)

    def __init__(self, opt):
        self.lock = opt._lock
        if _FORKING or not self.lock.acquire(False):
            _wait(opt, self.lock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.lock.release()


def _wait(opt, lock):
    """Block on ``lock`` (held by a step), or raise if this thread holds it,
    running one of opt's schedules or a fork's handlers."""
    me = threading.get_ident()
    if opt.__dict__.get("_scheduling") == me:
        raise RuntimeError(
            "the optimizer was called from inside one of its learning-rate schedules, "
            "while it steps (the schedule runs under the optimizer's lock): a schedule "
            "must not use its optimizer; read what it needs before the step")
    if me in _FORKING:
        if any(d["_lock"] is lock for held, _ in _forks() for d in held):
            raise RuntimeError(
                "the optimizer was used from an os.fork handler, while adamc holds its "
                "lock for the fork: use it before os.fork or after it returns")
    elif not getattr(_THREAD, "schedules", 0):   # (a schedule runs under a lock the
        while _FORKING:   # fork waits for) a fork waits for the steps in flight: start
            time.sleep(0.0002)                   # none until it is done
    lock.acquire()


# Every optimizer handle alive (by id: a subclass may be unhashable), for
# os.fork: each lock is taken before a fork, so that a step running in
# another thread finishes first and the child gets whole steps, and released
# after, in parent and child.  The wait is bounded (FORK_WAIT seconds): a
# step that cannot finish (its schedule waits for a lock the forking thread
# holds, such as logging's; a fork from a signal handler in the stepping
# thread) is not waited for, and the child gets a fresh lock for that
# optimizer instead (a lock copied while held would never be released
# there), with the arrays as the fork found them.  While a fork waits, no
# step starts (_FORKING is checked before each lock is taken), except from
# a schedule, which runs under a lock the fork may be waiting for: a thread
# that steps in a loop took the lock back as soon as it let it go, and a
# fork waited out FORK_WAIT and copied a step in flight.  A fork from a
# signal handler during another fork's wait nests: each fork of a thread
# has its own entry on the thread's stack, and _FORKING counts them.
_LIVE = weakref.WeakValueDictionary()
_THREAD = threading.local()   # .forks: (held, missed) per fork in progress; .schedules
_FORKING = {}                 # thread id -> forks in progress (dict operations are atomic)
FORK_WAIT = 1.0


def _forks():
    """This thread's stack of forks in progress: (locks held, locks missed)."""
    stack = getattr(_THREAD, "forks", None)
    if stack is None:
        stack = _THREAD.forks = []
    return stack


def _live_dicts():
    """The attribute dicts of the live optimizers (handles share one)."""
    while True:
        try:
            opts = list(_LIVE.values())
            break
        except RuntimeError:  # pragma: no cover - changed while copied
            continue
    return list({id(o.__dict__): o.__dict__ for o in opts}.values())


def _before_fork():
    me = threading.get_ident()
    _FORKING[me] = _FORKING.get(me, 0) + 1
    held, missed = [], []
    try:
        for d in _live_dicts():
            lock = d.get("_lock")
            if lock is not None:
                (held if lock.acquire(timeout=FORK_WAIT) else missed).append(d)
    finally:   # (pushed once whole: a fork nested in this loop pushes and pops its own)
        _forks().append((held, missed))


def _end_fork():
    """Pop this thread's latest fork: (held, missed), and its count."""
    stack, me = _forks(), threading.get_ident()
    left = _FORKING.get(me, 1) - 1
    if left > 0:
        _FORKING[me] = left
    else:
        _FORKING.pop(me, None)
    return stack.pop() if stack else ((), ())


def _after_fork_in_parent():
    held, _ = _end_fork()
    for d in held:
        d["_lock"].release()


def _after_fork_in_child():
    me = threading.get_ident()
    for other in [t for t in _FORKING if t != me]:
        del _FORKING[other]        # no other thread of the parent runs here
    held, missed = _end_fork()
    for d in held:
        d["_lock"].release()
    for d in missed:
        d["_lock"] = threading.Lock()
    for d in _live_dicts():
        d["_scheduling"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _new_slot(p, slot, dtype):
    """A fresh state buffer for parameter p: zeros, or p's values (master)."""
    dt = V.storage_dtype(dtype)
    if _spec.SLOT[slot].shape == "blocks":
        return np.zeros(_spec.nblocks(p.size), dtype=dt)
    if _spec.SLOT[slot].init == "param":
        return p.astype(dt, order="K")
    return np.zeros_like(p, dtype=dt)


class _Optimizer:
    _variant = "Adam"   # which column of the spec's defaults and forced values
    _Engine = None      # the engine class (see the module docstring)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.__signature__ = _spec.signature(cls._variant)

    def __init__(self, params, *args, **kwargs):
        name = type(self).__name__
        try:
            bound = self.__signature__.bind(params, *args, **kwargs)
        except TypeError as e:
            V.check_torch_only(kwargs, f"{name}()")
            raise TypeError(f"{name}(): {e}") from None
        given = {k: v for k, v in bound.arguments.items() if k != "params"}
        self.defaults = V.options_for(self._variant, given, f"{name}()")
        groups = V.parse_params(params)
        named = isinstance(groups[0].get("params"), Mapping)
        new = [V.make_group(g, gi, named, self._variant, self.defaults)
               for gi, g in enumerate(groups)]
        V.check_new_params([], None, new)
        self.param_groups = []
        self._params, self._names, self._group_of, self._group_params = [], None, [], []
        self._maps = []  # per group: the quant_map its 8-bit codes index
        for g in new:
            self._add_group(g)
        self._group_hypers()  # the storage options fit every parameter
        self.last_step = None  # a StepInfo after a fused step
        self._lock = threading.Lock()
        self._scheduling = None  # the thread calling a schedule of a step
        self._engine = self._Engine(self._params, self._group_of)
        _LIVE[id(self)] = self

    def _add_group(self, g):
        if "param_names" in g:
            self._names = (self._names or []) + list(g["param_names"])
        self._group_of.extend([len(self.param_groups)] * len(g["params"]))
        self.param_groups.append(g)
        self._group_params.append(g["params"])
        self._params.extend(g["params"])
        self._maps.append(g.get("quant_map", _spec.OPTION["quant_map"].default))

    def _label(self, i):
        return V.param_label(self._names, i)

    # ------------------------------------------------------------------
    # public API

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters (a dict as in the constructor's list form).

        Its arrays must be new to this optimizer; unspecified hyperparameters
        take the optimizer's defaults.
        """
        with _Locked(self):
            named = self._names is not None
            V.check_param_group_arg(param_group, named)
            g = V.make_group(param_group, len(self.param_groups), named, self._variant,
                             self.defaults)
            V.check_new_params(self._params, self._names, [g])
            h = V.group_values(g, f"param_groups[{len(self.param_groups)}]")
            names = (self._names or []) + list(g.get("param_names", ())) if named else None
            V.check_group_storage(h, g["params"], [
                V.param_label(names, len(self._params) + j)
                for j in range(len(g["params"]))], f"param_groups[{len(self.param_groups)}]")
            old = self._engine
            self._add_group(g)
            self._engine = self._Engine(self._params, self._group_of)
            n = len(old.steps)
            self._engine.set_states({i: old.get_state(i) for i in range(n)})
            self._engine.set_steps(np.concatenate(
                [old.steps, np.zeros(len(self._params) - n, dtype=np.int64)]))

    def step(self, grads=V.NO_GRADS, *, grad_scale=None, max_grad_norm=None,
             skip_nonfinite=False) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : sequence or mapping of ndarray or None
            One gradient per parameter, in the optimizer's parameter order
            (groups flattened in order), or a mapping with the parameters'
            names when the optimizer was built from a mapping.  Each matches
            its parameter's shape and memory order; its dtype is float16,
            bfloat16, float32 or float64 (converted to the parameter's in the
            kernel, no copy).
            ``None`` skips that parameter: its state and step count stay as
            they are.
        grad_scale : float, optional
            The loss scale the gradients carry: they are divided by it (in
            the kernel, no pass of their own), after the conversion to the
            parameter's compute type (float32 for float32 and 16-bit
            parameters): a float64 gradient beyond float32's range is Inf
            there, before the division (and so counts as Inf: the norm,
            ``skip_nonfinite``).
        max_grad_norm : float, optional
            Clip by the global L2 norm over all gradients of the step (after
            unscaling), as ``torch.nn.utils.clip_grad_norm_``.  One setting
            for the whole step (not per group).
        skip_nonfinite : bool, default False
            If any gradient element is Inf or NaN, change nothing (as
            ``GradScaler`` skips ``optimizer.step``).

        With any of these, the step reads the gradients twice (norm, then
        step) and records a :class:`StepInfo` in ``opt.last_step``.
        """
        if grad_scale is not None or max_grad_norm is not None or skip_nonfinite is not False:
            return self._fused_step(grads, grad_scale, max_grad_norm, skip_nonfinite)
        lock = self._lock
        if _FORKING or not lock.acquire(False):
            _wait(self, lock)
        try:
            if self._names is None and not self._engine.step(grads, self.param_groups):
                return
            self._step_slowly(grads)
        finally:
            lock.release()

    def _fused_step(self, grads, grad_scale, max_grad_norm, skip_nonfinite):
        scale, max_norm, skip = V.check_fused(grad_scale, max_grad_norm, skip_nonfinite)
        lock = self._lock   # (as in step: inline, its per-call cost counts)
        if _FORKING or not lock.acquire(False):
            _wait(self, lock)
        try:
            grads = V.grads_list(grads, len(self._params), self._names)
            engine = self._engine
            status = engine.step(grads, self.param_groups, 1.0, True)
            while status != _spec.MEASURED:  # every check passes before the norm
                self._resolve(status, grads)
                status = engine.step(grads, self.param_groups, 1.0, True)
            info = fused_factor(engine.sumsq, scale, max_norm, skip, grads, self._params)
            if info.skipped:
                engine.forget_lrs()   # the next step asks the schedules again
            else:
                self._step_factor(grads, info.factor)
            self.last_step = info
        finally:
            lock.release()

    def _step_factor(self, grads, factor):
        """Step with every gradient multiplied by ``factor`` (a fused step's,
        decided by the caller: here, or adamc.distributed from the global
        norm); ``grads`` a list, the lock held."""
        status = self._engine.step(grads, self.param_groups, factor)
        while status:
            self._resolve(status, grads)
            status = self._engine.step(grads, self.param_groups, factor)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Always raises TypeError: adamc holds no gradients to zero (they
        are ``step``'s argument).  Drop the call; a silent no-op would hide a
        ported loop that still expects the optimizer to read ``.grad``."""
        V.no_zero_grad()

    def _step_slowly(self, grads):
        """The engine said no (or the grads are a mapping): resolve what it
        asks for until it steps."""
        grads = V.grads_list(grads, len(self._params), self._names)
        status = self._engine.step(grads, self.param_groups)
        while status:
            self._resolve(status, grads)
            status = self._engine.step(grads, self.param_groups)

    def _resolve(self, status, glist):
        """Answer an engine's request, or raise the error it found."""
        engine = self._engine
        if status == _spec.NEED_GROUPS:
            V.check_structure(self.param_groups, self._group_params, self._params)
            hypers = self._group_hypers()
            slots = self._slots(hypers)
            for i, want in enumerate(slots):
                gi = self._group_of[i]
                V.check_state_fits(engine.get_state(i), want, self._label(i),
                                   self._maps[gi], hypers[gi].quant_map)
            for g, h in zip(self.param_groups, hypers):  # every check passed
                if h.seed is not None and g.get("seed") is None:
                    g["seed"] = h.seed  # drawn for stochastic rounding turned on by an edit
            engine.set_groups(self.param_groups, hypers, slots)
            self._maps = [h.quant_map for h in hypers]
        elif status == _spec.BAD_PARAM:
            i = engine.bad_index
            V.explain_param(self._params[i], self._label(i), engine.get_state(i), changed=True)
        elif status == _spec.BAD_GRAD:
            i = engine.bad_index
            spans = V.written_spans(self._params, [engine.get_state(j) for j in
                                                   range(len(self._params))], self._names)
            V.explain_grad(self._params[i], glist[i], self._label(i),
                           V.grad_label(self._names, i), spans)
            raise RuntimeError(f"adamc: gradient {i} failed a check (please report)")
        elif status == _spec.NEED_LR:
            self._scheduling = threading.get_ident()
            _THREAD.schedules = getattr(_THREAD, "schedules", 0) + 1
            try:
                engine.set_lrs({
                    (gi, t): V.scheduled_lr(self.param_groups[gi]["lr"], t,
                                            f"param_groups[{gi}]")
                    for gi, t in engine.wanted_lrs()})
            finally:
                self._scheduling = None
                _THREAD.schedules -= 1
        elif status == _spec.NEED_STATE:
            slots = self._slots(self._group_hypers())
            self._allocate([(i, slots[i]) for i in engine.stateless()])
        else:  # pragma: no cover
            raise RuntimeError(f"adamc: unknown engine status {status} (please report)")

    def _group_hypers(self):
        """Every group's Hypers, its storage options checked against its
        parameters."""
        hypers = []
        for gi, g in enumerate(self.param_groups):
            where = f"param_groups[{gi}]"
            h = V.group_values(g, where)
            if h.stochastic_rounding and h.seed is None:  # turned on by an edit
                h = h._replace(seed=secrets.randbits(63))
            idx = [i for i, j in enumerate(self._group_of) if j == gi]
            V.check_group_storage(h, [self._params[i] for i in idx],
                                  [self._label(i) for i in idx], where)
            hypers.append(h)
        return hypers

    def _slots(self, hypers):
        """{slot: dtype name} per parameter."""
        return [_spec.slots_for(hypers[gi], V.dtype_name(p.dtype), p.size)
                for p, gi in zip(self._params, self._group_of)]

    def _allocate(self, wanted):
        """Create the missing state slots of the parameters about to step:
        ``wanted`` is [(index, {slot: dtype name})].  All-or-nothing: every
        buffer is made before any is handed to the engine; each takes its
        parameter's memory order, and starts as its slot says (_spec.SLOTS)."""
        new = {}
        for i, slots in wanted:
            have = self._engine.get_state(i) or {}
            p = self._params[i]
            new[i] = {s: have[s] if s in have else _new_slot(p, s, dt)
                      for s, dt in slots.items()}
        self._engine.set_states(new)

    # ------------------------------------------------------------------
    # state_dict

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in torch.optim's layout, with NumPy copies.

        ``{"state": {index: {"step", "exp_avg", "exp_avg_sq", ...}},
        "param_groups": [{hyperparameters..., "params": [indices]}]}``.  Only
        parameters that have stepped have an entry in ``state``, holding the
        state slots that apply to it (``_spec.SLOTS``): also
        ``"max_exp_avg_sq"`` with amsgrad, ``"master_param"`` for a 16-bit
        parameter with master weights, and with 8-bit state uint8 codes in
        ``"exp_avg"``/``"exp_avg_sq"`` plus their per-block scales
        ``"exp_avg_absmax"``/``"exp_avg_sq_absmax"``; then the top-level
        ``"quant_map_version"`` says the highest map version the codes index
        (docs/int8-state.md).  torch.optim's keys and structure, not its
        objects: torch cannot load it as it is (``step`` and the moments are
        NumPy values, the groups hold adamc's options), nor adamc a torch
        state_dict: ``adamc.interop.to_torch``/``from_torch`` convert.
        """
        with _Locked(self):
            V.check_structure(self.param_groups, self._group_params, self._params)
            steps = self._engine.steps
            state, versions, coded = {}, set(), set()
            for i in range(len(self._params)):
                st = self._engine.get_state(i)
                if st:
                    state[i] = {"step": int(steps[i]),
                                **{k: a.copy(order="K") for k, a in st.items()}}
                    if "exp_avg_absmax" in st:
                        coded.add(self._group_of[i])
                        versions.add(_spec.QUANT_MAPS[self._maps[self._group_of[i]]])
            groups, start = [], 0
            for gi, g in enumerate(self.param_groups):
                d = {k: v for k, v in g.items() if k not in ("params", "param_names")}
                if gi in coded:  # the map its codes index (an edit of it after
                    d["quant_map"] = self._maps[gi]   # them is refused by step())
                if isinstance(d["betas"], (list, tuple)):   # (else as edited: step() says
                    d["betas"] = tuple(d["betas"])          # what is wrong with it)
                if "param_names" in g:
                    d["param_names"] = list(g["param_names"])
                d["params"] = list(range(start, start + len(g["params"])))
                start += len(g["params"])
                groups.append(d)
            sd = {"state": state, "param_groups": groups}
            if versions:  # 8-bit codes: the highest map version they index (each
                # group's quant_map says which of its parameters' codes index)
                sd["quant_map_version"] = max(versions)
            return sd

    @property
    def state(self) -> dict[Any, dict[str, Any]]:
        """Each stepped parameter's state, as live read-only views.

        ``{key: {"step": int, slot: ndarray, ...}}`` with the slots of
        :meth:`state_dict`, keyed by the parameter's index (its name for an
        optimizer built from a mapping).  The arrays are views of the
        optimizer's own buffers, not copies: they change as it steps (copy
        one to keep it; read them between steps, not while another thread
        steps) until ``load_state_dict`` replaces the buffers, and they are
        read-only, through a read-only buffer (set state with
        ``load_state_dict``).
        """
        with _Locked(self):
            steps, names, out = self._engine.steps, self._names, {}
            for i in range(len(self._params)):
                st = self._engine.get_state(i)
                if st:
                    entry = out[i if names is None else names[i]] = {"step": int(steps[i])}
                    for k, a in st.items():
                        entry[k] = _read_only_view(a)
            return out

    def state_nbytes(self) -> int:
        """Bytes of all optimizer state buffers (moments, 8-bit codes and
        their scales, amsgrad's maximum, master copies) allocated so far;
        parameters and gradients not included."""
        with _Locked(self):
            return sum(a.nbytes for i in range(len(self._params))
                       for a in (self._engine.get_state(i) or {}).values())

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state_dict; validated whole before anything changes.

        Arrays are copied in (the dict stays the caller's).  Resuming from
        ``state_dict()`` gives a bit-identical trajectory.
        """
        with _Locked(self):
            updates, state = V.check_state_dict(state_dict, self.param_groups, self._params,
                                                self._names, self._variant)
            n = len(self._params)
            steps = np.zeros(n, dtype=np.int64)
            new = {i: None for i in range(n)}
            for i, e in state.items():
                new[i] = {}
                for key, val in e.items():
                    if key == "step" or _spec.SLOT[key].shape == "blocks":
                        continue
                    a, dt = val
                    p = self._params[i]
                    b = np.empty_like(p, dtype=V.storage_dtype(dt))
                    same = a.ndim < 2 or V.order_of(a) == V.order_of(p)
                    if dt == "int8" and a.dtype == np.uint8 and same:  # codes and scales
                        b[...] = a
                        new[i][_spec.SCALE_SLOT[key]] = e[_spec.SCALE_SLOT[key]][0].copy()
                    elif dt == "int8":  # full precision into 8-bit state, or codes in
                        # the other memory order (blocks follow it): by value
                        from .reference import dequantize_blockwise, quantize_blockwise
                        qmap = updates[self._group_of[i]].get(
                            "quant_map", self.param_groups[self._group_of[i]].get(
                                "quant_map", _spec.OPTION["quant_map"].default))
                        if a.dtype == np.uint8:
                            a = dequantize_blockwise(a, e[_spec.SCALE_SLOT[key]][0],
                                                     key == "exp_avg", _spec.QUANT_MAPS[qmap])
                        w = np.empty_like(p, dtype=np.float32)
                        w[...] = a.astype(np.float32)   # the parameter's memory order
                        codes, scales = quantize_blockwise(w, key == "exp_avg",
                                                           _spec.QUANT_MAPS[qmap])
                        b[...] = codes
                        new[i][_spec.SCALE_SLOT[key]] = scales
                    else:  # converted to the slot's dtype by value
                        b[...] = a.astype(b.dtype)
                    new[i][key] = b
                steps[i] = int(e["step"])
            # Every buffer exists; nothing below can fail.
            self._engine.set_states(new)
            self._engine.set_steps(steps)
            for g, h in zip(self.param_groups, updates):
                for syn in _spec.SYNONYMS:
                    g.pop(syn, None)
                g.update(h)
            self._maps = [g.get("quant_map", _spec.OPTION["quant_map"].default)
                          for g in self.param_groups]

    # ------------------------------------------------------------------
    # pickle and copy

    def _snapshot(self):
        engine = self._engine
        return {"defaults": self.defaults, "param_groups": self.param_groups,
                "maps": list(self._maps), "steps": engine.steps.copy(),
                "state": [engine.get_state(i) for i in range(len(self._params))]}

    def __getstate__(self):
        """Parameters, groups, steps and state (live arrays, which pickle
        writes out); never the lock or the engine."""
        with _Locked(self):
            return self._snapshot()

    def __setstate__(self, d):
        self.defaults = d["defaults"]
        self.last_step = None
        self.param_groups = []
        self._params, self._names, self._group_of, self._group_params = [], None, [], []
        self._maps = []  # per group: the quant_map its 8-bit codes index
        for g in d["param_groups"]:
            self._add_group(g)
        if "maps" in d:  # the maps the codes index (older pickles: the groups')
            self._maps = list(d["maps"])
        self._lock = threading.Lock()
        self._scheduling = None
        self._engine = self._Engine(self._params, self._group_of)
        _LIVE[id(self)] = self
        self._engine.set_states(dict(enumerate(d["state"])))
        self._engine.set_steps(np.asarray(d["steps"], dtype=np.int64))

    def __copy__(self):
        """A second handle on the same optimizer: the same groups, state,
        engine and lock, so the two never step one state unguarded (as a
        shallow copy of a torch optimizer shares its state).  The handles
        share one attribute dict, so what one rebinds (the engine after
        add_param_group, the maps, last_step) the other sees.  Use
        ``copy.deepcopy`` for an independent optimizer."""
        new = type(self).__new__(type(self))
        new.__dict__ = self.__dict__
        _LIVE[id(new)] = new   # (it may outlive self)
        return new

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        with _Locked(self):  # no step may run while the arrays are copied
            d = copy.deepcopy(self._snapshot(), memo)
        new.__setstate__(d)
        return new

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(k for k in g if k not in ("params", "param_names")):
                lines.append(f"    {k}: {g[k]!r}")
        lines.append(")")
        return "\n".join(lines)
