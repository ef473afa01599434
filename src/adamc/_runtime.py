"""Run-time facts about the compiled kernels: variant, threads, OpenMP."""

from __future__ import annotations

from . import _kernels


def cpu_info():
    """What adamc runs on here.

    Returns
    -------
    dict
        ``isa``: the kernel variant in use; ``isa_available``: the variants
        this CPU can run (``ADAMC_ISA`` may force any of them);
        ``isa_compiled``: the variants in this build; ``num_threads``: the threads a
        large step uses now; ``openmp``: whether the build has OpenMP;
        ``available_cpus``: CPUs this process may run on (affinity and
        cgroup quota); ``serial_cutoff``: steps with less work (float32
        elements; float64 count twice) run on one thread;
        ``forked_child_serial``: this process was forked after adamc ran
        threads, so it steps serially (OpenMP pools do not survive fork).
    """
    compiled, runnable = _kernels.variants()
    info = {"isa": _kernels.kernel_name(), "isa_available": runnable,
            "isa_compiled": compiled}
    info["num_threads"] = _kernels.get_num_threads()
    info.update(_kernels.thread_info())
    return info
