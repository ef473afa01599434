"""Side-by-side step times of adamc, the roofline probe, NumPy baselines and torch.

    python bench/compare.py                 # the full table
    python bench/compare.py --quick         # fewer sizes and rounds
    python bench/compare.py --out DIR       # results.md/png into DIR

Prints one table (median time per step over interleaved rounds, GB/s of
Adam's compulsory traffic, ratio to the probe, ratio of adamc to each peer),
writes results.md and, when matplotlib is installed, results.png, each
naming the machine (CPU model), the kernel variant and the date.  By
default they go to a new folder adamc-bench-<UTC date and time> in the
system's temporary directory, never into the source tree: the run the
README quotes is kept as docs/bench-2026-11-29-xeon.md/.png.
Each case builds every contender on its own copy of the same data; rounds
alternate contenders in an order shuffled afresh each round and sleep briefly between them so
another OpenMP runtime's spinning workers go idle first.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import numpy as np

import adamc
from adamc._bench import (available_contenders, case_label, cpu_model, describe_machine,
                          markdown, run_case, table, text, times_table)

FULL_CASES = [("one", "float32", n) for n in (10**3, 10**4, 10**5, 10**6, 10**7, 5 * 10**7)] + [
    ("one", "float64", n) for n in (10**6, 2 * 10**7)] + [
    ("transformer", "float32", None), ("tiny", "float32", None)]
QUICK_CASES = [("one", "float32", n) for n in (10**3, 10**6, 10**7)] + [
    ("tiny", "float32", None)]


def run_facts(when=None):
    """What the figures belong to: machine, kernel variant, date (UTC)."""
    info = adamc.cpu_info()
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return {"machine": f"{cpu_model()}, {info['available_cpus']} CPUs",
            "variant": f"{info['isa']} kernel variant, {info['num_threads']} threads",
            "date": when.strftime("%Y-%m-%d %H:%M UTC"),
            "stamp": when.strftime("%Y%m%d-%H%M%S")}


def facts_line(facts):
    return f"{facts['machine']}; adamc {adamc.__version__}, {facts['variant']}; {facts['date']}"


def default_out(facts):
    """A new folder in the temporary directory: outside the source tree."""
    return os.path.join(tempfile.gettempdir(), f"adamc-bench-{facts['stamp']}")


def figure(results, names, facts):
    """The chart (a matplotlib Figure), titled with the machine, variant and date."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5.5))
    labels = [case_label(r) for r in results]
    x = np.arange(len(results))
    w = 0.8 / len(names)
    for k, name in enumerate(names):
        ys = [r["bytes"] / r["times"][name] / 1e9 if name in r["times"] else 0 for r in results]
        ax.bar(x + k * w, ys, w, label=name)
    ax.set_xticks(x + 0.4 - w / 2, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("GB/s of Adam traffic (higher is better)")
    ax.set_yscale("log")
    ax.set_title("One optimizer step, median of interleaved rounds\n" + facts_line(facts),
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # clear of the bars
    fig.tight_layout()
    return fig


def plot(results, names, facts, path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return None
    import matplotlib.pyplot as plt

    fig = figure(results, names, facts)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def report(results, names, rounds, facts):
    """results.md: the facts, then both tables."""
    head, rows = table(results, names)
    th, tr = times_table(results, names)
    return "\n".join([
        "# adamc benchmark results\n",
        f"- Machine: {describe_machine()}",
        f"- Kernel variant: {facts['variant']}",
        f"- Date: {facts['date']}\n",
        f"Median of {rounds} interleaved rounds (order shuffled each round); ratios "
        "below 1 mean adamc is faster. "
        "`probe` is the roofline probe (Adam's memory traffic, trivial arithmetic, the "
        "step's own loop with its software prefetch), `plain probe` the same without "
        "prefetch; adamc/probe divides by the faster of the two. "
        "GB/s counts Adam's compulsory traffic: 7 arrays x itemsize x elements.\n",
        f"Ratios ({facts_line(facts)}):\n",
        markdown(head, rows), f"\nTime per step ({facts_line(facts)}):\n",
        markdown(th, tr), ""])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    help="only single float32 buffers of these element counts")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--pause", type=float, default=0.05,
                    help="seconds of sleep between contenders (default 0.05)")
    ap.add_argument("--out", default=None,
                    help="folder for results.md/png (default: a new adamc-bench-<date> "
                         "folder in the temporary directory)")
    args = ap.parse_args(argv)
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.sizes:
        cases = [("one", "float32", n) for n in args.sizes]
    rounds = args.rounds or (3 if args.quick else 11)
    names = available_contenders()
    facts = run_facts()
    out = args.out or default_out(facts)
    print(describe_machine())
    print(facts_line(facts))
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
    os.makedirs(out, exist_ok=True)
    md = os.path.join(out, "results.md")
    with open(md, "w") as f:
        f.write(report(results, names, rounds, facts))
    print(f"\nwrote {md}")
    plot(results, names, facts, os.path.join(out, "results.png"))
    return out


if __name__ == "__main__":
    main()
