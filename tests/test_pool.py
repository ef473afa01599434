"""The worker pool (csrc/pool.c) and the tuner (csrc/tune.c).

Every tuning choice (threads, software prefetch, chunk size, online trials)
leaves results bitwise the same; a step finishes without its workers; the
environment variables fix each choice; cpu_info() reports what was chosen.
Scenarios that could deadlock run in a fresh interpreter with a timeout.
Nothing here times anything: speed is measured in bench/train_loop.py.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adamc
from adamc import _kernels, reference

from _toolkit import random_array as make_array
from _toolkit import random_like as like

TIMEOUT = 120
THREADS = adamc.cpu_info()["openmp"]   # a build without OpenMP steps serially
POOL = THREADS and sys.platform != "win32"
needs_threads = pytest.mark.skipif(not THREADS, reason="built without threads")
ENV = ("ADAMC_TUNE", "ADAMC_SERIAL_CUTOFF", "ADAMC_PREFETCH", "ADAMC_CHUNK",
       "ADAMC_NUM_THREADS", "OMP_NUM_THREADS")


@pytest.fixture
def clean_tuning(monkeypatch, restore_threads):
    """No tuning variable set, no size class remembered, before and after."""
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    _kernels.tuning_reset()
    yield monkeypatch
    _kernels.pool_hold(False)
    _kernels.pool_stall(0)
    _kernels.tuning_reset()


def problem(rng, dtype):
    """Mixed sizes (chunks cross tensor boundaries mid-tensor), about 1.1
    MiB a stream in the largest tensor: above the prefetch threshold for
    float32 with a large chunk, and for float64 with any."""
    shapes = [(300_001,), (3,), (130, 257), (0,), (65_537,), (1,)]
    base = [make_array(rng, s, dtype, "C") for s in shapes]
    grads = [[like(rng, p) for p in base] for _ in range(3)]
    return base, grads


def run(base, grads, steps=1, **kw):
    ps = [p.copy() for p in base]
    opt = adamc.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=0.01, **kw)
    for _ in range(steps):
        for g in grads:
            opt.step(g)
    return ps, opt


# (threads, ADAMC_PREFETCH, ADAMC_CHUNK, ADAMC_SERIAL_CUTOFF): every fixed choice
FORCED = [
    (1, "0", None, None),
    (1, "4096", None, None),
    (1, "64", None, None),
    (2, "0", "64", "0"),
    (2, "4096", "262144", "0"),
    (2, "1024", "4160", "0"),
    (3, "8192", "100000", "0"),
    (5, "0", None, "0"),
    (2, None, None, "1000000000"),   # serial by the cutoff
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_equal_across_every_forced_choice(rng, dtype, clean_tuning, variant):
    base, grads = problem(rng, dtype)
    results = []
    for threads, pf, chunk, cutoff in FORCED:
        for name, value in (("ADAMC_PREFETCH", pf), ("ADAMC_CHUNK", chunk),
                            ("ADAMC_SERIAL_CUTOFF", cutoff)):
            if value is None:
                clean_tuning.delenv(name, raising=False)
            else:
                clean_tuning.setenv(name, value)
        adamc.set_num_threads(threads)
        results.append(run(base, grads)[0])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    # and they are Adam: the reference within the variant's rounding
    qs = [p.copy() for p in base]
    r = reference.Adam(qs, lr=1e-2, amsgrad=True, weight_decay=0.01)
    for g in grads:
        r.step(g)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(results[0], qs):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_online_trials_change_no_result(rng, dtype, clean_tuning):
    """Tuning on: the first steps of each size class alternate thread counts
    and prefetch; the trajectory equals the fixed defaults' bit for bit."""
    base, grads = problem(rng, dtype)
    adamc.set_num_threads(2)
    tuned, _ = run(base, grads, steps=20)   # 60 steps: past every class's trial
    info = adamc.cpu_info()["tuning"]
    assert info["classes"], info
    assert any("median_seconds" in c for c in info["classes"]), info
    clean_tuning.setenv("ADAMC_TUNE", "0")
    fixed, _ = run(base, grads, steps=20)
    for a, b in zip(tuned, fixed):
        np.testing.assert_array_equal(a, b)


