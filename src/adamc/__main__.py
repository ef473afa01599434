"""``python -m adamc``: what runs here, whether it is right, and how fast.

Prints the kernel variant and thread count in use, checks the compiled
step against ``adamc.reference`` on random data (exit status 1 if it
disagrees), then times one optimizer step of adamc side by side with the
roofline probe, the NumPy Adams and, when installed, torch, at a few sizes
(the same table as bench/compare.py).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import adamc
from adamc import _bench, _spec, reference

#: The defaults, then each option of the spec changed on its own (with weight
#: decay on, so that decoupled_weight_decay matters).
CHECKED_OPTIONS = [{"lr": 1e-2}] + [{"lr": 1e-2, "weight_decay": 0.1, o.name: o.example}
                                   for o in _spec.OPTIONS]


def check(rng):
    """Every option, both dtypes, odd shapes: the kernel against the reference.

    Returns the worst difference in units of the dtype's epsilon, relative
    to the parameter's scale.
    """
    worst = 0.0
    for dtype in (np.float32, np.float64):
        for opt in CHECKED_OPTIONS:
            ps = [rng.standard_normal(s).astype(dtype) for s in [(1001,), (17, 3), ()]]
            qs = [p.copy() for p in ps]
            a, b = adamc.Adam(ps, **opt), reference.Adam(qs, **opt)
            for _ in range(10):
                gs = [rng.standard_normal(p.shape).astype(dtype) for p in ps]
                a.step(gs)
                b.step(gs)
            for p, q in zip(ps, qs):
                err = float(np.max(np.abs(p - q), initial=0.0)) / max(
                    1.0, float(np.max(np.abs(q), initial=0.0)))
                worst = max(worst, err / float(np.finfo(dtype).eps))
    return worst


def timing_table(sizes, dtype, rounds):
    """The bench/compare.py table at a few sizes (torch columns when installed)."""
    names = _bench.available_contenders()
    cases = [("one", dtype, n) for n in sizes] + [("tiny", dtype, None)]
    results = [_bench.run_case(layout, dt, n, rounds, names, pause=0.02)
               for layout, dt, n in cases]
    print(f"\nOne optimizer step, median of {rounds} interleaved rounds; ratios < 1 mean "
          "adamc is faster ('probe' and 'plain probe' move Adam's bytes with no arithmetic,\n"
          "with and without software prefetch; adamc/probe divides by the faster):")
    print(_bench.text(*_bench.table(results, names)))
    print()
    print(_bench.text(*_bench.times_table(results, names)))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m adamc", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[10**3, 10**6, 10**7],
                    help="comma-separated element counts (default 1e3,1e6,1e7)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-bench", action="store_true", help="only the check")
    args = ap.parse_args(argv)

    info = adamc.cpu_info()
    print(f"adamc {adamc.__version__}: kernel variant {info['isa']!r}, "
          f"{info['num_threads']} thread(s), OpenMP {'on' if info['openmp'] else 'off'}, "
          f"{info['available_cpus']} CPU(s) available")
    worst = check(np.random.default_rng(2024))
    ok = worst <= 64
    print(f"check against adamc.reference (2 dtypes x {len(CHECKED_OPTIONS)} options x 10 steps): "
          f"worst difference {worst:.1f} eps -> {'OK' if ok else 'MISMATCH'}")
    if not ok:
        return 1
    if not args.no_bench:
        print(_bench.describe_machine())
        timing_table(args.sizes, args.dtype, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
