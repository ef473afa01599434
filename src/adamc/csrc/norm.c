/* The global gradient norm of a step (the fused clip / unscale / skip of
 * issue 14): the sum of squares of every gradient element, in double, in an
 * order fixed by the data alone, so it is bitwise the same for any thread
 * count.  The elements (tasks concatenated, as the step sees them) go in
 * fixed chunks of ADAMC_NORM_CHUNK; each chunk sums its elements in eight
 * interleaved accumulators added in a fixed tree, and the chunks' sums are
 * added in order. */
#include <stdint.h>
#include <stdlib.h>
#include "adamc.h"
#include "convert.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define ADAMC_NORM_CHUNK 16384

static double lanes_sum(const double acc[8])
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#define ADAMC_SUMSQ_LOOP(TYPE, LOAD)                                            \
    do {                                                                       \
        const TYPE *g = (const TYPE *)t->grad + lo;                            \
        int64_t i = 0;                                                         \
        for (; i + 8 <= n; i += 8)                                             \
            for (int j = 0; j < 8; j++) {                                      \
                const double x = (double)LOAD(g[i + j]);                       \
                acc[j] += x * x;                                               \
            }                                                                  \
        for (; i < n; i++) {                                                   \
            const double x = (double)LOAD(g[i]);                               \
            acc[i & 7] += x * x;                                               \
        }                                                                      \
    } while (0)

#define ADAMC_AS_IS(x) (x)

/* Elements [lo, hi) of one task's gradient. */
static double segment_sumsq(const adamc_task *t, int64_t lo, int64_t hi)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t n = hi - lo;
    switch (t->grad_dtype) {
    case ADAMC_F32: ADAMC_SUMSQ_LOOP(float, ADAMC_AS_IS); break;
    case ADAMC_F64: ADAMC_SUMSQ_LOOP(double, ADAMC_AS_IS); break;
    case ADAMC_F16: ADAMC_SUMSQ_LOOP(uint16_t, adamc_h2f); break;
    default: ADAMC_SUMSQ_LOOP(uint16_t, adamc_b2f); break;
    }
    return lanes_sum(acc);
}

/* The sum of squares of chunk c: its segments in task order. */
static double chunk_sumsq(const adamc_task *tasks, int64_t ntasks, int64_t c)
{
    const int64_t lo = c * ADAMC_NORM_CHUNK, hi = lo + ADAMC_NORM_CHUNK;
    int64_t a = 0, b = ntasks;
    double sum = 0.0;
    while (b - a > 1) {  /* the last task starting at or before lo */
        int64_t mid = a + (b - a) / 2;
        if (tasks[mid].offset <= lo)
            a = mid;
        else
            b = mid;
    }
    for (int64_t k = a; k < ntasks && tasks[k].offset < hi; k++) {
        const adamc_task *t = &tasks[k];
        int64_t s = lo > t->offset ? lo - t->offset : 0;
        int64_t e = hi - t->offset < t->n ? hi - t->offset : t->n;
        if (s < e)
            sum += segment_sumsq(t, s, e);
    }
    return sum;
}

double adamc_grad_sumsq(const adamc_task *tasks, int64_t ntasks, int nthreads)
{
    int64_t total, nchunks;
    double *part, sum = 0.0;
    if (ntasks <= 0)
        return 0.0;
    total = tasks[ntasks - 1].offset + tasks[ntasks - 1].n;
    nchunks = (total + ADAMC_NORM_CHUNK - 1) / ADAMC_NORM_CHUNK;
    if (nchunks <= 1)
        return nchunks ? chunk_sumsq(tasks, ntasks, 0) : 0.0;
    part = (double *)malloc((size_t)nchunks * sizeof(double));
    if (!part) {  /* the same order, serially */
        for (int64_t c = 0; c < nchunks; c++)
            sum += chunk_sumsq(tasks, ntasks, c);
        return sum;
    }
#ifdef _OPENMP
    if (nthreads > 1 && !adamc_forked_child()) {
        adamc_note_parallel();
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (int64_t c = 0; c < nchunks; c++)
            part[c] = chunk_sumsq(tasks, ntasks, c);
    } else
#else
    (void)nthreads;
#endif
    {
        for (int64_t c = 0; c < nchunks; c++)
            part[c] = chunk_sumsq(tasks, ntasks, c);
    }
    for (int64_t c = 0; c < nchunks; c++)
        sum += part[c];
    free(part);
    return sum;
}
