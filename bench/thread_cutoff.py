"""Where a second thread starts to pay: step time with 1 thread vs N threads
by element count, with the serial cutoff disabled (ADAMC_SERIAL_CUTOFF=0).

    python bench/thread_cutoff.py [--threads N]

The cutoff compiled into csrc/threads.c (adamc_serial_cutoff) comes from
this table on the development machine: the smallest size at which N threads
were clearly faster than one.
"""

import argparse
import os

os.environ["ADAMC_SERIAL_CUTOFF"] = "0"  # read at every step: set before timing

import numpy as np  # noqa: E402

import adamc  # noqa: E402
from adamc import _bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=adamc.cpu_info()["available_cpus"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'elements':>9} | {'1 thread':>10} | {f'{args.threads} threads':>10} | ratio")
    for n in [2**k for k in range(11, 21)]:
        p = rng.standard_normal(n).astype(args.dtype)
        g = (rng.standard_normal(n) * 1e-3).astype(args.dtype)
        opt = adamc.Adam([p])

        def run(k):
            def f():
                adamc.set_num_threads(k)
                opt.step([g])
            return f

        t = _bench.interleaved({"1": run(1), "n": run(args.threads)}, rounds=args.rounds,
                               target=0.02)
        print(f"{n:>9} | {_bench.fmt_time(t['1']):>10} | {_bench.fmt_time(t['n']):>10} | "
              f"{t['n'] / t['1']:.2f}")
    adamc.set_num_threads(None)


if __name__ == "__main__":
    main()
