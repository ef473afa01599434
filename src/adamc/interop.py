"""Optimizer state to and from torch.optim's, bitsandbytes' and torchao's layouts.

adamc's 8-bit state (``state_dtype="int8"``) uses by default bitsandbytes'
blockwise dynamic quantization: the same two maps, blocks of 256 elements,
one float32 absolute maximum per block (docs/int8-state.md).  Such a state
moves between the three libraries without requantizing: these functions
only rename, regroup and check.  adamc's lookup-free map
(``quant_map="pow2"``, map version 2) has the same blocks and scales but
other codes: they are decoded and quantized again with the other map (each
value rounded once more).  NumPy only: they never import torch; arrays
come in as anything ``np.asarray`` reads (CPU torch tensors included) and go
out as NumPy arrays, or through ``tensor`` (e.g. ``torch.from_numpy``).

- :func:`to_bitsandbytes` / :func:`from_bitsandbytes`: ``Adam8bit``'s
  state_dict (per parameter ``state1``/``state2`` codes, ``absmax1``/
  ``absmax2`` scales, ``qmap1``/``qmap2`` maps, ``step``).
- :func:`to_torchao` / :func:`from_torchao`: torchao's ``Adam8bit``/
  ``AdamW8bit`` state (``exp_avg``/``exp_avg_sq`` as ``OptimState8bit``:
  ``codes``, ``scale``, ``qmap``, ``signed``, ``block_size``).
- :func:`to_torch` / :func:`from_torch`: ``torch.optim.Adam``/``AdamW``'s
  state_dict (float moments, ``step`` a float tensor; 8-bit state goes out
  dequantized).
- :func:`quantize_state` / :func:`dequantize_state`: a full-precision adamc
  state_dict to the 8-bit layout and back, for loading into an optimizer
  built with the other ``state_dtype``; ``quantize_state(sd,
  quant_map=...)`` also converts 8-bit state between the two maps.

Hyperparameters travel too, where the other library has them (lr, betas,
eps, weight_decay); an option it cannot express is a ValueError rather than
a silently different optimizer.
"""

from __future__ import annotations

import numpy as np

from . import _spec
from . import _validation as V
from .reference import dequantize_blockwise, dynamic_map, quantize_blockwise

__all__ = ["to_bitsandbytes", "from_bitsandbytes", "to_torchao", "from_torchao",
           "to_torch", "from_torch", "quantize_state", "dequantize_state"]

#: bitsandbytes >= 0.49 nests a parameter's quantization tensors under this
#: key in state_dict() (to hide them from FSDP); its load_state_dict takes
#: them nested or flat.
BNB_NESTED = "__bnb_optimizer_quant_state__"
_BNB_KEYS = ("step", "state1", "state2", "qmap1", "qmap2", "absmax1", "absmax2")

_SCALE = _spec.SCALE_SLOT          # {"exp_avg": "exp_avg_absmax", ...}
_SIGNED = {"exp_avg": True, "exp_avg_sq": False}
_MOMENTS = ("exp_avg", "exp_avg_sq")


# -- helpers ----------------------------------------------------------------

def _convert(tree, tensor):
    """``tree`` with ``tensor`` applied to every ndarray in it."""
    if tensor is None:
        return tree
    if isinstance(tree, np.ndarray):
        return tensor(tree)
    if isinstance(tree, dict):
        return {k: _convert(v, tensor) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_convert(v, tensor) for v in tree]
    return tree


def _array(value, where):
    """V.interop_array, a CPU torch.bfloat16 tensor widened to float32 first
    (exactly: NumPy has no bfloat16, so torch cannot hand one over; torchao
    keeps a bfloat16 model's small parameters' moments in it)."""
    if (V.library_of(value) == "torch" and str(getattr(value, "dtype", "")) == "torch.bfloat16"
            and str(getattr(value, "device", "")) == "cpu"):
        value = value.detach().float()
    return V.interop_array(value, where)


def _entry_step(e, where, allowed, stray_hint, owner, required=("step", *_MOMENTS)):
    """A state entry's step, once its keys are checked: none outside
    ``allowed`` (else ``stray_hint``), every one of ``required`` present
    (``owner``: whose entry has them)."""
    V.check_interop_keys(e, allowed, where, stray_hint)
    for key in required:
        if key not in e:
            raise ValueError(f"{where} has no {key!r}; {owner} has "
                             f"{', '.join(required[:-1])} and {required[-1]}")
    return V.check_interop_step(e["step"], f"{where}['step']")


