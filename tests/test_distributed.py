"""adamc.distributed: sharded Adam/AdamW over MPI.

The checks run in tests/_mpi_worker.py under ``mpiexec -n 2`` and ``-n 3``
(uneven shards; the host's 2 cores oversubscribed, which MPICH's hydra
allows without flags: it does not bind processes by default), each job
under a timeout after which its whole process group is killed.  Without
mpi4py (or without an ``mpiexec``) those tests skip; the import checks
below run either way.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_mpi_worker.py")
#: Seconds a whole mpiexec job may take before it is killed (each takes 1-5 s).
TIMEOUT = 120


def _env():
    """The children import the adamc this test imports (installed or not)."""
    import adamc

    env = dict(os.environ)
    here = str(Path(adamc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    env.setdefault("ADAMC_NUM_THREADS", "1")  # N processes on 2 cores
    return env


def test_import_adamc_does_not_import_mpi4py():
    code = ("import sys, adamc, adamc.distributed; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=TIMEOUT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_clear_error_without_mpi4py():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import numpy as np, adamc.distributed as D\n"
            "try:\n    D.Adam([np.zeros(3, np.float32)])\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert 'pip install "adamc[mpi]"' in out.stdout, out.stdout


def _mpiexec():
    pytest.importorskip("mpi4py")
    here = Path(sys.executable).with_name("mpiexec")
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpi4py is installed but no mpiexec was found")
    return found


def run_job(nproc, scenario, directory):
    """Run the worker (under mpiexec unless nproc is 1: MPI's singleton
    start); returns (returncode, output).  The job runs in its own process
    group, killed whole after TIMEOUT seconds."""
    cmd = [sys.executable, "-m", "mpi4py", str(WORKER), scenario, str(directory)]
    if nproc > 1:
        cmd = [_mpiexec(), "-n", str(nproc)] + cmd
    else:
        pytest.importorskip("mpi4py")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpiexec -n {nproc} {scenario} did not end within {TIMEOUT} s "
                    f"(a hang):\n{out[-3000:]}")
    return proc.returncode, out


@pytest.mark.parametrize("nproc", [1, 2, 3])
def test_sharded_step_matches_single_process(nproc, tmp_path):
    """Equivalence (bitwise with deterministic=True, to rounding otherwise)
    over groups, AdamW, amsgrad, schedules, eps modes, sums, skipped
    parameters, 16-bit parameters; the fused step with the global norm;
    agreed errors; state bytes 1/N."""
    rc, out = run_job(nproc, "main", tmp_path)
    assert rc == 0 and f"OK main N={nproc}" in out, out[-3000:]


def test_checkpoint_reshards(tmp_path):
    """Saved by 2 processes, loaded by 3, by 1 (COMM_SELF) and by a single
    process's adamc.load_state; a single process's file loaded by 3."""
    rc, out = run_job(2, "save", tmp_path)
    assert rc == 0 and "OK save N=2" in out, out[-3000:]
    rc, out = run_job(3, "load", tmp_path)
    assert rc == 0 and "OK load N=3" in out, out[-3000:]


def test_killed_process_ends_the_job(tmp_path):
    """A process killed mid-run (SIGKILL) while the others wait in a step:
    MPICH's mpiexec kills the rest, the job ends (non-zero) well within the
    timeout, and the last checkpoint is intact."""
    import numpy as np

    import adamc

    rc, out = run_job(2, "kill", tmp_path)
    assert "SAVED" in out and rc != 0, out[-3000:]
    fresh = adamc.Adam([np.zeros(s, dtype=d, order=o) for s, d, o in [
        ((7, 5), np.float32, "C"), ((13,), np.float32, "C"), ((4, 6), np.float32, "F"),
        ((1,), np.float32, "C"), ((3, 3), np.float64, "C"), ((11,), np.float64, "C")]],
        lr=0.01)
    adamc.load_state(fresh, tmp_path / "ckpt.npz")
    assert fresh.state_dict()["state"][0]["step"] == 2


def test_mlp_example_reaches_single_process_accuracy():
    """examples/train_mlp_mpi.py under mpiexec -n 2 (each process half of
    every batch) against the single-process adamc.Adam on the same batches."""
    pytest.importorskip("sklearn")
    example = Path(__file__).resolve().parents[1] / "examples" / "train_mlp_mpi.py"
    if not example.exists():
        pytest.skip("examples/ is not here (an installed copy of the tests)")
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", str(example),
           "--epochs", "12", "--compare"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the example did not end within {TIMEOUT} s")
    assert proc.returncode == 0, out[-3000:]
    import re

    dist = float(re.search(r"2 processes: test accuracy ([\d.]+)%", out).group(1))
    single = float(re.search(r"1 process \(adamc.Adam\): test accuracy ([\d.]+)%",
                             out).group(1))
    assert dist >= 95.0 and abs(dist - single) <= 1.5, out


def test_failure_after_agreement_aborts_the_job(tmp_path):
    """An error on one process after the processes agreed to step cannot be
    agreed on: that process calls MPI_Abort, and the job ends (non-zero)
    instead of leaving the others in their collective calls."""
    rc, out = run_job(2, "abort", tmp_path)
    assert rc != 0 and "calling MPI_Abort" in out and "MemoryError('injected')" in out, out


def test_one_process_clipped_step_is_adamcs_bitwise():
    """With one process the norm was summed over the shard pieces (ordered by
    group and dtype), not over the gradients in parameter order as
    adamc.Adam sums them: a group mixing dtypes clipped with other bits
    (found by a differential fuzzer against adamc.Adam)."""
    pytest.importorskip("mpi4py")
    script = textwrap.dedent("""
        import numpy as np
        from mpi4py import MPI
        import adamc, adamc.distributed as D
        rng = np.random.default_rng(3)
        ps = [rng.standard_normal(5).astype(np.float32), rng.standard_normal(3),
              rng.standard_normal(5).astype(np.float32)]
        ref = [p.copy() for p in ps]
        opt = D.Adam(ps, lr=0.1, deterministic=True, comm=MPI.COMM_SELF)
        one = adamc.Adam(ref, lr=0.1)
        for _ in range(3):
            gs = [rng.standard_normal(p.size).astype(p.dtype) for p in ps]
            opt.step(gs, max_grad_norm=0.5)
            one.step(gs, max_grad_norm=0.5)
            assert opt.last_step == one.last_step, (opt.last_step, one.last_step)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(ps, ref))
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_env(), timeout=TIMEOUT)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
