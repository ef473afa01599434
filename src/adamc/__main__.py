"""``python -m adamc``: what runs here, whether it is right, and how fast.

Prints the kernel variant and thread count in use, checks the compiled
step against ``adamc.reference`` on random data (exit status 1 if it
disagrees), then times one optimizer step of adamc side by side with the
NumPy Adams, torch when installed, and a memory-speed probe, at a few sizes.
Progress goes to stderr as each case finishes; the results, then a one-line
verdict, to stdout, within 100 columns (``--wide`` adds the full tables of
bench/compare.py).  About 6 s and 300 MB by default; ``--full`` adds the
large cases (minutes, several GB).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import adamc
from adamc import _bench, _spec, reference

#: The defaults, then each option of the spec changed on its own (with weight
#: decay on, so that decoupled_weight_decay matters).
CHECKED_OPTIONS = [{"lr": 1e-2}] + [{"lr": 1e-2, "weight_decay": 0.1, o.name: o.example}
                                   for o in _spec.OPTIONS if not o.storage]
#: The check passes if no parameter is further than this many machine
#: epsilons (relative to its scale) from the reference after 10 steps.
TOLERANCE_EPS = 64

#: Element counts of the single-buffer cases; the 500 x 64 case follows.
#: 4e6 float32 elements are 64 MB of buffers, more than the caches of
#: common CPUs, so that case runs at memory speed.
DEFAULT_SIZES = [10**3, 10**5, 4 * 10**6]
FULL_SIZES = [10**3, 10**4, 10**5, 10**6, 10**7, 5 * 10**7]

#: Contenders of the compact output; --wide adds the others of _bench.
COMPACT = ["adamc", "probe", "plain probe", "numpy reference", "numpy in-place", "torch fused"]
PEERS = [("numpy reference", "vs NumPy Adam"), ("numpy in-place", "vs NumPy in-place"),
         ("torch fused", "vs torch fused")]
LONG_NAMES = {"numpy reference": "NumPy Adam (adamc.reference)",
              "numpy in-place": "NumPy Adam with in-place ufuncs",
              "torch fused": "torch.optim.Adam(fused=True)"}
PROBE_SENTENCE = ("The memory limit is the time of a loop that reads and writes exactly the "
                  "bytes an\nAdam step must move, with no arithmetic: at 1.00x of the limit a "
                  "step is as fast as\nthis machine's memory (or caches, for small sizes) "
                  "allows.")
NO_TORCH = "torch not installed (pip install torch to compare)"


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


class Progress:
    """Progress on stderr: a bar redrawn in place on a terminal, else one line per item."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def _write(self, text):
        if self.tty:
            self.stream.write("\r\033[K" + text[:99])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, what):
        """Say what runs now (the first line appears before any work)."""
        if self.tty:
            bar = "#" * (20 * self.done // self.total)
            self._write(f"[{bar:<20}] {self.done}/{self.total} {what} ...")
        elif self.done == 0:
            steps = f"{self.total} step" + ("s" if self.total != 1 else "")
            self._write(f"python -m adamc: {steps}; {what} ...")

    def finish(self, what):
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        if self.tty:
            bar = "#" * (20 * self.done // self.total)
            self._write(f"[{bar:<20}] {self.done}/{self.total} {what} ({elapsed:.1f} s)")
            if self.done == self.total:
                self.stream.write("\r\033[K")
                self.stream.flush()
        else:
            self._write(f"[{self.done}/{self.total}] {what}: done ({elapsed:.1f} s)")


def speedup(t_other, t_adamc):
    """'38x faster', '1.5x faster', '1.2x slower' (ratio of median times)."""
    r = t_other / t_adamc
    if r >= 1:
        return f"{r:.0f}x faster" if r >= 10 else f"{r:.1f}x faster"
    return f"{1 / r:.1f}x slower"


def limit_ratio(times):
    """adamc's time over the memory probe's: '1.08x of the limit'."""
    return f"{times['adamc'] / _bench.probe_time(times):.2f}x of the limit"


def _x(r):
    return f"{r:.0f}" if r >= 10 else f"{r:.1f}"


def per_round(result, other):
    """The range of one comparison over the rounds, each round's times taken
    side by side: ' (per round: 1.1-1.3x faster)', ' (per round: 1.01-1.09x)'
    for the memory limit (other=None); '' with fewer than 2 rounds."""
    s = result.get("samples", {})
    ours = s.get("adamc", [])
    if len(ours) < 2:
        return ""
    if other is None:
        limits = [min(x) for x in zip(*(s[n] for n in _bench.PROBES if n in s))]
        r = sorted(a / b for a, b in zip(ours, limits))
        return f" (per round: {r[0]:.2f}-{r[-1]:.2f}x)"
    r = sorted(o / a for o, a in zip(s[other], ours))
    lo, hi = r[0], r[-1]
    if lo >= 1:
        text = f"{_x(lo)}-{_x(hi)}x faster"
    elif hi < 1:
        text = f"{_x(1 / hi)}-{_x(1 / lo)}x slower"
    else:
        text = f"{_x(1 / lo)}x slower to {_x(hi)}x faster"
    return f" (per round: {text})"


def short_label(r):
    """'4e6', '500 x 64' (the dtype is in the table's title)."""
    if r["layout"] == "one":
        return _bench.fmt_size(r["n"])
    if r["layout"] == "tiny":
        return f"{r['tensors']} x 64"
    return f"{r['layout']} ({r['tensors']} tensors, {_bench.fmt_size(r['n'])})"


def compact_table(results, names):
    """One row per case, within 100 columns: time, then each peer in words."""
    peers = [(n, h) for n, h in PEERS if n in names]
    head = ["elements", "adamc per step"] + [h for _, h in peers] + ["vs memory limit"]
    rows = []
    for r in results:
        t = r["times"]
        rows.append([short_label(r), _bench.fmt_time(t["adamc"]).strip()]
                    + [speedup(t[n], t["adamc"]) if n in t else "-" for n, _ in peers]
                    + [limit_ratio(t)])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(  # noqa: E731
        x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(head)] + [fmt(row) for row in rows])


def headline(result, names):
    """The plain-words lines for one case (the largest single buffer)."""
    t = result["times"]
    lines = [f"adamc vs {LONG_NAMES[n]}: {speedup(t[n], t['adamc'])}{per_round(result, n)}"
             for n in ("numpy reference", "numpy in-place", "torch fused") if n in t]
    if "torch fused" not in t:
        lines.append(f"adamc vs {LONG_NAMES['torch fused']}: {NO_TORCH}")
    lines.append(f"adamc vs what this machine's memory allows: {limit_ratio(t)}"
                 f"{per_round(result, None)}")
    return lines


def _sizes(s):
    """--sizes: element counts >= 1 (1e3 or 1000), comma-separated."""
    try:
        out = [int(float(x)) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{s!r}: give element counts separated by commas, e.g. 1e3,1e5") from None
    if any(n < 1 for n in out):
        raise argparse.ArgumentTypeError(f"{s!r}: every size must be at least 1")
    return out


def _rounds(s):
    """--rounds: an int >= 1."""
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{s!r}: give a whole number of rounds, at least 1")
    return n


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m adamc",
                                 description=__doc__.split("\n")[0].replace("``", ""))
    sizes = ap.add_mutually_exclusive_group()
    sizes.add_argument("--full", action="store_true",
                       help="the large cases too: 1e3 to 5e7 elements, 500 x 64 tensors and a "
                            "transformer-shaped model (minutes, several GB of memory)")
    sizes.add_argument("--sizes", type=_sizes,
                       help="comma-separated element counts (default 1e3,1e5,4e6)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--rounds", type=_rounds, default=5, help="timing rounds (default 5)")
    ap.add_argument("--wide", action="store_true",
                    help="also print bench/compare.py's full tables (about 150 columns)")
    ap.add_argument("--no-bench", action="store_true", help="only the check")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    info = adamc.cpu_info()
    threads = f"{info['num_threads']} thread" + ("s" if info["num_threads"] != 1 else "")
    variant = f"{info['isa']} on {threads}"
    if args.full:
        cases = ([("one", args.dtype, n) for n in FULL_SIZES]
                 + [("tiny", args.dtype, None), ("transformer", args.dtype, None)])
    else:
        cases = [("one", args.dtype, n) for n in (args.sizes or DEFAULT_SIZES)]
        cases.append(("tiny", args.dtype, None))
    if args.no_bench:
        cases = []
    progress = Progress(1 + len(cases))
    progress.start("checking the kernel against adamc.reference")

    print(f"adamc {adamc.__version__} on {_bench.cpu_model()}, {info['available_cpus']} CPU(s) "
          f"available: kernel variant {variant}, OpenMP {'on' if info['openmp'] else 'off'}")
    worst = check(np.random.default_rng(2024))
    ok = worst <= TOLERANCE_EPS
    progress.finish("kernel check")
    print(f"Kernel check (adamc against adamc.reference, 2 dtypes x {len(CHECKED_OPTIONS)} "
          f"options x 10 steps): {'passed' if ok else 'FAILED'}\n  worst difference "
          f"{worst:.1f} eps (at most {TOLERANCE_EPS} allowed)")
    if not ok:
        sys.stdout.flush()
        print(f"Verdict: kernel check FAILED (exit 1); {info['isa']}, {threads}; no timing")
        return 1
    if not cases:
        print(f"Verdict: kernel check passed (exit 0); {info['isa']}, {threads}; no timing")
        return 0

    names = [n for n in _bench.available_contenders() if args.wide or n in COMPACT]
    torch = any(n.startswith("torch") for n in names)
    results = []
    for layout, dtype, n in cases:
        shapes = _bench.layout_shapes(layout, n)
        label = short_label({"layout": layout, "n": n, "tensors": len(shapes)})
        progress.start(f"timing {dtype} {label}")
        results.append(_bench.run_case(layout, dtype, n, args.rounds, names,
                                       pause=0.02 if torch else 0.0, share=True,
                                       target=None if args.full else 0.03))
        progress.finish(f"{dtype} {label}")

    print(f"\nOne {args.dtype} optimizer step, median of {args.rounds} interleaved rounds "
          "(\"x faster\": adamc's speed-up):")
    print(compact_table(results, names))
    if not torch:
        print(f"vs torch.optim.Adam(fused=True): {NO_TORCH}")
    print(PROBE_SENTENCE)
    big = max((r for r in results if r["layout"] == "one"), key=lambda r: r["n"],
              default=results[-1])
    print(f"\nAt {short_label(big)} elements (medians; per round: the range over the "
          f"{args.rounds} rounds):" if args.rounds > 1 else f"\nAt {short_label(big)} elements:")
    for line in headline(big, names):
        print("  " + line)
    if args.wide:
        print(f"\n{_bench.describe_machine()}\nRatios of median times, < 1: adamc is faster; "
              "'probe' and 'plain probe' are the memory limit\nwith and without software "
              "prefetch (adamc/probe divides by the faster):")
        print(_bench.text(*_bench.table(results, names)))
        print()
        print(_bench.text(*_bench.times_table(results, names)))
    t = big["times"]
    print(f"\nVerdict: kernel check passed (exit 0); {info['isa']}, {threads}; "
          f"{speedup(t['numpy reference'], t['adamc'])} than NumPy Adam at {short_label(big)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
