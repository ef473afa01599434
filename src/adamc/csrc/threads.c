/* The one thread-count resolver.  Read at every (parallel-sized) step, so
 * environment changes and threadpoolctl limits apply without re-import:
 *   adamc.set_num_threads(n) > ADAMC_NUM_THREADS > OMP_NUM_THREADS > the
 *   CPUs this process may use (affinity mask and cgroup quota),
 * the last two capped by omp_get_max_threads(), which is what
 * threadpoolctl.threadpool_limits lowers. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "adamc.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(_WIN32)
#include <windows.h>
#else
#include <pthread.h>
#include <unistd.h>
#endif

static int user_threads = 0;

/* Fork safety.  GNU libgomp keeps its worker pool across fork() although the
 * workers do not exist in the child, so the child's first parallel region
 * hangs.  Once a process has run a parallel region, a child forked from it
 * runs every step serially (use multiprocessing's spawn or forkserver for
 * parallel children). */
static volatile int parallel_used = 0;
static volatile int forked_after_parallel = 0;

#if !defined(_WIN32)
static void on_fork_child(void)
{
    if (parallel_used)
        forked_after_parallel = 1;
}
#endif

void adamc_threads_init(void)
{
    static int done = 0;
    if (done)
        return;
    done = 1;
#if !defined(_WIN32)
    pthread_atfork(NULL, NULL, on_fork_child);
#endif
}

void adamc_note_parallel(void) { parallel_used = 1; }
int adamc_forked_child(void) { return forked_after_parallel; }

int adamc_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void adamc_set_num_threads(int n) { user_threads = n > 0 ? n : 0; }
int adamc_user_num_threads(void) { return user_threads; }

/* Below this much work in one step (float32 elements; a float64 element
 * counts twice), one thread does it all.  With ADAMC_SERIAL_CUTOFF set
 * (read at every step), that value, and nothing is trialed.  Otherwise
 * steps from 2^15 work on are offered the resolved thread count, and tune.c
 * decides per size class whether a second thread pays on this machine
 * (the fixed default it must beat: 131072, where two threads were clearly
 * faster on the development hosts; bench/thread_cutoff.py re-measures it).
 * With ADAMC_TUNE=0, that default. */
int64_t adamc_serial_cutoff(void)
{
    adamc_envs env;
    adamc_env_read(&env);
    if (env.has_cutoff)
        return env.cutoff;
    return env.tune ? 32768 : 131072;
}

#if defined(__linux__)
/* cgroup v2 cpu.max ("max 100000" or "200000 100000"), else v1.  Read once. */
static int cgroup_cpus(void)
{
    static int cached = -2;
    if (cached == -2) {
        long long quota = -1, period = 0;
        FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
        cached = -1;
        if (f) {
            char q[32] = {0};
            if (fscanf(f, "%31s %lld", q, &period) == 2 && strcmp(q, "max") != 0)
                quota = atoll(q);
            fclose(f);
        } else {
            f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r");
            if (f) {
                if (fscanf(f, "%lld", &quota) != 1)
                    quota = -1;
                fclose(f);
                f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r");
                if (f) {
                    if (fscanf(f, "%lld", &period) != 1)
                        period = 0;
                    fclose(f);
                }
            }
        }
        if (quota > 0 && period > 0)
            cached = (int)((quota + period - 1) / period);
    }
    return cached;
}
#endif

int adamc_available_cpus(void)
{
    int n = 1;
#if defined(__linux__)
    cpu_set_t set;
    int cg;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    else
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    cg = cgroup_cpus();
    if (cg > 0 && cg < n)
        n = cg;
#elif defined(_WIN32)
    n = (int)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
#else
    n = (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n > 0 ? n : 1;
}

/* A positive integer, or with `list` the first item of a list such as
 * OMP_NUM_THREADS="4,2" (nested levels; ADAMC_NUM_THREADS is one number).
 * Returns 0 when unset or empty, -1 when malformed. */
static int parse_threads(const char *name, int list)
{
    const char *e = getenv(name);
    char *end;
    long v;
    if (!e || !*e)
        return 0;
    v = strtol(e, &end, 10);
    while (*end == ' ')
        end++;
    if (end == e || v < 1 || v > 1 << 16 || (*end != '\0' && !(list && *end == ',')))
        return -1;
    return (int)v;
}

/* > 0: the thread count.  -1: ADAMC_NUM_THREADS is malformed (the shim
 * raises).  A malformed OMP_NUM_THREADS is ignored, as OpenMP runtimes do. */
int adamc_resolve_num_threads(void)
{
    int n;
#ifdef _OPENMP
    if (forked_after_parallel) {
        /* still report a malformed variable, but never go parallel */
        return parse_threads("ADAMC_NUM_THREADS", 0) < 0 ? -1 : 1;
    }
    if (user_threads > 0)
        return user_threads;
    n = parse_threads("ADAMC_NUM_THREADS", 0);
    if (n != 0)
        return n;
    n = parse_threads("OMP_NUM_THREADS", 1);
    if (n <= 0)
        n = adamc_available_cpus();
    {
        int cap = omp_get_max_threads();
        if (cap < n)
            n = cap;
    }
    return n > 0 ? n : 1;
#else
    /* Built without OpenMP: every step is serial, whatever was asked. */
    n = parse_threads("ADAMC_NUM_THREADS", 0);
    return n < 0 ? -1 : 1;
#endif
}
