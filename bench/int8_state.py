"""8-bit blockwise state (state_dtype="int8") against adamc's float32 step
on the same shapes, side by side in one run (issue 13's goals).

    python bench/int8_state.py [--n 5e7] [--rounds 7]

Prints the machine and kernel variant, then per case the medians of
interleaved rounds of three steps: adamc's float32 step (float32
parameters, gradients and state: 28 bytes an element), the case's
parameters with 8-bit state with the dynamic map (quant_map="dynamic",
bitsandbytes' format) and with the lookup-free map (quant_map="pow2"),
each 8-bit step's ratio to the float32 step, and the ratio of the bytes
per element they move.  bitsandbytes' Adam8bit: bench/int8_vs_bnb.py.
"""

from __future__ import annotations

import argparse

import numpy as np

import adamc
from adamc._bench import describe_machine, interleaved, transformer_shapes


def cases(n):
    """name, shapes, parameter dtype, options, bytes/element (8-bit state;
    the float32 step)."""
    import ml_dtypes
    bf16 = ml_dtypes.bfloat16
    return [
        ("fp32 params, one 5e7 buffer" if n == 5e7 else f"fp32 params, one {n:.0e} buffer",
         [(int(n),)], np.float32, {}, 16, 28),
        ("fp32 params, transformer list", transformer_shapes(), np.float32, {}, 16, 28),
        ("bf16 params no master, one buffer", [(int(n),)], bf16,
         {"master_weights": False}, 10, 28),
        ("fp32 params, 1e6 buffer (L3)", [(1_000_000,)], np.float32, {}, 16, 28),
    ]


def make(shapes, dtype, kw, state_dtype, seed=0):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [(rng.standard_normal(s) * 1e-3).astype(dtype) for s in shapes]
    opt = adamc.Adam(ps, lr=1e-4, state_dtype=state_dtype, **kw)
    opt.step(gs)
    return lambda: opt.step(gs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=float, default=5e7)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    print(describe_machine())
    print(f"kernel variant: {adamc._kernels.kernel_name()}, median of {args.rounds} "
          "interleaved rounds")
    print(f"{'case':36s} {'fp32 step':>10s} {'int8 dynamic':>12s} {'ratio':>6s} "
          f"{'int8 pow2':>10s} {'ratio':>6s} {'bytes ratio':>11s}")
    rows = {}
    for name, shapes, dt, kw, b8, b32 in cases(args.n):
        eight = {**kw, "min_8bit_size": 4096}
        # the denominator is always adamc's float32 step on the same shapes
        # (issue 13: "x adamc's fp32 step"), also for 16-bit parameters
        contenders = {"fp32": make(shapes, np.float32, {}, None),
                      "int8": make(shapes, dt, eight, "int8"),
                      "pow2": make(shapes, dt, {**eight, "quant_map": "pow2"}, "int8")}
        med = interleaved(contenders, rounds=args.rounds, target=0.05, pause=0.02)
        rows[name] = med
        print(f"{name:36s} {med['fp32'] * 1e3:8.2f}ms {med['int8'] * 1e3:10.2f}ms "
              f"{med['int8'] / med['fp32']:6.2f} {med['pow2'] * 1e3:8.2f}ms "
              f"{med['pow2'] / med['fp32']:6.2f} {b8 / b32:11.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
