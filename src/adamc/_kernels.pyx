# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The shim between adamc's Python classes and its C kernels (csrc/).

Takes buffers, checks them, releases the GIL and calls C.  Parting from the
usual "memoryviews only" shim shape on purpose: one optimizer step checks
every gradient (dtype, byte order, shape, memory order, aliasing) and a
typed memoryview acquisition costs far more per array than reading the
ndarray's fields through NumPy's C API, which is what keeps a 500-tensor
step cheap.  The checks here are fast yes/no tests; every message is
written once, in _validation.py / _base.py, which this module calls to
raise when a test fails.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.math cimport INFINITY
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

from . import _validation as V

cnp.import_array()

cdef extern from "csrc/adamc.h" nogil:
    enum:
        ADAMC_F32
        ADAMC_F64
        ADAMC_AMSGRAD
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
        int dtype
    ctypedef struct adamc_kernel:
        const char *name
    int64_t adamc_work(int64_t n, int dtype)
    void adamc_scalars_init(adamc_scalars *s, int64_t step, double lr, double beta1,
                            double beta2, double eps, double weight_decay,
                            int decoupled, int amsgrad, int maximize,
                            int bias_correction, int eps_inside_sqrt)
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
    const adamc_kernel *adamc_kernel_baseline()
    int adamc_variants(const adamc_kernel **out, int *cpu_ok, int max)
    enum:
        ADAMC_PROBE
        ADAMC_NO_PREFETCH


# --------------------------------------------------------------------------
# kernel variants: chosen once at import (ADAMC_ISA may force a lower one)

adamc_threads_init()

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
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1 or None, got {type(n).__name__}")
    if not 1 <= n <= 65536:
        raise ValueError(f"n must be between 1 and 65536, got {n}; use None for the default")
    adamc_set_num_threads(n)


cdef int _resolve_threads() except -1:
    cdef int n = adamc_resolve_num_threads()
    if n < 1:
        raise ValueError(
            "the environment variable ADAMC_NUM_THREADS must be a positive integer; "
            "unset it or set it to, for example, 2"
        )
    return n


cdef int _threads_for(int64_t work) except -1:
    """Threads for a step of this much work (adamc_work units).  Resolving
    reads the environment and the affinity mask, so a step below the serial
    cutoff, which runs on one thread anyway, skips it."""
    return _resolve_threads() if work >= adamc_serial_cutoff() else 1


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
    }


def split(int64_t total, int nthreads, int tid):
    """The [lo, hi) element range thread ``tid`` of ``nthreads`` owns (for tests)."""
    cdef int64_t lo, hi
    if nthreads < 1 or not 0 <= tid < nthreads or total < 0:
        raise ValueError("need total >= 0 and 0 <= tid < nthreads")
    adamc_split(total, nthreads, tid, &lo, &hi)
    return lo, hi


# --------------------------------------------------------------------------
# one buffer: adamc.adam_step (the Python wrapper has validated everything)

cdef inline int _dtype_code(int typenum):
    return ADAMC_F32 if typenum == cnp.NPY_FLOAT else ADAMC_F64


def step_buffers(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                 cnp.ndarray exp_avg_sq, max_exp_avg_sq, int64_t step, double lr,
                 double beta1, double beta2, double eps, double weight_decay,
                 bint decoupled, bint amsgrad, bint maximize, bint bias_correction,
                 bint eps_inside_sqrt):
    """One in-place step of one parameter's buffers (already validated:
    same dtype, shape and memory order, contiguous, writeable, disjoint)."""
    cdef adamc_scalars s
    cdef adamc_task t
    cdef int nthreads
    adamc_scalars_init(&s, step, lr, beta1, beta2, eps, weight_decay, decoupled,
                       amsgrad, maximize, bias_correction, eps_inside_sqrt)
    t.param = cnp.PyArray_DATA(param)
    t.grad = cnp.PyArray_DATA(grad)
    t.exp_avg = cnp.PyArray_DATA(exp_avg)
    t.exp_avg_sq = cnp.PyArray_DATA(exp_avg_sq)
    t.max_exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray>max_exp_avg_sq) if amsgrad else NULL
    t.n = cnp.PyArray_SIZE(param)
    t.offset = 0
    t.s = &s
    t.dtype = _dtype_code(cnp.PyArray_TYPE(param))
    nthreads = _threads_for(adamc_work(t.n, t.dtype))
    with nogil:
        adamc_multi_step(_kernel, &t, 1, nthreads)


