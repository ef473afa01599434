"""adamc's step inside a training-like loop: a matrix product between steps.

    python bench/train_loop.py [--sizes small,medium,large] [--rounds 7]
                               [--oversubscribe] [--no-torch]

Each iteration runs a forward-pass-like chain of matrix products through the
model's weight matrices (NumPy's BLAS with its default threads: caches are
cold and BLAS's threads may still be spinning when the step starts), then
one optimizer step, which alone is timed.  The contenders in the loop take
turns iteration by iteration (each after its own matrix products, in an
order shuffled afresh each iteration, seeded), so that a burst of load from
elsewhere falls on all of them alike; a round is the mean step time over
its iterations, and the figures are medians of the rounds:

- adamc with the default thread count (and the tuner's choices, after a
  warm-up that runs every size class's trial);
- adamc pinned to 1 thread (``adamc.set_num_threads(1)``);
- ``adamc.reference.Adam`` (the NumPy Adam);
- ``torch.optim.Adam(fused=True)`` on tensors sharing the arrays' memory,
  torch's default threads (when torch is importable);
- adamc (default threads) in a tight loop of steps with nothing between,
  as the other benchmarks time it.

``--oversubscribe`` starts two CPU-bound processes beside the benchmark for
its whole run (a data loader, a second job), so that any thread may lose
its core at any moment.

Models (parameter lists shaped like MLP layers, weights and biases):
  small   64-64-64-10, float64        ~9k parameters (below the cutoff)
  medium  64-256-256-10, float64      ~85k (scikit-learn's MLP on digits)
  large   1024-2048-2048-1024, float32 ~8.4M
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import time

import numpy as np

import adamc
from adamc import reference
from adamc._bench import cpu_model

MODELS = {
    "small": ([64, 64, 64, 10], np.float64, 64),
    "medium": ([64, 256, 256, 10], np.float64, 200),
    "large": ([1024, 2048, 2048, 1024], np.float32, 64),
}


def layers(widths, dtype, rng):
    ps = []
    for a, b in zip(widths, widths[1:]):
        ps.append((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype))
        ps.append(np.zeros(b, dtype))
    return ps


def burn(stop):
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def make_contenders(params, grads, batch, use_torch):
    """name -> (step function, between function)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, params[0].shape[0])).astype(params[0].dtype)
    weights = [p for p in params if p.ndim == 2]

    def forward():
        h = x
        for w in weights:
            h = np.maximum(h @ w, 0)
        return h

    def fresh():
        return [p.copy() for p in params]

    out = {}
    ps = fresh()
    opt = adamc.Adam(ps, lr=1e-4)

    def adamc_default():
        adamc.set_num_threads(None)
        opt.step(grads)

    ps1 = fresh()
    opt1 = adamc.Adam(ps1, lr=1e-4)

    def adamc_one():
        adamc.set_num_threads(1)
        opt1.step(grads)

    psr = fresh()
    ref = reference.Adam(psr, lr=1e-4)
    out["adamc default"] = (adamc_default, forward)
    out["adamc 1 thread"] = (adamc_one, forward)
    out["numpy reference"] = (lambda: ref.step(grads), forward)
    pst = fresh()
    optt = adamc.Adam(pst, lr=1e-4)

    def tight():
        adamc.set_num_threads(None)
        optt.step(grads)

    out["adamc default, tight loop"] = (tight, None)
    if use_torch:
        import torch

        tp = [torch.from_numpy(p.copy()) for p in params]
        for t, g in zip(tp, grads):
            t.grad = torch.from_numpy(g)
        topt = torch.optim.Adam(tp, lr=1e-4, fused=True)
        out["torch fused"] = (topt.step, forward)
    return out


def time_loop(step, between, iters):
    """Mean seconds of `step` over `iters` iterations (between untimed)."""
    total = 0.0
    for _ in range(iters):
        if between is not None:
            between()
        t0 = time.perf_counter()
        step()
        total += time.perf_counter() - t0
    return total / iters


