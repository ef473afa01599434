"""Side-by-side step times of adamc, the roofline probe, NumPy baselines and torch.

    python bench/compare.py                 # the full table
    python bench/compare.py --quick         # fewer sizes and rounds

Prints one table (median time per step over interleaved rounds, GB/s of
Adam's compulsory traffic, ratio to the probe, ratio of adamc to each peer),
writes bench/results.md and, when matplotlib is installed, bench/results.png.
Each case builds every contender on its own copy of the same data; rounds
alternate contenders in an order shuffled afresh each round and sleep briefly between them so
another OpenMP runtime's spinning workers go idle first.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from adamc._bench import (available_contenders, case_label, describe_machine, markdown,
                          run_case, table, text, times_table)

HERE = os.path.dirname(os.path.abspath(__file__))

FULL_CASES = [("one", "float32", n) for n in (10**3, 10**4, 10**5, 10**6, 10**7, 5 * 10**7)] + [
    ("one", "float64", n) for n in (10**6, 2 * 10**7)] + [
    ("transformer", "float32", None), ("tiny", "float32", None)]
QUICK_CASES = [("one", "float32", n) for n in (10**3, 10**6, 10**7)] + [
    ("tiny", "float32", None)]


def plot(results, names, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(12, 5))
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
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # clear of the bars
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
    rounds = args.rounds or (3 if args.quick else 11)
    names = available_contenders()
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
          f"Median of {rounds} interleaved rounds (order shuffled each round); ratios "
          "below 1 mean adamc is faster. "
          "`probe` is the roofline probe (Adam's memory traffic, trivial arithmetic, the "
          "step's own loop with its software prefetch), `plain probe` the same without "
          "prefetch; adamc/probe divides by the faster of the two. "
          "GB/s counts Adam's compulsory traffic: 7 arrays x itemsize x elements.\n",
          markdown(head, rows), "\nTime per step:\n", markdown(th, tr), ""]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    print(f"\nwrote {os.path.join(args.out, 'results.md')}")
    plot(results, names, os.path.join(args.out, "results.png"))


if __name__ == "__main__":
    main()
