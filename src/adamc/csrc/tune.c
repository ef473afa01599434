/* Tuning: the per-step choices that never change a result, chosen for the
 * machine the code runs on by timing the first steps of each size.
 *
 * The choices:
 *   - threads: for a step of work in [2^15, 2^22) float32 elements (float64
 *     counting twice), one thread or the resolved count (above, always the
 *     resolved count; below, one thread).  In that band one thread is the
 *     configuration to beat: a second thread is used only where it measured
 *     a clear win (see below), because a step of that size gains little
 *     from it and loses a lot when the host is busy (a worker preempted in
 *     the middle of its chunk keeps the step waiting for a time slice);
 *   - software prefetch on or off, for steps of 2^18 work or more, trialed
 *     only for the thread configurations in which a range of the step can
 *     reach the kernels' threshold (ADAMC_PF_MIN bytes a stream: a task that
 *     long, and in a parallel step a chunk that long); elsewhere the
 *     prefetch setting cannot change the code that runs;
 *   - the prefetch distance: where no thread count is trialed (2^22 work
 *     and up, or one thread), DEFAULT_PF bytes ahead (the fixed default:
 *     4 KiB beat 1 KiB and matched 8 KiB on the first development host)
 *     against FAR_PF x that (memory farther away, a host whose hardware
 *     prefetcher lags more), as a third configuration;
 *   - the chunk size of a parallel step (fixed by a formula of the step's
 *     size, or ADAMC_CHUNK; not trialed).
 * Each choice only decides which thread runs an element, or whether a
 * cache line is asked for early: every element goes through the same IEEE
 * operations whatever is chosen, so results are bitwise the same.
 *
 * How: an online comparison.  Steps fall in size classes (floor(log2
 * work)).  In each class, after ADAMC_TUNE_SKIP untimed steps (the first
 * touches fresh state pages), the next rounds x (number of configurations)
 * steps run the configurations in ABBA order and are timed (4 rounds for
 * large steps; 12 where a thread count is tried: those steps are short, and
 * beside BLAS's spinning threads their times scatter); the class then
 * keeps the configuration with the lowest median time if it beats the
 * fixed default by more than MARGIN, else the default.  All threads must
 * beat the best one-thread configuration by MARGIN_THREADS in median and
 * in mean (the mean counts the stalls that a busy host adds to some steps;
 * the median alone would not see them).  So a class never settles on
 * something that measured slower than the default, and its trial costs at
 * most (rounds x alternatives) steps run in the slower configuration: 8 of
 * the first 100 steps of a large model (prefetch off and 16 KiB ahead
 * against the 4 KiB default; bench/tuning.py --first 100 measures it).
 *
 * A busy host, quickly: a step run on all threads that takes more than
 * STALL x the one-thread median is a stall.  Two stalls in a trial end it
 * at once with one thread; three within STALL_WINDOW steps after a class
 * chose all threads switch it to one thread at once (three, not two: on a
 * quiet virtual machine about 1% of two-thread steps take over 2x one
 * thread's time, a vCPU descheduled for a moment, and two such within 64
 * steps came often enough to leave a class on one thread, 1.7x slower,
 * for a thousand steps; a busy host stalls step after step).  A
 * thread-count choice is tried again every RETRIAL steps of its class
 * (other processes or BLAS's threads may have come or gone), the
 * interval doubling (up to RETRIAL_MAX) each time the same choice is
 * confirmed (one thread, or all threads again) or one thread is fallen
 * back to.
 *
 * Environment variables fix each choice (read at every step):
 *   ADAMC_TUNE=0            no trials: every choice at its fixed default
 *   ADAMC_SERIAL_CUTOFF=n   threads from n work on, one below (threads.c)
 *   ADAMC_PREFETCH=n        prefetch n bytes ahead; 0: no prefetch
 *   ADAMC_CHUNK=n           elements per chunk of a parallel step
 * cpu_info()["tuning"] reports each class's trial and choice.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "adamc.h"

#if defined(_WIN32)
#include <windows.h>
static SRWLOCK lock_ = SRWLOCK_INIT;
#define LOCK() AcquireSRWLockExclusive(&lock_)
#define UNLOCK() ReleaseSRWLockExclusive(&lock_)
double adamc_now(void)
{
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}
#else
#include <pthread.h>
#include <time.h>
static pthread_mutex_t lock_ = PTHREAD_MUTEX_INITIALIZER;
#define LOCK() pthread_mutex_lock(&lock_)
#define UNLOCK() pthread_mutex_unlock(&lock_)
double adamc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

#define DEFAULT_CUTOFF ((int64_t)1 << 17)   /* the fixed default (threads.c) */
#define DEFAULT_PF 4096                      /* bytes ahead                    */
#define FAR_PF 4          /* x DEFAULT_PF: the farther distance trialed        */
#define THREADS_LO 15                        /* thread trials: [2^15, 2^22)   */
#define THREADS_HI 22
#define PF_LO 18                             /* prefetch trials: 2^18 and up   */
#define NCLASS 64
#define ROUNDS 4          /* timed steps per configuration, large steps       */
#define ROUNDS_THREADS 12 /* with a thread choice: short steps, noisy beside BLAS */
#define MAX_ROUNDS 12
#define RETRIAL 1024      /* a thread choice is tried again after this many steps, */
#define RETRIAL_MAX 16384 /* doubling up to this while one thread is confirmed    */
#define ADAMC_TUNE_SKIP 2
#define MARGIN 0.02
#define MARGIN_THREADS 0.05 /* all threads against one: a clear win only */
#define STALL 2.0           /* x the one-thread median: a stalled step */
#define STALL_WINDOW 64     /* three stalls this close: fall back to one thread */
#define MONITOR_SLOT (MAX_ROUNDS * ADAMC_TUNE_MAX_CFG)  /* a timed step outside a trial */

