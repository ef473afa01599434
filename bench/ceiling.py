"""Is a large step bound by memory or by arithmetic?  Compares two ceilings,
in GB/s of Adam's traffic (7 arrays x itemsize per element):

- compute: adamc's step on buffers that stay in each core's L2 cache (256
  KiB per array per thread), so memory costs almost nothing and the
  arithmetic sets the pace; with several threads, the better of the rate
  measured and threads x the one-thread rate;
- memory: the roofline probe (Adam's traffic, trivial arithmetic) on buffers
  far larger than the caches, the faster of its two loops (with and without
  software prefetch).

    python bench/ceiling.py [--rounds 9] [--force]

If the compute ceiling is not well above the memory one, a step on large
buffers cannot reach the probe's speed whatever the memory system does.  On
x86 the bound is the floating-point divider: each element needs one
correctly rounded square root and one division, and a core has one divider.
The last column converts the in-cache rate to core cycles per element at the
clock /proc/cpuinfo reports (a VM reports its nominal clock).

On a busy host (another process on the cores) the figures are impossible
ones (0.5 GB/s, hundreds of cycles per element): the script then prints
why it thinks so (load average before the run, rounds that differ by more
than 1.5x, figures outside plausible bounds, two threads slower than one)
instead of the table; --force prints the table anyway, marked.

The in-cache steps are timed inside _bench.arithmetic_env(): every step
splits across the threads asked for (ADAMC_SERIAL_CUTOFF=0) and the pool's
workers spin between steps (ADAMC_POOL_SPIN_US), so no step pays their
wake-up.  The last column of each row names this host's limit for large
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


#: Plausible ranges on a quiet machine (GB/s of Adam traffic; core cycles
#: per element of the in-cache step, which is a few on any x86-64 core).
GBS_RANGE = (1.0, 5000.0)
CYCLES_RANGE = (0.2, 50.0)


def measure(args):
    """Rows (dtype, threads, compute GB/s, memory GB/s, cycles or None) and
    the per-round samples of every timing, labelled."""
    rng = np.random.default_rng(0)
    hz = clock_hz()
    cpus = adamc.cpu_info()["available_cpus"]
    rows, samples = [], {}
    for dtype in ("float32", "float64"):
        item = np.dtype(dtype).itemsize
        large = int(args.large) * (8 // item)   # the same bytes for both dtypes
        cold = [buffers(large, dtype, rng)]
        for threads in sorted({1, cpus}):
            adamc.set_num_threads(threads)
            hot, hot_n = _bench.hot_step(dtype, threads)
            with _bench.arithmetic_env():
                got = _bench.interleaved_samples(
                    {"hot": hot,
                     "probe": lambda: _kernels.probe_buffers(cold),
                     "plain probe": lambda: _kernels.probe_buffers(cold, False)},
                    rounds=args.rounds, target=0.2)
            for name, xs in got.items():
                what = "in-cache step" if name == "hot" else name
                samples[f"{dtype}, {threads} thread(s), {what}"] = xs
            t_hot = np.median(got["hot"])
            if threads == 1:
                one_thread = t_hot / hot_n
            else:
                # each core has its own divider: at least threads x the
                # one-thread rate (a parallel in-cache step also pays the
                # pool's hand-off, which a large step does not)
                t_hot = min(t_hot, one_thread * hot_n / threads)
            t_cold = _bench.probe_time({k: np.median(v) for k, v in got.items()})
            compute = 7 * item * hot_n / t_hot / 1e9
            memory = 7 * item * large / t_cold / 1e9
            cyc = hz * t_hot / (hot_n // threads) if hz else None
            rows.append((dtype, threads, compute, memory, cyc))
            del hot
        del cold
    adamc.set_num_threads(None)
    return rows, samples


def reasons(rows, samples, load, cpus):
    """Why these figures cannot be this machine's (see _bench.busy_host_reasons)."""
    bounds = []
    for dtype, threads, compute, memory, cyc in rows:
        at = f"{dtype}, {threads} thread(s)"
        bounds += [(f"{at}, compute", compute, *GBS_RANGE, "GB/s"),
                   (f"{at}, memory", memory, *GBS_RANGE, "GB/s")]
        if cyc is not None:
            bounds.append((f"{at}, in-cache step", cyc, *CYCLES_RANGE, "cycles per element"))
    out = _bench.busy_host_reasons(load, cpus, samples, bounds)
    one = {d: c for d, t, c, _, _ in rows if t == 1}
    for dtype, threads, compute, _, _ in rows:
        if threads > 1 and compute < 0.75 * one[dtype]:
            out.append(f"{dtype}: {threads} threads ran the in-cache step at {compute:.1f} "
                       f"GB/s, one thread at {one[dtype]:.1f}: the other cores were taken")
    return out


def render(rows, why=(), force=False):
    if why and not force:
        return _bench.busy_host_message("bench/ceiling.py", why)
    lines = []
    if why:
        lines.append("HOST BUSY, figures unreliable (--force):\n" +
                     "\n".join(f"  - {r}" for r in why))
    lines.append(f"# {_bench.describe_machine()}")
    lines.append(f"{'dtype':>7} {'threads':>7} | {'compute GB/s':>12} {'memory GB/s':>11} | "
                 f"{'memory/compute':>14} | cycles/element/core, this host's limit")
    for dtype, threads, compute, memory, cyc in rows:
        c = f"{cyc:.2f}" if cyc is not None else "-"
        bound = "memory" if memory <= compute else "arithmetic"
        lines.append(f"{dtype:>7} {threads:>7} | {compute:>12.1f} {memory:>11.1f} | "
                     f"{memory / compute:>14.2f} | {c:>6}  limit {min(memory, compute):.1f} "
                     f"GB/s ({bound})")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--large", type=float, default=2e7, help="elements (float64; float32 x2)")
    ap.add_argument("--force", action="store_true",
                    help="print the table even if the host looks busy")
    args = ap.parse_args(argv)
    cpus = adamc.cpu_info()["available_cpus"]
    load = _bench.load_average()
    rows, samples = measure(args)
    print(render(rows, reasons(rows, samples, load, cpus), args.force))


if __name__ == "__main__":
    main()
