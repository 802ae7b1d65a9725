/*
 * plugvisor.h: the guest side of plugvisor's program ABI (plugvisor/guest,
 * `plugvisor exec`), for freestanding C programs. No libc needed:
 *
 *   gcc -static -nostdlib -ffreestanding -O2 -o hello.elf hello.c
 *
 *   #include "plugvisor.h"
 *   int main(int argc, char **argv, struct pv_info *info) {
 *     pv_puts("hello from the guest\n");
 *     return 0;
 *   }
 *   PV_START(main)
 *
 * The program runs at CPL 3 in 64-bit mode with memory identity-mapped
 * from 0 (pointers are guest physical addresses). Full description:
 * docs/guest.md. Everything here is also usable without this header: the
 * ports and numbers are the ABI.
 */
#ifndef PLUGVISOR_GUEST_H
#define PLUGVISOR_GUEST_H

#include <stdint.h>
#include <stddef.h>

/* COM1, a 16550 UART: bytes written to THR are the program's serial output. */
#define PV_COM1_PORT 0x3f8
/* isa-debug-exit: writing V ends the program with status (V << 1) | 1. */
#define PV_DEBUG_EXIT_PORT 0xf4
/* Host calls: out 0xf8, eax with the number in RAX, arguments in RDI, RSI, RDX, RCX, R8, R9; result in RAX. */
#define PV_HOST_CALL_PORT 0xf8

/* Built-in host calls (a plugin's own functions are numbered below PV_CALL_BUILTIN_BASE). */
#define PV_CALL_BUILTIN_BASE 0x80000000u
#define PV_CALL_EXIT 0x80000000u  /* exit(status): ends the program with exactly status (0..255) */
#define PV_CALL_WRITE 0x80000001u /* write(stream, buf, len): stream 1 = stdout, 2 = stderr; returns len */
#define PV_CALL_CLOCK 0x80000002u /* clock(which): 0 = host wall clock, 1 = host monotonic clock, in ns */

/* What RDX points at when the program starts (RDI = argc, RSI = argv, RSP = &argc as on Linux). */
#define PV_INFO_MAGIC 0x31475650u /* "PVG1" */
struct pv_info {
  uint32_t magic;       /* PV_INFO_MAGIC */
  uint32_t size;        /* sizeof what the host wrote; newer hosts may add fields */
  uint64_t memory_size; /* bytes of guest memory, identity-mapped from 0 */
  uint64_t heap_start;  /* the first free byte after the program (page-aligned) */
  uint64_t heap_end;    /* the end of free memory (the stack's guard page) */
  uint64_t stack_top;   /* the top of the stack (the argument block lies below it) */
};

static inline uint64_t pv_call6(uint64_t number, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
  register uint64_t rcx_a3 __asm__("rcx") = a3;
  register uint64_t r8_a4 __asm__("r8") = a4;
  register uint64_t r9_a5 __asm__("r9") = a5;
  uint64_t result;
  __asm__ volatile("outl %%eax, %[port]"
                   : "=a"(result)
                   : "a"(number), [port] "i"(PV_HOST_CALL_PORT), "D"(a0), "S"(a1), "d"(a2), "r"(rcx_a3), "r"(r8_a4), "r"(r9_a5)
                   : "memory");
  return result;
}
static inline uint64_t pv_call0(uint64_t number) { return pv_call6(number, 0, 0, 0, 0, 0, 0); }
static inline uint64_t pv_call1(uint64_t number, uint64_t a0) { return pv_call6(number, a0, 0, 0, 0, 0, 0); }
static inline uint64_t pv_call2(uint64_t number, uint64_t a0, uint64_t a1) { return pv_call6(number, a0, a1, 0, 0, 0, 0); }
static inline uint64_t pv_call3(uint64_t number, uint64_t a0, uint64_t a1, uint64_t a2) { return pv_call6(number, a0, a1, a2, 0, 0, 0); }

static inline void pv_outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline uint8_t pv_inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}

/* Ends the program with exactly `status`. */
__attribute__((noreturn)) static inline void pv_exit(int status) {
  pv_call1(PV_CALL_EXIT, (uint64_t)(unsigned)status);
  __builtin_unreachable();
}

/* Writes `len` bytes to the program's stdout (1) or stderr (2) in one exit. */
static inline uint64_t pv_write(int stream, const void *buf, size_t len) {
  return pv_call3(PV_CALL_WRITE, (uint64_t)stream, (uint64_t)(uintptr_t)buf, len);
}

static inline size_t pv_strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

/* Writes a string to stdout. */
static inline void pv_puts(const char *s) { pv_write(1, s, pv_strlen(s)); }

/* Writes one byte to COM1 (one exit per byte: pv_write is faster for text). */
static inline void pv_serial_putc(char c) { pv_outb(PV_COM1_PORT, (uint8_t)c); }

/* The host's clock in nanoseconds (which: 0 wall, 1 monotonic). */
static inline uint64_t pv_clock_ns(int which) { return pv_call1(PV_CALL_CLOCK, (uint64_t)which); }

/*
 * PV_START(main) defines _start: it calls main(argc, argv, info) with the
 * stack aligned as the ABI wants and exits with main's return value. It
 * also defines memcpy, memmove, memset and memcmp (weak: a program's own
 * win), which gcc and clang may call even in freestanding code.
 */
#define PV_START(main_function)                                                                    \
  __attribute__((noreturn, used)) void pv_start_c(int argc, char **argv, struct pv_info *info) {   \
    pv_exit(main_function(argc, argv, info));                                                      \
  }                                                                                                \
  __asm__(".globl _start\n"                                                                        \
          "_start:\n"                                                                              \
          "  xor %ebp, %ebp\n"                                                                     \
          "  and $-16, %rsp\n"                                                                     \
          "  call pv_start_c\n"                                                                    \
          "  ud2\n");                                                                              \
  __attribute__((weak)) void *memcpy(void *dst, const void *src, size_t n) {                       \
    void *d = dst;                                                                                 \
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");                      \
    return dst;                                                                                    \
  }                                                                                                \
  __attribute__((weak)) void *memset(void *dst, int c, size_t n) {                                 \
    void *d = dst;                                                                                 \
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");                          \
    return dst;                                                                                    \
  }                                                                                                \
  __attribute__((weak)) void *memmove(void *dst, const void *src, size_t n) {                      \
    unsigned char *d = dst;                                                                        \
    const unsigned char *s = src;                                                                  \
    if (d <= s || d >= s + n) return memcpy(dst, src, n);                                          \
    while (n--) ((volatile unsigned char *)d)[n] = s[n];                                           \
    return dst;                                                                                    \
  }                                                                                                \
  __attribute__((weak)) int memcmp(const void *a, const void *b, size_t n) {                       \
    const volatile unsigned char *x = a, *y = b;                                                   \
    for (size_t i = 0; i < n; i++)                                                                 \
      if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;                                               \
    return 0;                                                                                      \
  }

#endif /* PLUGVISOR_GUEST_H */
