"""adamc as the optimizer of a PyTorch model on the CPU, without copying.

PyTorch computes the forward and backward passes; adamc updates the weights.
``p.detach().numpy()`` is a NumPy array over the parameter's own memory and
``p.grad.numpy()`` one over its gradient's, so nothing is copied: adamc reads
the gradients where autograd wrote them and writes the new weights where the
model reads them.

The script trains the same small network twice from the same initial weights
on the same mini-batches, once with ``torch.optim.Adam`` and once with
``adamc.Adam``, and checks that the final weights agree to float rounding::

    python examples/torch_interop.py
    python examples/torch_interop.py --steps 1000 --dtype float64

It exits with status 0 when they agree (or when PyTorch is not installed:
then there is nothing to show) and 1 when they do not.

Constraints of the zero-copy pattern
------------------------------------
* Parameters must be CPU tensors (``.numpy()`` cannot see GPU memory),
  float32, float64, float16 or bfloat16 (``--dtype``; bfloat16 through
  ``ml_dtypes``, see ``as_numpy``) and contiguous: in C
  order, what torch calls contiguous, or in Fortran order, such as a
  transposed weight.  adamc steps whole dense buffers and rejects other
  strided views; autograd gives each gradient its parameter's strides, so
  the gradients then qualify too.  ``check_params`` tests all three.
* ``p.detach()`` is needed because ``.numpy()`` refuses tensors that require
  grad; the detached tensor shares the parameter's storage.
* The gradient arrays must be fetched again after every backward pass:
  ``zero_grad()`` sets ``.grad`` to None by default (``set_to_none=True``),
  so the next backward allocates a new gradient tensor and an array taken
  earlier would still show the old values.  ``p.grad`` is None for a
  parameter that got no gradient; adamc skips a None gradient, as
  torch.optim skips such a parameter.
* The parameter arrays stay valid as long as PyTorch keeps each parameter in
  the same storage.  ``model.to(...)``, ``.double()``, ``.half()``,
  ``.cuda()`` or assigning ``p.data = ...`` give a parameter new storage:
  build the optimizer again afterwards.  ``model.load_state_dict`` copies
  into the existing storage, so it is fine.
* adamc writes the weights behind autograd's back (the tensors' version
  counters do not change), so step only between ``backward()`` and the next
  forward pass, as with any optimizer; autograd cannot detect a step taken
  between a forward pass and its backward pass.
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np

import adamc

try:
    import torch
except ImportError:  # the check in main() explains what to install
    torch = None


def make_problem(seed=0, n=512, n_features=8, dtype="float32"):
    """A small regression task and a network for it, both fixed by the seed.

    Returns
    -------
    model : torch.nn.Module
    X : torch.Tensor, shape (n, n_features)
    y : torch.Tensor, shape (n, 1)
    """
    gen = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)
    X = torch.randn(n, n_features, generator=gen, dtype=tdtype)
    w = torch.randn(n_features, 1, generator=gen, dtype=tdtype)
    y = torch.sin(X @ w) + 0.1 * torch.randn(n, 1, generator=gen, dtype=tdtype)
    torch.manual_seed(seed)  # the layers' default initialization draws from it
    model = torch.nn.Sequential(
        torch.nn.Linear(n_features, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 1),
    ).to(tdtype)
    return model, X, y


def check_params(params):
    """Raise ValueError unless every parameter can be shared with adamc as is."""
    for i, p in enumerate(params):
        if p.device.type != "cpu":
            raise ValueError(f"parameter {i} is on {p.device}; the zero-copy pattern needs CPU tensors")
        if p.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise ValueError(f"parameter {i} is {p.dtype}; adamc steps float16, bfloat16, "
                             "float32 and float64")
        flags = as_numpy(p.detach()).flags
        if not (flags.c_contiguous or flags.f_contiguous):
            raise ValueError(f"parameter {i} is not contiguous (strides {p.stride()}); "
                             "make it so (p.data = p.data.contiguous()) before building "
                             "the optimizer")


def as_numpy(t):
    """A NumPy view (no copy) of a CPU tensor's storage: ``t.numpy()``; for
    bfloat16, which NumPy lacks, the same bits as ``ml_dtypes.bfloat16``."""
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def train(model, X, y, batches, step):
    """Mini-batch training with mean squared error; ``step()`` applies one update.

    Returns the loss of every step.
    """
    losses = []
    for idx in batches:
        loss = torch.nn.functional.mse_loss(model(X[idx]), y[idx])
        model.zero_grad()  # set_to_none=True: the next backward allocates new .grad tensors
        loss.backward()
        step()
        losses.append(loss.item())
    return losses


def compare(steps=300, batch_size=64, lr=1e-2, dtype="float32", seed=0):
    """Train twice, with torch.optim.Adam and with adamc.Adam, and compare.

    Returns
    -------
    dict
        ``torch_losses``, ``adamc_losses`` (loss at every step),
        ``torch_params``, ``adamc_params`` (final weights as NumPy copies)
        and ``max_diff`` (largest absolute difference between them).
    """
    model_t, X, y = make_problem(seed, dtype=dtype)
    model_a = copy.deepcopy(model_t)  # the same initial weights
    # Drawn once, so both runs see the same mini-batches in the same order.
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [torch.randint(len(X), (batch_size,), generator=gen) for _ in range(steps)]

    # foreach=False: torch's for-loop implementation, the one adamc follows
    # operation by operation.
    opt_t = torch.optim.Adam(model_t.parameters(), lr=lr, foreach=False)
    torch_losses = train(model_t, X, y, batches, opt_t.step)

    params = list(model_a.parameters())
    check_params(params)
    # Views, not copies: adamc updates the model's own weights in place.
    arrays = [as_numpy(p.detach()) for p in params]
    assert all(a.ctypes.data == p.data_ptr() for a, p in zip(arrays, params))
    # torch keeps a 16-bit model's state in its dtype and has no master copy:
    # so does adamc here (it computes each step in float32 and rounds once).
    sixteen = dtype in ("float16", "bfloat16")
    opt_a = adamc.Adam(arrays, lr=lr, **({"master_weights": False, "state_dtype": dtype}
                                         if sixteen else {}))

    def adamc_step():
        # Re-fetched every step: zero_grad() dropped last step's .grad tensors.
        opt_a.step([None if p.grad is None else as_numpy(p.grad) for p in params])

    adamc_losses = train(model_a, X, y, batches, adamc_step)

    def final(model):  # NumPy copies, 16-bit weights widened to float32 to compare
        return [(p.detach().float() if sixteen else p.detach()).numpy().copy()
                for p in model.parameters()]

    torch_params, adamc_params = final(model_t), final(model_a)
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(adamc_params, torch_params))
    return {
        "torch_losses": torch_losses,
        "adamc_losses": adamc_losses,
        "torch_params": torch_params,
        "adamc_params": adamc_params,
        "max_diff": max_diff,
    }


def tolerance(dtype, steps):
    """(rtol, atol) for the final weights: rounding only, growing with the steps.

    Each step rounds a few operations differently (torch divides by
    sqrt(1 - beta2^t), adamc multiplies by its reciprocal; adamc's kernels
    may fuse multiply-adds), and those differences feed later gradients, so
    the bound is a number of ulps per step, as in adamc's own torch tests.
    """
    tol = 16 * np.finfo(dtype).eps * max(steps, 1)
    return tol, tol


def main(argv=None):
    """Run the comparison; return the exit status (0: weights agree or no torch)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"],
                        default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1, metavar="N",
                        help="torch's intra-op threads (default 1: a network this small "
                             "gains nothing from more, and on busy cores torch's spinning "
                             "workers slowed this script twenty-fold)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.dtype == "bfloat16":
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            parser.error("--dtype bfloat16 needs ml_dtypes: pip install ml_dtypes")
    if torch is None:
        print("PyTorch is not installed, so there is nothing to compare with; skipping. "
              "(pip install torch --index-url https://download.pytorch.org/whl/cpu)")
        return 0
    # A network this small gains nothing from splitting each operation over
    # threads, and when the cores are busy torch's spinning worker threads
    # slowed this script twenty-fold on a two-core machine.
    torch.set_num_threads(args.torch_threads)

    r = compare(steps=args.steps, lr=args.lr, dtype=args.dtype, seed=args.seed)
    print(f"torch {torch.__version__}, adamc {adamc.__version__} "
          f"(kernel {adamc.cpu_info()['isa']}), {args.dtype}, {args.steps} steps")
    print(f"loss: first step {r['torch_losses'][0]:.4f}, last step "
          f"torch.optim.Adam {r['torch_losses'][-1]:.6f}, adamc.Adam {r['adamc_losses'][-1]:.6f}")
    if args.dtype in ("float16", "bfloat16"):
        # Both keep weights and state in the 16-bit type, but torch rounds
        # every operation of the step to it, adamc computes the step in
        # float32 and rounds the results once: two roundings of the same
        # trajectory, which part over hundreds of steps.  The check is that
        # adamc trains as well as torch (or at all, where torch's float16
        # step divides by an eps that float16 flushes to zero).
        ours, theirs = r["adamc_losses"][-1], r["torch_losses"][-1]
        ok = bool(np.isfinite(ours)) and (not np.isfinite(theirs) or ours <= 1.1 * theirs)
        print(f"final weights: max |adamc - torch| = {r['max_diff']:.3g}; adamc's last loss "
              f"{'within 10% of' if np.isfinite(theirs) else 'finite, unlike'} torch's: {ok}")
        return 0 if ok else 1
    rtol, atol = tolerance(np.dtype(args.dtype), args.steps)
    ok = all(np.allclose(a, t, rtol=rtol, atol=atol)
             for a, t in zip(r["adamc_params"], r["torch_params"]))
    print(f"final weights: max |adamc - torch| = {r['max_diff']:.3g} "
          f"(allclose with rtol = atol = {rtol:.2g}: {ok})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
