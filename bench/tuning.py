"""Is every tuned choice as fast as the best fixed configuration?

    python bench/tuning.py [--rounds 11] [--between none|matmul]

For each case, one optimizer steps under each fixed configuration and under
the tuner's own choice (after its trial), in interleaved rounds shuffled
afresh each round, in one process.  The fixed configurations are set
through the environment variables the C side reads at every step
(ADAMC_PREFETCH, ADAMC_SERIAL_CUTOFF); every contender writes both
variables before each step ("" for the tuned one), so all pay the same
overhead.  Prints each configuration's median step time, the tuner's choice
and "tuned / best fixed" (the goal: at most 1.02).
"""

import argparse
import os

import numpy as np

import adamc
from adamc import _bench

HUGE = str(1 << 62)
# case -> (shapes, dtype, {configuration: (ADAMC_PREFETCH, ADAMC_SERIAL_CUTOFF)})
CASES = {
    "float32 5e7": ([(50_000_000,)], "float32",
                    {"prefetch 4096": ("4096", "0"), "no prefetch": ("0", "0")}),
    "float64 2e7": ([(20_000_000,)], "float64",
                    {"prefetch 4096": ("4096", "0"), "no prefetch": ("0", "0")}),
    "float32 1e6": ([(1_000_000,)], "float32",
                    {"1 thread, prefetch": ("4096", HUGE), "1 thread, none": ("0", HUGE),
                     "all threads, prefetch": ("4096", "0"), "all threads, none": ("0", "0")}),
    "float64 85k (MLP)": ([(64, 256), (256,), (256, 256), (256,), (256, 10), (10,)], "float64",
                          {"1 thread": ("", HUGE), "all threads": ("", "0")}),
    "float32 40k": ([(40_000,)], "float32",
                    {"1 thread": ("", HUGE), "all threads": ("", "0")}),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--between", choices=["none", "matmul"], default="none")
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    for k in ("ADAMC_PREFETCH", "ADAMC_SERIAL_CUTOFF", "ADAMC_TUNE"):
        os.environ.pop(k, None)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256))
    print(f"# {_bench.describe_machine()}; {args.rounds} interleaved rounds, medians; "
          f"between steps: {args.between}")
    for case in args.cases.split(","):
        shapes, dtype, configs = CASES[case]
        params, grads = _bench.make_problem(shapes, dtype)
        opt = adamc.Adam(params, lr=_bench.LR)

        def runner(pf, cutoff):
            def f():
                os.environ["ADAMC_PREFETCH"] = pf
                os.environ["ADAMC_SERIAL_CUTOFF"] = cutoff
                if args.between == "matmul":
                    a @ a  # noqa: B018 - the work between steps
                opt.step(grads)
            return f

        tuned = runner("", "")
        for _ in range(16):       # every size class's trial is over
            tuned()
        fns = {"tuned": tuned}
        fns.update({name: runner(*env) for name, env in configs.items()})
        t = _bench.interleaved(fns, rounds=args.rounds, target=0.05)
        for k in ("ADAMC_PREFETCH", "ADAMC_SERIAL_CUTOFF"):
            os.environ.pop(k, None)
        chosen = [c["chosen"] for c in adamc.cpu_info()["tuning"]["classes"]
                  if c["steps_seen"] > 0]
        best = min(configs, key=lambda k: t[k])
        cols = ", ".join(f"{k} {_bench.fmt_time(v).strip()}" for k, v in t.items())
        print(f"{case}: {cols}; tuned / best fixed ({best}) {t['tuned'] / t[best]:.3f}")
        print(f"   tuner: {chosen}")
        adamc._kernels.tuning_reset()
        del opt, params, grads


if __name__ == "__main__":
    main()
