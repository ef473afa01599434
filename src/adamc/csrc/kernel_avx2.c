/* AVX2 + FMA variant (x86-64 only): compiled with -mavx2 -mfma, selected at
 * run time when CPUID and XGETBV say the CPU and OS support it. */
#define ADAMC_ISA avx2
#define ADAMC_USE_FMA 1
#define ADAMC_NORM_WAYS 4
#include "kernel_body.h"
