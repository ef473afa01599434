"""Kernel variants: chosen at import, forced lower with ADAMC_ISA, clear errors."""

import os
import subprocess
import sys

import pytest

import adamc
from adamc import _kernels


def run_py(code, **env):
    full = dict(os.environ)
    full.pop("ADAMC_ISA", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=120)


def test_default_is_widest_runnable():
    compiled, runnable = _kernels.variants()
    assert compiled[0] == "baseline" and runnable[0] == "baseline"
    out = run_py("import adamc; print(adamc.cpu_info()['isa'])")
    assert out.stdout.strip() == runnable[-1]


@pytest.mark.parametrize("name", _kernels.variants()[1])
def test_force_each_runnable_variant(name):
    out = run_py("import adamc, numpy as np\n"
                 "p = np.ones(100, np.float32); adamc.Adam([p]).step([np.ones(100, np.float32)])\n"
                 "print(adamc.cpu_info()['isa'])", ADAMC_ISA=name.upper())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_unknown_variant_is_import_error():
    out = run_py("import adamc", ADAMC_ISA="sse9")
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "unknown kernel variant 'sse9'" in out.stderr
    assert "baseline" in out.stderr  # names what is available


def test_use_variant_errors():
    with pytest.raises(ValueError, match="unknown kernel variant"):
        _kernels.use_variant("neon9")
    compiled, runnable = _kernels.variants()
    for name in compiled:
        if name not in runnable:  # pragma: no cover - only on older CPUs
            with pytest.raises(ValueError, match="lacks"):
                _kernels.use_variant(name)


def test_x86_64_build_has_simd_variants():
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("SIMD variants are x86-64 only; other CPUs use the baseline")
    assert _kernels.variants()[0] == ["baseline", "avx2", "avx512"]


def test_cpu_info_lists_variants():
    info = adamc.cpu_info()
    assert info["isa"] in info["isa_available"]
    assert set(info["isa_available"]) <= set(info["isa_compiled"])
