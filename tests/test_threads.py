"""Threads: the GIL is released, one optimizer is stepped safely from many
threads, thread counts resolve as documented and never change results."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import adamc
from adamc import reference

from _toolkit import random_array, random_like


def test_gil_released_during_large_step(rng, restore_threads):
    adamc.set_num_threads(1)
    n = 4_000_000
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    opt = adamc.Adam([p])
    opt.step([g])  # allocate state outside the timed window
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    th = threading.Thread(target=spin)
    th.start()
    try:
        time.sleep(0.01)
        inside = 0
        for _ in range(5):
            t0 = time.perf_counter()
            opt.step([g])
            t1 = time.perf_counter()
            margin = 0.2 * (t1 - t0)
            inside += sum(t0 + margin < t < t1 - margin for t in list(ticks))
    finally:
        stop.set()
        th.join()
    # Python code ran in the other thread while the step was in C.
    assert inside > 0


def test_many_threads_one_optimizer(rng):
    """Steps from 4 threads are serialized: the count and the values are those
    of 40 sequential steps with the same gradient."""
    p = random_array(rng, (3000,), np.float64, "C")
    q = p.copy()
    g = random_like(rng, p)
    opt = adamc.Adam([p], lr=1e-3)
    barrier = threading.Barrier(4)
    errors = []

    def worker():
        try:
            barrier.wait()
            for i in range(10):
                opt.step([g])
                if i % 3 == 0:
                    opt.state_dict()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    ref = reference.Adam([q], lr=1e-3)
    for _ in range(40):
        ref.step([g])
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 40
    np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-12)


def test_separate_optimizers_in_threads(rng):
    ps = [random_array(rng, (200_000,), np.float32, "C") for _ in range(3)]
    qs = [p.copy() for p in ps]
    grads = [[random_like(rng, p) for _ in range(5)] for p in ps]
    opts = [adamc.Adam([p]) for p in ps]

    def run(k):
        for g in grads[k]:
            opts[k].step([g])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k in range(3):
        r = adamc.Adam([qs[k]])
        for g in grads[k]:
            r.step([g])
        np.testing.assert_array_equal(ps[k], qs[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_bitwise_same_for_any_thread_count(rng, dtype, restore_threads, variant):
    """Mixed sizes, so thread chunks cross tensor boundaries mid-tensor."""
    shapes = [(70_001,), (3,), (130, 257), (0,), (65_537,), (1,)]
    base = [random_array(rng, s, dtype, "C") for s in shapes]
    grads = [[random_like(rng, p) for p in base] for _ in range(3)]
    results = []
    for n in (1, 2, 3, 5):
        adamc.set_num_threads(n)
        ps = [p.copy() for p in base]
        opt = adamc.Adam(ps, amsgrad=True, weight_decay=0.01)
        for g in grads:
            opt.step(g)
        results.append(ps)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_set_get_num_threads(restore_threads):
    adamc.set_num_threads(3)
    assert adamc.get_num_threads() == 3
    assert adamc.cpu_info()["num_threads"] == 3
    adamc.set_num_threads(None)
    assert adamc.get_num_threads() >= 1
    with pytest.raises(ValueError):
        adamc.set_num_threads(0)
    with pytest.raises(TypeError):
        adamc.set_num_threads(2.0)


def run_py(code, **env):
    full = dict(os.environ)
    for k in ("ADAMC_NUM_THREADS", "OMP_NUM_THREADS"):
        full.pop(k, None)
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                         text=True, timeout=120)
    return out


@pytest.mark.skipif(not adamc.cpu_info()["openmp"], reason="built without OpenMP")
def test_thread_resolution_order():
    code = ("import os, adamc; a = adamc.get_num_threads(); "
            "os.environ['ADAMC_NUM_THREADS'] = '5'; b = adamc.get_num_threads(); "
            "adamc.set_num_threads(2); c = adamc.get_num_threads(); print(a, b, c)")
    out = run_py(code, OMP_NUM_THREADS="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "5", "2"]
    out = run_py("import adamc; print(adamc.get_num_threads(), adamc.cpu_info()['available_cpus'])")
    n, cpus = out.stdout.split()
    assert n == cpus


@pytest.mark.parametrize("code", [
    # a step large enough to go parallel reads the variable...
    "import adamc, numpy as np; adamc.Adam([np.zeros(10**5)]).step([np.ones(10**5)])",
    # ...and so does asking for the thread count (small steps never need it)
    "import adamc; adamc.get_num_threads()",
])
def test_bad_thread_env_is_a_clear_error(code):
    for bad in ("many", "4,2", "99999"):   # (a list is OMP_NUM_THREADS's syntax only)
        out = run_py(code, ADAMC_NUM_THREADS=bad)
        assert out.returncode != 0
        assert f"ADAMC_NUM_THREADS must be a positive integer (1 to 65536), got {bad!r}" \
            in out.stderr


def test_numpy_integers_set_the_thread_count(restore_threads):
    adamc.set_num_threads(np.int64(3))
    assert adamc.get_num_threads() == 3
    with pytest.raises(TypeError, match="n must be an int"):
        adamc.set_num_threads(np.bool_(True))


@pytest.mark.skipif(not adamc.cpu_info()["openmp"], reason="built without OpenMP")
def test_threadpoolctl_limits_apply():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    code = ("import adamc, threadpoolctl\n"
            "with threadpoolctl.threadpool_limits(1, user_api='openmp'):\n"
            "    print(adamc.get_num_threads())\n")
    out = run_py(code, OMP_NUM_THREADS="2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    del threadpoolctl


def test_splitter_covers_large_totals():
    """64-bit element ranges: contiguous, disjoint, covering, without allocating."""
    from adamc import _kernels

    for total in (0, 1, 63, 64, 65, 2**31 + 7, 2**32 + 1, 2**40 + 3, 2**62):
        for nt in (1, 2, 3, 7, 64):
            spans = [_kernels.split(total, nt, t) for t in range(nt)]
            assert spans[0][0] == 0 and spans[-1][1] == total
            for (a, b), (c, d) in zip(spans, spans[1:]):
                assert b == c and a <= b
            if total >= 64 * nt:
                sizes = [b - a for a, b in spans]
                assert max(sizes) - min(sizes) < 2 * 64  # a block, plus a partial last one


def test_threads_under_load_random_operations():
    """4 Python threads, 3 optimizers each (two shared, one private), random
    steps / state_dict snapshots (round trips on the private one) / thread-count changes
    for a bounded time.  Each step uses its optimizer's fixed gradient, so
    any interleaving must end where that many sequential steps end; a lost
    update, a torn step or a deadlock (subprocess timeout) fails the test."""
    code = textwrap.dedent('''
        import random, threading, time
        import numpy as np, adamc

        def build(seed, n):
            rng = np.random.default_rng(seed)
            ps = [rng.standard_normal(s).astype(np.float32) for s in ((n,), (7, 3), ())]
            gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
            return ps, gs

        shared = [build(k, 50_000) for k in range(2)]
        shared_opts = [adamc.Adam(ps, lr=1e-3, amsgrad=True) for ps, _ in shared]
        private = [build(10 + k, 20_000) for k in range(4)]
        private_opts = [adamc.AdamW(ps, lr=1e-3) for ps, _ in private]
        counts = {}
        lock = threading.Lock()
        deadline = time.time() + 3.0

        def worker(k):
            rnd = random.Random(k)
            mine = [(shared_opts[0], shared[0][1]), (shared_opts[1], shared[1][1]),
                    (private_opts[k], private[k][1])]
            while time.time() < deadline:
                opt, grads = rnd.choice(mine)
                op = rnd.random()
                if op < 0.8:
                    opt.step(grads)
                    with lock:
                        counts[id(opt)] = counts.get(id(opt), 0) + 1
                elif op < 0.9:
                    sd = opt.state_dict()
                    # a snapshot is never torn: every parameter at the same step
                    steps = {e["step"] for e in sd["state"].values()}
                    assert len(steps) <= 1, steps
                    if opt is private_opts[k]:
                        # a round trip is only atomic where no other thread steps
                        opt.load_state_dict(sd)
                else:
                    adamc.set_num_threads(rnd.choice([1, 2, None]))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        adamc.set_num_threads(None)

        def replay(seed, n, cls, kw, steps):
            ps, gs = build(seed, n)
            o = cls(ps, lr=1e-3, **kw)
            for _ in range(steps):
                o.step(gs)
            return ps

        ok = True
        for k, (opt, (ps, _)) in enumerate(zip(shared_opts, shared)):
            want = replay(k, 50_000, adamc.Adam, {"amsgrad": True}, counts.get(id(opt), 0))
            ok &= all(np.array_equal(a, b) for a, b in zip(ps, want))
            ok &= opt.state_dict()["state"][0]["step"] == counts.get(id(opt), 0)
        for k, (opt, (ps, _)) in enumerate(zip(private_opts, private)):
            want = replay(10 + k, 20_000, adamc.AdamW, {}, counts.get(id(opt), 0))
            ok &= all(np.array_equal(a, b) for a, b in zip(ps, want))
        print(ok, sum(counts.values()))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    ok, total = out.stdout.split()
    assert ok == "True" and int(total) > 50


def test_a_gradient_dropped_by_another_thread_during_a_step_stays_alive():
    """Thread A steps with a gradient only the list it passes holds; thread
    B replaces the list's item meanwhile.  The step (GIL released) keeps its
    own references: the old 40 MB array (mmapped: freed means unmapped) was
    freed under it, a segfault."""
    code = textwrap.dedent("""
        import threading, time
        import numpy as np, adamc
        n = 10_000_000
        p = np.zeros(n, np.float32)
        grads = [np.ones(n, np.float32)]
        opt = adamc.Adam([p])
        stop = False
        def swap():
            while not stop:
                grads[0] = np.full(n, 1.0, np.float32)
        t = threading.Thread(target=swap)
        t.start()
        end = time.time() + 2.0
        while time.time() < end:
            opt.step(grads)
        stop = True
        t.join()
        print("ok", np.isfinite(p).all())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split() == ["ok", "True"]
