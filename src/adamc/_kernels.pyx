# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The shim between adamc's Python classes and its C kernels (csrc/).

Takes buffers, checks them, releases the GIL and calls C.  It never calls
back into the Python layer above it: on a bad input it answers which
parameter or gradient failed (a status of the engine protocol, _spec.py),
and the optimizer (_base.py) raises the message from _validation.py.

Parting from the usual "memoryviews only" shim shape on purpose: a step
checks every gradient (dtype, byte order, shape, memory order, aliasing), and
a typed memoryview acquisition costs far more per array than reading the
ndarray's fields through NumPy's C API, which keeps a 500-tensor step cheap.

Fast checks and the rules they mirror (tests/test_fast_checks.py feeds each
pair the same inputs and checks they agree):

    fast check here                     rule in _validation.py
    ---------------------------------   ------------------------------------
    _plain_real(x, beta=False)          check_real(x, ...)
    _plain_real(x, beta=True)           check_real(x, ..., beta=True)
    _plain_bool(x)                      check_bool(x, ...)
    _plain_choice(x, choices)           check_choice(x, ..., choices)
    _fast_option(h, key, x)             functional_values({key: x}) (the
                                        options it lists; others: full check)
    _plain_buffer(a, writeable)         check_array(a) (+ check_writeable(a))
    _alike(a, ref, any_float)           check_like(a, ref, ..., any_float=...)
    _share_bytes(a, b)                  check_disjoint([a, b], ...)
    Engine._overlaps_written(g)         check_no_overlap(g, ..., spans)
    Engine._param_unchanged(i)          explain_param(..., changed=True)
    first_changed(params, layouts)      explain_param(..., changed=True)
    first_overlap(arrays, spans)        check_no_overlap(a, ..., spans)