@needs_threads
def test_cpu_info_reports_choices_and_reasons(rng, clean_tuning):
    n = 1 << 20   # work 2^20: a thread trial (with 2 threads) and a prefetch trial
    p = rng.standard_normal(n).astype(np.float32)
    g = like(rng, p)
    adamc.set_num_threads(2)
    opt = adamc.Adam([p])
    for _ in range(3):
        opt.step([g])
    (row,) = adamc.cpu_info()["tuning"]["classes"]
    assert row["work"] == (1 << 20, 1 << 21)
    assert "while the trial runs" in row["why"] and "chosen" in row
    assert row["trial_running"] is True
    # one thread is the configuration to beat (config 0); prefetch is trialed
    # only where a range reaches 1 MiB a stream: the serial step's 4 MiB
    # buffer, not a parallel step's chunks (2^16 elements)
    assert row["configs"] == ["1 thread, prefetch 4096 B ahead", "1 thread, no prefetch",
                              "all threads (2 now)"]
    rounds = 12   # a thread choice is trialed: 12 timed steps per configuration
    for _ in range(2 + rounds * len(row["configs"])):
        opt.step([g])
    (row,) = adamc.cpu_info()["tuning"]["classes"]
    assert row["steps_seen"] == 3 + 2 + rounds * len(row["configs"])
    assert row["chosen"] in row["configs"] and row["trial_running"] is False
    assert set(row["median_seconds"]) == set(row["configs"])
    assert set(row["mean_seconds"]) == set(row["configs"])
    if "stopped early" in row["why"]:   # (a busy host: two stalled steps)
        assert row["chosen"].startswith("1 thread")
    else:
        assert all(t > 0 for t in row["median_seconds"].values())
        assert (row["why"].startswith("one thread, the configuration to beat")
                or "faster than 1 thread" in row["why"]), row["why"]


@needs_threads
def test_prefetch_is_not_trialed_where_no_range_reaches_its_threshold(rng, clean_tuning):
    """Work of 2^19 (above the prefetch trials' 2^18), but in tensors of
    2^17 float32 elements (512 KiB a stream): no range can reach the
    kernels' 1 MiB threshold, so one thread has nothing to trial."""
    ps = [rng.standard_normal(1 << 17).astype(np.float32) for _ in range(4)]
    gs = [like(rng, p) for p in ps]
    adamc.set_num_threads(1)
    opt = adamc.Adam(ps)
    for _ in range(12):
        opt.step(gs)
    assert adamc.cpu_info()["tuning"]["classes"] == []
    big = rng.standard_normal(1 << 19).astype(np.float32)   # one 2 MiB stream: trialed
    opt = adamc.Adam([big])
    for _ in range(3):
        opt.step([like(rng, big)])
    (row,) = adamc.cpu_info()["tuning"]["classes"]
    assert row["configs"] == ["prefetch 4096 B ahead", "no prefetch", "prefetch 16384 B ahead"]


@pytest.mark.skipif(not POOL, reason="no worker pool in this build")
def test_stalled_steps_end_a_thread_trial_with_one_thread(rng, clean_tuning):
    """Each worker stalls 20 ms in its first chunk (as if preempted there by
    another process): the caller waits for it, two such steps end the trial
    at once with one thread, and the results are one thread's."""
    p = rng.standard_normal(100_000).astype(np.float32)   # work in the thread band
    q = p.copy()
    g = like(rng, p)
    adamc.set_num_threads(2)
    opt = adamc.Adam([p])
    _kernels.pool_stall(20_000)
    for _ in range(12):
        opt.step([g])
    _kernels.pool_stall(0)
    (row,) = adamc.cpu_info()["tuning"]["classes"]
    assert row["chosen"] == "1 thread" and "stopped early" in row["why"], row
    # after 2 untimed steps, ABBA: 1 thread, all, all (stall 2): decided at step 5
    assert row["steps_seen"] == 12
    adamc.set_num_threads(1)
    ref = adamc.Adam([q])
    for _ in range(12):
        ref.step([g])
    np.testing.assert_array_equal(p, q)


