/*
 * adamc: the C side of the fused Adam/AdamW step.  No Python in here.
 *
 * The Cython shim (_kernels.pyx) fills one adamc_task per parameter and calls
 * adamc_multi_step() once per optimizer step with the GIL released.
 */
#ifndef ADAMC_H
#define ADAMC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Storage types (param, gradient, state).  ADAMC_Q8: 8-bit blockwise state
 * (uint8 codes, one float32 scale per 256 elements: quant.h). */
enum { ADAMC_F32 = 0, ADAMC_F64 = 1, ADAMC_F16 = 2, ADAMC_BF16 = 3, ADAMC_Q8 = 4 };

/* Where epsilon enters the denominator (adamc_hyper.eps_mode). */
enum {
    ADAMC_EPS_MODE_OUTSIDE = 0, /* sqrt(v_hat) + eps: torch, Kingma & Ba Algorithm 1  */
    ADAMC_EPS_MODE_INSIDE = 1,  /* sqrt(v_hat + eps)                                  */
    ADAMC_EPS_MODE_HAT = 2      /* the paper's eps-hat form (Keras, scikit-learn):
                            * lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
                            * p -= lr_t m / (sqrt(v) + eps)                      */
};

/* Option bits of adamc_scalars.flags; each selects a specialised inner loop. */
enum {
    ADAMC_L2 = 1,          /* g += wd * p (coupled, "Adam" weight decay)          */
    ADAMC_AMSGRAD = 2,     /* vmax = max(vmax, v); v_hat uses vmax               */
    ADAMC_EPS_INSIDE = 4,  /* denom = sqrt(v / bc2 + eps)                        */
    ADAMC_LERP_LARGE = 8,  /* 1 - beta1 >= 0.5: the other branch of torch's lerp */
    ADAMC_SCALE = 16,      /* maximize or decoupled decay: g *= sign, p *= decay */
    ADAMC_PROBE = 32,      /* roofline probe: Adam's memory traffic, trivial math */
    ADAMC_NO_PREFETCH = 64 /* with ADAMC_PROBE: the plain loop, no prefetch       */
};

/*
 * The hyperparameters of one param group, as the user gave them (validated by
 * adamc._validation; adamc._spec declares each one).  The Cython shim fills
 * this struct in one place, _kernels.pyx's _fill_hyper.
 */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int amsgrad, maximize, decoupled_weight_decay, bias_correction;
    int eps_mode;       /* ADAMC_EPS_MODE_* */
    int stochastic_rounding;
    uint64_t seed;
    double grad_factor; /* gradients are multiplied by this (unscale, clip); 1: none */
    int quant_map;      /* 8-bit state's map version: ADAMC_QMAP_* (quant.h) */
} adamc_hyper;

/*
 * Everything that is constant over one parameter for one step, computed once
 * per step in double (adamc_scalars_init) and narrowed to the buffer's dtype
 * once per chunk by the kernel.
 */
typedef struct {
    double grad_sign;   /* -1 with maximize, else 1                        */
    double decay;       /* 1 - lr * wd with decoupled weight decay, else 1 */
    double wd;          /* coupled (L2) weight decay, used with ADAMC_L2   */
    double lerp_w;      /* 1 - beta1                                       */
    double beta2;
    double one_minus_beta2;
    double inv_bc2;      /* 1 / (1 - beta2^t) (1 without bias correction)  */
    double inv_bc2_sqrt; /* 1 / sqrt(1 - beta2^t)                           */
    double eps;
    double neg_step;    /* -lr / (1 - beta1^t)                              */
    int flags;
} adamc_scalars;

/* Compute the per-step scalars (Kingma & Ba 2015, Algorithm 1, with torch's
 * arrangement of the bias corrections).  step is t >= 1. */
void adamc_scalars_init(adamc_scalars *s, int64_t step, const adamc_hyper *h);

