"""The licence of a bundled runtime ships exactly with that runtime:
tools/add_licences.py adds libgomp's licence to a repaired wheel that
bundles libgomp and to no other, and tools/wheelcheck.py fails a wheel
with one and not the other, on every platform."""

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
if not (TOOLS / "add_licences.py").is_file():
    pytest.skip("tools/ is not beside these tests (not a source tree)", allow_module_level=True)
sys.path.insert(0, str(TOOLS))
import add_licences  # noqa: E402
import wheelcheck as wc  # noqa: E402

sys.path.remove(str(TOOLS))

LINUX = "adamc-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
MAC = "adamc-0.1.0-cp311-cp311-macosx_14_0_arm64.whl"
GOMP = "adamc.libs/libgomp-a34b3233.so.1.0.0"


def wheel(tmp_path, name, files):
    """A wheel whose RECORD is right for its files."""
    m = wc.WHEEL_NAME.fullmatch(name)
    di = f"{m['dist']}-{m['ver']}.dist-info"
    files = {"adamc/__init__.py": b"", "adamc/py.typed": b"", "adamc/_kernels.pyi": b"", **files,
             f"{di}/METADATA": b"Metadata-Version: 2.4\nName: adamc\nVersion: 0.1.0\n",
             f"{di}/WHEEL": f"Wheel-Version: 1.0\nTag: {m['py']}-{m['abi']}-{m['plat']}\n".encode()}
    rows = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
            f"{len(d)}" for n, d in files.items()]
    files[f"{di}/RECORD"] = ("\n".join(rows + [f"{di}/RECORD,,"]) + "\n").encode()
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return path


def test_licence_added_to_a_wheel_that_bundles_libgomp(tmp_path):
    path = wheel(tmp_path, LINUX, {GOMP: b"\x7fELF libgomp"})
    assert add_licences.main([str(path)]) == 0
    with zipfile.ZipFile(path) as zf:
        text = zf.read(wc.GOMP_LICENCE).decode()
        names = zf.namelist()
        assert wc._record_problems(zf, "adamc-0.1.0.dist-info/RECORD", set(names)) == []
    assert text == (TOOLS / "licences" / "LICENSE.libgomp.txt").read_text()
    assert "GCC Runtime Library Exception" in text
    assert names.count(wc.GOMP_LICENCE) == 1
    assert names[-1] == "adamc-0.1.0.dist-info/RECORD"
    r = wc.check_wheel(str(path), python="3.11")
    assert not [p for p in r.problems if "libgomp" in p or "licence" in p], r.problems
    # a second run adds nothing
    before = path.read_bytes()
    assert add_licences.add_licences(str(path)) == []
    assert path.read_bytes() == before


def test_no_licence_without_libgomp(tmp_path):
    path = wheel(tmp_path, MAC, {"adamc/.dylibs/libomp.dylib": b"\xcf\xfa\xed\xfe"})
    before = path.read_bytes()
    assert add_licences.add_licences(str(path)) == []
    assert path.read_bytes() == before


def test_wheelcheck_fails_a_licence_without_libgomp_on_any_platform(tmp_path):
    mac = wheel(tmp_path, MAC, {"adamc/_kernels.cpython-311-darwin.so": b"\xcf\xfa\xed\xfe Mach-O",
                                wc.GOMP_LICENCE: b"x"})
    r = wc.check_wheel(str(mac), python="3.11")
    assert r.problems == [f"{wc.GOMP_LICENCE} ships in a wheel that bundles no libgomp"]
    linux = wheel(tmp_path, LINUX, {wc.GOMP_LICENCE: b"x"})
    r = wc.check_wheel(str(linux), python="3.11")
    assert f"no libgomp bundled in adamc.libs/ although {wc.GOMP_LICENCE} ships" in r.problems


def test_the_licence_is_not_package_data():
    """Built wheels get it only from the repair step."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert "_vendor" not in section.split("adamc =", 1)[1]
    assert not list((ROOT / "src" / "adamc").glob("_vendor/*"))
