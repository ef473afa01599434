"""Timing helpers shared by ``python -m adamc`` and ``bench/compare.py``.

Contenders are timed in interleaved rounds (A B C, A B C, ...) so that
machine noise hits all of them alike, and the median of the rounds is
reported.  Speed is only ever reported, never asserted.
"""

from __future__ import annotations

import statistics
import time


def adam_bytes(n, itemsize, amsgrad=False):
    """Bytes an Adam step must move: read p, g, m, v (+vmax), write p, m, v (+vmax)."""
    return n * itemsize * (9 if amsgrad else 7)


def calibrate(fn, target=0.02):
    """How many calls of fn take about ``target`` seconds (at least 1)."""
    fn()
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target / 4 or reps >= 1 << 20:
            return max(1, int(reps * target / max(dt, 1e-9)))
        reps *= 4


def interleaved(contenders, rounds=5, target=0.02, pause=0.0):
    """Median seconds per call of each contender, timed round-robin.

    Parameters
    ----------
    contenders : dict name -> zero-argument callable
    rounds : int
        Rounds; each times every contender once (``reps`` calls each).
    target : float
        Seconds each contender's batch of calls should take.
    pause : float
        Sleep between contenders, so that another runtime's spinning worker
        threads (OpenMP, torch) go idle before the next one is timed.
    """
    reps = {name: calibrate(fn, target) for name, fn in contenders.items()}
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            if pause:
                time.sleep(pause)
            r = reps[name]
            t0 = time.perf_counter()
            for _ in range(r):
                fn()
            samples[name].append((time.perf_counter() - t0) / r)
    return {name: statistics.median(s) for name, s in samples.items()}


def fmt_time(sec):
    if sec < 1e-3:
        return f"{sec * 1e6:8.1f} us"
    if sec < 1:
        return f"{sec * 1e3:8.2f} ms"
    return f"{sec:8.2f} s "


def fmt_size(n):
    """1000 -> '1e3', 50_000_000 -> '5e7', 1234 -> '1234'."""
    e = len(str(n)) - 1
    if n >= 1000 and n % 10**e == 0:
        return f"{n // 10**e}e{e}"
    return str(n)
