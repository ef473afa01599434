"""Can this host reach the issues' speed goals at all?  For each goal that
is a ratio to adamc's float32 step on one large buffer (issue 12's storage
combinations, issue 13's 8-bit state, issue 14's fused step), side by side
in one run:

- measured: the row's step on a large buffer (--n elements), as a ratio
  to the float32 step on the same number of elements: what the goal is about;
- bytes: the bytes per element the row moves, over the float32 step's 28:
  the goal if memory alone set the pace;
- arithmetic: the row's step on buffers in each core's L2 cache, all
  threads, per element, over the large float32 step's time per element: the
  best ratio this host's arithmetic allows, whatever the memory does.  The
  time per element is the difference between steps of two sizes in cache
  (HOT_PER_THREAD and twice that, per thread), so the fixed cost of a call
  and of the threads' hand-off drops out;
- needs: the float32 step time per element (and the memory bandwidth it
  stands for: 28 bytes an element) at which this arithmetic would meet the
  goal.  A host whose memory is slower than that meets it; a faster one
  cannot with this kernel.

    python bench/floors.py [--n 3e7] [--rounds 7] [--rows int8,fused]

The fused step's row has a third floor, its read pass: the float32 step
plus adamc.global_norm alone, over the step.  The in-cache steps run inside
_bench.arithmetic_env() (every step splits across the threads, workers
spin between steps), like bench/ceiling.py's.  The fused step in cache is
timed on the same buffers as its plain step.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import adamc  # noqa: E402
from adamc import _bench  # noqa: E402

#: Elements per thread of the smaller in-cache step (the larger has twice
#: as many): 28 bytes each (the widest row) is 0.9 MiB for the larger,
#: inside a current x86 core's L2 (1 MiB or more).
HOT_PER_THREAD = 1 << 14

#: The fused step's options (issue 14: unscale, clip and the skip check).
FUSED = {"grad_scale": 1024.0, "max_grad_norm": 1.0, "skip_nonfinite": True}


def rows():
    """(group, name, bytes per element, goal, parameter dtype, gradient
    dtype, Adam options, step options).  Issue 12's rows are
    bench/mixed_precision.py's cases."""
    try:
        import ml_dtypes
    except ImportError:
        raise SystemExit("bench/floors.py needs ml_dtypes (pip install ml_dtypes)")
    import mixed_precision

    goals = {26: 0.97, 28: 1.05, 14: 0.56, 20: 0.75}   # issue 12's table, by bytes
    out = [("mixed", name, nbytes, goals[nbytes], pd, gd, kw, {})
           for name, nbytes, pd, gd, kw, _ in mixed_precision.cases()[1:]]
    pow2 = {"state_dtype": "int8", "quant_map": "pow2", "min_8bit_size": 4096}
    out += [
        ("int8", "fp32 params, int8 state (pow2)", 16, 0.66, np.float32, np.float32, pow2, {}),
        ("int8", "bf16 params no master, int8 state (pow2)", 10, 0.45, ml_dtypes.bfloat16,
         ml_dtypes.bfloat16, {**pow2, "master_weights": False}, {}),
        ("fused", "fp32, unscale + clip + skip check", 32, 1.20, np.float32, np.float32, {},
         FUSED),
    ]
    return out


def make(n, pd, gd, kw, step_kw, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(n, dtype=np.float32)
    p, g = base.astype(pd), (base * 1e-3).astype(gd)
    opt = adamc.Adam([p], lr=1e-4, **kw)
    opt.step([g], **step_kw)
    return (lambda: opt.step([g], **step_kw)), g


def measure(args, chosen):
    """(n, hot_n, threads, large medians, in-cache medians, samples by label)."""
    threads = adamc.cpu_info()["num_threads"]
    n, hot_n = int(args.n), HOT_PER_THREAD * threads
    large = {"fp32": make(n, np.float32, np.float32, {}, {})[0]}
    hot = {}
    for _, name, _, _, pd, gd, kw, step_kw in chosen:
        large[name], g = make(n, pd, gd, kw, step_kw)
        hot[name] = make(hot_n, pd, gd, kw, step_kw)[0]
        hot[f"{name} x2"] = make(2 * hot_n, pd, gd, kw, step_kw)[0]
        if step_kw is FUSED:
            large["global_norm"] = (lambda g=g: adamc.global_norm([g]))
    s_large = _bench.interleaved_samples(large, rounds=args.rounds, target=0.05, pause=0.02)
    with _bench.arithmetic_env():
        s_hot = _bench.interleaved_samples(hot, rounds=args.rounds, target=0.05)
    samples = {**{f"{k}, large": v for k, v in s_large.items()},
               **{f"{k}, in cache": v for k, v in s_hot.items()}}
    med = {k: float(np.median(v)) for k, v in s_large.items()}
    med_hot = {k: float(np.median(v)) for k, v in s_hot.items()}
    return n, hot_n, threads, med, med_hot, samples


def render(chosen, n, hot_n, threads, t_large, t_hot, why=()):
    """The table; why: reasons the host looked busy (the figures are then
    marked, not withheld: the goals' own ratios are taken on such hosts)."""
    ns32 = t_large["fp32"] / n * 1e9
    lines = []
    if why:
        lines.append("HOST BUSY, figures unreliable:\n" + "\n".join(f"  - {r}" for r in why))
    lines += [f"# {_bench.describe_machine()}",
              f"# kernel variant {adamc._kernels.kernel_name()}, {threads} threads; large: "
              f"{n:.3g} elements, float32 step {ns32:.3f} ns an element "
              f"({28 / ns32:.1f} GB/s of its traffic); in cache: {hot_n} and {2 * hot_n} elements",
              f"{'row':44s} {'goal':>5s} {'measured':>8s} {'bytes':>6s} {'arith':>6s}  needs"]
    for group, name, nbytes, goal, *_ in chosen:
        arith_ns = (t_hot[f"{name} x2"] - t_hot[name]) / hot_n * 1e9
        need = arith_ns / goal
        verdict = ("reachable here" if arith_ns <= goal * ns32
                   else "not with this arithmetic here")
        extra = ""
        if group == "fused" and "global_norm" in t_large:
            floor = (t_large["fp32"] + t_large["global_norm"]) / t_large["fp32"]
            extra = f"; read floor {floor:.3f} (the step, then global_norm alone)"
            if floor > goal:
                extra += ": above the goal, so not on this host's memory"
        lines.append(f"{name:44s} {goal:5.2f} {t_large[name] / t_large['fp32']:8.2f} "
                     f"{nbytes / 28:6.2f} {arith_ns / ns32:6.2f}  fp32 step >= {need:.3f} ns "
                     f"(<= {28 / need:.0f} GB/s): {verdict}{extra}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=float, default=3e7, help="elements of the large buffers")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rows", default="mixed,int8,fused",
                    help="comma-separated groups: mixed, int8, fused")
    args = ap.parse_args(argv)
    groups = set(args.rows.split(","))
    unknown = groups - {"mixed", "int8", "fused"}
    if unknown:
        ap.error(f"--rows: unknown group(s) {sorted(unknown)}; choose from mixed, int8, fused")
    chosen = [r for r in rows() if r[0] in groups]
    load = _bench.load_average()
    *figures, samples = measure(args, chosen)
    why = _bench.busy_host_reasons(load, adamc.cpu_info()["available_cpus"], samples)
    out = render(chosen, *figures, why=why)
    print(out)
    return out


if __name__ == "__main__":
    main()
