"""The body of tests/test_distributed.py: run under ``mpiexec -n N python -m
mpi4py tests/_mpi_worker.py SCENARIO DIR`` (python -m mpi4py: an uncaught
exception on one process aborts the job instead of leaving the others
waiting).  Every process computes every process's gradients (seeded by step
and rank), so each can step a single-process adamc.Adam on the summed
gradients as the oracle.  Prints "OK <scenario>" on process 0 when every
check passed."""

import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import adamc
import adamc.distributed as D

from _mpi_common import (N, RANK, SCHEDULE, SPEC, WHERE, comm, expect_error, grads_for,
                         groups_of, make_params, same_everywhere, summed)
from _mpi_errors import (check_agreement, check_errors, check_fuzz_findings,
                         check_fuzz_findings_2)


CONFIGS = [
    dict(),
    dict(groups=True),
    dict(variant="AdamW", kw=dict(lr=0.02, weight_decay=0.05, amsgrad=True)),
    dict(kw=dict(lr=SCHEDULE, betas=(0.8, 0.99), eps_mode="inside", bias_correction=False)),
    dict(average=False, kw=dict(lr=0.01)),
    dict(nones={1: (3,)}),  # parameter 3 skipped at step 1 on every process
]


def run_config(cfg, deterministic, steps=3):
    variant = cfg.get("variant", "Adam")
    kw = cfg.get("kw", {})
    average = cfg.get("average", True)
    ps = make_params(SPEC)
    ref = [p.copy(order="K") for p in ps]
    opt = getattr(D, variant)(groups_of(ps, cfg), comm=comm, average=average,
                              deterministic=deterministic, **kw)
    single = getattr(adamc, variant)(groups_of(ref, cfg), **kw)
    for t in range(steps):
        nones = cfg.get("nones", {}).get(t, ())
        opt.step(grads_for(ps, t, RANK, nones))
        single.step(summed(ref, t, N, average, nones))
    same_everywhere(ps)
    for a, b in zip(ps, ref):
        if deterministic:
            assert np.array_equal(a, b), (cfg, np.max(np.abs(a - b)))
        else:
            tol = 1e-5 if a.dtype == np.float32 else 1e-12
            assert np.allclose(a, b, rtol=tol, atol=tol), (cfg, np.max(np.abs(a - b)))
    sd, sr = opt.state_dict(), single.state_dict()
    assert sorted(sd["state"]) == sorted(sr["state"])
    for i, e in sr["state"].items():
        assert sd["state"][i]["step"] == e["step"]
        for k, v in e.items():
            if k != "step" and deterministic:
                assert np.array_equal(sd["state"][i][k], v), (cfg, i, k)
    return opt, single


def check_equivalence():
    for cfg in CONFIGS:
        for det in (True, False):
            run_config(cfg, det)


def check_named_and_tiny():
    """Named parameters (mappings), a parameter of 2 elements with more
    processes than elements (a process owns nothing), one of 0 elements."""
    rng = np.random.default_rng(3)
    arrays = {"w": rng.standard_normal(2).astype(np.float32),
              "e": np.zeros(0, dtype=np.float32),
              "b": rng.standard_normal(3)}
    ref = {k: v.copy() for k, v in arrays.items()}
    opt = D.Adam(arrays, lr=0.1, deterministic=True)
    single = adamc.Adam(ref, lr=0.1)
    names = list(arrays)
    for t in range(3):
        ps = [arrays[k] for k in names]
        opt.step(dict(zip(names, grads_for(ps, t, RANK))))
        single.step(dict(zip(names, summed([ref[k] for k in names], t, N))))
    same_everywhere(list(arrays.values()))
    assert all(np.array_equal(arrays[k], ref[k]) for k in names)
    sd, sr = opt.state_dict(), single.state_dict()
    assert sd["param_groups"][0]["param_names"] == names
    for i, e in sr["state"].items():
        for k, v in e.items():
            assert np.array_equal(np.asarray(sd["state"][i][k]), np.asarray(v)), (i, k)
    gs = dict(zip(names, grads_for([arrays[k] for k in names], 5, RANK)))
    if RANK == 0:
        gs["b"] = gs["b"].astype(np.float32).reshape(3, 1)
    expect_error(lambda: opt.step(gs), ValueError, "grads['b']", *WHERE(0))


