"""Train a small multi-layer perceptron on handwritten digits with adamc.Adam.

Everything except the optimizer step is plain NumPy written out below: the
forward pass, softmax cross-entropy and the backward pass of a ReLU network.
The data set is scikit-learn's copy of the UCI handwritten digits (1797 8x8
images, shipped inside the scikit-learn package, so nothing is downloaded).

Run it from the repository root::

    python examples/train_mlp.py                       # adamc.Adam, float32
    python examples/train_mlp.py --optimizer reference # the pure NumPy Adam
    python examples/train_mlp.py --optimizer both      # both, same seed: compare
    python examples/train_mlp.py --optimizer both --plot losses.png
    python examples/train_mlp.py --state int8          # 8-bit optimizer state
    python examples/train_mlp.py --state int8 --quant-map pow2   # its lookup-free map

``--optimizer both`` trains twice from the same initial weights on the same
mini-batches, once with ``adamc.Adam`` and once with ``adamc.reference.Adam``,
then prints the largest difference between the two per-epoch loss curves
and the time each spent inside ``opt.step``.  The difference is 0 with
``ADAMC_ISA=baseline``; adamc's avx2 and avx512 kernels round each
multiply-add once (FMA) where the reference rounds twice, and training
amplifies that last-bit difference over the steps (the script says so when
the curves differ).

Needs scikit-learn (``pip install scikit-learn``); ``--plot`` also needs
matplotlib.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

import adamc

OPTIMIZERS = {"adamc": adamc.Adam, "reference": adamc.reference.Adam}


# -- data ---------------------------------------------------------------------

def load_data(dtype=np.float32, seed=0, test_fraction=0.25):
    """The digits, split into a training set and a held-out test set.

    Parameters
    ----------
    dtype : numpy dtype, default float32
        Dtype of the returned images (the labels are int64).
    seed : int, default 0
        Seed of the (stratified) split.
    test_fraction : float, default 0.25
        Share of the images held out for measuring accuracy.

    Returns
    -------
    X_train, y_train, X_test, y_test : ndarray
        Images as rows of 64 pixels scaled to [0, 1], and labels 0-9.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("train_mlp.py needs scikit-learn for its data set: "
                         "pip install scikit-learn") from None
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)  # pixels are 0..16; [0, 1] suits the init below
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y)
    return X_train, y_train, X_test, y_test


# -- the model ----------------------------------------------------------------

def init_params(sizes, rng, dtype=np.float32):
    """Weights and biases of a fully connected network, by name.

    Parameters
    ----------
    sizes : sequence of int
        Width of every layer, input first, e.g. ``(64, 128, 64, 10)``.
    rng : numpy.random.Generator
    dtype : numpy dtype, default float32

    Returns
    -------
    dict
        ``{"W1": (sizes[0], sizes[1]) array, "b1": (sizes[1],) array, ...}``.
        These arrays are what the optimizer updates in place.
    """
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        # He initialization: keeps the activations' variance about constant
        # through ReLU layers, so no layer starts saturated or dead.
        params[f"W{i}"] = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(n_out, dtype=dtype)
    return params


def n_layers(params):
    """Number of weight layers: one weight and one bias each."""
    return len(params) // 2


