"""Declares the one extension, adamc._kernels, and its per-file compiler flags.

Metadata lives in pyproject.toml.  The C files under src/adamc/csrc are
compiled here rather than by a plain Extension because each ISA variant
needs its own flags (kernel_<isa>.c), and OpenMP is probed, not assumed.

Environment switches (build time):
  ADAMC_NATIVE=1     add -march=native to every file (local builds only)
  ADAMC_NO_OPENMP=1  build without OpenMP (serial steps)
  ADAMC_REQUIRE_OPENMP=1
                     fail instead of falling back to a serial build (release
                     wheels set it, so none ships serial by accident)
  ADAMC_SANITIZE=address,undefined
                     build with those sanitizers (tools/sanitize.sh runs the
                     test suite so; never for a release)
  ADAMC_DEBUG_INFO=1 keep the DWARF debug sections in the extension (by default
                     the GNU linker drops them: 1.4 of its 1.8 MB; the symbol
                     table stays, so profilers and backtraces still name functions)
  ADAMC_BUILD_JOBS=N compile N C files at once (default: the CPUs this process
                     may use; MSVC builds compile one at a time)

Build time.  The C files compile in parallel, the Cython-generated one
beside the kernel variants.  Objects are kept in build/ (pip builds in the
source tree) and recompiled only when their sources, a header, or the
flags, compiler, Python, NumPy or Cython version change (a stamp file in
build_temp records those): a second `pip install ".[extra]"` from the same
checkout relinks nothing and only pays for pip's isolated build environment.
"""

import concurrent.futures
import os
import platform
import shlex
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import PlatformError

CSRC = os.path.join("src", "adamc", "csrc")
# Files compiled with the common flags only.
COMMON_SOURCES = ["step.c", "norm.c", "pool.c", "tune.c", "threads.c", "dispatch.c", "quant.c",
                  "kernel_baseline.c"]
# x86-64 variants: file, GCC/Clang flags, MSVC flags.  Chosen at run time
# (csrc/dispatch.c), so a wheel built anywhere keeps them all.
X86_VARIANTS = [
    ("avx2", ["-mavx2", "-mfma", "-mf16c"], ["/arch:AVX2"]),
    ("avx512", ["-mavx512f", "-mfma", "-mf16c", "-mprefer-vector-width=512"], ["/arch:AVX512"]),
]


def _is_x86_64():
    target = os.environ.get("ADAMC_TARGET_ARCH") or platform.machine()
    return target.lower() in ("x86_64", "amd64")


def _msvc(compiler):
    return compiler.compiler_type == "msvc"


def _base_flags(compiler):
    if _msvc(compiler):
        # /fp:precise is MSVC's default and keeps a*b+c unfused.
        return ["/O2", "/fp:precise"]
    # -ffp-contract=off: FMA only where a kernel variant asks for it
    # (csrc/kernel_body.h); -fno-math-errno lets sqrt inline and vectorise
    # (it changes no result, only whether errno is set).  Never -ffast-math.
    flags = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-std=c99"]
    if os.environ.get("ADAMC_NATIVE") == "1":
        flags.append("-march=native")
    return flags + _sanitize_flags(compiler)


def _sanitize_flags(compiler):
    """ASan/UBSan for the test build: every report is fatal."""
    wanted = os.environ.get("ADAMC_SANITIZE", "").strip()
    if not wanted or _msvc(compiler):
        return []
    return [f"-fsanitize={wanted}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
            "-g"]


def _pthread_flags(compiler):
    """POSIX threads for the worker pool (csrc/pool.c); none on Windows."""
    return [] if _msvc(compiler) or sys.platform == "win32" else ["-pthread"]


def _strip_flags(compiler):
    """Drop debug sections at link time (what `strip -g` would do afterwards).

    Only for the GNU-style linkers of Linux and the BSDs: MSVC writes debug
    information to a separate .pdb, and Apple's linker leaves DWARF in the
    object files, so neither puts it in the extension.  Sanitizer builds keep
    it for their reports.
    """
    if (_msvc(compiler) or sys.platform == "darwin" or sys.platform == "win32"
            or os.environ.get("ADAMC_SANITIZE", "").strip()
            or os.environ.get("ADAMC_DEBUG_INFO") == "1"):
        return []
    return ["-Wl,--strip-debug"]


