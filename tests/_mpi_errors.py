"""tests/_mpi_worker.py's error scenarios: every process raises the same
clear error, and nothing changes (run under mpiexec by the worker)."""

import numpy as np

import adamc
import adamc.distributed as D
from _mpi_common import N, RANK, SPEC, WHERE, comm, expect_error, grads_for, make_params, \
    same_everywhere, summed


def check_errors():
    ps = make_params(SPEC)
    opt = D.Adam(ps, lr=0.01)
    opt.step(grads_for(ps, 0, RANK))
    before = [p.copy(order="K") for p in ps]
    sd = opt.state_dict()
    # a wrong shape on the last process only: every process raises its message
    gs = grads_for(ps, 1, RANK)
    if RANK == N - 1:
        gs[1] = gs[1][:5]
    expect_error(lambda: opt.step(gs), ValueError, "shape", *WHERE(N - 1))
    # a None on one process only
    gs = grads_for(ps, 1, RANK)
    if RANK == 0:
        gs[4] = None
    if N > 1:
        expect_error(lambda: opt.step(gs), ValueError, "grads[4] is None on some processes")
    # a hyperparameter that differs
    opt.param_groups[0]["lr"] = 0.01 if RANK else 0.02
    if N > 1:
        expect_error(lambda: opt.step(grads_for(ps, 1, RANK)), ValueError, "disagree")
    opt.param_groups[0]["lr"] = 0.01
    # a bad hyperparameter on process 0 only
    opt.param_groups[0]["eps"] = -1.0 if RANK == 0 else 1e-8
    expect_error(lambda: opt.step(grads_for(ps, 1, RANK)), ValueError, "eps", *WHERE(0))
    opt.param_groups[0]["eps"] = 1e-8
    # nothing changed by any of these
    assert all(np.array_equal(a, b) for a, b in zip(ps, before))
    sd2 = opt.state_dict()
    for i, e in sd["state"].items():
        for k, v in e.items():
            assert np.array_equal(np.asarray(v), np.asarray(sd2["state"][i][k]))
    opt.step(grads_for(ps, 1, RANK))  # and it still steps
    same_everywhere(ps)
    # the constructor: different shapes on one process
    spec = list(SPEC)
    if RANK == 1:
        spec[0] = ((7, 6), np.float32, "C")
    if N > 1:
        expect_error(lambda: D.Adam(make_params(spec)), ValueError, "disagree")
    # a bad argument on one process
    expect_error(lambda: D.Adam(make_params(SPEC), lr=-1.0 if RANK == N - 1 else 0.1),
                 ValueError, "lr", *WHERE(N - 1))
    # 8-bit state: its 256-element blocks would not survive the sharding
    expect_error(lambda: D.Adam(make_params([((600,), np.float32, "C")]), state_dtype="int8"),
                 ValueError,
                 "state_dtype='int8'", "sharded")
    # stochastic rounding: refused where bitwise equality to one process is
    # promised, stepped (identically on every process) where it is not
    half = [((40, 9), np.float16, "C")]
    sr = dict(master_weights=False, state_dtype="float16", stochastic_rounding=True)
    expect_error(lambda: D.Adam(make_params(half), deterministic=True, **sr), ValueError,
                 "stochastic_rounding=True", "deterministic=False")
    hp = make_params(half)
    hopt = D.Adam(hp, lr=0.01, **sr)
    hopt.step(grads_for(hp, 0, RANK))
    same_everywhere(hp)
    dopt = D.Adam(hp, lr=0.01, deterministic=True, master_weights=False, state_dtype="float16")
    dopt.param_groups[0]["stochastic_rounding"] = True  # edited later: refused at the step
    before = hp[0].copy()
    expect_error(lambda: dopt.step(grads_for(hp, 1, RANK)), ValueError, "stochastic_rounding")
    assert np.array_equal(hp[0], before)
    # save_state to a directory that does not exist: every process raises
    expect_error(lambda: opt.save_state("/nonexistent-dir/x.npz"), FileNotFoundError,
                 "does not exist")


