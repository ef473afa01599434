"""adamc.distributed's step on the transformer-shaped list for N = 1, 2, 3
processes: time per step split into communication and compute, N = 1 against
plain adamc.Adam (interleaved, same run), and the optimizer state and RSS of
each process.

    python bench/distributed.py [--procs 1,2,3] [--rounds 7] [--json out.json]

Each N runs as ``mpiexec -n N python -m mpi4py bench/distributed.py --worker``
(under a timeout); every process steps the same transformer-shaped float32
parameters (adamc._bench.transformer_shapes, ~100 tensors, 2.9e7 elements).
Times are medians over rounds of the slowest process's time per step.
"N flat" rows: the parameters and the gradients are views of one flat
buffer each, which the step reduce-scatters from and gathers into in place.
Needs ``pip install "adamc[mpi]"``.  The model these figures check is in
docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

PARTS = ("check", "pack", "reduce", "step", "gather", "unpack")


def rss():
    """(VmRSS, VmHWM) of this process in bytes (Linux; zeros elsewhere)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k = line.split(":")[0]
                if k in out:
                    out[k] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


def flat_views(arrays):
    """Copies of ``arrays`` as consecutive views of one flat buffer."""
    base = np.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype)
    out, off = [], 0
    for a in arrays:
        v = base[off:off + a.size].reshape(a.shape)
        v[...] = a
        out.append(v)
        off += a.size
    return out


def worker(args):
    from mpi4py import MPI

    import adamc
    import adamc.distributed as D
    from adamc import _bench

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shapes = _bench.transformer_shapes()
    params, grads = _bench.make_problem(shapes, np.float32, seed=0)
    grads = [g * np.float32(1 + rank) for g in grads]
    if args.flat:  # parameters and gradients as views of one flat buffer each
        params, grads = flat_views(params), flat_views(grads)
    rss_before = rss()[0]
    opt = D.Adam(params, lr=1e-4)
    steps = args.steps
    for _ in range(3):
        opt.step(grads)
    per_round, parts = [], {p: [] for p in PARTS}
    for _ in range(args.rounds):
        comm.Barrier()
        acc = dict.fromkeys(PARTS, 0.0)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step(grads)
            for p in PARTS:
                acc[p] += opt.last_timing[p]
        dt = (time.perf_counter() - t0) / steps
        per_round.append(comm.allreduce(dt, op=MPI.MAX))
        for p in PARTS:
            parts[p].append(acc[p] / steps)
    result = {
        "rank": rank, "size": size,
        "step": statistics.median(per_round),
        "parts": {p: statistics.median(v) for p, v in parts.items()},
        "state_bytes": opt.state_nbytes(), "buffer_bytes": opt.buffer_nbytes(),
        "rss": rss()[0], "peak_rss": rss()[1], "rss_before_optimizer": rss_before,
        "elements": int(sum(int(np.prod(s)) for s in shapes)), "tensors": len(shapes),
    }
    if size == 1:  # the same step, plain adamc.Adam, interleaved round by round;
        # both on fresh copies made alike (where the pages lie moves a step by 5%)
        opt = D.Adam([p.copy() for p in params], lr=1e-4)
        plain = adamc.Adam([p.copy() for p in params], lr=1e-4)
        for _ in range(3):
            opt.step(grads)
            plain.step(grads)
        samples = _bench.interleaved_samples({"distributed": lambda: opt.step(grads),
                                              "adamc.Adam": lambda: plain.step(grads)},
                                             rounds=2 * args.rounds + 1, target=0.25)
        result["interleaved"] = {k: statistics.median(v) for k, v in samples.items()}
        result["paired_ratio"] = statistics.median(  # round by round: the host's load drifts
            a / b for a, b in zip(samples["distributed"], samples["adamc.Adam"]))
        result["machine"] = _bench.describe_machine()
        result["isa"] = adamc.cpu_info()["isa"]
    everything = comm.gather(result, root=0)
    if rank == 0:
        print("RESULT " + json.dumps(everything), flush=True)


def run(n, args, flat=False):
    here = os.path.dirname(sys.executable)
    mpiexec = os.path.join(here, "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec")
    cmd = [sys.executable, "-m", "mpi4py", os.path.abspath(__file__), "--worker",
           "--rounds", str(args.rounds), "--steps", str(args.steps)] + (
               ["--flat"] if flat else [])
    if n > 1:
        cmd = [mpiexec, "-n", str(n)] + cmd
    env = dict(os.environ)
    env.setdefault("ADAMC_NUM_THREADS", "1")  # one thread per process: N <= cores
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        raise SystemExit(f"N={n} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(line[0][len("RESULT "):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", default="1,2,3")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="steps per round")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--flat", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    results = {}
    for n in [int(x) for x in args.procs.split(",")]:
        results[n] = run(n, args)
    for n in [int(x) for x in args.procs.split(",") if int(x) > 1]:
        results[f"{n} flat"] = run(n, args, flat=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=1)
    first = next(iter(results.values()))[0]
    print(f"# adamc.distributed on the transformer-shaped list ({first['tensors']} tensors, "
          f"{first['elements']:.3g} float32 elements); {first.get('machine', '')}")
    print("# MPI: " + subprocess.run([sys.executable, "-c", "from mpi4py import MPI; "
                                      "print(MPI.Get_library_version().splitlines()[0])"],
                                     capture_output=True, text=True).stdout.strip())
    print("# medians of rounds; ms per step (slowest process); parts per process "
          "(comm = reduce + gather; copies = pack + unpack)")
    print(f"{'N':>7} {'step':>8} {'comm':>8} {'compute':>8} {'copies':>8} {'check':>7} "
          f"{'state/proc':>11} {'buffers':>9} {'RSS/proc':>9}")
    for n, rs in results.items():
        r0 = rs[0]
        p = r0["parts"]
        comm_t = p["reduce"] + p["gather"]
        print(f"{n:>7} {1e3 * r0['step']:8.2f} {1e3 * comm_t:8.2f} {1e3 * p['step']:8.2f} "
              f"{1e3 * (p['pack'] + p['unpack']):8.2f} {1e3 * p['check']:7.3f} "
              f"{max(r['state_bytes'] for r in rs) / 2**20:9.1f}Mi "
              f"{max(r['buffer_bytes'] for r in rs) / 2**20:7.1f}Mi "
              f"{max(r['rss'] for r in rs) / 2**20:7.0f}Mi")
    if 1 in results and "interleaved" in results[1][0]:
        t = results[1][0]["interleaved"]
        print(f"N=1 against plain adamc.Adam (interleaved, {2 * args.rounds + 1} rounds, "
              f"{results[1][0]['isa']}): {1e3 * t['distributed']:.2f} ms vs "
              f"{1e3 * t['adamc.Adam']:.2f} ms (medians), median of the rounds' ratios "
              f"{results[1][0]['paired_ratio']:.3f}")
    return results


if __name__ == "__main__":
    main()
