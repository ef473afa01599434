"""tools/wheelcheck.py on small synthetic wheels and sdists, good and broken."""

import base64
import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
if not (TOOLS / "wheelcheck.py").is_file():
    pytest.skip("tools/wheelcheck.py is not beside these tests (not a source tree)", allow_module_level=True)
sys.path.insert(0, str(TOOLS))
import wheelcheck as wc  # noqa: E402

sys.path.remove(str(TOOLS))  # only for that import

ARCH = platform.machine()
PLAT = f"manylinux_2_17_{ARCH}"
EXT = f"adamc/_kernels.cpython-311-{ARCH}-linux-gnu.so"
GOMP = "adamc.libs/libgomp-a34b3233.so.1.0.0"


@pytest.fixture(scope="module")
def sos(tmp_path_factory):
    """A small shared library linked without and with -g (DWARF sections)."""
    if not shutil.which("gcc") or sys.platform != "linux":
        pytest.skip("needs gcc on Linux")
    d = tmp_path_factory.mktemp("so")
    (d / "k.c").write_text("int twice(int x) { return 2 * x; }\n")
    for kind, flags in (("plain", []), ("debug", ["-g"])):
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", *flags, str(d / "k.c"), "-o", str(d / kind)], check=True)
    return {kind: (d / kind).read_bytes() for kind in ("plain", "debug")}


def make_wheel(tmp_path, files, name=f"adamc-0.1.0-cp311-cp311-{PLAT}.whl", tags=None, after=None):
    """A wheel with a WHEEL and a RECORD right for `files` (not for `after`)."""
    m = wc.WHEEL_NAME.fullmatch(name)
    di, tags = f"{m['dist']}-{m['ver']}.dist-info", tags or [f"{m['py']}-{m['abi']}-{m['plat']}"]
    files = {**files, f"{di}/METADATA": b"Metadata-Version: 2.4\nName: adamc\nVersion: 0.1.0\n",
             f"{di}/WHEEL": ("Wheel-Version: 1.0\n" + "".join(f"Tag: {t}\n" for t in tags)).encode()}
    rows = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
            for n, d in files.items()]
    files[f"{di}/RECORD"] = ("\n".join(rows + [f"{di}/RECORD,,"]) + "\n").encode()
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in {**files, **(after or {})}.items():
            zf.writestr(n, d)
    return str(path)


def good_files(so):
    return {"adamc/__init__.py": b"", "adamc/py.typed": b"", "adamc/_kernels.pyi": b"", EXT: so,
            wc.GOMP_LICENCE: b"GPLv3 with the GCC Runtime Library Exception", GOMP: b"libgomp"}


def test_good_wheel_passes(tmp_path, sos):
    r = wc.check_wheel(make_wheel(tmp_path, good_files(sos["plain"])), python="3.11", policy=PLAT)
    assert (r.problems, r.warnings) == ([], [])
    assert {k: r.facts[k] for k in ("tags", "debug_sections", "bundled_libgomp")} == {
        "tags": f"cp311-cp311-{PLAT}", "debug_sections": "none", "bundled_libgomp": GOMP}


def test_elf_reader_on_real_libraries(sos):
    machine, names = wc.elf_sections(sos["plain"])
    assert machine == ARCH and ".text" in names and ".dynsym" in names and wc.debug_sections(names) == []
    dbg = wc.debug_sections(wc.elf_sections(sos["debug"])[1])
    assert ".debug_info" in dbg and all(n.startswith(".debug_") for n in dbg)
    for bad in (b"MZ\x90\x00not elf", sos["plain"][:80]):
        with pytest.raises(ValueError):
            wc.elf_sections(bad)


