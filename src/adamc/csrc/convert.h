/*
 * Storage conversions for 16-bit types, and the stochastic-rounding generator.
 *
 * Plain integer and float32 arithmetic with no branches in the element
 * functions (selects only), so that each ISA variant's compiler flags
 * vectorise the block loops of blocked.inc.  Every function here has a
 * NumPy twin in adamc/reference.py (_f16_bits, _bf16_bits, _sr_bits, ...)
 * that produces the same bits.
 *
 * Rounding to nearest even follows NumPy's float32 -> float16 cast and
 * ml_dtypes' float32 -> bfloat16 cast bit for bit, NaNs included
 * (float16 keeps the payload's top bits, or 1; bfloat16 gives sign | 0x7fc0).
 * Stochastic rounding (Gupta et al. 2015; Connolly, Higham & Mary 2021):
 * round up with probability equal to the distance to the value below, in
 * units of the gap, drawn from 32 random bits; exactly unbiased in the normal
 * range of the target, and to 2^-32 for float16 subnormal results.
 */
#ifndef ADAMC_CONVERT_H
#define ADAMC_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t adamc_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float adamc_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- float16 ------------------------------------------------------------ */

static inline float adamc_h2f(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t em = h & 0x7fffu;
    const uint32_t normal = (em << 13) + 0x38000000u;          /* rebias 15 -> 127 */
    const uint32_t infnan = 0x7f800000u | ((em & 0x3ffu) << 13);
    const uint32_t sub = adamc_f2u((float)em * 5.9604644775390625e-08f); /* em * 2^-24, exact */
    const uint32_t r = em >= 0x7c00u ? infnan : (em >= 0x0400u ? normal : sub);
    return adamc_u2f(r | sign);
}

static inline uint16_t adamc_f2h_nan(uint32_t ax)
{
    uint32_t nan = 0x7c00u | ((ax >> 13) & 0x3ffu);
    return (uint16_t)(nan + (nan == 0x7c00u));   /* keep it a NaN */
}

/* Round to nearest even. */
static inline uint16_t adamc_f2h(float f)
{
    const uint32_t x = adamc_f2u(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    const uint32_t m = ax - 0x38000000u;                       /* rebias 127 -> 15 */
    const uint32_t normal = (m + 0x0fffu + ((m >> 13) & 1u)) >> 13;
    /* below 2^-14 the result is subnormal: adding 0.5 aligns |f| to units of
     * 2^-24 (the float16 subnormal spacing) with the FPU's own rounding */
    const uint32_t sub = adamc_f2u(adamc_u2f(ax) + 0.5f) - 0x3f000000u;
    const uint32_t r = ax > 0x7f800000u ? adamc_f2h_nan(ax)
                     : ax >= 0x477ff000u ? 0x7c00u              /* >= 65520: inf */
                     : ax >= 0x38800000u ? normal : sub;
    return (uint16_t)(r | sign);
}

/* Round stochastically with 32 random bits r. */
static inline uint16_t adamc_f2h_sr(float f, uint32_t r)
{
    const uint32_t x = adamc_f2u(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    const uint32_t m = ax - 0x38000000u;
    const uint32_t normal = (m + (r & 0x1fffu)) >> 13;
    /* subnormal result: |f| = M * 2^(E - 150), in units of 2^-24 M >> (126 - E),
     * rounded up when r < the remainder scaled to 32 bits */
    const uint32_t e = ax >> 23;
    const uint32_t E = e ? e : 1u;
    const uint64_t M = (ax & 0x7fffffu) | (e ? 0x800000u : 0u);
    const uint32_t shift = 126u - E;                            /* >= 14 here */
    const uint64_t rem = shift < 64u ? M & ((1ull << shift) - 1u) : M;
    const uint64_t thr = shift <= 32u ? rem << (32u - shift)
                       : (shift - 32u < 64u ? M >> (shift - 32u) : 0u);
    const uint32_t sub = (uint32_t)(shift < 64u ? M >> shift : 0u) + ((uint64_t)r < thr);
    const uint32_t res = ax > 0x7f800000u ? adamc_f2h_nan(ax)
                       : ax >= 0x47800000u ? 0x7c00u            /* >= 65536: inf */
                       : ax >= 0x38800000u ? normal : sub;
    return (uint16_t)(res | sign);
}

/* ---- bfloat16 ----------------------------------------------------------- */

static inline float adamc_b2f(uint16_t b) { return adamc_u2f((uint32_t)b << 16); }

static inline uint16_t adamc_f2b(float f)
{
    const uint32_t x = adamc_f2u(f);
    const uint32_t nan = ((x >> 16) & 0x8000u) | 0x7fc0u;
    const uint32_t rne = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    return (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? nan : rne);
}

static inline uint16_t adamc_f2b_sr(float f, uint32_t r)
{
    const uint32_t x = adamc_f2u(f);
    const uint32_t nan = ((x >> 16) & 0x8000u) | 0x7fc0u;
    return (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? nan : (x + (r & 0xffffu)) >> 16);
}

/* ---- the generator: a pure function of (key, element index) -------------- */

/* A 32-bit integer hash with good avalanche (the "lowbias32" constants,
 * C. Wellons, hash-prospector); 32-bit multiplies vectorise everywhere. */
static inline uint32_t adamc_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* The 32 random bits of element i of one stream (stream keys: adamc_sr_key). */
static inline uint32_t adamc_sr_bits(uint32_t stream_key, int64_t i)
{
    return adamc_hash32(adamc_hash32((uint32_t)i + stream_key) ^ (uint32_t)((uint64_t)i >> 32));
}

#endif