NO_COMPILER = """\
adamc: building adamc from source needs a C compiler, and none works here.
  The compiler tried: {cmd}
  What failed: {err}
Install one, then run pip again:
  Debian, Ubuntu:         sudo apt install build-essential   (gcc, with OpenMP)
  Fedora, RHEL, Rocky:    sudo dnf install gcc
  Alpine:                 apk add build-base
  conda environments:     conda install -c conda-forge c-compiler
  macOS:                  xcode-select --install   (and brew install libomp for threads)
  Windows:                Microsoft C++ Build Tools ("Desktop development with C++")
Or install a prebuilt wheel instead (the README, "Wheels and building", says where).
If a compiler is installed, check $CC (now {cc})."""


def _check_compiler(compiler):
    """Raise a PlatformError that says how to get a C compiler if none works.

    Without this, a missing compiler first shows as "OpenMP not found"
    (the OpenMP probe fails too) and then as a raw compiler command.
    """
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "hello.c")
        with open(path, "w") as f:
            f.write("int adamc_hello(void) { return 0; }\n")
        try:
            compiler.compile([path], output_dir=d)
        except Exception as exc:  # CompileError, or OSError from spawn
            cmd = getattr(compiler, "compiler_so", None) or getattr(compiler, "cc", None)
            cmd = " ".join(cmd) if isinstance(cmd, (list, tuple)) else str(cmd or "?")
            err = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise PlatformError(NO_COMPILER.format(
                cmd=cmd, err=err, cc=os.environ.get("CC", "unset"))) from None


