/*
 * The tables of the 8-bit dynamic maps (quant.h), built once at import.
 * The map is bitsandbytes' create_dynamic_map computed as it does with
 * torch, in float32 (reference.dynamic_map says how; the tests compare the
 * two bit for bit).  -ffp-contract=off (setup.py) keeps each operation
 * rounded as written.
 */
#include <math.h>
#include <stdlib.h>
#include "adamc.h"
#include "quant.h"

adamc_qmap adamc_qmaps[2];

/* torch.linspace(0.1, 1, n) in float32: each element rounded once from the
 * exact start + i * step (first half) or end - (n - 1 - i) * step. */
static void linspace32(float *out, int n)
{
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / (float)(n - 1);
    for (int i = 0; i < n; i++)
        out[i] = i < n / 2 ? (float)((double)start + (double)i * (double)step)
                           : (float)((double)end - (double)(n - 1 - i) * (double)step);
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int build(adamc_qmap *q, int sign)
{
    float lin[130];
    int k = 0;
    for (int j = 0; j < 7; j++) {
        const int count = sign ? 1 << j : 1 << (j + 1);
        const float scale = (float)pow(10.0, j - 6);
        linspace32(lin, count + 1);
        for (int i = 0; i < count; i++) {
            const float mean = (lin[i] + lin[i + 1]) / 2.0f;
            q->map[k++] = scale * mean;
            if (sign)
                q->map[k++] = -scale * mean;
        }
    }
    q->map[k++] = 0.0f;
    q->map[k++] = 1.0f;
    qsort(q->map, 256, sizeof(float), cmp_float);
    for (int i = 0; i < 255; i++)
        q->mid[i] = (q->map[i] + q->map[i + 1]) / 2.0f;
    q->mid[255] = INFINITY;
    if (!sign)   /* exp_avg_sq never takes code 0 (reference.quantize_blockwise) */
        q->mid[0] = -INFINITY;
    /* each bucket: the count of midpoints below its lowest value, and the
     * one midpoint that may lie in it */
    for (uint32_t s = 0; s < 2; s++) {
        for (uint32_t key = 0; key < ADAMC_Q_NKEY; key++) {
            const uint32_t lo = key == 0 ? 0 : ADAMC_Q_ALO + (key << ADAMC_Q_SHIFT);
            const uint32_t hi = key == ADAMC_Q_NKEY - 1 ? 0x7f800000u
                                : ADAMC_Q_ALO + ((key + 1) << ADAMC_Q_SHIFT) - 1;
            const float vmin = s ? -adamc_u2f(hi) : adamc_u2f(lo);
            const float vmax = s ? -adamc_u2f(lo) : adamc_u2f(hi);
            int below = 0, inside = 0;
            uint32_t low = s ? 0u : 0xffffu;   /* no midpoint: no value passes */
            for (int i = 0; i < 255; i++) {
                if (q->mid[i] == -INFINITY) {   /* below every value */
                    below++;
                    continue;
                }
                below += q->mid[i] < vmin;
                if (q->mid[i] >= vmin && q->mid[i] <= vmax) {
                    inside++;
                    low = adamc_f2u(q->mid[i]) & 0xffffu;
                    /* the clamped buckets (first, last) must hold none */
                    if (key == 0 || key == ADAMC_Q_NKEY - 1)
                        return -1;
                }
            }
            if (inside > 1)
                return -1;
            q->tab[s * ADAMC_Q_NKEY + key] = ((uint32_t)below << 16) | low;
        }
    }
    return 0;
}

int adamc_quant_init(void)
{
    return build(&adamc_qmaps[0], 1) | build(&adamc_qmaps[1], 0);
}
