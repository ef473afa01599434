"""8-bit blockwise state (state_dtype="int8") against adamc's float32-state
step on the same parameters, side by side in one run (issue 13's goals).

    python bench/int8_state.py [--n 5e7] [--rounds 7] [--bnb]

Prints the machine and kernel variant, then per case the medians of
interleaved rounds, the ratio to the float32-state step, the bytes per
element each moves and the ratio of bytes.  --bnb also times
bitsandbytes' Adam8bit (torch + bitsandbytes installed) on the first case.
"""

from __future__ import annotations

import argparse

import numpy as np

import adamc
from adamc._bench import describe_machine, interleaved, transformer_shapes


def cases(n):
    """name, shapes, parameter dtype, options of the float32 twin, bytes/element
    (int8, float32 state)."""
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


def bnb_step(n):
    try:
        import torch
        import bitsandbytes as bnb
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n).astype(np.float32)))
    p.grad = torch.from_numpy((rng.standard_normal(n) * 1e-3).astype(np.float32))
    opt = bnb.optim.Adam8bit([p], lr=1e-4)
    opt.step()
    return opt.step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=float, default=5e7)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bnb", action="store_true")
    args = ap.parse_args(argv)
    print(describe_machine())
    print(f"kernel variant: {adamc._kernels.kernel_name()}, median of {args.rounds} "
          "interleaved rounds")
    print(f"{'case':36s} {'fp32 state':>10s} {'int8 state':>10s} {'ratio':>6s} "
          f"{'bytes ratio':>11s}")
    for name, shapes, dt, kw, b8, b32 in cases(args.n):
        sd = None if dt == np.float32 else "float32"
        contenders = {"fp32": make(shapes, dt, kw, sd),
                      "int8": make(shapes, dt, {**kw, "min_8bit_size": 4096}, "int8")}
        if args.bnb and name.startswith("fp32 params, one"):
            f = bnb_step(int(args.n))
            if f is not None:
                contenders["bnb"] = f
        med = interleaved(contenders, rounds=args.rounds, target=0.05, pause=0.02)
        print(f"{name:36s} {med['fp32'] * 1e3:8.2f}ms {med['int8'] * 1e3:8.2f}ms "
              f"{med['int8'] / med['fp32']:6.2f} {b8 / b32:11.2f}")
        if "bnb" in med:
            print(f"{'  bitsandbytes Adam8bit (CPU)':36s} {'':10s} {med['bnb'] * 1e3:8.2f}ms "
                  f"  adamc int8 {med['bnb'] / med['int8']:.0f}x faster")


if __name__ == "__main__":
    main()
