/*
 * Floating point and SSE: scalar doubles (the compiler's SSE2 code), packed
 * SSE2 intrinsics, and xmm values kept across a host call. Prints each
 * result's IEEE bits in hex on COM1, one per line, for the test to compare
 * with the same computations in JavaScript.
 */
#include "plugvisor.h"
#include <emmintrin.h>

static void serial_hex(uint64_t v) {
  for (int i = 60; i >= 0; i -= 4) pv_serial_putc("0123456789abcdef"[(v >> i) & 15]);
  pv_serial_putc('\n');
}
static uint64_t bits(double d) { uint64_t u; __builtin_memcpy(&u, &d, 8); return u; }

int main(int argc, char **argv, struct pv_info *info) {
  (void)argc; (void)argv; (void)info;
  /* 1. A sum of a series in scalar doubles: sum 1/k^2, k = 1..1000. */
  volatile double n = 1000;
  double sum = 0;
  for (int k = 1; k <= (int)n; k++) sum += 1.0 / ((double)k * (double)k);
  serial_hex(bits(sum));
  /* 2. Packed: sqrt of (2, 3) and a packed multiply-add. */
  __m128d v = _mm_sqrt_pd(_mm_set_pd(3.0, 2.0));
  __m128d w = _mm_add_pd(_mm_mul_pd(v, _mm_set1_pd(1.5)), _mm_set_pd(0.25, -0.75));
  double out[2];
  _mm_storeu_pd(out, w);
  serial_hex(bits(out[0]));
  serial_hex(bits(out[1]));
  /* 3. An xmm value across a host call (a write), then used. */
  __m128d kept = _mm_set_pd(1e300, 3.5);
  __asm__ volatile("" : "+x"(kept));
  pv_puts("");
  __asm__ volatile("" : "+x"(kept));
  double k2[2];
  _mm_storeu_pd(k2, _mm_mul_pd(kept, kept));
  serial_hex(bits(k2[0]));
  serial_hex(bits(k2[1])); /* 1e600: +inf */
  /* 4. Integer <-> double conversions. */
  volatile int64_t big = -123456789012345;
  serial_hex(bits((double)big / 7.0));
  return 0;
}
PV_START(main)
