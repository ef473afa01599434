"""What a source build says when it cannot work: without a C compiler,
setup.py names the missing compiler and the package that provides one,
instead of "OpenMP not found" and a raw compiler command."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree"),
    pytest.mark.skipif(sys.platform == "win32", reason="$CC is how the test hides the compiler"),
]


def _build_tools():
    """setup.py's own imports: skip where they are missing (e.g. a venv that
    installed adamc with pip's isolated build, which keeps them elsewhere)."""
    pytest.importorskip("Cython")
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("setup.py needs setuptools>=77")


def _copy_tree(dst):
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "src", dst / "src",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.o", "__pycache__"))


def test_missing_compiler_says_what_to_install(tmp_path):
    _build_tools()
    _copy_tree(tmp_path)
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"))
    for var in ("ADAMC_NO_OPENMP", "ADAMC_REQUIRE_OPENMP", "ADAMC_SANITIZE", "LD_PRELOAD"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-temp", str(tmp_path / "t"),
         "--build-lib", str(tmp_path / "l")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "building adamc from source needs a C compiler, and none works here" in out, out
    assert f"The compiler tried: {tmp_path / 'no-such-cc'}" in out
    assert "sudo apt install build-essential" in out
    assert "xcode-select --install" in out
    assert "Microsoft C++ Build Tools" in out
    assert "OpenMP not found" not in out
    # nothing was compiled, nothing linked
    assert not list((tmp_path / "l").rglob("_kernels*"))