typedef struct {
    adamc_tune_row r;
    int busy;                              /* a timed step is running */
    int rounds;
    int stalls;                            /* in the running trial */
    int64_t retrial_at;   /* steps_seen at which a decided thread choice is retried */
    int64_t interval;     /* steps from a thread decision to its retrial */
    int64_t last_stall;   /* steps_seen at the last stall after the decision */
    int64_t prev_stall;   /* and at the one before it */
    double serial_median; /* the one-thread configuration's median: the yardstick */
    int n[ADAMC_TUNE_MAX_CFG];             /* timed steps of each configuration */
    double t[ADAMC_TUNE_MAX_CFG][MAX_ROUNDS];
} cls_t;

static cls_t classes[2][NCLASS];
/* Per class of the thread band: 1 once its trial chose one thread.  Read
 * without the lock by adamc_tune_serial (a stale 0 only costs a resolve). */
static volatile signed char serial_choice[NCLASS];

static int parse_int(const char *e, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long v;
    if (!e || !*e)
        return 0;
    v = strtoll(e, &end, 10);
    if (*end != '\0' || v < lo || v > hi)
        return 0;
    *out = (int64_t)v;
    return 1;
}

/* 1 and *out when the variable is set to an integer in [lo, hi]. */
int adamc_env_int(const char *name, int64_t lo, int64_t hi, int64_t *out)
{
    return parse_int(getenv(name), lo, hi, out);
}

#if !defined(_WIN32)
extern char **environ;
#endif

/* The tuning variables, in one pass over the environment (a getenv each
 * would scan it four times, at every step that reaches the tuner). */
void adamc_env_read(adamc_envs *v)
{
    const char *cutoff = NULL, *pf = NULL, *chunk = NULL, *tune = NULL;
#if defined(_WIN32)
    cutoff = getenv("ADAMC_SERIAL_CUTOFF");
    pf = getenv("ADAMC_PREFETCH");
    chunk = getenv("ADAMC_CHUNK");
    tune = getenv("ADAMC_TUNE");
#else
    for (char **e = environ; e && *e; e++) {
        const char *s = *e;
        if (s[0] != 'A' || strncmp(s, "ADAMC_", 6) != 0)
            continue;
        s += 6;
        if (strncmp(s, "SERIAL_CUTOFF=", 14) == 0)
            cutoff = s + 14;
        else if (strncmp(s, "PREFETCH=", 9) == 0)
            pf = s + 9;
        else if (strncmp(s, "CHUNK=", 6) == 0)
            chunk = s + 6;
        else if (strncmp(s, "TUNE=", 5) == 0)
            tune = s + 5;
    }
#endif
    v->has_cutoff = parse_int(cutoff, 0, INT64_MAX, &v->cutoff);
    v->has_pf = parse_int(pf, 0, (int64_t)1 << 24, &v->pf);
    v->has_chunk = parse_int(chunk, 64, INT64_MAX, &v->chunk);
    v->tune = !(tune && strcmp(tune, "0") == 0);
}

/* About 16 chunks a step, of 2^12 to 2^18 elements, a multiple of 64 (a
 * cache line of either dtype), from the step's size alone: small enough
 * that a slow worker (sharing its core) leaves little for the caller to
 * wait for, large enough that a large step's chunks reach the prefetch
 * threshold (1 MiB a stream). */
