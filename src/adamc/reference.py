"""Pure NumPy Adam/AdamW: the oracle adamc's kernels are tested against.

The same functional step (:func:`adam_step`) and optimizers (:class:`Adam`,
:class:`AdamW`) as the compiled ones, with the same arguments, checks and
state layout, computed with NumPy ufuncs in the parameter's dtype.  It
follows torch.optim.Adam's for-loop implementation operation by operation
(see ``_update``), with scalars narrowed to the array dtype as torch does.
The optimizers drive the NumPy :class:`Engine` below through the same
protocol as the compiled engine (``_spec``, ``_base``).  It is also the
"pure Python" baseline in benchmarks: it allocates temporaries and runs one
ufunc at a time.
"""

from __future__ import annotations

import math

import numpy as np

from . import _spec
from . import _validation as V
from ._base import _Optimizer

__all__ = ["Adam", "AdamW", "adam_step", "dynamic_map", "pow2_map", "quantize_blockwise",
           "dequantize_blockwise"]


def _update(p, grad, m, v, vmax, t, h, factor=1.0):
    """Kingma & Ba 2015, Algorithm 1 (torch's arrangement), in place; ``h``
    a _spec.Hypers with a float lr; the gradient times ``factor`` (the fused
    step's unscale and clip, one multiply with maximize's sign)."""
    dt = p.dtype.type
    lr, beta1, beta2, wd = h.lr, h.beta1, h.beta2, h.weight_decay
    grad = grad.astype(p.dtype, copy=False)  # a gradient of the other float dtype
    if factor != 1.0:
        with np.errstate(invalid="ignore"):  # inf * 0: NaN, as torch
            g = grad * dt((-1.0 if h.maximize else 1.0) * factor)
    else:
        # maximize multiplies by -1, as the kernel does: on x86 a NaN keeps
        # its sign bit then, where a negation would flip it
        g = grad * dt(-1.0) if h.maximize else grad
    if wd != 0.0:
        if h.decoupled_weight_decay:
            p *= dt(1.0 - lr * wd)  # Loshchilov & Hutter 2019
        else:
            g = g + dt(wd) * p
    w = 1.0 - beta1
    if abs(w) < 0.5:  # torch.lerp's two formulas
        m += dt(w) * (g - m)
    else:
        m[...] = g - (g - m) * (dt(1.0) - dt(w))
    v *= dt(beta2)
    v += (dt(1.0 - beta2) * g) * g
    bc1 = 1.0 - beta1**t if h.bias_correction else 1.0
    bc2 = 1.0 - beta2**t if h.bias_correction else 1.0
    if h.amsgrad:
        # adamc_maxnan(vmax, v): NaN if either is, as torch.maximum, and the
        # old value on a tie (np.maximum keeps the new one: +0 over -0)
        vmax[...] = np.where((vmax >= v) | np.isnan(vmax), vmax, v)
        vv = vmax
    else:
        vv = v
    # torch divides by sqrt(bc2); multiplying by its reciprocal (computed
    # once, in double) differs by rounding only and is what the kernel does.
    step_size = lr / bc1
    if h.eps_mode == "inside":
        denom = np.sqrt(vv * dt(1.0 / bc2) + dt(h.eps))
    elif h.eps_mode == "hat":
        # the eps-hat form: sqrt(bc2) moves into the step size, in the order
        # scikit-learn and Keras compute it; eps is added to the raw sqrt(v)
        step_size = lr * math.sqrt(bc2) / bc1
        denom = np.sqrt(vv) + dt(h.eps)
    else:
        denom = np.sqrt(vv) * dt(1.0 / math.sqrt(bc2)) + dt(h.eps)
    p += dt(-step_size) * (m / denom)


# ---------------------------------------------------------------------------
# 16-bit storage: the NumPy twins of csrc/convert.h and csrc/blocked.inc


