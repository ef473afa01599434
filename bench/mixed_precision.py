"""Mixed-precision steps against adamc's own float32 step (and torch's fused
Adam in the same dtype, when torch is installed), side by side in one run.

    python bench/mixed_precision.py [--n 5e7] [--rounds 7]

Prints the machine, the kernel variant and threads, then one line per
storage combination: median time of interleaved rounds, the ratio to the
float32 step, the bytes each element moves, and the ratio to torch fused.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import adamc
from adamc._bench import describe_machine


def cases():
    import ml_dtypes
    bf16 = ml_dtypes.bfloat16
    f16, f32 = np.float16, np.float32
    nm = {"master_weights": False}
    return [  # name, bytes per element, param, grad, options, torch dtype name (or None)
        ("fp32 / fp32 / fp32 state", 28, f32, f32, {}, "float32"),
        ("fp32 / bf16 grad / fp32 state", 26, f32, bf16, {}, None),
        ("fp32 / fp16 grad / fp32 state", 26, f32, f16, {}, None),
        ("bf16 / bf16 / fp32 state + master", 28, bf16, bf16, {}, None),
        ("fp16 / fp16 / fp32 state + master", 28, f16, f16, {}, None),
        ("bf16 / bf16 / bf16 state, nearest", 14, bf16, bf16,
         {**nm, "state_dtype": "bfloat16"}, "bfloat16"),
        ("bf16 / bf16 / bf16 state, stochastic", 14, bf16, bf16,
         {**nm, "state_dtype": "bfloat16", "stochastic_rounding": True, "seed": 1}, None),
        ("fp16 / fp16 / fp16 state, nearest", 14, f16, f16,
         {**nm, "state_dtype": "float16"}, "float16"),
        ("fp16 / fp16 / fp16 state, stochastic", 14, f16, f16,
         {**nm, "state_dtype": "float16", "stochastic_rounding": True, "seed": 1}, None),
        ("fp32 / fp32 / bf16 state", 20, f32, f32, {"state_dtype": "bfloat16"}, None),
        ("fp32 / fp32 / fp16 state", 20, f32, f32, {"state_dtype": "float16"}, None),
        ("fp32 / fp32 / bf16 state, stochastic", 20, f32, f32,
         {"state_dtype": "bfloat16", "stochastic_rounding": True, "seed": 1}, None),
        ("fp32 / fp32 / fp16 state, stochastic", 20, f32, f32,
         {"state_dtype": "float16", "stochastic_rounding": True, "seed": 1}, None),
    ]


def torch_step(n, dtype_name, base):
    try:
        import torch
    except ImportError:
        return None
    dt = getattr(torch, dtype_name)
    p = torch.nn.Parameter(torch.from_numpy(base).to(dt))
    p.grad = (torch.from_numpy(base) * 0.1).to(dt)
    opt = torch.optim.Adam([p], fused=True)
    opt.step()
    return opt.step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=float, default=5e7)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    n = int(args.n)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n).astype(np.float32)
    steps, torch_steps, info = {}, {}, {}
    for name, nbytes, pd, gd, kw, tname in cases():
        p, g = base.astype(pd), (base * 0.1).astype(gd)
        opt = adamc.Adam([p], **kw)
        opt.step([g])
        steps[name] = (lambda o=opt, g=g: o.step([g]))
        info[name] = nbytes
        if tname:
            t = torch_step(n, tname, base)
            if t is not None:
                torch_steps[name] = t
    times = {k: [] for k in list(steps) + [f"torch {k}" for k in torch_steps]}
    for _ in range(args.rounds):
        for name, f in list(steps.items()) + [(f"torch {k}", f) for k, f in torch_steps.items()]:
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
            time.sleep(0.02)
    med = {k: float(np.median(v)) for k, v in times.items()}
    ref = med[cases()[0][0]]
    print(describe_machine())
    print(f"{n:.3g} elements, median of {args.rounds} interleaved rounds")
    print(f"{'parameters / gradients / state':40s} {'bytes':>5s} {'time':>9s} {'x fp32':>7s}"
          f" {'x bytes':>7s} {'x torch fused':>13s}")
    for name in steps:
        tt = f"{med[name] / med['torch ' + name]:.2f}" if "torch " + name in med else "-"
        print(f"{name:40s} {info[name]:5d} {med[name] * 1e3:7.2f}ms {med[name] / ref:7.2f}"
              f" {info[name] / 28:7.2f} {tt:>13s}")


if __name__ == "__main__":
    main()
