"""adamc steps interleaved with NumPy BLAS calls, as in a training loop.

    python bench/thread_contention.py
    ADAMC_POOL_SPIN_US=1000000 python bench/thread_contention.py   # spinning workers

Prints the step and matmul times with 1 and 2 adamc threads.  With spinning
workers (adamc's pool kept awake by ADAMC_POOL_SPIN_US; or, where steps run
on OpenMP (Windows builds), libgomp's default, which adamc overrides at
import: see src/adamc/_runtime.py) the two thread pools fight for the cores
and both slow down by orders of magnitude on a 2-core machine.
"""
import time

import numpy as np

import adamc

rng = np.random.default_rng(0)
A = rng.standard_normal((256, 64)).astype(np.float32); B = rng.standard_normal((64, 128)).astype(np.float32)
for n in [20_000, 100_000, 1_000_000]:
    p = rng.standard_normal(n).astype(np.float32); g = rng.standard_normal(n).astype(np.float32)
    opt = adamc.Adam([p])
    res = {}
    for th in (1, 2):
        adamc.set_num_threads(th)
        for _ in range(20): A @ B; opt.step([g])
        reps = 300 if n < 10**6 else 60
        ts = tm = 0.0
        for _ in range(reps):
            t0 = time.perf_counter(); A @ B; t1 = time.perf_counter(); opt.step([g]); t2 = time.perf_counter()
            tm += t1 - t0; ts += t2 - t1
        res[th] = (ts / reps * 1e6, tm / reps * 1e6)
    print(f"n={n:>8}: 1 thread step {res[1][0]:8.1f} us (matmul {res[1][1]:7.1f}) | 2 threads step {res[2][0]:8.1f} us (matmul {res[2][1]:7.1f})")
