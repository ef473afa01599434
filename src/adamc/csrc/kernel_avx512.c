/* AVX-512F variant (x86-64 only): compiled with -mavx512f -mfma and 512-bit
 * vectors preferred, selected at run time when CPUID and XGETBV say the CPU
 * and OS support it. */
#define ADAMC_ISA avx512
#define ADAMC_USE_FMA 1
#define ADAMC_NORM_WAYS 4
#include "kernel_body.h"
