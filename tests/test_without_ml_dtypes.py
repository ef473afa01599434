"""ml_dtypes is optional (issue 12): without it adamc imports, every module
loads, float16 storage and 8-bit state step bit for bit as the reference does
(on the baseline variant, which the reference defines), and a
bfloat16 request is a clear error that changes nothing.  Run in a child
Python in which ``import ml_dtypes`` fails, whether or not it is installed
here (the rest of the suite skips its bfloat16 tests without it)."""

import os
import subprocess
import sys
from pathlib import Path

import adamc

CHILD = r"""
import sys
sys.modules["ml_dtypes"] = None          # import ml_dtypes now raises ImportError
import numpy as np
import adamc, adamc.reference, adamc.interop, adamc.checkpoint, adamc.training
import adamc.distributed
from adamc import reference

rng = np.random.default_rng(0)
def problem(dtype):
    p = rng.standard_normal(3000).astype(dtype)
    gs = [(rng.standard_normal(3000) * 1e-2).astype(dtype) for _ in range(3)]
    return p, gs

cases = [(np.float16, dict(state_dtype="float16", master_weights=False,
                           stochastic_rounding=True, seed=7)),
         (np.float16, dict()),                              # float32 master weights
         (np.float32, dict(state_dtype="int8", min_8bit_size=256)),
         (np.float32, dict(state_dtype="float16"))]
for dtype, kw in cases:
    p, gs = problem(dtype)
    q = p.copy()
    a, b = adamc.Adam([p], lr=1e-2, **kw), reference.Adam([q], lr=1e-2, **kw)
    for g in gs:
        a.step([g]); b.step([g])
    assert p.tobytes() == q.tobytes(), (dtype, kw)
    sa, sb = a.state_dict()["state"][0], b.state_dict()["state"][0]
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes(), (dtype, kw, k)

w = np.ones(300, np.float32)
try:
    adamc.Adam([w], state_dtype="bfloat16")
except ValueError as e:
    print("error:", e)
opt = adamc.Adam([w])
try:
    opt.add_param_group({"params": [np.ones(3, np.float32)], "state_dtype": "bfloat16"})
except ValueError as e:
    print("error:", e)
assert len(opt.param_groups) == 1
opt.step([np.ones(300, np.float32)])
assert (w < 1).all()
print("ok")
"""


def test_adamc_works_without_ml_dtypes():
    env = dict(os.environ)
    here = str(Path(adamc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    env["ADAMC_ISA"] = "baseline"
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "ok"
    assert len(lines) == 3
    for line in lines[:2]:
        assert line.startswith("error: state_dtype='bfloat16' in param_groups[")
        assert "needs ml_dtypes" in line and "pip install ml_dtypes" in line