def _adamc_entries(state_dict, what):
    """The checked per-parameter entries of an adamc state_dict:
    {pid: {"step": int, moment: ("int8", codes, absmax) | ("float", array),
    "extra": {other slot: array}, "map": the map version of its codes}}."""
    V.check_interop_state_dict(state_dict, what)
    version = V.check_map_version(state_dict, what)
    map_of = {}   # pid -> the map version its codes index (its group's quant_map)
    for gi, g in enumerate(state_dict["param_groups"]):
        name = V.group_quant_map(g, f"{what}['param_groups'][{gi}]")
        map_of.update({pid: _spec.QUANT_MAPS[name] for pid in g["params"]})
    out = {}
    for pid, e in state_dict["state"].items():
        where = f"{what}['state'][{pid!r}]"
        step = _entry_step(e, where, ("step", *_spec.SLOT_NAMES),
                           "is this an adamc state_dict?", "an adamc state entry")
        entry = {"step": step, "extra": {}, "map": map_of[pid]}
        for m in _MOMENTS:
            a = _array(e[m], f"{where}['{m}']")
            if a.dtype == np.uint8:
                if _SCALE[m] not in e:
                    raise ValueError(f"{where} has 8-bit {m} codes but no {_SCALE[m]!r} "
                                     "(their per-block scales)")
                label = f"{where}['{_SCALE[m]}']"
                scales = V.check_interop_scales(_array(e[_SCALE[m]], label),
                                                a.size, label)
                entry[m] = ("int8", a, scales)
            else:
                if V.dtype_name(a.dtype) is None:
                    raise TypeError(f"{where}['{m}'] must be float state or uint8 codes, "
                                    f"got {a.dtype}")
                if _SCALE[m] in e:   # codes cast to float: not values
                    raise V.stray_scales(f"{where}[{_SCALE[m]!r}]", m, a)
                entry[m] = ("float", a)
        if entry["exp_avg"][1].shape != entry["exp_avg_sq"][1].shape:
            raise ValueError(f"{where}: exp_avg and exp_avg_sq differ in shape "
                             f"({entry['exp_avg'][1].shape}, {entry['exp_avg_sq'][1].shape})")
        for key in ("max_exp_avg_sq", "master_param"):
            if key in e:
                entry["extra"][key] = _array(e[key], f"{where}['{key}']")
        out[pid] = entry
    V.check_maps_agree(version, {entry["map"] for entry in out.values()
                                 if any(entry[m][0] == "int8" for m in _MOMENTS)}, what)
    return out


def _adamc_dict(state, groups):
    """An adamc state_dict; with 8-bit codes, the highest map version they
    index (each group's quant_map, "dynamic" where absent)."""
    sd = {"state": state, "param_groups": groups}
    versions = {_spec.QUANT_MAPS[g.get("quant_map", "dynamic")] for g in groups
                if any(a.dtype == np.uint8 for pid in g["params"]
                       for k, a in state.get(pid, {}).items() if k != "step")}
    if versions:
        sd[V.MAP_VERSION_KEY] = max(versions)
    return sd


def _codes_for(codes, scales, signed, version, to_version, c_order=False):
    """Codes and scales of map version ``to_version`` (in C order with
    ``c_order``): the same arrays when nothing changes, else the values
    ``map[code] * scale`` quantized again (rounded once more; the step's
    own rule, reference.quantize_blockwise)."""
    if version == to_version and not (c_order and codes.ndim > 1
                                       and not codes.flags.c_contiguous):
        return np.ascontiguousarray(codes) if c_order else codes, scales
    values = dequantize_blockwise(codes, scales, signed, version)
    if c_order:
        values = np.ascontiguousarray(values)
    return quantize_blockwise(values, signed, to_version)


def _group_values(groups, what, target, decay_both_ways=False, has=()):
    """Each adamc group's lr, betas, eps, weight_decay (checked to be
    expressible by ``target``, which also ``has`` those options) and params."""
    out = []
    for gi, g in enumerate(groups):
        where = f"{what}['param_groups'][{gi}]"
        V.check_interop_group(g, where, target, decay_both_ways, has)
        b1, b2 = V.check_interop_betas(g.get("betas", (0.9, 0.999)), f"{where}['betas']")
        d = {"lr": float(g["lr"]), "betas": (b1, b2),
             "eps": V.check_real(g.get("eps", 1e-8), "eps", where),
             "weight_decay": V.check_real(g.get("weight_decay", 0.0), "weight_decay", where)}
        if "param_names" in g:
            d["param_names"] = list(g["param_names"])
        d["params"] = list(g["params"])
        out.append(d)
    return out


