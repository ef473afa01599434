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
"""

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

CSRC = os.path.join("src", "adamc", "csrc")
# Files compiled with the common flags only.
COMMON_SOURCES = ["step.c", "pool.c", "tune.c", "threads.c", "dispatch.c", "kernel_baseline.c"]
# x86-64 variants: file, GCC/Clang flags, MSVC flags.  Chosen at run time
# (csrc/dispatch.c), so a wheel built anywhere keeps them all.
X86_VARIANTS = [
    ("avx2", ["-mavx2", "-mfma"], ["/arch:AVX2"]),
    ("avx512", ["-mavx512f", "-mfma", "-mprefer-vector-width=512"], ["/arch:AVX512"]),
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


class BuildExt(build_ext):
    def build_extensions(self):
        omp = _openmp_flags(self.compiler)
        if omp is None and os.environ.get("ADAMC_REQUIRE_OPENMP") == "1":
            raise RuntimeError(
                "adamc: ADAMC_REQUIRE_OPENMP=1 but OpenMP does not build with this "
                "compiler; install an OpenMP runtime (libgomp, libomp) or unset it")
        if omp is None:
            self.warn(
                "adamc: OpenMP not found (or ADAMC_NO_OPENMP=1): building a serial "
                "extension; adamc.cpu_info()['openmp'] will be False"
            )
        base = _base_flags(self.compiler)
        for ext in self.extensions:
            cflags = base + (omp[0] if omp else [])
            objects = []
            for name, extra in self.c_sources():
                objects += self.compiler.compile(
                    [os.path.join(CSRC, name)],
                    output_dir=self.build_temp,
                    include_dirs=[CSRC],
                    extra_postargs=cflags + extra,
                    depends=[os.path.join(CSRC, h) for h in os.listdir(CSRC)],
                )
            ext.extra_objects = objects + ext.extra_objects
            # relink when any C file changed, not only the Cython module
            ext.depends = list(ext.depends) + [
                os.path.join(CSRC, f) for f in sorted(os.listdir(CSRC))]
            ext.extra_compile_args = cflags
            ext.extra_link_args = ((omp[1] if omp else []) + _pthread_flags(self.compiler)
                                   + _sanitize_flags(self.compiler)
                                   + _strip_flags(self.compiler))
        super().build_extensions()

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

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
