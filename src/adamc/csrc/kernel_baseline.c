/* The portable "baseline" variant: the compiler's default target for the
 * architecture (SSE2 on x86-64, NEON on aarch64), built on any platform.
 * It uses FMA only where that baseline has it (aarch64). */
#define ADAMC_ISA baseline
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define ADAMC_USE_FMA 1
#endif
#include "kernel_body.h"