def _foreign_groups(groups, what, amsgrad=False):
    """lr, betas, eps, weight_decay of bitsandbytes'/torchao's groups (or
    torch's, with ``amsgrad``: allowed), checked."""
    out = []
    for gi, g in enumerate(groups):
        where = f"{what}['param_groups'][{gi}]"
        d = {}
        if "lr" in g:
            lr = g["lr"]
            if not isinstance(lr, (int, float)):   # torchao keeps lr as a 0-d tensor
                arr = _array(lr, f"{where}['lr']")
                if arr.size != 1:
                    raise ValueError(f"{where}['lr'] must be one number, got an array of "
                                     f"shape {arr.shape}")
                lr = arr.item()
            d["lr"] = V.check_real(lr, "lr", where)
        if g.get("amsgrad") and not amsgrad:   # (refused also where nothing has stepped)
            raise ValueError(f"{where} has amsgrad={g['amsgrad']!r}; adamc's 8-bit state "
                             "has no amsgrad: convert the state of an optimizer built with "
                             "amsgrad=False")
        if "betas" in g:
            d["betas"] = V.check_interop_betas(g["betas"], f"{where}['betas']")
        for key in ("eps", "weight_decay"):
            if key in g:
                d[key] = V.check_real(g[key], key, where)
        if "param_names" in g:
            d["param_names"] = list(g["param_names"])
        d["params"] = list(g["params"])
        out.append(d)
    return out


# -- bitsandbytes -----------------------------------------------------------

def to_bitsandbytes(state_dict, *, tensor=None):
    """An adamc state_dict in bitsandbytes' ``Adam8bit`` layout.

    Parameters
    ----------
    state_dict : dict
        ``adamc.Adam(...).state_dict()`` (or AdamW's), 8-bit
        (``state_dtype="int8"``) or float state; small tensors' float32
        state becomes bitsandbytes' 32-bit state (``state1``/``state2``
        float32), as its ``min_8bit_size`` rule does.
    tensor : callable, optional
        Applied to every array of the result: ``torch.from_numpy`` gives a
        dict ``bnb.optim.Adam8bit.load_state_dict`` takes as it is.

    Returns
    -------
    dict
        ``{"state": {i: {"step": int, "state1": uint8 codes (the parameter's
        shape, C order), "qmap1": float32[256], "absmax1": float32[blocks],
        "state2", "qmap2", "absmax2"}}, "param_groups": [{"lr", "betas",
        "eps", "weight_decay", "params"}]}``: the flat layout every
        bitsandbytes version loads (0.49+ also accept, and write, the
        tensors nested under ``"__bnb_optimizer_quant_state__"``).

    Raises
    ------
    ValueError
        A group option Adam8bit cannot express (amsgrad, maximize,
        bias_correction=False, eps_mode other than "outside", L2 weight
        decay: bitsandbytes' decay is decoupled, as AdamW's; a schedule
        for lr), a master_param (bitsandbytes keeps none), or a corrupted
        state (scales not finite and >= 0, codes and scales that disagree in
        size).
    """
    entries = _adamc_entries(state_dict, "state_dict")
    groups = _group_values(state_dict["param_groups"], "state_dict", "bitsandbytes' Adam8bit")
    state = {}
    for pid, e in entries.items():
        where = f"state_dict['state'][{pid!r}]"
        for key in e["extra"]:
            raise ValueError(
                f"{where} has {key!r}, which bitsandbytes' Adam8bit has no place for "
                "(no amsgrad, no float32 master copy); convert without it")
        out = {"step": e["step"]}
        kinds = {e[m][0] for m in _MOMENTS}
        if kinds != {e["exp_avg"][0]}:
            raise ValueError(f"{where} has one 8-bit and one float moment; adamc never "
                             "writes that, and bitsandbytes cannot hold it")
        for n, m in ((1, "exp_avg"), (2, "exp_avg_sq")):
            if e[m][0] == "int8":
                codes, scales = _codes_for(e[m][1], e[m][2], _SIGNED[m], e["map"],
                                           _spec.QUANT_MAP_VERSION, c_order=True)
                out[f"state{n}"] = codes.copy()
                out[f"qmap{n}"] = dynamic_map(_SIGNED[m]).copy()
                out[f"absmax{n}"] = scales.copy()
            else:
                out[f"state{n}"] = np.ascontiguousarray(e[m][1], dtype=np.float32).copy()
        state[pid] = out
    return _convert({"state": state, "param_groups": groups}, tensor)


