/*
 * 8-bit blockwise state (state_dtype="int8", issue 13): the tables of the
 * two dynamic maps and the per-element quantization.  The NumPy twins are
 * reference.dynamic_map, quantize_blockwise and dequantize_blockwise; the
 * format is in docs/int8-state.md.
 *
 * A value's code is the number of the map's 255 float32 midpoints strictly
 * below it (the nearest map value; a value on a midpoint takes the lower
 * code); the unsigned map's first midpoint is -inf, so exp_avg_sq never
 * takes code 0 (docs/int8-state.md).  Instead of a binary search, the value's float32 bits pick a
 * bucket: sign, exponent and the top ADAMC_Q_KBITS mantissa bits of |x|,
 * clamped to [2^-23, 1.0].  Every bucket holds at most one midpoint (for
 * both maps, checked when the tables are built), so the code is the count
 * of midpoints below the bucket, plus one compare with the midpoint inside
 * it.  One 32-bit table entry holds both: the count in the high half and
 * the low 16 bits of the midpoint's magnitude in the low half (its high
 * bits are the bucket's own, shared with every value in it), so the compare
 * is an integer compare of magnitudes: |x| > |mid| for positive x, |x| <
 * |mid| for negative.  A bucket without a midpoint stores 0xffff (positive)
 * or 0 (negative), which no value of the bucket passes.  One load (one
 * gather in the AVX2/AVX-512 variants) and a compare per value.
 */
#ifndef ADAMC_QUANT_H
#define ADAMC_QUANT_H

#include <stdint.h>
#include "convert.h"

#define ADAMC_QBLOCK 256                 /* elements per scale (_spec.QUANT_BLOCK) */
#define ADAMC_Q_KBITS 7                  /* mantissa bits in a bucket's key         */
#define ADAMC_Q_SHIFT (23 - ADAMC_Q_KBITS)
#define ADAMC_Q_ALO 0x34000000u          /* 2^-23: below every positive midpoint    */
#define ADAMC_Q_AHI 0x3f800000u          /* 1.0: above every midpoint               */
#define ADAMC_Q_NKEY (((ADAMC_Q_AHI - ADAMC_Q_ALO) >> ADAMC_Q_SHIFT) + 1)
#define ADAMC_Q_TINY 1e-38f              /* scales below this divide as 1e-38 (bnb) */

typedef struct {
    float map[256];                      /* the dynamic map, sorted            */
    float mid[256];                      /* the 255 midpoints; [255] = +inf     */
    uint32_t tab[2 * ADAMC_Q_NKEY];      /* per bucket (+ sign half): count << 16
                                          * | low bits of the midpoint inside  */
} adamc_qmap;

/* [0]: signed map (exp_avg), [1]: unsigned map (exp_avg_sq).  Built by
 * adamc_quant_init() before any step (at import). */
extern adamc_qmap adamc_qmaps[2];
/* Build the tables; returns 0, or -1 if a bucket held two midpoints. */
int adamc_quant_init(void);

/* The clamped magnitude bits of a normalized value (NaN already 0). */
static inline uint32_t adamc_q_mag(uint32_t u)
{
    const uint32_t a = u & 0x7fffffffu;
    return a < ADAMC_Q_ALO ? ADAMC_Q_ALO : (a > ADAMC_Q_AHI ? ADAMC_Q_AHI : a);
}

/* The bucket of a clamped magnitude and sign. */
static inline uint32_t adamc_q_key(uint32_t a, uint32_t u)
{
    return ((a - ADAMC_Q_ALO) >> ADAMC_Q_SHIFT) + (u >> 31) * ADAMC_Q_NKEY;
}

/* The reciprocal a block's values are normalized with. */
static inline float adamc_q_recip(float absmax)
{
    return 1.0f / (absmax >= ADAMC_Q_TINY ? absmax : ADAMC_Q_TINY);
}

