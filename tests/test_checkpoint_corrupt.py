"""adamc.load_state refuses bad files: truncated, torn, flipped bytes (with
and without valid ZIP CRCs), wrong version or magic, malformed content,
files of another optimizer, pickles; with a clear ValueError, changing
nothing and never unpickling."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import adamc

from _checkpoint_files import (assert_refused, build, copies, grads_for, members, npy, rewrite,
                               stepped)
from _toolkit import assert_state_dicts_identical, random_array, random_like

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
    assert_state_dicts_identical(opt3.state_dict(), opt2.state_dict())


def test_truncated(saved, tmp_path):
    ps, opt, path = saved
    data = path.read_bytes()
    n = len(data)
    bad = tmp_path / "cut.npz"
    for cut in sorted({0, 1, 3, 4, 40, 200, n // 3, n // 2, 2 * n // 3, n - 100, n - 22, n - 1}):
        bad.write_bytes(data[:cut])
        assert_refused(opt, bad)


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
        assert_refused(opt, bad)


def test_flipped_byte_in_array_payload(saved, tmp_path):
    ps, opt, path = saved
    data = bytearray(path.read_bytes())
    with np.load(path, allow_pickle=False) as f:
        payload = f["a1"].tobytes(order="A")
    at = bytes(data).find(payload)
    assert at > 0
    data[at + len(payload) // 2] ^= 0x10
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    assert_refused(opt, tmp_path / "flip.npz")  # the ZIP CRC-32 catches this one

    # the same change with valid ZIP CRCs: only the SHA-256 can catch it
    def flip(arrays):
        raw = bytearray(arrays[1].tobytes(order="A"))
        raw[len(raw) // 2] ^= 0x10
        order = "F" if arrays[1].flags.f_contiguous and not arrays[1].flags.c_contiguous else "C"
        arrays[1] = np.frombuffer(bytes(raw), arrays[1].dtype).reshape(arrays[1].shape, order=order)

    rewrite(path, tmp_path / "tamper.npz", edit_arrays=flip, fix_digest=False)
    assert_refused(opt, tmp_path / "tamper.npz", "checksum")


def test_flipped_byte_in_header(saved, tmp_path):
    ps, opt, path = saved
    data = bytearray(path.read_bytes())
    at = bytes(data).find(b'"lr":0.02')
    assert at > 0
    data[at + 8] ^= 0x01  # 0.02 -> 0.03: still valid JSON
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    assert_refused(opt, tmp_path / "flip.npz")

    def edit(doc):
        doc["param_groups"][1]["lr"] = 0.03
    rewrite(path, tmp_path / "tamper.npz", edit_header=edit, fix_digest=False)
    assert_refused(opt, tmp_path / "tamper.npz", "checksum")

    def step_edit(doc):
        doc["state"][0]["step"] += 1
    rewrite(path, tmp_path / "tamper2.npz", edit_header=step_edit, fix_digest=False)
    assert_refused(opt, tmp_path / "tamper2.npz", "checksum")


def test_wrong_version_and_magic(saved, tmp_path):
    ps, opt, path = saved

    def v5(doc):
        doc["version"] = 5
    rewrite(path, tmp_path / "v5.npz", edit_header=v5)
    assert_refused(opt, tmp_path / "v5.npz", "version 5")

    def v2_with_codes(doc):  # 8-bit codes came with version 3
        doc["arrays"][0]["dtype"] = "|u1"
    rewrite(path, tmp_path / "v2u1.npz", edit_header=v2_with_codes)
    assert_refused(opt, tmp_path / "v2u1.npz", "version 2")

    def v1_with_float16(doc):  # version 1 knew float32 and float64 only
        doc["version"] = 1
        doc["arrays"][0]["dtype"] = "<f2"
    rewrite(path, tmp_path / "v1f2.npz", edit_header=v1_with_float16)
    assert_refused(opt, tmp_path / "v1f2.npz", "version 1")

    def magic(doc):
        doc["format"] = "someone-else"
    rewrite(path, tmp_path / "magic.npz", edit_header=magic)
    assert_refused(opt, tmp_path / "magic.npz", "someone-else")

    # files that are not adamc checkpoints at all
    np.save(tmp_path / "plain.npy", np.zeros(3))
    assert_refused(opt, tmp_path / "plain.npy", "not an adamc checkpoint")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    assert_refused(opt, tmp_path / "other.npz", "not an adamc checkpoint")
    (tmp_path / "sd.pkl").write_bytes(pickle.dumps(opt.state_dict()))
    assert_refused(opt, tmp_path / "sd.pkl", "not an adamc checkpoint")


def test_consistent_but_malformed_content(saved, tmp_path):
    ps, opt, path = saved

    def shape(doc):  # header and member disagree
        doc["arrays"][0]["shape"] = [16]
    rewrite(path, tmp_path / "a.npz", edit_header=shape)
    assert_refused(opt, tmp_path / "a.npz", "shape")

    def index(doc):  # two entries share an array
        doc["state"][1]["exp_avg"] = doc["state"][0]["exp_avg"]
    rewrite(path, tmp_path / "b.npz", edit_header=index)
    assert_refused(opt, tmp_path / "b.npz", "array index")

    def extra_member(_):
        pass
    rewrite(path, tmp_path / "c.npz", edit_header=extra_member)
    with zipfile.ZipFile(tmp_path / "c.npz", "a") as zf:
        zf.writestr("evil.npy", npy(np.zeros(2)))
    assert_refused(opt, tmp_path / "c.npz", "evil.npy")


def test_a_damaged_zip_directory_or_header_is_still_a_valueerror(saved, tmp_path):
    """zipfile raises NotImplementedError for some flipped bits of the
    central directory; a valid-checksum header with a tag object under
    another key than lr, or nested past the recursion limit, raised
    ValueError without the path or RecursionError.  Each is a ValueError
    naming the file, the optimizer unchanged."""
    ps, opt, path = saved
    data = path.read_bytes()
    cd = data.find(b"PK\x01\x02")   # the first central-directory entry
    for off, bit in ((cd + 6, 7), (cd + 8, 5), (cd + 8, 6)):   # version needed; flags
        bad = bytearray(data)
        bad[off] ^= 1 << bit
        (tmp_path / "dir.npz").write_bytes(bytes(bad))
        assert_refused(opt, tmp_path / "dir.npz")

    def tag(doc):
        doc["param_groups"][0]["eps"] = {"schedule": "f"}
    rewrite(path, tmp_path / "tag.npz", edit_header=tag)
    assert_refused(opt, tmp_path / "tag.npz", "invalid value")

    # a header nested 100000 deep, written with a valid checksum
    from adamc import checkpoint as C
    header, arrays, orders = C._encode("Adam", opt.state_dict())
    doc = json.loads(header)
    doc["param_groups"][0]["extra"] = "@@"
    header = json.dumps(doc, separators=(",", ":")).encode().replace(
        b'"@@"', b"[" * 100_000 + b"]" * 100_000)
    with open(tmp_path / "deep.npz", "wb") as fh:
        C._write_file(fh, header, arrays, orders, C._digest(header, [C._raw(x) for x in arrays]))
    assert_refused(opt, tmp_path / "deep.npz", "RecursionError")


def test_save_state_takes_bytes_paths_and_long_names(rng, tmp_path):
    ps, opt = stepped(rng)
    for path in (bytes(tmp_path / "b.npz"), tmp_path / ("n" * 250 + ".npz")):
        adamc.save_state(opt, path)
        again = build(adamc.Adam, copies(ps))
        adamc.load_state(again, path)
        assert_state_dicts_identical(again.state_dict(), opt.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz", "n" * 250 + ".npz"]


@pytest.mark.parametrize("case", ["shape", "count", "groups", "names", "adamw"])
def test_file_from_a_different_optimizer(rng, tmp_path, case):
    """A valid checkpoint of another optimizer: refused by load_state_dict's checks."""
    ps, opt = stepped(rng, amsgrad=True)
    other, named, src_cls = copies(ps), False, adamc.Adam
    if case == "shape":
        other[0] = random_array(rng, (18,), np.float32, "C")
    elif case == "count":
        other.append(random_array(rng, (2,), np.float32, "C"))
    elif case == "names":
        named = True
        ps = copies(ps)
        opt = adamc.Adam([{"params": {"x": ps[0], "w1": ps[1]}},
                          {"params": dict(zip(["v0", "v1", "v2"], ps[2:]))}])
        opt.step({"x": random_like(rng, ps[0]), "w1": random_like(rng, ps[1]), "v0": None,
                  "v1": random_like(rng, ps[3]), "v2": None})
    elif case == "adamw":
        ps, opt = stepped(rng, cls=adamc.AdamW)
    src = (adamc.Adam([{"params": other}]) if case == "groups"
           else build(src_cls, other, named))
    src.step(grads_for(rng, other, named))
    path = tmp_path / "other.npz"
    adamc.save_state(src, path)
    assert_refused(opt, path, "does not fit this optimizer")


def test_state_of_another_dtype_is_converted_by_value(rng, tmp_path):
    """A float64 run's checkpoint loads into a float32 optimizer: its moments
    are converted to float32 (rounded to nearest), never reinterpreted."""
    ps, opt = stepped(rng, amsgrad=True)
    other = copies(ps)
    other[0] = other[0].astype(np.float64)
    src = build(adamc.Adam, other, False, amsgrad=True)
    src.step(grads_for(rng, other, False))
    adamc.save_state(src, tmp_path / "f64.npz")
    adamc.load_state(opt, tmp_path / "f64.npz")
    mine, theirs = opt.state_dict()["state"][0], src.state_dict()["state"][0]
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert mine[k].dtype == np.float32
        np.testing.assert_array_equal(mine[k], theirs[k].astype(np.float32))


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
        assert_refused(opt, bad, "object", target)
    # a pickle stored as the whole file
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Bait()))
    assert_refused(opt, tmp_path / "evil.pkl")
    assert Bait.calls == []