def from_bitsandbytes(state_dict, *, quant_map="dynamic"):
    """bitsandbytes' ``Adam8bit``/``AdamW8bit`` state_dict as an adamc one.

    Parameters
    ----------
    state_dict : dict
        ``bnb.optim.Adam8bit(...).state_dict()``: tensors flat or nested
        under ``"__bnb_optimizer_quant_state__"`` (0.49+), CPU tensors or
        NumPy arrays.  Its blockwise 8-bit state (``state1`` uint8, one
        ``absmax1`` per 256 elements) and 32-bit state (small tensors) are
        taken; ``qmap1``/``qmap2`` must be the dynamic maps adamc uses.

    Returns
    -------
    dict
        An adamc state_dict for ``load_state_dict`` of an optimizer with
        the same parameters and ``state_dtype="int8"`` (and ``quant_map``:
        "dynamic" copies the codes; "pow2" quantizes their values again
        with map version 2, the groups saying so): per parameter
        ``step``, ``exp_avg``/``exp_avg_sq`` (uint8 codes in C order, or
        float32 for 32-bit state) and ``exp_avg_absmax``/
        ``exp_avg_sq_absmax``; groups with lr, betas, eps, weight_decay (and
        ``decoupled_weight_decay=True`` where weight_decay > 0: bitsandbytes
        decays decoupled); the other options stay the optimizer's own.

    Raises
    ------
    TypeError, ValueError
        Not a state_dict, another map (or non-blockwise 8-bit state:
        ``max1``/``new_max1``), a third beta (AdEMAMix), scales not finite
        and >= 0, codes and scales that disagree in size, keys adamc has
        no equivalent for.
    """
    what = "bitsandbytes state_dict"
    quant_map = V.check_choice(quant_map, "quant_map", _spec.OPTION["quant_map"].choices)
    V.check_interop_state_dict(state_dict, what)
    state = {}
    for pid, raw in state_dict["state"].items():
        where = f"{what}['state'][{pid!r}]"
        e = {k: v for k, v in raw.items() if k != BNB_NESTED}
        nested = raw.get(BNB_NESTED, {})
        if not isinstance(nested, dict):
            raise TypeError(f"{where}[{BNB_NESTED!r}] must be a dict")
        e.update(nested)
        out = {"step": _entry_step(e, where, _BNB_KEYS,
                                   "only Adam8bit's blockwise state converts (not the "
                                   "non-blockwise max1/new_max1 kind, nor unorm_vec)",
                                   "an Adam8bit state entry", ("step", "state1", "state2"))}
        s1 = _array(e["state1"], f"{where}['state1']")
        s2 = _array(e["state2"], f"{where}['state2']")
        if s1.dtype == np.uint8 or s2.dtype == np.uint8:
            for n, m, s in ((1, "exp_avg", s1), (2, "exp_avg_sq", s2)):
                V.check_interop_codes(s, f"{where}['state{n}']", s1.shape)
                for key in (f"qmap{n}", f"absmax{n}"):
                    if key not in e:
                        raise ValueError(f"{where} has 8-bit state{n} but no {key!r}")
                V.check_interop_qmap(_array(e[f"qmap{n}"], f"{where}['qmap{n}']"),
                             dynamic_map(_SIGNED[m]), f"{where}['qmap{n}']", _SIGNED[m])
                scales = V.check_interop_scales(_array(e[f"absmax{n}"],
                                                        f"{where}['absmax{n}']"),
                                        s.size, f"{where}['absmax{n}']")
                out[m] = np.ascontiguousarray(s).copy()
                out[_SCALE[m]] = scales
        else:
            for n, m, s in ((1, "exp_avg", s1), (2, "exp_avg_sq", s2)):
                if V.dtype_name(s.dtype) is None:
                    raise TypeError(f"{where}['state{n}'] must be uint8 codes or float "
                                    f"state, got {s.dtype}")
                for key in (f"absmax{n}", f"qmap{n}"):   # codes cast to float: not values
                    if key in e:
                        raise V.stray_scales(f"{where}[{key!r}]", f"state{n}", s)
                if s.shape != s1.shape:
                    raise ValueError(f"{where}: state1 and state2 differ in shape "
                                     f"({s1.shape}, {s2.shape})")
                out[m] = np.ascontiguousarray(s, dtype=np.float32).copy()
        state[pid] = out
    groups = _foreign_groups(state_dict["param_groups"], what)
    for g in groups:
        if g.get("weight_decay", 0.0) > 0.0:
            g["decoupled_weight_decay"] = True
    return _requantized(_adamc_dict(state, groups), quant_map)


# -- torchao ----------------------------------------------------------------

def _torchao_part(value, name):
    """codes, scale, qmap, signed of an OptimState8bit, or of a dict of them."""
    if isinstance(value, dict):
        try:
            return value["codes"], value["scale"], value["qmap"], value["signed"]
        except KeyError as exc:
            raise ValueError(f"{name} lacks {exc.args[0]!r}; an 8-bit torchao state has "
                             "codes, scale, qmap and signed") from None
    return value.codes, value.scale, value.qmap, value.signed


def _is_torchao_8bit(value):
    return (isinstance(value, dict) and "codes" in value) or all(
        hasattr(value, a) for a in ("codes", "scale", "qmap", "signed"))


