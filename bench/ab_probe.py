"""adamc's step against the roofline probes alone, one call each, many rounds.

    python bench/ab_probe.py [--n 5e7] [--dtype float32] [--rounds 41] [--threads 2]
                             [--layout one|transformer] [--torch]

bench/compare.py times seven contenders, some of which take a second a
call, so its rounds are seconds apart; this times only the two that matter
for the "x the probe" targets, alternating single calls (in shuffled order
each round), so both see the same state of a shared machine.  Prints the
medians and their ratio, then the arithmetic ceiling (the step on buffers in
each thread's L2, scaled to --n) and "adamc / limit", the limit being the
slower of memory (the faster probe) and arithmetic: what this host allows.
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
    ap.add_argument("--layout", default="one", choices=["one", "transformer"])
    ap.add_argument("--torch", action="store_true",
                    help="time torch.optim.Adam(fused=True) in the same rounds")
    args = ap.parse_args()
    if args.threads:
        adamc.set_num_threads(args.threads)
    shapes = _bench.layout_shapes(args.layout, int(args.n))
    n = sum(int(np.prod(s)) for s in shapes)
    params, grads = _bench.make_problem(shapes, args.dtype)
    opt = adamc.Adam(params, lr=_bench.LR)
    fns = {"adamc": lambda: opt.step(grads)}
    names = list(_bench.PROBES) + (["torch fused"] if args.torch else [])
    for name in names:
        fns[name] = _bench.CONTENDERS[name][0](*_bench.make_problem(shapes, args.dtype, seed=1))
    samples = _bench.interleaved_samples(fns, rounds=args.rounds, target=0.0)
    t = {k: float(np.median(v)) for k, v in samples.items()}
    gb = _bench.adam_bytes(n, np.dtype(args.dtype).itemsize) / 1e9
    probes = ", ".join(f"{k} {_bench.fmt_time(t[k]).strip()} ({gb / t[k]:.1f} GB/s)"
                       for k in _bench.PROBES)
    threads = adamc.get_num_threads()
    # the arithmetic ceiling: the step in cache, scaled to n, at the better of
    # the rate measured with these threads and threads x the one-thread rate
    # (each core has its own divider; a parallel in-cache step also pays the
    # pool's hand-off, which a large step does not)
    with _bench.arithmetic_env():
        hot, hot_n = _bench.hot_step(args.dtype, threads)
        t_hot = _bench.interleaved({"hot": hot}, rounds=9, target=0.1)["hot"]
        if threads > 1:
            adamc.set_num_threads(1)
            hot1, hot1_n = _bench.hot_step(args.dtype, 1)
            t1 = _bench.interleaved({"hot": hot1}, rounds=9, target=0.1)["hot"]
            adamc.set_num_threads(threads)
            t_hot = min(t_hot, t1 * hot_n / hot1_n / threads)
    t_probe = _bench.probe_time(t)
    t_lim, bound = _bench.limit_time(t_probe, n, t_hot, hot_n)
    if args.torch:
        import torch

        print(f"torch fused {_bench.fmt_time(t['torch fused']).strip()} "
              f"({torch.get_num_threads()} torch threads): "
              f"adamc / torch fused {t['adamc'] / t['torch fused']:.3f}")
    print(f"{args.dtype} {args.layout} {_bench.fmt_size(n)}, {threads} threads, "
          f"{args.rounds} rounds: adamc {_bench.fmt_time(t['adamc']).strip()} "
          f"({gb / t['adamc']:.1f} GB/s), {probes}, "
          f"adamc / faster probe {t['adamc'] / t_probe:.3f}")
    print(f"  arithmetic ceiling (the step in cache, {threads} threads): "
          f"{_bench.fmt_time(t_hot * n / hot_n).strip()} for {_bench.fmt_size(n)} "
          f"({gb / (t_hot * n / hot_n):.1f} GB/s); this host's limit is {bound} "
          f"({_bench.fmt_time(t_lim).strip()}): adamc / limit {t['adamc'] / t_lim:.3f}")


if __name__ == "__main__":
    main()
