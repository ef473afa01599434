"""Where a second thread starts to pay: step time with 1 thread vs N threads
by element count, with the serial cutoff disabled (ADAMC_SERIAL_CUTOFF=0).

    python bench/thread_cutoff.py [--threads N] [--between matmul|none] [--force]

By default a small float32 matmul (NumPy's BLAS, with its own threads) runs
between steps, as in a training loop: adamc's idle workers are then asleep
and each step pays their wake-up.  ``--between none`` times back-to-back
steps, the best case.  The cutoff compiled into csrc/threads.c
(adamc_serial_cutoff) comes from the default mode on the development
machine: the smallest size at which N threads were clearly faster.

On a busy host the figures are impossible ones (a 2048-element step slower
than a 4096-element one, milliseconds for microseconds of work): the script
then prints why it thinks so (load average before the run, rounds that
differ by more than 1.5x, a step slower than one twice its size, a time per
element outside plausible bounds) instead of the table; --force prints it
anyway, marked.
"""

import argparse
import os

os.environ["ADAMC_SERIAL_CUTOFF"] = "0"  # read at every step: set before timing

import numpy as np  # noqa: E402

import adamc  # noqa: E402
from adamc import _bench  # noqa: E402


#: Plausible one-thread time per element of the largest step (1M float32
#: elements, the matmul's ~50 us included): nanoseconds.
NS_PER_ELEMENT = (0.05, 20.0)


def measure(args):
    """Rows (elements, median 1-thread s, median N-thread s) and the rounds."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 64)).astype(np.float32)
    b = rng.standard_normal((64, 128)).astype(np.float32)
    rows, samples = [], {}
    for n in [2**k for k in range(11, 21)]:
        # both columns include the matmul, so the ratio understates the gain
        p = rng.standard_normal(n).astype(args.dtype)
        g = (rng.standard_normal(n) * 1e-3).astype(args.dtype)
        opt = adamc.Adam([p])

        def run(k):
            def f():
                adamc.set_num_threads(k)
                if args.between == "matmul":
                    a @ b  # noqa: B018 - the work between steps
                opt.step([g])
            return f

        got = _bench.interleaved_samples({"1": run(1), "n": run(args.threads)},
                                         rounds=args.rounds, target=0.02)
        samples[f"{n} elements, 1 thread"] = got["1"]
        samples[f"{n} elements, {args.threads} threads"] = got["n"]
        rows.append((n, float(np.median(got["1"])), float(np.median(got["n"]))))
    adamc.set_num_threads(None)
    return rows, samples


def reasons(rows, samples, load, cpus):
    """Why these figures cannot be this machine's (see _bench.busy_host_reasons)."""
    n, t1, _ = rows[-1]
    out = _bench.busy_host_reasons(
        load, cpus, samples,
        [(f"{n} elements, 1 thread", t1 / n * 1e9, *NS_PER_ELEMENT, "ns per element")])
    for (n0, a1, an), (n1, b1, bn) in zip(rows, rows[1:]):
        for col, small, large in (("1 thread", a1, b1), ("N threads", an, bn)):
            if small > 1.5 * large:
                out.append(f"{col}: {n0} elements took {_bench.fmt_time(small).strip()}, "
                           f"{n1} took {_bench.fmt_time(large).strip()} (the smaller step "
                           "cannot be slower)")
    return out


def render(rows, threads, why=(), force=False):
    if why and not force:
        return _bench.busy_host_message("bench/thread_cutoff.py", why)
    lines = []
    if why:
        lines.append("HOST BUSY, figures unreliable (--force):\n" +
                     "\n".join(f"  - {r}" for r in why))
    lines.append(f"{'elements':>9} | {'1 thread':>10} | {f'{threads} threads':>10} | ratio")
    for n, t1, tn in rows:
        lines.append(f"{n:>9} | {_bench.fmt_time(t1):>10} | {_bench.fmt_time(tn):>10} | "
                     f"{tn / t1:.2f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=adamc.cpu_info()["available_cpus"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--between", choices=["matmul", "none"], default="matmul")
    ap.add_argument("--force", action="store_true",
                    help="print the table even if the host looks busy")
    args = ap.parse_args(argv)
    load = _bench.load_average()
    rows, samples = measure(args)
    why = reasons(rows, samples, load, adamc.cpu_info()["available_cpus"])
    print(render(rows, args.threads, why, args.force))


if __name__ == "__main__":
    main()
