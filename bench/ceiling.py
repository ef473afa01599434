"""Is a large step bound by memory or by arithmetic?  Compares two ceilings,
in GB/s of Adam's traffic (7 arrays x itemsize per element):

- compute: adamc's step on buffers that stay in each core's L2 cache (256
  KiB per array per thread), so memory costs almost nothing and the
  arithmetic sets the pace; with several threads, the better of the rate
  measured and threads x the one-thread rate;
- memory: the roofline probe (Adam's traffic, trivial arithmetic) on buffers
  far larger than the caches, the faster of its two loops (with and without
  software prefetch).

    python bench/ceiling.py [--rounds 9]

If the compute ceiling is not well above the memory one, a step on large
buffers cannot reach the probe's speed whatever the memory system does.  On
x86 the bound is the floating-point divider: each element needs one
correctly rounded square root and one division, and a core has one divider.
The last column converts the in-cache rate to core cycles per element at the
clock /proc/cpuinfo reports (a VM reports its nominal clock).

The in-cache steps are timed inside _bench.arithmetic_env(): every step
splits across the threads asked for (ADAMC_SERIAL_CUTOFF=0) and the pool's
workers spin between steps (ADAMC_POOL_SPIN_US), so no step pays their
wake-up.  The last line of each row names this host's limit for large
steps: the slower of the two ceilings (bench/ab_probe.py divides by it).
"""

import argparse
import os


import numpy as np  # noqa: E402

import adamc  # noqa: E402
from adamc import _bench, _kernels  # noqa: E402


def buffers(n, dtype, rng):
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 1e-3).astype(dtype)
    return p, g, np.zeros(n, dtype), np.zeros(n, dtype)


def clock_hz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) * 1e6
    except (OSError, ValueError):
        pass
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--large", type=float, default=2e7, help="elements (float64; float32 x2)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    hz = clock_hz()
    cpus = adamc.cpu_info()["available_cpus"]
    print(f"# {_bench.describe_machine()}")
    print(f"{'dtype':>7} {'threads':>7} | {'compute GB/s':>12} {'memory GB/s':>11} | "
          f"{'memory/compute':>14} | cycles/element/core, this host's limit")
    for dtype in ("float32", "float64"):
        item = np.dtype(dtype).itemsize
        large = int(args.large) * (8 // item)   # the same bytes for both dtypes
        cold = [buffers(large, dtype, rng)]
        for threads in sorted({1, cpus}):
            adamc.set_num_threads(threads)
            hot, hot_n = _bench.hot_step(dtype, threads)
            with _bench.arithmetic_env():
                samples = _bench.interleaved_samples(
                    {"hot": hot,
                     "probe": lambda: _kernels.probe_buffers(cold),
                     "plain probe": lambda: _kernels.probe_buffers(cold, False)},
                    rounds=args.rounds, target=0.2)
            t_hot = np.median(samples["hot"])
            if threads == 1:
                one_thread = t_hot / hot_n
            else:
                # each core has its own divider: at least threads x the
                # one-thread rate (a parallel in-cache step also pays the
                # pool's hand-off, which a large step does not)
                t_hot = min(t_hot, one_thread * hot_n / threads)
            t_cold = _bench.probe_time({k: np.median(v) for k, v in samples.items()})
            compute = 7 * item * hot_n / t_hot / 1e9
            memory = 7 * item * large / t_cold / 1e9
            cyc = f"{hz * t_hot / (hot_n // threads):.2f}" if hz else "-"
            bound = "memory" if memory <= compute else "arithmetic"
            print(f"{dtype:>7} {threads:>7} | {compute:>12.1f} {memory:>11.1f} | "
                  f"{memory / compute:>14.2f} | {cyc:>6}  limit {min(memory, compute):.1f} "
                  f"GB/s ({bound})")
            del hot
        del cold
    adamc.set_num_threads(None)


if __name__ == "__main__":
    main()