@needs_threads
def test_environment_fixes_each_choice(rng, clean_tuning):
    n = 1 << 20
    p = rng.standard_normal(n).astype(np.float32)
    g = like(rng, p)
    adamc.set_num_threads(2)
    clean_tuning.setenv("ADAMC_PREFETCH", "0")
    opt = adamc.Adam([p])
    for _ in range(12):
        opt.step([g])
    info = adamc.cpu_info()["tuning"]
    assert info["fixed_by_environment"] == {"ADAMC_PREFETCH": 0}
    (row,) = info["classes"]
    assert row["configs"] == ["1 thread, no prefetch", "all threads (2 now)"]
    clean_tuning.setenv("ADAMC_SERIAL_CUTOFF", "0")
    _kernels.tuning_reset()
    for _ in range(12):
        opt.step([g])
    assert adamc.cpu_info()["tuning"]["classes"] == []   # nothing left to trial
    clean_tuning.setenv("ADAMC_TUNE", "0")
    clean_tuning.delenv("ADAMC_SERIAL_CUTOFF")
    clean_tuning.delenv("ADAMC_PREFETCH")
    for _ in range(12):
        opt.step([g])
    info = adamc.cpu_info()
    assert info["tuning"]["classes"] == []
    assert info["tuning"]["fixed_by_environment"] == {"ADAMC_TUNE": 0}
    assert info["serial_cutoff"] == 131072


def run_py(code, timeout=TIMEOUT, **env):
    full = {k: v for k, v in os.environ.items() if k not in ENV}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.skipif(not POOL, reason="no worker pool in this build")
def test_chunk_variable_decides_whether_the_pool_is_used():
    code = """
        import numpy as np, adamc
        adamc.set_num_threads(2)
        p = np.zeros(400_000, np.float32); o = adamc.Adam([p])
        for _ in range(3): o.step([np.ones_like(p)])
        print(adamc.cpu_info()["pool_workers"])
    """
    # one chunk holds the whole step: nothing to share, no worker started
    assert run_py(code, ADAMC_CHUNK="400000", ADAMC_TUNE="0").split() == ["0"]
    assert run_py(code, ADAMC_CHUNK="4096", ADAMC_TUNE="0").split() == ["1"]


@pytest.mark.skipif(not POOL, reason="no worker pool in this build")
def test_step_finishes_without_its_workers(rng, clean_tuning):
    """Workers held back (as if the OS had not scheduled them): the calling
    thread does every chunk, the step returns, and the workers arriving
    late, after it, find nothing to do and corrupt nothing."""
    base, grads = problem(rng, np.float64)
    clean_tuning.setenv("ADAMC_SERIAL_CUTOFF", "0")
    clean_tuning.setenv("ADAMC_CHUNK", "4096")
    adamc.set_num_threads(1)
    want, _ = run(base, grads, steps=2)
    adamc.set_num_threads(4)
    ps = [p.copy() for p in base]
    opt = adamc.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=0.01)
    _kernels.pool_hold(True)
    try:
        for g in grads:
            opt.step(g)    # would hang if a step waited for its workers
    finally:
        _kernels.pool_hold(False)
    for g in grads:
        opt.step(g)        # workers back, late ones from the held jobs too
    assert adamc.cpu_info()["pool_workers"] >= 3
    for a, b in zip(ps, want):
        np.testing.assert_array_equal(a, b)


STRESS = """
    import random, threading, time, os
    import numpy as np, adamc
    from adamc import _kernels

    def build(seed, n, dtype):
        rng = np.random.default_rng(seed)
        ps = [rng.standard_normal(s).astype(dtype) for s in ((n,), (7, 3), (5000,))]
        gs = [rng.standard_normal(p.shape).astype(dtype) for p in ps]
        return ps, gs

    SIZES = [(k, 30_000 + 70_000 * k, (np.float32, np.float64)[k % 2]) for k in range(6)]
    probs = [build(*s) for s in SIZES]
    opts = [adamc.Adam(ps, lr=1e-3, amsgrad=True) for ps, _ in probs]
    locks = [threading.Lock() for _ in opts]
    counts = [0] * len(opts)
    deadline = time.time() + float(os.environ.get("STRESS_SECONDS", "3"))

    def worker(k):
        rnd = random.Random(k)
        while time.time() < deadline:
            i = rnd.randrange(len(opts))
            r = rnd.random()
            if r < 0.85:
                with locks[i]:
                    opts[i].step(probs[i][1]); counts[i] += 1
            elif r < 0.95:
                adamc.set_num_threads(rnd.choice([1, 2, 3, 8, None]))
            else:
                _kernels.pool_hold(rnd.random() < 0.5)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    _kernels.pool_hold(False)
    adamc.set_num_threads(1)
    ok = True
    for (seed, n, dtype), (ps, _), c in zip(SIZES, probs, counts):
        qs, gs = build(seed, n, dtype)
        o = adamc.Adam(qs, lr=1e-3, amsgrad=True)
        for _ in range(c):
            o.step(gs)
        ok &= all(np.array_equal(a, b) for a, b in zip(ps, qs))
    print(ok, sum(counts))
"""


