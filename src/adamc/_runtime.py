"""Run-time facts about the compiled kernels: variant, threads, OpenMP."""

from __future__ import annotations

from . import _kernels


def cpu_info():
    """What adamc runs on here.

    Returns
    -------
    dict
        ``isa``: the kernel variant in use; ``num_threads``: the threads a
        large step uses now; ``openmp``: whether the build has OpenMP;
        ``available_cpus``: CPUs this process may run on (affinity and
        cgroup quota); ``serial_cutoff``: steps with fewer elements run on
        one thread.
    """
    info = {"isa": _kernels.kernel_name()}
    info["num_threads"] = _kernels.get_num_threads()
    info.update(_kernels.thread_info())
    return info
