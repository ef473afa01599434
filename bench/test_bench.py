"""pytest-benchmark suite: ``python -m pytest bench/`` (``--benchmark-only`` optional).

Parametrized over dtype x size (1e3 .. 5e7) x layout (one buffer, a
transformer-shaped list of ~100 tensors, 500 tiny tensors), every contender
of ``adamc._bench.CONTENDERS`` that is installed (torch columns only with
torch), grouped per case so pytest-benchmark prints them side by side.
The roofline probe is in every group: divide by it for the fraction of
memory bandwidth.  Timings are reported, never asserted.
"""

import numpy as np
import pytest

from adamc import _bench

pytest.importorskip("pytest_benchmark")

SIZES = [10**3, 10**5, 10**6, 10**7, 5 * 10**7]
CASES = [("one", dt, n) for dt in ("float32", "float64") for n in SIZES] + [
    ("transformer", "float32", None), ("transformer", "float64", None),
    ("tiny", "float32", None), ("tiny", "float64", None)]
# Slow baselines stop where one step would take seconds.
LIMITS = {"numpy reference": 10**7, "numpy in-place": 5 * 10**7, "python loop": 2_000}


def case_id(case):
    layout, dtype, n = case
    return f"{layout}-{dtype}" + (f"-{_bench.fmt_size(n)}" if n else "")


@pytest.mark.parametrize("name", _bench.available_contenders())
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_step(benchmark, case, name):
    layout, dtype, n = case
    shapes = _bench.layout_shapes(layout, n)
    total = sum(int(np.prod(s)) for s in shapes)
    maker, limit = _bench.CONTENDERS[name]
    limit = LIMITS.get(name, limit)
    if limit is not None and total > limit:
        pytest.skip(f"{name} is not timed above {limit} elements")
    params, grads = _bench.make_problem(shapes, dtype)
    step = maker(params, grads)
    benchmark.group = case_id(case)
    nbytes = _bench.adam_bytes(total, np.dtype(dtype).itemsize)
    benchmark.extra_info.update(elements=total, tensors=len(shapes), bytes=nbytes)
    if total * np.dtype(dtype).itemsize >= 10**8:
        benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(step)
    if benchmark.stats:  # None under --benchmark-disable (a one-call smoke run)
        benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats["median"] / 1e9, 2)


# 8-bit state (issue 13) beside the float32-state step, grouped per case.
STATE_CASES = [("one", 10**6), ("one", 10**7), ("transformer", None)]


@pytest.mark.parametrize("state", ["float32", "int8"])
@pytest.mark.parametrize("case", STATE_CASES, ids=lambda c: c[0] + (
    f"-{_bench.fmt_size(c[1])}" if c[1] else ""))
def test_state_dtype(benchmark, case, state):
    import adamc
    layout, n = case
    shapes = _bench.layout_shapes(layout, n)
    params, grads = _bench.make_problem(shapes, "float32")
    opt = adamc.Adam(params, lr=1e-4, state_dtype=state)
    opt.step(grads)
    benchmark.group = f"state-{layout}" + (f"-{_bench.fmt_size(n)}" if n else "")
    benchmark.extra_info.update(state_bytes=opt.state_nbytes())
    benchmark(lambda: opt.step(grads))