@pytest.mark.parametrize("env", [{}, {"ADAMC_SERIAL_CUTOFF": "0", "ADAMC_CHUNK": "1024"}])
def test_concurrent_steps_thread_changes_and_late_workers(env):
    """4 Python threads step 6 optimizers (the pool busy: steps run serially)
    while thread counts change and workers are held back at random; every
    optimizer ends where as many serial steps end, and nothing hangs."""
    ok, total = run_py(STRESS, **env).split()
    assert ok == "True" and int(total) > 20


@pytest.mark.skipif(sys.platform == "win32", reason="no fork here; CPU burners via spawn")
def test_oversubscribed_steps_finish_and_agree():
    """Two CPU-bound processes on every core beside a training-like loop
    (matmul, step) with as many adamc threads as CPUs: the loop finishes
    (timeout) with the same result as one thread."""
    code = """
        import multiprocessing as mp, numpy as np, adamc, time

        def burn(stop):
            x = 0
            while not stop.is_set():
                for _ in range(100000): x += 1

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            stop = ctx.Event()
            procs = [ctx.Process(target=burn, args=(stop,)) for _ in range(2)]
            for q in procs: q.start()
            try:
                rng = np.random.default_rng(0)
                a = rng.standard_normal((256, 256)); b = rng.standard_normal((256, 256))
                def train(threads):
                    adamc.set_num_threads(threads)
                    p = np.linspace(-1, 1, 85_000); g = np.cos(np.arange(85_000.0))
                    o = adamc.Adam([p], lr=1e-3)
                    for _ in range(40):
                        a @ b
                        o.step([g])
                    return p
                print(np.array_equal(train(None), train(1)))
            finally:
                stop.set()
                for q in procs: q.join()
    """
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "over.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(code))
        out = subprocess.run([sys.executable, path], capture_output=True, text=True,
                             timeout=TIMEOUT, cwd=d)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["True"]


@needs_threads
def test_thread_choice_is_retried(rng, clean_tuning):
    """A size class's thread choice is tried again after 1024 steps (the
    machine's load may have changed); results stay those of one thread."""
    p = rng.standard_normal(40_000).astype(np.float32)   # work in the thread band
    q = p.copy()
    g = like(rng, p)
    adamc.set_num_threads(2)
    opt = adamc.Adam([p])
    for _ in range(1100):
        opt.step([g])
    (row,) = adamc.cpu_info()["tuning"]["classes"]
    # (a fall back on stalled steps, on a busy host, restarts the interval)
    assert row["steps_seen"] == 1100
    assert row["retrials"] == 1 or row["fallbacks"] >= 1, row
    adamc.set_num_threads(1)
    ref = adamc.Adam([q])
    for _ in range(1100):
        ref.step([g])
    np.testing.assert_array_equal(p, q)


def test_tuning_variables_report_what_is_in_force(clean_tuning):
    """cpu_info()["tuning"] reports the values the kernels read (tune.c's
    rule), and lists the ones set but not taken, where it reported e.g.
    ADAMC_TUNE=00 as fixed while trials ran."""
    for name, raw in (("ADAMC_TUNE", "00"), ("ADAMC_CHUNK", "10"),
                      ("ADAMC_PREFETCH", "99999999"), ("ADAMC_SERIAL_CUTOFF", "1e5"),
                      ("ADAMC_POOL_SPIN_US", "abc")):
        clean_tuning.setenv(name, raw)
        info = adamc.cpu_info()["tuning"]
        assert name not in info["fixed_by_environment"]
        assert info["ignored_by_environment"][name].startswith(f"{raw!r} is not ")
        clean_tuning.delenv(name)
    for name, raw, value in (("ADAMC_TUNE", "0", 0), ("ADAMC_CHUNK", "64", 64),
                             ("ADAMC_PREFETCH", "16777216", 1 << 24),
                             ("ADAMC_SERIAL_CUTOFF", "0", 0), ("ADAMC_POOL_SPIN_US", "5", 5)):
        clean_tuning.setenv(name, raw)
        info = adamc.cpu_info()["tuning"]
        assert info["fixed_by_environment"][name] == value
        assert info["ignored_by_environment"] == {}
        clean_tuning.delenv(name)
