"""Crash-safe, pickle-free optimizer checkpoints: ``save_state`` and ``load_state``.

``save_state(opt, path)`` writes ``opt.state_dict()`` to ``path`` atomically;
``load_state(opt, path)`` verifies a file completely and only then hands it
to ``opt.load_state_dict``, so a bad file raises ``ValueError`` and leaves the
optimizer exactly as it was.

The file format (written as the lowest of versions 2-4 that holds the state,
versions 1-4 read: a ``.npz``
of stored ``.npy`` members, a JSON header, a SHA-256 over every byte of
content), how schedules are recorded,
and the durability guarantees are specified in docs/checkpoint-format.md;
this module is their one implementation.  Nothing is ever unpickled.

Only the optimizer's state is saved, not the parameters themselves: save
those too (consistently with the optimizer, i.e. between steps).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import numbers
import os
import secrets
import struct
import zipfile

import numpy as np
import numpy.lib.format as npy_format

from . import _spec, _validation

__all__ = ["save_state", "load_state"]

FORMAT_NAME = "adamc-optimizer-state"
FORMAT_VERSION = 4
#: Versions this reader accepts: 1 (float32/float64 state), 2 (adds float16,
#: bfloat16 and the master_param slot), 3 (adds 8-bit state: uint8 codes of
#: dynamic-map version 1 and the exp_avg_absmax/exp_avg_sq_absmax scales), 4
#: (adds the header key quant_map_version: codes of map version 2, the
#: "pow2" quant_map, in the groups that say so).  A file is written in the
#: lowest version that holds it.
READ_VERSIONS = (1, 2, 3, 4)

_HEADER = "header.npy"
_DIGEST = "sha256.npy"
_BUFFERS = _spec.SLOT_NAMES
_DTYPES = {"<f2": np.dtype("<f2"), "<f4": np.dtype("<f4"), "<f8": np.dtype("<f8"),
           "bfloat16": np.dtype("<u2"),  # bfloat16: its bits, as little-endian uint16
           "|u1": np.dtype("|u1")}       # version 3: 8-bit state codes (map version 1)
_TOP_KEYS = {"format", "version", "optimizer", "adamc_version", "param_groups",
             "state", "arrays"}
_CHUNK = 1 << 22  # bytes per write call
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same state gives the same bytes


class _Schedule:
    """Stands for a callable lr read from a file, until the caller re-supplies it."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<lr schedule {self.name!r}>"


# ----------------------------------------------------------------------
# value encoding (param-group entries <-> JSON)


