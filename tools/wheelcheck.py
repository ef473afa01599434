#!/usr/bin/env python3
"""Checks of adamc's sdist, wheels and installed wheels, for both pipelines.

tools/build_wheels.sh (local) and cibuildwheel's test-command (pyproject.toml)
run the same checks from here; tests/test_wheelcheck.py tests them.

  python tools/wheelcheck.py sdist SDIST --source DIR
  python tools/wheelcheck.py wheel WHEEL [--python X.Y] [--source DIR]
                                         [--auditwheel-show FILE]
  python tools/wheelcheck.py installed [--hide-system-libgomp]
  python tools/wheelcheck.py pytest [--expect-isa ISA] [--] [PYTEST ARGS]

sdist and wheel read the archive only (standard library, any Python);
installed imports adamc and must run in the environment the wheel was
installed into, from outside the source tree; pytest runs pytest with a
plugin that fails the run unless adamc comes from that environment (and runs
ISA, if given).  Each prints key=value facts, then WARNING:/PROBLEM: lines,
and exits 1 if there is a problem.
"""
from __future__ import annotations

import argparse
import base64
import csv
import glob
import hashlib
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass, field

PACKAGE = "adamc"
GOMP_LICENCE = "adamc/_vendor/LICENSE.libgomp.txt"
X86_ISAS = ["baseline", "avx2", "avx512"]
ELF_MACHINES = {3: "i686", 62: "x86_64", 183: "aarch64", 21: "ppc64le", 22: "s390x"}
WHEEL_NAME = re.compile(r"(?P<dist>[^-]+)-(?P<ver>[^-]+)(-(?P<build>\d[^-]*))?"
                        r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl")
MANYLINUX = re.compile(r"manylinux(_\d+_\d+|1|2010|2014)_[a-z0-9_]+")
STRAY_IN_WHEEL = re.compile(r"(^|/)(__pycache__|tests?)/|\.(c|h|inc|pyx|o|pyc)$")
STRAY_IN_SDIST = re.compile(r"(^|/)(build|dist|__pycache__)/|\.(so|o|pyd|pyc|whl)$"
                            r"|^src/adamc/_kernels\.c$|(^|/)\.")
SDIST_EGG_INFO = {"PKG-INFO", "SOURCES.txt", "dependency_links.txt", "requires.txt", "top_level.txt"}
SDIST_REQUIRED = ["setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "PKG-INFO",
                  "src/adamc/_kernels.pyx", "tests/conftest.py", "tools/wheelcheck.py",
                  "tools/add_licences.py", "tools/licences/LICENSE.libgomp.txt"]


@dataclass
class Result:
    facts: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, out=None) -> int:
        out = out or sys.stdout
        for key, value in self.facts.items():
            print(f"{key}={value}", file=out)
        for w in self.warnings:
            print(f"WARNING: {w}", file=out)
        for p in self.problems:
            print(f"PROBLEM: {p}", file=out)
        return 0 if self.ok else 1


# ------------------------------------------------------------------ archives
def elf_sections(data: bytes) -> tuple[str, list[str]]:
    """(machine, section names) of an ELF file; ValueError if it is not one."""
    if data[:4] != b"\x7fELF" or data[4:5] not in (b"\1", b"\2") or data[5:6] not in (b"\1", b"\2"):
        raise ValueError("not an ELF file")
    e = "<" if data[5] == 1 else ">"
    try:
        machine = struct.unpack_from(e + "H", data, 18)[0]
        if data[4] == 2:  # 64-bit
            shoff = struct.unpack_from(e + "Q", data, 0x28)[0]
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
            hdr = e + "IIQQQQ"
        else:
            shoff = struct.unpack_from(e + "I", data, 0x20)[0]
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x2E)
            hdr = e + "IIIIII"
        heads = [struct.unpack_from(hdr, data, shoff + i * shentsize) for i in range(shnum)]
        strtab = data[heads[shstrndx][4]:heads[shstrndx][4] + heads[shstrndx][5]]
        names = [strtab[h[0]:strtab.index(b"\0", h[0])].decode() for h in heads]
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed ELF section table ({exc})") from None
    return ELF_MACHINES.get(machine, f"e_machine {machine}"), names