A fast check may say no to a valid input (the rule then decides: a Python
int beyond 2**53, a float subclass); it never says yes to an invalid one.
"""

cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.math cimport INFINITY
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

import numbers
import os

import numpy as np

from . import _spec

cnp.import_array()

cdef extern from "csrc/adamc.h" nogil:
    enum:
        ADAMC_F32
        ADAMC_F64
        ADAMC_F16
        ADAMC_BF16
        ADAMC_Q8
        ADAMC_AMSGRAD
        ADAMC_PROBE
        ADAMC_NO_PREFETCH
    ctypedef struct adamc_hyper:
        double lr, beta1, beta2, eps, weight_decay
        int amsgrad, maximize, decoupled_weight_decay, bias_correction, eps_mode
        int stochastic_rounding
        uint64_t seed
        double grad_factor
        int quant_map
    ctypedef struct adamc_scalars:
        int flags
    ctypedef struct adamc_task:
        void *param
        const void *grad
        void *exp_avg
        void *exp_avg_sq
        void *max_exp_avg_sq
        int64_t n
        int64_t offset
        const adamc_scalars *s
        void *master_param
        int dtype
        int grad_dtype
        int state_dtype
        int sr
        uint32_t sr_key
        float *exp_avg_absmax
        float *exp_avg_sq_absmax
        int quant_map
    ctypedef void (*adamc_quantize_fn)(int map, int is_signed, const float *x, uint8_t *c,
                                       float *absmax, int64_t n) noexcept nogil
    ctypedef struct adamc_kernel:
        const char *name
        adamc_quantize_fn quantize
    int64_t adamc_work(int64_t n, int dtype, int state_dtype)
    void adamc_scalars_init(adamc_scalars *s, int64_t step, const adamc_hyper *h)
    uint32_t adamc_sr_key(uint64_t seed, int64_t index, int64_t step)
    double adamc_grad_sumsq(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                            int nthreads)
    void adamc_multi_step(const adamc_kernel *k, const adamc_task *tasks,
                          int64_t ntasks, int nthreads)
    void adamc_split(int64_t total, int nthreads, int tid, int64_t *lo, int64_t *hi)
    int adamc_openmp_enabled()
    void adamc_set_num_threads(int n)
    int adamc_user_num_threads()
    int adamc_resolve_num_threads()
    int adamc_available_cpus()
    int64_t adamc_serial_cutoff()
    void adamc_threads_init()
    int adamc_forked_child()
    int adamc_quant_init()
    ctypedef struct adamc_tune_row:
        int cls, multi, state, ncfg, chosen, steps_seen, samples, rounds, retrials
        int fallbacks, early
        int threads[4]
        int64_t pf[4]
        double median[4]
        double mean[4]
    int adamc_tune_rows(adamc_tune_row *out, int max)
    void adamc_tune_reset()
    int adamc_pool_workers()
    int adamc_tune_serial(int64_t work)
    int adamc_env_int(const char *name, int64_t lo, int64_t hi, int64_t *out)
    ctypedef struct adamc_envs:
        int has_cutoff, has_pf, has_chunk, tune
        int64_t cutoff, pf, chunk
    void adamc_env_read(adamc_envs *v)
    void adamc_pool_hold(int on)
    void adamc_pool_stall(int us)
    int64_t adamc_default_chunk(int64_t total)
    const adamc_kernel *adamc_kernel_baseline()
    int adamc_variants(const adamc_kernel **out, int *cpu_ok, int max)


# --------------------------------------------------------------------------
# kernel variants: chosen once at import (ADAMC_ISA may force a lower one)

adamc_threads_init()
if adamc_quant_init() != 0:  # pragma: no cover (the maps' structure is fixed)
    raise ImportError("adamc: the 8-bit quantization tables do not fit the dynamic maps")

cdef const adamc_kernel *_variants[8]
cdef int _cpu_ok[8]
cdef int _nvariants = adamc_variants(_variants, _cpu_ok, 8)
cdef const adamc_kernel *_kernel = NULL


def variants():
    """(compiled-in variant names, the ones this CPU can run), lowest first."""
    names = [_variants[i].name.decode() for i in range(_nvariants)]
    return names, [names[i] for i in range(_nvariants) if _cpu_ok[i]]


def use_variant(name):
    """Switch the kernel variant (tests use this; users set ADAMC_ISA)."""
    global _kernel
    compiled, runnable = variants()
    if name not in compiled:
        raise ValueError(
            f"unknown kernel variant {name!r}; this build has {', '.join(compiled)}")
    if name not in runnable:
        raise ValueError(
            f"kernel variant {name!r} needs instructions this CPU (or OS) lacks; "
            f"available here: {', '.join(runnable)}")
    _kernel = _variants[compiled.index(name)]


def _select_at_import():
    import os
    forced = os.environ.get("ADAMC_ISA", "").strip().lower()
    if forced:
        try:
            use_variant(forced)
        except ValueError as e:
            raise ImportError(f"ADAMC_ISA={forced!r}: {e}") from None
    else:
        runnable = variants()[1]
        use_variant(runnable[len(runnable) - 1])  # the widest (wraparound is off)


_select_at_import()


def kernel_name():
    """Name of the kernel variant in use."""
    return _kernel.name.decode()


# --------------------------------------------------------------------------
# threads

def set_num_threads(n):
    """Use ``n`` threads for every following step (``None`` restores the default).

    Parameters
    ----------
    n : int or None
        1 to 65536.  Overrides ``ADAMC_NUM_THREADS`` and ``OMP_NUM_THREADS``.
        Steps with less work than the serial cutoff still use one thread.

    Examples
    --------
    >>> import adamc
    >>> adamc.set_num_threads(1); adamc.get_num_threads()
    1
    >>> adamc.set_num_threads(None)
    """
    if n is None:
        adamc_set_num_threads(0)
        return
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int >= 1 or None, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= 65536:
        raise ValueError(f"n must be between 1 and 65536, got {n}; use None for the default")
    adamc_set_num_threads(n)


cdef int _resolve_threads() except -1:
    cdef int n = adamc_resolve_num_threads()
    if n < 1:
        raise ValueError(
            "the environment variable ADAMC_NUM_THREADS must be a positive integer "
            f"(1 to 65536), got {os.environ.get('ADAMC_NUM_THREADS')!r}; "
            "unset it or set it to, for example, 2"
        )
    return n


cdef int _threads_for(int64_t work) except -1:
    """Threads for a step of this much work (adamc_work units).  Resolving
    reads the environment and the affinity mask, so a step below the serial
    cutoff, which runs on one thread anyway, skips it."""
    if work < adamc_serial_cutoff() or adamc_tune_serial(work):
        return 1   # (or the tuner chose one thread for this size)
    return _resolve_threads()


def get_num_threads():
    """The number of threads a large step would use now.

    Resolved at call time: ``set_num_threads``, else ``ADAMC_NUM_THREADS``,
    else ``OMP_NUM_THREADS``, else the CPUs this process may use; the last
    two capped by ``omp_get_max_threads()`` (which threadpoolctl lowers).
    1 in a build without OpenMP and in a child forked after threads ran.
    """
    return _resolve_threads()


def thread_info():
    return {
        "openmp": bool(adamc_openmp_enabled()),
        "available_cpus": adamc_available_cpus(),
        "user_num_threads": adamc_user_num_threads() or None,
        "serial_cutoff": int(adamc_serial_cutoff()),
        "forked_child_serial": bool(adamc_forked_child()),
        "pool_workers": adamc_pool_workers(),
    }


def _config_name(int threads, int64_t pf, int resolved):
    t = ("fixed rule" if threads < 0 else f"all threads ({resolved} now)" if threads
         else "1 thread")
    if pf < 0:   # no range of the step can reach the prefetch threshold
        return t
    p = f"prefetch {pf} B ahead" if pf else "no prefetch"
    return t + ", " + p if threads >= 0 else p


def _why(multi, chosen, early, fallbacks, threads, median, mean, names):
    """Why a decided size class runs what it chose (tuning_info)."""
    ks = range(len(names))
    if multi:
        best1 = min((k for k in ks if not threads[k]), key=lambda k: median[k])
        if threads[chosen]:
            return (f"{median[best1] / median[chosen]:.3f}x faster than {names[best1]} "
                    "in median, and faster in mean (the margin for all threads: 5%)")
        if early:
            return ("one thread: two steps on all threads took over 2x one thread's time "
                    "(a busy host, or a step too short to share); the trial stopped early")
        why = "one thread, the configuration to beat"
        many = [k for k in ks if threads[k] and median[k] > 0]
        if many:
            bn = min(many, key=lambda k: median[k])
            why += (f": all threads were {median[chosen] / median[bn]:.3f}x as fast in "
                    f"median, {mean[chosen] / mean[bn]:.3f}x in mean (5% needed in both, "
                    "and no stalled step)")
        if fallbacks:
            why += f"; fell back from all threads {fallbacks}x on stalled steps"
        return why
    best = min(ks, key=lambda k: median[k])
    if chosen == 0:
        return "the fixed default" + (
            f": {names[best]} was {median[0] / median[best]:.3f}x faster, "
            "within the 2% margin" if best != 0 else ": fastest measured")
    return f"{median[0] / median[chosen]:.3f}x faster than the fixed default ({names[0]})"


def tuning_info():
    """What the tuner (csrc/tune.c) chose for each size class stepped so far,
    and why: the configurations trialed and their median step times."""
    cdef adamc_tune_row rows[128]
    cdef int n = adamc_tune_rows(rows, 128), k, i
    cdef int64_t v
    resolved = adamc_resolve_num_threads()
    out = []
    for i in range(n):
        r = rows[i]
        names = [_config_name(r.threads[k], r.pf[k], resolved) for k in range(r.ncfg)]
        row = {"work": (1 << r.cls, 1 << (r.cls + 1)),
               "configs": names,
               "steps_seen": r.steps_seen, "retrials": r.retrials,
               "fallbacks": r.fallbacks, "trial_running": r.state != 2}
        if r.state == 2 and r.ncfg > 1:
            row["chosen"] = names[r.chosen]
            row["median_seconds"] = {names[k]: r.median[k] for k in range(r.ncfg)}
            row["mean_seconds"] = {names[k]: r.mean[k] for k in range(r.ncfg)}
            row["why"] = _why(r.multi, r.chosen, r.early, r.fallbacks,
                              [r.threads[k] for k in range(r.ncfg)],
                              [r.median[k] for k in range(r.ncfg)],
                              [r.mean[k] for k in range(r.ncfg)], names)
        else:
            row["chosen"] = names[0]
            row["why"] = (f"the fixed default while the trial runs "
                          f"({r.samples} of {r.rounds * r.ncfg} timed steps)")
        out.append(row)
    # what the kernels read (tune.c's adamc_env_read, the one rule), and
    # what is set but not taken (a typo, a value out of range)
    cdef adamc_envs e
    adamc_env_read(&e)
    fixed = {}
    if not e.tune:
        fixed["ADAMC_TUNE"] = 0
    if e.has_cutoff:
        fixed["ADAMC_SERIAL_CUTOFF"] = int(e.cutoff)
    if e.has_pf:
        fixed["ADAMC_PREFETCH"] = int(e.pf)
    if e.has_chunk:
        fixed["ADAMC_CHUNK"] = int(e.chunk)
    if adamc_env_int(b"ADAMC_POOL_SPIN_US", 0, 1000000, &v):   # (pool.c's rule)
        fixed["ADAMC_POOL_SPIN_US"] = int(v)
    rules = {"ADAMC_TUNE": "0 (no trials) or 1",
             "ADAMC_SERIAL_CUTOFF": "an integer >= 0",
             "ADAMC_PREFETCH": "an integer from 0 to 16777216 (bytes)",
             "ADAMC_CHUNK": "an integer >= 64",
             "ADAMC_POOL_SPIN_US": "an integer from 0 to 1000000 (microseconds)"}
    ignored = {}
    for name, rule in rules.items():
        raw = os.environ.get(name)
        if raw is not None and name not in fixed and not (name == "ADAMC_TUNE" and raw == "1"):
            ignored[name] = f"{raw!r} is not {rule}: ignored"
    return {"classes": out, "fixed_by_environment": fixed,
            "ignored_by_environment": ignored}


def tuning_reset():
    """Forget every size class's trial and choice (tests, benchmarks)."""
    adamc_tune_reset()