def check_agreement():
    """Found by a review: what the processes must agree on, or they hung
    (or stepped halves of one parameter with different factors)."""
    ps = make_params([((10,), np.float32, "C"), ((12,), np.float32, "C")])
    opt = D.Adam(ps, lr=0.01)
    opt.step(grads_for(ps, 0, RANK))
    before = [p.copy() for p in ps]
    if N > 1:
        # the fused options differ on one process
        expect_error(lambda: opt.step(grads_for(ps, 1, RANK),
                                      max_grad_norm=1.0 if RANK == 0 else 0.01),
                     ValueError, "grad_scale, max_grad_norm or skip_nonfinite")
        expect_error(lambda: opt.step(grads_for(ps, 1, RANK), skip_nonfinite=RANK == 0),
                     ValueError, "grad_scale, max_grad_norm or skip_nonfinite")
        # gradients as views of one flat array on one process, apart elsewhere
        gs = grads_for(ps, 1, RANK)
        if RANK == 0:
            flat = np.concatenate(gs)
            gs = [flat[:10], flat[10:]]
        expect_error(lambda: opt.step(gs), ValueError, "lie end to end in one buffer")
    assert all(np.array_equal(a, b) for a, b in zip(ps, before))

    # an exception class that cannot be pickled, raised on the last process
    def schedule(t):
        class ScheduleError(Exception):
            pass
        if RANK == N - 1:
            raise ScheduleError("bad schedule")
        return 0.01
    sopt = D.Adam(make_params([((10,), np.float32, "C")]), lr=schedule)
    cls = RuntimeError if N > 1 else Exception
    expect_error(lambda: sopt.step([np.ones(10, np.float32)]), cls, "bad schedule")

    # zero-size parameters the only ones of their dtype, deterministic and fused
    zs = [np.ones(10, np.float32), np.zeros(0, np.float64)]
    zopt = D.Adam(zs, lr=0.1, deterministic=True)
    zopt.step([np.ones(10, np.float32), np.zeros(0, np.float64)], max_grad_norm=1.0)
    assert zopt.last_step.norm == np.sqrt(10.0 * N * N) / (N if zopt.average else 1)
    same_everywhere(zs)

    expect_error(lambda: opt.add_param_group({"params": [np.ones(3, np.float32)]}), ValueError,
                 "cannot add a param group after construction")

    # an 8-bit state_dict: refused whole on every process, nothing changed
    one = adamc.Adam([np.ones(600, np.float32)], state_dtype="int8", min_8bit_size=256)
    one.step([np.ones(600, np.float32)])
    eopt = D.Adam([np.ones(600, np.float32)], lr=0.1)
    eopt.step([np.ones(600, np.float32)])
    sd = eopt.state_dict()
    expect_error(lambda: eopt.load_state_dict(one.state_dict()), ValueError,
                 "state_dtype='int8'", "sharded")
    assert eopt.param_groups[0]["state_dtype"] is None
    eopt.step([np.ones(600, np.float32)])
    assert eopt.state_dict()["state"][0]["step"] == sd["state"][0]["step"] + 1