BROKEN = {  # case: (how to break a good wheel: files, make_wheel kwargs, check kwargs; the problem)
    "debug": (lambda f, k, c, so: f.update({EXT: so}), "extension carries debug sections (.debug_"),
    "no libgomp": (lambda f, k, c, so: f.pop(GOMP), f"no libgomp bundled in adamc.libs/ although {wc.GOMP_LICENCE}"),
    "no licence": (lambda f, k, c, so: f.pop(wc.GOMP_LICENCE), "libgomp bundled without its licence text"),
    "python": (lambda f, k, c, so: c.update(python="3.12"), "tag cp311-cp311, expected cp312-cp312 for CPython 3.12"),
    "linux": (lambda f, k, c, so: k.update(name=f"adamc-0.1.0-cp311-cp311-linux_{ARCH}.whl"),
              f"platform tag linux_{ARCH} is not manylinux (auditwheel repair not run?)"),
    "WHEEL": (lambda f, k, c, so: k.update(tags=[f"cp311-abi3-{PLAT}"]),
              f"WHEEL says Tag cp311-abi3-{PLAT}, file name says cp311-cp311-{PLAT}"),
    "extension": (lambda f, k, c, so: f.update({EXT.replace("311", "312"): f.pop(EXT)}),
                  "is not built for CPython 3.11"),
    "policy": (lambda f, k, c, so: c.update(policy="manylinux_2_99_x86_64"),
               "auditwheel's policy manylinux_2_99_x86_64 is not among the wheel's platform tags"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_wheels_fail(tmp_path, sos, case):
    files, kw, check = good_files(sos["plain"]), {}, {"python": "3.11"}
    BROKEN[case][0](files, kw, check, sos["debug"])
    r = wc.check_wheel(make_wheel(tmp_path, files, **kw), **check)
    # (a cp311 wheel checked as 3.12 also has a cp311 extension)
    assert len(r.problems) == 1 + (case == "python") and BROKEN[case][1] in r.problems[0], r.problems
    assert r.facts["bundled_libgomp"] == ("none" if case == "no libgomp" else GOMP)


def test_record_and_contents(tmp_path, sos):
    src = tmp_path / "src" / "adamc"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "optim.py").write_text("")
    r = wc.check_wheel(make_wheel(tmp_path, {**good_files(sos["plain"]), "adamc/_kernels.pyx": b""},
                                  after={"adamc/__init__.py": b"changed", "adamc/extra.py": b""}),
                       python="3.11", source=str(tmp_path))
    assert r.problems == [
        "missing from the wheel: adamc/optim.py",
        "sources or build leftovers in the wheel: adamc/_kernels.pyx",
        "RECORD hash of adamc/__init__.py does not match its contents",
        "files missing from RECORD: adamc/extra.py",
    ]


def test_other_platforms_warn_only(tmp_path):
    files = {"adamc/__init__.py": b"", "adamc/py.typed": b"", "adamc/_kernels.pyi": b"",
             "adamc/_kernels.cpython-311-darwin.so": b"\xcf\xfa\xed\xfe Mach-O"}
    r = wc.check_wheel(make_wheel(tmp_path, files, name="adamc-0.1.0-cp311-cp311-macosx_14_0_arm64.whl"),
                       python="3.11")
    assert (r.problems, r.warnings) == ([], [])
    assert r.facts["debug_sections"] == "not checked (not an ELF file)"


def test_cli_exit_codes(tmp_path, sos, capsys):
    good = make_wheel(tmp_path, good_files(sos["plain"]))
    show = tmp_path / "show.txt"
    show.write_text(f'adamc is consistent with the following platform tag:\n"{PLAT}".\n')
    assert wc.auditwheel_policy(show.read_text()) == PLAT
    assert wc.main(["wheel", good, "--python", "3.11", "--auditwheel-show", str(show)]) == 0
    assert f"policy={PLAT}" in capsys.readouterr().out.splitlines()
    assert wc.main(["wheel", good, "--python", "3.10"]) == 1
    assert "PROBLEM: tag cp311-cp311, expected cp310-cp310" in capsys.readouterr().out


def make_sdist(path, files):
    with tarfile.open(path, "w:gz") as tf:
        for n, d in files.items():
            info = tarfile.TarInfo("adamc-0.1.0/" + n)
            info.size = len(d)
            tf.addfile(info, io.BytesIO(d))
    return str(path)


def test_sdist(tmp_path):
    source = tmp_path / "tree"
    tree = {n: b"" for n in wc.SDIST_REQUIRED if n != "PKG-INFO"}
    tree.update({"src/adamc/__init__.py": b"", "src/adamc/csrc/kernel.c": b"", "src/adamc/csrc/k.h": b""})
    for n, d in tree.items():
        (source / n).parent.mkdir(parents=True, exist_ok=True)
        (source / n).write_bytes(d)
    files = {**tree, "PKG-INFO": b"", "src/adamc.egg-info/SOURCES.txt": b""}
    assert wc.check_sdist(make_sdist(tmp_path / "good.tar.gz", files), str(source)).problems == []
    del files["src/adamc/csrc/k.h"]
    files.update({"src/adamc/_kernels.c": b"", "build/x.o": b"", "src/adamc.egg-info/junk": b""})
    r = wc.check_sdist(make_sdist(tmp_path / "bad.tar.gz", files), str(source))
    assert r.problems == ["missing from the sdist: src/adamc/csrc/k.h",
                          "generated or stray files in the sdist: build/x.o src/adamc/_kernels.c "
                          "src/adamc.egg-info/junk"]


def test_isa_expectations():
    assert wc.parse_cpu_flags("processor : 0\nflags\t\t: fpu avx2 fma avx512f\n") == {"fpu", "avx2", "fma", "avx512f"}
    assert wc.expected_isa({"avx2", "fma", "avx512f"}, wc.X86_ISAS) == "avx512"
    assert wc.expected_isa({"avx2", "fma", "avx512f"}, ["baseline", "avx2"]) == "avx2"
    assert wc.expected_isa({"avx2"}, wc.X86_ISAS) == "baseline"
    info = {"isa": "avx2", "isa_available": ["baseline", "avx2"], "isa_compiled": wc.X86_ISAS, "openmp": True}
    assert wc.isa_problems(info, {"avx2", "fma"}, "x86_64") == []
    assert wc.isa_problems(info, {"avx2", "fma", "avx512f"}, "x86_64") == [
        "default isa avx2, expected avx512 on this CPU"]
    assert wc.isa_problems({**info, "openmp": False, "isa_compiled": ["baseline"]}, None, "x86_64") == [
        "a portable x86-64 wheel must compile ['baseline', 'avx2', 'avx512'], has ['baseline']",
        "wheel built without OpenMP"]
    assert wc.isa_problems(info, None, "x86_64", forced="baseline") == [
        "ADAMC_ISA=baseline but the kernel in use is avx2"]


def test_libgomp_origin(tmp_path):
    site = str(tmp_path / "site-packages")
    maps = (f"7f00-7f10 r-xp 00000000 08:01 12 {site}/adamc.libs/libgomp-a34b3233.so.1.0.0\n"
            "7f20-7f30 r-xp 00000000 08:01 13 /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0\n"
            "7f40-7f50 rw-p 00000000 00:00 0\n")
    mapped = wc.mapped_libgomp(maps)
    assert mapped == sorted([f"{site}/adamc.libs/libgomp-a34b3233.so.1.0.0",
                             "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0"])
    assert wc.libgomp_problems(mapped, [site]) == [
        "libgomp mapped from /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0, not from the wheel's adamc.libs/"]
    assert wc.libgomp_problems([m for m in mapped if m.startswith(site)], [site]) == []
    assert wc.libgomp_problems([], [site]) == ["no libgomp mapped after a parallel step"]
    ld = ("2 libs found in cache `/etc/ld.so.cache'\n\tlibgomp.so.1 (libc6,x86-64) => /nonexistent/lib/libgomp.so.1\n"
          "\tlibgompx.so (libc6,x86-64) => /x\n\tlibm.so.6 (libc6,x86-64) => /lib/libm.so.6\n")
    assert wc.system_libgomps(ld) == ["/nonexistent/lib/libgomp.so.1"]


def test_module_origin():
    import adamc
    here = os.path.dirname(os.path.dirname(os.path.realpath(adamc.__file__)))
    assert wc.module_origin_problems([here]) == []
    bad = wc.module_origin_problems(["/nonexistent/site-packages"])
    assert any(p.startswith("adamc imported from ") for p in bad), bad