def flat_views(arrays, dtype):
    """Copies of ``arrays`` as consecutive views of one flat buffer."""
    total = sum(a.size for a in arrays)
    base = np.empty(total, dtype=dtype)
    out, off = [], 0
    for a in arrays:
        v = base[off:off + a.size].reshape(a.shape, order=_order(a))
        v[...] = a
        out.append(v)
        off += a.size
    return out


def _order(a):
    return "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"


def check_flat():
    """Parameters and gradients that are views of one flat buffer per dtype:
    the step reduce-scatters from them and, when N divides their count,
    gathers into them in place (no copies); still the oracle's result.  Mixed
    with a bucket that is not flat."""
    base = make_params(SPEC + [((5,), np.float32, "C")])
    for extra in (True, False):  # 78 float32 elements (N = 1, 2, 3 divide it), or 73
        first = base[:4] + base[6:] if extra else base[:4]
        for det in (False, True):
            ps = flat_views(first, np.float32) + [a.copy() for a in base[4:6]]
            ref = [p.copy(order="K") for p in ps]
            opt = D.Adam(ps, lr=0.01, deterministic=det, amsgrad=True)
            single = adamc.Adam(ref, lr=0.01, amsgrad=True)
            for t in range(3):
                gs = grads_for(ps, t, RANK)
                k = len(first)
                gs = flat_views(gs[:k], np.float32) + gs[k:]
                opt.step(gs, max_grad_norm=5.0)
                single.step(summed(ref, t, N), max_grad_norm=5.0)
            same_everywhere(ps)
            for a, b in zip(ps, ref):
                assert np.allclose(a, b, rtol=1e-6, atol=1e-7), (det, np.max(np.abs(a - b)))
            if N > 1:
                b0 = opt._buckets[0]
                assert (b0.params is not None) == extra and opt._buckets[1].params is None
                # the flat buffer: only to send (deterministic) or to gather (N does not
                # divide the count)
                assert (b0.grad is None) == (extra and not det), (extra, det)


def check_mixed_precision():
    try:  # bfloat16 only where the optional ml_dtypes imports
        import ml_dtypes
        bf16 = [((10,), ml_dtypes.bfloat16, "C")]
    except ImportError:
        bf16 = []
    spec = [((9, 4), np.float16, "C")] + bf16 + [((5,), np.float32, "C")]
    ps = make_params(spec)
    ref = [p.copy() for p in ps]
    opt = D.Adam(ps, lr=0.01, deterministic=True)
    single = adamc.Adam(ref, lr=0.01)
    for t in range(3):
        opt.step(grads_for(ps, t, RANK))
        single.step(summed(ref, t, N))
    same_everywhere(ps)
    for a, b in zip(ps, ref):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint16) if a.itemsize == 2
                                                     else a, b.view(np.uint16)
                                                     if b.itemsize == 2 else b)
    sd = opt.state_dict()
    assert sd["state"][0]["master_param"].dtype == np.float32
    assert np.array_equal(sd["state"][0]["master_param"],
                          single.state_dict()["state"][0]["master_param"])


def check_fused():
    ps = make_params(SPEC)
    ref = [p.copy(order="K") for p in ps]
    opt = D.Adam(ps, lr=0.01, deterministic=True)
    single = adamc.Adam(ref, lr=0.01)
    for t in range(3):
        opt.step(grads_for(ps, t, RANK), grad_scale=4.0, max_grad_norm=0.5)
        single.step(summed(ref, t, N), grad_scale=4.0, max_grad_norm=0.5)
        assert opt.last_step.factor < 0.25  # the clipping is active
        # deterministic: the whole summed gradient's norm, in one process's order
        assert opt.last_step.norm == single.last_step.norm
    same_everywhere(ps)
    for a, b in zip(ps, ref):  # bitwise, clipped steps included
        assert a.tobytes() == b.tobytes(), np.max(np.abs(a - b))
    # the default (reduce-scatter) mode: each process's shard norm, summed by
    # MPI: the same to a few ulps
    ps2 = make_params(SPEC)
    ref2 = [p.copy(order="K") for p in ps2]
    opt2, single2 = D.Adam(ps2, lr=0.01), adamc.Adam(ref2, lr=0.01)
    for t in range(3):
        opt2.step(grads_for(ps2, t, RANK), grad_scale=4.0, max_grad_norm=0.5)
        single2.step(summed(ref2, t, N), grad_scale=4.0, max_grad_norm=0.5)
        assert abs(opt2.last_step.norm - single2.last_step.norm) <= 1e-6 * single2.last_step.norm
    same_everywhere(ps2)
    for a, b in zip(ps2, ref2):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6), np.max(np.abs(a - b))
    # one process's Inf makes every process skip (skip_nonfinite)
    before = [p.copy(order="K") for p in ps]
    gs = grads_for(ps, 9, RANK)
    if RANK == N - 1:
        gs[2][0, 0] = np.inf
    opt.step(gs, skip_nonfinite=True)
    assert opt.last_step.skipped
    assert all(np.array_equal(a, b) for a, b in zip(ps, before))
    assert opt.state_dict()["state"][0]["step"] == 3