def to_torchao(state_dict, *, tensor=None):
    """An adamc state_dict in torchao's 8-bit Adam layout.

    Parameters
    ----------
    state_dict : dict
        ``adamc.Adam(...)``/``AdamW(...).state_dict()``.
    tensor : callable, optional
        Applied to every array of the result (``torch.from_numpy``).

    Returns
    -------
    dict
        ``{"state": {i: {"step": float32 0-d array, "exp_avg": {"codes":
        uint8 (the parameter's shape, C order), "scale": float32[blocks],
        "qmap": float32[256], "signed": True, "block_size": 256},
        "exp_avg_sq": {... "signed": False ...}}}, "param_groups": [{"lr"
        (a float64 0-d array: torchao's optimizers keep a tensor), "betas",
        "eps", "weight_decay", "amsgrad", "params"}]}``.  Build
        each ``OptimState8bit(codes, scale, qmap, signed)`` from its dict
        for ``load_state_dict``.  torchao quantizes only tensors whose size
        is a multiple of the block: the 8-bit state of any other tensor
        comes out as its float32 values (``map[code] * scale``, what adamc
        steps with), as does float state.  Weight decay: load a state with
        ``decoupled_weight_decay`` into ``AdamW8bit``, else ``Adam8bit``.

    Raises
    ------
    ValueError
        An option torchao has no form of (maximize, bias_correction=False,
        eps_mode other than "outside", a schedule for lr), a master_param,
        or a corrupted state.
    """
    entries = _adamc_entries(state_dict, "state_dict")
    groups = _group_values(state_dict["param_groups"], "state_dict", "torchao's 8-bit Adam",
                           decay_both_ways=True)
    for g, src in zip(groups, state_dict["param_groups"]):
        g["amsgrad"] = False
        g["lr"] = np.array(g["lr"], dtype=np.float64)   # a tensor in torchao's groups
        g.pop("params")
        g["params"] = list(src["params"])
    state = {}
    for pid, e in entries.items():
        where = f"state_dict['state'][{pid!r}]"
        if "master_param" in e["extra"]:
            raise ValueError(f"{where} has 'master_param', which torchao's optimizers "
                             "keep no place for; convert without it")
        out = {"step": np.array(e["step"], dtype=np.float32)}
        for m in _MOMENTS:
            if e[m][0] == "int8" and e[m][1].size % _spec.QUANT_BLOCK == 0:
                codes, scales = _codes_for(e[m][1], e[m][2], _SIGNED[m], e["map"],
                                           _spec.QUANT_MAP_VERSION, c_order=True)
                out[m] = {"codes": codes.copy(), "scale": scales.copy(),
                          "qmap": dynamic_map(_SIGNED[m]).copy(), "signed": _SIGNED[m],
                          "block_size": _spec.QUANT_BLOCK}
            elif e[m][0] == "int8":
                out[m] = np.ascontiguousarray(
                    dequantize_blockwise(e[m][1], e[m][2], _SIGNED[m], e["map"]))
            else:
                out[m] = np.ascontiguousarray(e[m][1], dtype=np.float32).copy()
        if "max_exp_avg_sq" in e["extra"]:
            raise ValueError(f"{where} has 'max_exp_avg_sq' (amsgrad); convert a state "
                             "trained without amsgrad")
        state[pid] = out
    return _convert({"state": state, "param_groups": groups}, tensor)


