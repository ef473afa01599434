"""adamc's 8-bit-state step against bitsandbytes' ``Adam8bit`` on the CPU,
side by side in one run, on the same float32 buffer.

    python bench/int8_vs_bnb.py [--n 5e7] [--rounds 5] [--threads N]

Both step one float32 parameter of ``--n`` elements with 8-bit blockwise
state (the same format: docs/int8-state.md), adamc also with its lookup-free
map (``quant_map="pow2"``); adamc's float32-state step runs in the same
rounds as the yardstick.  Rounds are interleaved (each contender
once per round, in turn) and the medians compared.  Both libraries get the
same thread count (adamc's default, or ``--threads``; torch's intra-op
threads set to it).  Without torch or bitsandbytes the script says so and
exits with status 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import adamc
from adamc._bench import describe_machine, fmt_time


def bnb_step(base, grad):
    """A step function of bitsandbytes' Adam8bit on copies of the buffers,
    or the reason it cannot run."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as exc:
        return None, f"{exc.name} is not installed"
    p = torch.nn.Parameter(torch.from_numpy(base.copy()))
    p.grad = torch.from_numpy(grad.copy())
    opt = bnb.optim.Adam8bit([p], lr=1e-3)
    if p.numel() < 4096:
        return None, "the buffer is below bitsandbytes' min_8bit_size"
    opt.step()  # creates the state
    if opt.state[p]["state1"].dtype != torch.uint8:
        return None, "bitsandbytes did not keep 8-bit state"
    return opt.step, f"bitsandbytes {bnb.__version__}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=float, default=5e7)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    n = int(args.n)
    if args.threads:
        adamc.set_num_threads(args.threads)
    threads = adamc.get_num_threads()
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n).astype(np.float32)
    grad = (rng.standard_normal(n) * 0.1).astype(np.float32)

    bnb, why = bnb_step(base, grad)
    if bnb is None:
        print(f"int8_vs_bnb: skipped: {why} (pip install torch bitsandbytes)")
        return None
    import torch
    torch.set_num_threads(threads)

    steps = {"bitsandbytes Adam8bit": bnb}
    for name, kw in (("adamc int8 state", {"state_dtype": "int8"}),
                     ("adamc int8 pow2 map", {"state_dtype": "int8", "quant_map": "pow2"}),
                     ("adamc fp32 state", {})):
        p = base.copy()
        opt = adamc.Adam([p], lr=1e-3, **kw)
        opt.step([grad])
        steps[name] = lambda o=opt: o.step([grad])
    samples = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, f in steps.items():
            t0 = time.perf_counter()
            f()
            samples[name].append(time.perf_counter() - t0)
            time.sleep(0.05)
    med = {k: statistics.median(v) for k, v in samples.items()}

    print(describe_machine())
    print(f"{why}; one float32 buffer of {n:.3g} elements; median of {args.rounds} "
          f"interleaved rounds, {threads} thread(s) each")
    print(f"{'step':24s} {'median':>10s} {'min':>10s} {'max':>10s}")
    for name, xs in samples.items():
        print(f"{name:24s} {fmt_time(med[name]):>10s} {fmt_time(min(xs)):>10s} "
              f"{fmt_time(max(xs)):>10s}")
    ratio = med["bitsandbytes Adam8bit"] / med["adamc int8 state"]
    ratio2 = med["bitsandbytes Adam8bit"] / med["adamc int8 pow2 map"]
    print(f"bitsandbytes / adamc int8: {ratio:.1f}x, with the pow2 map {ratio2:.1f}x "
          "(goal >= 20x)")
    for name in ("adamc int8 state", "adamc int8 pow2 map"):
        print(f"{name} / adamc fp32 state: {med[name] / med['adamc fp32 state']:.3f}")
    return {"times": med, "samples": samples, "ratio": ratio, "ratio_pow2": ratio2}


if __name__ == "__main__":
    main(sys.argv[1:])