def debug_sections(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith((".debug_", ".zdebug_"))]


def auditwheel_policy(show_text: str) -> str | None:
    """The platform tag `auditwheel show` says the wheel is consistent with."""
    m = re.search(r'platform tag:\s*"([^"]+)"', show_text)
    return m.group(1) if m else None


def source_modules(source: str) -> set[str]:
    """adamc's .py files under source/src, as paths inside a wheel."""
    src = os.path.join(source, "src")
    return {os.path.relpath(p, src).replace(os.sep, "/")
            for p in glob.glob(os.path.join(src, PACKAGE, "**", "*.py"), recursive=True)}


def _record_problems(zf: zipfile.ZipFile, record: str, files: set[str]) -> list[str]:
    problems, listed = [], set()
    for row in csv.reader(zf.read(record).decode().splitlines()):
        if not row:
            continue
        listed.add(row[0])
        if len(row) < 2 or not row[1]:
            continue
        if row[0] not in files:
            problems.append(f"RECORD lists {row[0]}, which is not in the wheel")
            continue
        algo, _, want = row[1].partition("=")
        if algo not in hashlib.algorithms_guaranteed:
            problems.append(f"RECORD hash of {row[0]} uses unknown algorithm {algo}")
            continue
        got = base64.urlsafe_b64encode(hashlib.new(algo, zf.read(row[0])).digest()).rstrip(b"=")
        if got.decode() != want:
            problems.append(f"RECORD hash of {row[0]} does not match its contents")
    if files - listed:
        problems.append(f"files missing from RECORD: {' '.join(sorted(files - listed))}")
    return problems


