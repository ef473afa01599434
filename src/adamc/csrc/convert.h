/*
 * Storage conversions for 16-bit types, and the stochastic-rounding generator.
 *
 * Plain integer and float32 arithmetic with no branches in the element
 * functions (selects only), so that each ISA variant's compiler flags
 * vectorise the block loops of blocked.inc.  Every function here has a
 * NumPy twin in adamc/reference.py (_f16_sr, _bf16_sr, sr_hash, sr_bits, ...)
 * that produces the same bits.
 *
 * Rounding to nearest even follows NumPy's float32 -> float16 cast and
 * ml_dtypes' float32 -> bfloat16 cast bit for bit, NaNs included
 * (float16 keeps the payload's top bits, or 1; bfloat16 gives sign | 0x7fc0).
 * Stochastic rounding (Gupta et al. 2015; Connolly, Higham & Mary 2021):
 * round up with probability equal to the distance to the value below, in
 * units of the gap, drawn from 16 random bits (the low 16 bits of r; float16
 * normal results use 13 of them); exactly unbiased in the normal range of
 * the target, and to 2^-16 of a unit for float16 subnormal results.
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

/* Round stochastically with the random bits r & 0xffff.  A subnormal result
 * (|f| < 2^-14) is |f| in units of 2^-24 with 16 fraction bits, T =
 * trunc(|f| * 2^40) (the product is exact and below 2^26), plus the 16 bits,
 * shifted down 16: rounding up with probability frac(T / 2^16), within 2^-16
 * of a unit of the exact distance. */
static inline uint16_t adamc_f2h_sr(float f, uint32_t r)
{
    const uint32_t x = adamc_f2u(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    const uint32_t m = ax - 0x38000000u;
    const uint32_t normal = (m + (r & 0x1fffu)) >> 13;
    const uint32_t fixed = ax < 0x38800000u ? (uint32_t)(adamc_u2f(ax) * 1099511627776.0f)  /* 2^40 */ : 0u;
    const uint32_t sub = (fixed + (r & 0xffffu)) >> 16;
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

/* The random word of element i in one parameter's step (key: adamc_sr_key):
 * one hash per element, shared by all of the element's stored values.  The
 * index's high word moves the counter by a multiple of an odd constant. */
#define ADAMC_SR_HI 0x9e3779b9u
static inline uint32_t adamc_sr_hash(uint32_t key, int64_t i)
{
    return adamc_hash32((uint32_t)i + key + (uint32_t)((uint64_t)i >> 32) * ADAMC_SR_HI);
}

/* Stored value s of an element (ADAMC_SR_PARAM, ...) rounds with the low 16
 * bits of adamc_sr_take(h, s): the parameter h's low half, exp_avg its high
 * half, exp_avg_sq and max_exp_avg_sq the high half of h times an odd
 * constant (one multiply each), so that no two values share their bits. */
enum { ADAMC_SR_PARAM = 0, ADAMC_SR_EXP_AVG = 1, ADAMC_SR_EXP_AVG_SQ = 2, ADAMC_SR_MAX = 3 };
#define ADAMC_SR_MUL2 0x9e3779b1u
#define ADAMC_SR_MUL3 0x85ebca77u
static inline uint32_t adamc_sr_take(uint32_t h, int s)
{
    return s == ADAMC_SR_PARAM ? h
         : s == ADAMC_SR_EXP_AVG ? h >> 16
         : (h * (s == ADAMC_SR_EXP_AVG_SQ ? ADAMC_SR_MUL2 : ADAMC_SR_MUL3)) >> 16;
}

#endif