def _encode_value(v, where):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        x = float(v)  # exact for float16/32/64
        if math.isfinite(x):
            return x
        return {"float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
    if isinstance(v, tuple):
        return {"tuple": [_encode_value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, list):
        return [_encode_value(x, f"{where}[{i}]") for i, x in enumerate(v)]
    raise ValueError(
        f"cannot save {where}: a {type(v).__name__} cannot be stored in a checkpoint "
        "(only None, bool, int, float, str and lists/tuples of them); remove it "
        "from the param group or replace it with such a value"
    )


def _decode_value(v, where):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_decode_value(x, where) for x in v]
    if isinstance(v, dict) and len(v) == 1:
        (tag, x), = v.items()
        if tag == "tuple" and isinstance(x, list):
            return tuple(_decode_value(y, where) for y in x)
        if tag == "float" and x in ("nan", "inf", "-inf"):
            return float(x)
        if tag == "schedule" and isinstance(x, str) and where.endswith("['lr']"):
            return _Schedule(x)
    raise ValueError(f"{where} has an invalid value {v!r}")


def _schedule_name(f):
    mod = getattr(f, "__module__", None)
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{mod}.{name}" if mod else name


# ----------------------------------------------------------------------
# state_dict -> (header bytes, arrays)


def _le(a):
    """a as a contiguous little-endian array in its own memory order, and that order."""
    order = "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"
    a = np.asarray(a)
    a = a.astype(a.dtype.newbyteorder("<"), order=order, copy=False)
    if not (a.flags.c_contiguous or a.flags.f_contiguous):  # pragma: no cover
        a = np.ascontiguousarray(a)
        order = "C"
    return a, order


def _encode(name, sd, scaler_state=None):
    groups = []
    for gi, g in enumerate(sd["param_groups"]):
        out = {}
        for k, v in g.items():
            where = f"param_groups[{gi}][{k!r}]"
            if not isinstance(k, str):
                raise ValueError(f"cannot save param_groups[{gi}]: key {k!r} is not a string")
            if k == "lr" and callable(v) and not isinstance(v, numbers.Real):
                out[k] = {"schedule": _schedule_name(v)}
            else:
                out[k] = _encode_value(v, where)
        groups.append(out)
    arrays, metas, entries = [], [], []
    for i in sorted(sd["state"]):
        e = sd["state"][i]
        ent = {"param": int(i), "step": int(e["step"])}
        for key in _BUFFERS:
            if key not in e:
                continue
            bf16 = e[key].dtype.name == "bfloat16" and e[key].dtype.itemsize == 2
            a, order = _le(e[key].view(np.uint16) if bf16 else e[key])
            tag = "bfloat16" if bf16 else a.dtype.str
            if tag not in _DTYPES or (not bf16 and a.dtype.kind not in "fu"):
                raise ValueError(
                    f"cannot save state[{i}][{key!r}]: dtype {e[key].dtype} is not "
                    "float16, bfloat16, float32, float64 or uint8 (8-bit codes)"
                )
            ent[key] = len(arrays)
            arrays.append(a)
            metas.append({"dtype": tag, "shape": list(a.shape), "order": order})
        entries.append(ent)
    from . import __version__

    qversion = sd.get("quant_map_version", _spec.QUANT_MAP_VERSION)
    codes = any(m["dtype"] == "|u1" for m in metas)
    doc = {
        "format": FORMAT_NAME,
        # files without 8-bit state stay readable by version-2 readers, with
        # dynamic-map codes only by version-3 readers
        "version": 2 if not codes else 3 if qversion == _spec.QUANT_MAP_VERSION else 4,
        "optimizer": name,
        "adamc_version": __version__,
        "param_groups": groups,
        "state": entries,
        "arrays": metas,
    }
    if doc["version"] == 4:
        doc["quant_map_version"] = int(qversion)
    if scaler_state is not None:  # version 2: a LossScaler's state, numbers only
        doc["scaler"] = {k: _encode_value(v, f"scaler[{k!r}]") for k, v in scaler_state.items()}
    header = json.dumps(doc, ensure_ascii=True, allow_nan=False,
                        separators=(",", ":")).encode("ascii")
    return header, arrays, [m["order"] for m in metas]


def _raw(a):
    """The bytes of contiguous array a, in its memory order, without a copy."""
    return memoryview(a.reshape(-1, order="A")).cast("B")


def _digest(header, raws):
    h = hashlib.sha256()
    h.update(FORMAT_NAME.encode("ascii") + b"\0")
    h.update(struct.pack("<Q", len(header)))
    h.update(header)
    for r in raws:
        h.update(struct.pack("<Q", len(r)))
        h.update(r)
    return h.digest()


# ----------------------------------------------------------------------
# writing


def _write_bytes(f, data):
    """Every byte of array data goes through here, in chunks of at most _CHUNK."""
    f.write(data)


def _npy_header(dtype_str, shape, fortran):
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(
        buf, {"descr": dtype_str, "fortran_order": bool(fortran), "shape": tuple(shape)}
    )
    return buf.getvalue()


def _write_member(zf, name, head, raw):
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.file_size = len(head) + len(raw)
    with zf.open(info, "w") as m:
        m.write(head)
        for start in range(0, len(raw), _CHUNK):
            _write_bytes(m, raw[start:start + _CHUNK])


def _write_file(f, header, arrays, orders, digest):
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        hdr = np.frombuffer(header, dtype=np.uint8)
        _write_member(zf, _HEADER, _npy_header("|u1", hdr.shape, False), _raw(hdr))
        for k, (a, order) in enumerate(zip(arrays, orders)):
            head = _npy_header(a.dtype.str, a.shape, order == "F")
            _write_member(zf, f"a{k}.npy", head, _raw(a))
        _write_member(zf, _DIGEST, _npy_header("|u1", (len(digest),), False), digest)


def _fsync_dir(directory):
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF,
                           errno.EACCES, errno.EPERM):
            raise
    finally:
        os.close(fd)