def _hash32(x):
    """convert.h's adamc_hash32 on uint32 arrays (or scalars), wrapping."""
    x = np.array(x, dtype=np.uint32, ndmin=1)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def sr_key(seed, index, step):
    """step.c's adamc_sr_key: the stochastic-rounding key of one parameter's step."""
    m = 0xFFFFFFFF
    k = _hash32((seed & m) ^ 0x243F6A88)
    for word in (seed >> 32, index & m, (index >> 32) & m, step & m, (step >> 32) & m):
        k = _hash32(k ^ np.uint32(word & m))
    return int(k[0])


# convert.h's ADAMC_SR_HI and adamc_sr_take's multipliers (exp_avg_sq, max_exp_avg_sq)
_SR_HI = 0x9E3779B9
_SR_MUL = {2: 0x9E3779B1, 3: 0x85EBCA77}
# the stored values' numbers in adamc_sr_take
SR_VALUE = {"param": 0, "exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 3}


def sr_hash(key, n):
    """convert.h's adamc_sr_hash: the random words of elements 0..n-1 of one
    parameter's step, one per element, shared by its stored values."""
    i = np.arange(n, dtype=np.uint64)
    x = (i + np.uint64(key) + (i >> np.uint64(32)) * np.uint64(_SR_HI)) & np.uint64(0xFFFFFFFF)
    return _hash32(x.astype(np.uint32))


def sr_bits(key, n, value=0):
    """The 16 random bits (adamc_sr_take & 0xffff) with which stored value
    ``value`` (SR_VALUE) of elements 0..n-1 rounds."""
    h = sr_hash(key, n)
    if value == 0:
        return h & np.uint32(0xFFFF)
    if value == 1:
        return h >> np.uint32(16)
    return (h * np.uint32(_SR_MUL[value])) >> np.uint32(16)


def _f16_sr(x, r):
    """convert.h's adamc_f2h_sr: float32 values x, random bits r -> float16 bits."""
    u = x.view(np.uint32).astype(np.uint64)
    sign = (u >> 16) & 0x8000
    ax = u & 0x7FFFFFFF
    normal = (((ax - 0x38000000) & 0xFFFFFFFF) + (r & 0x1FFF)) >> 13
    tiny = ax < 0x38800000
    # |x| * 2^40 is exact and below 2^26 where it is used; truncated
    fixed = np.where(tiny, ax, 0).astype(np.uint32).view(np.float32) * np.float32(2.0 ** 40)
    sub = (fixed.astype(np.uint64) + (r & 0xFFFF)) >> 16
    nan = 0x7C00 | ((ax >> 13) & 0x3FF)
    nan = nan + (nan == 0x7C00)
    res = np.where(ax > 0x7F800000, nan, np.where(ax >= 0x47800000, 0x7C00,
                                                  np.where(tiny, sub, normal)))
    return (res | sign).astype(np.uint16).view(np.float16)


def _bf16_sr(x, r):
    """convert.h's adamc_f2b_sr."""
    import ml_dtypes
    u = x.view(np.uint32).astype(np.uint64)
    nan = ((u >> 16) & 0x8000) | 0x7FC0
    res = np.where((u & 0x7FFFFFFF) > 0x7F800000, nan, (u + (r & 0xFFFF)) >> 16)
    return res.astype(np.uint16).view(ml_dtypes.bfloat16)


def round_to(x, dtype, key=None, value=0):
    """float32 values x rounded to a 16-bit dtype: to nearest even (NumPy's
    and ml_dtypes' casts), or stochastically with the bits of stored value
    ``value`` (SR_VALUE) in the step with this ``key`` (sr_key)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if key is None:
            return x.astype(dtype)
        # element i of the stream is the i-th element in memory, as in the kernel
        order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
        flat = np.ascontiguousarray(x.ravel(order=order), dtype=np.float32)
        r = sr_bits(key, flat.size, value).astype(np.uint64)
        out = _f16_sr(flat, r) if dtype == np.float16 else _bf16_sr(flat, r)
        return out.reshape(x.shape, order=order)


def _write(dst, value):
    """dst[...] = value in dst's own memory order (value in storage dtype)."""
    dst[...] = value


def _step_storage(p, g, st, t, h, index, factor=1.0):
    """One step of a parameter with 16-bit storage or a master copy, op for op
    as blocked.inc: widen, the one update (_update) in the compute dtype,
    round back (stochastically with h.stochastic_rounding)."""
    c = np.float64 if p.dtype == np.float64 else np.float32
    key = sr_key(h.seed, index, t) if h.stochastic_rounding else None
    master = st.get("master_param")
    pw = master if master is not None else (p if p.dtype == c else p.astype(c, order="K"))
    slots = [s for s in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if s in st]
    # 8-bit state: dequantize, step with the fresh float32 moments, requantize
    # (as bitsandbytes' blockwise 8-bit update: the parameter sees the new m
    # and v before they are quantized)
    version = _spec.QUANT_MAPS[h.quant_map]
    work = {s: (dequantize_blockwise(st[s], st[_spec.SCALE_SLOT[s]], s == "exp_avg", version)
                if st[s].dtype == np.uint8 else
                st[s] if st[s].dtype == c else st[s].astype(c, order="K")) for s in slots}
    _update(pw, g.astype(c) if g.dtype.itemsize == 2 else g, work["exp_avg"],
            work["exp_avg_sq"], work.get("max_exp_avg_sq"), t, h, factor)
    if p.dtype != c:
        _write(p, round_to(pw, p.dtype, None if master is not None else key))
    for s in slots:
        if st[s].dtype == np.uint8:
            codes, absmax = quantize_blockwise(work[s], s == "exp_avg", version)
            _write(st[s], codes)
            _write(st[_spec.SCALE_SLOT[s]], absmax)
        elif st[s].dtype != c:
            _write(st[s], round_to(work[s], st[s].dtype, key, SR_VALUE[s]))


# ---------------------------------------------------------------------------
# 8-bit blockwise state (state_dtype="int8"): the NumPy twins of csrc/quant.h
# and blocked.inc's 8-bit path.  The format is bitsandbytes' blockwise dynamic
# quantization (Dettmers et al. 2022); docs/int8-state.md describes it.

BLOCK = _spec.QUANT_BLOCK
_MAPS = {}


def _linspace32(n):
    """torch.linspace(0.1, 1, n, dtype=float32) as torch's CPU kernel computes
    it: step = (1 - 0.1) / (n - 1) in float32; element i is start + i * step
    for the first half, end - (n - 1 - i) * step for the rest, each rounded
    once to float32 (the product is exact in float64, and so is the sum:
    the terms are within a few binades of each other)."""
    start, end = np.float32(0.1), np.float32(1.0)
    step = np.float64(np.float32((end - start) / np.float32(n - 1)))
    i = np.arange(n, dtype=np.float64)
    lo = np.float64(start) + i * step
    hi = np.float64(end) - (n - 1 - i) * step
    return np.where(np.arange(n) < n // 2, lo, hi).astype(np.float32)


def dynamic_map(signed):
    """The 256 values (sorted float32) that an 8-bit code indexes: the dynamic
    map of bitsandbytes' ``create_dynamic_map(signed)`` (map version 1).

    Decade j = 0..6 (values in [10^(j-6) * 0.1, 10^(j-6)]) holds 2^j values
    per sign (signed, for exp_avg) or 2^(j+1) (unsigned, for exp_avg_sq): the
    midpoints of ``linspace(0.1, 1, count + 1)``, times 10^(j-6); then 0 and
    1.0.  All in float32 arithmetic as bitsandbytes computes it with torch:
    the linspace as torch's kernel (:func:`_linspace32`), the midpoints
    ``(a + b) / 2`` and the product with ``float32(10^(j-6))`` each rounded to
    float32 (checked against bitsandbytes 0.50.2 in tests/test_int8_state.py
    when it is installed).  Returns a read-only array.
    """
    signed = bool(signed)
    if signed not in _MAPS:
        data = []
        for j in range(7):
            b = _linspace32((2**j if signed else 2**(j + 1)) + 1)
            means = (b[:-1] + b[1:]) / np.float32(2.0)
            scale = np.float32(10.0 ** (j - 6))
            data.append(scale * means)
            if signed:
                data.append(-scale * means)
        data.append(np.array([0.0, 1.0], dtype=np.float32))
        m = np.sort(np.concatenate(data).astype(np.float32))
        assert m.size == 256
        m.flags.writeable = False
        mid = (m[:-1] + m[1:]) / np.float32(2.0)
        if not signed:
            # exp_avg_sq never rounds to 0 (code 0): a v of 0 beside a nonzero
            # m would step the weight by lr * m / eps (docs/int8-state.md)
            mid[0] = -np.inf
        mid.flags.writeable = False
        _MAPS[signed] = (m, mid)
    return _MAPS[signed][0]


def _midpoints(signed):
    """The 255 float32 midpoints (m[i] + m[i+1]) / 2 a value is compared with."""
    dynamic_map(signed)
    return _MAPS[bool(signed)][1]


# Map version 2 ("pow2", csrc/quant.h): a code is the float32 bits of the
# normalized value rounded to 8 exponent and P2_MBITS mantissa bits (half
# up), offset so that 1.0 is the top code.  Integer arithmetic only.
P2_MBITS = 3
P2_SHIFT = 23 - P2_MBITS
P2_HALF = 1 << (P2_SHIFT - 1)
P2_ONE = 0x3F800000                        # 1.0's bits
P2_MOFF = (P2_ONE >> P2_SHIFT) - 127       # signed: magnitude 127 is 1.0 (889)
P2_VOFF = (P2_ONE >> P2_SHIFT) - 255       # unsigned: code 255 is 1.0 (761)


def _p2_codes(s, signed):
    """Map version 2's codes of normalized float32 values s (NaN already 0):
    q = (min(bits(|s|), bits(1.0)) + half) >> shift, minus the offset;
    signed: sign bit 7, magnitude clamp(q, 0, 127); unsigned clamp(q, 1, 255)
    (never 0, as the dynamic map's exp_avg_sq)."""
    u = s.view(np.uint32)
    a = np.minimum(u & np.uint32(0x7FFFFFFF), np.uint32(P2_ONE)).astype(np.int64)
    if signed:
        q = np.maximum((a + P2_HALF - (P2_MOFF << P2_SHIFT)) >> P2_SHIFT, 0)
        return (q | ((u >> 24) & 0x80)).astype(np.uint8)
    return np.maximum((a + P2_HALF - (P2_VOFF << P2_SHIFT)) >> P2_SHIFT, 1).astype(np.uint8)


def pow2_map(signed):
    """The 256 float32 values map version 2's codes stand for (times the
    block's absmax), indexed by code.  Signed (exp_avg): code = sign << 7 |
    magnitude; magnitude 0 is 0 (code 128: -0.0), magnitude k > 0 the float
    of bits (k + 889) << 20: 1.25 * 2^-16 (k = 1) to 1.0 (k = 127), 8 values
    per binade.  Unsigned (exp_avg_sq): code c the float of bits (c + 761)
    << 20: 1.125 * 2^-32 (c = 0, never written) to 1.0 (c = 255).  Returns a
    read-only array."""
    signed = bool(signed)
    key = ("pow2", signed)
    if key not in _MAPS:
        c = np.arange(256, dtype=np.uint32)
        if signed:
            mag = c & 127
            bits = np.where(mag > 0, (mag + P2_MOFF) << P2_SHIFT, 0) | ((c & 128) << 24)
        else:
            bits = (c + P2_VOFF) << P2_SHIFT
        m = bits.astype(np.uint32).view(np.float32)
        m.flags.writeable = False
        _MAPS[key] = m
    return _MAPS[key]


def _blocks(flat):
    """flat (1-D) as rows of BLOCK, the last padded with zeros."""
    nb = -(-flat.size // BLOCK)
    pad = np.zeros(nb * BLOCK, dtype=np.float32)
    pad[:flat.size] = flat
    return pad.reshape(nb, BLOCK)


def quantize_blockwise(x, signed, map_version=1):
    """8-bit codes and per-block scales of the float32 array ``x``.

    The elements, in memory order (C order for a C-contiguous array), go in
    blocks of 256 (the last may be shorter).  A block's scale ``absmax`` is
    the largest |x| (NaN if any element is NaN).  Each element is normalized
    as ``s = x * r`` with ``r = float32(1 / absmax)``, or ``1 / 1e-38`` when
    absmax is below 1e-38 or NaN (a float32
    reciprocal, then a float32 product; a NaN product counts as 0).

    Map version 1 (``quant_map="dynamic"``): the code is the number of
    midpoints of :func:`dynamic_map` strictly below ``s``:
    the nearest map value, a value exactly on a midpoint taking the lower
    code (bitsandbytes' ``bucketize`` rule), except that the unsigned map
    (exp_avg_sq) never gives code 0: its values round to the nearest
    nonzero map value (its first midpoint counts as -inf, and -inf takes
    code 1).  Map version 2
    (``quant_map="pow2"``): the code is read off ``s``'s float32 bits
    (:func:`pow2_map`; docs/int8-state.md).  Returns ``(codes, absmax)``:
    uint8 codes of x's shape and memory order, float32 scales of
    ``ceil(x.size / 256)``.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"quantize_blockwise takes float32 values, got {x.dtype}")
    _check_map_version(map_version)
    order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
    flat = x.ravel(order=order)
    rows = _blocks(flat)
    tiny = np.float32(1e-38)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        absmax = np.abs(rows).max(axis=1)  # NaN-propagating
        absmax[np.isnan(absmax)] = np.nan  # the canonical quiet NaN, as the kernel
        r = np.float32(1.0) / np.where(absmax >= tiny, absmax, tiny)
        s = rows * r[:, None]
    s[np.isnan(s)] = 0.0
    s = s.ravel()[:flat.size]
    if map_version == 2:
        codes = _p2_codes(s, signed)
    else:
        codes = np.searchsorted(_midpoints(signed), s, side="left")
        if not signed:   # s = -inf (a negative value, a negative scale) too
            codes = np.maximum(codes, 1)
    codes = codes.astype(np.uint8).reshape(x.shape, order=order)
    return codes, absmax.astype(np.float32)


def _check_map_version(version):
    if isinstance(version, bool) or version not in _spec.QUANT_MAPS.values():
        raise ValueError(f"map_version must be one of {sorted(_spec.QUANT_MAPS.values())} "
                         f"(quant_map {_spec.QUANT_MAPS}), got {version!r}")


def dequantize_blockwise(codes, absmax, signed, map_version=1):
    """The float32 values of 8-bit codes: ``map[code] * absmax`` of the
    code's block (float32 product), codes in memory order as
    :func:`quantize_blockwise` gives them; the map is :func:`dynamic_map`
    (map version 1) or :func:`pow2_map` (version 2)."""
    codes = np.asarray(codes)
    absmax = np.asarray(absmax, dtype=np.float32)
    if codes.dtype != np.uint8:
        raise TypeError(f"dequantize_blockwise takes uint8 codes, got {codes.dtype}")
    _check_map_version(map_version)
    if absmax.shape != (-(-codes.size // BLOCK),):
        raise ValueError(
            f"absmax has shape {absmax.shape}; {codes.size} codes need "
            f"({-(-codes.size // BLOCK)},), one scale per {BLOCK} elements")
    order = "F" if codes.flags.f_contiguous and not codes.flags.c_contiguous else "C"
    flat = codes.ravel(order=order)
    vals = (pow2_map(signed) if map_version == 2 else dynamic_map(signed))[flat]
    with np.errstate(invalid="ignore", over="ignore"):
        out = vals * np.repeat(absmax, BLOCK)[:flat.size]
    return out.reshape(codes.shape, order=order)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, max_exp_avg_sq=None,
              master_param=None, exp_avg_absmax=None, exp_avg_sq_absmax=None, **options):
    """The NumPy twin of :func:`adamc.adam_step` (same arguments and checks).

    Examples
    --------
    >>> import numpy as np
    >>> from adamc import reference
    >>> p = np.array([1.0, 2.0]); m = np.zeros(2); v = np.zeros(2)
    >>> reference.adam_step(p, np.array([0.5, -0.5]), m, v, step=1, lr=0.01)
    >>> p
    array([0.99, 2.01])
    """
    t, h = V.check_functional(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                              master_param, step, options, exp_avg_absmax, exp_avg_sq_absmax)
    st = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if exp_avg.dtype == np.uint8:
        st["exp_avg_absmax"], st["exp_avg_sq_absmax"] = exp_avg_absmax, exp_avg_sq_absmax
    if h.amsgrad:
        st["max_exp_avg_sq"] = max_exp_avg_sq
    if master_param is not None:
        st["master_param"] = master_param
    _step(param, grad, st, t, h, 0)


def _step(p, g, st, t, h, index, factor=1.0):
    """One parameter's step: the direct update when everything is stored in
    the compute dtype, the 16-bit path otherwise."""
    if "master_param" in st or p.dtype.itemsize == 2 or st["exp_avg"].dtype != p.dtype \
            or (g.dtype.itemsize == 2):
        _step_storage(p, g, st, t, h, index, factor)
    else:
        _update(p, g, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"), t, h,
                factor)


NORM_CHUNK = 16384  # csrc/norm.c's ADAMC_NORM_CHUNK


def _segment_sumsq(g):
    """norm.c's segment_sumsq: eight interleaved accumulators, a fixed tree."""
    x = np.square(g.ravel(order="K").astype(np.float64))
    n8 = x.size - x.size % 8
    acc = np.zeros(8)
    if n8:
        acc = np.add.reduce(x[:n8].reshape(-1, 8), axis=0)  # row by row: lane order
    for j, y in enumerate(x[n8:]):
        acc[j] += y
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def grad_sumsq(grads):
    """norm.c's adamc_grad_sumsq: the gradients' elements concatenated in
    fixed chunks, each chunk's segments summed in order, then the chunks."""
    flat = [g.ravel(order="K") for g in grads]
    bounds = np.cumsum([0] + [f.size for f in flat])
    total = int(bounds[-1])
    chunks = []
    for lo in range(0, total, NORM_CHUNK):
        hi, s = lo + NORM_CHUNK, 0.0
        for f, start in zip(flat, bounds[:-1]):
            a, b = max(lo - start, 0), min(hi - start, f.size)
            if a < b:
                s += _segment_sumsq(f[a:b])
        chunks.append(s)
    out = 0.0
    for s in chunks:
        out += s
    return out


adam_step.__signature__ = _spec.functional_signature()


def _key_of(value):
    return tuple(value) if type(value) is list else value


class Engine:
    """The NumPy engine: the compiled engine's protocol (``_spec``), in Python."""

    def __init__(self, params, group_of):
        self._params = list(params)
        self._group_of = list(group_of)
        # each parameter as it was built: the engine refuses one that changed
        self._built = [(p.__array_interface__["data"][0], p.dtype, p.shape, V.order_of(p))
                       for p in self._params]
        self._state = [None] * len(self._params)
        self._steps = np.zeros(len(self._params), dtype=np.int64)
        self._groups = self._keys = self._lists = None
        self._hypers = []
        self._lrs = {}
        self._wanted = []
        self._active = []
        self.bad_index = -1

    @property
    def steps(self):
        v = self._steps.view()
        v.flags.writeable = False
        return v

    def set_steps(self, steps):
        self._steps = np.array(steps, dtype=np.int64)

    def get_state(self, i):
        return self._state[i]

    def set_states(self, states):
        for i, st in states.items():
            self._state[i] = dict(st) if st else None

    def set_groups(self, groups, hypers, slots):
        old = getattr(self, "_hypers", None) or []
        # a group's lr may be another schedule now: its values go (the other
        # groups' stay, or a schedule editing its group would be asked forever)
        self._lrs = {(gi, t): v for (gi, t), v in self._lrs.items()
                     if gi < len(old) and gi < len(hypers) and old[gi].lr is hypers[gi].lr}
        self._hypers = list(hypers)
        self._slots = list(slots)
        self._groups = list(groups)
        self._lists = [g["params"] for g in groups]
        # values compared by identity, except lists (editable in place): by items
        self._keys = [[_key_of(g.get(k, self)) for k in V.GROUP_KEYS] for g in groups]

    def wanted_lrs(self):
        return list(self._wanted)

    def set_lrs(self, lrs):
        self._lrs.update(lrs)

    def forget_lrs(self):
        self._lrs = {}

    def stateless(self):
        return [i for i in self._active if self._needs_state(i)]

    def _needs_state(self, i):
        have = self._state[i] or {}
        return any(s not in have for s in self._slots[i])

    def _groups_unchanged(self, groups):
        if self._keys is None or type(groups) is not list or len(groups) != len(self._keys):
            return False
        flat = [a for g, ps in zip(groups, self._lists)
                if isinstance(g, dict) and g.get("params") is ps for a in ps]
        return (len(flat) == len(self._params)
                and all(a is b for a, b in zip(flat, self._params))
                and all(_key_of(g.get(k, self)) is v or (type(g.get(k)) is list and
                                                         tuple(g[k]) == v)
                        for g, keys in zip(groups, self._keys)
                        for k, v in zip(V.GROUP_KEYS, keys)))

    def _param_ok(self, i):
        p = self._params[i]
        try:
            V.check_array(p, "")
            V.check_writeable(p, "")
        except (TypeError, ValueError):
            return False
        return (p.__array_interface__["data"][0], p.dtype, p.shape, V.order_of(p)) == \
            self._built[i]

    def _grad_ok(self, i, g, spans):
        p = self._params[i]
        try:
            V.explain_grad(p, g, "", "", spans)
        except (TypeError, ValueError):
            return False
        return True

    def step(self, grads, groups, factor=1.0, measure=False):
        if type(grads) is not list or len(grads) != len(self._params):
            return _spec.GRADS_LIST
        if not self._groups_unchanged(groups):
            return _spec.NEED_GROUPS
        self._active = [i for i, g in enumerate(grads) if g is not None]
        spans = V.written_spans(self._params, self._state, None)
        for i in self._active:
            if not self._param_ok(i):
                self.bad_index = i
                return _spec.BAD_PARAM
            if not self._grad_ok(i, grads[i], spans):
                self.bad_index = i
                return _spec.BAD_GRAD
        self._wanted = sorted({
            (gi, int(self._steps[i]) + 1) for i in self._active
            for gi in [self._group_of[i]] if callable(self._hypers[gi].lr)
        } - set(self._lrs))
        if self._wanted:
            return _spec.NEED_LR
        if measure:
            with np.errstate(over="ignore", invalid="ignore"):
                self.sumsq = grad_sumsq([grads[i] for i in self._active])
            return _spec.MEASURED
        if any(self._needs_state(i) for i in self._active):
            return _spec.NEED_STATE
        for i in self._active:
            gi, t = self._group_of[i], int(self._steps[i]) + 1
            h = self._hypers[gi]
            if callable(h.lr):
                h = h._replace(lr=self._lrs[(gi, t)])
            st = self._state[i]
            if not h.amsgrad:
                st = {k: v for k, v in st.items() if k != "max_exp_avg_sq"}
            _step(self._params[i], grads[i], st, t, h, i, factor)
            self._steps[i] += 1
        self._lrs = {}
        return _spec.OK


class Adam(_Optimizer):
    """The NumPy twin of :class:`adamc.Adam` (same arguments and state layout)."""

    _Engine = Engine


class AdamW(Adam):
    """The NumPy twin of :class:`adamc.AdamW`."""

    _variant = "AdamW"
