"""What tests/_mpi_worker.py's scenarios share: the processes, the
parameters, every process's gradients and their sum (the oracle's), and the
checks that an error or a result is the same on every process."""

import zlib

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
RANK, N = comm.Get_rank(), comm.Get_size()


def make_params(spec, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for shape, dt, order in spec:
        a = rng.standard_normal(shape).astype(np.float32).astype(dt)
        out.append(np.asarray(a, order=order).copy(order=order))
    return out


def grads_for(params, step, rank, nones=()):
    rng = np.random.default_rng([7, step, rank])
    gs = []
    for i, p in enumerate(params):
        if i in nones:
            gs.append(None)
            continue
        g = rng.standard_normal(p.shape).astype(np.float32).astype(p.dtype)
        gs.append(np.asarray(g, order="F" if (p.flags.f_contiguous and not
                                              p.flags.c_contiguous) else "C"))
    return gs


def rdtype(p):
    return np.float64 if p.dtype == np.float64 else np.float32


def summed(params, step, nproc, average=True, nones=()):
    """The rank-order sum (then / N) of every process's gradients: the
    gradients deterministic=True must equal."""
    per = [grads_for(params, step, r, nones) for r in range(nproc)]
    out = []
    for i, p in enumerate(params):
        if i in nones:
            out.append(None)
            continue
        acc = per[0][i].astype(rdtype(p))
        for r in range(1, nproc):
            acc = acc + per[r][i].astype(rdtype(p))
        if average:
            acc = acc / nproc
        out.append(acc)
    return out


def same_everywhere(arrays, c=comm):
    h = 0
    for a in arrays:
        h = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).tobytes(), h)
    hs = c.allgather(h)
    assert len(set(hs)) == 1, f"parameters differ between processes: {hs}"


SPEC = [((7, 5), np.float32, "C"), ((13,), np.float32, "C"), ((4, 6), np.float32, "F"),
        ((1,), np.float32, "C"), ((3, 3), np.float64, "C"), ((11,), np.float64, "C")]

def WHERE(r):
    """The words naming the failing process in an agreed error (none alone)."""
    return [f"(raised on process {r} of {N})"] if N > 1 else []


SCHEDULE = lambda t: 0.05 / t  # noqa: E731


def groups_of(ps, cfg):
    if not cfg.get("groups"):
        return ps
    return [{"params": ps[:2], "lr": 0.03},
            {"params": ps[2:4], "weight_decay": 0.1, "amsgrad": True},
            {"params": ps[4:], "eps_mode": "hat", "maximize": True}]


def expect_error(fn, cls, *words):
    try:
        fn()
    except cls as e:
        msg = str(e)
    else:
        raise AssertionError(f"no {cls.__name__}")
    for w in words:
        assert w in msg, (w, msg)
    msgs = comm.allgather(msg)
    assert len(set(msgs)) == 1, msgs
    return msg
