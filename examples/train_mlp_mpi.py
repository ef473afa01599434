"""Train the digits MLP of train_mlp.py data-parallel over MPI processes,
with adamc.distributed.Adam (optimizer state sharded, ZeRO stage 1).

Every process holds the whole model and takes its own slice of every
mini-batch; the optimizer sums the slices' gradients across processes, steps
its shard of the parameters and gathers the rest, so every process ends each
step with the same weights.  Run it from the repository root::

    mpiexec -n 2 python -m mpi4py examples/train_mlp_mpi.py
    mpiexec -n 2 python -m mpi4py examples/train_mlp_mpi.py --compare  # also 1 process

(``python -m mpi4py`` makes an uncaught exception on one process end the
whole job.)  Needs ``pip install "adamc[mpi]" scikit-learn``.  ``--compare``
also trains the single-process adamc.Adam on the same mini-batches (on
process 0) and prints both accuracies.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_mlp  # noqa: E402  (the model, the data and the single-process loop)

import adamc  # noqa: E402
import adamc.distributed  # noqa: E402


def rss_mib():
    """This process's resident set size (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def train_distributed(comm, *, epochs=20, batch_size=32, lr=2e-3, hidden=(128, 64), seed=0,
                      log=print):
    """train_mlp.train's loop with each process on its slice of each batch.

    The gradient of a slice is its mean loss's gradient times the slice's
    share of the batch, and the optimizer sums (``average=False``): the sum
    is the gradient of the whole batch's mean loss, as in one process.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    X_train, y_train, X_test, y_test = train_mlp.load_data(np.float32, seed)
    rng = np.random.default_rng(seed)  # the same on every process: same init, same batches
    sizes = (X_train.shape[1], *hidden, int(y_train.max()) + 1)
    params = train_mlp.init_params(sizes, rng, np.float32)
    opt = adamc.distributed.Adam(params, lr=lr, comm=comm, average=False)
    accs, step_seconds, steps = [], 0.0, 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        losses = []
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            mine = np.array_split(batch, size)[rank]  # this process's slice
            if len(mine):
                logits, acts = train_mlp.forward(params, X_train[mine])
                loss, dlogits = train_mlp.softmax_cross_entropy(logits, y_train[mine])
                dlogits *= np.float32(len(mine) / len(batch))
                grads = train_mlp.backward(params, acts, dlogits)
                losses.append(loss)
            else:  # more processes than examples in this batch: contribute zeros
                grads = {k: np.zeros_like(v) for k, v in params.items()}
            t0 = time.perf_counter()
            opt.step(grads)
            step_seconds += time.perf_counter() - t0
            steps += 1
        accs.append(train_mlp.accuracy(params, X_test, y_test))
        if log is not None and rank == 0:
            log(train_mlp.progress_line(epoch, epochs, float(np.mean(losses)), accs[-1]))
    return {"test_accuracy": accs, "step_seconds": step_seconds, "steps": steps,
            "state_bytes": opt.state_nbytes(), "buffer_bytes": opt.buffer_nbytes(),
            "params": params}


def main(argv=None):
    from mpi4py import MPI

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true",
                        help="also train with one process (adamc.Adam) on process 0")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    comm = MPI.COMM_WORLD
    res = train_distributed(comm, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed)
    states = comm.gather((res["state_bytes"], res["buffer_bytes"], rss_mib()), root=0)
    out = {"distributed": res}
    if comm.Get_rank() == 0:
        n = comm.Get_size()
        print(f"{n} processes: test accuracy {100 * res['test_accuracy'][-1]:.1f}%, "
              f"{1e6 * res['step_seconds'] / res['steps']:.0f} us per opt.step")
        for r, (sb, bb, rss) in enumerate(states):
            print(f"  process {r}: optimizer state {sb / 1024:.1f} KiB, communication "
                  f"buffers {bb / 1024:.1f} KiB, RSS {rss:.0f} MiB" if rss else
                  f"  process {r}: optimizer state {sb / 1024:.1f} KiB")
        if args.compare:
            single = train_mlp.train("adamc", epochs=args.epochs, batch_size=args.batch_size,
                                     lr=args.lr, seed=args.seed, log=None)
            print(f"1 process (adamc.Adam): test accuracy "
                  f"{100 * single['test_accuracy'][-1]:.1f}%, "
                  f"{1e6 * single['step_seconds'] / single['steps']:.0f} us per opt.step")
            out["single"] = single
    return out


if __name__ == "__main__":
    main()