def time_turns(cont, iters, order):
    """Mean seconds per step of each contender over `iters` iterations in
    which the contenders take turns (each after its own `between`)."""
    total = dict.fromkeys(cont, 0.0)
    keys = list(cont)
    for _ in range(iters):
        order.shuffle(keys)
        for k in keys:
            step, between = cont[k]
            between()
            t0 = time.perf_counter()
            step()
            total[k] += time.perf_counter() - t0
    return {k: v / iters for k, v in total.items()}


def bench_model(name, rounds, use_torch):
    widths, dtype, batch = MODELS[name]
    rng = np.random.default_rng(0)
    params = layers(widths, dtype, rng)
    grads = [(rng.standard_normal(p.shape) * 1e-3).astype(dtype) for p in params]
    n = sum(p.size for p in params)
    cont = make_contenders(params, grads, batch, use_torch)
    # warm-up: state allocation, every size class's tuning trial, torch's init
    for step, between in cont.values():
        time_loop(step, between, 30)
    t_one = time_loop(cont["adamc 1 thread"][0], None, 3)
    iters = max(10, min(200, int(0.2 / max(t_one, 1e-6))))
    samples = {k: [] for k in cont}
    order = random.Random(0)
    tight = {k: c for k, c in cont.items() if c[1] is None}
    in_loop = {k: c for k, c in cont.items() if c[1] is not None}
    for _ in range(rounds):
        for k, t in time_turns(in_loop, iters, order).items():
            samples[k].append(t)
        for k, c in tight.items():
            samples[k].append(time_loop(*c, iters))
    adamc.set_num_threads(None)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return n, np.dtype(dtype).name, iters, med


def fmt(t):
    return f"{t * 1e6:9.1f} us" if t < 1e-3 else f"{t * 1e3:9.2f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--oversubscribe", action="store_true",
                    help="two CPU-bound processes run beside the benchmark")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    use_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            use_torch = True
        except ImportError:
            pass
    procs, stop = [], None
    if args.oversubscribe:
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        procs = [ctx.Process(target=burn, args=(stop,), daemon=True) for _ in range(2)]
        for q in procs:
            q.start()
        time.sleep(0.5)
    try:
        info = adamc.cpu_info()
        print(f"# {cpu_model()}, {info['available_cpus']} CPUs, kernel {info['isa']}, "
              f"adamc default {info['num_threads']} threads, "
              f"numpy {np.__version__}"
              + (f", torch {__import__('torch').__version__} "
                 f"({__import__('torch').get_num_threads()} threads)" if use_torch else "")
              + (", OVERSUBSCRIBED: 2 CPU-bound processes beside it" if args.oversubscribe
                 else "")
              + f"; {args.rounds} rounds, contenders taking turns step by step; medians")
        for name in args.sizes.split(","):
            n, dt, iters, t = bench_model(name, args.rounds, use_torch)
            print(f"\n{name}: {n} parameters, {dt}, {iters} steps a round "
                  "(time per step; a matmul chain between steps except the tight loop)")
            base = t["adamc default"]
            for k, v in t.items():
                print(f"  {k:<26} {fmt(v)}   adamc default / this {base / v:6.3f}")
            line = (f"  default / 1 thread {base / t['adamc 1 thread']:.3f}, "
                    f"in the loop / tight {base / t['adamc default, tight loop']:.3f}, "
                    f"/ numpy reference {base / t['numpy reference']:.3f}")
            if "torch fused" in t:
                line += f", / torch fused {base / t['torch fused']:.3f}"
            print(line)
        tuning = adamc.cpu_info().get("tuning", {"classes": []})["classes"]
        print("\ntuning:", [(c["work"], c["chosen"]) for c in tuning])
    finally:
        if stop is not None:
            stop.set()
            for q in procs:
                q.join(timeout=5)


if __name__ == "__main__":
    main()