def check_memory():
    ps = make_params([((1000,), np.float32, "C"), ((37, 11), np.float32, "C"),
                      ((101,), np.float64, "C")])
    opt = D.Adam(ps, lr=0.01, amsgrad=True)
    single = adamc.Adam([p.copy() for p in ps], lr=0.01, amsgrad=True)
    opt.step(grads_for(ps, 0, RANK))
    single.step(grads_for(ps, 0, 0))
    full = sum(a.nbytes for e in single.state_dict()["state"].values()
               for k, a in e.items() if k != "step")
    mine = opt.state_nbytes()
    total = comm.allreduce(mine)
    assert total == full, (total, full)
    assert mine <= full / N + 3 * 8 * N, (mine, full, N)  # 1/N, up to padding


def check_save(directory):
    """Run 1 (N=2): steps, saves; records the parameters and the oracle."""
    ps = make_params(SPEC)
    ref = [p.copy(order="K") for p in ps]
    kw = dict(lr=0.02, amsgrad=True, weight_decay=0.01)
    opt = D.AdamW(groups_of(ps, dict(groups=True)), deterministic=True, **kw)
    single = adamc.AdamW(groups_of(ref, dict(groups=True)), **kw)
    for t in range(3):
        opt.step(grads_for(ps, t, RANK))
        single.step(summed(ref, t, N))
    path = os.path.join(directory, "ckpt.npz")
    opt.save_state(path)
    if RANK == 0:
        np.savez(os.path.join(directory, "params.npz"), *ps)
        fresh = adamc.AdamW(groups_of([p.copy(order="K") for p in ps], dict(groups=True)),
                            **kw)
        adamc.load_state(fresh, path)  # a single process reads the sharded run's file
        a, b = fresh.state_dict(), single.state_dict()
        for i, e in b["state"].items():
            for k, v in e.items():
                assert np.array_equal(np.asarray(a["state"][i][k]), np.asarray(v)), (i, k)
    comm.Barrier()


