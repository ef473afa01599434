"""What the examples tell a newcomer: train_mlp.py explains a nonzero loss
gap between adamc and the reference, torch_interop.py's --help is whole."""

import os
import subprocess
import sys

import pytest

import adamc
from _toolkit import EXAMPLES
from _toolkit import load_example as load

pytestmark = pytest.mark.skipif(not (EXAMPLES / "train_mlp.py").exists(),
                                reason="needs the source tree's examples/")


def test_gap_explanations():
    mlp = load("train_mlp")
    fma = mlp.explain_gap(8.4e-4, "avx2", 860)
    assert "avx2 kernel rounds each multiply-add once (FMA)" in fma[0]
    assert "860 steps amplify it" in fma[1]
    assert fma[2].startswith("ADAMC_ISA=baseline (no FMA)") and fma[2].endswith("difference 0.")
    assert mlp.explain_gap(0.0, "avx512", 860) == []
    assert "bit for bit" in mlp.explain_gap(0.0, "baseline", 860)[0]
    assert "bug report" in mlp.explain_gap(1e-9, "baseline", 860)[0]


def run_both(isa):
    pytest.importorskip("sklearn")
    env = dict(os.environ, ADAMC_ISA=isa)
    proc = subprocess.run([sys.executable, str(EXAMPLES / "train_mlp.py"), "--optimizer", "both",
                           "--epochs", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("max |loss(adamc)"))
    return float(line.rsplit(":", 1)[1]), proc.stdout


def test_baseline_gap_is_zero_and_said_so():
    diff, out = run_both("baseline")
    assert diff == 0.0
    assert "identical: the baseline kernel matches adamc.reference bit for bit" in out


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_fma_gap_is_explained_when_nonzero(isa):
    if isa not in adamc.cpu_info()["isa_available"]:
        pytest.skip(f"{isa} not available here")
    diff, out = run_both(isa)
    if diff == 0:
        assert "why they differ" not in out
    else:
        assert f"why they differ: adamc's {isa} kernel rounds each multiply-add once" in out
        assert "ADAMC_ISA=baseline (no FMA)" in out


def test_torch_interop_help_is_whole():
    out = subprocess.run([sys.executable, str(EXAMPLES / "torch_interop.py"), "--help"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "see below" not in out
    assert "--torch-threads N" in out and "twenty-" in out


@pytest.mark.parametrize("script, argv, words", [
    ("train_mlp", ["--epochs", "0"], "--epochs must be at least 1"),
    ("train_mlp", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("int8_state", ["--steps", "0"], "--steps must be at least 1"),
    # the README's combination with the master weights left on: nothing
    # rounds to 16 bits, and adamc's refusal came as a traceback (found by
    # an independent review)
    ("train_mlp", ["--dtype", "float16", "--stochastic-rounding"], "no parameter of the group is rounded"),
    ("train_mlp", ["--dtype", "float32", "--master-weights"], "master weights are a float32 copy"),
])
def test_bad_arguments_are_usage_errors(script, argv, words, capsys):
    """Each ended in a traceback: an IndexError for zero epochs or steps,
    adamc's ValueError for refused storage options (found by independent
    reviews)."""
    mod = load(script)
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err
