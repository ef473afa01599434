"""Data-parallel Adam/AdamW with sharded optimizer state over MPI (ZeRO stage 1).

Every process holds the whole model and computes gradients on its own part of
the batch; ``step(grads)`` sums (or averages) them across processes and leaves
every process's parameter arrays identical, bit for bit.  The optimizer state
is sharded as in ZeRO stage 1 (Rajbhandari et al., SC 2020): the parameters
of each dtype are laid end to end (in parameter order, each in its memory
order) in one flat *bucket*; process ``r`` of ``N`` owns the contiguous slice
``[r*S, (r+1)*S)`` of it (``S = ceil(n / N)``, the last slice padded), keeps
the moments of that slice only and steps only it.  One step is, per bucket:

1. the local gradients copied into one flat buffer, a reduce-scatter of it
   (``MPI_Reduce_scatter_block``; with ``deterministic=True`` an all-to-all
   of the raw gradients and a sum in rank order on each owner), divided by
   ``N`` when ``average``;
2. the owned slice stepped by an ordinary :class:`adamc.Adam` whose
   parameters are 1-D views of the owned parts of the caller's arrays (the
   compiled kernel, every option; state only for those views);
3. one all-gather of the parameters (``MPI_Allgather`` in place), copied into
   the caller's arrays.

Before any data moves, every process checks its inputs and the processes
agree (one ``MPI_Allreduce``): a bad input on any process makes every
process raise the same error, naming the process it came from.  A failure
after that point (out of memory, a signal) cannot be agreed on; the process
then calls ``MPI_Abort``, which ends the job instead of leaving the others
waiting.  The design, the cost model and measurements: docs/distributed.md.

mpi4py is imported when an optimizer is built, never by ``import adamc``.
"""

from __future__ import annotations

import os
import pickle
import secrets
import sys
import threading
import time
import zlib

import numpy as np

from . import _kernels, _spec, checkpoint
from . import _validation as V
from ._fused import fused_factor
from .optim import Adam as _Adam
from .optim import AdamW as _AdamW

__all__ = ["Adam", "AdamW"]

_INSTALL = ('adamc.distributed needs mpi4py and an MPI library: pip install "adamc[mpi]" '
            "(installs mpi4py and the mpich wheel), or pip install mpi4py against your "
            "cluster's MPI")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"{_INSTALL} ({e})") from None
    return MPI


def _order(a):
    """The order in which a's elements lie in memory: 'F' only for an
    F-contiguous array that is not also C-contiguous."""
    return "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"


def _flat(a):
    """A 1-D view of contiguous array a, in memory order (an ndarray, also
    for a subclass such as np.matrix, which stays 2-D when reshaped)."""
    return np.asarray(a).reshape(-1, order=_order(a))


