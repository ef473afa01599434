"""What users would otherwise write, and the peers adamc is measured against.

Every contender is built by a ``make_*`` function from the same list of
parameters and gradients and returns a zero-argument callable doing one
optimizer step over all of them.  torch contenders are built only when torch
is importable (it is never a dependency of adamc).
"""

from __future__ import annotations

import math

import numpy as np

import adamc
from adamc import _kernels

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def make_adamc(params, grads):
    opt = adamc.Adam(params, lr=LR)
    return lambda: opt.step(grads)


def make_probe(params, grads):
    """Roofline probe: Adam's memory traffic with trivial arithmetic, through
    adamc's own multi-tensor driver and thread split (not an Adam step)."""
    quads = [(p, g, np.zeros_like(p), np.zeros_like(p)) for p, g in zip(params, grads)]
    return lambda: _kernels.probe_buffers(quads)


def make_reference(params, grads):
    """adamc.reference.Adam: the textbook NumPy Adam, temporaries and all."""
    opt = adamc.reference.Adam(params, lr=LR)
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
