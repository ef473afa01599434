"""adamc.save_state / adamc.load_state: round trips, bit-identical resume,
corrupted and hostile files, atomic replacement and a SIGKILL mid-write."""

import hashlib
import io
import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile

import numpy as np
import pytest

import adamc
from adamc import checkpoint

from conftest import like, make_array

# ----------------------------------------------------------------------
# helpers


def make_params(rng):
    """float32/float64, C and F order, 0-d and empty: one group of each kind."""
    return [
        make_array(rng, (17,), np.float32, "C"),
        make_array(rng, (4, 6), np.float64, "F"),
        make_array(rng, (3, 2, 5), np.float32, "F"),
        make_array(rng, (), np.float64, "C"),
        make_array(rng, (3, 0), np.float32, "C"),
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
    gs = [None if i in skip else like(rng, p) for i, p in enumerate(ps)]
    if named:
        keys = [f"w{i}" for i in range(2)] + [f"v{i}" for i in range(len(ps) - 2)]
        return dict(zip(keys, gs))
    return gs


def copies(ps):
    return [p.copy(order="K") for p in ps]


def assert_array_identical(a, b, what=""):
    assert isinstance(b, np.ndarray), what
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.flags.f_contiguous == b.flags.f_contiguous, what
    assert a.flags.c_contiguous == b.flags.c_contiguous, what
    assert a.tobytes(order="A") == b.tobytes(order="A"), what


def assert_sd_identical(a, b):
    assert sorted(a["state"]) == sorted(b["state"])
    for i in a["state"]:
        ea, eb = a["state"][i], b["state"][i]
        assert set(ea) == set(eb), i
        assert ea["step"] == eb["step"] and type(eb["step"]) is int
        for k in ea:
            if k != "step":
                assert_array_identical(ea[k], eb[k], f"state[{i}][{k}]")
    assert len(a["param_groups"]) == len(b["param_groups"])
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        assert ga == gb
        for k in ga:
            assert type(ga[k]) is type(gb[k]), k


def snapshot(opt, ps):
    return [p.copy(order="K") for p in ps], opt.state_dict()


def assert_unchanged(opt, ps, snap):
    before_ps, before_sd = snap
    for a, b in zip(before_ps, ps):
        assert_array_identical(a, b)
    assert_sd_identical(before_sd, opt.state_dict())


def stepped(rng, cls=adamc.Adam, n=3, **kw):
    ps = make_params(rng)
    opt = build(cls, ps, **kw)
    for t in range(n):
        opt.step(grads_for(rng, ps, skip={4} if t else {2, 4}))
    return ps, opt


# The format, implemented independently from the module docstring, to build
# files that are valid in every respect but one.


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


def assert_refused(opt, ps, path, *words):
    snap = snapshot(opt, ps)
    with pytest.raises(ValueError) as ei:
        checkpoint.load_state(opt, path)
    msg = str(ei.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    assert_unchanged(opt, ps, snap)
    return msg


# ----------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("named", [False, True], ids=["list", "named"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("cls", [adamc.Adam, adamc.AdamW, adamc.reference.Adam])
def test_round_trip_resumes_bit_identically(rng, tmp_path, cls, amsgrad, named):
    kw = dict(amsgrad=amsgrad, weight_decay=0.01)
    ps = make_params(rng)
    # params 2 and 4 get None grads at first (4 always): some have no state
    grads = [grads_for(rng, ps, named, skip={4} if t > 2 else {2, 4}) for t in range(8)]

    ps_a = copies(ps)
    opt_a = build(cls, ps_a, named, **kw)
    for g in grads:
        opt_a.step(g)

    opt = build(cls, ps, named, **kw)
    for g in grads[:2]:
        opt.step(g)
    sd = opt.state_dict()
    assert 2 not in sd["state"] and 4 not in sd["state"]
    path = tmp_path / "ck.npz"
    adamc.save_state(opt, path)
    assert os.listdir(tmp_path) == ["ck.npz"]

    # a fresh optimizer with other hyperparameters: the file overrides them
    ps_b = copies(ps)
    opt_b = build(cls, ps_b, named, amsgrad=not amsgrad, weight_decay=0.5, lr=0.3)
    adamc.load_state(opt_b, path)
    assert_sd_identical(sd, opt_b.state_dict())
    for g in grads[2:]:
        opt_b.step(g)
    for a, b in zip(ps_a, ps_b):
        assert_array_identical(a, b)
    assert_sd_identical(opt_a.state_dict(), opt_b.state_dict())


def test_round_trip_of_fresh_optimizer_resets_state(rng, tmp_path):
    ps = make_params(rng)
    opt = build(adamc.Adam, ps)
    adamc.save_state(opt, tmp_path / "fresh.npz")
    opt.step(grads_for(rng, ps))
    assert opt.state_dict()["state"]
    adamc.load_state(opt, tmp_path / "fresh.npz")
    assert opt.state_dict()["state"] == {}


def test_schedule_is_resupplied_and_resumes_bit_identically(rng, tmp_path):
    def sched(t):
        return 0.05 / t

    ps = make_params(rng)
    grads = [grads_for(rng, ps) for _ in range(6)]
    ps_a = copies(ps)
    opt_a = adamc.Adam(groups_of(ps_a), lr=sched)
    for g in grads:
        opt_a.step(g)
    opt = adamc.Adam(groups_of(ps), lr=sched)
    for g in grads[:3]:
        opt.step(g)
    adamc.save_state(opt, tmp_path / "ck.npz")
    doc = json.loads(read_npy(members(tmp_path / "ck.npz")["header.npy"]).tobytes())
    assert doc["param_groups"][0]["lr"] == {"schedule": sched.__module__ + "." + sched.__qualname__}
    assert doc["param_groups"][1]["lr"] == 0.02  # a group value overrides the default

    ps_b = copies(ps)
    opt_b = adamc.Adam(groups_of(ps_b), lr=sched)
    adamc.load_state(opt_b, tmp_path / "ck.npz")
    assert opt_b.param_groups[0]["lr"] is sched
    for g in grads[3:]:
        opt_b.step(g)
    for a, b in zip(ps_a, ps_b):
        assert_array_identical(a, b)

    # a number where the file has a schedule: refused, nothing changes
    ps_c = copies(ps)
    opt_c = adamc.Adam(groups_of(ps_c), lr=0.1)
    opt_c.step(grads[0])
    msg = assert_refused(opt_c, ps_c, tmp_path / "ck.npz", "param group 0", "schedule")
    assert "sched" in msg


def test_extra_group_values_round_trip_exactly(rng, tmp_path):
    ps, opt = stepped(rng)
    extras = {"initial_lr": 0.1, "tag": "warm", "count": 2**70, "nothing": None,
              "nested": (1, [2.5, None, (True,)]), "big": float("inf"),
              "nan": float("nan"), "f32": np.float32(0.1), "i64": np.int64(-3),
              "neg0": -0.0}
    opt.param_groups[1].update(extras)
    adamc.save_state(opt, tmp_path / "ck.npz")
    opt2 = build(adamc.Adam, copies(ps))
    adamc.load_state(opt2, tmp_path / "ck.npz")
    g = opt2.param_groups[1]
    assert g["initial_lr"] == 0.1 and g["tag"] == "warm" and g["count"] == 2**70
    assert g["nothing"] is None and g["nested"] == (1, [2.5, None, (True,)])
    assert g["big"] == float("inf") and np.isnan(g["nan"])
    assert type(g["f32"]) is float and g["f32"] == float(np.float32(0.1))
    assert type(g["i64"]) is int and g["i64"] == -3
    assert str(g["neg0"]) == "-0.0"
    assert g["betas"] == (0.8, 0.99) and g["lr"] == 0.02


def test_unrepresentable_value_refused_before_writing(rng, tmp_path):
    ps, opt = stepped(rng)
    path = tmp_path / "ck.npz"
    adamc.save_state(opt, path)
    before = path.read_bytes()
    opt.step(grads_for(rng, ps))
    opt.param_groups[0]["hook"] = object()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['hook'\].*object"):
        adamc.save_state(opt, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_same_state_gives_same_bytes_and_plain_numpy_reads_it(rng, tmp_path):
    ps, opt = stepped(rng, amsgrad=True)
    adamc.save_state(opt, tmp_path / "a.npz")
    adamc.save_state(opt, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    sd = opt.state_dict()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        header = f["header"].tobytes()
        doc = json.loads(header)
        assert doc["format"] == "adamc-optimizer-state" and doc["version"] == 1
        arrays = [f[f"a{k}"] for k in range(len(doc["arrays"]))]
        assert spec_digest(header, arrays) == f["sha256"].tobytes()
    by_param = {e["param"]: e for e in doc["state"]}
    assert sorted(by_param) == sorted(sd["state"])
    for i, e in sd["state"].items():
        assert by_param[i]["step"] == e["step"]
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert_array_identical(e[k], arrays[by_param[i][k]])


def test_missing_file(rng, tmp_path):
    ps, opt = stepped(rng)
    with pytest.raises(FileNotFoundError):
        adamc.load_state(opt, tmp_path / "nope.npz")


# ----------------------------------------------------------------------
# bad files: a clear ValueError, the optimizer unchanged


@pytest.fixture
def saved(rng, tmp_path):
    """An optimizer with state, a checkpoint of another state, and its path."""
    ps, opt = stepped(rng, amsgrad=True)
    path = tmp_path / "ck.npz"
    adamc.save_state(opt, path)
    opt.step(grads_for(rng, ps))  # now differs from the file
    return ps, opt, path


def test_control_rewritten_file_still_loads(saved, tmp_path):
    # the tampering helper itself produces valid files: errors below come
    # from the edits, not from the helper
    ps, opt, path = saved
    rewrite(path, tmp_path / "same.npz")
    ps2 = copies(ps)
    opt2 = build(adamc.Adam, ps2)
    adamc.load_state(opt2, tmp_path / "same.npz")
    opt3 = build(adamc.Adam, copies(ps))
    adamc.load_state(opt3, path)
    assert_sd_identical(opt3.state_dict(), opt2.state_dict())


def test_truncated(saved, tmp_path):
    ps, opt, path = saved
    data = path.read_bytes()
    n = len(data)
    bad = tmp_path / "cut.npz"
    for cut in sorted({0, 1, 3, 4, 40, 200, n // 3, n // 2, 2 * n // 3, n - 100, n - 22, n - 1}):
        bad.write_bytes(data[:cut])
        assert_refused(opt, ps, bad)


def test_zeroed_block(saved, tmp_path):
    # full length but a block of zeros, as a torn write can leave on disk
    ps, opt, path = saved
    data = path.read_bytes()
    n = len(data)
    bad = tmp_path / "torn.npz"
    for at in (0, 100, n // 3, n // 2, n - 600, n - 60):
        torn = data[:at] + bytes(min(512, n - at)) + data[at + 512:]
        assert len(torn) == n and torn != data
        bad.write_bytes(torn)
        assert_refused(opt, ps, bad)


def test_flipped_byte_in_array_payload(saved, tmp_path):
    ps, opt, path = saved
    data = bytearray(path.read_bytes())
    with np.load(path, allow_pickle=False) as f:
        payload = f["a1"].tobytes(order="A")
    at = bytes(data).find(payload)
    assert at > 0
    data[at + len(payload) // 2] ^= 0x10
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    assert_refused(opt, ps, tmp_path / "flip.npz")  # the ZIP CRC-32 catches this one

    # the same change with valid ZIP CRCs: only the SHA-256 can catch it
    def flip(arrays):
        raw = bytearray(arrays[1].tobytes(order="A"))
        raw[len(raw) // 2] ^= 0x10
        order = "F" if arrays[1].flags.f_contiguous and not arrays[1].flags.c_contiguous else "C"
        arrays[1] = np.frombuffer(bytes(raw), arrays[1].dtype).reshape(arrays[1].shape, order=order)

    rewrite(path, tmp_path / "tamper.npz", edit_arrays=flip, fix_digest=False)
    assert_refused(opt, ps, tmp_path / "tamper.npz", "checksum")


def test_flipped_byte_in_header(saved, tmp_path):
    ps, opt, path = saved
    data = bytearray(path.read_bytes())
    at = bytes(data).find(b'"lr":0.02')
    assert at > 0
    data[at + 8] ^= 0x01  # 0.02 -> 0.03: still valid JSON
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    assert_refused(opt, ps, tmp_path / "flip.npz")

    def edit(doc):
        doc["param_groups"][1]["lr"] = 0.03
    rewrite(path, tmp_path / "tamper.npz", edit_header=edit, fix_digest=False)
    assert_refused(opt, ps, tmp_path / "tamper.npz", "checksum")

    def step_edit(doc):
        doc["state"][0]["step"] += 1
    rewrite(path, tmp_path / "tamper2.npz", edit_header=step_edit, fix_digest=False)
    assert_refused(opt, ps, tmp_path / "tamper2.npz", "checksum")


def test_wrong_version_and_magic(saved, tmp_path):
    ps, opt, path = saved

    def v2(doc):
        doc["version"] = 2
    rewrite(path, tmp_path / "v2.npz", edit_header=v2)
    assert_refused(opt, ps, tmp_path / "v2.npz", "version 2")

    def magic(doc):
        doc["format"] = "someone-else"
    rewrite(path, tmp_path / "magic.npz", edit_header=magic)
    assert_refused(opt, ps, tmp_path / "magic.npz", "someone-else")

    # files that are not adamc checkpoints at all
    np.save(tmp_path / "plain.npy", np.zeros(3))
    assert_refused(opt, ps, tmp_path / "plain.npy", "not an adamc checkpoint")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    assert_refused(opt, ps, tmp_path / "other.npz", "not an adamc checkpoint")
    (tmp_path / "sd.pkl").write_bytes(pickle.dumps(opt.state_dict()))
    assert_refused(opt, ps, tmp_path / "sd.pkl", "not an adamc checkpoint")


def test_consistent_but_malformed_content(saved, tmp_path):
    ps, opt, path = saved

    def shape(doc):  # header and member disagree
        doc["arrays"][0]["shape"] = [16]
    rewrite(path, tmp_path / "a.npz", edit_header=shape)
    assert_refused(opt, ps, tmp_path / "a.npz", "shape")

    def index(doc):  # two entries share an array
        doc["state"][1]["exp_avg"] = doc["state"][0]["exp_avg"]
    rewrite(path, tmp_path / "b.npz", edit_header=index)
    assert_refused(opt, ps, tmp_path / "b.npz", "array index")

    def extra_member(_):
        pass
    rewrite(path, tmp_path / "c.npz", edit_header=extra_member)
    with zipfile.ZipFile(tmp_path / "c.npz", "a") as zf:
        zf.writestr("evil.npy", npy(np.zeros(2)))
    assert_refused(opt, ps, tmp_path / "c.npz", "evil.npy")


@pytest.mark.parametrize("case", ["shape", "dtype", "count", "groups", "names", "adamw"])
def test_file_from_a_different_optimizer(rng, tmp_path, case):
    """A valid checkpoint of another optimizer: refused by load_state_dict's checks."""
    ps, opt = stepped(rng, amsgrad=True)
    other, named, src_cls = copies(ps), False, adamc.Adam
    if case == "shape":
        other[0] = make_array(rng, (18,), np.float32, "C")
    elif case == "dtype":
        other[0] = other[0].astype(np.float64)
    elif case == "count":
        other.append(make_array(rng, (2,), np.float32, "C"))
    elif case == "names":
        named = True
        ps = copies(ps)
        opt = adamc.Adam([{"params": {"x": ps[0], "w1": ps[1]}},
                          {"params": dict(zip(["v0", "v1", "v2"], ps[2:]))}])
        opt.step({"x": like(rng, ps[0]), "w1": like(rng, ps[1]), "v0": None,
                  "v1": like(rng, ps[3]), "v2": None})
    elif case == "adamw":
        ps, opt = stepped(rng, cls=adamc.AdamW)
    src = (adamc.Adam([{"params": other}]) if case == "groups"
           else build(src_cls, other, named))
    src.step(grads_for(rng, other, named))
    path = tmp_path / "other.npz"
    adamc.save_state(src, path)
    assert_refused(opt, ps, path, "does not fit this optimizer")


# ----------------------------------------------------------------------
# never unpickle


class Bait:
    calls = []

    def __reduce__(self):
        return (Bait.sprung, ("unpickled",))

    @staticmethod
    def sprung(x):
        Bait.calls.append(x)
        return x


def test_object_arrays_are_never_unpickled(saved, tmp_path):
    ps, opt, path = saved
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = Bait(), Bait()
    buf = io.BytesIO()
    np.lib.format.write_array(buf, evil, allow_pickle=True)
    payload = buf.getvalue()
    # control: the bait is live; unpickling this member runs code
    Bait.calls.clear()
    np.load(io.BytesIO(payload), allow_pickle=True)
    assert Bait.calls == ["unpickled", "unpickled"]
    Bait.calls.clear()

    for target in ("a0.npy", "header.npy", "sha256.npy"):
        m = members(path)
        m[target] = payload
        bad = tmp_path / f"evil-{target}.npz"
        with zipfile.ZipFile(bad, "w") as zf:
            for name, data in m.items():
                zf.writestr(name, data)
        assert_refused(opt, ps, bad, "object", target)
    # a pickle stored as the whole file
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Bait()))
    assert_refused(opt, ps, tmp_path / "evil.pkl")
    assert Bait.calls == []


# ----------------------------------------------------------------------
# atomic replacement


def test_fsync_then_replace_then_fsync_directory(rng, tmp_path, monkeypatch):
    ps, opt = stepped(rng)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        import stat
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind, os.fstat(fd).st_size if kind == "file" else None))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.path.dirname(a) == os.path.dirname(os.fspath(b)),
                       os.path.basename(a).startswith(".ck.npz.")))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    adamc.save_state(opt, tmp_path / "ck.npz")
    size = (tmp_path / "ck.npz").stat().st_size
    expect = [("fsync", "file", size), ("replace", True, True)]
    if os.name != "nt":
        expect.append(("fsync", "dir", None))
    assert events == expect


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_old_file_and_removes_temp(rng, tmp_path, monkeypatch, exc):
    ps, opt = stepped(rng)
    path = tmp_path / "ck.npz"
    adamc.save_state(opt, path)
    before = path.read_bytes()
    opt.step(grads_for(rng, ps))
    calls = []
    real = checkpoint._write_bytes

    def failing(f, data):
        calls.append(len(data))
        if len(calls) == 3:
            assert len([n for n in os.listdir(tmp_path) if n.endswith(".tmp")]) == 1
            raise exc
        real(f, data)

    monkeypatch.setattr(checkpoint, "_write_bytes", failing)
    with pytest.raises(type(exc)):
        adamc.save_state(opt, path)
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_failed_replace_removes_temp(rng, tmp_path, monkeypatch):
    ps, opt = stepped(rng)
    (tmp_path / "ck.npz").mkdir()  # replacing a directory fails
    with pytest.raises(OSError):
        adamc.save_state(opt, tmp_path / "ck.npz")
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert (tmp_path / "ck.npz").is_dir()


CHILD = textwrap.dedent(r"""
    import os, sys, time
    import numpy as np
    import adamc
    from adamc import checkpoint

    path = sys.argv[1]

    def run(n, steps, seed):
        rng = np.random.default_rng(seed)
        ps = [rng.standard_normal(n), rng.standard_normal(n).astype(np.float32)]
        opt = adamc.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}], amsgrad=True)
        for _ in range(steps):
            opt.step([rng.standard_normal(n), rng.standard_normal(n).astype(np.float32)])
        return opt

    checkpoint.save_state(run(100, 3, 1), path)
    print("saved-first", flush=True)

    big = run(1 << 18, 2, 2)     # 6 arrays, 4.5 MiB of state
    checkpoint._CHUNK = 1 << 18  # write 256 KiB at a time
    real = checkpoint._write_bytes
    written = [0]

    def paused(f, data):         # stop inside the write loop, part way through
        real(f, data)
        written[0] += len(data)
        if written[0] >= 2 << 20:
            print("mid-write", written[0], flush=True)
            time.sleep(120)

    checkpoint._write_bytes = paused
    checkpoint.save_state(big, path)
    print("finished", flush=True)   # never reached: the parent kills us first
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_write_leaves_previous_checkpoint(tmp_path):
    """The child saves a checkpoint, then starts a bigger one and pauses inside
    the write loop after 2 MiB (reporting through its stdout pipe); the test
    checks that the partial temp file exists and SIGKILLs the child there."""
    path = tmp_path / "ck.npz"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def next_line():
        try:
            return lines.get(timeout=30)
        except queue.Empty:
            proc.kill()
            pytest.fail("child did not report in 30 s: " + proc.stderr.read())

    try:
        assert next_line().strip() == "saved-first", proc.stderr.read()
        first = path.read_bytes()
        mid = next_line().split()
        assert mid[0] == "mid-write"
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(temps) == 1 and temps[0].startswith(".ck.npz.")
        partial = (tmp_path / temps[0]).stat().st_size
        assert partial >= 1 << 20, partial  # the kill lands with data on disk
        assert path.read_bytes() == first
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

    assert path.read_bytes() == first
    # a killed process cannot clean up: its temp file stays, never mistaken for the file
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz", temps[0]])

    # the previous checkpoint loads and equals the first state, computed here again
    rng = np.random.default_rng(1)
    ps = [rng.standard_normal(100), rng.standard_normal(100).astype(np.float32)]
    want = adamc.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}], amsgrad=True)
    for _ in range(3):
        want.step([rng.standard_normal(100), rng.standard_normal(100).astype(np.float32)])
    got = adamc.Adam([{"params": copies(ps)[:1]}, {"params": copies(ps)[1:]}])
    adamc.load_state(got, path)
    assert got.state_dict()["state"][0]["step"] == 3
    assert_sd_identical(want.state_dict(), got.state_dict())
