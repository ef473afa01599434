/*
 * 8-bit blockwise state (state_dtype="int8", issue 13): the tables of the
 * two dynamic maps and the per-element quantization.  The NumPy twins are
 * reference.dynamic_map, quantize_blockwise and dequantize_blockwise; the
 * format is in docs/int8-state.md.
 *
 * A value's code is the number of the map's 255 float32 midpoints strictly
 * below it (the nearest map value; a value on a midpoint takes the lower
 * code).  Instead of a binary search, the value's float32 bits pick a
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

#endif