def pool_hold(bint on):
    """Tests: while on, the pool's woken workers wait before claiming work,
    like workers the OS has not scheduled; steps must finish without them."""
    adamc_pool_hold(on)


def pool_stall(int us):
    """Tests: each worker sleeps ``us`` microseconds after claiming its first
    chunk of a step, as one preempted mid-chunk; 0 stops it."""
    adamc_pool_stall(us)


def default_chunk(int64_t total):
    return adamc_default_chunk(total)


def split(int64_t total, int nthreads, int tid):
    """The [lo, hi) element range thread ``tid`` of ``nthreads`` owns (for tests)."""
    cdef int64_t lo, hi
    if nthreads < 1 or not 0 <= tid < nthreads or total < 0:
        raise ValueError("need total >= 0 and 0 <= tid < nthreads")
    adamc_split(total, nthreads, tid, &lo, &hi)
    return lo, hi


# --------------------------------------------------------------------------
# hyperparameters: the one place the C struct is filled

cdef dict _EPS_MODE_CODE = {m: i for i, m in enumerate(_spec.EPS_MODES)}


cdef dict _QUANT_MAPS = _spec.QUANT_MAPS


cdef int _fill_hyper(adamc_hyper *c, object h) except -1:
    """adamc_hyper from a validated _spec.Hypers (lr a float here)."""
    c.lr = h.lr
    c.beta1 = h.beta1
    c.beta2 = h.beta2
    c.eps = h.eps
    c.weight_decay = h.weight_decay
    c.amsgrad = h.amsgrad
    c.maximize = h.maximize
    c.decoupled_weight_decay = h.decoupled_weight_decay
    c.bias_correction = h.bias_correction
    c.eps_mode = _EPS_MODE_CODE[h.eps_mode]
    c.stochastic_rounding = h.stochastic_rounding
    c.seed = h.seed if h.seed is not None else 0
    c.grad_factor = 1.0
    c.quant_map = _QUANT_MAPS[h.quant_map]
    return 0


cdef extern from "numpy/ndarraytypes.h":
    enum:
        NPY_HALF
        NPY_USERDEF

cdef int _bf16_typenum = -2   # ml_dtypes' bfloat16 (a user type): looked up once seen


cdef int _lookup_bf16() except -2:
    """bfloat16's type number, once ml_dtypes has been imported (by whoever
    made a bfloat16 array); -1 until then."""
    global _bf16_typenum
    import sys
    ml = sys.modules.get("ml_dtypes")
    if ml is None:
        return -1
    _bf16_typenum = np.dtype(ml.bfloat16).num
    return _bf16_typenum


cdef inline int _dtype_code(int tn) except -2:
    """The storage code of a type number, or -1 for a type adamc does not step."""
    if tn == cnp.NPY_FLOAT:
        return ADAMC_F32
    if tn == cnp.NPY_DOUBLE:
        return ADAMC_F64
    if tn == NPY_HALF:
        return ADAMC_F16
    if tn >= NPY_USERDEF and (tn == _bf16_typenum
                                  or (_bf16_typenum < 0 and tn == _lookup_bf16())):
        return ADAMC_BF16
    return -1


cdef inline int _state_code(int tn) except -2:
    """The storage code of a state array's type number (uint8: 8-bit codes)."""
    return ADAMC_Q8 if tn == cnp.NPY_UBYTE else _dtype_code(tn)


cdef inline bint _is_float_type(int tn) except -1:
    return _dtype_code(tn) >= 0


# --------------------------------------------------------------------------
# fast checks (the table in the module docstring pairs each with its rule)

cdef inline bint _plain_real(object x, bint beta, double *out):
    """x is a float or int (not bool) that check_real accepts: finite and
    >= 0, or in [0, 1) with beta."""
    cdef double d
    if type(x) is float:
        d = <double>x
    elif type(x) is int:
        if not -(1 << 53) <= x <= (1 << 53):
            return False   # large ints: check_real's own conversion rules
        d = <double>x
    else:
        return False
    if not (d >= 0.0 and (d < 1.0 if beta else d < INFINITY)):
        return False       # NaN, negative, infinite or out of range
    out[0] = d
    return True


cdef inline bint _plain_bool(object x):
    return x is True or x is False


cdef inline bint _plain_choice(object x, tuple choices):
    return type(x) is str and x in choices