def check_fuzz_findings():
    """Found by a differential fuzzer of adamc.distributed (2026-12-02)."""
    # stochastic rounding in a group mixing float32 and float16 parameters,
    # where some process's shard holds float32 only (the float16 parameter
    # has one element): that process's inner optimizer refused the option
    # alone, and the job hung (at construction) or aborted (at a step)
    for edited in (False, True):   # (edited: turned on by a group edit before a step)
        ps = make_params([((40,), np.float32, "C"), ((1,), np.float16, "C")])
        ref = ps[0].copy()
        opt = D.Adam(ps, lr=0.01, master_weights=False, seed=7,
                     stochastic_rounding=not edited)
        opt.param_groups[0]["stochastic_rounding"] = True
        opt.step(grads_for(ps, 0, RANK))
        same_everywhere(ps)
        adamc.Adam([ref], lr=0.01).step(summed(ps, 0, N)[:1])
        np.testing.assert_allclose(ps[0], ref, rtol=1e-6, atol=1e-7)  # (not rounded)

    # a parameter made read-only after construction (on the last process):
    # refused on every process, nothing written; the engine's own check
    ps = make_params([((10,), np.float32, "C"), ((7,), np.float32, "C")])
    opt = D.Adam(ps, lr=0.1)
    before = [p.copy() for p in ps]
    if RANK == N - 1:
        ps[1].flags.writeable = False
    expect_error(lambda: opt.step(grads_for(ps, 0, RANK)), ValueError,
                 "params[1] is read-only", *WHERE(N - 1))
    assert all(np.array_equal(a, b) for a, b in zip(ps, before))
    ps[1].flags.writeable = True
    opt.step(grads_for(ps, 0, RANK))
    same_everywhere(ps)
    # views of a flat buffer frozen before construction (the views stay
    # writeable, as adamc.Adam accepts them): the in-place all-gather of
    # a read-only view of the buffer failed and aborted the job
    buf = np.ones(4 * N, np.float32)
    ps = [buf[:2 * N], buf[2 * N:]]
    buf.flags.writeable = False
    ref = [p.copy() for p in ps]
    D.Adam(ps, lr=0.1).step(grads_for(ps, 0, RANK))
    adamc.Adam(ref, lr=0.1).step(summed(ps, 0, N))
    same_everywhere(ps)
    np.testing.assert_allclose(ps[0], ref[0], rtol=1e-6)

    # stochastic rounding turned on by a group edit with seed=None: one seed,
    # process 0's, drawn once and recorded (each process drew its own, anew
    # at every step, and state_dict() recorded None)
    ps = make_params([((30,), np.float16, "C")])
    opt = D.Adam(ps, lr=0.01, master_weights=False)
    opt.param_groups[0]["stochastic_rounding"] = True
    opt.step(grads_for(ps, 0, RANK))
    seed = opt.param_groups[0]["seed"]
    assert isinstance(seed, int) and len(set(comm.allgather(seed))) == 1, seed
    opt.step(grads_for(ps, 1, RANK))
    assert opt.state_dict()["param_groups"][0]["seed"] == seed
    assert opt._inner.param_groups[0]["seed"] == seed
    same_everywhere(ps)

    # np.matrix gradients and parameters (adamc.Adam takes them): separate
    # gradients were refused with a shape message (one process); rows of one
    # matrix that owns its memory were sliced as rows, so the in-place
    # all-gather moved nothing (parameters) or the reduce-scatter aborted
    # (gradients)
    ps = make_params([((3, 4), np.float32, "C"), ((5,), np.float32, "C")])
    ref = [p.copy() for p in ps]
    gs = grads_for(ps, 0, RANK)
    D.Adam(ps, lr=0.1, deterministic=True).step([np.asmatrix(gs[0]), gs[1]])
    adamc.Adam(ref, lr=0.1).step(summed(ps, 0, N))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ps, ref))
    P = np.matrix(np.ones((3, 4 * N), np.float32), copy=True)
    G = np.matrix(np.arange(12 * N, dtype=np.float32).reshape(3, 4 * N) / (RANK + 1), copy=True)
    ps, ref = [P[1:2], P[2:3]], [np.ones((1, 4 * N), np.float32) for _ in range(2)]
    D.Adam(ps, lr=0.1, deterministic=True).step([G[1:2], G[2:3]])
    rows = [sum(np.asarray(G[k:k + 1]) * (RANK + 1) / (r + 1) for r in range(N)) / N
            for k in (1, 2)]   # (every process's rows, summed in rank order)
    adamc.Adam(ref, lr=0.1).step(rows)
    same_everywhere([np.asarray(P)])
    np.testing.assert_allclose(np.asarray(P[1:]), np.concatenate(ref), rtol=1e-6)

    # a parameter whose memory moved (a resize there and back, on the last
    # process): adamc.Adam refuses it; the inner views read freed memory
    ps = make_params([((1000,), np.float32, "C")])
    opt = D.Adam(ps, lr=0.1)
    before = ps[0].__array_interface__["data"][0]
    if RANK == N - 1:
        ps[0].resize(200000, refcheck=False)
        ps[0].resize(1000, refcheck=False)
    if comm.bcast(ps[0].__array_interface__["data"][0] != before, root=N - 1):
        expect_error(lambda: opt.step(grads_for(ps, 0, RANK)), ValueError,
                     "params[0] changed shape, dtype or memory order", *WHERE(N - 1))

    # a load_state_dict whose step counts differ between processes
    ps = make_params([((10,), np.float32, "C")])
    opt = D.Adam(ps, lr=0.1)
    opt.step(grads_for(ps, 0, RANK))
    sd = opt.state_dict()
    if RANK == N - 1:
        sd["state"][0]["step"] = 7
    if N > 1:
        expect_error(lambda: opt.load_state_dict(sd), ValueError, "disagree", "step")
    assert opt.state_dict()["state"][0]["step"] == 1


