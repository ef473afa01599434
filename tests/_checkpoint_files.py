"""Optimizers with state and checkpoint files, shared by the test_checkpoint_*.py files.

The optimizers: every kind of parameter (float32/float64, C and F order,
0-d and empty) in two groups, stepped with some None gradients.  The files:
the format (docs/checkpoint-format.md) implemented again here, independently
of adamc.checkpoint, to build files that are valid in every respect but one.
"""

import hashlib
import io
import json
import struct
import zipfile

import numpy as np
import pytest

import adamc
from adamc import checkpoint

from _toolkit import assert_unchanged, random_array, random_like, snapshot

# ---------------------------------------------------------------- optimizers


def make_params(rng):
    """float32/float64, C and F order, 0-d and empty: one group of each kind."""
    return [
        random_array(rng, (17,), np.float32, "C"),
        random_array(rng, (4, 6), np.float64, "F"),
        random_array(rng, (3, 2, 5), np.float32, "F"),
        random_array(rng, (), np.float64, "C"),
        random_array(rng, (3, 0), np.float32, "C"),
    ]


def groups_of(ps, named=False):
    g1, g2 = ps[:2], ps[2:]
    if named:
        g1 = {f"w{i}": p for i, p in enumerate(g1)}
        g2 = {f"v{i}": p for i, p in enumerate(g2)}
    return [{"params": g1}, {"params": g2, "lr": 0.02, "betas": (0.8, 0.99)}]


def build(cls, ps, named=False, **kw):
    return cls(groups_of(ps, named), **kw)


def grads_for(rng, ps, named=False, skip=()):
    gs = [None if i in skip else random_like(rng, p) for i, p in enumerate(ps)]
    if named:
        keys = [f"w{i}" for i in range(2)] + [f"v{i}" for i in range(len(ps) - 2)]
        return dict(zip(keys, gs))
    return gs


def copies(ps):
    return [p.copy(order="K") for p in ps]


def stepped(rng, cls=adamc.Adam, n=3, **kw):
    ps = make_params(rng)
    opt = build(cls, ps, **kw)
    for t in range(n):
        opt.step(grads_for(rng, ps, skip={4} if t else {2, 4}))
    return ps, opt


# ---------------------------------------------------------------- files

def members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}


def npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def read_npy(data):
    return np.load(io.BytesIO(data), allow_pickle=False)


def spec_digest(header, arrays):
    h = hashlib.sha256(b"adamc-optimizer-state\0")
    h.update(struct.pack("<Q", len(header)) + header)
    for a in arrays:
        raw = a.tobytes(order="A")
        h.update(struct.pack("<Q", len(raw)) + raw)
    return h.digest()


def rewrite(src, dst, edit_header=None, edit_arrays=None, fix_digest=True):
    """Copy a checkpoint, editing its JSON header or arrays, with fresh ZIP CRCs."""
    m = members(src)
    doc = json.loads(read_npy(m["header.npy"]).tobytes())
    if edit_header:
        edit_header(doc)
    header = json.dumps(doc, separators=(",", ":")).encode()
    arrays = [read_npy(m[f"a{k}.npy"]) for k in range(len(doc["arrays"]))]
    if edit_arrays:
        edit_arrays(arrays)
    m["header.npy"] = npy(np.frombuffer(header, dtype=np.uint8))
    for k, a in enumerate(arrays):
        m[f"a{k}.npy"] = npy(a)
    if fix_digest:
        m["sha256.npy"] = npy(np.frombuffer(spec_digest(header, arrays), dtype=np.uint8))
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
        for name, data in m.items():
            zf.writestr(name, data)


def assert_refused(opt, path, *words):
    """load_state(opt, path) raises a ValueError naming the file and each of
    ``words``, and leaves the optimizer as it was; returns the message."""
    snap = snapshot(opt)
    with pytest.raises(ValueError) as ei:
        checkpoint.load_state(opt, path)
    msg = str(ei.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    assert_unchanged(opt, snap, f"load_state({path})")
    return msg