cdef inline bint _plain_buffer(object a, bint writeable):
    """a passes check_array (and check_writeable if asked)."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a
    return (_is_float_type(cnp.PyArray_TYPE(x)) and cnp.PyArray_ISNOTSWAPPED(x)
            and cnp.PyArray_ISALIGNED(x)
            and (cnp.PyArray_IS_C_CONTIGUOUS(x) or cnp.PyArray_IS_F_CONTIGUOUS(x))
            and (not writeable or cnp.PyArray_ISWRITEABLE(x)))


cdef inline bint _same_shape(cnp.ndarray a, int ndim, const cnp.npy_intp *dims):
    cdef int k
    cdef cnp.npy_intp *d
    if cnp.PyArray_NDIM(a) != ndim:
        return False
    d = cnp.PyArray_DIMS(a)
    for k in range(ndim):
        if d[k] != dims[k]:
            return False
    return True


cdef inline bint _alike(cnp.ndarray a, cnp.ndarray ref, bint any_float):
    """check_like: same type (any float type with any_float), shape, and
    memory order when size > 1."""
    if not any_float and cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(ref):
        return False
    if not _same_shape(a, cnp.PyArray_NDIM(ref), cnp.PyArray_DIMS(ref)):
        return False
    return (cnp.PyArray_SIZE(a) <= 1
            or cnp.PyArray_IS_C_CONTIGUOUS(a) == cnp.PyArray_IS_C_CONTIGUOUS(ref))


cdef inline bint _share_bytes(cnp.ndarray a, cnp.ndarray b):
    cdef uintptr_t alo = <uintptr_t>cnp.PyArray_DATA(a)
    cdef uintptr_t blo = <uintptr_t>cnp.PyArray_DATA(b)
    cdef uintptr_t an = <uintptr_t>cnp.PyArray_NBYTES(a)
    cdef uintptr_t bn = <uintptr_t>cnp.PyArray_NBYTES(b)
    return an != 0 and bn != 0 and alo < blo + bn and blo < alo + an


def param_layouts(list params):
    """What first_changed compares, per parameter: its address, type,
    shape and memory order now (Engine._param_unchanged's record)."""
    cdef cnp.ndarray p
    out = []
    for p in params:
        out.append((<uintptr_t>cnp.PyArray_DATA(p), cnp.PyArray_TYPE(p), (<object>p).shape,
                    bool(cnp.PyArray_IS_C_CONTIGUOUS(p)), bool(cnp.PyArray_IS_F_CONTIGUOUS(p))))
    return out


def first_changed(list params, list layouts):
    """The index of the first parameter that is read-only, byte-swapped or
    no longer what param_layouts recorded (memory moved by a resize, or
    shape, dtype or order changed in place): Engine._param_unchanged's
    test, for a layer that steps views of the parameters; -1 if none."""
    cdef Py_ssize_t i
    cdef cnp.ndarray p
    cdef tuple t
    for i in range(len(params)):
        p = params[i]
        t = layouts[i]
        if not (cnp.PyArray_ISWRITEABLE(p) and cnp.PyArray_ISNOTSWAPPED(p)
                and <uintptr_t>cnp.PyArray_DATA(p) == <uintptr_t>t[0]
                and cnp.PyArray_TYPE(p) == <int>t[1]
                and bool(cnp.PyArray_IS_C_CONTIGUOUS(p)) is t[3]
                and bool(cnp.PyArray_IS_F_CONTIGUOUS(p)) is t[4]
                and _shape_is(p, t[2])):
            return i
    return -1


def first_overlap(list arrays, list spans):
    """The index of the first ndarray of ``arrays`` (others are skipped)
    that shares memory with one of the sorted, disjoint ``spans`` (start,
    end, label), as _validation.check_no_overlap finds it (the engine's
    _overlaps_written, for a layer that steps views); -1 if none."""
    cdef Py_ssize_t i, a, b, mid, n = len(spans)
    cdef uintptr_t lo, hi
    cdef cnp.ndarray g
    for i in range(len(arrays)):
        if not cnp.PyArray_Check(arrays[i]):
            continue
        g = arrays[i]
        if not cnp.PyArray_NBYTES(g):
            continue
        lo = <uintptr_t>cnp.PyArray_DATA(g)
        hi = lo + <uintptr_t>cnp.PyArray_NBYTES(g)
        a, b = -1, n
        while b - a > 1:   # the last span starting before hi
            mid = a + (b - a) // 2
            if <uintptr_t>spans[mid][0] < hi:
                a = mid
            else:
                b = mid
        if a >= 0 and <uintptr_t>spans[a][1] > lo:
            return i
    return -1


cdef inline bint _shape_is(cnp.ndarray a, tuple shape):
    cdef Py_ssize_t k
    if cnp.PyArray_NDIM(a) != len(shape):
        return False
    for k in range(len(shape)):
        if cnp.PyArray_DIMS(a)[k] != <cnp.npy_intp>shape[k]:
            return False
    return True


def fast_checks():
    """The fast checks as Python callables, for tests/test_fast_checks.py:
    name -> f(*args) -> bool."""
    def real(x, beta):
        cdef double d = 0.0
        return _plain_real(x, beta, &d)
    return {
        "real": real,
        "bool": lambda x: _plain_bool(x),
        "choice": lambda x, choices: _plain_choice(x, tuple(choices)),
        "buffer": lambda a, writeable: _plain_buffer(a, writeable),
        "alike": lambda a, ref, any_float: _alike(a, ref, any_float),
        "share_bytes": lambda a, b: _share_bytes(a, b),
    }


# --------------------------------------------------------------------------
# one buffer: adamc.adam_step

cdef int _run_one(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                  cnp.ndarray exp_avg_sq, object max_exp_avg_sq, int64_t step,
                  const adamc_hyper *h, object master=None, object am=None,
                  object av=None) except -1:
    cdef adamc_scalars s
    cdef adamc_task t
    cdef int nthreads
    adamc_scalars_init(&s, step, h)
    t.param = cnp.PyArray_DATA(param)
    t.grad = cnp.PyArray_DATA(grad)
    t.exp_avg = cnp.PyArray_DATA(exp_avg)
    t.exp_avg_sq = cnp.PyArray_DATA(exp_avg_sq)
    t.max_exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray>max_exp_avg_sq) if h.amsgrad else NULL
    t.n = cnp.PyArray_SIZE(param)
    t.offset = 0
    t.s = &s
    t.dtype = _dtype_code(cnp.PyArray_TYPE(param))
    t.grad_dtype = _dtype_code(cnp.PyArray_TYPE(grad))
    t.state_dtype = _state_code(cnp.PyArray_TYPE(exp_avg))
    t.master_param = NULL if master is None else cnp.PyArray_DATA(<cnp.ndarray>master)
    t.exp_avg_absmax = NULL if am is None else <float *>cnp.PyArray_DATA(<cnp.ndarray>am)
    t.exp_avg_sq_absmax = NULL if av is None else <float *>cnp.PyArray_DATA(<cnp.ndarray>av)
    t.quant_map = h.quant_map
    t.sr = h.stochastic_rounding
    if t.sr:
        t.sr_key = adamc_sr_key(h.seed, 0, step)
    nthreads = _threads_for(adamc_work(t.n, t.dtype, t.state_dtype))
    with nogil:
        adamc_multi_step(_kernel, &t, 1, nthreads)
    return 0


