"""Shared cases of the 8-bit interop tests (test_int8_interop.py, the NumPy
side; test_int8_interop_libs.py, against torch, bitsandbytes and torchao)."""

import numpy as np

from adamc import _spec
from adamc import reference as R

BLOCK = _spec.QUANT_BLOCK
# 64x128: 8-bit, whole blocks; 5000: 8-bit with a short last block (136);
# 300: below min_8bit_size, float32 state.
SHAPES = [(64, 128), (5000,), (300,)]


def random_params(rng, shapes=SHAPES, order="C"):
    return [np.asarray(rng.standard_normal(s).astype(np.float32), order=order)
            for s in shapes]


def trained_int8(opt_cls=R.Adam, steps=3, seed=0, shapes=SHAPES, order="C", **options):
    """An optimizer over fresh parameters after ``steps`` steps, and its params."""
    rng = np.random.default_rng(seed)
    params = random_params(rng, shapes, order)
    opt = opt_cls(params, **{"lr": 1e-2, "state_dtype": "int8", **options})
    for _ in range(steps):
        opt.step([np.asarray(rng.standard_normal(p.shape).astype(np.float32), order=order)
                  for p in params])
    return opt, params


def bnb_values(codes, absmax, qmap):
    """bitsandbytes' dequantization, written out: qmap[code] * absmax of the
    code's block (C order), in float32."""
    flat = np.asarray(codes).reshape(-1)
    scale = np.repeat(np.asarray(absmax, np.float32), BLOCK)[:flat.size]
    return (np.asarray(qmap, np.float32)[flat] * scale).reshape(np.shape(codes))


def assert_entries_equal(a, b):
    assert a.keys() == b.keys()
    for pid in a:
        assert a[pid].keys() == b[pid].keys(), pid
        for k in a[pid]:
            x, y = a[pid][k], b[pid][k]
            if k == "step":
                assert x == y
            else:
                assert x.dtype == y.dtype and x.shape == y.shape, (pid, k)
                assert np.array_equal(x, y), (pid, k)
