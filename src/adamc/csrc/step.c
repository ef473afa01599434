/* Per-step scalars and the multi-tensor driver: a step's elements, in
 * fixed chunks that cross tensor boundaries, go to the worker pool
 * (pool.c) or run serially, as tune.c's plan for the step says. */
#include <math.h>
#include "adamc.h"
#include "quant.h"
#include "convert.h"


void adamc_scalars_init(adamc_scalars *s, int64_t step, const adamc_hyper *h)
{
    /* Kingma & Ba 2015, Algorithm 1, arranged as torch.optim.Adam does:
     * step_size = lr / (1 - b1^t), denom = sqrt(v) * (1 / sqrt(1 - b2^t)) + eps.
     * pow(x, (double)t) is what Python's x ** t computes. */
    const double lr = h->lr, beta2 = h->beta2, weight_decay = h->weight_decay;
    double bc1 = h->bias_correction ? 1.0 - pow(h->beta1, (double)step) : 1.0;
    double bc2 = h->bias_correction ? 1.0 - pow(beta2, (double)step) : 1.0;
    int flags = 0;

    /* one multiply applies maximize's sign and the unscale/clip factor */
    s->grad_sign = (h->maximize ? -1.0 : 1.0) * h->grad_factor;
    s->decay = 1.0;
    s->wd = 0.0;
    if (weight_decay != 0.0) {
        if (h->decoupled_weight_decay)
            s->decay = 1.0 - lr * weight_decay;  /* Loshchilov & Hutter 2019 */
        else {
            s->wd = weight_decay;
            flags |= ADAMC_L2;
        }
    }
    /* torch's lerp switches formula at |weight| = 0.5 for accuracy. */
    s->lerp_w = 1.0 - h->beta1;
    if (!(fabs(s->lerp_w) < 0.5))
        flags |= ADAMC_LERP_LARGE;
    s->beta2 = beta2;
    s->one_minus_beta2 = 1.0 - beta2;
    /* Multiplying by these once-per-step reciprocals instead of dividing by
     * sqrt(bc2) (as torch does) frees the divider, which bounds the step's
     * speed in cache and for float64; it moves results by rounding only. */
    s->inv_bc2 = 1.0 / bc2;
    s->inv_bc2_sqrt = 1.0 / sqrt(bc2);
    s->eps = h->eps;
    s->neg_step = -(lr / bc1);
    if (h->eps_mode == ADAMC_EPS_MODE_HAT) {
        /* The eps-hat form folds sqrt(bc2) into the step size, in the order
         * scikit-learn and Keras compute it, and adds eps to the raw sqrt(v):
         * the outside-eps loop with a factor of exactly 1 (no rounding). */
        s->inv_bc2_sqrt = 1.0;
        s->neg_step = -(lr * sqrt(bc2) / bc1);
    }
    if (h->amsgrad)
        flags |= ADAMC_AMSGRAD;
    if (h->eps_mode == ADAMC_EPS_MODE_INSIDE)
        flags |= ADAMC_EPS_INSIDE;
    /* Multiplying by exactly 1 changes nothing, so the common case skips
     * both products (their own loop; fewer instructions per element). */
    if (s->grad_sign != 1.0 || s->decay != 1.0)
        flags |= ADAMC_SCALE;
    s->flags = flags;
}

/* Work is handed out in blocks of this many elements, so that thread
 * boundaries fall on cache lines of any buffer that starts on one. */
#define ADAMC_BLOCK 64

void adamc_split(int64_t total, int nthreads, int tid, int64_t *lo, int64_t *hi)
{
    int64_t blocks = total / ADAMC_BLOCK + (total % ADAMC_BLOCK != 0);
    int64_t q = blocks / nthreads, r = blocks % nthreads;
    /* Written without a blocks * tid product so that no total up to
     * INT64_MAX overflows. */
    int64_t b_lo = q * tid + (tid < r ? tid : r);
    int64_t b_hi = b_lo + q + (tid < r ? 1 : 0);
    int64_t max_blocks = total / ADAMC_BLOCK;  /* whole blocks that fit */
    *lo = b_lo > max_blocks ? total : b_lo * ADAMC_BLOCK;
    *hi = b_hi > max_blocks ? total : b_hi * ADAMC_BLOCK;
}

#if defined(_MSC_VER)
#define ADAMC_TLS __declspec(thread)
#else
#define ADAMC_TLS __thread
#endif

static ADAMC_TLS int64_t pf_ahead_tls = 4096;

void adamc_set_prefetch(int64_t ahead_bytes) { pf_ahead_tls = ahead_bytes; }
int64_t adamc_prefetch_ahead(void) { return pf_ahead_tls; }