cdef int64_t _MAX_STEP = V.MAX_STEP


cdef inline bint _plain_real(object x, bint beta, double *out):
    """x is a float or int (not bool) that check_real accepts: finite and
    >= 0, or in [0, 1) with beta.  False sends the caller to the full check."""
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


cdef inline bint _plain_buffer(object a, bint writeable):
    """a passes check_array (and check_writeable if asked) with a float32 or
    float64 type number; anything else goes to the full check."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a
    cdef int tn = cnp.PyArray_TYPE(x)
    return ((tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE) and cnp.PyArray_ISNOTSWAPPED(x)
            and cnp.PyArray_ISALIGNED(x)
            and (cnp.PyArray_IS_C_CONTIGUOUS(x) or cnp.PyArray_IS_F_CONTIGUOUS(x))
            and (not writeable or cnp.PyArray_ISWRITEABLE(x)))


cdef inline bint _alike(cnp.ndarray a, cnp.ndarray ref):
    """check_like: same type, shape, and memory order when size > 1."""
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(ref):
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


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
              eps, weight_decay, decoupled_weight_decay, amsgrad, maximize,
              bias_correction, eps_inside_sqrt):
    """adamc.adam_step after its keyword handling.

    The common case (Python floats, ints and bools; float32/float64 arrays
    that pass every check) is recognised here with C-level tests; anything
    else, valid or not, goes through _validation.check_functional, which
    raises the message or returns the same values the fast tests would."""
    cdef double hp[5]
    cdef Py_ssize_t i, j, nb
    cdef tuple bufs
    cdef bint fast = (
        type(step) is int and 1 <= step <= _MAX_STEP
        and _plain_real(lr, False, &hp[0]) and _plain_real(beta1, True, &hp[1])
        and _plain_real(beta2, True, &hp[2]) and _plain_real(eps, False, &hp[3])
        and _plain_real(weight_decay, False, &hp[4])
        and (decoupled_weight_decay is True or decoupled_weight_decay is False)
        and (amsgrad is True or amsgrad is False)
        and (maximize is True or maximize is False)
        and (bias_correction is True or bias_correction is False)
        and (eps_inside_sqrt is True or eps_inside_sqrt is False)
        and _plain_buffer(param, True) and _plain_buffer(exp_avg, True)
        and _plain_buffer(exp_avg_sq, True) and _plain_buffer(grad, False)
        and (amsgrad is False or _plain_buffer(max_exp_avg_sq, True)))
    if fast:
        # like param, and no two sharing a byte (grad is only read, but the
        # step writes every other buffer)
        bufs = ((param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad) if amsgrad is True
                else (param, exp_avg, exp_avg_sq, grad))
        nb = len(bufs)
        for i in range(1, nb):
            if not _alike(<cnp.ndarray>bufs[i], <cnp.ndarray>param):
                fast = False
                break
            for j in range(i):
                if _share_bytes(<cnp.ndarray>bufs[i], <cnp.ndarray>bufs[j]):
                    fast = False
                    break
            if not fast:
                break
    if fast:
        step_buffers(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hp[0],
                     hp[1], hp[2], hp[3], hp[4], decoupled_weight_decay, amsgrad,
                     maximize, bias_correction, eps_inside_sqrt)
        return
    vals = V.check_functional(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
        eps, weight_decay, decoupled_weight_decay, amsgrad, maximize,
        bias_correction, eps_inside_sqrt)
    step_buffers(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *vals)


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
            offset += tasks[i].n
            work += adamc_work(tasks[i].n, tasks[i].dtype)
        nthreads = _threads_for(work)
        with nogil:
            adamc_multi_step(_kernel, tasks, k, nthreads)
    finally:
        free(tasks)


# --------------------------------------------------------------------------
# the optimizer's step

cdef tuple _HYPER_KEYS = tuple(V.HYPER_KEYS)
cdef Py_ssize_t _NKEYS = len(_HYPER_KEYS)


cdef struct GroupVals:
    double lr, beta1, beta2, eps, wd
    bint amsgrad, maximize, decoupled, bias_correction, eps_inside, lr_is_callable


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


cdef class Engine:
    """The per-optimizer plan: pointers and metadata cached at (re)build time,
    so a step only reads each gradient's header and calls C once."""

    cdef object opt
    cdef Py_ssize_t n, ngroups, nbounds
    cdef list params, group_lists, group_keys, group_lr
    cdef adamc_task *tasks
    cdef adamc_scalars *scal
    cdef GroupVals *gvals
    cdef char *active
    cdef char *pc             # parameter is C-contiguous
    cdef int *ptype
    cdef int *pndim
    cdef int *gid
    cdef void **pdata
    cdef void **mdata
    cdef void **vdata
    cdef void **xdata
    cdef cnp.npy_intp *pdims  # MAX_DIMS per parameter
    cdef int64_t *psize
    cdef int64_t *steps
    cdef uintptr_t *blo
    cdef uintptr_t *bhi

    def __cinit__(self):
        self.n = 0

    def __dealloc__(self):
        self._free()

    cdef void _free(self):
        free(self.tasks); free(self.scal); free(self.gvals); free(self.active)
        free(self.pc); free(self.ptype); free(self.pndim); free(self.gid)
        free(self.pdata); free(self.mdata); free(self.vdata); free(self.xdata)
        free(self.pdims); free(self.psize); free(self.blo); free(self.bhi)
        self.tasks = NULL; self.scal = NULL; self.gvals = NULL; self.active = NULL
        self.pc = NULL; self.ptype = NULL; self.pndim = NULL; self.gid = NULL
        self.pdata = NULL; self.mdata = NULL; self.vdata = NULL; self.xdata = NULL
        self.pdims = NULL; self.psize = NULL; self.blo = NULL; self.bhi = NULL

    def __init__(self, opt):
        self.opt = opt
        self.rebuild()

    def rebuild(self):
        """Re-read the optimizer's parameters, groups and state buffers."""
        cdef Py_ssize_t i, n, k
        cdef cnp.ndarray p
        opt = self.opt
        self._free()
        self.params = list(opt._params)
        n = self.n = len(self.params)
        self.ngroups = len(opt.param_groups)
        self.group_lists = [g["params"] for g in opt.param_groups]
        self.group_keys = [None] * self.ngroups
        self.group_lr = [None] * self.ngroups
        self.tasks = <adamc_task *>malloc(max(n, 1) * sizeof(adamc_task))
        self.scal = <adamc_scalars *>malloc(max(n, 1) * sizeof(adamc_scalars))
        self.gvals = <GroupVals *>malloc(max(self.ngroups, 1) * sizeof(GroupVals))
        self.active = <char *>malloc(max(n, 1))
        self.pc = <char *>malloc(max(n, 1))
        self.ptype = <int *>malloc(max(n, 1) * sizeof(int))
        self.pndim = <int *>malloc(max(n, 1) * sizeof(int))
        self.gid = <int *>malloc(max(n, 1) * sizeof(int))
        self.pdata = <void **>malloc(max(n, 1) * sizeof(void *))
        self.mdata = <void **>malloc(max(n, 1) * sizeof(void *))
        self.vdata = <void **>malloc(max(n, 1) * sizeof(void *))
        self.xdata = <void **>malloc(max(n, 1) * sizeof(void *))
        self.pdims = <cnp.npy_intp *>malloc(max(n, 1) * cnp.NPY_MAXDIMS * sizeof(cnp.npy_intp))
        self.psize = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self.blo = <uintptr_t *>malloc(max(4 * n, 1) * sizeof(uintptr_t))
        self.bhi = <uintptr_t *>malloc(max(4 * n, 1) * sizeof(uintptr_t))
        if (not self.tasks or not self.scal or not self.gvals or not self.active
                or not self.pc or not self.ptype or not self.pndim or not self.gid
                or not self.pdata or not self.mdata or not self.vdata or not self.xdata
                or not self.pdims or not self.psize or not self.blo or not self.bhi):
            self._free()
            self.n = 0
            raise MemoryError()
        for i in range(n):
            p = self.params[i]
            self.pdata[i] = cnp.PyArray_DATA(p)
            self.ptype[i] = cnp.PyArray_TYPE(p)
            self.pc[i] = cnp.PyArray_IS_C_CONTIGUOUS(p)
            self.pndim[i] = cnp.PyArray_NDIM(p)
            for k in range(self.pndim[i]):
                self.pdims[i * cnp.NPY_MAXDIMS + k] = cnp.PyArray_DIMS(p)[k]
            self.psize[i] = cnp.PyArray_SIZE(p)
            self.gid[i] = opt._group_of[i]
        self._rebuild_state()

    cdef _rebuild_state(self):
        """Cache state pointers and the sorted spans of every written buffer."""
        cdef Py_ssize_t i
        cdef cnp.ndarray a
        opt = self.opt
        spans = []
        steps = opt._steps
        self.steps = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>steps)
        for i in range(self.n):
            m, v, x = opt._exp_avg[i], opt._exp_avg_sq[i], opt._max_exp_avg_sq[i]
            self.mdata[i] = cnp.PyArray_DATA(<cnp.ndarray>m) if m is not None else NULL
            self.vdata[i] = cnp.PyArray_DATA(<cnp.ndarray>v) if v is not None else NULL
            self.xdata[i] = cnp.PyArray_DATA(<cnp.ndarray>x) if x is not None else NULL
            for b in (self.params[i], m, v, x):
                if b is not None:
                    a = b
                    if cnp.PyArray_NBYTES(a):
                        lo = <uintptr_t>cnp.PyArray_DATA(a)
                        spans.append((lo, lo + <uintptr_t>cnp.PyArray_NBYTES(a)))
        spans.sort()
        self.nbounds = len(spans)
        for i in range(self.nbounds):
            self.blo[i], self.bhi[i] = spans[i]

    cdef bint _overlaps_written(self, cnp.ndarray g):
        cdef uintptr_t lo, hi
        cdef Py_ssize_t a = -1, b = self.nbounds, mid
        if not cnp.PyArray_NBYTES(g):
            return False
        lo = <uintptr_t>cnp.PyArray_DATA(g)
        hi = lo + <uintptr_t>cnp.PyArray_NBYTES(g)
        # last span starting before hi; spans are disjoint and sorted
        while b - a > 1:
            mid = a + (b - a) // 2
            if self.blo[mid] < hi:
                a = mid
            else:
                b = mid
        return a >= 0 and self.bhi[a] > lo

    cdef int _group_values(self, Py_ssize_t gi, object group) except -1:
        """Fill gvals[gi]; full validation only when a value object changed
        (compared by identity through borrowed dict lookups: no allocation)."""
        cdef GroupVals *gv = &self.gvals[gi]
        cdef PyObject *item
        cdef Py_ssize_t k
        cdef tuple old = self.group_keys[gi]
        cdef bint same
        if old is not None and type(group) is dict and type(old[1]) is tuple:
            same = True
            for k in range(_NKEYS):
                item = PyDict_GetItem(group, _HYPER_KEYS[k])
                if item == NULL or item != <PyObject *>old[k]:
                    same = False
                    break
            if same:
                return 0
        vals = V.group_values(group, f"param_groups[{gi}]")
        lr = vals[0]
        gv.lr_is_callable = not isinstance(lr, float)
        self.group_lr[gi] = lr
        gv.lr = 0.0 if gv.lr_is_callable else lr
        gv.beta1, gv.beta2, gv.eps, gv.wd = vals[1], vals[2], vals[3], vals[4]
        (gv.amsgrad, gv.maximize, gv.decoupled, gv.bias_correction,
         gv.eps_inside) = vals[5], vals[6], vals[7], vals[8], vals[9]
        self.group_keys[gi] = tuple([group[key] for key in _HYPER_KEYS]) if type(group) is dict else None
        return 0

    def step(self, grads):
        cdef Py_ssize_t i, j, gi, n = self.n, ntask = 0, start
        cdef int64_t t, offset = 0, prev_t = -1, work = 0
        cdef Py_ssize_t prev_g = -1
        cdef cnp.ndarray p, ga
        cdef list glist, ps
        cdef GroupVals *gv
        cdef adamc_scalars *s = NULL
        cdef adamc_task *task
        cdef bint need_alloc = False, ok
        cdef int nthreads
        cdef double lr
        opt = self.opt

        # grads, in parameter order
        if opt._names is None and (type(grads) is list or type(grads) is tuple) \
                and len(grads) == n:
            glist = list(grads) if type(grads) is tuple else grads
        else:
            glist = opt._grads_list(grads)

        # param_groups: same parameters, hyperparameters (re)validated if replaced
        groups = opt.param_groups  # untyped: a replaced non-list gets _check_structure's error
        ok = type(groups) is list and len(groups) == self.ngroups
        if ok:
            start = 0
            for gi in range(self.ngroups):
                group = groups[gi]
                ps = self.group_lists[gi]
                if type(group) is not dict or group.get("params") is not ps:
                    ok = False
                    break
                if start + len(ps) > n:
                    ok = False
                    break
                for j in range(len(ps)):
                    if ps[j] is not self.params[start + j]:
                        ok = False
                        break
                if not ok:
                    break
                start += len(ps)
            ok = ok and start == n
        if not ok:
            opt._check_structure()  # raises for a real change
            self.group_lists = [g["params"] for g in groups]
            self.group_keys = [None] * self.ngroups
        for gi in range(self.ngroups):
            self._group_values(gi, groups[gi])

        # every parameter and gradient, before anything changes
        for i in range(n):
            g = glist[i]
            if g is None:
                self.active[i] = 0
                continue
            p = self.params[i]
            # the parameter is still what it was at construction (arrays can be
            # reshaped, re-typed or made read-only in place)
            if (cnp.PyArray_DATA(p) != self.pdata[i] or not cnp.PyArray_ISWRITEABLE(p)
                    or cnp.PyArray_TYPE(p) != self.ptype[i] or not cnp.PyArray_ISNOTSWAPPED(p)
                    or not _same_shape(p, self.pndim[i], &self.pdims[i * cnp.NPY_MAXDIMS])
                    or not (cnp.PyArray_IS_C_CONTIGUOUS(p) if self.pc[i]
                            else cnp.PyArray_IS_F_CONTIGUOUS(p))):
                opt._explain_param(i, changed=True)
            if not cnp.PyArray_Check(g):
                opt._explain_grad(i, g)
            ga = <cnp.ndarray>g
            if (cnp.PyArray_TYPE(ga) != self.ptype[i] or not cnp.PyArray_ISNOTSWAPPED(ga)
                    or not cnp.PyArray_ISALIGNED(ga)
                    or not _same_shape(ga, self.pndim[i], &self.pdims[i * cnp.NPY_MAXDIMS])
                    or not (cnp.PyArray_IS_C_CONTIGUOUS(ga) if self.pc[i]
                            else cnp.PyArray_IS_F_CONTIGUOUS(ga))
                    or self._overlaps_written(ga)):
                opt._explain_grad(i, g)
                raise RuntimeError(f"adamc: gradient {i} failed a check (please report)")
            self.active[i] = 1
            gv = &self.gvals[self.gid[i]]
            if self.mdata[i] == NULL or (gv.amsgrad and self.xdata[i] == NULL):
                need_alloc = True

        # scalars (schedules are called here: may raise, nothing changed yet)
        for i in range(n):
            if not self.active[i]:
                continue
            gi = self.gid[i]
            t = self.steps[i] + 1
            if gi != prev_g or t != prev_t:
                gv = &self.gvals[gi]
                if gv.lr_is_callable:
                    lr = V.scheduled_lr(self.group_lr[gi], t, f"param_groups[{gi}]")
                else:
                    lr = gv.lr
                s = &self.scal[i]
                adamc_scalars_init(s, t, lr, gv.beta1, gv.beta2, gv.eps, gv.wd,
                                   gv.decoupled, gv.amsgrad, gv.maximize,
                                   gv.bias_correction, gv.eps_inside)
                prev_g, prev_t = gi, t
            self.tasks[ntask].s = s
            ntask += 1
            work += adamc_work(self.psize[i], _dtype_code(self.ptype[i]))
        nthreads = _threads_for(work)

        if need_alloc:
            active = [i for i in range(n) if self.active[i]]
            ams = {i for i in active if self.gvals[self.gid[i]].amsgrad}
            opt._allocate(active, ams.__contains__)
            self._rebuild_state()

        # tasks
        ntask = 0
        for i in range(n):
            if not self.active[i]:
                continue
            task = &self.tasks[ntask]
            task.param = self.pdata[i]
            task.grad = cnp.PyArray_DATA(<cnp.ndarray>glist[i])
            task.exp_avg = self.mdata[i]
            task.exp_avg_sq = self.vdata[i]
            task.max_exp_avg_sq = self.xdata[i] if (task.s.flags & ADAMC_AMSGRAD) else NULL
            task.n = self.psize[i]
            task.offset = offset
            task.dtype = _dtype_code(self.ptype[i])
            offset += task.n
            ntask += 1
        with nogil:
            adamc_multi_step(_kernel, self.tasks, ntask, nthreads)
            for i in range(n):
                if self.active[i]:
                    self.steps[i] += 1