def _open_temp(directory, base):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    while True:
        # (the name's first 16 characters, at most 64 bytes: a name near the
        # file system's limit leaves room for the 19 added)
        tmp = os.path.join(directory, f".{base[:16]}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def save_state(opt, path, *, scaler=None):
    """Write ``opt.state_dict()`` to ``path`` atomically, with a checksum.

    The file is complete and fsynced before it replaces ``path``; a crash
    at any moment leaves the previous file (if any) or the new one, never a
    mix.  Hyperparameters that cannot be stored raise ``ValueError`` before
    anything is written.  A callable ``lr`` is stored as a marker, and
    :func:`load_state` requires the target optimizer to have a schedule in
    that group.  With ``scaler`` (an :class:`adamc.LossScaler`), its state
    goes into the same file.  See the module docstring for the format.

    Examples
    --------
    >>> import os, tempfile, numpy as np, adamc
    >>> w = np.ones(3, dtype=np.float32)
    >>> opt = adamc.Adam([w], lr=0.1)
    >>> opt.step([np.ones(3, dtype=np.float32)])
    >>> path = os.path.join(tempfile.mkdtemp(), "opt.npz")
    >>> adamc.save_state(opt, path)
    >>> fresh = adamc.Adam([w], lr=0.1)
    >>> adamc.load_state(fresh, path)
    >>> fresh.state_dict()["state"][0]["step"]
    1
    """
    _validation.check_optimizer(opt, "save_state(opt, path)")
    _write_state_dict(type(opt).__name__, opt.state_dict(), path,
                      None if scaler is None else scaler.state_dict())


def _write_state_dict(name, sd, path, scaler_state=None):
    """save_state's work for a state_dict ``sd`` of an optimizer class ``name``
    (adamc.distributed gathers a sharded state_dict and writes it here)."""
    path = os.fsdecode(os.fspath(path))   # str, bytes or a path object
    header, arrays, orders = _encode(name, sd, scaler_state)
    raws = [_raw(a) for a in arrays]
    digest = _digest(header, raws)

    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot save to {path!r}: the directory {directory!r} does not exist; "
            f"create it first, e.g. os.makedirs({directory!r}, exist_ok=True)", path)
    tmp, fd = _open_temp(directory, base)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_file(f, header, arrays, orders, digest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


# ----------------------------------------------------------------------
# reading


class _Bad(Exception):
    """A problem with the file's content; becomes ValueError naming the path."""


def _read_npy(data, name, want_dtype, want_shape=None, want_order=None):
    fp = io.BytesIO(data)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise _Bad(f"member {name} has unsupported .npy version {version}")
    except _Bad:
        raise
    except Exception as e:
        raise _Bad(f"member {name} is not a valid .npy array ({e})") from e
    if dtype.hasobject or dtype.str != want_dtype:
        raise _Bad(
            f"member {name} has dtype {dtype!s} ({dtype.str}), expected {want_dtype}; "
            "adamc checkpoints never contain Python objects and are not unpickled"
        )
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise _Bad(f"member {name} has an invalid shape {shape!r}")
    if want_shape is not None and tuple(shape) != tuple(want_shape):
        raise _Bad(f"member {name} has shape {shape}, the header says {tuple(want_shape)}")
    order = "F" if fortran else "C"
    if want_order is not None and order != want_order:
        raise _Bad(f"member {name} is in {order} order, the header says {want_order}")
    nbytes = math.prod(shape) * dtype.itemsize
    start = fp.tell()
    if len(data) - start != nbytes:
        raise _Bad(
            f"member {name} holds {len(data) - start} data bytes, its shape {shape} "
            f"needs {nbytes} (truncated or corrupted)"
        )
    a = np.frombuffer(data, dtype=dtype, offset=start, count=math.prod(shape))
    return a.reshape(shape, order=order)


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _Bad(f"the header has a duplicate key {k!r}")
        d[k] = v
    return d


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_header(doc):
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise _Bad(f"not an adamc checkpoint: format is {fmt!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    if version not in READ_VERSIONS or not _is_int(version):
        raise _Bad(
            f"unsupported checkpoint format version {version!r}; this adamc reads "
            f"versions {', '.join(map(str, READ_VERSIONS))}"
        )
    top = _TOP_KEYS | ({"quant_map_version"} if version >= 4 else set())
    if set(doc) - {"scaler"} != top or ("scaler" in doc and version < 2):
        raise _Bad(f"the header has keys {sorted(doc)}, expected {sorted(top)}"
                   " (and from version 2 optionally 'scaler')")
    if version >= 4 and (not _is_int(doc["quant_map_version"])
                         or doc["quant_map_version"] not in _spec.QUANT_MAPS.values()):
        raise _Bad(f"the header's quant_map_version is {doc['quant_map_version']!r}; this "
                   f"adamc reads map versions {sorted(_spec.QUANT_MAPS.values())}")
    if "scaler" in doc and not isinstance(doc["scaler"], dict):
        raise _Bad("the header's 'scaler' is not an object")
    metas = doc["arrays"]
    if not isinstance(metas, list):
        raise _Bad("the header's 'arrays' is not a list")
    for k, m in enumerate(metas):
        if (not isinstance(m, dict) or set(m) != {"dtype", "shape", "order"}
                or m["dtype"] not in _DTYPES or m["order"] not in ("C", "F")
                or not isinstance(m["shape"], list)
                or not all(_is_int(n) and n >= 0 for n in m["shape"])):
            raise _Bad(f"the header's arrays[{k}] is malformed: {m!r}")
        if version == 1 and m["dtype"] not in ("<f4", "<f8"):
            raise _Bad(f"the header's arrays[{k}] has dtype {m['dtype']}, which version 1 "
                       "files do not hold")
        if version < 3 and m["dtype"] == "|u1":
            raise _Bad(f"the header's arrays[{k}] has dtype |u1 (8-bit codes), which "
                       f"version {version} files do not hold")
    return metas


def _build_state_dict(doc, arrays):
    groups_in = doc["param_groups"]
    if not isinstance(groups_in, list):
        raise _Bad("the header's 'param_groups' is not a list")
    groups = []
    for gi, g in enumerate(groups_in):
        if not isinstance(g, dict) or not isinstance(g.get("params"), list):
            raise _Bad(f"param_groups[{gi}] is malformed")
        groups.append({k: _decode_value(v, f"param_groups[{gi}][{k!r}]")
                       for k, v in g.items()})
        if not all(_is_int(x) for x in groups[-1]["params"]):
            raise _Bad(f"param_groups[{gi}]['params'] must list integers")
    entries = doc["state"]
    if not isinstance(entries, list):
        raise _Bad("the header's 'state' is not a list")
    state, used = {}, set()
    for e in entries:
        if (not isinstance(e, dict) or not _is_int(e.get("param")) or not _is_int(e.get("step"))
                or not set(e) <= {"param", "step", *_BUFFERS}):
            raise _Bad(f"state entry {e!r} is malformed")
        i = e["param"]
        if i in state:
            raise _Bad(f"state has two entries for parameter {i}")
        out = {"step": e["step"]}
        for key in _BUFFERS:
            if key not in e:
                continue
            k = e[key]
            if not _is_int(k) or not 0 <= k < len(arrays) or k in used:
                raise _Bad(f"state entry for parameter {i} has a bad array index {k!r}")
            used.add(k)
            out[key] = arrays[k]
        state[i] = out
    if len(used) != len(arrays):
        raise _Bad("the file has arrays that no state entry uses")
    sd = {"state": state, "param_groups": groups}
    if "quant_map_version" in doc:
        sd["quant_map_version"] = doc["quant_map_version"]
    return sd


def _read(f):
    """The verified state_dict in an open checkpoint file, or _Bad."""
    if f.read(4) != b"PK\x03\x04":
        raise _Bad("not an adamc checkpoint (not a .npz/ZIP file)")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _Bad(f"not a readable .npz/ZIP file, probably truncated ({e})") from e
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise _Bad("the archive has duplicate members")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise _Bad(f"member {info.filename} is compressed or encrypted")
        if _HEADER not in names or _DIGEST not in names:
            raise _Bad(f"not an adamc checkpoint (no {_HEADER} or {_DIGEST} member)")

        def member(name):
            try:
                return zf.read(name)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
                raise _Bad(f"member {name} cannot be read, truncated or corrupted ({e})") from e

        header = _read_npy(member(_HEADER), _HEADER, "|u1").tobytes()
        try:
            doc = json.loads(header.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except _Bad:
            raise
        except ValueError as e:  # includes UnicodeDecodeError, JSONDecodeError
            raise _Bad(f"the header is not valid JSON, corrupted ({e})") from e
        metas = _parse_header(doc)
        expected = {_HEADER, _DIGEST} | {f"a{k}.npy" for k in range(len(metas))}
        if set(names) != expected:
            raise _Bad(
                f"the archive's members {sorted(set(names) ^ expected)} do not match "
                "its header (missing or unexpected)"
            )
        arrays = [
            _read_npy(member(f"a{k}.npy"), f"a{k}.npy", _DTYPES[m["dtype"]].str, m["shape"],
                      m["order"])
            for k, m in enumerate(metas)
        ]
        stored = _read_npy(member(_DIGEST), _DIGEST, "|u1", (32,)).tobytes()
    if _digest(header, [_raw(a) for a in arrays]) != stored:
        raise _Bad("checksum mismatch: the file is corrupted or was modified")
    native = [a.astype(a.dtype.newbyteorder("="), copy=False) for a in arrays]
    if any(m["dtype"] == "bfloat16" for m in metas):
        try:
            import ml_dtypes
        except ImportError:
            raise _Bad("it holds bfloat16 state, which needs ml_dtypes: pip install "
                       "ml_dtypes") from None
        native = [a.view(ml_dtypes.bfloat16) if m["dtype"] == "bfloat16" else a
                  for a, m in zip(native, metas)]
    sd = _build_state_dict(doc, native)
    if "scaler" in doc:
        sd["scaler"] = {k: _decode_value(v, f"scaler[{k!r}]") for k, v in doc["scaler"].items()}
    return sd


def load_state(opt, path, *, scaler=None):
    """Restore ``opt`` from a checkpoint written by :func:`save_state`.

    The file is read and verified whole (format name, version, checksum,
    structure) and then checked against the optimizer by
    ``opt.load_state_dict`` before anything changes.  A truncated, corrupted,
    modified, wrong-version or mismatching file raises ``ValueError`` naming
    ``path`` and the problem, and leaves ``opt`` unchanged.  A missing file
    raises ``FileNotFoundError``.  Nothing in the file is ever unpickled.
    With ``scaler``, the file must hold a LossScaler's state (save_state's
    ``scaler``), which is restored too, all or nothing.
    """
    _validation.check_optimizer(opt, "load_state(opt, path)")
    path = os.fsdecode(os.fspath(path))   # str, bytes or a path object
    sd, scaler_state = _read_state_dict(path, opt.param_groups, scaler)
    try:
        opt.load_state_dict(sd)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the checkpoint does not fit this optimizer: {e}") from e
    if scaler is not None:
        scaler.load_state_dict(scaler_state)


def _read_state_dict(path, param_groups, scaler=None):
    """load_state's reading and checking, before the optimizer: (the file's
    state_dict with its schedule markers replaced by the schedules of
    ``param_groups``, the loss scaler's state or None), checked against
    ``scaler`` if given (adamc.distributed reads a file on one process here)."""
    with open(path, "rb") as f:
        try:
            sd = _read(f)
        except _Bad as e:
            raise ValueError(f"{path}: {e}") from None
        except (ValueError, RuntimeError) as e:   # zipfile's NotImplementedError for a
            # damaged directory, a header nested past the recursion limit, a bad value
            raise ValueError(f"{path}: not a valid adamc checkpoint, corrupted or "
                             f"modified ({type(e).__name__}: {e})") from None
    for gi, g in enumerate(sd["param_groups"]):
        lr = g.get("lr")
        if not isinstance(lr, _Schedule) or gi >= len(param_groups):
            continue
        current = param_groups[gi].get("lr")
        if not (callable(current) and not isinstance(current, numbers.Real)):
            raise ValueError(
                f"{path}: param group {gi} was saved with a learning-rate schedule "
                f"({lr.name}), which a checkpoint cannot store; build the optimizer "
                f"with the same schedule (or set param_groups[{gi}]['lr'] to it) "
                "before load_state"
            )
        g["lr"] = current
    scaler_state = sd.pop("scaler", None)
    if scaler is not None:
        if scaler_state is None:
            raise ValueError(f"{path}: the checkpoint holds no loss scaler state (save it "
                             "with save_state(opt, path, scaler=scaler))")
        try:  # checked whole, on a scratch scaler, before the optimizer changes
            type(scaler)().load_state_dict(scaler_state)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: the loss scaler state is invalid: {e}") from e
    return sd, scaler_state
