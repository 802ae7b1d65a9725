/*
 * The compute kernel that bench/run.ts times natively (kernel_native.c) and
 * inside a plugvisor VM (kernel_guest.c): the same code, compiled with the
 * same flags. Integer work over memory (a sieve of Eratosthenes over 16 Mi
 * numbers, then a CRC-32 over the sieve) and floating point (a 160 x 160
 * matrix product of doubles, repeated), so both the memory system and SSE
 * are in it. Returns a checksum, so nothing can be optimized away and both
 * runs can be checked to agree. Every call does the same work (it starts by
 * resetting its arrays), so a second call measures the compute alone, with
 * the 17 MiB of arrays already touched: bench/README.md says why that is
 * reported apart.
 */
#ifndef PLUGVISOR_BENCH_KERNEL_H
#define PLUGVISOR_BENCH_KERNEL_H

#include <stdint.h>

#define SIEVE_SIZE (16u << 20)
#define MATRIX_N 160
#define MATRIX_ROUNDS 12

static uint8_t composite[SIEVE_SIZE];
static double ma[MATRIX_N][MATRIX_N], mb[MATRIX_N][MATRIX_N], mc[MATRIX_N][MATRIX_N];

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, uint64_t n) {
  crc = ~crc;
  for (uint64_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
  }
  return ~crc;
}

static uint64_t kernel(void) {
  /* 0 and 1 are not primes; not a plain zero fill, which the compiler would make a memset call (libc's natively). */
  for (uint64_t i = 0; i < SIEVE_SIZE; i++) composite[i] = (uint8_t)(i < 2);
  for (uint64_t i = 2; i * i < SIEVE_SIZE; i++)
    if (!composite[i])
      for (uint64_t j = i * i; j < SIEVE_SIZE; j += i) composite[j] = 1;
  uint64_t primes = 0;
  for (uint64_t i = 0; i < SIEVE_SIZE; i++) primes += !composite[i];
  uint32_t crc = crc32_update(0, composite, SIEVE_SIZE / 4);

  for (int i = 0; i < MATRIX_N; i++)
    for (int j = 0; j < MATRIX_N; j++) {
      ma[i][j] = (double)((i * 7 + j * 3) % 17) / 16.0;
      mb[i][j] = (double)((i * 5 + j * 11) % 13) / 12.0;
    }
  double trace = 0;
  for (int r = 0; r < MATRIX_ROUNDS; r++) {
    for (int i = 0; i < MATRIX_N; i++)
      for (int j = 0; j < MATRIX_N; j++) {
        double s = 0;
        for (int k = 0; k < MATRIX_N; k++) s += ma[i][k] * mb[k][j];
        mc[i][j] = s;
      }
    for (int i = 0; i < MATRIX_N; i++) {
      trace += mc[i][i];
      ma[i][(i + r) % MATRIX_N] += mc[i][i] / 1024.0;
    }
  }
  return primes ^ ((uint64_t)crc << 32) ^ (uint64_t)(trace * 1000.0);
}

#endif
