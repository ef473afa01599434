"""The fused training step (unscale + global-norm clip + Inf/NaN check + step)
against adamc's plain step, NumPy's separate passes and torch's
GradScaler.unscale_ + clip_grad_norm_ + fused step, side by side in one run.

    python bench/fused_step.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import adamc
from adamc import reference
from adamc._bench import describe_machine, transformer_shapes


def layouts(quick):
    one = [(int(2e7 if quick else 5e7),)]
    shapes = transformer_shapes()  # bench/compare.py's transformer-shaped list
    label = f"transformer ({len(shapes)} tensors, {sum(int(np.prod(s)) for s in shapes):.2g})"
    return {"one buffer": one, label: shapes, "500 x 64": [(64,)] * 500}


def numpy_fused(opt, grads, scale, max_norm):
    """NumPy's separate passes: unscale, a norm per tensor, clip, check, step."""
    u = [g * np.float32(1.0 / scale) for g in grads]
    norms = [float(np.linalg.norm(x)) for x in u]
    total = float(np.linalg.norm(norms))
    if not np.isfinite(total):
        return
    coef = min(1.0, max_norm / (total + 1e-6))
    opt.step([x * np.float32(coef) for x in u])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="2e7 instead of 5e7 elements")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    print(describe_machine())
    print(f"median of {args.rounds} interleaved rounds; float32; grad_scale 1024, "
          "max_grad_norm 1.0, skip_nonfinite")
    print(f"{'layout':32s} {'plain':>9s} {'fused':>9s} {'fused/plain':>11s} "
          f"{'limit':>7s} {'numpy/fused':>11s} {'torch/fused':>11s}")
    rng = np.random.default_rng(0)
    for name, shapes in layouts(args.quick).items():
        ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        gs = [(rng.standard_normal(s) * 1024).astype(np.float32) for s in shapes]
        big = sum(p.size for p in ps) >= 10**6  # where the limit below means something
        plain = adamc.Adam([p.copy() for p in ps])
        fused = adamc.Adam([p.copy() for p in ps])
        f = {"plain": lambda: plain.step(gs),
             "norm": lambda: adamc.global_norm(gs),
             "fused": lambda: fused.step(gs, grad_scale=1024.0, max_grad_norm=1.0,
                                         skip_nonfinite=True)}
        if name != "one buffer" or args.quick:
            ref = reference.Adam([p.copy() for p in ps])
            f["numpy"] = lambda: numpy_fused(ref, gs, 1024.0, 1.0)
        if torch is not None:
            tps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ps]
            topt = torch.optim.Adam(tps, fused=True)
            tgs = [torch.from_numpy(g) for g in gs]
            scaler_inv = torch.tensor(1.0 / 1024.0)

            def torch_step():
                for p, g in zip(tps, tgs):
                    p.grad = g.clone()  # (GradScaler unscales .grad in place)
                found = torch.zeros(())
                torch._amp_foreach_non_finite_check_and_unscale_(
                    [p.grad for p in tps], found, scaler_inv)
                torch.nn.utils.clip_grad_norm_(tps, 1.0, foreach=True)
                if not found.item():
                    topt.step()
            f["torch"] = torch_step
        for g in f.values():
            g()
        times = {k: [] for k in f}
        for _ in range(args.rounds):
            for k, g in f.items():
                t0 = time.perf_counter()
                g()
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        out = [f"{med['plain'] * 1e3:7.2f}ms", f"{med['fused'] * 1e3:7.2f}ms",
               f"{med['fused'] / med['plain']:11.2f}",
               f"{(med['plain'] + med['norm']) / med['plain']:7.2f}" if big else f"{'-':>7s}"]
        for k in ("numpy", "torch"):
            out.append(f"{med[k] / med['fused']:11.2f}" if k in med else f"{'-':>11s}")
        print(f"{name:32s} " + " ".join(out))
    print("limit (large layouts): (plain step + adamc.global_norm alone) / plain step. The "
          "fused step reads every gradient twice; where the plain step is bound by its "
          "reads, the second read costs what a norm pass alone does")
    print("(torch's time includes cloning the gradients into .grad, which "
          "unscale_ overwrites; the other columns do no such copy)")


if __name__ == "__main__":
    main()
