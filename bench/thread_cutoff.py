"""Where a second thread starts to pay: step time with 1 thread vs N threads
by element count, with the serial cutoff disabled (ADAMC_SERIAL_CUTOFF=0).

    python bench/thread_cutoff.py [--threads N] [--between matmul|none]

By default a small float32 matmul (NumPy's BLAS, with its own threads) runs
between steps, as in a training loop: adamc's idle workers are then asleep
and each step pays their wake-up.  ``--between none`` times back-to-back
steps, the best case.  The cutoff compiled into csrc/threads.c
(adamc_serial_cutoff) comes from the default mode on the development
machine: the smallest size at which N threads were clearly faster.
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
    ap.add_argument("--between", choices=["matmul", "none"], default="matmul")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 64)).astype(np.float32)
    b = rng.standard_normal((64, 128)).astype(np.float32)
    print(f"{'elements':>9} | {'1 thread':>10} | {f'{args.threads} threads':>10} | ratio")
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

        t = _bench.interleaved({"1": run(1), "n": run(args.threads)}, rounds=args.rounds,
                               target=0.02)
        print(f"{n:>9} | {_bench.fmt_time(t['1']):>10} | {_bench.fmt_time(t['n']):>10} | "
              f"{t['n'] / t['1']:.2f}")
    adamc.set_num_threads(None)


if __name__ == "__main__":
    main()