def from_torchao(state_dict, *, quant_map="dynamic"):
    """torchao's 8-bit ``Adam8bit``/``AdamW8bit`` state_dict as an adamc one.

    Parameters
    ----------
    state_dict : dict
        The optimizer's ``state_dict()``: ``exp_avg``/``exp_avg_sq`` are
        ``OptimState8bit`` tensors (or dicts of their ``codes``, ``scale``,
        ``qmap``, ``signed``), or plain tensors for small parameters (in
        the parameter's dtype: a bfloat16 one widens to float32 exactly);
        ``step`` a float tensor.  Block size 256 and adamc's maps only.

    Returns
    -------
    dict
        An adamc state_dict (as :func:`from_bitsandbytes` returns it, with
        ``quant_map`` as there); the
        groups carry lr, betas, eps and weight_decay, and the optimizer
        loading it says whether the decay is decoupled (``adamc.AdamW`` for
        an ``AdamW8bit`` state).

    Raises
    ------
    TypeError, ValueError
        Not a state_dict, another block size or map, a wrong ``signed``,
        scales not finite and >= 0, amsgrad (state, or a group's option).
    """
    what = "torchao state_dict"
    quant_map = V.check_choice(quant_map, "quant_map", _spec.OPTION["quant_map"].choices)
    V.check_interop_state_dict(state_dict, what)
    state = {}
    for pid, e in state_dict["state"].items():
        where = f"{what}['state'][{pid!r}]"
        out = {"step": _entry_step(e, where, ("step", *_MOMENTS),
                                   "adamc's 8-bit state has no amsgrad (max_exp_avg_sq)",
                                   "a torchao Adam state entry")}
        quantized = [_is_torchao_8bit(e[m]) for m in _MOMENTS]
        for m, q in zip(_MOMENTS, quantized):
            name = f"{where}['{m}']"
            if q:
                codes, scale, qmap, signed = _torchao_part(e[m], name)
                if bool(signed) != _SIGNED[m]:
                    raise ValueError(f"{name} has signed={signed!r}; {m} is quantized "
                                     f"{'signed' if _SIGNED[m] else 'unsigned'}")
                codes = V.check_interop_codes(_array(codes, f"{name}.codes"),
                                      f"{name}.codes")
                scale = _array(scale, f"{name}.scale")
                if scale.ndim != 1 or scale.size == 0 \
                        or codes.size != scale.size * _spec.QUANT_BLOCK:
                    raise ValueError(
                        f"{name} has {codes.size} codes and {scale.size} scales: adamc "
                        f"takes blocks of {_spec.QUANT_BLOCK} only (torchao's default "
                        "block_size)")
                out[_SCALE[m]] = V.check_interop_scales(scale, codes.size, f"{name}.scale")
                V.check_interop_qmap(_array(qmap, f"{name}.qmap"),
                             dynamic_map(_SIGNED[m]), f"{name}.qmap", _SIGNED[m])
                out[m] = np.ascontiguousarray(codes).copy()
            else:
                a = _array(e[m], name)
                if V.dtype_name(a.dtype) is None:
                    raise TypeError(f"{name} must be float state, got {a.dtype}")
                out[m] = np.ascontiguousarray(a, dtype=np.float32).copy()
        if len(set(quantized)) != 1:
            raise ValueError(f"{where} has one 8-bit and one float moment; convert "
                             "entries whose moments are stored alike")
        state[pid] = out
    return _requantized(_adamc_dict(state, _foreign_groups(state_dict["param_groups"], what)),
                        quant_map)


# -- torch.optim ---------------------------------------------------------------

#: Keys of torch.optim.Adam's groups that choose among its implementations or
#: devices: not carried either way (torch fills its defaults for them).
_TORCH_ONLY_GROUP_KEYS = tuple(_spec.TORCH_ONLY)
_F32_EXACT_STEPS = 2 ** 24   # float32 holds every step count below this


def _for_torch(a):
    """A copy of state array ``a`` torch can take: bfloat16 (ml_dtypes, which
    torch.from_numpy cannot read) widened to float32, exactly."""
    return a.astype(np.float32, order="K") if V.dtype_name(a.dtype) == "bfloat16" \
        else a.copy(order="K")


def _plain(value, where):
    """A torch tensor in a group's other keys (a scheduler's initial_lr
    beside a tensor lr) as NumPy: a 0-d one as a Python number."""
    if V.library_of(value) != "torch":
        return value
    a = _array(value, where)
    return a.item() if a.ndim == 0 else np.array(a, copy=True)


