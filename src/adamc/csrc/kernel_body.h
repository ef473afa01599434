/*
 * Instantiates the Adam kernel for one ISA.  A kernel_<isa>.c file defines
 * ADAMC_ISA (the variant's name as an identifier) and, when its compiler
 * flags provide fused multiply-add, ADAMC_USE_FMA; then includes this file.
 * Each such file is compiled with its own flags (setup.py) and exports one
 * symbol, adamc_kernel_<isa>().
 */
#include <math.h>
#include <string.h>
#include "adamc.h"
#include "convert.h"
#include "quant.h"

#if defined(__GNUC__) || defined(__clang__)
#define ADAMC_ALWAYS_INLINE __attribute__((always_inline))
#else
#define ADAMC_ALWAYS_INLINE
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

/* Software prefetch (adam_loop.inc): blocks of 4 cache lines, each asking
 * for the lines adamc_prefetch_ahead() bytes ahead in every stream (4 KiB by
 * default; 0: no prefetch, chosen per machine by tune.c), in ranges of 1 MiB
 * a stream or more.  Why: once the sqrt and the division fill the core's window, the
 * hardware prefetcher alone can fall behind on large buffers; in cache the
 * extra instructions only cost, hence the threshold.  Whether it pays
 * depends on the CPU (it costs 12% on a Zen 4 host): tune.c measures it on
 * the first large steps that can reach ADAMC_PF_MIN (in adamc.h: the tuner
 * reads it too), bench/ab_probe.py re-measures it (step and probe,
 * with and without), and docs/performance.md logs what each host showed. */
#define ADAMC_LINE 64
#define ADAMC_PF_BLOCK (4 * ADAMC_LINE)
#if defined(__GNUC__) || defined(__clang__)
#define ADAMC_PREFETCH(addr) __builtin_prefetch((addr), 0, 3)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define ADAMC_PREFETCH(addr) _mm_prefetch((const char *)(addr), _MM_HINT_T0)
#else
#define ADAMC_PREFETCH(addr) ((void)0)
#endif

/* How many norm chunks one thread sums side by side (norm.inc's
 * adamc_sumsq_ways): enough independent additions to cover the adder's
 * latency times its throughput, within the registers the ISA has.  It
 * never changes a result (each chunk keeps its own lanes and order). */
#ifndef ADAMC_NORM_WAYS
#define ADAMC_NORM_WAYS 2
#endif

#define ADAMC_CAT_(a, b) a##b
#define ADAMC_CAT(a, b) ADAMC_CAT_(a, b)
/* this variant's copy of a function: name_<isa> */
#define ISA(name) ADAMC_CAT(ADAMC_CAT(name, _), ADAMC_ISA)

#if defined(_MSC_VER) && !defined(__clang__)
#define ADAMC_ALIGNED(n) __declspec(align(n))
#else
#define ADAMC_ALIGNED(n) __attribute__((aligned(n)))
#endif

/* FMA is chosen on purpose, per variant, never by the compiler's contraction:
 * a fused a*b+c is one rounding, which moves results by up to an ulp against
 * the two-rounding reference; the tests' tolerances say so. */
#ifdef ADAMC_USE_FMA
#define ADAMC_MULADD_F32(a, b, c) fmaf((a), (b), (c))
#define ADAMC_MULADD_F64(a, b, c) fma((a), (b), (c))
#else
#define ADAMC_MULADD_F32(a, b, c) ((a) * (b) + (c))
#define ADAMC_MULADD_F64(a, b, c) ((a) * (b) + (c))
#endif

/* One instantiation of adam_loop.inc per (parameter, gradient) dtype pair. */
#define T float
#define G float
#define SFX(name) ADAMC_CAT(ADAMC_CAT(name, _f32f32_), ADAMC_ISA)
#define MULADD ADAMC_MULADD_F32
#define SQRT sqrtf
#include "adam_loop.inc"
#undef G
#undef SFX
#define G double
#define SFX(name) ADAMC_CAT(ADAMC_CAT(name, _f32f64_), ADAMC_ISA)
#include "adam_loop.inc"
#undef T
#undef G
#undef SFX
#undef MULADD
#undef SQRT

#define T double
#define G double
#define SFX(name) ADAMC_CAT(ADAMC_CAT(name, _f64f64_), ADAMC_ISA)
#define MULADD ADAMC_MULADD_F64
#define SQRT sqrt
#include "adam_loop.inc"
#undef G
#undef SFX
#define G float
#define SFX(name) ADAMC_CAT(ADAMC_CAT(name, _f64f32_), ADAMC_ISA)
#include "adam_loop.inc"
#undef T
#undef G
#undef SFX
#undef MULADD
#undef SQRT

#include "blocked.inc"
#include "fused16.inc"
#include "q8fused.inc"
#include "norm.inc"

/* Every task goes through here: the direct loops when the buffers are in
 * the compute type (float32/float64 storage, either float gradient), the
 * one-pass 16-bit loops (fused16.inc) where they exist, the blocked
 * conversions otherwise. */
static void ISA(adamc_range)(const adamc_task *t, int64_t lo, int64_t hi)
{
    const int gd = t->grad_dtype, direct = adamc_direct_bytes(t);
    if (t->state_dtype == ADAMC_Q8) {   /* 8-bit state: per 256-element block */
#ifdef ADAMC_HAVE_Q8_FUSED
        if (ISA(adamc_q8_fused)(t, lo, hi))   /* map version 2, one pass */
            return;
#endif
        ISA(adamc_blocked_q8)(t, lo, hi);
    } else if (direct == 8) {
        if (gd == ADAMC_F64)
            ISA(adamc_range_f64f64)(t, lo, hi);
        else
            ISA(adamc_range_f64f32)(t, lo, hi);
    } else if (direct == 4) {
        if (gd == ADAMC_F32)
            ISA(adamc_range_f32f32)(t, lo, hi);
        else
            ISA(adamc_range_f32f64)(t, lo, hi);
    } else if (t->dtype == ADAMC_F64) {
        ISA(adamc_blocked_f64)(t, lo, hi);
    } else {
#ifdef ADAMC_HAVE_FUSED16
        if (ISA(adamc_fused16)(t, lo, hi))   /* the common combinations, one pass */
            return;
#endif
        ISA(adamc_blocked_f32)(t, lo, hi);
    }
}

#define ADAMC_STR_(x) #x
#define ADAMC_STR(x) ADAMC_STR_(x)

const adamc_kernel *ADAMC_CAT(adamc_kernel_, ADAMC_ISA)(void)
{
    static const adamc_kernel k = {ADAMC_STR(ADAMC_ISA), ISA(adamc_range),
                                   ISA(adamc_segment_sumsq), ISA(adamc_sumsq_ways),
                                   ADAMC_NORM_WAYS, ISA(adamc_quantize)};
    return &k;
}
