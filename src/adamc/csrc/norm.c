/* The global gradient norm of a step (the fused clip / unscale / skip of
 * issue 14): the sum of squares of every gradient element, in double, in an
 * order fixed by the data alone, so it is bitwise the same for any thread
 * count.  The elements (tasks concatenated, as the step sees them) go in
 * fixed chunks of ADAMC_NORM_CHUNK; each chunk sums its segments (norm.inc,
 * compiled per ISA: eight interleaved accumulators added in a fixed tree,
 * the same association in every variant) and the chunks' sums are added in
 * order.  The chunks run on the step's worker pool (pool.c). */
#include <stdint.h>
#include <stdlib.h>
#include "adamc.h"

#define ADAMC_NORM_CHUNK 16384

/* The sum of squares over elements [lo, hi): its segments in task order. */
double adamc_chunk_sumsq(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                         int64_t lo, int64_t hi)
{
    double sum = 0.0;
    for (int64_t j = adamc_first_task(tasks, ntasks, lo); j < ntasks && tasks[j].offset < hi; j++) {
        const adamc_task *t = &tasks[j];
        int64_t s = lo > t->offset ? lo - t->offset : 0;
        int64_t e = hi - t->offset < t->n ? hi - t->offset : t->n;
        if (s < e)
            sum += k->segment_sumsq(t, s, e);
    }
    return sum;
}

double adamc_grad_sumsq(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                        int nthreads)
{
    int64_t total, nchunks;
    double *part, sum = 0.0;
    if (ntasks <= 0)
        return 0.0;
    total = tasks[ntasks - 1].offset + tasks[ntasks - 1].n;
    nchunks = (total + ADAMC_NORM_CHUNK - 1) / ADAMC_NORM_CHUNK;
    part = nchunks > 1 && nthreads > 1 && !adamc_forked_child()
               ? (double *)malloc((size_t)nchunks * sizeof(double)) : NULL;
    if (part && adamc_pool_run(k, tasks, ntasks, total, ADAMC_NORM_CHUNK, nthreads, 0, part)) {
        for (int64_t c = 0; c < nchunks; c++)
            sum += part[c];
    } else {  /* the same chunks and order, on this thread */
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * ADAMC_NORM_CHUNK;
            sum += adamc_chunk_sumsq(k, tasks, ntasks, lo,
                                     total - lo < ADAMC_NORM_CHUNK ? total : lo + ADAMC_NORM_CHUNK);
        }
    }
    free(part);
    return sum;
}
