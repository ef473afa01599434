"""Benchmark machinery shared by ``python -m adamc`` and ``bench/``.

The contenders (adamc, the roofline probe, the NumPy and pure-Python Adams
users would otherwise write, torch when it is importable), the problem
layouts, interleaved timing and the comparison table.

Contenders are timed in interleaved rounds so that machine noise hits all
of them alike.  Each round runs them in a fresh (seeded) random order, so
that no contender always runs in the same place or right after the same
other one (after torch, say, whose worker threads may still be spinning, or
after the NumPy reference, which leaves the caches full of its temporaries).
Times are the median of the rounds, and ratios are ratios of those medians.
Speed is only ever reported, never asserted.
"""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import numpy as np


def adam_bytes(n, itemsize, amsgrad=False):
    """Bytes an Adam step must move: read p, g, m, v (+vmax), write p, m, v (+vmax)."""
    return n * itemsize * (9 if amsgrad else 7)


def calibrate(fn, target=0.02):
    """How many calls of fn take about ``target`` seconds (at least 1)."""
    fn()
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target / 4 or reps >= 1 << 20:
            return max(1, int(reps * target / max(dt, 1e-9)))
        reps *= 4


def interleaved_samples(contenders, rounds=5, target=0.02, pause=0.0):
    """Seconds per call of each contender in every round of interleaved timing.

    Parameters
    ----------
    contenders : dict name -> zero-argument callable
    rounds : int
        Rounds; each times every contender once (``reps`` calls each), in an
        order shuffled afresh each round (seeded: the same on every run).
    target : float
        Seconds each contender's batch of calls should take.
    pause : float
        Sleep before each contender, so that another runtime's spinning
        worker threads (OpenMP, torch) go idle before the next one is timed.

    Returns
    -------
    dict name -> list of ``rounds`` floats, index r being round r.
    """
    reps = {name: calibrate(fn, target) for name, fn in contenders.items()}
    names = list(contenders)
    samples = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(rounds):
        for name in order.sample(names, len(names)):
            if pause:
                time.sleep(pause)
            fn, n = contenders[name], reps[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def interleaved(contenders, rounds=5, target=0.02, pause=0.0):
    """Median seconds per call of each contender (see interleaved_samples)."""
    samples = interleaved_samples(contenders, rounds, target, pause)
    return {name: statistics.median(s) for name, s in samples.items()}


def fmt_time(sec):
    if sec < 1e-3:
        return f"{sec * 1e6:8.1f} us"
    if sec < 1:
        return f"{sec * 1e3:8.2f} ms"
    return f"{sec:8.2f} s "


def fmt_size(n):
    """1000 -> '1e3', 50_000_000 -> '5e7', 1234 -> '1234'."""
    e = len(str(n)) - 1
    if n >= 1000 and n % 10**e == 0:
        return f"{n // 10**e}e{e}"
    return str(n)


# ---------------------------------------------------------------- contenders

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def make_adamc(params, grads):
    from . import Adam

    opt = Adam(params, lr=LR)
    return lambda: opt.step(grads)


def make_probe(params, grads, prefetch=True):
    """Roofline probe: Adam's memory traffic with trivial arithmetic, through
    adamc's own multi-tensor driver, thread split and loop (not an Adam step).
    prefetch=False: the plain loop, without the step's software prefetch."""
    from . import _kernels

    quads = [(p, g, np.zeros_like(p), np.zeros_like(p)) for p, g in zip(params, grads)]
    return lambda: _kernels.probe_buffers(quads, prefetch)


def make_plain_probe(params, grads):
    return make_probe(params, grads, prefetch=False)


# Two probes with Adam's exact traffic: the step's own loop (software prefetch
# on large ranges) and the plain loop.  Which is faster varies with the machine
# and the moment (+-5% here), so ratios to "the probe" use the faster of the
# two: the step is never measured against a probe it made slower.
PROBES = ("probe", "plain probe")


def probe_time(times):
    """The faster of the probes' times in a {name: seconds} dict."""
    return min(times[n] for n in PROBES if n in times)


def hot_step(dtype, threads, seed=0):
    """(step function, elements): adamc's step on buffers that stay in each
    thread's L2 cache (256 KiB per array per thread), so that the arithmetic,
    not memory, sets its pace.  Time it inside arithmetic_env()."""
    from . import Adam

    item = np.dtype(dtype).itemsize
    n = (256 * 1024) // item * threads
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 1e-3).astype(dtype)
    opt = Adam([p], lr=LR)
    return (lambda: opt.step([g])), n


