/* Which kernel variants this build has and which the CPU can run.
 *
 * A variant is usable when its code was compiled in (ADAMC_HAVE_<ISA>, set
 * by setup.py on x86-64) and the CPU reports the instructions in CPUID *and*
 * the OS saves the wider registers (XGETBV), as CRoaring checks them. */
#include <string.h>
#include "adamc.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define ADAMC_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#include <immintrin.h>
static void cpuid(int leaf, int sub, unsigned r[4])
{
    int x[4];
    __cpuidex(x, leaf, sub);
    r[0] = (unsigned)x[0]; r[1] = (unsigned)x[1]; r[2] = (unsigned)x[2]; r[3] = (unsigned)x[3];
}
static unsigned long long xgetbv0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cpuid(int leaf, int sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static int x86_level(void)
{
    unsigned r[4], max_leaf;
    unsigned long long xcr0;
    int level = 0;
    cpuid(0, 0, r);
    max_leaf = r[0];
    if (max_leaf < 7)
        return 0;
    cpuid(1, 0, r);
    /* ECX: FMA bit 12, OSXSAVE bit 27, AVX bit 28, F16C bit 29 (the
     * float16 conversions of the avx2 and avx512 variants) */
    if (!((r[2] >> 12) & 1) || !((r[2] >> 27) & 1) || !((r[2] >> 28) & 1)
        || !((r[2] >> 29) & 1))
        return 0;
    xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state saved by the OS */
        return 0;
    cpuid(7, 0, r);
    if ((r[1] >> 5) & 1) /* EBX: AVX2 bit 5 */
        level = 1;
    /* EBX: AVX512F bit 16; the OS must save opmask, ZMM_Hi256, Hi16_ZMM */
    if (level && ((r[1] >> 16) & 1) && (xcr0 & 0xe6) == 0xe6)
        level = 2;
    return level;
}
#endif

#ifdef ADAMC_HAVE_AVX2
const adamc_kernel *adamc_kernel_avx2(void);
#endif
#ifdef ADAMC_HAVE_AVX512
const adamc_kernel *adamc_kernel_avx512(void);
#endif

/* Variants from lowest to highest; the CPU check of each. */
int adamc_variants(const adamc_kernel **out, int *cpu_ok, int max)
{
    int n = 0;
#ifdef ADAMC_X86
    int level = x86_level();
#endif
    if (n < max) {
        out[n] = adamc_kernel_baseline();
        cpu_ok[n++] = 1;
    }
#ifdef ADAMC_HAVE_AVX2
    if (n < max) {
        out[n] = adamc_kernel_avx2();
        cpu_ok[n++] = level >= 1;
    }
#endif
#ifdef ADAMC_HAVE_AVX512
    if (n < max) {
        out[n] = adamc_kernel_avx512();
        cpu_ok[n++] = level >= 2;
    }
#endif
    return n;
}
