"""The bench scripts' outputs: bench/compare.py writes outside the source
tree and names the machine, kernel variant and date; bench/ceiling.py and
bench/thread_cutoff.py refuse to print a table of impossible figures."""

import datetime
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

import adamc
from adamc import _bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

pytestmark = pytest.mark.skipif(not (BENCH / "compare.py").exists(),
                                reason="needs the source tree's bench/")


def load(name, monkeypatch):
    """Import bench/<name>.py; the environment it sets is restored afterwards."""
    for var in ("ADAMC_SERIAL_CUTOFF", "OMP_WAIT_POLICY"):
        # setenv records the value before (or its absence) for teardown;
        # a delenv of an absent variable alone would record nothing
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_compare_writes_to_a_new_folder_outside_the_source_tree(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = snapshot(BENCH), snapshot(ROOT)
    env = dict(os.environ, TMPDIR=str(tmp), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--sizes", "1e3",
                           "--rounds", "1", "--pause", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (snapshot(BENCH), snapshot(ROOT)) == before  # nothing written in the tree
    outs = list(tmp.glob("adamc-bench-*"))
    assert len(outs) == 1, proc.stdout
    md = (outs[0] / "results.md").read_text()
    info = adamc.cpu_info()
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert f"- Machine: {_bench.cpu_model()}, {info['available_cpus']} CPUs" in md
    assert f"- Kernel variant: {info['isa']} kernel variant, {info['num_threads']} threads" in md
    assert f"- Date: {today}" in md
    assert "| float32 1e3 |" in md
    assert f"wrote {outs[0] / 'results.md'}" in proc.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (outs[0] / "results.png").exists()
    else:
        assert (outs[0] / "results.png").stat().st_size > 10_000


def test_chart_names_machine_variant_and_date(monkeypatch):
    pytest.importorskip("matplotlib")
    compare = load("compare", monkeypatch)
    when = datetime.datetime(2026, 12, 1, 15, 30, tzinfo=datetime.timezone.utc)
    facts = compare.run_facts(when)
    r = {"layout": "one", "dtype": "float32", "n": 1000, "tensors": 1, "bytes": 28000,
         "times": {"adamc": 1e-6, "probe": 5e-7}}
    fig = compare.figure([r], ["adamc", "probe"], facts)
    title = fig.axes[0].get_title()
    assert _bench.cpu_model() in title
    assert f"{adamc.cpu_info()['isa']} kernel variant" in title
    assert "2026-12-01 15:30 UTC" in title
    assert compare.default_out(facts).endswith("adamc-bench-20261201-153000")
    assert not compare.default_out(facts).startswith(str(ROOT))


# The figures bench/ceiling.py printed while another process loaded the host.
BUSY_CEILING = [("float32", 1, 25.0, 37.1, 4.3), ("float32", 2, 7.0, 0.5, 20.7),
                ("float64", 1, 15.6, 16.6, 14.5), ("float64", 2, 0.47, 13.2, 595.0)]
QUIET_CEILING = [("float32", 1, 25.0, 37.1, 4.3), ("float32", 2, 48.0, 52.0, 4.4),
                 ("float64", 1, 15.6, 16.6, 7.5), ("float64", 2, 30.1, 40.2, 7.7)]


def test_ceiling_refuses_impossible_figures(monkeypatch):
    ceiling = load("ceiling", monkeypatch)
    steady = {"float32, 1 thread(s), in-cache step": [1.0, 1.1, 1.05]}
    why = ceiling.reasons(BUSY_CEILING, steady, load=0.1, cpus=2)
    text = "\n".join(why)
    assert "float32, 2 thread(s), memory: 0.5 GB/s, outside the plausible" in text
    assert "float64, 2 thread(s), in-cache step: 595 cycles per element" in text
    assert "float64: 2 threads ran the in-cache step at 0.5 GB/s, one thread at 15.6" in text
    out = ceiling.render(BUSY_CEILING, why)
    assert out.startswith("bench/ceiling.py: the host looks busy, so no table")
    assert "compute GB/s" not in out and "595" in out
    forced = ceiling.render(BUSY_CEILING, why, force=True)
    assert forced.startswith("HOST BUSY") and "compute GB/s" in forced


def test_ceiling_prints_the_table_on_a_quiet_host(monkeypatch):
    ceiling = load("ceiling", monkeypatch)
    assert ceiling.reasons(QUIET_CEILING, {"x": [1.0, 1.2, 1.1]}, load=0.2, cpus=2) == []
    out = ceiling.render(QUIET_CEILING, [])
    lines = out.splitlines()
    assert lines[0].startswith("# ")  # the machine
    assert lines[1].split("|")[1].split() == ["compute", "GB/s", "memory", "GB/s"]
    assert len(lines) == 6 and all("limit" in line for line in lines[2:])


def test_loading_a_script_leaves_the_environment_as_it_was(monkeypatch):
    before = {v: os.environ.get(v) for v in ("ADAMC_SERIAL_CUTOFF", "OMP_WAIT_POLICY")}
    with monkeypatch.context() as mp:
        load("ceiling", mp)  # (it sets its variables only inside _bench.arithmetic_env)
        assert os.environ.get("ADAMC_SERIAL_CUTOFF") is None
    assert {v: os.environ.get(v) for v in before} == before


def test_load_and_spread_are_reasons():
    why = _bench.busy_host_reasons(load=2.6, cpus=2, samples={"step": [1e-3, 1.1e-3, 9e-3]})
    assert why[0].startswith("load average 2.60 on 2 CPU(s) before the run")
    assert why[1] == "step: rounds differ by 9.0x (more than 1.5x)"
    assert _bench.busy_host_reasons(load=0.9, cpus=2, samples={"step": [1.0, 1.4]}) == []
    assert _bench.busy_host_reasons(load=None, cpus=2) == []


def test_thread_cutoff_refuses_a_smaller_step_slower_than_a_larger(monkeypatch):
    cutoff = load("thread_cutoff", monkeypatch)
    sizes = [2**k for k in range(11, 21)]
    quiet = [(n, 2e-6 + n * 4e-10, 4e-6 + n * 2.2e-10) for n in sizes]
    assert cutoff.reasons(quiet, {}, load=0.0, cpus=2) == []
    assert cutoff.render(quiet, 2).splitlines()[0].split() == ["elements", "|", "1", "thread",
                                                                "|", "2", "threads", "|", "ratio"]
    busy = list(quiet)
    busy[0] = (2048, 19.98e-3, 27.98e-3)  # what a loaded host printed
    why = cutoff.reasons(busy, {}, load=0.0, cpus=2)
    assert any(w.startswith("1 thread: 2048 elements took 19.98 ms, 4096 took") for w in why)
    out = cutoff.render(busy, 2, why)
    assert out.startswith("bench/thread_cutoff.py: the host looks busy, so no table")
    assert "ratio" not in out


def test_floors_columns_and_verdicts(monkeypatch):
    pytest.importorskip("ml_dtypes")
    floors = load("floors", monkeypatch)
    chosen = [r for r in floors.rows() if r[1].startswith("fp32 params, int8")
              or r[0] == "fused"]
    names = [r[1] for r in chosen]
    # 1 ns an element for the large float32 step (28 GB/s); the int8 row's
    # arithmetic 0.60 ns an element (within its 0.66 goal), the fused row's
    # 1.5 ns (above its 1.20)
    n, hot_n = 1000, 100
    t_large = {"fp32": 1e-6, names[0]: 0.7e-6, names[1]: 1.3e-6, "global_norm": 0.25e-6}
    t_hot = {names[0]: 0.6e-7 + 5e-6, f"{names[0]} x2": 1.2e-7 + 5e-6,  # 5 us a call
             names[1]: 1.5e-7 + 5e-6, f"{names[1]} x2": 3.0e-7 + 5e-6}
    out = floors.render(chosen, n, hot_n, 2, t_large, t_hot).splitlines()
    assert "float32 step 1.000 ns an element (28.0 GB/s" in out[1]
    int8, fused = out[3].split(), out[4].split()
    assert int8[int8.index("0.66"):][:5] == ["0.66", "0.70", "0.57", "0.60", "fp32"]
    assert "0.909 ns (<= 31 GB/s): reachable here" in out[3]
    assert fused[fused.index("1.20"):][:4] == ["1.20", "1.30", "1.14", "1.50"]
    assert "1.250 ns (<= 22 GB/s): not with this arithmetic here" in out[4]
    assert out[4].endswith("read floor 1.250 (the step, then global_norm alone): above the "
                           "goal, so not on this host's memory")
    t_large["global_norm"] = 0.15e-6
    out = floors.render(chosen, n, hot_n, 2, t_large, t_hot).splitlines()
    assert out[4].endswith("read floor 1.150 (the step, then global_norm alone)")
    busy = floors.render(chosen, n, hot_n, 2, t_large, t_hot, why=["load average 3"])
    assert busy.startswith("HOST BUSY") and "load average 3" in busy


def test_floors_runs_every_row(monkeypatch, capsys):
    pytest.importorskip("ml_dtypes")
    floors = load("floors", monkeypatch)
    out = floors.main(["--n", "3e4", "--rounds", "1"])
    rows = [line for line in out.splitlines() if "fp32 step >=" in line]
    assert len(rows) == len(floors.rows()) == 15
    with pytest.raises(SystemExit):
        floors.main(["--rows", "int4"])
    assert "unknown group(s) ['int4']" in capsys.readouterr().err