class arithmetic_env:
    """While timing hot_step: every step splits across the threads asked
    for (ADAMC_SERIAL_CUTOFF=0) and the pool's workers spin between steps
    (ADAMC_POOL_SPIN_US), so no step pays their wake-up.  Both are read at
    every step; the previous values come back on exit."""

    VARS = {"ADAMC_SERIAL_CUTOFF": "0", "ADAMC_POOL_SPIN_US": "20000"}

    def __enter__(self):
        import os

        self.old = {k: os.environ.get(k) for k in self.VARS}
        os.environ.update(self.VARS)
        return self

    def __exit__(self, *exc):
        import os

        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def limit_time(probe_seconds, n, hot_seconds, hot_n):
    """This host's true limit for a step of n elements: the slower of memory
    (the faster probe's time) and arithmetic (the in-cache step's time per
    element, times n).  Returns (seconds, 'memory' or 'arithmetic')."""
    arith = hot_seconds * n / hot_n
    return (probe_seconds, "memory") if probe_seconds >= arith else (arith, "arithmetic")


def make_reference(params, grads):
    """reference.Adam: the textbook NumPy Adam, temporaries and all."""
    from . import reference

    opt = reference.Adam(params, lr=LR)
    return lambda: opt.step(grads)


def make_numpy_inplace(params, grads):
    """A careful NumPy Adam: in-place ufuncs with out=, one scratch buffer per
    parameter, no allocation per step."""
    state = [(np.zeros_like(p), np.zeros_like(p), np.empty_like(p), np.empty_like(p))
             for p in params]
    t = [0]

    def step():
        t[0] += 1
        bc1 = 1 - B1 ** t[0]
        bc2s = math.sqrt(1 - B2 ** t[0])
        for p, g, (m, v, s1, s2) in zip(params, grads, state):
            dt = p.dtype.type
            np.subtract(g, m, out=s1)                # m += (1-b1)(g-m)
            np.multiply(s1, dt(1 - B1), out=s1)
            np.add(m, s1, out=m)
            np.multiply(v, dt(B2), out=v)            # v = b2 v + (1-b2) g g
            np.multiply(g, dt(1 - B2), out=s1)
            np.multiply(s1, g, out=s1)
            np.add(v, s1, out=v)
            np.sqrt(v, out=s2)                       # denom
            np.divide(s2, dt(bc2s), out=s2)
            np.add(s2, dt(EPS), out=s2)
            np.divide(m, s2, out=s1)                 # p -= lr/bc1 * m/denom
            np.multiply(s1, dt(-LR / bc1), out=s1)
            np.add(p, s1, out=p)

    return step


def make_python_loop(params, grads):
    """Plain Python over every element (only sensible for tiny sizes)."""
    state = [([0.0] * p.size, [0.0] * p.size) for p in params]
    t = [0]

    def step():
        t[0] += 1
        bc1 = 1 - B1 ** t[0]
        bc2s = math.sqrt(1 - B2 ** t[0])
        for p, g, (m, v) in zip(params, grads, state):
            pf, gf = p.reshape(-1), g.reshape(-1).tolist()
            pl = pf.tolist()
            for i, gi in enumerate(gf):
                m[i] += (1 - B1) * (gi - m[i])
                v[i] = B2 * v[i] + (1 - B2) * gi * gi
                pl[i] -= LR / bc1 * m[i] / (math.sqrt(v[i]) / bc2s + EPS)
            pf[:] = pl

    return step


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _make_torch(params, grads, **kw):
    import torch

    tps = [torch.from_numpy(p) for p in params]  # shares memory: same data
    for tp, g in zip(tps, grads):
        tp.grad = torch.from_numpy(g)
    opt = torch.optim.Adam(tps, lr=LR, **kw)
    return opt.step


def make_torch_fused(params, grads):
    return _make_torch(params, grads, fused=True)


def make_torch_foreach(params, grads):
    return _make_torch(params, grads, foreach=True)


# name -> (maker, largest total element count it is timed at)
CONTENDERS = {
    "adamc": (make_adamc, None),
    "probe": (make_probe, None),
    "plain probe": (make_plain_probe, None),
    "numpy reference": (make_reference, None),
    "numpy in-place": (make_numpy_inplace, None),
    "python loop": (make_python_loop, 2_000),
    "torch fused": (make_torch_fused, None),
    "torch foreach": (make_torch_foreach, None),
}


def available_contenders():
    names = list(CONTENDERS)
    if not torch_available():
        names = [n for n in names if not n.startswith("torch")]
    return names


def transformer_shapes(d=512, layers=8, vocab=8192):
    """~100 tensors, ~3e7 elements: embeddings, then per layer attention and
    MLP weights with biases and two layer norms."""
    shapes = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,),
                   (d, 4 * d), (4 * d,), (4 * d, d), (d,), (d,), (d,)]
    return shapes + [(d,), (d,)]


def layout_shapes(layout, n):
    """Parameter shapes for a layout: 'one' buffer of n, 'transformer', 'tiny'."""
    if layout == "one":
        return [(n,)]
    if layout == "transformer":
        return transformer_shapes()
    if layout == "tiny":
        return [(64,)] * 500
    raise ValueError(layout)