/* One value's code: x times the block's reciprocal r. */
static inline uint8_t adamc_q_code(const adamc_qmap *q, float x, float r)
{
    float s = x * r;
    s = s != s ? 0.0f : s;
    const uint32_t u = adamc_f2u(s), a = adamc_q_mag(u);
    const uint32_t e = q->tab[adamc_q_key(a, u)];
    const uint32_t mid = (a & 0xffff0000u) | (e & 0xffffu);
    return (uint8_t)((e >> 16) + ((u >> 31) ? a < mid : a > mid));
}

/* ---- map version 2 ("pow2"): codes from the float's bits ---------------
 * No table: a normalized value's code is its float32 bits rounded to 8
 * exponent bits and ADAMC_P2_MBITS mantissa bits (half up: add half a unit
 * of the kept bits, shift), offset so that 1.0 is the top code, like a
 * float8 conversion.  |s| is clamped to 1.0 first.  exp_avg (signed): sign
 * bit 7, magnitude 0..127 (0: zero, 127: 1.0); exp_avg_sq (unsigned): 1..255
 * (255: 1.0; never 0, docs/int8-state.md).  Integer arithmetic only, so
 * every variant gives the same codes.  NumPy twins: reference.quantize_blockwise
 * and dequantize_blockwise with map version 2. */
#define ADAMC_QMAP_DYNAMIC 1             /* map version 1: bitsandbytes' dynamic maps */
#define ADAMC_QMAP_POW2 2                /* map version 2: this one                  */
#define ADAMC_P2_MBITS 3
#define ADAMC_P2_SHIFT (23 - ADAMC_P2_MBITS)
#define ADAMC_P2_HALF (1u << (ADAMC_P2_SHIFT - 1))
#define ADAMC_P2_ONE 0x3f800000u
/* 1.0's rounded bits minus the top code: the signed magnitude's and the
 * unsigned code's offsets */
#define ADAMC_P2_MOFF ((ADAMC_P2_ONE >> ADAMC_P2_SHIFT) - 127)
#define ADAMC_P2_VOFF ((ADAMC_P2_ONE >> ADAMC_P2_SHIFT) - 255)

/* The rounded bits of |s|, offset: (min(|s| bits, 1.0) + half) >> shift - off,
 * computed as one add and an arithmetic shift (off << shift is a multiple
 * of 2^shift, so the shift is exact). */
static inline int32_t adamc_p2_q(uint32_t u, uint32_t off)
{
    uint32_t a = u & 0x7fffffffu;
    a = a > ADAMC_P2_ONE ? ADAMC_P2_ONE : a;
    return (int32_t)(a + ADAMC_P2_HALF - (off << ADAMC_P2_SHIFT)) >> ADAMC_P2_SHIFT;
}

/* One value's code: x times the block's reciprocal r (NaN counts as 0). */
static inline uint8_t adamc_p2_code(int is_signed, float x, float r)
{
    float s = x * r;
    s = s != s ? 0.0f : s;
    const uint32_t u = adamc_f2u(s);
    if (is_signed) {
        const int32_t mag = adamc_p2_q(u, ADAMC_P2_MOFF);
        return (uint8_t)((uint32_t)(mag < 0 ? 0 : mag) | ((u >> 24) & 0x80u));
    }
    const int32_t c = adamc_p2_q(u, ADAMC_P2_VOFF);
    return (uint8_t)(c < 1 ? 1 : c);
}

/* A code's map value (times the block's absmax gives the state's value);
 * signed code 128 is -0.0. */
static inline float adamc_p2_value(int is_signed, uint8_t c)
{
    if (is_signed) {
        const uint32_t mag = c & 127u;
        return adamc_u2f((mag ? (mag + ADAMC_P2_MOFF) << ADAMC_P2_SHIFT : 0u)
                         | ((uint32_t)(c & 128u) << 24));
    }
    return adamc_u2f(((uint32_t)c + ADAMC_P2_VOFF) << ADAMC_P2_SHIFT);
}

#endif