/* One parameter's buffers: all contiguous, the same length n.  Compute is in
 * float64 for float64 parameters, else in float32; a gradient of another
 * type is converted as it is loaded (round to nearest), 16-bit storage
 * in registers (fused16.inc) or block by block (blocked.inc).  With master_param (16-bit parameters), the
 * float32 master copy is stepped and the parameter gets its rounded value. */
typedef struct {
    void *param;              /* IN/OUT */
    const void *grad;         /* IN     */
    void *exp_avg;            /* IN/OUT */
    void *exp_avg_sq;         /* IN/OUT */
    void *max_exp_avg_sq;     /* IN/OUT, only read with ADAMC_AMSGRAD */
    int64_t n;                /* elements */
    int64_t offset;           /* sum of n over the tasks before this one */
    const adamc_scalars *s;
    void *master_param;       /* IN/OUT float32, or NULL                 */
    int dtype;                /* ADAMC_F32/F64/F16/BF16: param storage   */
    int grad_dtype;           /* ADAMC_F32/F64/F16/BF16                  */
    int state_dtype;          /* exp_avg, exp_avg_sq, max_exp_avg_sq     */
    int sr;                   /* round to 16 bits stochastically         */
    uint32_t sr_key;          /* the step's key (convert.h: adamc_sr_hash) */
    float *exp_avg_absmax;    /* IN/OUT with ADAMC_Q8 state: one scale per */
    float *exp_avg_sq_absmax; /* 256 elements (blocks never split: step.c) */
    int quant_map;            /* with ADAMC_Q8: ADAMC_QMAP_* (quant.h)      */
} adamc_task;

/* The stochastic-rounding key of one parameter's step: a pure function of
 * (seed, parameter index, step); convert.h draws each element's bits from it. */
uint32_t adamc_sr_key(uint64_t seed, int64_t index, int64_t step);

/* The work of n elements, in float32 elements: a float64 element costs
 * about twice as much (bench/thread_cutoff.py), and so does one with 8-bit
 * state (state_dtype ADAMC_Q8: decoding and requantizing both moments; the
 * pow2 map's step measured 1.6-1.8 x the float32-state step per element in
 * cache, the dynamic map's more).  The serial cutoff and the tuner's size
 * classes are in these units; they never change results. */
static inline int64_t adamc_work(int64_t n, int dtype, int state_dtype)
{
    return dtype == ADAMC_F64 || state_dtype == ADAMC_Q8 ? 2 * n : n;
}

/* The bytes of one element of a task whose buffers are all float32 or all
 * float64 (either float gradient): the direct loop (adam_loop.inc), where
 * software prefetch applies; 0 for 16-bit storage, which goes block by
 * block (blocked.inc) and never prefetches.  kernel_body.h dispatches on it. */
static inline int adamc_direct_bytes(const adamc_task *t)
{
    const int wide_grad = t->grad_dtype == ADAMC_F32 || t->grad_dtype == ADAMC_F64;
    if (!wide_grad)
        return 0;
    if (t->dtype == ADAMC_F64)
        return 8;
    return t->dtype == ADAMC_F32 && t->state_dtype == ADAMC_F32 ? 4 : 0;
}

/* Software prefetch applies to ranges of at least this many bytes a stream
 * (adam_loop.inc); the tuner trials it only where a range can reach it. */
#define ADAMC_PF_MIN ((int64_t)1 << 20)

/* Per-ISA kernel: update elements [lo, hi) of one task. */
typedef void (*adamc_range_fn)(const adamc_task *t, int64_t lo, int64_t hi);

/* Per-ISA sum of squares of one task's gradient elements [lo, hi) (norm.inc). */
typedef double (*adamc_sumsq_fn)(const adamc_task *t, int64_t lo, int64_t hi);

/* Per-ISA sums of squares of `ways` consecutive segments of `len` elements
 * (a multiple of 8) of one float32/float64 gradient from element lo, each
 * bitwise 0.0 + segment_sumsq of it, summed side by side (norm.inc). */
typedef void (*adamc_sumsq_ways_fn)(const adamc_task *t, int64_t lo, int64_t len, int ways,
                                    double *out);