def make_problem(shapes, dtype, seed=0):
    """Random parameters and small gradients (never zeros)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [(rng.standard_normal(s) * 1e-3).astype(dtype) for s in shapes]
    return params, grads


# ---------------------------------------------------------------- cases and tables

def run_case(layout, dtype, n, rounds, names, pause, share=False, target=None):
    """Time the contenders ``names`` on one case.

    share=True gives every contender the same parameter and gradient arrays
    (each still has its own state), and the two probes one set of buffers:
    about a third of the memory, for ``python -m adamc``.  The parameters
    then drift under several optimizers at once, which changes no timing.
    ``target``: seconds per contender per round (default: 0.05, or 0.3 for
    cases that move more than 100 MB per step).
    """
    shapes = layout_shapes(layout, n)
    total = sum(int(np.prod(s)) for s in shapes)
    itemsize = np.dtype(dtype).itemsize
    fns = {}
    shared = make_problem(shapes, dtype) if share else None
    quads = None
    for name in names:
        maker, limit = CONTENDERS[name]
        if limit is not None and total > limit:
            continue
        params, grads = shared or make_problem(shapes, dtype)
        if share and name in PROBES:
            from . import _kernels

            if quads is None:
                quads = [(p, g, np.zeros_like(p), np.zeros_like(p)) for p, g in zip(params, grads)]
            fns[name] = (lambda q=quads, pf=(name == "probe"): _kernels.probe_buffers(q, pf))
        else:
            fns[name] = maker(params, grads)
    if target is None:
        target = 0.3 if total * itemsize * 7 > 100e6 else 0.05
    samples = interleaved_samples(fns, rounds=rounds, target=target, pause=pause)
    return {"layout": layout, "dtype": dtype, "n": total, "tensors": len(shapes),
            "bytes": adam_bytes(total, itemsize), "samples": samples,
            "times": {name: statistics.median(x) for name, x in samples.items()}}


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=5).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine():
    from . import __version__, cpu_info

    info = cpu_info()
    cpu = cpu_model()
    parts = [cpu, f"{info['available_cpus']} CPUs", f"adamc {__version__} "
             f"({info['isa']}, {info['num_threads']} threads)", f"NumPy {np.__version__}",
             f"Python {platform.python_version()}"]
    if torch_available():
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    return ", ".join(parts)


def case_label(r):
    if r["layout"] == "one":
        return f"{r['dtype']} {fmt_size(r['n'])}"
    return f"{r['dtype']} {r['layout']} ({r['tensors']} tensors, {fmt_size(r['n'])})"


def table(results, names):
    peers = [n for n in names if n != "adamc" and n not in PROBES]
    head = ["case", "adamc", "GB/s", "adamc/probe"] + [f"adamc/{p}" for p in peers]
    rows = []
    for r in results:
        t = r["times"]
        a = t["adamc"]
        row = [case_label(r), fmt_time(a).strip(), f"{r['bytes'] / a / 1e9:.1f}",
               f"{a / probe_time(t):.3f}"]
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
    rows = [[case_label(r)] + [fmt_time(r["times"][n]).strip() if n in r["times"]
                               else "-" for n in names] for r in results]
    return head, rows


# ---------------------------------------------------------------- a busy host

#: Rounds of one contender that differ by more than this factor (slowest over
#: fastest) mean something else took the cores meanwhile.
SPREAD_LIMIT = 1.5


def load_average():
    """The 1-minute load average, or None where the OS has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_host_reasons(load=None, cpus=None, samples=None, bounds=(), spread_limit=SPREAD_LIMIT):
    """Why a run's figures are not this machine's own: [] if no sign of it.

    load, cpus : the 1-minute load average before the run (None: unknown)
        and the CPUs the run may use; a load above half of them means other
        processes held the cores.
    samples : {label: [seconds of each round]}; rounds of one contender that
        differ by more than ``spread_limit`` times.
    bounds : (label, value, low, high, unit) sanity bounds; a figure outside
        them is impossible on a quiet machine.
    """
    reasons = []
    if load is not None and cpus and load > 0.5 * cpus:
        reasons.append(f"load average {load:.2f} on {cpus} CPU(s) before the run: other "
                       "processes were using the cores (a 1-minute average: after other work "
                       "of your own, wait a minute)")
    for label, xs in (samples or {}).items():
        xs = [x for x in xs if x > 0]
        if len(xs) >= 2 and max(xs) > spread_limit * min(xs):
            reasons.append(f"{label}: rounds differ by {max(xs) / min(xs):.1f}x (more than "
                           f"{spread_limit}x)")
    for label, value, low, high, unit in bounds:
        if not low <= value <= high:
            reasons.append(f"{label}: {value:.3g} {unit}, outside the plausible {low:g} to "
                           f"{high:g}")
    return reasons


def busy_host_message(script, reasons):
    lines = [f"{script}: the host looks busy, so no table (its figures would not be this "
             "machine's):"]
    lines += [f"  - {r}" for r in reasons[:10]]
    if len(reasons) > 10:
        lines.append(f"  - and {len(reasons) - 10} more")
    lines.append("Run it again on an idle machine, or with --force to print the table anyway.")
    return "\n".join(lines)