def _root(a):
    """The ndarray that owns a's memory (the end of its chain of bases)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _run(arrays, dtype):
    """A 1-D view of ``dtype`` over ``arrays`` if they lie end to end in one
    buffer, in this order, each in its memory order (as a model whose
    parameters or gradients are views of one flat array does); else None."""
    if not arrays or any(a.dtype != dtype for a in arrays):
        return None
    root = _root(arrays[0])
    if not (root.flags.c_contiguous or root.flags.f_contiguous) or any(
            _root(a) is not root for a in arrays):
        return None
    base = root.__array_interface__["data"][0]
    start = arrays[0].__array_interface__["data"][0]
    pos = start
    for a in arrays:
        if a.__array_interface__["data"][0] != pos and a.size:
            return None
        pos += a.nbytes
    if (start - base) % dtype.itemsize or pos > base + root.nbytes:
        return None
    raw = _flat(root).view(np.uint8)
    return raw[start - base:pos - base].view(dtype)


class _Bucket:
    """The parameters of one dtype, end to end: ``members`` is a list of
    (parameter index, offset, size); process r owns [r*S, (r+1)*S)."""

    def __init__(self, dtype, members, size):
        self.dtype = dtype                       # the parameters' dtype
        # Gradients are summed in float64 for float64 parameters, else in float32
        # (16-bit gradients widen exactly; MPI has no 16-bit sum).
        self.rdtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
        self.members = members
        self.offset = {i: off for i, off, _ in members}
        self.n = sum(m[2] for m in members)
        self.S = -(-self.n // size)              # ceil(n / N)
        self.size = size
        self.grad = self.recv = self.shard = self.gather = None   # made on first use
        self.small = None     # an S-element shard, for gradients reduced from where they lie
        self.params = None    # the parameters, if they lie end to end (_run) and N divides
                              # their count: gathered in place
        # what MPI's vector collectives take: each process's [lo, hi) of the bucket
        self.counts = [self.owned(r)[1] - self.owned(r)[0] for r in range(size)]
        self.displs = [self.owned(r)[0] for r in range(size)]

    def owned(self, r):
        """[lo, hi) of the bucket that process r owns."""
        return min(r * self.S, self.n), min((r + 1) * self.S, self.n)

    def pieces(self, r):
        """[(parameter index, lo, hi)]: the parts of parameters (in their flat
        memory order) that process r owns, in bucket order."""
        a, b = self.owned(r)
        out = []
        for i, off, n in self.members:
            lo, hi = max(a, off), min(b, off + n)
            if lo < hi:
                out.append((i, lo - off, hi - off))
        return out

    def buffers(self, deterministic):
        """One flat buffer per bucket, N*S gradient elements, serves the whole
        step: the local gradients go in, the reduce-scatter leaves this
        process's summed shard in its first S elements (in place), and the
        all-gather then brings the parameters back through the same bytes
        (a parameter is never wider than its gradient's sum).  With
        ``deterministic``, the all-to-all needs a second one to receive in."""
        if self.grad is None:
            total = self.S * self.size
            self.grad = np.zeros(total, dtype=self.rdtype)
            self.recv = np.empty(total, dtype=self.rdtype) if deterministic else None
            self.shard = self.grad[:self.S]
            self.gather = self.grad.view(np.uint8)[:total * self.dtype.itemsize].view(
                self.dtype)

    def nbytes(self):
        return sum(a.nbytes for a in (self.grad, self.recv, self.small) if a is not None)


class _Scheduled:
    """The inner optimizer's lr for one group: the schedule's values, called
    and checked on every process before the step (so that a bad value is
    agreed on, not found by one process in the middle of a step)."""

    def __init__(self, table, gi):
        self.table, self.gi = table, gi

    def __call__(self, t):
        return self.table[(self.gi, t)]


class Adam:
    _variant = "Adam"
    _Single = _Adam

    __doc__ = f"""Adam over MPI processes with sharded state (ZeRO stage 1).

    Parameters
    ----------
    params, lr, betas, ... :
        As for :class:`adamc.Adam`, the same on every process (checked: the
        processes agree on the parameters' shapes, dtypes and groups, and on
        every hyperparameter at every step).  The parameters' values are
        set to process 0's at construction (as torch's
        DistributedDataParallel does), so processes that initialised them
        differently still train one model.
    comm : mpi4py.MPI.Intracomm, optional
        The processes that train together; default ``MPI.COMM_WORLD``.
    average : bool, default True
        Average the gradients across processes; False sums them.
    deterministic : bool, default False
        Sum the gradients in rank order (an all-to-all of the raw gradients,
        the same bytes on the wire as the reduce-scatter, N times the shard's
        receive buffer): the step is then bitwise equal to
        :class:`adamc.Adam` given ``((g_0 + g_1) + ...) / N`` computed in
        NumPy, for any N.  Otherwise MPI's reduction order decides the last
        bits of the sum.

    Notes
    -----
    ``step``, ``save_state``, ``load_state``, ``state_dict`` and
    ``load_state_dict`` are collective: every process calls them, in the
    same order.  The gradient of each parameter is summed in float64 for
    float64 parameters and in float32 otherwise (a float64 gradient of a
    float32 parameter is rounded to float32 first).  ``grad_scale``,
    ``max_grad_norm`` and ``skip_nonfinite`` use the global norm of the
    summed gradients (the shards' sums of squares added across processes;
    with ``deterministic``, the whole summed gradient's norm in one
    process's order, so clipped steps are bitwise too).
    Stochastic rounding works, with the seed of process 0, but draws
    different random numbers than a single process would (so
    ``deterministic=True`` refuses it); 8-bit state is refused.

    Beyond :class:`adamc.Adam`'s attributes: ``comm``, ``rank``, ``size``;
    ``state_nbytes()`` and ``buffer_nbytes()`` (this process's memory);
    ``last_timing``, the seconds of the last step's parts ("check" (with
    the agreement's wait), "pack", "reduce", "step", "gather", "unpack").

{_spec.parameters_doc("Adam")}
    """

    def __init__(self, params, *args, comm=None, average=True, deterministic=False,
                 **kwargs):
        MPI = _mpi()
        self._MPI = MPI
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py.MPI.Intracomm such as MPI.COMM_WORLD, "
                            f"got {type(comm).__name__}")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._lock = threading.Lock()
        name = type(self).__name__

        def build():
            single = self._Single(params, *args, **kwargs)
            V.check_shardable([V.group_values(g, f"param_groups[{gi}]")
                               for gi, g in enumerate(single.param_groups)],
                              deterministic, f"{name}()")
            for label, v in (("average", average), ("deterministic", deterministic)):
                V.check_bool(v, label, f"{name}()")
            sig = [self._variant, bool(average), bool(deterministic),
                   single._names, [len(g["params"]) for g in single.param_groups]]
            sig += [(p.shape, str(p.dtype), _order(p)) for p in single._params]
            return single, [zlib.crc32(repr(sig).encode())]

        self._single = self._agree(build, lambda k: (
            "the processes disagree about the parameters (shapes, dtypes, memory orders, "
            "groups, names) or the average/deterministic options; every process must "
            "build the optimizer with the same structure"), 1)
        single = self._single
        self.average, self.deterministic = bool(average), bool(deterministic)
        self.param_groups = single.param_groups
        self.defaults = single.defaults
        self.last_step = None
        self.last_timing = None
        self._params, self._names = single._params, single._names
        self._group_of = single._group_of
        if self.size > 1:  # one seed for stochastic rounding: process 0's
            seeds = comm.bcast([g.get("seed") for g in self.param_groups], root=0)
            for g, s in zip(self.param_groups, seeds):
                g["seed"] = s
            # one model: process 0's values (as torch's DistributedDataParallel
            # broadcasts them), whatever each process initialised
            for p in self._params:
                if p.size:
                    comm.Bcast([_flat(p).view(np.uint8), MPI.BYTE], root=0)
        n = len(self._params)
        # what each parameter was built as: checked at every step, as the engine
        # checks its own (the inner engine sees only views of the parameters)
        self._layouts = _kernels.param_layouts(self._params)
        # the memory a step writes (the parameters: fixed, by that check), which
        # no gradient may share, as the engine checks (at N = 1 the inner
        # engine reads the caller's gradients while it writes the parameters)
        self._spans = V.written_spans(self._params, [None] * len(self._params), self._names)
        self._steps = np.zeros(n, dtype=np.int64)
        self._had = [dict() for _ in range(n)]   # {slot: dtype} each parameter has
        # (value identities, hypers, signature, the values: kept alive, so that
        # no identity is reused by a new value while the cache holds it)
        self._hyper_cache = None
        self._lr_table = {}
        # buckets, one per dtype, in order of first appearance
        order, by = [], {}
        for i, p in enumerate(self._params):
            key = V.dtype_name(p.dtype)
            if key not in by:
                by[key] = []
                order.append((key, p.dtype))
            by[key].append(i)
        self._buckets = []
        for key, dt in order:
            members, off = [], 0
            for i in by[key]:
                members.append((i, off, self._params[i].size))
                off += self._params[i].size
            b = _Bucket(dt, members, self.size)
            if self.size > 1 and b.n % self.size == 0:
                # Gathered in place with MPI_Allgather (equal blocks, no padding); not
                # MPI_Allgatherv, which MPICH 5.0 runs 200x slower on an oversubscribed
                # host (docs/distributed.md).
                b.params = _run([self._params[i] for i in by[key]], np.dtype(dt))
                if b.params is not None and not b.params.flags.writeable:
                    b.params = None  # views of a frozen buffer: written through the views
            self._buckets.append(b)
        self._build_inner()

    # ------------------------------------------------------------------
    # agreement

    def _agree(self, work, what=None, k=0, root_only=False):
        """Run ``work()`` (on every process, or on process 0 only with
        root_only), then agree in one MPI_Allreduce: if it raised anywhere,
        every process raises the first failing process's error.  ``work``
        returns (result, [k ints]); the ints must be equal on every process,
        else every process raises ValueError (``what(index)`` says why)."""
        err, result, vals = None, None, [0] * k
        if not root_only or self.rank == 0:
            try:
                result, vals = work()
            except Exception as e:  # noqa: BLE001 - every error is reported on all processes
                err = e
        if self.size == 1:
            if err is not None:
                raise err
            return result
        MPI = self._MPI
        buf = np.zeros(1 + 2 * k, dtype=np.int64)
        buf[0] = self.size - self.rank if err is not None else 0
        if err is None and k and not root_only:
            vals = np.asarray(vals, dtype=np.int64)
            buf[1:1 + k] = vals
            buf[1 + k:] = -vals
        elif k:  # a failed process (or one that did no work) does not vote
            buf[1:] = np.iinfo(np.int64).min
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
        if buf[0]:
            first = self.size - int(buf[0])
            payload = None
            if self.rank == first:
                try:   # (a class defined in a function cannot be sent)
                    payload = (pickle.loads(pickle.dumps(type(err))), str(err))
                except Exception:  # noqa: BLE001 - sent by name instead
                    payload = (None, f"{type(err).__qualname__}: {err}")
            cls, msg = self.comm.bcast(payload, root=first)
            msg = f"{msg} (raised on process {first} of {self.size})"
            try:
                e = cls(msg) if cls is not None else RuntimeError(msg)
            except Exception:  # noqa: BLE001 - a class that takes other arguments
                e = RuntimeError(f"{cls.__name__}: {msg}")
            raise e
        if k and not root_only and not np.array_equal(buf[1:1 + k], -buf[1 + k:]):
            bad = int(np.flatnonzero(buf[1:1 + k] != -buf[1 + k:])[0])
            raise ValueError(what(bad))
        return result

    # ------------------------------------------------------------------
    # the inner, single-process optimizer over the owned views

    def _build_inner(self):
        self._pieces = []      # inner index -> (parameter index, lo, hi, bucket, shard offset)
        per_group = {}
        for b in self._buckets:
            start = b.owned(self.rank)[0]
            offsets = {i: off for i, off, _ in b.members}
            for i, lo, hi in b.pieces(self.rank):
                per_group.setdefault(self._group_of[i], []).append(
                    (i, lo, hi, b, offsets[i] + lo - start))
        groups, self._inner_of, self._inner_pieces = [], [], []
        for gi in sorted(per_group):
            pcs = per_group[gi]
            self._pieces.extend(pcs)
            og = self.param_groups[gi]
            d = {k: v for k, v in og.items() if k not in ("params", "param_names")}
            if callable(d["lr"]):
                d["lr"] = _Scheduled(self._lr_table, gi)
            h = V.group_values(og, f"param_groups[{gi}]")   # (checked by the constructor)
            if h.stochastic_rounding and not self._rounds(pcs, h):
                d["stochastic_rounding"] = False
            d["params"] = [_flat(self._params[i])[lo:hi] for i, lo, hi, _, _ in pcs]
            groups.append(d)
            self._inner_of.append(gi)
            self._inner_pieces.append(pcs)
        self._inner = _Adam(groups) if groups else None

    def _rounds(self, pcs, h):
        """Whether a piece of an inner group (its pieces ``pcs``) is rounded to 16 bits under the
        (checked) hyperparameters h of its outer group.  Where none is, the
        inner group runs without stochastic rounding: it would change none
        of its values, and the engine refuses it there (the outer group,
        checked whole, has a 16-bit rounding to do on some process)."""
        return any(V.rounds_to_16_bits(V.dtype_name(self._params[i].dtype), h,
                                       self._params[i].size)
                   for i in {pc[0] for pc in pcs})

    def _draw_seeds(self, hypers):
        """Stochastic rounding turned on by a group edit with seed=None: one
        seed per group, process 0's, recorded in the group (as adamc.Adam
        records the one it draws)."""
        need = [gi for gi, h in enumerate(hypers) if h.stochastic_rounding and h.seed is None]
        if need:
            seeds = [secrets.randbits(63) for _ in need]
            if self.size > 1:   # (every process needs them: they agreed on the hypers)
                seeds = self.comm.bcast(seeds, root=0)
            for gi, seed in zip(need, seeds):
                self.param_groups[gi]["seed"] = seed

    def _sync_groups(self, hypers):
        """Copy the (checked) hyperparameters of the user's groups into the
        inner groups; the same objects, so the inner engine sees a change
        only where the user made one."""
        if self._inner is None:
            return
        for j, (ig, gi) in enumerate(zip(self._inner.param_groups, self._inner_of)):
            og = self.param_groups[gi]
            for k, v in og.items():
                if k in ("params", "param_names"):
                    continue
                if k == "stochastic_rounding" and hypers[gi].stochastic_rounding and \
                        not self._rounds(self._inner_pieces[j], hypers[gi]):
                    v = False
                if k == "lr" and callable(v):
                    if not isinstance(ig.get("lr"), _Scheduled):
                        ig["lr"] = _Scheduled(self._lr_table, gi)
                elif ig.get(k, self) is not v:
                    ig[k] = v
            for k in [k for k in ig if k not in og and k != "params"]:
                del ig[k]  # a synonym the user removed

    # ------------------------------------------------------------------
    # step

    def _hypers(self):
        """Every group's checked Hypers and their signature, recomputed only
        when a value object changed (as the engine does)."""
        groups = self.param_groups
        # a value by identity; a list (params, or betas edited in place) by
        # its items' identities, as the engine keys them (_kernels._key_of)
        ids = (id(groups),) + tuple(
            tuple((k, tuple(map(id, v)) if type(v) is list else id(v)) for k, v in g.items())
            if isinstance(g, dict) else id(g) for g in groups)
        if self._hyper_cache is not None and self._hyper_cache[0] == ids:
            return self._hyper_cache[1], self._hyper_cache[2]
        alive = [groups] + [[(v, list(v)) if type(v) is list else v for v in g.values()]
                            if isinstance(g, dict) else g for g in groups]
        V.check_structure(self.param_groups, self._single._group_params, self._params)
        hypers = []
        for gi, g in enumerate(self.param_groups):
            where = f"param_groups[{gi}]"
            h = V.group_values(g, where)
            idx = [i for i, j in enumerate(self._group_of) if j == gi]
            V.check_group_storage(h, [self._params[i] for i in idx],
                                  [V.param_label(self._names, i) for i in idx], where)
            hypers.append(h)
        V.check_shardable(hypers, self.deterministic, "step()")
        for i, had in enumerate(self._had):  # storage options fixed once state exists
            if had:
                want = _spec.slots_for(hypers[self._group_of[i]],
                                       V.dtype_name(self._params[i].dtype))
                V.check_state_fits({s: np.empty(0, V.storage_dtype(d)) for s, d in had.items()},
                                   want, V.param_label(self._names, i))
        self._had_current = np.zeros(len(self._params), dtype=bool)
        sig = repr([h._replace(lr="schedule" if callable(h.lr) else h.lr) for h in hypers])
        self._hyper_cache = (ids, hypers, zlib.crc32(sig.encode()), alive)
        return hypers, self._hyper_cache[2]

    def _prepare(self, grads, grad_scale, max_grad_norm, skip_nonfinite):
        """Every check of a step, on this process, changing nothing: returns
        ((gradient list, fused options), [ints the processes must agree on])."""
        fused = V.check_fused(grad_scale, max_grad_norm, skip_nonfinite)
        glist = V.grads_list(grads, len(self._params), self._names)
        hypers, sig = self._hypers()
        # every parameter, also one whose gradient is None: the all-gather
        # writes all of them
        bad = _kernels.first_changed(self._params, self._layouts)
        if bad >= 0:
            V.explain_param(self._params[bad], V.param_label(self._names, bad), None,
                            changed=True)
        for i, (p, g) in enumerate(zip(self._params, glist)):
            if g is None:
                continue
            if not (type(g) is np.ndarray and g.shape == p.shape and g.flags.aligned
                    and g.dtype.isnative and V.dtype_name(g.dtype) is not None
                    and (g.flags.c_contiguous or g.flags.f_contiguous)
                    and (g.size <= 1 or g.flags.c_contiguous == p.flags.c_contiguous)):
                V.explain_grad(p, g, V.param_label(self._names, i),
                               V.grad_label(self._names, i), self._spans)
        bad = _kernels.first_overlap(glist, self._spans)
        if bad >= 0:
            V.explain_grad(self._params[bad], glist[bad], V.param_label(self._names, bad),
                           V.grad_label(self._names, bad), self._spans)
        table = {}
        for i, g in enumerate(glist):
            gi = self._group_of[i]
            lr = self.param_groups[gi]["lr"]
            t = int(self._steps[i]) + 1
            if g is not None and callable(lr) and (gi, t) not in table:
                table[(gi, t)] = V.scheduled_lr(lr, t, f"param_groups[{gi}]")
        sig = zlib.crc32(repr(sorted(table.items())).encode(), sig)
        # where a bucket's gradients lie end to end, it is reduce-scattered from
        # there, else packed: the same MPI call on every process, or they hang
        runs = [None if self.size == 1 or self.deterministic or b.n == 0
                or any(glist[i] is None for i, _, _ in b.members)
                else _run([glist[i] for i, _, _ in b.members], b.rdtype)
                for b in self._buckets]
        skipped = [0 if g is not None else 1 for g in glist]
        return (glist, fused, table, hypers, runs), [
            sig, zlib.crc32(repr(fused).encode()),
            zlib.crc32(bytes(r is not None for r in runs)), *skipped]

    _AGREED = 3   # the ints of _prepare before the per-gradient ones

    def _what(self, k):
        if k == 0:
            return ("the processes disagree about the param groups' hyperparameters (or "
                    "the schedules' values); every process must use the same ones")
        if k == 1:
            return ("the processes disagree about the step's grad_scale, max_grad_norm or "
                    "skip_nonfinite; every process must pass the same ones")
        if k == 2:
            return ("the gradients of one dtype lie end to end in one buffer (views of one "
                    "flat array, in parameter order, in the parameters' dtype or float32) on "
                    "some processes but not on others; pass them the same way everywhere")
        k -= self._AGREED - 1
        label = V.grad_label(self._names, k - 1)
        return (f"{label} is None on some processes but not on others; pass a gradient "
                "(zeros if need be) for the same parameters on every process")

    def step(self, grads=V.NO_GRADS, *, grad_scale=None, max_grad_norm=None,
             skip_nonfinite=False) -> None:
        """Sum or average ``grads`` across processes and update the parameters.

        Collective.  ``grads`` are this process's local gradients, one per
        parameter (or a mapping, as for :meth:`adamc.Adam.step`); ``None``
        skips a parameter and must then be None on every process.
        ``grad_scale``, ``max_grad_norm`` and ``skip_nonfinite`` act as in
        :meth:`adamc.Adam.step` on the summed (averaged) gradients, with
        the global norm across processes.  On return every process's
        parameter arrays are identical, bit for bit.
        """
        with self._lock:
            t0 = time.perf_counter()
            glist, fused, table, hypers, runs = self._agree(
                lambda: self._prepare(grads, grad_scale, max_grad_norm, skip_nonfinite),
                self._what, self._AGREED + len(self._params))
            self._lr_table.clear()
            self._lr_table.update(table)
            self._draw_seeds(hypers)
            self._sync_groups(hypers)
            try:
                self._step(glist, fused, hypers, runs, t0)
            except BaseException as e:
                if self.size == 1:
                    raise
                # The processes agreed to step and some may be inside a collective
                # call now: there is no way back to agreement, so end the job.
                sys.stderr.write(f"adamc.distributed: process {self.rank} of {self.size} "
                                 f"failed during a step ({e!r}); calling MPI_Abort so that "
                                 "no process waits forever\n")
                sys.stderr.flush()
                self.comm.Abort(1)
                raise

    def _step(self, glist, fused, hypers, runs, t0):
        MPI, comm, N = self._MPI, self.comm, self.size
        scale, max_norm, skip = fused
        is_fused = scale is not None or max_norm is not None or skip
        timing = {"check": time.perf_counter() - t0, "pack": 0.0, "reduce": 0.0,
                  "step": 0.0, "gather": 0.0, "unpack": 0.0}
        t = time.perf_counter()
        if N == 1:  # nothing to exchange: the pieces are the whole arrays
            # (the "sum" in its dtype, as N processes hold it: a float64
            # gradient of another parameter rounded to float32)
            glist = [g if g is None or g.dtype != np.float64 or p.dtype == np.float64
                     else g.astype(np.float32, order="K") for g, p in zip(glist, self._params)]
            shard_grads = [None if glist[i] is None else _flat(glist[i])
                           for i, _, _, _, _ in self._pieces]
        else:
            shards = {}
            for b, run in zip(self._buckets, runs):   # (run: agreed in _prepare)
                if b.n == 0:
                    continue
                if run is not None:  # reduce-scatter from where the gradients lie
                    if b.small is None:
                        b.small = np.zeros(b.S, dtype=b.rdtype)
                    t1 = time.perf_counter()
                    comm.Reduce_scatter(run, b.small[:b.counts[self.rank]],
                                        recvcounts=b.counts, op=MPI.SUM)
                    if self.average:
                        np.divide(b.small, N, out=b.small)
                    shards[id(b)] = b.small
                    t = time.perf_counter()
                    timing["reduce"] += t - t1
                    continue
                b.buffers(self.deterministic)
                shards[id(b)] = b.shard
                for i, off, n in b.members:
                    g = glist[i]
                    if g is None:
                        b.grad[off:off + n] = 0
                    else:
                        np.copyto(b.grad[off:off + n], _flat(g), casting="unsafe")
                b.grad[b.n:] = 0  # the padding (the all-gather left parameters there)
                t1 = time.perf_counter()
                timing["pack"] += t1 - t
                if self.deterministic:
                    comm.Alltoall(b.grad, b.recv)
                    rows = b.recv.reshape(N, b.S)
                    np.copyto(b.shard, rows[0])
                    for r in range(1, N):  # rank order, elementwise: reproducible
                        np.add(b.shard, rows[r], out=b.shard)
                else:
                    comm.Reduce_scatter_block(MPI.IN_PLACE, b.grad, op=MPI.SUM)
                if self.average:
                    np.divide(b.shard, N, out=b.shard)
                t = time.perf_counter()
                timing["reduce"] += t - t1
            shard_grads = [None if glist[i] is None else shards[id(b)][s:s + hi - lo]
                           for i, lo, hi, b, s in self._pieces]
        info = None
        if is_fused:
            if N > 1 and self.deterministic:
                # the whole summed gradient on every process, then the norm in
                # the single process's fixed order: bitwise its norm (one more
                # all-gather of gradient bytes, in the mode that favours
                # reproducibility over speed)
                t1 = time.perf_counter()
                whole = self._gathered_grads(glist)
                sumsq = _kernels.grad_sumsq(whole) if whole else 0.0
                t = time.perf_counter()
                timing["reduce"] += t - t1
            else:
                # one process: every gradient, in parameter order, as adamc.Adam
                # sums them (the pieces follow groups and dtypes instead, and
                # the fixed order of the sum is that of its terms)
                mine = ([_flat(g) for g in glist if g is not None] if N == 1
                        else [g for g in shard_grads if g is not None])
                sumsq = _kernels.grad_sumsq(mine) if mine else 0.0
                if N > 1:
                    box = np.array([sumsq])
                    comm.Allreduce(MPI.IN_PLACE, box, op=MPI.SUM)
                    sumsq = float(box[0])
            # (the whole gradient only in deterministic mode: elsewhere an
            # overflowed sum of squares counts as a non-finite gradient)
            info = fused_factor(sumsq, scale, max_norm, skip,
                                whole if N > 1 and self.deterministic else mine if N == 1
                                else ())
            self.last_step = info
            if info.skipped:
                timing["step"] = time.perf_counter() - t
                self.last_timing = timing
                return
        t1 = time.perf_counter()
        if self._inner is not None and any(g is not None for g in shard_grads):
            inner = self._inner
            with inner._lock:
                if info is None:
                    if inner._engine.step(shard_grads, inner.param_groups):
                        inner._step_slowly(shard_grads)
                else:
                    inner._step_factor(shard_grads, info.factor)
        t = time.perf_counter()
        timing["step"] += t - t1
        current = self._had_current
        for i, g in enumerate(glist):
            if g is not None:
                self._steps[i] += 1
                if not current[i]:  # its slots under these hyperparameters, once
                    h = hypers[self._group_of[i]]
                    self._had[i].update(_spec.slots_for(h, V.dtype_name(
                        self._params[i].dtype)))
                    current[i] = True
        if N > 1:
            for b in self._buckets:
                if b.n == 0:
                    continue
                if b.params is not None:  # in place, in the caller's arrays: no copies
                    t1 = time.perf_counter()
                    comm.Allgather(MPI.IN_PLACE, [b.params.view(np.uint8), MPI.BYTE])
                    t = time.perf_counter()
                    timing["gather"] += t - t1
                    continue
                b.buffers(self.deterministic)
                a, z = b.owned(self.rank)
                for i, lo, hi in b.pieces(self.rank):
                    off = b.offset[i]
                    np.copyto(b.gather[off + lo:off + hi], _flat(self._params[i])[lo:hi])
                t1 = time.perf_counter()
                timing["pack"] += t1 - t
                comm.Allgather(MPI.IN_PLACE, [b.gather.view(np.uint8), MPI.BYTE])
                t = time.perf_counter()
                timing["gather"] += t - t1
                for i, off, n in b.members:
                    dst = _flat(self._params[i])
                    for lo, hi in ((off, min(a, off + n)), (max(z, off), off + n)):
                        if lo < hi:
                            np.copyto(dst[lo - off:hi - off], b.gather[lo:hi])
                t1 = time.perf_counter()
                timing["unpack"] += t1 - t
                t = t1
        self.last_timing = timing

    def _gathered_grads(self, glist):
        """Every parameter's summed (or averaged) gradient, whole, in
        parameter order (None ones left out): each bucket's shards gathered
        into its receive buffer, which the rank-order sum has finished with."""
        views = {}
        for b in self._buckets:
            if b.n == 0:   # zero-size parameters only: nothing to gather
                views.update({i: np.zeros(0, dtype=b.rdtype) for i, _, _ in b.members})
                continue
            self.comm.Allgather(b.shard, b.recv)
            for i, off, n in b.members:
                views[i] = b.recv[off:off + n]
        return [views[i] for i, g in enumerate(glist) if g is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Always raises TypeError: adamc holds no gradients to zero (they
        are ``step``'s argument).  Drop the call; a silent no-op would hide a
        ported loop that still expects the optimizer to read ``.grad``."""
        V.no_zero_grad()

    def add_param_group(self, param_group) -> None:
        """Not supported: the shards are cut once, over every parameter."""
        raise ValueError(
            "adamc.distributed.Adam cannot add a param group after construction (its "
            "shards are cut once, over every parameter): build it with all the groups")

    # ------------------------------------------------------------------
    # memory

    def state_nbytes(self) -> int:
        """Bytes of optimizer state (moments, amsgrad's maximum, master
        copies) this process holds: about 1/N of a single process's."""
        if self._inner is None:
            return 0
        eng = self._inner._engine
        return sum(a.nbytes for j in range(len(self._pieces))
                   for a in (eng.get_state(j) or {}).values())

    def buffer_nbytes(self) -> int:
        """Bytes of this process's communication buffer: one flat buffer per
        dtype, the size of all that dtype's gradients (float32 for 16-bit
        ones), padded to a multiple of N; twice that with ``deterministic``."""
        return sum(b.nbytes() for b in self._buckets)

    # ------------------------------------------------------------------
    # state: gathered into (and scattered from) the single-process layout

    def _local_state(self):
        """[(parameter index, lo, hi, {slot: 1-D array})] of this process."""
        if self._inner is None:
            return []
        eng = self._inner._engine
        out = []
        for j, (i, lo, hi, _, _) in enumerate(self._pieces):
            st = eng.get_state(j)
            if st:
                out.append((i, lo, hi, dict(st)))
        return out

    def _assemble(self, parts):
        """The single-process state_dict's "state" from every process's pieces."""
        pieces = {}
        for part in parts:
            for i, lo, hi, st in part:
                pieces.setdefault(i, []).append((lo, hi, st))
        state = {}
        for i, p in enumerate(self._params):
            if self._steps[i] == 0:
                continue
            e = {"step": int(self._steps[i])}
            for slot in _spec.SLOT_NAMES:
                if slot not in self._had[i]:
                    continue
                full = np.empty(p.size, dtype=V.storage_dtype(self._had[i][slot]))
                for lo, hi, st in pieces.get(i, ()):
                    full[lo:hi] = st[slot]
                e[slot] = full.reshape(p.shape, order=_order(p))
            state[i] = e
        return state

    def _groups_dict(self):
        return self._agree(lambda: (self._single.state_dict()["param_groups"], []))

    def state_dict(self) -> dict:
        """The whole optimizer's state_dict, in :meth:`adamc.Adam.state_dict`'s
        layout, on every process (collective; each process holds the whole
        state for a moment: for large models prefer :meth:`save_state`,
        which gathers on process 0 only)."""
        with self._lock:
            groups = self._groups_dict()
            parts = self.comm.allgather(self._local_state()) if self.size > 1 else [
                self._local_state()]
            return {"state": self._assemble(parts), "param_groups": groups}

    def save_state(self, path, *, scaler=None) -> None:
        """Write the whole optimizer's state to ``path`` in the format of
        :func:`adamc.save_state` (collective): the shards are gathered on
        process 0, which writes one file atomically (a temporary file, fsync,
        ``os.replace``), so the previous checkpoint stays intact until the new
        one is complete.  Any error (an unstorable value, a missing
        directory, a full disk) is raised on every process.  A single
        process's :func:`adamc.load_state` reads the file, and so does
        :meth:`load_state` with any number of processes."""
        with self._lock:
            groups = self._groups_dict()
            local = self._local_state()
            parts = self.comm.gather(local, root=0) if self.size > 1 else [local]
            scaler_state = None if scaler is None else scaler.state_dict()

            def write():
                sd = {"state": self._assemble(parts), "param_groups": groups}
                checkpoint._write_state_dict(type(self).__name__, sd, os.fsdecode(os.fspath(path)),
                                             scaler_state)
                return None, []

            self._agree(write, root_only=True)

    def load_state(self, path, *, scaler=None) -> None:
        """Restore the state from a file of :meth:`save_state` or
        :func:`adamc.save_state`, written by any number of processes
        (collective).  Process 0 reads and checks the file whole, as
        :func:`adamc.load_state` does; any problem is raised on every
        process and changes nothing; then each process receives its shard."""
        with self._lock:
            path = os.fsdecode(os.fspath(path))

            def read():
                sd, scaler_state = checkpoint._read_state_dict(path, self.param_groups, scaler)
                try:
                    updates, checked = self._check_state_dict(sd)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"{path}: the checkpoint does not fit this optimizer: {e}") from e
                return (updates, checked, scaler_state), []

            got = self._agree(read, root_only=True)
            if self.rank == 0:
                updates, checked, scaler_state = got
                payloads = [self._pieces_of(checked, r) for r in range(self.size)]
                for u in updates:  # each process keeps its own schedule objects
                    if callable(u.get("lr")):
                        del u["lr"]
                meta = (updates, self._steps_of(checked), scaler_state)
            else:
                payloads = meta = None
            if self.size > 1:
                local = self.comm.scatter(payloads, root=0)
                meta = self.comm.bcast(meta, root=0)
            else:
                local = payloads[0]
            updates, (steps, had), scaler_state = meta
            self._install(updates, steps, had, local)
            if scaler is not None:
                scaler.load_state_dict(scaler_state)

    def load_state_dict(self, state_dict) -> None:
        """Restore a state_dict (of :meth:`state_dict` or of a single-process
        :meth:`adamc.Adam.state_dict`), the same on every process
        (collective; checked whole on every process before anything changes)."""
        with self._lock:
            def check():
                updates, checked = self._check_state_dict(state_dict)
                steps, had = self._steps_of(checked)
                groups = repr([{k: "schedule" if callable(v) else v for k, v in u.items()}
                               for u in updates])
                return (updates, checked, steps, had), [
                    zlib.crc32(repr(sorted(had.items())).encode(),
                               zlib.crc32(steps.tobytes())), zlib.crc32(groups.encode())]

            updates, checked, steps, had = self._agree(check, lambda k: (
                "the processes disagree about the state_dict's "
                f"{'step counts or state slots' if k == 0 else 'param_groups'}; "
                "load_state_dict needs the same state_dict on every process"), 2)
            self._install(updates, steps, had, self._pieces_of(checked, self.rank))

    def _check_state_dict(self, sd):
        """check_state_dict, and the groups it would set checked as the
        constructor checks them (8-bit state, for one, cannot be sharded)."""
        updates, checked = V.check_state_dict(sd, self.param_groups, self._params,
                                              self._names, self._variant)
        V.check_shardable([V.group_values({**g, **u}, f"param_groups[{gi}]")
                           for gi, (g, u) in enumerate(zip(self.param_groups, updates))],
                          self.deterministic, "load_state_dict")
        return updates, checked

    def _steps_of(self, checked):
        steps = np.zeros(len(self._params), dtype=np.int64)
        had = {}
        for i, e in checked.items():
            steps[i] = e["step"]
            had[i] = {k: v[1] for k, v in e.items() if k != "step"}
        return steps, had

    def _pieces_of(self, checked, r):
        """{(parameter index, lo): {"step": t, slot: (1-D array, dtype name)}}
        of process r's pieces, from check_state_dict's entries."""
        out = {}
        for b in self._buckets:
            for i, lo, hi in b.pieces(r):
                e = checked.get(i)
                if e is None:
                    continue
                p = self._params[i]
                d = {"step": e["step"]}
                for k, v in e.items():
                    if k != "step":
                        a, dt = v
                        d[k] = (np.asarray(a).reshape(-1, order=_order(p))[lo:hi], dt)
                out[(i, lo)] = d
        return out

    def _install(self, updates, steps, had, local):
        """Everything is checked: set the groups, step counts and this
        process's state (nothing below depends on input that can be bad)."""
        for g, h in zip(self.param_groups, updates):
            for syn in _spec.SYNONYMS:
                g.pop(syn, None)
            g.update(h)
        self._steps = np.asarray(steps, dtype=np.int64).copy()
        self._had = [dict(had.get(i, {})) for i in range(len(self._params))]
        self._hyper_cache = None
        self._sync_groups([V.group_values(g, f"param_groups[{gi}]")   # (all checked)
                           for gi, g in enumerate(self.param_groups)])
        if self._inner is None:
            return
        state = {}
        for j, (i, lo, hi, _, _) in enumerate(self._pieces):
            e = local.get((i, lo))
            if e is not None:
                state[j] = {"step": e["step"],
                            **{k: v[0] for k, v in e.items() if k != "step"}}
        groups, start = [], 0
        for ig in self._inner.param_groups:
            d = {k: v for k, v in ig.items() if k != "params"}
            d["params"] = list(range(start, start + len(ig["params"])))
            start += len(ig["params"])
            groups.append(d)
        self._inner.load_state_dict({"state": state, "param_groups": groups})

    # ------------------------------------------------------------------

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} of adamc.distributed cannot be pickled or "
                        "copied (it holds an MPI communicator); use state_dict() or "
                        "save_state()")

    def __repr__(self):
        return (f"adamc.distributed.{type(self).__name__}(process {self.rank} of {self.size}, "
                f"average={self.average}, deterministic={self.deterministic})\n"
                + repr(self._single).split("\n", 1)[1])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019) over MPI
    processes, with sharded state: :class:`adamc.AdamW`'s arguments plus
    ``comm``, ``average`` and ``deterministic``; see :class:`Adam`."""

    _variant = "AdamW"
    _Single = _AdamW