def check_wheel(path: str, python: str | None = None, source: str | None = None,
                policy: str | None = None) -> Result:
    """Name, tags, contents, RECORD, extension and bundled libgomp of a wheel."""
    r = Result()
    name = os.path.basename(path)
    m = WHEEL_NAME.fullmatch(name)
    if not m:
        r.problems.append(f"{name} is not a wheel file name")
        return r
    py = python or "%d.%d" % sys.version_info[:2]
    want = "cp" + py.replace(".", "")
    plats = m["plat"].split(".")
    tags = {f"{a}-{b}-{c}" for a in m["py"].split(".") for b in m["abi"].split(".") for c in plats}
    linux = any(p.startswith(("linux", "manylinux", "musllinux")) for p in plats)
    r.facts.update(wheel=name, tags=" ".join(sorted(tags)))
    if m["dist"] != PACKAGE:
        r.problems.append(f"distribution {m['dist']}, expected {PACKAGE}")
    if (m["py"], m["abi"]) != (want, want):
        r.problems.append(f"tag {m['py']}-{m['abi']}, expected {want}-{want} for CPython {py}")
    if linux:
        bad = [p for p in plats if not MANYLINUX.fullmatch(p)]
        if bad:
            r.problems.append(f"platform tag {' '.join(bad)} is not manylinux (auditwheel repair not run?)")
    if policy is not None:
        r.facts["policy"] = policy or "?"
        if not policy:
            r.problems.append("no platform tag found in the `auditwheel show` output")
        elif policy not in plats:
            r.problems.append(f"auditwheel's policy {policy} is not among the wheel's platform tags")
    with zipfile.ZipFile(path) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        files = set(names)
        distinfo = f"{m['dist']}-{m['ver']}.dist-info"
        required = {"adamc/__init__.py", "adamc/py.typed", "adamc/_kernels.pyi",
                    f"{distinfo}/METADATA", f"{distinfo}/WHEEL", f"{distinfo}/RECORD"}
        required |= source_modules(source) if source else set()
        if required - files:
            r.problems.append(f"missing from the wheel: {' '.join(sorted(required - files))}")
        stray = [n for n in names if STRAY_IN_WHEEL.search(n)]
        if stray:
            r.problems.append(f"sources or build leftovers in the wheel: {' '.join(stray)}")
        if f"{distinfo}/WHEEL" in files:
            meta = zf.read(f"{distinfo}/WHEEL").decode()
            meta_tags = {ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Tag:")}
            if meta_tags != tags:
                r.problems.append(f"WHEEL says Tag {' '.join(sorted(meta_tags))}, file name says "
                                  f"{' '.join(sorted(tags))}")
        if f"{distinfo}/RECORD" in files:
            r.problems += _record_problems(zf, f"{distinfo}/RECORD", files)

        exts = [n for n in names if re.fullmatch(r"adamc/_kernels\.[^/]*\.(so|pyd)", n)]
        if len(exts) != 1:
            r.problems.append(f"expected one compiled adamc/_kernels extension, found {exts or 'none'}")
        else:
            ext, data = exts[0], zf.read(exts[0])
            r.facts["extension"] = f"{ext} ({len(data)} bytes)"
            abi = re.search(r"\.(?:cpython-|cp)(\d+)", ext)
            if abi and "cp" + abi.group(1) != want:
                r.problems.append(f"extension {ext} is not built for CPython {py}")
            try:
                machine, sections = elf_sections(data)
            except ValueError as exc:
                r.facts["debug_sections"] = f"not checked ({exc})"
                if linux:
                    r.problems.append(f"extension {ext}: {exc}")
            else:
                dbg = debug_sections(sections)
                r.facts["debug_sections"] = " ".join(dbg) or "none"
                if dbg:
                    r.problems.append(f"extension carries debug sections ({' '.join(dbg)}): "
                                      "not linked with --strip-debug")
                if linux and any(not p.endswith("_" + machine) for p in plats):
                    r.problems.append(f"extension is {machine} code, platform tag {m['plat']}")

        gomp = sorted(n for n in names if re.fullmatch(r"adamc\.libs/libgomp[^/]*\.so[^/]*", n))
        licence = GOMP_LICENCE in files
        r.facts["bundled_libgomp"] = " ".join(gomp) or "none"
        if linux and not gomp:
            r.problems.append("no libgomp bundled in adamc.libs/" +
                              (f" although {GOMP_LICENCE} ships" if licence else ""))
        if gomp and not licence:
            r.problems.append(f"libgomp bundled without its licence text {GOMP_LICENCE}")
        if licence and not gomp and not linux:
            r.problems.append(f"{GOMP_LICENCE} ships in a wheel that bundles no libgomp")
    return r


def check_sdist(path: str, source: str) -> Result:
    """The sdist holds everything the build and the tests need, nothing generated."""
    r = Result()
    with tarfile.open(path) as tf:
        names = sorted(mb.name.split("/", 1)[1] for mb in tf.getmembers() if mb.isfile() and "/" in mb.name)
    r.facts.update(sdist=os.path.basename(path), files=len(names))
    required = set(SDIST_REQUIRED) | {"src/" + p for p in source_modules(source)}
    for pattern in ("src/adamc/csrc/**/*.[ch]", "src/adamc/csrc/**/*.inc", "tests/*.py",
                    "tests/data/*"):
        required |= {os.path.relpath(p, source).replace(os.sep, "/")
                     for p in glob.glob(os.path.join(source, pattern), recursive=True)}
    if required - set(names):
        r.problems.append(f"missing from the sdist: {' '.join(sorted(required - set(names)))}")
    egg = [n for n in names if ".egg-info/" in n]
    stray = [n for n in names if STRAY_IN_SDIST.search(n) and n not in egg]
    stray += [n for n in egg if not n.startswith(f"src/{PACKAGE}.egg-info/")
              or n.split("/")[-1] not in SDIST_EGG_INFO]
    if stray:
        r.problems.append(f"generated or stray files in the sdist: {' '.join(stray)}")
    return r


# ------------------------------------------------------- installed package
def site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({os.path.realpath(paths[k]) for k in ("purelib", "platlib")})


def module_origin_problems(sites: list[str]) -> list[str]:
    roots = tuple(os.path.join(os.path.realpath(s), "") for s in sites)
    return [f"{name} imported from {os.path.realpath(mod.__file__)}, not from {' or '.join(sites)}"
            for name, mod in sorted(sys.modules.items(), key=lambda kv: kv[0])
            if (name == PACKAGE or name.startswith(PACKAGE + ".")) and getattr(mod, "__file__", None)
            and not os.path.realpath(mod.__file__).startswith(roots)]


def parse_cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def expected_isa(flags: set[str], compiled: list[str]) -> str:
    """The widest compiled variant whose instructions the CPU flags list."""
    isa = "baseline"
    if {"avx2", "fma"} <= flags and "avx2" in compiled:
        isa = "avx2"
    if "avx512f" in flags and "avx512" in compiled:
        isa = "avx512"
    return isa


def isa_problems(info: dict, flags: set[str] | None, machine: str, forced: str | None = None) -> list[str]:
    p = []
    if machine in ("x86_64", "AMD64") and info["isa_compiled"] != X86_ISAS:
        p.append(f"a portable x86-64 wheel must compile {X86_ISAS}, has {info['isa_compiled']}")
    if forced:
        if info["isa"] != forced:
            p.append(f"ADAMC_ISA={forced} but the kernel in use is {info['isa']}")
    else:
        if info["isa"] != info["isa_available"][-1]:
            p.append(f"default isa {info['isa']} is not the widest available {info['isa_available'][-1]}")
        if flags is not None and info["isa"] != expected_isa(flags, info["isa_compiled"]):
            p.append(f"default isa {info['isa']}, expected {expected_isa(flags, info['isa_compiled'])} "
                     "on this CPU")
    if not info["openmp"]:
        p.append("wheel built without OpenMP")
    return p


def mapped_libgomp(maps: str) -> list[str]:
    return sorted({parts[-1] for parts in map(str.split, maps.splitlines())
                   if len(parts) >= 6 and os.path.basename(parts[-1]).startswith("libgomp")})


def libgomp_problems(mapped: list[str], sites: list[str]) -> list[str]:
    if not mapped:
        return ["no libgomp mapped after a parallel step"]
    libs = tuple(os.path.join(os.path.realpath(s), "adamc.libs", "") for s in sites)
    return [f"libgomp mapped from {g}, not from the wheel's adamc.libs/"
            for g in mapped if not os.path.realpath(g).startswith(libs)]


def check_installed() -> Result:
    """Origin, kernel dispatch, OpenMP and the OpenMP runtime of installed adamc."""
    import numpy as np

    import adamc
    from adamc import _kernels  # noqa: F401  (its origin is checked too)

    r, sites = Result(), site_dirs()
    r.problems += module_origin_problems(sites)
    info = adamc.cpu_info()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = parse_cpu_flags(fh.read())
    except OSError:
        flags = None
    r.problems += isa_problems(info, flags, platform.machine(), os.environ.get("ADAMC_ISA") or None)
    r.facts.update(adamc_file=adamc.__file__, numpy=np.__version__, isa=info["isa"],
                   expected_isa=expected_isa(flags, info["isa_compiled"]) if flags is not None else "?",
                   isa_available=" ".join(info["isa_available"]),
                   isa_compiled=" ".join(info["isa_compiled"]), openmp=info["openmp"])
    # A parallel-sized step starts the OpenMP runtime: on Linux it must be the
    # libgomp auditwheel bundled (adamc.libs/), not the system's.
    adamc.set_num_threads(2)
    n = 1 << 20
    adamc.Adam([np.zeros(n, np.float32)]).step([np.ones(n, np.float32)])
    if info["openmp"] and os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as fh:
            mapped = mapped_libgomp(fh.read())
        r.facts["libgomp"] = " ".join(mapped) or "none"
        r.problems += libgomp_problems(mapped, sites)
    else:
        r.facts["libgomp"] = "not checked"
    return r


def system_libgomps(ldconfig_p: str) -> list[str]:
    """The system's libgomp files, from `ldconfig -p` output."""
    return sorted({os.path.realpath(m.group(1)) for m in
                   re.finditer(r"^\s*libgomp\.so\S*\s.*=>\s*(\S+)\s*$", ldconfig_p, re.M)})


_HIDE = ('set -e; py=$1; me=$2; shift 2; for f in "$@"; do mount --bind /dev/null "$f"; done; '
         'if "$py" -c "import ctypes; ctypes.CDLL(\'libgomp.so.1\')" 2>/dev/null; then '
         'echo "system libgomp still loadable" >&2; exit 3; fi; exec "$py" "$me" installed')


def run_without_system_libgomp() -> tuple[str, str]:
    """Rerun `installed` with every system libgomp hidden behind /dev/null in a
    private mount namespace: ("pass" | "FAIL" | "skipped", detail)."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare") \
            or not os.path.exists(ldconfig):
        return "skipped", "needs Linux, root, unshare and ldconfig"
    libs = system_libgomps(subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout)
    if not libs:
        return "skipped", "no system libgomp to hide"
    unshare = ["unshare", "-m", "--propagation", "private"]
    if subprocess.run(unshare + ["true"], capture_output=True).returncode != 0:
        return "skipped", "unshare -m not permitted here"
    proc = subprocess.run(unshare + ["sh", "-c", _HIDE, "sh", sys.executable, os.path.abspath(__file__), *libs],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        return "pass", "imports and runs threads with hidden " + " ".join(libs)
    return "FAIL", " | ".join((proc.stdout + proc.stderr).strip().splitlines())


def _first(problems: list[str], n: int = 2) -> str:
    more = f" (and {len(problems) - n} more)" if len(problems) > n else ""
    return "; ".join(problems[:n]) + more


class UnderTest:
    """pytest plugin: the adamc under test is the installed one (at the start
    and the end of the session), running the kernel `expect_isa`."""

    def __init__(self, expect_isa: str | None = None):
        self.expect_isa, self.sites = expect_isa, site_dirs()

    def pytest_sessionstart(self, session):
        import pytest

        import adamc

        bad = module_origin_problems(self.sites)
        isa = adamc.cpu_info()["isa"]
        if self.expect_isa and isa != self.expect_isa:
            bad.append(f"the kernel under test is {isa}, expected {self.expect_isa}")
        if bad:
            raise pytest.UsageError(_first(bad))

    def pytest_report_header(self, config):
        import adamc

        return f"adamc under test: {adamc.__file__} (isa={adamc.cpu_info()['isa']})"

    def pytest_sessionfinish(self, session, exitstatus):
        import pytest

        bad = module_origin_problems(self.sites)
        if bad:
            print("\nERROR: " + _first(bad), file=sys.stderr)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR


# ------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pytest"]:  # everything after its own option goes to pytest
        import pytest

        rest, expect = argv[1:], None
        if rest[:1] == ["--expect-isa"] and len(rest) > 1:
            expect, rest = rest[1], rest[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return int(pytest.main(rest, plugins=[UnderTest(expect)]))
    ap = argparse.ArgumentParser(prog="wheelcheck.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sdist", help="check an sdist")
    s.add_argument("sdist")
    s.add_argument("--source", required=True, help="the tree it was built from")
    w = sub.add_parser("wheel", help="check a wheel file")
    w.add_argument("wheel")
    w.add_argument("--python", help="X.Y it is for (default: this Python)")
    w.add_argument("--source", help="the source tree: every src/adamc .py must be in the wheel")
    w.add_argument("--auditwheel-show", metavar="FILE", help="`auditwheel show` output: its policy must be a tag")
    i = sub.add_parser("installed", help="check the adamc installed for this Python")
    i.add_argument("--hide-system-libgomp", action="store_true",
                   help="also rerun with the system libgomp hidden (root + unshare; else skipped)")
    sub.add_parser("pytest", help="run pytest (remaining arguments) against the installed adamc")
    a = ap.parse_args(argv)
    if a.cmd == "sdist":
        return check_sdist(a.sdist, a.source).report()
    if a.cmd == "wheel":
        policy = None
        if a.auditwheel_show:
            with open(a.auditwheel_show) as fh:
                policy = auditwheel_policy(fh.read()) or ""
        return check_wheel(a.wheel, a.python, a.source, policy).report()
    r = check_installed()
    if a.hide_system_libgomp:
        status, detail = run_without_system_libgomp()
        r.facts.update(no_system_libgomp=status, no_system_libgomp_detail=detail)
        if status == "FAIL":
            r.problems.append(f"fails with the system libgomp hidden: {detail}")
    return r.report()


if __name__ == "__main__":
    sys.exit(main())