/* Per-ISA 8-bit quantization of n float32 values (blocks of 256 from x[0]):
 * codes c[n], scales absmax[ceil(n / 256)]; map: the map version
 * (ADAMC_QMAP_*, quant.h); signed: exp_avg's map.  The
 * code the step uses (blocked.inc), exposed for the tests. */
typedef void (*adamc_quantize_fn)(int map, int is_signed, const float *x, uint8_t *c,
                                  float *absmax, int64_t n);

typedef struct {
    const char *name;
    adamc_range_fn range;
    adamc_sumsq_fn segment_sumsq;
    adamc_sumsq_ways_fn sumsq_ways;
    int norm_ways;      /* segments sumsq_ways takes at once (it takes fewer too) */
    adamc_quantize_fn quantize;
} adamc_kernel;

/* The sum of squares of every gradient element of the tasks, in double, in
 * an order fixed by the data (bitwise the same for any thread count);
 * non-finite if any element is (norm.c). */
double adamc_grad_sumsq(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                        int nthreads);

/*
 * Run every task.  Tasks' offset fields must be the running sum of n.
 * nthreads <= 1, or fewer than adamc_serial_cutoff() elements in all,
 * never enters a parallel region.  Results are bitwise the same for any
 * thread count: every element goes through the same sequence of IEEE
 * operations whichever thread or loop tail handles it.
 */
void adamc_multi_step(const adamc_kernel *k, const adamc_task *tasks,
                      int64_t ntasks, int nthreads);

/* The element range [lo, hi) that part `tid` of `nthreads` even parts of
 * `total` elements covers, in 64-element blocks (the driver's split before
 * the pool's fixed chunks; kept for tests of 64-bit ranges). */
void adamc_split(int64_t total, int nthreads, int tid, int64_t *lo, int64_t *hi);

/* Threads (threads.c). */
int adamc_openmp_enabled(void);
void adamc_set_num_threads(int n);    /* n <= 0: forget the user's choice */
int adamc_user_num_threads(void);
int adamc_resolve_num_threads(void);  /* the count a step would use now */
int adamc_available_cpus(void);
int64_t adamc_serial_cutoff(void);
void adamc_threads_init(void);      /* once, at import: fork handler */
void adamc_note_parallel(void);     /* a parallel region has run     */
int adamc_forked_child(void);       /* forked after one: stay serial */

/* The worker pool (pool.c): POSIX threads with GCC/Clang atomics.  Without
 * it (Windows, other compilers) a parallel step is an OpenMP region, whose
 * closing barrier waits for late workers. */
#if !defined(_WIN32) && (defined(__GNUC__) || defined(__clang__))
#define ADAMC_POOL 1
#else
#define ADAMC_POOL 0
#endif

/* The last task starting at or before element lo of the concatenated tasks
 * (their offsets are the running sums of n): where a range's walk begins. */
static inline int64_t adamc_first_task(const adamc_task *tasks, int64_t ntasks, int64_t lo)
{
    int64_t a = 0, b = ntasks;
    while (b - a > 1) {
        int64_t mid = a + (b - a) / 2;
        if (tasks[mid].offset <= lo)
            a = mid;
        else
            b = mid;
    }
    return a;
}

/* Run elements [lo, hi) of the step (the tasks they fall in): step.c. */
void adamc_run_range(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                     int64_t lo, int64_t hi);
/* Run the step's `total` elements in chunks of `chunk` on up to nthreads
 * threads (the caller one of them); returns 0, having done nothing, when the
 * pool cannot take it (busy with another step, no workers, one chunk).
 * With `sums`, a chunk (a multiple of ADAMC_NORM_CHUNK) instead runs
 * adamc_norm_range on its elements (norm.c; the chunk must then be used as
 * given: at most 65534 of them). */
int adamc_pool_run(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                   int64_t total, int64_t chunk, int nthreads, int64_t pf_ahead,
                   double *sums);
/* The norm's fixed chunks (norm.c): their boundaries depend on the step's
 * size only, and each chunk's sum of squares is added in a fixed order. */