def quantize_blockwise(x, bint signed, int map_version=1):
    """The selected variant's 8-bit codes and scales of a contiguous float32
    array, by the code its step uses (tests: against
    reference.quantize_blockwise)."""
    cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.float32).ravel()
    cdef cnp.ndarray c = np.empty(a.size, dtype=np.uint8)
    cdef cnp.ndarray am = np.empty((a.size + 255) // 256, dtype=np.float32)
    _kernel.quantize(map_version, signed, <const float *>cnp.PyArray_DATA(a),
                     <uint8_t *>cnp.PyArray_DATA(c), <float *>cnp.PyArray_DATA(am), a.size)
    return c, am


def step_buffers(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hypers,
                 master_param=None, exp_avg_absmax=None, exp_avg_sq_absmax=None):
    """One in-place step of one parameter's buffers, already validated
    (_validation.check_functional): ``hypers`` a _spec.Hypers, lr a float;
    uint8 moments with their scales (8-bit state)."""
    cdef adamc_hyper h
    _fill_hyper(&h, hypers)
    _run_one(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, &h, master_param,
             exp_avg_absmax, exp_avg_sq_absmax)


cdef int64_t _MAX_STEP = _spec.MAX_STEP
cdef adamc_hyper _FUNCTIONAL_DEFAULTS   # filled once, from the spec's defaults
_fill_hyper(&_FUNCTIONAL_DEFAULTS, _spec.Hypers(*[
    d for o in _spec.OPTIONS
    for d in (o.default if o.kind == "betas" else (o.default_for("adam_step"),))]))
cdef tuple _EPS_MODES = _spec.EPS_MODES


cdef bint _fast_option(adamc_hyper *h, object key, object x):
    """Set one keyword of adam_step if it is an option with a plain value
    (the fast checks); False for anything else: a synonym, an unknown
    keyword, any other value or an option not listed here (valid or not,
    the full check decides)."""
    cdef double d
    if key == "lr":
        return _plain_real(x, False, &h.lr)
    if key == "beta1":
        return _plain_real(x, True, &h.beta1)
    if key == "beta2":
        return _plain_real(x, True, &h.beta2)
    if key == "eps":
        return _plain_real(x, False, &h.eps)
    if key == "weight_decay":
        return _plain_real(x, False, &h.weight_decay)
    if key == "eps_mode":
        if not _plain_choice(x, _EPS_MODES):
            return False
        h.eps_mode = _EPS_MODE_CODE[x]
        return True
    if key == "seed":
        if type(x) is not int or not 0 <= x < 2**64:
            return False
        h.seed = x
        return True
    if not _plain_bool(x):
        return False
    if key == "stochastic_rounding":
        h.stochastic_rounding = x is True
    elif key == "amsgrad":
        h.amsgrad = x is True
    elif key == "maximize":
        h.maximize = x is True
    elif key == "decoupled_weight_decay":
        h.decoupled_weight_decay = x is True
    elif key == "bias_correction":
        h.bias_correction = x is True
    else:
        return False
    return True


def try_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, dict options):
    """adamc.adam_step for the common case, recognised with the fast checks:
    Python floats, ints, bools and strings; float32/float64 arrays that pass
    every check.  Returns False (nothing done) for anything else, valid or
    not: the caller then validates (_validation.check_functional) and calls
    step_buffers."""
    cdef Py_ssize_t i, j, nb
    cdef adamc_hyper h = _FUNCTIONAL_DEFAULTS
    if not (type(step) is int and 1 <= step <= _MAX_STEP):
        return False
    for key, x in options.items():
        if not _fast_option(&h, key, x):
            return False
    if h.stochastic_rounding:
        return False       # (whether there is anything to round: the full check)
    if not (_plain_buffer(param, True)
            and (cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT
                 or cnp.PyArray_TYPE(param) == cnp.NPY_DOUBLE)
            and _plain_buffer(exp_avg, True)
            and _plain_buffer(exp_avg_sq, True) and _plain_buffer(grad, False)
            and (not h.amsgrad or _plain_buffer(max_exp_avg_sq, True))):
        return False
    # like param (grad: any float dtype), and no two sharing a byte (grad is
    # only read, but the step writes every other buffer)
    bufs = ((param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad) if h.amsgrad
            else (param, exp_avg, exp_avg_sq, grad))
    nb = len(bufs)
    for i in range(1, nb):
        if not _alike(<cnp.ndarray>bufs[i], <cnp.ndarray>param, i == nb - 1):
            return False
        for j in range(i):
            if _share_bytes(<cnp.ndarray>bufs[i], <cnp.ndarray>bufs[j]):
                return False
    _run_one(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, &h)
    return True


def grad_sumsq(list grads):
    """The sum of squares of every element of ``grads`` (validated arrays of
    any float dtype adamc takes), in norm.c's fixed order."""
    cdef Py_ssize_t i, k = len(grads)
    cdef adamc_task *tasks = <adamc_task *>malloc(max(k, 1) * sizeof(adamc_task))
    cdef int64_t offset = 0
    cdef int nthreads
    cdef double s
    if tasks == NULL:
        raise MemoryError()
    try:
        for i in range(k):
            g = <cnp.ndarray>grads[i]
            tasks[i].grad = cnp.PyArray_DATA(g)
            tasks[i].grad_dtype = _dtype_code(cnp.PyArray_TYPE(g))
            tasks[i].n = cnp.PyArray_SIZE(g)
            tasks[i].offset = offset
            offset += tasks[i].n
        nthreads = _threads_for(offset)
        with nogil:
            s = adamc_grad_sumsq(_kernel, tasks, k, nthreads)
    finally:
        free(tasks)
    return s


def probe_buffers(list quads, bint prefetch=True):
    """Roofline probe over [(p, g, m, v), ...]: exactly Adam's memory traffic
    (read 4, write 3) with one add per array, through the same multi-tensor
    driver, threads and loop as a step; prefetch=False leaves out the
    loop's software prefetch.  The arrays must be contiguous and alike
    (benchmarks only: not validated)."""
    cdef Py_ssize_t i, k = len(quads)
    cdef adamc_scalars s
    cdef adamc_task *tasks = <adamc_task *>malloc(max(k, 1) * sizeof(adamc_task))
    cdef int64_t offset = 0, work = 0
    cdef int nthreads
    if tasks == NULL:
        raise MemoryError()
    s.flags = ADAMC_PROBE if prefetch else ADAMC_PROBE | ADAMC_NO_PREFETCH
    try:
        for i in range(k):
            p, g, m, v = quads[i]
            tasks[i].param = cnp.PyArray_DATA(<cnp.ndarray>p)
            tasks[i].grad = cnp.PyArray_DATA(<cnp.ndarray>g)
            tasks[i].exp_avg = cnp.PyArray_DATA(<cnp.ndarray>m)
            tasks[i].exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray>v)
            tasks[i].max_exp_avg_sq = NULL
            tasks[i].n = cnp.PyArray_SIZE(<cnp.ndarray>p)
            tasks[i].offset = offset
            tasks[i].s = &s
            tasks[i].dtype = _dtype_code(cnp.PyArray_TYPE(<cnp.ndarray>p))
            tasks[i].grad_dtype = tasks[i].dtype
            tasks[i].state_dtype = tasks[i].dtype
            tasks[i].master_param = NULL
            tasks[i].exp_avg_absmax = NULL
            tasks[i].exp_avg_sq_absmax = NULL
            tasks[i].sr = 0
            offset += tasks[i].n
            work += adamc_work(tasks[i].n, tasks[i].dtype, tasks[i].state_dtype)
        nthreads = _threads_for(work)
        with nogil:
            adamc_multi_step(_kernel, tasks, k, nthreads)
    finally:
        free(tasks)


