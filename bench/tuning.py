"""Is every tuned choice as fast as the best fixed configuration?

    python bench/tuning.py [--rounds 11]
    python bench/tuning.py --first 100 [--rounds 5]

For each case, one optimizer steps under each fixed configuration and under
the tuner's own choice (after its trial), in interleaved rounds shuffled
afresh each round, in one process.  The fixed configurations are set
through the environment variables the C side reads at every step
(ADAMC_PREFETCH, ADAMC_SERIAL_CUTOFF); every contender writes both
variables before each step ("" for the tuned one), so all pay the same
overhead.  Prints each configuration's median step time, the tuner's choice
and "tuned / best fixed" (the goal: at most 1.02).

--first N: the cost of the trials.  Fresh processes (interleaved, rounds
of each) time the first N steps of a transformer-shaped float32 model
(2.9e7 parameters, state allocation included) with the tuner on, with
ADAMC_TUNE=0 (the fixed defaults) and with each fixed prefetch choice;
prints the medians and "tuned / best fixed" over those N steps, and the
trial's own cost (each slower configuration's extra time during the trial,
from the tuner's medians) as a fraction of the N steps.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys


import adamc
from adamc import _bench

HUGE = str(1 << 62)
# case -> (shapes, dtype, {configuration: (ADAMC_PREFETCH, ADAMC_SERIAL_CUTOFF)})
CASES = {
    "float32 5e7": ([(50_000_000,)], "float32",
                    {"prefetch 4096": ("4096", "0"), "prefetch 16384": ("16384", "0"),
                     "no prefetch": ("0", "0")}),
    "float64 2e7": ([(20_000_000,)], "float64",
                    {"prefetch 4096": ("4096", "0"), "prefetch 16384": ("16384", "0"),
                     "no prefetch": ("0", "0")}),
    "float32 1e6": ([(1_000_000,)], "float32",
                    {"1 thread, prefetch": ("4096", HUGE), "1 thread, none": ("0", HUGE),
                     "all threads, prefetch": ("4096", "0"), "all threads, none": ("0", "0")}),
    "float64 85k (MLP)": ([(64, 256), (256,), (256, 256), (256,), (256, 10), (10,)], "float64",
                          {"1 thread": ("", HUGE), "all threads": ("", "0")}),
    "float32 40k": ([(40_000,)], "float32",
                    {"1 thread": ("", HUGE), "all threads": ("", "0")}),
}


FIRST = """
import sys, time, adamc
from adamc import _bench
params, grads = _bench.make_problem(_bench.transformer_shapes(), "float32")
opt = adamc.Adam(params, lr=_bench.LR)
t0 = time.perf_counter()
for _ in range(int(sys.argv[1])):
    opt.step(grads)
total = time.perf_counter() - t0
# the trial's cost against always running the best configuration: each
# configuration ran 4 timed steps, so 4 x (its median - the best median)
extra = 0.0
for c in adamc.cpu_info()["tuning"]["classes"]:
    med = c.get("median_seconds", {})
    if med:
        extra += sum(4 * (t - min(med.values())) for t in med.values())
print(total, extra)
"""


def first_steps(n, rounds):
    envs = {"tuned": {}, "ADAMC_TUNE=0": {"ADAMC_TUNE": "0"},
            "prefetch 4096": {"ADAMC_PREFETCH": "4096"},
            "prefetch 16384": {"ADAMC_PREFETCH": "16384"}, "no prefetch": {"ADAMC_PREFETCH": "0"}}
    base = {k: v for k, v in os.environ.items()
            if k not in ("ADAMC_TUNE", "ADAMC_PREFETCH", "ADAMC_SERIAL_CUTOFF", "ADAMC_CHUNK")}
    times = {k: [] for k in envs}
    extras = []
    order = random.Random(0)
    for _ in range(rounds):
        for k in order.sample(list(envs), len(envs)):
            out = subprocess.run([sys.executable, "-c", FIRST, str(n)], env={**base, **envs[k]},
                                 capture_output=True, text=True, check=True)
            total, extra = map(float, out.stdout.split())
            times[k].append(total)
            if k == "tuned":
                extras.append(extra / total)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = min((k for k in med if k != "tuned"), key=med.get)
    print(f"# {_bench.describe_machine()}; first {n} steps of a transformer-shaped float32 "
          f"model in fresh processes, {rounds} interleaved rounds, medians")
    print(", ".join(f"{k} {v:.3f} s" for k, v in med.items())
          + f"; tuned / best fixed ({best}) {med['tuned'] / med[best]:.3f}, "
          f"tuned / fixed defaults {med['tuned'] / med['ADAMC_TUNE=0']:.3f}")
    print(f"the trial's own cost (its slower configurations' extra time, from the "
          f"tuner's medians) / the {n} steps: median {statistics.median(extras):.4f}, "
          f"max {max(extras):.4f}.  (The first step, which faults in the fresh state's "
          "pages, alone varies by 0.1-0.2 s from one process to the next here.)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--first", type=int, default=0)
    args = ap.parse_args()
    if args.first:
        first_steps(args.first, args.rounds)
        return
    for k in ("ADAMC_PREFETCH", "ADAMC_SERIAL_CUTOFF", "ADAMC_TUNE"):
        os.environ.pop(k, None)
    print(f"# {_bench.describe_machine()}; {args.rounds} interleaved rounds, medians, "
          "back-to-back steps (bench/train_loop.py times steps between matrix products)")
    for case in args.cases.split(","):
        shapes, dtype, configs = CASES[case]
        params, grads = _bench.make_problem(shapes, dtype)
        opt = adamc.Adam(params, lr=_bench.LR)

        def runner(pf, cutoff):
            def f():
                os.environ["ADAMC_PREFETCH"] = pf
                os.environ["ADAMC_SERIAL_CUTOFF"] = cutoff
                opt.step(grads)
            return f

        tuned = runner("", "")
        for i in range(1000):     # until every size class's trial is over
            tuned()
            rows = adamc.cpu_info()["tuning"]["classes"]
            if not any(c["trial_running"] for c in rows) and (rows or i >= 2):
                break
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
