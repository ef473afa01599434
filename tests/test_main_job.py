"""``python -m adamc``, the main job: progress while it runs, output within
100 columns, plain words, and a verdict line that matches the exit status."""

import os
import subprocess
import sys
import time

import pytest

import adamc.__main__ as main_job
from adamc import _bench

WIDTH = 100


def _env():
    env = dict(os.environ)
    env.pop("ADAMC_ISA", None)
    return env


def test_default_run_streams_progress_and_ends_with_the_verdict():
    """The real default run, in a subprocess: the first progress line comes
    within a few seconds, long before the end; one line per case; stdout
    fits 100 columns and closes with the verdict; exit status 0."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "adamc"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    first = proc.stderr.readline()
    t_first = time.monotonic() - t0
    running_after_first = proc.poll() is None
    rest_err = []
    for line in proc.stderr:
        rest_err.append((time.monotonic() - t0, line))
    out = proc.stdout.read()
    rc = proc.wait()
    t_end = time.monotonic() - t0
    assert rc == 0, (out, first, rest_err)
    assert first.startswith("python -m adamc: 5 steps; checking the kernel"), first
    # about a second normally; generous for a loaded test machine
    assert t_first < 5.0, t_first
    assert running_after_first
    cases = [line for _, line in rest_err if line.startswith("[")]
    assert [c.split("]")[0] for c in cases] == [f"[{k}/5" for k in range(1, 6)]
    # the per-case lines arrived one by one, not all at the end
    assert rest_err[0][0] < t_end - 0.3, (rest_err, t_end)

    lines = out.splitlines()
    assert max(len(x) for x in lines) <= WIDTH, max(lines, key=len)
    assert lines[-1].startswith("Verdict: kernel check passed (exit 0); ")
    info = adamc_info()
    assert f"; {info['isa']}, {info['num_threads']} thread" in lines[-1]
    assert "than NumPy Adam at 4e6" in lines[-1]
    assert any(x.startswith("  adamc vs NumPy Adam (adamc.reference): ") for x in lines)
    assert any(x.startswith("  adamc vs what this machine's memory allows: ")
               and "x of the limit (per round: " in x for x in lines)
    assert sum("The memory limit is" in x for x in lines) == 1  # explained once
    torch_line = [x for x in lines if x.startswith("  adamc vs torch.optim.Adam(fused=True): ")]
    assert len(torch_line) == 1
    if not _bench.torch_available():
        assert torch_line[0].endswith("torch not installed (pip install torch to compare)")
    else:
        assert torch_line[0].endswith(("faster", "slower"))


def adamc_info():
    import adamc

    return adamc.cpu_info()


def run_main(capsys, argv):
    rc = main_job.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_failed_check_gives_exit_status_1_and_says_so(capsys, monkeypatch):
    monkeypatch.setattr(main_job, "check", lambda rng: 1000.0)
    rc, out, err = run_main(capsys, ["--sizes", "1e3", "--rounds", "1"])
    assert rc == 1
    lines = out.splitlines()
    assert "FAILED" in lines[1] and "worst difference 1000.0 eps (at most 64 allowed)" in out
    assert lines[-1].startswith("Verdict: kernel check FAILED (exit 1); ")
    assert "adamc per step" not in out  # no timing after a failed check
    assert "[1/3] kernel check" in err


def test_check_only(capsys):
    rc, out, err = run_main(capsys, ["--no-bench"])
    assert rc == 0
    assert out.splitlines()[-1].endswith("; no timing")
    assert out.splitlines()[-1].startswith("Verdict: kernel check passed (exit 0); ")
    assert err.splitlines() == [err.splitlines()[0], "[1/1] kernel check: done " +
                                err.splitlines()[1].split("done ")[1]]


def test_without_torch_the_torch_comparison_says_how_to_get_it(capsys, monkeypatch):
    monkeypatch.setattr(_bench, "torch_available", lambda: False)
    rc, out, _ = run_main(capsys, ["--sizes", "1e3", "--rounds", "1"])
    assert rc == 0
    assert ("vs torch.optim.Adam(fused=True): torch not installed (pip install torch to "
            "compare)") in out
    assert "vs torch fused" not in out
    assert max(len(x) for x in out.splitlines()) <= WIDTH


def test_wide_adds_the_full_tables(capsys):
    rc, out, _ = run_main(capsys, ["--sizes", "1e3", "--rounds", "1", "--wide"])
    assert rc == 0
    assert "adamc/numpy reference" in out and "plain probe" in out
    assert max(len(x) for x in out.splitlines()) > WIDTH  # the wide one is the flag's
    assert out.splitlines()[-1].startswith("Verdict: kernel check passed")


def test_plain_words():
    assert main_job.speedup(38.2e-3, 1e-3) == "38x faster"
    assert main_job.speedup(1.5e-3, 1e-3) == "1.5x faster"
    assert main_job.speedup(1e-3, 1.5e-3) == "1.5x slower"
    assert main_job.limit_ratio({"adamc": 1.08, "probe": 1.0, "plain probe": 1.2}) == \
        "1.08x of the limit"
    # the faster probe is the limit
    assert main_job.limit_ratio({"adamc": 1.08, "probe": 1.2, "plain probe": 0.9}) == \
        "1.20x of the limit"


def test_headline_gives_the_range_over_rounds():
    """Each comparison's spread over the rounds (each round's times side by
    side), so that a noisy machine's verdict can be read as such."""
    r = {"layout": "one", "dtype": "float32", "n": 4 * 10**6, "tensors": 1,
         "samples": {"adamc": [1.0, 1.1, 1.2], "probe": [0.9, 1.0, 1.0],
                     "plain probe": [1.0, 0.95, 1.5], "numpy reference": [8.0, 8.8, 6.0],
                     "numpy in-place": [30.0, 22.0, 12.0], "torch fused": [0.9, 1.21, 1.5]}}
    r["times"] = {k: sorted(v)[1] for k, v in r["samples"].items()}
    lines = main_job.headline(r, main_job.COMPACT)
    assert lines == [
        "adamc vs NumPy Adam (adamc.reference): 7.3x faster (per round: 5.0-8.0x faster)",
        "adamc vs NumPy Adam with in-place ufuncs: 20x faster (per round: 10-30x faster)",
        "adamc vs torch.optim.Adam(fused=True): 1.1x faster (per round: 1.1x slower to "
        "1.2x faster)",
        "adamc vs what this machine's memory allows: 1.10x of the limit (per round: "
        "1.11-1.20x)"]
    r["samples"] = {k: v[:1] for k, v in r["samples"].items()}
    assert "per round" not in " ".join(main_job.headline(r, main_job.COMPACT))