def to_torch(state_dict, *, tensor=None):
    """An adamc state_dict in ``torch.optim.Adam``/``AdamW``'s layout.

    Parameters
    ----------
    state_dict : dict
        ``adamc.Adam(...).state_dict()`` (or AdamW's): float state (bfloat16
        goes out as float32, exactly: torch.from_numpy cannot read it), or
        8-bit state, which is dequantized (``map[code] * scale``, exactly
        the values the 8-bit optimizer steps with) to float32.  A group with
        amsgrad turned on after its parameters stepped gets the
        ``max_exp_avg_sq`` adamc would start from (zeros).
    tensor : callable, optional
        Applied to every array of the result: ``torch.from_numpy`` gives a
        dict ``torch.optim.Adam(...).load_state_dict`` takes as it is.

    Returns
    -------
    dict
        ``{"state": {i: {"step": 0-d float32 array (float64 from 2**24
        steps, which float32 cannot count), "exp_avg", "exp_avg_sq"
        (and "max_exp_avg_sq" with amsgrad)}}, "param_groups": [{"lr",
        "betas", "eps", "weight_decay", "amsgrad", "maximize",
        "decoupled_weight_decay", "params"}]}``: torch's own layout.  As for
        any state_dict, the loaded groups replace torch's, whose
        ``foreach``/``fused``/``capturable``/``differentiable`` then take
        their defaults: set them on ``param_groups`` after loading to keep
        others.  Load a group with ``decoupled_weight_decay=True`` into
        ``torch.optim.AdamW`` (or an Adam that has that option).

    Raises
    ------
    ValueError
        An option torch.optim.Adam has none for (``bias_correction=False``,
        ``eps_mode`` other than "outside"; a schedule for lr: set the
        number for the next step first), a ``master_param`` (torch keeps no
        float32 copy: load it into the torch model's parameters, or step
        on in adamc), or a corrupted state.
    """
    entries = _adamc_entries(state_dict, "state_dict")
    groups = _group_values(state_dict["param_groups"], "state_dict", "torch.optim.Adam",
                           decay_both_ways=True, has=("amsgrad", "maximize"))
    amsgrad = set()   # the parameters whose group has amsgrad on
    for d, g in zip(groups, state_dict["param_groups"]):
        params = d.pop("params")
        d.update(amsgrad=bool(g.get("amsgrad", False)), maximize=bool(g.get("maximize", False)),
                 decoupled_weight_decay=bool(g.get("decoupled_weight_decay", False)),
                 params=params)
        if d["amsgrad"]:
            amsgrad.update(params)
    state = {}
    for pid, e in entries.items():
        where = f"state_dict['state'][{pid!r}]"
        if "master_param" in e["extra"]:
            raise ValueError(
                f"{where} has 'master_param', the float32 copy of a 16-bit parameter, which "
                "torch.optim keeps none of: load it into the torch model's parameters "
                "(as float32) and drop it from the entry, or step on in adamc")
        step = e["step"]
        out = {"step": np.array(step, np.float32 if step < _F32_EXACT_STEPS else np.float64)}
        for m in _MOMENTS:
            kind, a = e[m][0], e[m][1]
            out[m] = (dequantize_blockwise(a, e[m][2], _SIGNED[m], e["map"]) if kind == "int8"
                      else _for_torch(a))
        if "max_exp_avg_sq" in e["extra"]:
            out["max_exp_avg_sq"] = _for_torch(e["extra"]["max_exp_avg_sq"])
        elif pid in amsgrad:   # amsgrad turned on after this entry's steps: adamc
            out["max_exp_avg_sq"] = np.zeros_like(out["exp_avg_sq"])   # starts it at 0
        state[pid] = out
    return _convert({"state": state, "param_groups": groups}, tensor)


def from_torch(state_dict):
    """``torch.optim.Adam``/``AdamW``'s state_dict as an adamc one.

    Parameters
    ----------
    state_dict : dict
        ``torch_optimizer.state_dict()``: CPU tensors (bfloat16 ones are
        widened to float32, exactly) or NumPy arrays; ``step`` a tensor or
        a number.

    Returns
    -------
    dict
        An adamc state_dict for ``load_state_dict`` of an optimizer with
        the same parameters: per parameter ``step`` (an int), ``exp_avg``,
        ``exp_avg_sq`` (and ``max_exp_avg_sq``) as NumPy arrays; groups with
        lr, betas, eps, weight_decay, amsgrad, maximize,
        ``decoupled_weight_decay`` (where torch's group has it) and any
        other keys (``initial_lr``, ``param_names``) as they are (a tensor
        among them as NumPy: a 0-d one as a number); torch's
        ``foreach``, ``fused``, ``capturable`` and ``differentiable`` are
        dropped.  adamc's own options (``state_dtype``, ...) stay the
        optimizer's.

    Raises
    ------
    TypeError, ValueError
        Not a state_dict, a tensor NumPy cannot read (on a GPU: ``.cpu()``
        first), a step that is not a whole number, a third beta, keys adamc
        has no equivalent for (another optimizer's state).
    """
    what = "torch state_dict"
    V.check_interop_state_dict(state_dict, what)
    state = {}
    for pid, e in state_dict["state"].items():
        where = f"{what}['state'][{pid!r}]"
        out = {"step": _entry_step(e, where, ("step", *_MOMENTS, "max_exp_avg_sq"),
                                   "is this torch.optim.Adam's or AdamW's state_dict?",
                                   "torch.optim.Adam's state")}
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in e:
                out[key] = np.array(_array(e[key], f"{where}['{key}']"), copy=True)
        state[pid] = out
    groups = []
    checked = _foreign_groups(state_dict["param_groups"], what, amsgrad=True)
    for gi, (g, values) in enumerate(zip(state_dict["param_groups"], checked)):
        where = f"{what}['param_groups'][{gi}]"
        d = {k: _plain(v, f"{where}[{k!r}]") for k, v in g.items()
             if k not in _TORCH_ONLY_GROUP_KEYS}
        d.update(values)
        for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
            if key in g:
                d[key] = V.check_bool(g[key], key, where)
        groups.append(d)
    return {"state": state, "param_groups": groups}


# -- full precision <-> 8 bits ------------------------------------------------