def forward(params, X):
    """Logits for a batch, and the activations the backward pass needs.

    Returns
    -------
    logits : ndarray, shape (batch, classes)
    activations : list of ndarray
        The input of every layer: ``X``, then each hidden layer's ReLU output.
    """
    last = n_layers(params)
    activations = [X]
    for i in range(1, last):
        z = activations[-1] @ params[f"W{i}"] + params[f"b{i}"]
        activations.append(np.maximum(z, 0))  # ReLU
    # The last layer is linear: the softmax is part of the loss.
    logits = activations[-1] @ params[f"W{last}"] + params[f"b{last}"]
    return logits, activations


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    Returns
    -------
    loss : float
    dlogits : ndarray
        d(loss)/d(logits), same shape and dtype as ``logits``.
    """
    # Shifting by the row maximum changes nothing mathematically and keeps
    # exp() from overflowing.
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = -log_probs[rows, y].mean()
    # d/dz of -log softmax(z)[y] is softmax(z) - onehot(y).
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1
    dlogits /= len(y)
    return float(loss), dlogits


def backward(params, activations, dlogits):
    """Gradients of the loss with respect to every parameter, by name.

    Parameters
    ----------
    params : dict
        As returned by :func:`init_params`.
    activations : list of ndarray
        As returned by :func:`forward`.
    dlogits : ndarray
        As returned by :func:`softmax_cross_entropy`.

    Returns
    -------
    dict
        Same names, shapes and dtypes as ``params``: what ``opt.step`` takes.
    """
    grads = {}
    delta = dlogits  # d(loss)/d(pre-activation) of the current layer
    for i in range(n_layers(params), 0, -1):
        a_in = activations[i - 1]
        grads[f"W{i}"] = a_in.T @ delta
        grads[f"b{i}"] = delta.sum(axis=0)
        if i > 1:
            # Through the weights, then through the ReLU that produced a_in:
            # its derivative is 1 where it passed its input on, 0 elsewhere.
            delta = (delta @ params[f"W{i}"].T) * (a_in > 0)
    return grads


def accuracy(params, X, y):
    logits, _ = forward(params, X)
    return float(np.mean(logits.argmax(axis=1) == y))


# -- training -----------------------------------------------------------------

def progress_line(epoch, epochs, loss, acc, width=20):
    """``epoch  3/20 [###-----------------] loss 0.1234  test acc 96.1%``."""
    done = round(width * epoch / epochs)
    bar = "#" * done + "-" * (width - done)
    digits = len(str(epochs))
    return f"epoch {epoch:>{digits}}/{epochs} [{bar}] loss {loss:.4f}  test acc {100 * acc:.1f}%"


def storage_dtype(name):
    """A dtype by name; "bfloat16" is ml_dtypes' (pip install ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def train(optimizer="adamc", *, epochs=20, batch_size=32, lr=2e-3, hidden=(128, 64),
          dtype=np.float32, seed=0, data=None, log=print, clip=None, loss_scaling=False,
          **options):
    """Train the MLP with mini-batch Adam and record what happened.

    The seed fixes the initial weights and the order of the mini-batches, so
    two calls that differ only in ``optimizer`` see exactly the same inputs.

    Parameters
    ----------
    optimizer : {"adamc", "reference"}
        ``adamc.Adam`` or ``adamc.reference.Adam`` (pure NumPy).
    epochs : int, default 20
    batch_size : int, default 32
    lr : float, default 2e-3
    hidden : sequence of int, default (128, 64)
        Widths of the hidden layers.
    dtype : numpy dtype, default float32
    seed : int, default 0
    data : tuple, optional
        ``(X_train, y_train, X_test, y_test)`` with images in ``dtype``, as
        :func:`load_data` returns them (the default: ``load_data(dtype, seed)``).
    log : callable or None, default print
        Receives one progress line per epoch; None is silent.
    clip : float, optional
        Clip the gradients by their global norm (``max_grad_norm``, fused
        into the step).
    loss_scaling : bool, default False
        Dynamic loss scaling (``adamc.LossScaler``): the loss gradient is
        multiplied by the scale before the backward pass, the step divides
        it out, and a step whose gradients overflowed is skipped.
    **options
        More options of the optimizer (``master_weights``, ``state_dtype``,
        ``stochastic_rounding``, ``seed``...).  With a 16-bit ``dtype`` the
        weights are stored in it, forward and backward compute in float32 and
        the gradients are handed over in the 16-bit dtype, as a mixed-precision
        training loop does.

    Returns
    -------
    dict
        ``losses`` (mean training loss of each epoch), ``test_accuracy``
        (held-out accuracy after each epoch), ``step_seconds`` (total time
        inside ``opt.step``), ``train_seconds`` (total time of the loop),
        ``steps`` (number of ``opt.step`` calls), ``skipped`` (steps the loss
        scaler skipped) and ``params`` (final weights).
    """
    dtype = np.dtype(dtype)
    compute = np.float32 if dtype.itemsize == 2 else dtype  # 16-bit: float32 arithmetic
    X_train, y_train, X_test, y_test = data if data is not None else load_data(compute, seed)
    rng = np.random.default_rng(seed)
    sizes = (X_train.shape[1], *hidden, int(y_train.max()) + 1)
    params = {k: v.astype(dtype) for k, v in init_params(sizes, rng, compute).items()}
    # Built from a mapping, the optimizer takes its gradients as a mapping
    # with the same names: backward() returns exactly that.
    if options.get("stochastic_rounding"):
        options = {"seed": seed, **options}  # the rounding, like the rest, follows the seed
    opt = OPTIMIZERS[optimizer](params, lr=lr, **options)

    def widened():
        return params if dtype == compute else {k: v.astype(compute) for k, v in params.items()}

    # A scale high enough that float16 gradients overflow at first, as they
    # do on a large model: the scaler skips those steps and backs off.
    scaler = adamc.LossScaler(init_scale=2.0**24) if loss_scaling else None
    losses, test_accuracy = [], []
    step_seconds = 0.0
    steps = skipped = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        batch_losses = []
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            work = widened()
            logits, activations = forward(work, X_train[batch])
            loss, dlogits = softmax_cross_entropy(logits, y_train[batch])
            if scaler is not None:
                dlogits = dlogits * np.float32(scaler.scale)  # the scaled loss's gradient
            grads = backward(work, activations, dlogits)
            if dtype != compute:
                # (with loss scaling a gradient beyond float16's range is Inf:
                # expected, the scaler skips that step and backs off)
                with np.errstate(over="ignore" if scaler is not None else "warn"):
                    grads = {k: g.astype(dtype) for k, g in grads.items()}
            # Time the optimizer alone: forward and backward are the same
            # NumPy code for both optimizers.
            t0 = time.perf_counter()
            if scaler is not None:
                skipped += not scaler.step(opt, grads, max_grad_norm=clip)
            elif clip is not None:
                opt.step(grads, max_grad_norm=clip)
            else:
                opt.step(grads)
            step_seconds += time.perf_counter() - t0
            steps += 1
            batch_losses.append(loss)
        losses.append(float(np.mean(batch_losses)))
        test_accuracy.append(accuracy(widened(), X_test, y_test))
        if log is not None:
            log(progress_line(epoch, epochs, losses[-1], test_accuracy[-1]))
    return {
        "losses": losses,
        "test_accuracy": test_accuracy,
        "step_seconds": step_seconds,
        "train_seconds": time.perf_counter() - start,
        "steps": steps,
        "skipped": skipped,
        "params": params,
    }


# -- reporting ----------------------------------------------------------------

def plot_losses(runs, path):
    """Write the per-epoch loss curves of ``runs`` (name -> train() result) to ``path``."""
    # The object-oriented API needs no GUI backend and leaves pyplot's global
    # state alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    styles = {"adamc": {"linewidth": 3, "alpha": 0.5}, "reference": {"linestyle": "--"}}
    for name, run in runs.items():
        epochs = range(1, len(run["losses"]) + 1)
        ax.plot(epochs, run["losses"], label=name, **styles.get(name, {}))
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss (cross-entropy)")
    ax.set_title("MLP on sklearn digits, Adam")
    ax.legend()
    fig.savefig(path, dpi=120)


def explain_gap(diff, isa, steps):
    """Lines saying why the two loss curves differ by ``diff`` (none if 0)."""
    if diff == 0:
        if isa == "baseline":
            return ["identical: the baseline kernel matches adamc.reference bit for bit"]
        return []
    if isa == "baseline":
        return ["the baseline kernel should match adamc.reference bit for bit on x86-64; "
                "a difference here is worth a bug report (with python -m adamc's output)"]
    return [f"why they differ: adamc's {isa} kernel rounds each multiply-add once (FMA), "
            "adamc.reference twice;",
            f"that last-bit difference per step changes later gradients, and {steps} steps "
            "amplify it;",
            "ADAMC_ISA=baseline (no FMA) trains bit for bit like the reference: difference 0."]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=["adamc", "reference", "both"], default="adamc",
                        help="adamc.Adam, adamc.reference.Adam, or both in turn (default adamc)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"],
                        default="float32", help="the weights' storage (16-bit: float32 math)")
    parser.add_argument("--master-weights", action=argparse.BooleanOptionalAction,
                        default=None, help="float32 master copy of 16-bit weights "
                        "(default: on for 16-bit weights)")
    parser.add_argument("--state", choices=["float32", "bfloat16", "float16", "int8"],
                        default=None, help="state_dtype of the moments (default: float32 for "
                        "16-bit weights); int8: 8-bit blockwise moments for the two large "
                        "weight matrices, float32 for the rest (min_8bit_size 4096)")
    parser.add_argument("--quant-map", choices=["dynamic", "pow2"], default="dynamic",
                        help="with --state int8: the codes' map (pow2: the faster "
                        "lookup-free map, docs/int8-state.md)")
    parser.add_argument("--stochastic-rounding", action="store_true",
                        help="round 16-bit writes stochastically (needs one: "
                        "--no-master-weights or a 16-bit --state)")
    parser.add_argument("--clip", type=float, metavar="MAX_NORM",
                        help="clip gradients by their global norm (fused into the step)")
    parser.add_argument("--loss-scaling", action="store_true",
                        help="dynamic loss scaling (adamc.LossScaler): overflowing steps "
                        "are skipped and the scale backs off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads adamc may use per step (default: adamc's own default)")
    parser.add_argument("--plot", metavar="PNG", help="write the loss curves to this file")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.dtype == "bfloat16":
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            parser.error("--dtype bfloat16 needs ml_dtypes: pip install ml_dtypes")
    # adamc's own rules judge the storage options (stochastic rounding needs
    # something rounded to 16 bits, ...): asked here on a stand-in weight as
    # large as the model's matrices, so that a refusal is a usage error
    # before training instead of a traceback after loading the data
    try:
        adamc.Adam([np.zeros(4096, storage_dtype(args.dtype))], seed=args.seed,
                   **storage_options(args))
    except ValueError as exc:
        parser.error(f"these storage options are refused: {exc}")
    return args


def storage_options(args):
    """The optimizer's storage options from the command line (train() adds
    the seed)."""
    options = {"master_weights": args.master_weights, "state_dtype": args.state,
               "stochastic_rounding": args.stochastic_rounding}
    if args.quant_map != "dynamic":
        options["quant_map"] = args.quant_map
    return options


def main(argv=None):
    """Run the command line; return the results as a dict (see module docstring).

    Returns
    -------
    dict
        ``runs``: optimizer name -> :func:`train` result.  With
        ``--optimizer both`` also ``max_loss_diff`` (largest absolute
        difference between the two per-epoch loss curves) and ``step_ratio``
        (adamc's ``opt.step`` time over the reference's).
    """
    args = parse_args(argv)
    if args.plot:
        # Fail before training, not after.
        if importlib.util.find_spec("matplotlib") is None:
            raise SystemExit("--plot needs matplotlib: pip install matplotlib")
    if args.threads is not None:
        adamc.set_num_threads(args.threads)
    dtype = storage_dtype(args.dtype)
    names = ["adamc", "reference"] if args.optimizer == "both" else [args.optimizer]
    data = load_data(np.float32 if dtype.itemsize == 2 else dtype, args.seed)
    options = storage_options(args)
    print(f"digits: {len(data[0])} training / {len(data[2])} held-out images, "
          f"{args.dtype}, adamc kernel {adamc.cpu_info()['isa']}, "
          f"{adamc.get_num_threads()} thread(s)")

    runs = {}
    for name in names:
        label = f"{name:<9} " if len(names) > 1 else ""
        runs[name] = train(name, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           dtype=dtype, seed=args.seed, data=data,
                           log=lambda line, label=label: print(label + line, flush=True),
                           clip=args.clip, loss_scaling=args.loss_scaling, **options)
    results = {"runs": runs}

    print()
    print(f"{'optimizer':<10} {'final loss':>10} {'test acc':>9} {'opt.step total':>15} "
          f"{'training total':>15}")
    for name, run in runs.items():
        print(f"{name:<10} {run['losses'][-1]:>10.6f} {100 * run['test_accuracy'][-1]:>8.1f}% "
              f"{run['step_seconds']:>13.3f} s {run['train_seconds']:>13.3f} s")
    for name, run in runs.items():
        if args.loss_scaling:
            print(f"{name}: the loss scaler skipped {run['skipped']} of {run['steps']} steps "
                  "(gradients overflowed), backed off and carried on")
    if len(runs) == 2:
        ours, ref = runs["adamc"], runs["reference"]
        diff = float(np.max(np.abs(np.subtract(ours["losses"], ref["losses"]))))
        ratio = ours["step_seconds"] / ref["step_seconds"]
        results.update(max_loss_diff=diff, step_ratio=ratio)
        print(f"max |loss(adamc) - loss(reference)| over {args.epochs} epochs: {diff:.3g}")
        for line in explain_gap(diff, adamc.cpu_info()["isa"], ours["steps"]):
            print("  " + line)
        verdict = f"{1 / ratio:.1f}x faster" if ratio < 1 else f"{ratio:.1f}x SLOWER"
        print(f"time in opt.step ({ours['steps']} calls each): adamc {ours['step_seconds']:.3f} s, "
              f"reference {ref['step_seconds']:.3f} s, ratio {ratio:.3f} (adamc {verdict})")
    if args.plot:
        plot_losses(runs, args.plot)
        print(f"loss curves written to {args.plot}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