def test_compact_table_fits_even_with_every_column():
    r = {"layout": "one", "dtype": "float32", "n": 5 * 10**7, "tensors": 1,
         "times": {"adamc": 31.3e-3, "probe": 29.1e-3, "plain probe": 30.0e-3,
                   "numpy reference": 863.6e-3, "numpy in-place": 412.6e-3,
                   "torch fused": 33.9e-3}}
    tiny = dict(r, layout="tiny", n=32000, tensors=500,
                times=dict(r["times"], adamc=70.6e-6, **{"numpy reference": 19.13e-3}))
    text = main_job.compact_table([r, tiny], main_job.COMPACT)
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= WIDTH
    assert lines[0].split() == ["elements", "adamc", "per", "step", "vs", "NumPy", "Adam", "vs",
                                "NumPy", "in-place", "vs", "torch", "fused", "vs", "memory",
                                "limit"]
    assert lines[1].split() == ["5e7", "31.30", "ms", "28x", "faster", "13x", "faster", "1.1x",
                                "faster", "1.08x", "of", "the", "limit"]
    assert lines[2].split()[:6] == ["500", "x", "64", "70.6", "us", "271x"]


@pytest.mark.parametrize("argv", [["--full", "--sizes", "1e3"]])
def test_full_and_sizes_exclude_each_other(argv, capsys):
    with pytest.raises(SystemExit):
        main_job.parse_args(argv)


@pytest.mark.parametrize("argv, words", [
    (["--rounds", "0"], "--rounds: '0': give a whole number of rounds, at least 1"),
    (["--rounds", "x"], "--rounds: 'x': give a whole number of rounds"),
    (["--sizes", "-5"], "--sizes: '-5': every size must be at least 1"),
    (["--sizes", "0"], "--sizes: '0': every size must be at least 1"),
    (["--sizes", "abc"], "--sizes: 'abc': give element counts separated by commas"),
])
def test_bad_rounds_and_sizes_are_usage_errors(argv, words, capsys):
    """They ended in tracebacks (a StatisticsError, negative dimensions) with
    exit status 1, which says the kernel check failed."""
    with pytest.raises(SystemExit) as e:
        main_job.parse_args(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err
    assert main_job.parse_args(["--sizes", "1e3,2000", "--rounds", "3"]).sizes == [1000, 2000]
