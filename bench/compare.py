"""Side-by-side step times of adamc, the roofline probe, NumPy baselines and torch.

    python bench/compare.py                 # the full table
    python bench/compare.py --quick         # fewer sizes and rounds

Prints one table (median time per step over interleaved rounds, GB/s of
Adam's compulsory traffic, ratio to the probe, ratio of adamc to each peer),
writes bench/results.md and, when matplotlib is installed, bench/results.png.
Each case builds every contender on its own copy of the same data; rounds
alternate contenders and sleep briefly between them so another OpenMP
runtime's spinning workers go idle first.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import baselines  # noqa: E402

import adamc  # noqa: E402
from adamc import _bench  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

FULL_CASES = [("one", "float32", n) for n in (10**3, 10**4, 10**5, 10**6, 10**7, 5 * 10**7)] + [
    ("one", "float64", n) for n in (10**6, 2 * 10**7)] + [
    ("transformer", "float32", None), ("tiny", "float32", None)]
QUICK_CASES = [("one", "float32", n) for n in (10**3, 10**6, 10**7)] + [
    ("tiny", "float32", None)]


def run_case(layout, dtype, n, rounds, names, pause):
    shapes = baselines.layout_shapes(layout, n)
    total = sum(int(np.prod(s)) for s in shapes)
    itemsize = np.dtype(dtype).itemsize
    fns = {}
    for name in names:
        maker, limit = baselines.CONTENDERS[name]
        if limit is not None and total > limit:
            continue
        params, grads = baselines.make_problem(shapes, dtype)
        fns[name] = maker(params, grads)
    big = total * itemsize * 7 > 100e6
    times = _bench.interleaved(fns, rounds=rounds, target=0.3 if big else 0.05, pause=pause)
    return {"layout": layout, "dtype": dtype, "n": total, "tensors": len(shapes),
            "bytes": _bench.adam_bytes(total, itemsize), "times": times}


def describe_machine():
    info = adamc.cpu_info()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [cpu, f"{info['available_cpus']} CPUs", f"adamc {adamc.__version__} "
             f"({info['isa']}, {info['num_threads']} threads)", f"NumPy {np.__version__}",
             f"Python {platform.python_version()}"]
    if baselines.torch_available():
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    return ", ".join(parts)


def case_label(r):
    if r["layout"] == "one":
        return f"{r['dtype']} {_bench.fmt_size(r['n'])}"
    return f"{r['dtype']} {r['layout']} ({r['tensors']} tensors, {_bench.fmt_size(r['n'])})"


def table(results, names):
    peers = [n for n in names if n not in ("adamc", "probe")]
    head = ["case", "adamc", "GB/s", "adamc/probe"] + [f"adamc/{p}" for p in peers]
    rows = []
    for r in results:
        t = r["times"]
        a = t["adamc"]
        row = [case_label(r), _bench.fmt_time(a).strip(), f"{r['bytes'] / a / 1e9:.1f}",
               f"{a / t['probe']:.2f}"]
        row += [f"{a / t[p]:.3f}" if p in t else "-" for p in peers]
        rows.append(row)
    return head, rows


def markdown(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def text(head, rows):
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(x.rjust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), "-" * len(fmt(head))] + [fmt(r) for r in rows])


def times_table(results, names):
    head = ["case"] + [n for n in names]
    rows = [[case_label(r)] + [_bench.fmt_time(r["times"][n]).strip() if n in r["times"]
                               else "-" for n in names] for r in results]
    return head, rows


def plot(results, names, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(10, 5))
    labels = [case_label(r) for r in results]
    x = np.arange(len(results))
    w = 0.8 / len(names)
    for k, name in enumerate(names):
        ys = [r["bytes"] / r["times"][name] / 1e9 if name in r["times"] else 0 for r in results]
        ax.bar(x + k * w, ys, w, label=name)
    ax.set_xticks(x + 0.4 - w / 2, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("GB/s of Adam traffic (higher is better)")
    ax.set_yscale("log")
    ax.set_title("One optimizer step, median of interleaved rounds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--pause", type=float, default=0.05,
                    help="seconds of sleep between contenders (default 0.05)")
    ap.add_argument("--out", default=HERE, help="folder for results.md/png")
    args = ap.parse_args(argv)
    cases = QUICK_CASES if args.quick else FULL_CASES
    rounds = args.rounds or (3 if args.quick else 7)
    names = baselines.available_contenders()
    print(describe_machine())
    results = []
    for layout, dtype, n in cases:
        t0 = time.perf_counter()
        results.append(run_case(layout, dtype, n, rounds, names, args.pause))
        print(f"  {case_label(results[-1])}: {time.perf_counter() - t0:.1f} s", flush=True)
    head, rows = table(results, names)
    print()
    print(text(head, rows))
    th, tr = times_table(results, names)
    print()
    print(text(th, tr))
    md = [f"# adamc benchmark results\n", f"Machine: {describe_machine()}.\n",
          f"Median of {rounds} interleaved rounds; ratios below 1 mean adamc is faster. "
          "`probe` is the roofline probe (Adam's memory traffic, trivial arithmetic). "
          "GB/s counts Adam's compulsory traffic: 7 arrays x itemsize x elements.\n",
          markdown(head, rows), "\nTime per step:\n", markdown(th, tr), ""]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    print(f"\nwrote {os.path.join(args.out, 'results.md')}")
    plot(results, names, os.path.join(args.out, "results.png"))


if __name__ == "__main__":
    main()