void adamc_run_range(const adamc_kernel *k, const adamc_task *tasks,
                     int64_t ntasks, int64_t lo, int64_t hi)
{
    if (lo >= hi)
        return;
    for (int64_t i = adamc_first_task(tasks, ntasks, lo); i < ntasks && tasks[i].offset < hi; i++) {
        const adamc_task *t = &tasks[i];
        int64_t s = lo > t->offset ? lo - t->offset : 0;
        int64_t e = hi - t->offset < t->n ? hi - t->offset : t->n;
        if (t->state_dtype == ADAMC_Q8) {
            /* 8-bit state: a block of 256 goes whole to the range holding
             * its first element, whatever the chunks (one scale per block) */
            s = (s + ADAMC_QBLOCK - 1) / ADAMC_QBLOCK * ADAMC_QBLOCK;
            e = e == t->n ? e : (e + ADAMC_QBLOCK - 1) / ADAMC_QBLOCK * ADAMC_QBLOCK;
            e = e < t->n ? e : t->n;
        }
        if (s < e)
            k->range(t, s, e);
    }
}

static void run_serial(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks)
{
    for (int64_t i = 0; i < ntasks; i++)
        if (tasks[i].n > 0)
            k->range(&tasks[i], 0, tasks[i].n);
}

#if !ADAMC_POOL && defined(_OPENMP)
/* Without the pool (Windows): an OpenMP region claiming the same chunks.
 * Its closing barrier still waits for every thread of the team. */
static void omp_run(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                    int64_t total, int64_t chunk, int nthreads, int64_t pf_ahead)
{
    int64_t nchunks;
    int c;
    if (chunk < total / ((int64_t)1 << 30))   /* an int counts the chunks (OpenMP 2.0) */
        chunk = total / ((int64_t)1 << 30) + 1;
    nchunks = total / chunk + (total % chunk != 0);
    adamc_note_parallel();
#pragma omp parallel num_threads(nthreads)
    {
        adamc_set_prefetch(pf_ahead);
#pragma omp for schedule(dynamic, 1)
        for (c = 0; c < (int)nchunks; c++) {
            int64_t lo = c * chunk;
            adamc_run_range(k, tasks, ntasks, lo, total - lo < chunk ? total : lo + chunk);
        }
    }
}
#endif

/* A serial step of fewer elements has no choice to make: no range reaches
 * the prefetch threshold (1 MiB a stream: 2^17 float64 elements). */
#define ADAMC_PLAIN_SERIAL ((int64_t)1 << 17)

void adamc_multi_step(const adamc_kernel *k, const adamc_task *tasks,
                      int64_t ntasks, int nthreads)
{
    int64_t total, work = 0, big32 = 0, big64 = 0;
    adamc_plan pl;
    double t0 = 0.0;
    if (ntasks <= 0)
        return;
    total = tasks[ntasks - 1].offset + tasks[ntasks - 1].n;
    if (nthreads <= 1 && total < ADAMC_PLAIN_SERIAL) {
        run_serial(k, tasks, ntasks);   /* the common small step: no bookkeeping */
        return;
    }
    for (int64_t i = 0; i < ntasks; i++) {
        const int direct = adamc_direct_bytes(&tasks[i]);
        work += adamc_work(tasks[i].n, tasks[i].dtype, tasks[i].state_dtype);
        if (direct == 4 && tasks[i].n > big32)
            big32 = tasks[i].n;
        else if (direct == 8 && tasks[i].n > big64)
            big64 = tasks[i].n;
    }
    if (adamc_forked_child())
        nthreads = 1;
    adamc_plan_step(&pl, work, total, nthreads, tasks[0].s->flags, big32, big64);
    if (pl.slot >= 0)
        t0 = adamc_now();
    if (pl.nthreads > 1) {
#if ADAMC_POOL
        if (!adamc_pool_run(k, tasks, ntasks, total, pl.chunk, pl.nthreads, pl.pf_ahead,
                            NULL)) {
            adamc_set_prefetch(pl.pf_ahead);
            run_serial(k, tasks, ntasks);
        }
#elif defined(_OPENMP)
        omp_run(k, tasks, ntasks, total, pl.chunk, pl.nthreads, pl.pf_ahead);
#else
        adamc_set_prefetch(pl.pf_ahead);
        run_serial(k, tasks, ntasks);
#endif
    } else {
        adamc_set_prefetch(pl.pf_ahead);
        run_serial(k, tasks, ntasks);
    }
    if (pl.slot >= 0)
        adamc_plan_done(&pl, adamc_now() - t0);
}

uint32_t adamc_sr_key(uint64_t seed, int64_t index, int64_t step)
{
    uint32_t k = adamc_hash32((uint32_t)seed ^ 0x243f6a88u);
    k = adamc_hash32(k ^ (uint32_t)(seed >> 32));
    k = adamc_hash32(k ^ (uint32_t)index);
    k = adamc_hash32(k ^ (uint32_t)((uint64_t)index >> 32));
    k = adamc_hash32(k ^ (uint32_t)step);
    return adamc_hash32(k ^ (uint32_t)((uint64_t)step >> 32));
}