# --------------------------------------------------------------------------
# the optimizer's engine (the protocol: _spec.py; its driver: _base.py)

cdef int OK = _spec.OK, NEED_GROUPS = _spec.NEED_GROUPS, BAD_PARAM = _spec.BAD_PARAM
cdef int BAD_GRAD = _spec.BAD_GRAD, NEED_LR = _spec.NEED_LR, NEED_STATE = _spec.NEED_STATE
cdef int GRADS_LIST = _spec.GRADS_LIST, MEASURED = _spec.MEASURED
cdef tuple _GROUP_KEYS = tuple(o.name for o in _spec.OPTIONS) + tuple(_spec.SYNONYMS)
cdef Py_ssize_t _NKEYS = len(_GROUP_KEYS)
cdef object _MISSING = object()
cdef Py_ssize_t _NBUF = len(_spec.SLOTS) + 1   # buffers a parameter's step writes


cdef inline object _key_of(object value):
    """What a step compares a group's value with: the object itself (by
    identity), or for a list, which can change in place, its items."""
    return tuple(value) if type(value) is list else value


cdef struct Plan:
    # one parameter, as it was when the engine was built
    void *pdata
    int64_t size
    int ptype
    int ndim
    Py_ssize_t dims          # offset of its shape in Engine.dims
    bint c_order
    int group
    # its state buffers (NULL: none yet)
    void *m
    void *v
    void *x
    void *mp                 # master_param
    float *am                # exp_avg_absmax (8-bit state)
    float *av                # exp_avg_sq_absmax
    int sdtype               # the moments' storage code
    bint need_x, need_mp     # amsgrad's maximum, master weights (set_groups)
    int dtype                # its ADAMC_F32/F64 code
    # this step
    bint active
    const void *gdata        # its gradient's data and dtype code
    int gtype


cdef struct GroupPlan:
    adamc_hyper h
    bint lr_is_callable