def _requantized(sd, quant_map):
    """An adamc state_dict with every group on ``quant_map`` (its 8-bit codes
    quantized again where they index another map)."""
    if all(g.get("quant_map", "dynamic") == quant_map for g in sd["param_groups"]):
        return sd
    entries = _adamc_entries(sd, "state_dict")
    to = _spec.QUANT_MAPS[quant_map]
    state = {}
    for pid, e in entries.items():
        out = {"step": e["step"], **e["extra"]}
        for m in _MOMENTS:
            if e[m][0] == "int8":
                out[m], out[_SCALE[m]] = _codes_for(e[m][1], e[m][2], _SIGNED[m], e["map"], to)
            else:
                out[m] = e[m][1]
        state[pid] = out
    return _adamc_dict(state, [{**g, "quant_map": quant_map} for g in sd["param_groups"]])


def quantize_state(state_dict, *, min_8bit_size=None, quant_map="dynamic"):
    """A float-state adamc state_dict in the 8-bit layout.

    Each parameter of at least ``min_8bit_size`` elements (and at least one
    block, 256) gets its moments quantized as the optimizer would
    (:func:`adamc.reference.quantize_blockwise`, blocks in the arrays'
    memory order) with the map ``quant_map``, smaller ones keep float32
    (8-bit entries among them: their values, ``map[code] * scale``); the
    groups say ``state_dtype="int8"``, ``min_8bit_size`` and ``quant_map``.
    ``min_8bit_size=None``: each group's own (4096 where it has none), so a
    converted 8-bit state keeps its layout.  Load the result into an
    optimizer built with those options.  8-bit entries keep their codes if
    they index ``quant_map`` already, else their values are quantized again
    with it (the converter between map versions 1 and 2: not exact, each
    value rounds once more); amsgrad state (max_exp_avg_sq) is refused, as
    by the 8-bit optimizer.
    """
    if min_8bit_size is not None:
        min_8bit_size = V.check_count(min_8bit_size, "min_8bit_size")
    quant_map = V.check_choice(quant_map, "quant_map", _spec.OPTION["quant_map"].choices)
    to = _spec.QUANT_MAPS[quant_map]
    entries = _adamc_entries(state_dict, "state_dict")
    sizes, group_of = [], {}   # each group's min_8bit_size; each parameter's group
    for gi, g in enumerate(state_dict["param_groups"]):
        own = g.get("min_8bit_size", _spec.OPTION["min_8bit_size"].default)
        sizes.append(min_8bit_size if min_8bit_size is not None else V.check_count(
            own, "min_8bit_size", f"state_dict['param_groups'][{gi}]"))
        group_of.update({pid: gi for pid in g["params"]})
    state = {}
    for pid, e in entries.items():
        where = f"state_dict['state'][{pid!r}]"
        if "max_exp_avg_sq" in e["extra"]:
            raise ValueError(f"{where} has 'max_exp_avg_sq': 8-bit state has no amsgrad; "
                             "quantize a state trained without it")
        out = {"step": e["step"], **{k: a.copy(order="K") for k, a in e["extra"].items()}}
        eight = _spec.holds_8bit(e["exp_avg"][1].size, sizes[group_of[pid]])
        for m in _MOMENTS:
            if e[m][0] == "int8" and eight:
                codes, scales = _codes_for(e[m][1], e[m][2], _SIGNED[m], e["map"], to)
                out[m], out[_SCALE[m]] = codes.copy(order="K"), scales.copy()
            elif e[m][0] == "int8":
                out[m] = dequantize_blockwise(e[m][1], e[m][2], _SIGNED[m], e["map"])
            elif eight:
                values = e[m][1].astype(np.float32, order="K")
                out[m], out[_SCALE[m]] = quantize_blockwise(values, _SIGNED[m], to)
            else:
                out[m] = e[m][1].astype(np.float32, order="K")
        state[pid] = out
    groups = [{**g, "state_dtype": "int8", "min_8bit_size": size, "quant_map": quant_map}
              for g, size in zip(state_dict["param_groups"], sizes)]
    return _adamc_dict(state, groups)


def dequantize_state(state_dict):
    """An 8-bit adamc state_dict in float32: each moment's ``map[code] *
    scale`` (exactly the values the 8-bit optimizer steps with), the scale
    slots dropped, groups with ``state_dtype="int8"`` saying "float32"
    instead; float state passes unchanged.  Load the result into an
    optimizer built with ``state_dtype="float32"``."""
    entries = _adamc_entries(state_dict, "state_dict")
    state = {}
    for pid, e in entries.items():
        out = {"step": e["step"], **{k: a.copy(order="K") for k, a in e["extra"].items()}}
        for m in _MOMENTS:
            if e[m][0] == "int8":
                out[m] = dequantize_blockwise(e[m][1], e[m][2], _SIGNED[m], e["map"])
            else:
                out[m] = e[m][1].copy(order="K")
        state[pid] = out
    groups = [{**g, "state_dtype": "float32"} if g.get("state_dtype") == "int8" else dict(g)
              for g in state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}