def _openmp_flags(compiler):
    """(compile flags, link flags) for OpenMP, or None if it does not build."""
    if os.environ.get("ADAMC_NO_OPENMP") == "1":
        return None
    if _msvc(compiler):
        return ["/openmp"], []
    if sys.platform == "darwin":
        cand = (["-Xpreprocessor", "-fopenmp"], ["-lomp"])
    else:
        cand = (["-fopenmp"], ["-fopenmp"])
    src = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1; }
        """
    )
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "probe.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            objs = compiler.compile([path], output_dir=d, extra_postargs=cand[0])
            # distutils leaves $LDFLAGS out of link_executable; a Homebrew
            # libomp is found only through it.
            ldflags = shlex.split(os.environ.get("LDFLAGS", ""))
            compiler.link_executable(objs, "probe", output_dir=d,
                                     extra_postargs=cand[1] + ldflags)
        except Exception:
            return None
    return cand


def _build_jobs(compiler):
    if _msvc(compiler):
        return 1  # MSVC's compiler object initialises itself on first use: not thread-safe
    env = os.environ.get("ADAMC_BUILD_JOBS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _newer_than(target, sources):
    """True if target exists and is newer than every file in sources."""
    try:
        t = os.path.getmtime(target)
    except OSError:
        return False
    return all(os.path.getmtime(src) < t for src in sources)


class BuildExt(build_ext):
    def build_extensions(self):
        _check_compiler(self.compiler)
        omp = _openmp_flags(self.compiler)
        if omp is None and os.environ.get("ADAMC_REQUIRE_OPENMP") == "1":
            raise RuntimeError(
                "adamc: ADAMC_REQUIRE_OPENMP=1 but OpenMP does not build with this "
                "compiler; install an OpenMP runtime (libgomp, libomp) or unset it")
        if omp is None and os.environ.get("ADAMC_NO_OPENMP") != "1":
            self.warn(
                "adamc: OpenMP not found: building a serial extension (every step on one "
                "thread; adamc.cpu_info()['openmp'] will be False). For threads install "
                "an OpenMP runtime (gcc's libgomp; on macOS brew install libomp)"
            )
        base = _base_flags(self.compiler)
        headers = [os.path.join(CSRC, h) for h in sorted(os.listdir(CSRC))
                   if h.endswith((".h", ".inc"))]
        jobs = _build_jobs(self.compiler)
        self._pool = concurrent.futures.ThreadPoolExecutor(jobs) if jobs > 1 else None
        self._pending = []
        for ext in self.extensions:
            cflags = base + (omp[0] if omp else [])
            link = ((omp[1] if omp else []) + _pthread_flags(self.compiler)
                    + _sanitize_flags(self.compiler) + _strip_flags(self.compiler))
            stamp = self._stamp(ext, cflags, link)
            objects = [self.compiler.object_filenames([os.path.join(CSRC, name)],
                                                      output_dir=self.build_temp)[0]
                       for name, _ in self.c_sources()]
            # the kernel variants (seconds each) first, the small files after
            for name, extra in sorted(self.c_sources(), key=lambda c: not c[0].startswith("kernel")):
                src = os.path.join(CSRC, name)
                obj = self.compiler.object_filenames([src], output_dir=self.build_temp)[0]
                if self.force or not _newer_than(obj, [src, stamp] + headers):
                    os.makedirs(os.path.dirname(obj), exist_ok=True)
                    self._submit(self.compiler.compile, [src], output_dir=self.build_temp,
                                 include_dirs=[CSRC], extra_postargs=cflags + extra,
                                 depends=headers)
            ext.extra_objects = objects + ext.extra_objects
            ext.extra_compile_args = cflags
            ext.extra_link_args = link
            # relink (and recompile the Cython C) when anything above changed
            ext.depends = sorted(set(ext.depends) | set(headers) | {stamp} | {
                os.path.join(CSRC, name) for name, _ in self.c_sources()})
        # The Cython C compiles in this thread (build_ext's own code) while
        # the pool compiles the C files; the link waits for them.
        link_shared_object = self.compiler.link_shared_object

        def link_after_pool(*args, **kwargs):
            self._wait()
            return link_shared_object(*args, **kwargs)

        self.compiler.link_shared_object = link_after_pool
        try:
            super().build_extensions()
        finally:
            self.compiler.link_shared_object = link_shared_object
            self._wait()

    def _submit(self, fn, *args, **kwargs):
        if self._pool is None:
            fn(*args, **kwargs)
        else:
            self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def _wait(self):
        pending, self._pending = self._pending, []
        try:
            for fut in pending:
                fut.result()  # re-raises a compile error
        finally:
            if self._pool is not None and not self._pending:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _stamp(self, ext, cflags, link):
        """A file whose contents name everything the objects depend on besides
        the sources; rewritten (so newer) only when one of them changes."""
        import Cython

        compiler = getattr(self.compiler, "compiler_so", None) or self.compiler.compiler_type
        text = "\n".join([
            f"compiler {compiler}", f"cflags {cflags}", f"link {link}",
            f"sources {self.c_sources()}", f"python {sys.version}",
            f"numpy {numpy.__version__} {numpy.get_include()}", f"cython {Cython.__version__}",
            f"macros {ext.define_macros}"]) + "\n"
        # The include path of pip's isolated build environment changes every
        # build; the NumPy version above stands for it.
        text = text.replace(numpy.get_include(), "<numpy include>")
        os.makedirs(self.build_temp, exist_ok=True)
        path = os.path.join(self.build_temp, "adamc-build-stamp.txt")
        try:
            with open(path) as f:
                if f.read() == text:
                    return path
        except OSError:
            pass
        with open(path, "w") as f:
            f.write(text)
        return path

    def c_sources(self):
        """(file, extra flags) for every C file of the extension."""
        msvc = _msvc(self.compiler)
        variants = X86_VARIANTS if _is_x86_64() else []
        defines = [("/D" if msvc else "-D") + f"ADAMC_HAVE_{v.upper()}" for v, _, _ in variants]
        out = [(name, defines if name == "dispatch.c" else []) for name in COMMON_SOURCES]
        for name, gcc, cl in variants:
            out.append((f"kernel_{name}.c", cl if msvc else gcc))
        return out


extensions = [
    Extension(
        "adamc._kernels",
        sources=["src/adamc/_kernels.pyx"],
        include_dirs=[numpy.get_include(), CSRC],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

def _cythonize(exts):
    """cythonize, unless the generated C is newer than the .pyx, its .pxd/.pxi
    neighbours and setup.py, and came from this Cython version.

    Cython's own check also compares the C with Cython's bundled .pxd files,
    which pip's isolated build environment installs afresh for every build,
    so it would regenerate (and build_ext recompile) the C every time."""
    import glob

    import Cython

    def fresh(pyx):
        c = pyx[:-4] + ".c"
        deps = [pyx, __file__] + glob.glob(os.path.join(os.path.dirname(pyx), "*.px[di]"))
        if not _newer_than(c, deps):
            return False
        with open(c, encoding="utf-8", errors="replace") as f:
            return f"Cython {Cython.__version__} " in f.readline()

    if all(fresh(src) for ext in exts for src in ext.sources if src.endswith(".pyx")):
        for ext in exts:
            ext.sources = [src[:-4] + ".c" if src.endswith(".pyx") else src for src in ext.sources]
        return exts
    return cythonize(exts, compiler_directives={"language_level": "3"})


setup(
    ext_modules=_cythonize(extensions),
    cmdclass={"build_ext": BuildExt},
)
