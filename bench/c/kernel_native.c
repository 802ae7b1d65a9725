/*
 * kernel_native: the compute kernel (kernel.h) as an ordinary Linux
 * process, twice. Prints one JSON line: firstPassMs and kernelMs (the wall
 * times, CLOCK_MONOTONIC, of the first and the second call) and the
 * checksum.
 */
#include <stdio.h>
#include <time.h>

#include "kernel.h"

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(void) {
  double start = now_ms();
  uint64_t checksum = kernel();
  double middle = now_ms();
  if (kernel() != checksum) return 1;
  double end = now_ms();
  printf("{\"firstPassMs\":%.3f,\"kernelMs\":%.3f,\"checksum\":\"%016llx\"}\n", middle - start, end - middle,
         (unsigned long long)checksum);
  return 0;
}
