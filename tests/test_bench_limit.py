"""bench helpers for "x the limit": the limit is the slower of memory and
arithmetic, and the arithmetic environment is restored afterwards."""

import os

import numpy as np

from adamc import _bench


def test_limit_is_the_slower_ceiling():
    # probe 10 ms for 1e6 elements; in-cache step 2 ms for 1e5 -> 20 ms for 1e6
    assert _bench.limit_time(0.010, 10**6, 0.002, 10**5) == (0.020, "arithmetic")
    assert _bench.limit_time(0.030, 10**6, 0.002, 10**5) == (0.030, "memory")


def test_arithmetic_env_sets_and_restores(monkeypatch):
    monkeypatch.setenv("ADAMC_SERIAL_CUTOFF", "123")
    monkeypatch.delenv("ADAMC_POOL_SPIN_US", raising=False)
    with _bench.arithmetic_env():
        assert os.environ["ADAMC_SERIAL_CUTOFF"] == "0"
        assert int(os.environ["ADAMC_POOL_SPIN_US"]) > 0
    assert os.environ["ADAMC_SERIAL_CUTOFF"] == "123"
    assert "ADAMC_POOL_SPIN_US" not in os.environ


def test_hot_step_fits_each_threads_l2():
    for dtype in ("float32", "float64"):
        step, n = _bench.hot_step(dtype, 2)
        assert n * np.dtype(dtype).itemsize == 2 * 256 * 1024
        with _bench.arithmetic_env():
            step()
