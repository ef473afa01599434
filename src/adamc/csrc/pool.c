/* adamc's own worker pool for the parallel step (POSIX threads).
 *
 * Why not an OpenMP parallel region: its closing barrier waits for every
 * thread of the team, so a step that asked for 2 threads waits for the
 * second one even when the OS has not scheduled it yet (another process on
 * the core, BLAS's threads still spinning): a whole time slice, 20x a
 * serial step in bench/train_loop.py --oversubscribe.
 *
 * Here the step is cut into fixed chunks (their boundaries depend on the
 * step's size only, never on the thread count).  The calling thread
 * publishes the job, wakes the workers taking part (each sleeps on its own
 * condition variable) and starts claiming chunks at once;
 * a worker claims chunks when it arrives (an atomic compare-and-swap on one
 * word: the job's generation and the range of unclaimed chunks; the caller
 * takes them from the front, workers from the back).  The call returns
 * when every chunk is done: the caller finishes the step alone if no worker
 * shows up, and waits only for chunks a worker has already claimed and is
 * running (spinning 20 us, then asleep, so that the scheduler can move a
 * preempted worker onto the caller's core).  A worker that wakes after the job is over finds nothing left to
 * claim and goes back to sleep.  Each element goes through the same
 * arithmetic whoever runs its chunk, so results are bitwise the same for
 * any thread count and any schedule.
 *
 * Workers sleep on a condition variable between steps (by default they never
 * spin, so they never compete with BLAS's threads in a training loop;
 * ADAMC_POOL_SPIN_US=n keeps them awake n microseconds after a step, for
 * benchmarks of back-to-back in-cache steps such as bench/ceiling.py); they are
 * started on first use, as many as the largest thread count asked for minus
 * one, with every signal blocked.  One step at a time uses the pool; a step
 * from a second Python thread that finds it busy runs serially.
 *
 * Not built on Windows (no pthreads): step.c falls back to an OpenMP region
 * there, which has the closing barrier (see ADAMC_POOL in adamc.h).
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "adamc.h"

#if ADAMC_POOL
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#define MAX_WORKERS 1023

typedef struct {
    const adamc_kernel *k;
    const adamc_task *tasks;
    int64_t ntasks, total, chunk, nchunks, pf_ahead;
    double spin;       /* seconds a worker spins for the next job, then sleeps */
    double *sums;      /* a norm job (adamc_grad_sumsq): norm chunk sums, not a step */
} job_t;

static pthread_mutex_t owner_mu = PTHREAD_MUTEX_INITIALIZER; /* the step using the pool */
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;   /* gen, want, job        */
/* one per worker, so that a job wakes only the workers taking part: after a
 * step on many threads, every later step would otherwise wake them all
 * (1023 workers made a 2-thread step 76x slower) */
