"""Adam with 8-bit optimizer state against float32 state, on two problems.

``state_dtype="int8"`` keeps both moments as 8-bit codes with a float32
scale per block of 256 elements (docs/int8-state.md).  This script trains
twice from the same start, once with each state, and compares:

* the digits MLP of ``train_mlp.py`` (20 epochs): loss per epoch and
  held-out accuracy;
* a least-squares fit, ``Y = X W + noise`` with ``W`` 64 x 128 (8192
  elements: 8-bit state) and a cosine learning-rate decay: loss per step,
  which should end at the same noise floor.

Run it from the repository root::

    python examples/int8_state.py                        # print the comparison
    python examples/int8_state.py --plot docs/int8-loss.png

Needs scikit-learn (the digits); ``--plot`` also needs matplotlib.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib
import sys

import numpy as np

import adamc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_mlp  # noqa: E402  (the sibling example)

STATES = {"float32": {}, "int8": {"state_dtype": "int8"},
          "int8-pow2": {"state_dtype": "int8", "quant_map": "pow2"}}


def least_squares(state="float32", *, steps=600, lr=0.05, seed=0, optimizer=adamc.Adam):
    """Fit ``W`` (64 x 128) to ``Y = X W_true + 0.1 noise`` with Adam.

    The learning rate decays from ``lr`` to 0 along a cosine, so both runs
    settle at the least-squares minimum instead of hovering around it at a
    distance set by lr.  Its loss (mean squared error) is the noise
    floor, about 0.01 * (1 - 64/512) = 0.00875.

    Returns
    -------
    dict
        ``losses``: the mean squared error before each step and after the
        last (``steps + 1`` values); ``W``: the fitted weights;
        ``state_nbytes``: bytes of optimizer state (None if the optimizer
        does not report it).
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    W_true = rng.standard_normal((64, 128)).astype(np.float32)
    Y = (X @ W_true + 0.1 * rng.standard_normal((512, 128))).astype(np.float32)
    W = np.zeros((64, 128), dtype=np.float32)

    def schedule(t):
        return lr * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))

    opt = optimizer([W], lr=schedule, **STATES[state])
    losses = []
    for _ in range(steps):
        E = X @ W - Y
        losses.append(float(np.mean(E * E)))
        opt.step([(np.float32(2 / E.size) * (X.T @ E)).astype(np.float32)])
    E = X @ W - Y
    losses.append(float(np.mean(E * E)))
    nbytes = opt.state_nbytes() if hasattr(opt, "state_nbytes") else None
    return {"losses": losses, "W": W, "state_nbytes": nbytes}


def digits(state="float32", *, epochs=20, seed=0, optimizer="adamc"):
    """train_mlp's digits MLP with this state (its train() result)."""
    data = train_mlp.load_data(np.float32, seed)
    return train_mlp.train(optimizer, epochs=epochs, seed=seed, data=data, log=None,
                           **STATES[state])


def plot(mlp, lsq, path):
    """Both problems side by side, float32 and 8-bit state in each."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    styles = {"float32": {"linewidth": 3, "alpha": 0.5}, "int8": {"linestyle": "--"},
              "int8-pow2": {"linestyle": ":"}}
    for state, run in mlp.items():
        epochs = range(1, len(run["losses"]) + 1)
        left.plot(epochs, run["losses"], label=f"{state} state: held-out accuracy "
                  f"{100 * run['test_accuracy'][-1]:.1f}%", **styles[state])
    left.set_yscale("log")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel("mean training loss (cross-entropy)")
    left.set_title("MLP on sklearn digits")
    left.legend()
    for state, run in lsq.items():
        right.plot(range(len(run["losses"])), run["losses"],
                   label=f"{state} state: final {run['losses'][-1]:.5f}", **styles[state])
    right.set_yscale("log")
    right.set_xlabel("step")
    right.set_ylabel("mean squared error")
    right.set_title("least squares, W 64 x 128, cosine lr")
    right.legend()
    fig.suptitle("adamc.Adam: float32 optimizer state vs 8-bit (state_dtype=\"int8\")")
    fig.savefig(path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=600, help="least-squares steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", metavar="PNG", help="write both problems' loss curves here")
    args = ap.parse_args(argv)
    for name in ("epochs", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib")
    mlp = {s: digits(s, epochs=args.epochs, seed=args.seed) for s in STATES}
    lsq = {s: least_squares(s, steps=args.steps, seed=args.seed) for s in STATES}
    print(f"adamc kernel {adamc.cpu_info()['isa']}, seed {args.seed}")
    print(f"{'state':9s} {'digits loss':>12s} {'held-out acc':>13s} {'lstsq loss':>11s} "
          f"{'lstsq state bytes':>18s}")
    for s in STATES:
        nbytes = lsq[s]["state_nbytes"]
        print(f"{s:9s} {mlp[s]['losses'][-1]:12.5f} {100 * mlp[s]['test_accuracy'][-1]:12.1f}% "
              f"{lsq[s]['losses'][-1]:11.6f} {nbytes if nbytes is not None else '-':>18}")
    for s in ("int8", "int8-pow2"):
        gap = lsq[s]["losses"][-1] / lsq["float32"]["losses"][-1] - 1
        print(f"least squares: {s} state's final loss {100 * gap:+.3f}% of float32 state's")
    if args.plot:
        plot(mlp, lsq, args.plot)
        print(f"loss curves written to {args.plot}")
    return {"digits": mlp, "least_squares": lsq}


if __name__ == "__main__":
    main(sys.argv[1:])