def check_load(directory):
    """Run 2 (N=3, or any): loads run 1's file, continues, equals the oracle;
    then the same with a single process (COMM_SELF), and a single-process
    checkpoint loaded by the sharded optimizer."""
    path = os.path.join(directory, "ckpt.npz")
    kw = dict(lr=0.02, amsgrad=True, weight_decay=0.01)
    with np.load(os.path.join(directory, "params.npz")) as f:
        saved = [f[f"arr_{k}"] for k in range(len(SPEC))]

    def fresh(c=None, distributed=True):
        ps = [np.asarray(a, order=o).copy(order=o) for a, (_, _, o) in zip(saved, SPEC)]
        if distributed:
            return ps, D.AdamW(groups_of(ps, dict(groups=True)), comm=c, deterministic=True,
                               **kw)
        return ps, adamc.AdamW(groups_of(ps, dict(groups=True)), **kw)

    ps, opt = fresh(comm)
    opt.load_state(path)
    ref, single = fresh(distributed=False)
    adamc.load_state(single, path)
    for t in range(3, 5):
        opt.step(grads_for(ps, t, RANK))
        single.step(summed(ref, t, N))
    same_everywhere(ps)
    assert all(np.array_equal(a, b) for a, b in zip(ps, ref))
    # N=1 (each process alone on COMM_SELF) reads the same file
    ps1, opt1 = fresh(MPI.COMM_SELF)
    opt1.load_state(path)
    ref1, single1 = fresh(distributed=False)
    adamc.load_state(single1, path)
    for t in range(3, 5):
        g = summed(ps1, t, 1)
        opt1.step(g)
        single1.step(g)
    assert all(np.array_equal(a, b) for a, b in zip(ps1, ref1))
    # a single process's checkpoint, loaded by every process, and the state_dict path
    path2 = os.path.join(directory, "single.npz")
    if RANK == 0:
        adamc.save_state(single, path2)
    comm.Barrier()
    ps2, opt2 = fresh(comm)
    opt2.load_state(path2)
    ps3, opt3 = fresh(comm)
    opt3.load_state_dict(single.state_dict())
    for o, q in ((opt2, ps2), (opt3, ps3)):
        sd, sr = o.state_dict(), single.state_dict()
        for i, e in sr["state"].items():
            for k, v in e.items():
                assert np.array_equal(np.asarray(sd["state"][i][k]), np.asarray(v)), (i, k)
    # a schedule: stored as a marker, re-supplied by every process's optimizer
    spath = os.path.join(directory, "sched.npz")
    ps4 = make_params(SPEC)
    opt4 = D.Adam(ps4, lr=SCHEDULE, deterministic=True)
    for t in range(2):
        opt4.step(grads_for(ps4, t, RANK))
    opt4.save_state(spath)
    ps5 = [p.copy(order="K") for p in ps4]
    ref5 = [p.copy(order="K") for p in ps4]
    opt5 = D.Adam(ps5, lr=SCHEDULE, deterministic=True)
    opt5.load_state(spath)
    single5 = adamc.Adam(ref5, lr=SCHEDULE)
    adamc.load_state(single5, spath)
    for t in range(2, 4):
        opt5.step(grads_for(ps5, t, RANK))
        single5.step(summed(ref5, t, N))
    assert all(np.array_equal(a, b) for a, b in zip(ps5, ref5))
    assert opt5.param_groups[0]["lr"] is SCHEDULE
    expect_error(lambda: D.Adam(make_params(SPEC), lr=0.1).load_state(spath), ValueError,
                 "schedule", *WHERE(0))
    # a bad file: every process raises the same error, nothing changes
    bad = os.path.join(directory, "bad.npz")
    if RANK == 0:
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        with open(bad, "wb") as f:
            f.write(data)
    comm.Barrier()
    before = opt2.state_dict()
    expect_error(lambda: opt2.load_state(bad), ValueError, bad)
    after = opt2.state_dict()
    for i, e in before["state"].items():
        for k, v in e.items():
            assert np.array_equal(np.asarray(after["state"][i][k]), np.asarray(v))


def check_kill(directory):
    """Steps, saves a checkpoint, then the last process kills itself while
    the others are in a step: mpiexec must end the job (the test checks that
    it returns, non-zero, within its timeout, and the checkpoint loads)."""
    ps = make_params(SPEC)
    opt = D.Adam(ps, lr=0.01)
    for t in range(2):
        opt.step(grads_for(ps, t, RANK))
    opt.save_state(os.path.join(directory, "ckpt.npz"))
    comm.Barrier()
    if RANK == 0:
        print("SAVED", flush=True)
    if RANK == N - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    for t in range(2, 1000):  # the others wait in the step's collectives
        opt.step(grads_for(ps, t, RANK))


def check_abort(directory):
    """A failure after the processes agreed to step (here an injected
    MemoryError on the last process, inside the step's exchange): that
    process calls MPI_Abort and the job ends, while the others wait in a
    collective call."""
    ps = make_params(SPEC)
    opt = D.Adam(ps, lr=0.01)
    opt.step(grads_for(ps, 0, RANK))
    if RANK == N - 1:
        def fail(*args):
            raise MemoryError("injected")
        opt._step = fail
    opt.step(grads_for(ps, 1, RANK))
    opt.step(grads_for(ps, 2, RANK))


SCENARIOS = {
    "main": lambda d: (check_equivalence(), check_named_and_tiny(), check_flat(),
                       check_mixed_precision(),
                       check_fused(),
                       check_errors(), check_agreement(), check_fuzz_findings(),
                       check_fuzz_findings_2(),
                       check_memory()),
    "save": check_save,
    "load": check_load,
    "kill": check_kill,
    "abort": check_abort,
}

if __name__ == "__main__":
    scenario, directory = sys.argv[1], sys.argv[2]
    SCENARIOS[scenario](directory)
    comm.Barrier()
    if RANK == 0:
        print(f"OK {scenario} N={N}", flush=True)
