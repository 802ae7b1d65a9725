/*
 * Helpers shared by the C test plugins (header-only; each test is one .c
 * file built against the installed library, like any out-of-tree plugin).
 *
 * A failed check prints file:line and exits 1, which makes the host exit
 * non-zero: the test harness (test/c-api.test.ts) sees it.
 */
#ifndef PLUGVISOR_C_TESTLIB_H_
#define PLUGVISOR_C_TESTLIB_H_

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <crosvm.h>

#define FAIL(...)                                              \
  do {                                                         \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);            \
    fprintf(stderr, __VA_ARGS__);                              \
    fputc('\n', stderr);                                       \
    exit(1);                                                   \
  } while (0)

#define CHECK(cond)                                  \
  do {                                               \
    if (!(cond)) FAIL("check failed: %s", #cond);    \
  } while (0)

#define CHECK_RC(expr, want)                                                \
  do {                                                                      \
    int rc_ = (expr);                                                       \
    if (rc_ != (want))                                                      \
      FAIL("%s returned %d (%s), wanted %d", #expr, rc_,                    \
           rc_ < 0 ? strerror(-rc_) : "ok", (int)(want));                   \
  } while (0)

#define OK(expr) CHECK_RC(expr, 0)

/* A guest memory region backed by a sealed memfd, kept mapped here too. */
struct guest_mem {
  int fd;
  uint8_t *host; /* the plugin's view of the same bytes */
  size_t size;
  struct crosvm_memory *mem;
};

/* Creates a sealed memfd of `size` bytes and maps it. */
static inline void guest_mem_alloc(struct guest_mem *g, size_t size) {
  g->fd = memfd_create("guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  CHECK(g->fd >= 0);
  CHECK(ftruncate(g->fd, (off_t)size) == 0);
  CHECK(fcntl(g->fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
  g->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
  CHECK(g->host != MAP_FAILED);
  g->size = size;
  g->mem = NULL;
}

/* Allocates and installs guest memory at `start`. */
static inline void guest_mem_create(struct crosvm *c, struct guest_mem *g,
                                    uint64_t start, size_t size, bool read_only,
                                    bool dirty_log) {
  guest_mem_alloc(g, size);
  OK(crosvm_create_memory(c, g->fd, 0, size, start, read_only, dirty_log, &g->mem));
}

static inline void guest_mem_destroy(struct crosvm *c, struct guest_mem *g) {
  if (g->mem) OK(crosvm_destroy_memory(c, &g->mem));
  CHECK(g->mem == NULL);
  munmap(g->host, g->size);
  close(g->fd);
}

/* Writes a real-mode IVT entry (vector -> 0000:offset) at guest address 0. */
static inline void set_ivt(struct guest_mem *low, unsigned vector, uint16_t offset) {
  low->host[vector * 4 + 0] = (uint8_t)offset;
  low->host[vector * 4 + 1] = (uint8_t)(offset >> 8);
  low->host[vector * 4 + 2] = 0;
  low->host[vector * 4 + 3] = 0;
}

/*
 * The real-mode guests of the tests: code at REAL_MODE_CODE in a low memory
 * region of LOW_MEM_SIZE at guest address 0, the stack below REAL_MODE_STACK.
 */
#define REAL_MODE_CODE 0x1000
#define REAL_MODE_STACK 0x2000
#define LOW_MEM_SIZE 0x2000

/* Installs the low memory region at 0 with `code` at REAL_MODE_CODE. */
static inline void load_real_mode_code(struct crosvm *c, struct guest_mem *low,
                                       const uint8_t *code, size_t size) {
  CHECK(REAL_MODE_CODE + size <= LOW_MEM_SIZE);
  guest_mem_create(c, low, 0, LOW_MEM_SIZE, false, false);
  memcpy(low->host + REAL_MODE_CODE, code, size);
}

/* Connects to the host and loads `code` (load_real_mode_code). */
static inline struct crosvm *connect_real_mode(struct guest_mem *low, const uint8_t *code, size_t size) {
  struct crosvm *c;
  OK(crosvm_connect(&c));
  load_real_mode_code(c, low, code, size);
  return c;
}

/* On INIT: flat real mode at segment 0, running from `rip` with stack `sp`. */
static inline void real_mode_init(struct crosvm_vcpu *vcpu, uint64_t rip, uint64_t sp,
                                  struct kvm_regs *regs_out) {
  struct kvm_sregs sregs;
  OK(crosvm_vcpu_get_sregs(vcpu, &sregs));
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  sregs.ds.base = sregs.es.base = sregs.ss.base = 0;
  sregs.ds.selector = sregs.es.selector = sregs.ss.selector = 0;
  OK(crosvm_vcpu_set_sregs(vcpu, &sregs));
  struct kvm_regs regs;
  memset(&regs, 0, sizeof(regs));
  regs.rip = rip;
  regs.rsp = sp;
  regs.rflags = 2;
  if (regs_out) *regs_out = regs;
  OK(crosvm_vcpu_set_regs(vcpu, &regs));
}

/* Application processors wait for a startup IPI: this makes one runnable at once. */
static inline void make_runnable(struct crosvm_vcpu *vcpu) {
  struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
  OK(crosvm_vcpu_set_mp_state(vcpu, &mp));
}

/* With PLUGVISOR_TEST_TRACE set, every event is printed to stderr. */
static inline void trace_event(const struct crosvm_vcpu_event *evt) {
  static int enabled = -1;
  if (enabled < 0) enabled = getenv("PLUGVISOR_TEST_TRACE") != NULL;
  if (!enabled) return;
  if (evt->kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS) {
    unsigned long long v = 0;
    for (uint32_t i = 0; i < evt->io_access.length && i < 8; i++)
      v |= (unsigned long long)evt->io_access.data[i] << (8 * i);
    fprintf(stderr, "trace: io %s 0x%llx %s len %u value 0x%llx%s\n",
            evt->io_access.address_space ? "mmio" : "port",
            (unsigned long long)evt->io_access.address,
            evt->io_access.is_write ? "write" : "read", evt->io_access.length, v,
            evt->io_access.no_resume ? " (no resume)" : "");
  } else {
    fprintf(stderr, "trace: event kind %u\n", evt->kind);
  }
}

/* Waits for the next event and checks it is of `kind`. */
static inline void wait_kind(struct crosvm_vcpu *vcpu, struct crosvm_vcpu_event *evt,
                             uint32_t kind) {
  OK(crosvm_vcpu_wait(vcpu, evt));
  trace_event(evt);
  if (evt->kind != kind)
    FAIL("event kind %u, wanted %u (io address 0x%llx)", evt->kind, kind,
         evt->kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS
             ? (unsigned long long)evt->io_access.address
             : 0ull);
}

/* Waits for an IO access and checks where it went. */
static inline void wait_io(struct crosvm_vcpu *vcpu, struct crosvm_vcpu_event *evt,
                           uint32_t space, uint64_t address, bool is_write,
                           uint32_t length) {
  wait_kind(vcpu, evt, CROSVM_VCPU_EVENT_KIND_IO_ACCESS);
  if (evt->io_access.address_space != space || evt->io_access.address != address ||
      evt->io_access.is_write != is_write || evt->io_access.length != length)
    FAIL("io access space %u address 0x%llx write %u length %u; wanted %u 0x%llx %u %u",
         evt->io_access.address_space, (unsigned long long)evt->io_access.address,
         evt->io_access.is_write, evt->io_access.length, space,
         (unsigned long long)address, is_write, length);
}

/* The little-endian value of an IO access's data. */
static inline uint64_t io_value(const struct crosvm_vcpu_event *evt) {
  uint64_t v = 0;
  for (uint32_t i = 0; i < evt->io_access.length && i < 8; i++)
    v |= (uint64_t)evt->io_access.data[i] << (8 * i);
  return v;
}

/* Stores a little-endian value as a read access's answer. */
static inline void io_answer(struct crosvm_vcpu_event *evt, uint64_t v) {
  for (uint32_t i = 0; i < evt->io_access.length && i < 8; i++)
    evt->io_access.data[i] = (uint8_t)(v >> (8 * i));
}

/*
 * Expects a write of `value` to an IO port and leaves the VCPU stopped there.
 * End a test with this rather than expect_out(): tearing down memory under
 * a VCPU that was resumed (even into HLT) is racy.
 */
static inline void expect_out_stop(struct crosvm_vcpu *vcpu, uint16_t port, uint32_t length,
                                   uint64_t value) {
  struct crosvm_vcpu_event evt;
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, port, true, length);
  if (io_value(&evt) != value)
    FAIL("port 0x%x got 0x%llx, wanted 0x%llx", port, (unsigned long long)io_value(&evt),
         (unsigned long long)value);
}

/* Expects a write of `value` to an IO port, then resumes. */
static inline void expect_out(struct crosvm_vcpu *vcpu, uint16_t port, uint32_t length,
                              uint64_t value) {
  expect_out_stop(vcpu, port, length, value);
  OK(crosvm_vcpu_resume(vcpu));
}

/* Starts the VM and returns VCPU 0, stopped at its INIT event. */
static inline struct crosvm_vcpu *start_at_init(struct crosvm *c) {
  struct crosvm_vcpu *vcpu;
  OK(crosvm_get_vcpu(c, 0, &vcpu));
  OK(crosvm_start(c));
  struct crosvm_vcpu_event evt;
  wait_kind(vcpu, &evt, CROSVM_VCPU_EVENT_KIND_INIT);
  return vcpu;
}

/* Starts the VM and VCPU 0 in real mode at REAL_MODE_CODE (load_real_mode_code). */
static inline struct crosvm_vcpu *start_real_mode(struct crosvm *c) {
  struct crosvm_vcpu *vcpu = start_at_init(c);
  real_mode_init(vcpu, REAL_MODE_CODE, REAL_MODE_STACK, NULL);
  OK(crosvm_vcpu_resume(vcpu));
  return vcpu;
}

/*
 * The end of a test with one low memory region: frees it and the connection
 * and prints "NAME: ok", the line the harness expects. Returns main's status.
 */
static inline int finish_test(struct crosvm *c, struct guest_mem *low, const char *name) {
  guest_mem_destroy(c, low);
  OK(crosvm_destroy_connection(&c));
  printf("%s: ok\n", name);
  return 0;
}

/* An edge on an IRQ line, as the PIC's edge-triggered inputs take it: raised, then lowered. */
static inline void pulse_irq(struct crosvm *c, uint32_t irq_id) {
  OK(crosvm_set_irq(c, irq_id, true));
  OK(crosvm_set_irq(c, irq_id, false));
}

/* Reads an eventfd's counter, waiting up to timeout_ms; 0 on timeout. */
static inline uint64_t eventfd_wait(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n = poll(&p, 1, timeout_ms);
  if (n <= 0) return 0;
  uint64_t v = 0;
  if (read(fd, &v, sizeof(v)) != sizeof(v)) return 0;
  return v;
}

#endif /* PLUGVISOR_C_TESTLIB_H_ */
