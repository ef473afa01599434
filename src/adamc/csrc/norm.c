/* The global gradient norm of a step (the fused clip / unscale / skip of
 * issue 14): the sum of squares of every gradient element, in double, in an
 * order fixed by the data alone, so it is bitwise the same for any thread
 * count.  The elements (tasks concatenated, as the step sees them) go in
 * fixed chunks of ADAMC_NORM_CHUNK; each chunk sums its segments (norm.inc,
 * compiled per ISA: eight interleaved accumulators added in a fixed tree,
 * the same association in every variant) and the chunks' sums are added in
 * order.  A thread sums several whole chunks of one gradient side by side
 * (the kernel's norm_ways; each chunk still in its own lanes and order), and
 * the chunks run on the step's worker pool (pool.c), claimed a few at a
 * time. */
#include <stdint.h>
#include <stdlib.h>
#include "adamc.h"

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

void adamc_norm_range(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                      int64_t lo, int64_t hi, double *sums)
{
    const int64_t nc = ADAMC_NORM_CHUNK;
    int64_t c = lo / nc, at = lo;
    while (at < hi) {
        const int64_t end = hi - at < nc ? hi : at + nc;
        if (end - at == nc) {
            /* whole chunks inside one float32/float64 gradient: side by side */
            const adamc_task *t = &tasks[adamc_first_task(tasks, ntasks, at)];
            const int64_t s = at - t->offset;
            int64_t ways = (t->n - s) / nc;
            if ((hi - at) / nc < ways)
                ways = (hi - at) / nc;
            if (k->norm_ways < ways)
                ways = k->norm_ways;
            if (ways >= 1 && (t->grad_dtype == ADAMC_F32 || t->grad_dtype == ADAMC_F64)) {
                k->sumsq_ways(t, s, nc, (int)ways, sums + c);
                c += ways;
                at += ways * nc;
                continue;
            }
        }
        sums[c++] = adamc_chunk_sumsq(k, tasks, ntasks, at, end);
        at = end;
    }
}

double adamc_grad_sumsq(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                        int nthreads)
{
    int64_t total, nchunks, per;
    double *part, one, sum = 0.0;
    if (ntasks <= 0)
        return 0.0;
    total = tasks[ntasks - 1].offset + tasks[ntasks - 1].n;
    nchunks = (total + ADAMC_NORM_CHUNK - 1) / ADAMC_NORM_CHUNK;
    if (nchunks <= 1) {
        adamc_norm_range(k, tasks, ntasks, 0, total, &one);
        return total > 0 ? 0.0 + one : 0.0;
    }
    part = (double *)malloc((size_t)nchunks * sizeof(double));
    if (!part) {   /* the same chunks and order, one at a time, no storage */
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * ADAMC_NORM_CHUNK;
            sum += adamc_chunk_sumsq(k, tasks, ntasks, lo,
                                     total - lo < ADAMC_NORM_CHUNK ? total : lo + ADAMC_NORM_CHUNK);
        }
        return sum;
    }
    /* a thread claims `per` chunks at a time (a multiple of norm_ways, up to
     * 4 x: fewer claims on the shared word for large norms, at least ~8
     * claims a thread otherwise) */
    per = nchunks / (8 * (int64_t)k->norm_ways * (nthreads > 1 ? nthreads : 1));
    per = k->norm_ways * (per < 1 ? 1 : per > 4 ? 4 : per);
    if (nthreads <= 1 || adamc_forked_child()
        || !adamc_pool_run(k, tasks, ntasks, total, per * ADAMC_NORM_CHUNK, nthreads, 0, part))
        adamc_norm_range(k, tasks, ntasks, 0, total, part);  /* on this thread */
    for (int64_t c = 0; c < nchunks; c++)
        sum += part[c];
    free(part);
    return sum;
}
