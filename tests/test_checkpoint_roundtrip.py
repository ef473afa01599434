"""adamc.save_state / adamc.load_state: round trips, bit-identical resume,
atomic replacement and a SIGKILL mid-write.  (Corrupted and hostile files:
test_checkpoint_corrupt.py.)"""

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import adamc
from adamc import checkpoint

from _checkpoint_files import (assert_refused, build, copies, grads_for, groups_of, make_params,
                               members, read_npy, spec_digest, stepped)
from _toolkit import SLOT_NAMES, assert_identical, assert_state_dicts_identical

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
    assert_state_dicts_identical(sd, opt_b.state_dict())
    for g in grads[2:]:
        opt_b.step(g)
    for a, b in zip(ps_a, ps_b):
        assert_identical(a, b)
    assert_state_dicts_identical(opt_a.state_dict(), opt_b.state_dict())


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
        assert_identical(a, b)

    # a number where the file has a schedule: refused, nothing changes
    ps_c = copies(ps)
    opt_c = adamc.Adam(groups_of(ps_c), lr=0.1)
    opt_c.step(grads[0])
    msg = assert_refused(opt_c, tmp_path / "ck.npz", "param group 0", "schedule")
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
        assert doc["format"] == "adamc-optimizer-state" and doc["version"] == 2
        arrays = [f[f"a{k}"] for k in range(len(doc["arrays"]))]
        assert spec_digest(header, arrays) == f["sha256"].tobytes()
    by_param = {e["param"]: e for e in doc["state"]}
    assert sorted(by_param) == sorted(sd["state"])
    for i, e in sd["state"].items():
        assert by_param[i]["step"] == e["step"]
        for k in SLOT_NAMES:
            if k in e:
                assert_identical(e[k], arrays[by_param[i][k]])


def test_missing_file(rng, tmp_path):
    ps, opt = stepped(rng)
    with pytest.raises(FileNotFoundError):
        adamc.load_state(opt, tmp_path / "nope.npz")


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
    assert_state_dicts_identical(want.state_dict(), got.state_dict())