#define ADAMC_NORM_CHUNK 16384
/* The gradients' sum of squares over elements [lo, hi) of the tasks (norm.c). */
double adamc_chunk_sumsq(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                         int64_t lo, int64_t hi);
/* sums[c] = the sum of squares of norm chunk c, for each chunk c in [lo, hi)
 * (lo a multiple of ADAMC_NORM_CHUNK; hi one too, or the end of the tasks). */
void adamc_norm_range(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                      int64_t lo, int64_t hi, double *sums);
int adamc_pool_workers(void);       /* workers started so far */
void adamc_pool_hold(int on);       /* tests: woken workers wait while on */
void adamc_pool_stall(int us);      /* tests: workers stall us in their first chunk */

/* Software prefetch distance in bytes (0: none) for the kernels this thread
 * runs next; the kernels read it for ranges of ADAMC_PF_MIN bytes a stream
 * or more (kernel_body.h).  Set by the driver for each step (step.c). */
void adamc_set_prefetch(int64_t ahead_bytes);
int64_t adamc_prefetch_ahead(void);

/* Tuning (tune.c): the per-step choices that never change results. */
typedef struct {
    int nthreads;       /* threads for this step (1: serial)          */
    int64_t chunk;      /* elements per chunk of a parallel step     */
    int64_t pf_ahead;   /* software prefetch distance, bytes; 0 none  */
    int cls, multi, slot;  /* the trial this step is part of (slot >= 0) */
} adamc_plan;
/* big32, big64: the longest float32 / float64 direct task (elements; 0 if
 * none), which tells whether a range of the step can reach ADAMC_PF_MIN. */
void adamc_plan_step(adamc_plan *pl, int64_t work, int64_t total, int nthreads, int probe_flags,
                     int64_t big32, int64_t big64);
void adamc_plan_done(const adamc_plan *pl, double seconds);
double adamc_now(void);
/* 1 when the tuner chose one thread for steps of this much work and no
 * variable overrides it (the shim then skips resolving the thread count). */
int adamc_tune_serial(int64_t work);
int64_t adamc_default_chunk(int64_t total);
int adamc_env_int(const char *name, int64_t lo, int64_t hi, int64_t *out);
typedef struct {
    int has_cutoff, has_pf, has_chunk, tune;   /* tune: ADAMC_TUNE is not "0" */
    int64_t cutoff, pf, chunk;
} adamc_envs;
void adamc_env_read(adamc_envs *v);   /* ADAMC_SERIAL_CUTOFF, _PREFETCH, _CHUNK, _TUNE */

/* One size class of the tuner, for cpu_info(). */
#define ADAMC_TUNE_MAX_CFG 4
typedef struct {
    int cls, multi;       /* work in [2^cls, 2^(cls+1)); thread choice trialed */
    int state;            /* 0 no step yet, 1 trialing, 2 decided */
    int ncfg, chosen, steps_seen, samples, rounds, retrials;
    int fallbacks;        /* times a thread choice fell back to one thread on stalls */
    int early;            /* 1: the last trial stopped early (stalled steps) */
    int threads[ADAMC_TUNE_MAX_CFG];     /* 1 or 0 (= the resolved count) */
    int64_t pf[ADAMC_TUNE_MAX_CFG];      /* -1: no range can reach the threshold */
    double median[ADAMC_TUNE_MAX_CFG];   /* seconds; 0 before the trial ends */
    double mean[ADAMC_TUNE_MAX_CFG];
} adamc_tune_row;
int adamc_tune_rows(adamc_tune_row *out, int max);
void adamc_tune_reset(void);

/* The 8-bit state's tables (quant.c): once, at import; 0 on success. */
int adamc_quant_init(void);

/* ISA variants (kernel_<isa>.c, dispatch.c). */
const adamc_kernel *adamc_kernel_baseline(void);
/* Fill out[] with the compiled-in variants, lowest first, and cpu_ok[] with
 * whether this CPU and OS can run each; returns how many. */
int adamc_variants(const adamc_kernel **out, int *cpu_ok, int max);

#ifdef __cplusplus
}
#endif
#endif
