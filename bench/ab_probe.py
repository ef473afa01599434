"""adamc's step against the roofline probes alone, one call each, many rounds.

    python bench/ab_probe.py [--n 5e7] [--dtype float32] [--rounds 41] [--threads 2]

bench/compare.py times seven contenders, some of which take a second a
call, so its rounds are seconds apart; this times only the two that matter
for the "x the probe" targets, alternating single calls (in shuffled order
each round), so both see the same state of a shared machine.  Prints the
medians and their ratio.
"""

import argparse

import numpy as np

import adamc
from adamc import _bench, _kernels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=float, default=5e7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        adamc.set_num_threads(args.threads)
    n = int(args.n)
    params, grads = _bench.make_problem([(n,)], args.dtype)
    opt = adamc.Adam(params, lr=_bench.LR)
    fns = {"adamc": lambda: opt.step(grads)}
    for name in _bench.PROBES:
        fns[name] = _bench.CONTENDERS[name][0](*_bench.make_problem([(n,)], args.dtype, seed=1))
    samples = _bench.interleaved_samples(fns, rounds=args.rounds, target=0.0)
    t = {k: float(np.median(v)) for k, v in samples.items()}
    gb = _bench.adam_bytes(n, np.dtype(args.dtype).itemsize) / 1e9
    probes = ", ".join(f"{k} {_bench.fmt_time(t[k]).strip()} ({gb / t[k]:.1f} GB/s)"
                       for k in _bench.PROBES)
    print(f"{args.dtype} {_bench.fmt_size(n)}, {adamc.get_num_threads()} threads, "
          f"{args.rounds} rounds: adamc {_bench.fmt_time(t['adamc']).strip()} "
          f"({gb / t['adamc']:.1f} GB/s), {probes}, "
          f"adamc / faster probe {t['adamc'] / _bench.probe_time(t):.3f}")


if __name__ == "__main__":
    main()
