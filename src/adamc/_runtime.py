"""Loading the compiled kernels, and run-time facts about them.

OpenMP wait policy.  Parallel steps run on adamc's own worker pool
(csrc/pool.c), whose workers always sleep between steps; OpenMP is still
linked for the thread-count resolver (omp_get_max_threads, which
threadpoolctl lowers) and runs the parallel steps only where the pool is not
built (Windows).  For that case:  GNU libgomp's workers spin for a while after each
parallel region by default.  A training loop alternates adamc steps with
NumPy's BLAS calls, whose own threads then fight the spinning workers for
the cores: a small step after a small matmul can take a hundred times
longer (bench/thread_contention.py re-measures it; docs/performance.md).
Sleeping workers cost a wake-up per step instead, which the serial cutoff
accounts for.  libgomp reads OMP_WAIT_POLICY once, when it is loaded, so
adamc sets PASSIVE for exactly the load of its extension, unless the user
chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT), and restores the
environment afterwards so that nothing else sees the change.  A wheel
bundles its own copy of libgomp, so this always applies there; a source
build sharing the system libgomp with a library loaded earlier keeps
whatever policy that library started it with.
"""

from __future__ import annotations

import os

_USER_POLICY = os.environ.get("OMP_WAIT_POLICY") or (
    "GOMP_SPINCOUNT=" + os.environ["GOMP_SPINCOUNT"] if "GOMP_SPINCOUNT" in os.environ else None
)
_SET_BEFORE = os.environ.get("OMP_WAIT_POLICY")   # (set but empty: restored as it was)
if _USER_POLICY is None:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
try:
    from . import _kernels
finally:
    if _USER_POLICY is None:
        if _SET_BEFORE is None:
            del os.environ["OMP_WAIT_POLICY"]
        else:
            os.environ["OMP_WAIT_POLICY"] = _SET_BEFORE


def cpu_info() -> dict:
    """What adamc runs on here.

    Returns
    -------
    dict
        ``isa``: the kernel variant in use; ``isa_available``: the variants
        this CPU can run (``ADAMC_ISA`` may force any of them);
        ``isa_compiled``: the variants in this build; ``num_threads``: the
        threads a large step uses now; ``user_num_threads``: what
        ``set_num_threads`` set (None: not set); ``openmp``: whether the build has
        OpenMP; ``openmp_wait_policy``: the OpenMP wait policy adamc was
        loaded with (``"passive"`` unless the environment chose otherwise
        when adamc was imported), which governs idle workers only where steps
        run on OpenMP (Windows builds): the pool's workers elsewhere sleep
        unless ``ADAMC_POOL_SPIN_US`` keeps them awake;
        ``available_cpus``: CPUs this process may run on (affinity and
        cgroup quota); ``serial_cutoff``: steps with less work (float32
        elements; float64 count twice) run on one thread;
        ``forked_child_serial``: this process was forked after adamc ran
        threads, so it steps serially; ``pool_workers``: worker threads
        started so far (csrc/pool.c); ``tuning``: what csrc/tune.c chose
        for each size class stepped so far (threads, software prefetch),
        with the median step time of every configuration it trialed and
        why it kept one, and the choices fixed by the environment
        (``ADAMC_TUNE``, ``ADAMC_SERIAL_CUTOFF``, ``ADAMC_PREFETCH``,
        ``ADAMC_CHUNK``).

    Examples
    --------
    >>> import adamc
    >>> info = adamc.cpu_info()
    >>> info["isa"] in info["isa_available"]
    True
    """
    compiled, runnable = _kernels.variants()
    info = {"isa": _kernels.kernel_name(), "isa_available": runnable,
            "isa_compiled": compiled}
    info["num_threads"] = _kernels.get_num_threads()
    info.update(_kernels.thread_info())
    info["tuning"] = _kernels.tuning_info()
    info["openmp_wait_policy"] = (
        "passive" if _USER_POLICY is None else f"from the environment ({_USER_POLICY})")
    return info