int64_t adamc_default_chunk(int64_t total)
{
    int64_t c = total / 16;
    if (c < ((int64_t)1 << 12))
        c = (int64_t)1 << 12;
    if (c > ((int64_t)1 << 18))
        c = (int64_t)1 << 18;
    return c & ~(int64_t)63;
}

static int ilog2(int64_t x)
{
    int c = 0;
    while (x > 1) {
        x >>= 1;
        c++;
    }
    return c;
}

static double median(double *x, int n)
{
    /* n <= MAX_ROUNDS: insertion sort */
    if (n <= 0)
        return 0.0;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Called with the lock held: the class's thread choice for the next
 * RETRIAL.. steps is one thread (the best measured one-thread
 * configuration), the retrial interval doubling. */
static void choose_serial(cls_t *c, int best1)
{
    c->r.chosen = best1;
    if (c->interval < RETRIAL)
        c->interval = RETRIAL;
    else if (c->interval < RETRIAL_MAX)
        c->interval *= 2;
    c->retrial_at = c->r.steps_seen + c->interval;
    serial_choice[c->r.cls] = 1;
}

static void decide(cls_t *c)
{
    int best1 = 0, bestn = -1;
    /* a retrial of a class that had chosen all threads (interval 0: the
     * first trial) */
    const int was_all = c->r.multi && c->interval > 0 && c->r.threads[c->r.chosen] != 0;
    for (int k = 0; k < c->r.ncfg; k++) {
        double tmp[MAX_ROUNDS], sum = 0.0;
        memcpy(tmp, c->t[k], sizeof tmp);
        for (int i = 0; i < c->n[k]; i++)
            sum += c->t[k][i];
        c->r.median[k] = median(tmp, c->n[k]);
        c->r.mean[k] = c->n[k] ? sum / c->n[k] : 0.0;
    }
    /* without a thread choice (or among the one-thread configurations):
     * config 0 is the fixed default, kept unless another beats it clearly */
    for (int k = 1; k < c->r.ncfg; k++)
        if (!(c->r.multi && c->r.threads[k]) && c->n[k] && c->r.median[k] < c->r.median[best1])
            best1 = k;
    if (!(c->r.median[best1] < (1.0 - MARGIN) * c->r.median[0]))
        best1 = 0;
    c->r.chosen = best1;
    c->r.state = 2;
    if (!c->r.multi)
        return;
    c->serial_median = c->r.median[best1];
    for (int k = 0; k < c->r.ncfg; k++)
        if (c->r.threads[k] && c->n[k] && (bestn < 0 || c->r.median[k] < c->r.median[bestn]))
            bestn = k;
    /* all threads: a clear win in the median and in the mean (stalls) */
    if (!c->stalls && bestn >= 0
        && c->r.median[bestn] < (1.0 - MARGIN_THREADS) * c->r.median[best1]
        && c->r.mean[bestn] < c->r.mean[best1]) {
        /* all threads confirmed: the next retrial twice as far (up to
         * RETRIAL_MAX; each one runs the slower one-thread configurations
         * for a few dozen steps, about 2% of 1024 steps): should the host
         * become busy meanwhile, the stalls switch the class at once */
        c->r.chosen = bestn;
        c->interval = was_all ? 2 * c->interval : RETRIAL;
        if (c->interval > RETRIAL_MAX)
            c->interval = RETRIAL_MAX;
        c->retrial_at = c->r.steps_seen + c->interval;
        c->last_stall = c->prev_stall = -STALL_WINDOW - 1;
        serial_choice[c->r.cls] = 0;
    } else {
        choose_serial(c, best1);
    }
}

static cls_t *class_of(int multi, int64_t work)
{
    int ci = ilog2(work);
    return &classes[multi][ci < NCLASS ? ci : NCLASS - 1];
}

/* threads[] of a configuration: 1 thread (0), the resolved count (1), or
 * the fixed rule, work >= cutoff (-1: no thread trial in this class). */
static int threads_of(int code, int rule, int nthreads)
{
    return code < 0 ? rule : code ? nthreads : 1;
}

/* Can a range of the step reach the prefetch threshold, ranges capped at
 * `cap` elements (a parallel step's chunk)? */
static int pf_reachable(int64_t big32, int64_t big64, int64_t cap)
{
    if (big32 > cap)
        big32 = cap;
    if (big64 > cap)
        big64 = cap;
    return big32 * 4 >= ADAMC_PF_MIN || big64 * 8 >= ADAMC_PF_MIN;
}

/* A configuration's prefetch distance (-1: not trialed, the default). */
static int64_t pf_of(int64_t code, int64_t pf)
{
    return code < 0 ? pf : code;
}

void adamc_plan_step(adamc_plan *pl, int64_t work, int64_t total, int nthreads, int probe_flags,
                     int64_t big32, int64_t big64)
{
    int64_t cutoff, pf, chunk;
    int tune, fixed_cutoff, fixed_pf, try_threads, try_pf, rule;
    cls_t *c;
    adamc_envs env;
    adamc_env_read(&env);
    fixed_cutoff = env.has_cutoff;
    cutoff = env.cutoff;
    fixed_pf = env.has_pf;
    pf = env.pf;
    chunk = env.has_chunk ? env.chunk : adamc_default_chunk(total);
    tune = env.tune;
    if (!fixed_cutoff)
        cutoff = DEFAULT_CUTOFF;
    if (!fixed_pf)
        pf = DEFAULT_PF;
    /* the fixed defaults */
    rule = work >= cutoff ? nthreads : 1;
    pl->nthreads = rule;
    pl->pf_ahead = pf;
    pl->chunk = chunk;
    pl->slot = -1;
    pl->cls = pl->multi = 0;
    try_threads = tune && !fixed_cutoff && nthreads > 1 && work >= ((int64_t)1 << THREADS_LO)
                  && work < ((int64_t)1 << THREADS_HI);
    try_pf = tune && !fixed_pf && work >= ((int64_t)1 << PF_LO);
    if (probe_flags & ADAMC_PROBE) {
        /* the roofline probe: the threads a step of its size uses now, the
         * prefetch its caller asked for (at the configured distance) */
        if (probe_flags & ADAMC_NO_PREFETCH)
            pl->pf_ahead = 0;
        if (try_threads) {
            c = class_of(1, work);
            LOCK();
            pl->nthreads = c->r.state == 2 ? threads_of(c->r.threads[c->r.chosen], rule, nthreads)
                                           : 1;
            UNLOCK();
        }
        return;
    }
    if (!try_threads && tune && !fixed_cutoff && nthreads <= 1
        && work >= ((int64_t)1 << THREADS_LO) && work < ((int64_t)1 << THREADS_HI)
        && serial_choice[ilog2(work)]) {
        /* the shim passed one thread because this class chose it: the
         * class's decision holds the prefetch choice too */
        c = class_of(1, work);
        LOCK();
        pl->nthreads = 1;     /* (adamc_tune_serial counted the step) */
        pl->pf_ahead = pf_of(c->r.pf[c->r.chosen], pf);
        UNLOCK();
        return;
    }
    if (!try_threads && !try_pf)
        return;
    if (!try_threads && !pf_reachable(big32, big64, rule > 1 ? chunk : INT64_MAX))
        return;   /* prefetch cannot change the code that runs: nothing to trial */
    c = class_of(try_threads, work);
    LOCK();
    if (c->r.state == 0) {
        int n = 0, nthr = try_threads ? 2 : 1;
        int thr[2];
        /* configuration 0 is the fixed default: one thread in the band */
        thr[0] = try_threads ? 0 : -1;
        thr[1] = 1;
        for (int a = 0; a < nthr; a++) {
            int par = threads_of(thr[a], rule, nthreads) > 1;
            int reach = pf_reachable(big32, big64, par ? chunk : INT64_MAX);
            c->r.threads[n] = thr[a];
            c->r.pf[n++] = reach ? pf : -1;
            if (reach && try_pf) {
                c->r.threads[n] = thr[a];
                c->r.pf[n++] = 0;
                if (!try_threads) {   /* and a farther distance */
                    c->r.threads[n] = thr[a];
                    c->r.pf[n++] = FAR_PF * pf;
                }
            }
        }
        c->r.cls = ilog2(work) < NCLASS ? ilog2(work) : NCLASS - 1;
        c->r.multi = try_threads;
        c->r.ncfg = n;
        c->r.rounds = c->rounds = try_threads ? ROUNDS_THREADS : ROUNDS;
        c->r.state = n > 1 ? 1 : 2;   /* one configuration: nothing to trial */
        c->interval = 0;
    }
    c->r.steps_seen++;
    if (c->r.state == 2 && c->r.multi && c->r.steps_seen >= c->retrial_at) {
        /* other processes, BLAS's threads or a data loader may have come or
         * gone since: try the thread counts again */
        c->r.state = 1;
        c->r.samples = 0;
        c->r.retrials++;
        serial_choice[c->r.cls] = 0;
    }
    if (c->r.state == 2) {
        int k = c->r.chosen;
        pl->nthreads = threads_of(c->r.threads[k], rule, nthreads);
        pl->pf_ahead = pf_of(c->r.pf[k], pf);
        if (c->r.multi && pl->nthreads > 1 && !c->busy) {
            /* all threads chosen: time the step, to see stalls */
            pl->cls = c->r.cls;
            pl->multi = 1;
            pl->slot = MONITOR_SLOT;
            c->busy = 1;
        }
    } else if (c->r.steps_seen > ADAMC_TUNE_SKIP && !c->busy) {
        int s = c->r.samples, n = c->r.ncfg, round = s / n, pos = s % n;
        int k = round % 2 == 0 ? pos : n - 1 - pos;   /* ABBA order */
        if (s == 0) {
            c->stalls = 0;
            for (int i = 0; i < n; i++)
                c->n[i] = 0;
        }
        pl->nthreads = threads_of(c->r.threads[k], rule, nthreads);
        pl->pf_ahead = pf_of(c->r.pf[k], pf);
        pl->cls = c->r.cls;
        pl->multi = try_threads;
        pl->slot = s;
        c->busy = 1;
    } else {
        pl->nthreads = threads_of(c->r.threads[0], rule, nthreads);
        pl->pf_ahead = pf_of(c->r.pf[0], pf);
    }
    UNLOCK();
}

/* The fastest timed one-thread step of the running trial so far (0: none). */
static double fastest_serial(const cls_t *c)
{
    double best = 0.0;
    for (int k = 0; k < c->r.ncfg; k++)
        if (!c->r.threads[k])
            for (int i = 0; i < c->n[k]; i++)
                if (best == 0.0 || c->t[k][i] < best)
                    best = c->t[k][i];
    return best;
}

void adamc_plan_done(const adamc_plan *pl, double seconds)
{
    cls_t *c = &classes[pl->multi][pl->cls];
    LOCK();
    if (c->busy && c->r.state == 2 && pl->slot == MONITOR_SLOT) {
        /* a step on all threads after the class chose them */
        if (seconds > STALL * c->serial_median) {
            if (c->r.steps_seen - c->prev_stall <= STALL_WINDOW) {
                c->r.fallbacks++;
                /* the best one-thread configuration of the trial */
                int best1 = 0;
                for (int k = 1; k < c->r.ncfg; k++)
                    if (!c->r.threads[k] && c->r.median[k] < c->r.median[best1])
                        best1 = k;
                c->interval = RETRIAL;   /* (doubled: retried after 2048 steps) */
                choose_serial(c, best1);
            }
            c->prev_stall = c->last_stall;
            c->last_stall = c->r.steps_seen;
        }
    } else if (c->busy && c->r.state == 1 && pl->slot == c->r.samples) {
        int n = c->r.ncfg, round = pl->slot / n, pos = pl->slot % n;
        int k = round % 2 == 0 ? pos : n - 1 - pos;
        double fast1 = fastest_serial(c);
        c->t[k][c->n[k]++] = seconds;
        c->r.samples++;
        c->r.early = 0;
        if (c->r.multi && c->r.threads[k] && fast1 > 0.0 && seconds > STALL * fast1
            && ++c->stalls >= 2) {
            c->r.early = 1;     /* a busy host: one thread, now */
            decide(c);
        } else if (c->r.samples == n * c->rounds) {
            decide(c);
        }
    }
    c->busy = 0;
    UNLOCK();
}

int adamc_tune_serial(int64_t work)
{
    adamc_envs env;
    cls_t *c;
    int serial = 1;
    if (!(work >= ((int64_t)1 << THREADS_LO) && work < ((int64_t)1 << THREADS_HI)
          && serial_choice[ilog2(work)]))
        return 0;
    adamc_env_read(&env);   /* the environment still decides first */
    if (!env.tune || env.has_cutoff)
        return 0;
    /* the step is this class's: count it, and retry the thread choice in
     * time (the shim then resolves the thread count and the trial runs) */
    c = class_of(1, work);
    LOCK();
    c->r.steps_seen++;
    if (c->r.steps_seen >= c->retrial_at) {
        c->r.state = 1;
        c->r.samples = 0;
        c->r.retrials++;
        serial_choice[c->r.cls] = 0;
        c->r.steps_seen--;     /* plan_step counts it */
        serial = 0;
    }
    UNLOCK();
    return serial;
}

int adamc_tune_rows(adamc_tune_row *out, int max)
{
    int n = 0;
    LOCK();
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < NCLASS; i++)
            if (classes[m][i].r.state != 0 && n < max)
                out[n++] = classes[m][i].r;
    UNLOCK();
    return n;
}

void adamc_tune_reset(void)
{
    LOCK();
    memset(classes, 0, sizeof classes);
    for (int i = 0; i < NCLASS; i++)
        serial_choice[i] = 0;
    UNLOCK();
}