static pthread_cond_t job_cv[MAX_WORKERS];
static unsigned job_gen = 0;   /* written under job_mu (atomically: spinners read it) */
static int job_want = 0;       /* workers 0..job_want-1 take part in job job_gen */
static job_t job;              /* under job_mu; copied by each worker */
static int nworkers = 0;       /* started so far (under owner_mu) */
static int hold_workers = 0;   /* atomic; tests: woken workers wait (late) */
static int stall_us = 0;       /* atomic; tests: a worker stalls in its first chunk */
static uint64_t claim_word;    /* atomic: generation << 32 | front << 16 | back */
static int64_t chunks_done;    /* atomic: chunks finished by workers */
static int caller_waiting;     /* atomic: the caller sleeps on done_cv */
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claim a chunk of job `gen`: 1 and its index, or 0 when that job has no
 * chunk left (or is over).  The unclaimed chunks are [front, back): the
 * caller takes them from the front, workers from the back, so that with
 * steady speeds each thread gets the same chunks step after step (and finds
 * them in its own cache when the step fits in the cores' caches). */
static int claim(unsigned gen, int from_back, int64_t *idx)
{
    uint64_t w = __atomic_load_n(&claim_word, __ATOMIC_ACQUIRE);
    for (;;) {
        unsigned front = (unsigned)(w >> 16) & 0xffffu, back = (unsigned)w & 0xffffu;
        uint64_t next;
        if ((unsigned)(w >> 32) != gen || front >= back)
            return 0;
        next = from_back ? w - 1 : w + ((uint64_t)1 << 16);
        if (__atomic_compare_exchange_n(&claim_word, &w, next, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            *idx = from_back ? (int64_t)back - 1 : (int64_t)front;
            return 1;
        }
    }
}

static void run_chunk(const job_t *j, int64_t i)
{
    int64_t lo = i * j->chunk;
    int64_t hi = j->total - lo < j->chunk ? j->total : lo + j->chunk;
    if (j->sums)
        adamc_norm_range(j->k, j->tasks, j->ntasks, lo, hi, j->sums);
    else
        adamc_run_range(j->k, j->tasks, j->ntasks, lo, hi);
}

static void *worker_main(void *arg)
{
    const int me = (int)((intptr_t)arg & 0xffff);
    unsigned seen = (unsigned)((uintptr_t)arg >> 16);
    double spin = 0.0;
    for (;;) {
        job_t j;
        unsigned gen;
        int64_t i;
        if (spin > 0.0) {
            /* ADAMC_POOL_SPIN_US: wait for the next job awake for a while */
            double until = adamc_now() + spin;
            while (__atomic_load_n(&job_gen, __ATOMIC_ACQUIRE) == seen && adamc_now() < until)
                for (int r = 0; r < 64; r++)
                    cpu_relax();
        }
        pthread_mutex_lock(&job_mu);
        for (;;) {
            if (job_gen != seen) {
                seen = job_gen;
                if (me < job_want)
                    break;
            }
            pthread_cond_wait(&job_cv[me], &job_mu);
        }
        j = job;
        gen = seen;
        spin = j.spin;
        pthread_mutex_unlock(&job_mu);
        while (__atomic_load_n(&hold_workers, __ATOMIC_ACQUIRE)) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
        adamc_set_prefetch(j.pf_ahead);
        for (int first = 1; claim(gen, 1, &i); first = 0) {
            int us = __atomic_load_n(&stall_us, __ATOMIC_ACQUIRE);
            if (first && us > 0) {   /* as if preempted in the middle of the chunk */
                struct timespec d = {us / 1000000, (long)(us % 1000000) * 1000};
                nanosleep(&d, NULL);
            }
            run_chunk(&j, i);
            __atomic_add_fetch(&chunks_done, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&caller_waiting, __ATOMIC_SEQ_CST)) {
                pthread_mutex_lock(&done_mu);
                pthread_cond_signal(&done_cv);
                pthread_mutex_unlock(&done_mu);
            }
        }
    }
    return NULL;
}

/* Start workers until there are `want` (or as many as the OS gives). */
static void grow(int want)
{
    sigset_t all, old;
    if (want > MAX_WORKERS)
        want = MAX_WORKERS;
    if (nworkers >= want)
        return;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (nworkers < want) {
        pthread_t t;
        pthread_attr_t attr;
        unsigned gen;
        int ok;
        pthread_mutex_lock(&job_mu);
        gen = job_gen;
        pthread_mutex_unlock(&job_mu);
        if (pthread_cond_init(&job_cv[nworkers], NULL) != 0)
            break;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&t, &attr, worker_main,
                            (void *)(((uintptr_t)gen << 16) | (uintptr_t)nworkers)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) {
            pthread_cond_destroy(&job_cv[nworkers]);
            break;
        }
        nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int adamc_pool_run(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                   int64_t total, int64_t chunk, int nthreads, int64_t pf_ahead,
                   double *sums)
{
    int64_t nchunks, mine = 0, i;
    unsigned gen;
    int64_t spin_us = 0;
    double until;
    if (chunk < 1)
        chunk = 1;
    if (chunk <= total / 65535) { /* at most 65535 chunks: 16 bits in claim_word */
        if (sums)
            return 0;             /* a norm's chunks are fixed: its caller sums serially */
        chunk = total / 65535 + 1;
    }
    nchunks = total / chunk + (total % chunk != 0);
    if (nthreads < 2 || nchunks < 2)
        return 0;
    if (pthread_mutex_trylock(&owner_mu) != 0)
        return 0;                  /* another step is using the pool: run serially */
    adamc_note_parallel();     /* before any thread exists: fork sees it */
    grow(nthreads - 1);
    if (nworkers == 0) {
        pthread_mutex_unlock(&owner_mu);
        return 0;
    }
    __atomic_store_n(&chunks_done, 0, __ATOMIC_RELAXED);
    pthread_mutex_lock(&job_mu);
    gen = job_gen + 1;
    __atomic_store_n(&job_gen, gen, __ATOMIC_RELEASE);
    job.k = k;
    job.tasks = tasks;
    job.ntasks = ntasks;
    job.total = total;
    job.chunk = chunk;
    job.nchunks = nchunks;
    job.pf_ahead = pf_ahead;
    job.sums = sums;
    job.spin = adamc_env_int("ADAMC_POOL_SPIN_US", 0, 1000000, &spin_us) ? 1e-6 * (double)spin_us : 0.0;
    job_want = nthreads - 1;
    __atomic_store_n(&claim_word, (uint64_t)gen << 32 | (uint64_t)nchunks, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&job_mu);
    for (int w = 0; w < nthreads - 1 && w < nworkers; w++)
        pthread_cond_signal(&job_cv[w]);

    adamc_set_prefetch(pf_ahead);
    if (__atomic_load_n(&stall_us, __ATOMIC_ACQUIRE) > 0) {
        /* tests (adamc_pool_stall): wait until a worker has claimed a chunk,
         * so that the stall happens however late the worker wakes */
        const double limit = adamc_now() + 1.0;
        while ((__atomic_load_n(&claim_word, __ATOMIC_ACQUIRE) & 0xffffu) == (uint64_t)nchunks
               && adamc_now() < limit)
            cpu_relax();
    }
    while (claim(gen, 0, &i)) {
        run_chunk(&job, i);   /* job cannot change: this thread owns the pool */
        mine++;
    }
    /* Only chunks a worker has claimed and is running are left: spin for
     * them a little, then sleep.  A worker preempted in the middle of a
     * chunk (another process took its core) is then pulled onto this idle
     * core by the scheduler instead of waiting for its time slice there. */
    until = adamc_now() + 2e-5;
    while (__atomic_load_n(&chunks_done, __ATOMIC_ACQUIRE) != nchunks - mine
           && adamc_now() < until)
        for (int r = 0; r < 16; r++)
            cpu_relax();
    if (__atomic_load_n(&chunks_done, __ATOMIC_ACQUIRE) != nchunks - mine) {
        __atomic_store_n(&caller_waiting, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&done_mu);
        while (__atomic_load_n(&chunks_done, __ATOMIC_SEQ_CST) != nchunks - mine)
            pthread_cond_wait(&done_cv, &done_mu);
        pthread_mutex_unlock(&done_mu);
        __atomic_store_n(&caller_waiting, 0, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&owner_mu);
    return 1;
}

int adamc_pool_workers(void) { return nworkers; }

/* Tests: while held, a woken worker waits before it claims anything, as a
 * worker the OS has not scheduled yet would. */
void adamc_pool_hold(int on) { __atomic_store_n(&hold_workers, on, __ATOMIC_RELEASE); }

/* Tests: a worker sleeps `us` microseconds after claiming its first chunk
 * of each job, as a worker preempted in the middle of a chunk; the caller
 * must wait for it (a stalled step, which the tuner must notice).  While it
 * is set, the caller lets a worker claim first (adamc_pool_run). */
void adamc_pool_stall(int us) { __atomic_store_n(&stall_us, us > 0 ? us : 0, __ATOMIC_RELEASE); }

#else

void adamc_pool_hold(int on) { (void)on; }
void adamc_pool_stall(int us) { (void)us; }

int adamc_pool_run(const adamc_kernel *k, const adamc_task *tasks, int64_t ntasks,
                   int64_t total, int64_t chunk, int nthreads, int64_t pf_ahead,
                   double *sums)
{
    (void)k; (void)tasks; (void)ntasks; (void)total; (void)chunk; (void)nthreads;
    (void)pf_ahead; (void)sums;
    return 0;
}

int adamc_pool_workers(void) { return 0; }

#endif