@cython.final
cdef class Engine:
    """The compiled engine: a per-parameter plan of pointers and metadata,
    cached when the engine is built, so that a step reads each gradient's
    header and calls C once.  Owns the step counters and the state buffers
    (it holds references to every array it points into)."""

    cdef Py_ssize_t n, ngroups, nspans
    cdef list params, state, group_lists, group_keys, group_lr
    cdef object _steps
    cdef int64_t *steps
    cdef dict lrs
    cdef list wanted
    cdef readonly Py_ssize_t bad_index
    cdef readonly double sumsq
    cdef object measured     # the grads list a measure=True call checked
    cdef bint any_schedule
    # one block, allocated in __cinit__ and freed in __dealloc__:
    cdef void *block
    cdef Plan *plan
    cdef GroupPlan *gplan
    cdef adamc_task *tasks
    cdef adamc_scalars *scal
    cdef cnp.npy_intp *dims
    cdef uintptr_t *span_lo
    cdef uintptr_t *span_hi

    def __cinit__(self, list params, list group_of):
        cdef Py_ssize_t i, k, n = len(params), nd = 0, size
        cdef cnp.ndarray p
        cdef char *at
        for i in range(n):
            nd += cnp.PyArray_NDIM(<cnp.ndarray>params[i])
        self.ngroups = max(group_of) + 1 if n else 0
        size = (n * (sizeof(Plan) + sizeof(adamc_task) + sizeof(adamc_scalars)
                     + 2 * _NBUF * sizeof(uintptr_t))
                + self.ngroups * sizeof(GroupPlan) + nd * sizeof(cnp.npy_intp) + 64)
        self.block = malloc(size)
        if self.block == NULL:
            raise MemoryError()
        memset(self.block, 0, size)
        at = <char *>self.block
        self.plan = <Plan *>at; at += n * sizeof(Plan)
        self.tasks = <adamc_task *>at; at += n * sizeof(adamc_task)
        self.scal = <adamc_scalars *>at; at += n * sizeof(adamc_scalars)
        self.span_lo = <uintptr_t *>at; at += _NBUF * n * sizeof(uintptr_t)
        self.span_hi = <uintptr_t *>at; at += _NBUF * n * sizeof(uintptr_t)
        self.gplan = <GroupPlan *>at; at += self.ngroups * sizeof(GroupPlan)
        self.dims = <cnp.npy_intp *>at
        self.n = n
        self.params = list(params)
        self.state = [None] * n
        nd = 0
        for i in range(n):
            p = self.params[i]
            self.plan[i].pdata = cnp.PyArray_DATA(p)
            self.plan[i].size = cnp.PyArray_SIZE(p)
            self.plan[i].ptype = cnp.PyArray_TYPE(p)
            self.plan[i].dtype = _dtype_code(self.plan[i].ptype)
            self.plan[i].ndim = cnp.PyArray_NDIM(p)
            self.plan[i].dims = nd
            for k in range(self.plan[i].ndim):
                self.dims[nd + k] = cnp.PyArray_DIMS(p)[k]
            nd += self.plan[i].ndim
            self.plan[i].c_order = cnp.PyArray_IS_C_CONTIGUOUS(p)
            self.plan[i].group = group_of[i]
        self.group_lists = None     # set_groups fills these
        self.group_keys = None
        self.group_lr = [None] * self.ngroups
        self._steps = np.zeros(n, dtype=np.int64)
        self.steps = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self._steps)
        self.lrs = {}
        self.wanted = []
        self.bad_index = -1
        self._index_spans()

    def __dealloc__(self):
        free(self.block)

    # -- what the optimizer reads and sets --------------------------------

    @property
    def steps(self):
        """The step count of each parameter (a read-only view)."""
        v = self._steps.view()
        v.flags.writeable = False
        return v

    def set_steps(self, steps):
        """Replace every step count (validated int64 values)."""
        a = np.array(steps, dtype=np.int64)
        if a.shape != (self.n,):
            raise ValueError("steps: one count per parameter")
        self._steps = a
        self.steps = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>a)

    def get_state(self, Py_ssize_t i):
        """Parameter i's state: {slot: array}, or None before its first step."""
        return self.state[i]

    def set_states(self, dict states):
        """Replace the state of the parameters in ``states`` (index -> {slot:
        array} or None), arrays already validated: like the parameter,
        contiguous, writeable, disjoint."""
        cdef Py_ssize_t i
        for i, st in states.items():
            self.state[i] = dict(st) if st else None
            m, v, x = (st or {}).get("exp_avg"), (st or {}).get("exp_avg_sq"), \
                (st or {}).get("max_exp_avg_sq")
            mp = (st or {}).get("master_param")
            am, av = (st or {}).get("exp_avg_absmax"), (st or {}).get("exp_avg_sq_absmax")
            self.plan[i].mp = cnp.PyArray_DATA(<cnp.ndarray>mp) if mp is not None else NULL
            self.plan[i].am = <float *>cnp.PyArray_DATA(<cnp.ndarray>am) if am is not None else NULL
            self.plan[i].av = <float *>cnp.PyArray_DATA(<cnp.ndarray>av) if av is not None else NULL
            self.plan[i].sdtype = (_state_code(cnp.PyArray_TYPE(<cnp.ndarray>m))
                                   if m is not None else self.plan[i].dtype)
            self.plan[i].m = cnp.PyArray_DATA(<cnp.ndarray>m) if m is not None else NULL
            self.plan[i].v = cnp.PyArray_DATA(<cnp.ndarray>v) if v is not None else NULL
            self.plan[i].x = cnp.PyArray_DATA(<cnp.ndarray>x) if x is not None else NULL
        self._index_spans()

    def set_groups(self, list groups, list hypers, list slots):
        """Take each group's validated Hypers and each parameter's slots (the
        names it needs: _spec.slots_for), and remember the group objects, so
        a step can tell by identity that nothing changed."""
        cdef Py_ssize_t gi, i
        cdef GroupPlan *gp
        for i in range(self.n):
            self.plan[i].need_x = "max_exp_avg_sq" in slots[i]
            self.plan[i].need_mp = "master_param" in slots[i]
        # a group's lr may be another schedule now: its values go (the other
        # groups' stay, or a schedule editing its group would be asked forever)
        self.lrs = {(gi, t): v for (gi, t), v in self.lrs.items()
                    if gi < self.ngroups and gi < len(hypers)
                    and self.group_lr[gi] is hypers[gi].lr}
        self.any_schedule = False
        for gi in range(self.ngroups):
            h = hypers[gi]
            gp = &self.gplan[gi]
            gp.lr_is_callable = not isinstance(h.lr, float)
            self.any_schedule = self.any_schedule or gp.lr_is_callable
            self.group_lr[gi] = h.lr
            _fill_hyper(&gp.h, h._replace(lr=0.0) if gp.lr_is_callable else h)
        self.group_lists = [g["params"] for g in groups]
        self.group_keys = [tuple([_key_of(g.get(k, _MISSING)) for k in _GROUP_KEYS])
                           for g in groups]

    def wanted_lrs(self):
        """The (group, timestep) pairs whose scheduled lr this step needs."""
        return list(self.wanted)

    def set_lrs(self, dict lrs):
        """Validated scheduled learning rates: (group, timestep) -> float."""
        self.lrs.update(lrs)

    def forget_lrs(self):
        """After a skipped fused step: the next step calls the schedules again."""
        self.lrs = {}

    def stateless(self):
        """The parameters about to step without all the state they need."""
        return [i for i in range(self.n) if self.plan[i].active and self._needs_state(i)]

    # -- internals --------------------------------------------------------

    cdef inline bint _needs_state(self, Py_ssize_t i):
        cdef Plan *q = &self.plan[i]
        return (q.m == NULL or (q.need_x and q.x == NULL) or (q.need_mp and q.mp == NULL)
                or (q.sdtype == ADAMC_Q8 and (q.am == NULL or q.av == NULL)))

    cdef _index_spans(self):
        """The sorted spans of every buffer a step writes."""
        cdef Py_ssize_t i
        cdef cnp.ndarray a
        spans = []
        for i in range(self.n):
            for b in [self.params[i]] + list((self.state[i] or {}).values()):
                a = b
                if cnp.PyArray_NBYTES(a):
                    lo = <uintptr_t>cnp.PyArray_DATA(a)
                    spans.append((lo, lo + <uintptr_t>cnp.PyArray_NBYTES(a)))
        spans.sort()
        self.nspans = len(spans)
        for i in range(self.nspans):
            self.span_lo[i], self.span_hi[i] = spans[i]

    cdef inline bint _overlaps_written(self, cnp.ndarray g):
        cdef uintptr_t lo, hi
        cdef Py_ssize_t a = -1, b = self.nspans, mid
        if not cnp.PyArray_NBYTES(g):
            return False
        lo = <uintptr_t>cnp.PyArray_DATA(g)
        hi = lo + <uintptr_t>cnp.PyArray_NBYTES(g)
        while b - a > 1:   # the last span starting before hi
            mid = a + (b - a) // 2
            if self.span_lo[mid] < hi:
                a = mid
            else:
                b = mid
        return a >= 0 and self.span_hi[a] > lo

    cdef inline bint _param_unchanged(self, Py_ssize_t i):
        """Parameter i is still what it was when the engine was built
        (arrays can be reshaped, re-typed or made read-only in place)."""
        cdef cnp.ndarray p = self.params[i]
        cdef Plan *q = &self.plan[i]
        return (cnp.PyArray_DATA(p) == q.pdata and cnp.PyArray_ISWRITEABLE(p)
                and cnp.PyArray_TYPE(p) == q.ptype and cnp.PyArray_ISNOTSWAPPED(p)
                and _same_shape(p, q.ndim, &self.dims[q.dims])
                and (cnp.PyArray_IS_C_CONTIGUOUS(p) if q.c_order
                     else cnp.PyArray_IS_F_CONTIGUOUS(p)))

    cdef inline bint _grad_ok(self, Py_ssize_t i, object g):
        cdef Plan *q = &self.plan[i]
        cdef cnp.ndarray ga
        if not cnp.PyArray_Check(g):
            return False
        ga = <cnp.ndarray>g
        return (_is_float_type(cnp.PyArray_TYPE(ga)) and cnp.PyArray_ISNOTSWAPPED(ga)
                and cnp.PyArray_ISALIGNED(ga)
                and _same_shape(ga, q.ndim, &self.dims[q.dims])
                and (cnp.PyArray_IS_C_CONTIGUOUS(ga) if q.c_order
                     else cnp.PyArray_IS_F_CONTIGUOUS(ga))
                and not self._overlaps_written(ga))

    cdef bint _groups_unchanged(self, object groups):
        """The same group dicts with the same params lists holding the same
        arrays, and the same hyperparameter objects (compared by identity
        through borrowed lookups: no allocation)."""
        cdef Py_ssize_t gi, j, k, start = 0
        cdef list ps
        cdef tuple keys
        cdef PyObject *item
        if self.group_keys is None or type(groups) is not list or len(groups) != self.ngroups:
            return False
        for gi in range(self.ngroups):
            group = groups[gi]
            ps = self.group_lists[gi]
            if type(group) is not dict or group.get("params") is not ps:
                return False
            if start + len(ps) > self.n:
                return False
            for j in range(len(ps)):
                if ps[j] is not self.params[start + j]:
                    return False
            start += len(ps)
            keys = self.group_keys[gi]
            for k in range(_NKEYS):
                item = PyDict_GetItem(group, _GROUP_KEYS[k])
                if item == NULL:
                    if keys[k] is not _MISSING:
                        return False
                elif item != <PyObject *>keys[k] and not (
                        type(<object>item) is list and tuple(<object>item) == keys[k]):
                    return False   # (a list, edited in place, is compared by value)
        return start == self.n

    def step(self, grads, groups, double grad_factor=1.0, bint measure=False):
        """One step of every parameter whose gradient is not None, each
        gradient multiplied by ``grad_factor``; returns a status of the
        engine protocol (_spec.py): OK, or what the optimizer must resolve
        first (nothing has changed then).  With ``measure``, check everything,
        change nothing, and return MEASURED with ``sumsq``, the active
        gradients' sum of squares (norm.c)."""
        cdef Py_ssize_t i
        cdef int64_t ntask, work = 0
        cdef int status, nthreads
        if type(grads) is not list or len(<list>grads) != self.n:
            return GRADS_LIST
        if not self._groups_unchanged(groups):
            return NEED_GROUPS
        # the fused step's second call, right after measuring the same list
        # under the optimizer's lock, need not check each array again
        if grads is not self.measured and not measure:
            # our own references: the caller's list may be edited by another
            # thread while the step runs without the GIL, and an array it
            # drops must stay alive until the step is done (the fused step's
            # list is the optimizer's own already)
            grads = list(<list>grads)
        status = self._check_inputs(grads, grads is self.measured and not measure)
        self.measured = None
        if measure and (status == OK or status == NEED_STATE):
            self.sumsq = self._measure()
            self.measured = grads
            return MEASURED
        if status != OK:
            return status
        ntask = self._fill_tasks(&work, grad_factor)
        nthreads = _threads_for(work)
        if self.lrs:
            self.lrs = {}
        with nogil:
            adamc_multi_step(_kernel, self.tasks, ntask, nthreads)
            for i in range(self.n):
                if self.plan[i].active:
                    self.steps[i] += 1
        return OK

    cdef int _check_inputs(self, list grads, bint checked) except -1:
        """Every parameter and gradient (unless ``checked``), before anything
        changes; then what the optimizer must supply first (schedules'
        values, state)."""
        cdef Py_ssize_t i
        cdef Plan *q
        cdef bint need_state = False
        self.wanted = []
        for i in range(self.n):
            g = grads[i]
            q = &self.plan[i]
            q.active = g is not None
            if not q.active:
                continue
            if not checked and not self._param_unchanged(i):
                self.bad_index = i
                return BAD_PARAM
            if not checked and not self._grad_ok(i, g):
                self.bad_index = i
                return BAD_GRAD
            q.gtype = _dtype_code(cnp.PyArray_TYPE(<cnp.ndarray>g))
            q.gdata = cnp.PyArray_DATA(<cnp.ndarray>g)
            need_state = need_state or self._needs_state(i)
            if self.any_schedule and self.gplan[q.group].lr_is_callable:
                key = (q.group, self.steps[i] + 1)   # each (group, timestep) once
                if key not in self.lrs and key not in self.wanted:
                    self.wanted.append(key)
        if self.wanted:
            return NEED_LR
        return NEED_STATE if need_state else OK

    cdef double _measure(self) except? -1:
        """The active gradients' sum of squares (their checks have passed)."""
        cdef Py_ssize_t i
        cdef int64_t ntask = 0, offset = 0, work = 0
        cdef Plan *q
        cdef double s
        cdef int nthreads
        for i in range(self.n):
            q = &self.plan[i]
            if not q.active:
                continue
            self.tasks[ntask].grad = q.gdata
            self.tasks[ntask].grad_dtype = q.gtype
            self.tasks[ntask].n = q.size
            self.tasks[ntask].offset = offset
            offset += q.size
            work += q.size
            ntask += 1
        nthreads = _threads_for(work)
        with nogil:
            s = adamc_grad_sumsq(_kernel, self.tasks, ntask, nthreads)
        return s

    cdef int64_t _fill_tasks(self, int64_t *work, double grad_factor) except -1:
        """The per-step scalars (once per group and timestep) and one task
        per active parameter; returns the number of tasks."""
        cdef Py_ssize_t i, gi, prev_g = -1
        cdef int64_t t, prev_t = -1, offset = 0, ntask = 0
        cdef Plan *q
        cdef GroupPlan *gp
        cdef adamc_scalars *s = NULL
        cdef adamc_task *task
        cdef adamc_hyper h
        for i in range(self.n):
            q = &self.plan[i]
            if not q.active:
                continue
            gi = q.group
            t = self.steps[i] + 1
            if gi != prev_g or t != prev_t:
                gp = &self.gplan[gi]
                h = gp.h
                h.grad_factor = grad_factor
                if gp.lr_is_callable:
                    h.lr = self.lrs[(gi, t)]
                s = &self.scal[i]
                adamc_scalars_init(s, t, &h)
                prev_g, prev_t = gi, t
            task = &self.tasks[ntask]
            task.s = s
            task.param = q.pdata
            task.grad = q.gdata
            task.exp_avg = q.m
            task.exp_avg_sq = q.v
            task.max_exp_avg_sq = q.x if (s.flags & ADAMC_AMSGRAD) else NULL
            task.n = q.size
            task.offset = offset
            task.dtype = q.dtype
            task.grad_dtype = q.gtype
            task.state_dtype = q.sdtype
            task.master_param = q.mp
            task.exp_avg_absmax = q.am
            task.exp_avg_sq_absmax = q.av
            task.quant_map = h.quant_map
            task.sr = h.stochastic_rounding and (q.dtype >= ADAMC_F16 and q.mp == NULL
                                                 or q.sdtype == ADAMC_F16
                                                 or q.sdtype == ADAMC_BF16)
            if task.sr:
                task.sr_key = adamc_sr_key(h.seed, i, t)
            offset += q.size
            work[0] += adamc_work(q.size, q.dtype, q.sdtype)
            ntask += 1
        return ntask