def check_fuzz_findings_2():
    """Found by a second fuzzer of adamc.distributed (2026-12-02)."""
    # the hyperparameter cache was keyed on the values' ids without holding
    # them: a value assigned twice could reuse a freed id on a process with
    # no piece of the group, which then agreed with stale values ("the
    # processes disagree" at every step)
    a, b = np.ones(10, np.float32), np.ones(10, np.float32)
    opt = D.Adam([{"params": [a]}, {"params": [b]}], lr=0.01)
    opt.step([np.ones(10, np.float32)] * 2)
    for t in range(4):
        opt.param_groups[1]["betas"] = (0.5, 0.9)
        opt.param_groups[1]["betas"] = (0.8 - 0.1 * t, 0.99)
        opt.step([np.ones(10, np.float32)] * 2)
    same_everywhere([a, b])
    # ... nor did it see a list edited in place (betas, or a parameter
    # replaced in params): refused by adamc.Adam, aborted (an invalid betas
    # found by the inner engine mid-step) or ignored (the new parameter)
    opt = D.Adam([a], lr=0.01)
    opt.param_groups[0]["betas"] = [0.9, 0.999]   # (a list: it can change in place)
    opt.step([np.ones(10, np.float32)])
    opt.param_groups[0]["betas"][0] = 2.0 if RANK == N - 1 else 0.9
    expect_error(lambda: opt.step([np.ones(10, np.float32)]), ValueError, "betas",
                 *WHERE(N - 1))
    opt.param_groups[0]["betas"][0] = 0.9
    opt.param_groups[0]["params"][0] = np.ones(10, np.float32)
    expect_error(lambda: opt.step([np.ones(10, np.float32)]), ValueError,
                 "param_groups[0]['params'] was changed")
    opt.param_groups[0]["params"][0] = a

    # parameters initialised differently on each process (a forgotten seed)
    # were silently blended, each process's shard from its own values; they
    # are process 0's at construction, as torch's DDP broadcasts them
    ps = [np.full((3, 5), RANK, np.float32), np.full(4, RANK + 0.5, np.float16)]
    D.Adam(ps, lr=0.1)
    assert np.all(ps[0] == 0) and np.all(ps[1] == np.float16(0.5))

    # a gradient sharing memory with a parameter: refused at N = 1 only
    ps = make_params([((10,), np.float32, "C"), ((6,), np.float32, "C")])
    opt = D.Adam(ps, lr=0.1)
    gs = grads_for(ps, 0, RANK)
    if RANK == N - 1:
        gs[1] = ps[0][:6]
    expect_error(lambda: opt.step(gs), ValueError,
                 "grads[1] shares memory with params[0]", *WHERE(N - 1))

    # one process, deterministic: a float64 gradient of a float32 parameter
    # is rounded to float32 first, as the sum of N processes is (it was not:
    # the clipped step's norm and factor differed from the documented oracle)
    ps = make_params([((1000,), np.float32, "C")])
    ref = [p.copy() for p in ps]
    opt, one = D.Adam(ps, lr=0.1, deterministic=True), adamc.Adam(ref, lr=0.1)
    for t in range(3):
        per = [np.random.default_rng([t, r]).standard_normal(1000) * (1 + 1e-9)
               for r in range(N)]
        opt.step([per[RANK]], max_grad_norm=0.5, grad_scale=3.0)
        acc = per[0].astype(np.float32)
        for r in range(1, N):   # each rounded to float32, summed in rank order
            acc = acc + per[r].astype(np.float32)
        one.step([acc / N], max_grad_norm=0.5, grad_scale=3.0)
        assert opt.last_step == one.last_step, (opt.last_step, one.last_step)
    assert ps[0].tobytes() == ref[0].tobytes()

    # load_state_dict with param_groups that differ on one process: installed
    # (every later step then refused); now an agreed error, nothing changed
    sd = opt.state_dict()
    if RANK == N - 1:
        sd["param_groups"][0]["lr"] = 0.5
    if N > 1:
        expect_error(lambda: opt.load_state_dict(sd), ValueError,
                     "disagree about the state_dict's param_groups")
    assert opt.param_groups[0]["lr"] == 0.1
