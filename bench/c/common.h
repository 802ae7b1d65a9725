/*
 * Shared pieces of the C baselines (raw_exit.c, pipe_baseline.c): the guest
 * image, VM set-up that mirrors what plugvisor's host does, the VCPU run loop
 * skeleton, the timed run of each VCPU and its threads, timing and JSON
 * output.
 *
 * The guest is the same one bench/plugins/guest.ts gives the plugvisor cases,
 * so the C numbers and the plugvisor numbers measure the same instructions.
 *
 * Memory layout: one 64 KiB slot at guest-physical 0xffff0000, so the VCPU's
 * reset state (real mode, CS base 0xffff0000, IP 0xfff0) lands in it and no
 * register has to be set up. Nothing is mapped below 0xffff0000, so a data
 * write to DS:0x8000 (guest-physical 0x8000) is an MMIO exit.
 *
 * Ports (all byte/dword port IO):
 *   0x12  read, 4 bytes: the guest asks how many measured exits to make
 *   0x10  write, 1 byte: one measured exit (IO variant)
 *   0x11  write, 1 byte: "done"; then the guest halts
 * MMIO: 0x8000, 1-byte write: one measured exit (MMIO variant)
 */
#ifndef PLUGVISOR_BENCH_COMMON_H
#define PLUGVISOR_BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define GUEST_MEM_BASE 0xffff0000ULL
#define GUEST_MEM_SIZE 0x10000
#define GUEST_CODE_OFFSET 0xff00 /* offset of the loop inside the slot / CS */
#define GUEST_RESET_OFFSET 0xfff0

#define PORT_EXIT 0x10
#define PORT_DONE 0x11
#define PORT_COUNT 0x12
#define MMIO_EXIT 0x8000

/* The IO-variant loop, at CS:0xff00 (16-bit real mode).
 *
 *   ff00  66 E5 12     in   eax, 0x12      ; eax = exit count (from the VMM)
 *   ff03  66 89 C1     mov  ecx, eax
 *   ff06  E6 10        out  0x10, al       ; <- the measured exit
 *   ff08  66 49        dec  ecx
 *   ff0a  75 FA        jnz  0xff06         ; rel8 -6 (from ff0c)
 *   ff0c  E6 11        out  0x11, al       ; done
 *   ff0e  F4           hlt
 *   ff0f  EB FD        jmp  0xff0e         ; rel8 -3 (from ff11)
 *
 * A count of 0 would wrap ecx to 2^32-1: the VMMs never ask for 0.
 */
static const uint8_t GUEST_LOOP_IO[] = {
  0x66, 0xE5, 0x12,
  0x66, 0x89, 0xC1,
  0xE6, 0x10,
  0x66, 0x49,
  0x75, 0xFA,
  0xE6, 0x11,
  0xF4,
  0xEB, 0xFD,
};

/* The MMIO-variant loop, at CS:0xff00 (DS = 0 at reset, so DS:0x8000 is
 * guest-physical 0x8000, which has no memory slot).
 *
 *   ff00  66 E5 12     in   eax, 0x12
 *   ff03  66 89 C1     mov  ecx, eax
 *   ff06  A2 00 80     mov  [0x8000], al   ; <- the measured exit (MMIO write)
 *   ff09  66 49        dec  ecx
 *   ff0b  75 F9        jnz  0xff06         ; rel8 -7 (from ff0d)
 *   ff0d  E6 11        out  0x11, al
 *   ff0f  F4           hlt
 *   ff10  EB FD        jmp  0xff0f
 */
static const uint8_t GUEST_LOOP_MMIO[] = {
  0x66, 0xE5, 0x12,
  0x66, 0x89, 0xC1,
  0xA2, 0x00, 0x80,
  0x66, 0x49,
  0x75, 0xF9,
  0xE6, 0x11,
  0xF4,
  0xEB, 0xFD,
};

/* The same IO loop for 64-bit user mode (raw_exit --user), at guest-physical
 * and virtual 0x200000, CPL 3, as plugvisor/guest runs programs:
 *
 *   200000  E5 12        in   eax, 0x12
 *   200002  89 C1        mov  ecx, eax
 *   200004  E6 10        out  0x10, al      ; <- the measured exit
 *   200006  FF C9        dec  ecx
 *   200008  75 FA        jnz  0x200004      ; rel8 -6 (from 20000a)
 *   20000a  E6 11        out  0x11, al      ; done
 *   20000c  EB FE        jmp  0x20000c      ; (HLT is for ring 0)
 */
static const uint8_t GUEST_LOOP_USER[] = {
  0xE5, 0x12,
  0x89, 0xC1,
  0xE6, 0x10,
  0xFF, 0xC9,
  0x75, 0xFA,
  0xE6, 0x11,
  0xEB, 0xFE,
};

/* At the reset vector, CS:0xfff0 (guest-physical 0xfffffff0):
 *
 *   fff0  E9 0D FF     jmp  near 0xff00    ; rel16 0xff0d = -0xf3 (from fff3)
 */
static const uint8_t GUEST_RESET_JMP[] = { 0xE9, 0x0D, 0xFF };

static inline void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (errno) fprintf(stderr, ": %s", strerror(errno));
  fputc('\n', stderr);
  exit(1);
}

static inline double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wall-clock milliseconds since the epoch, sub-microsecond resolution kept
 * (~1.7e12 with three decimals fits a double exactly enough). */
static inline double now_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static inline double tv_sec(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

struct vm {
  int kvm, fd;
  uint8_t *mem;
  int run_size;
};

struct vcpu {
  int id;
  int fd;
  struct kvm_run *run;
};

/* Creates the VM the way plugvisor's host does (in-kernel irqchip and PIT,
 * TSS address set), plus the guest memory that a plugin would supply. */
static inline void vm_create(struct vm *vm, int mmio) {
  errno = 0;
  vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (vm->kvm < 0) die("open /dev/kvm");
  if (ioctl(vm->kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) die("unexpected KVM API version");
  vm->fd = ioctl(vm->kvm, KVM_CREATE_VM, 0);
  if (vm->fd < 0) die("KVM_CREATE_VM");
  if (ioctl(vm->fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) die("KVM_SET_TSS_ADDR");
  if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  struct kvm_pit_config pit;
  memset(&pit, 0, sizeof pit);
  if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
  vm->run_size = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (vm->run_size <= 0) die("KVM_GET_VCPU_MMAP_SIZE");

  vm->mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (vm->mem == MAP_FAILED) die("mmap guest memory");
  if (mmio) memcpy(vm->mem + GUEST_CODE_OFFSET, GUEST_LOOP_MMIO, sizeof GUEST_LOOP_MMIO);
  else memcpy(vm->mem + GUEST_CODE_OFFSET, GUEST_LOOP_IO, sizeof GUEST_LOOP_IO);
  memcpy(vm->mem + GUEST_RESET_OFFSET, GUEST_RESET_JMP, sizeof GUEST_RESET_JMP);

  struct kvm_userspace_memory_region region = {
    .slot = 0,
    .flags = 0,
    .guest_phys_addr = GUEST_MEM_BASE,
    .memory_size = GUEST_MEM_SIZE,
    .userspace_addr = (uint64_t)(uintptr_t)vm->mem,
  };
  if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
}

static inline void vcpu_create(struct vm *vm, struct vcpu *v, int id) {
  errno = 0;
  v->id = id;
  v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, id);
  if (v->fd < 0) die("KVM_CREATE_VCPU %d", id);
  v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
  if (v->run == MAP_FAILED) die("mmap kvm_run");
  if (id > 0) {
    /* With an in-kernel irqchip, application processors wait for INIT/SIPI;
     * make them runnable straight from their reset state (a plugin does the
     * same with set_state MP). */
    struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
    if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0) die("KVM_SET_MP_STATE");
  }
}

/* User mode (--user): a second slot of 4 MiB at guest-physical 0 holding
 * page tables (an identity map of the slot with 2 MiB user pages), a GDT
 * (64-bit code and data at DPL 3, a TSS), the TSS with an IO bitmap that
 * allows every port, and GUEST_LOOP_USER at 0x200000. No IDT: a fault would
 * shut the VM down, and the VMM dies on that exit. */
#define USER_MEM_SIZE 0x400000
#define USER_PML4 0x1000
#define USER_PDPT 0x2000
#define USER_PD 0x3000
#define USER_GDT 0x4000
#define USER_TSS 0x5000
#define USER_TSS_LIMIT (0x68 + 0x2000) /* the IO bitmap's 8 KiB, then the 0xff byte */
#define USER_CODE 0x200000

static inline void vm_add_user_mode(struct vm *vm) {
  errno = 0;
  uint8_t *mem = mmap(NULL, USER_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap user-mode memory");
  uint64_t *pml4 = (uint64_t *)(mem + USER_PML4), *pdpt = (uint64_t *)(mem + USER_PDPT), *pd = (uint64_t *)(mem + USER_PD);
  pml4[0] = USER_PDPT | 7;                                        /* present, writable, user */
  pdpt[0] = USER_PD | 7;
  for (uint64_t i = 0; i < USER_MEM_SIZE >> 21; i++) pd[i] = (i << 21) | 0x87; /* 2 MiB pages */
  uint64_t *gdt = (uint64_t *)(mem + USER_GDT);
  gdt[3] = 0x00affb000000ffffULL; /* 0x18: 64-bit code, DPL 3 */
  gdt[4] = 0x00cff3000000ffffULL; /* 0x20: data, DPL 3 */
  uint64_t base = USER_TSS, limit = USER_TSS_LIMIT;
  gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bULL << 40) | (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  gdt[6] = base >> 32;
  *(uint16_t *)(mem + USER_TSS + 0x66) = 0x68; /* the IO bitmap right after the TSS, all zero: every port allowed */
  mem[USER_TSS + USER_TSS_LIMIT] = 0xff;
  memcpy(mem + USER_CODE, GUEST_LOOP_USER, sizeof GUEST_LOOP_USER);
  struct kvm_userspace_memory_region region = {
    .slot = 1, .flags = 0, .guest_phys_addr = 0, .memory_size = USER_MEM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)mem,
  };
  if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION (user mode)");
}

static inline void user_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, int code) {
  *s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = selector, .type = type, .present = 1, .dpl = 3,
                             .db = !code, .s = 1, .l = code, .g = 1 };
}

/* Puts the VCPU at GUEST_LOOP_USER in 64-bit mode at CPL 3 (no boot code, as plugvisor/guest does). */
static inline void vcpu_enter_user(struct vcpu *v) {
  errno = 0;
  struct kvm_sregs sregs;
  if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  user_segment(&sregs.cs, 0x1b, 0xb, 1);
  user_segment(&sregs.ds, 0x23, 0x3, 0);
  sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
  sregs.tr = (struct kvm_segment){ .base = USER_TSS, .limit = USER_TSS_LIMIT, .selector = 0x28, .type = 0xb, .present = 1 };
  sregs.gdt.base = USER_GDT;
  sregs.gdt.limit = 7 * 8 - 1;
  sregs.cr0 = 0x80010033; /* PG, WP, NE, ET, MP, PE */
  sregs.cr3 = USER_PML4;
  sregs.cr4 = 0x620;      /* PAE, OSFXSR, OSXMMEXCPT */
  sregs.efer = 0x500;     /* LME, LMA */
  if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS (user mode)");
  struct kvm_regs regs = { .rip = USER_CODE, .rflags = 2 };
  if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS (user mode)");
}

/* What one exit was, as far as the benchmark cares. */
enum exit_kind { EXIT_COUNT, EXIT_MEASURED, EXIT_DONE };

/* Runs the VCPU to its next interesting exit. For the count read, stores
 * `count` as the value read. Anything unexpected is fatal. */
static inline enum exit_kind vcpu_next_exit(struct vcpu *v, uint32_t count) {
  for (;;) {
    if (ioctl(v->fd, KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      die("KVM_RUN (vcpu %d)", v->id);
    }
    struct kvm_run *r = v->run;
    switch (r->exit_reason) {
    case KVM_EXIT_IO: {
      uint8_t *data = (uint8_t *)r + r->io.data_offset;
      if (r->io.direction == KVM_EXIT_IO_OUT && r->io.port == PORT_EXIT) return EXIT_MEASURED;
      if (r->io.direction == KVM_EXIT_IO_OUT && r->io.port == PORT_DONE) return EXIT_DONE;
      if (r->io.direction == KVM_EXIT_IO_IN && r->io.port == PORT_COUNT && r->io.size == 4) {
        memcpy(data, &count, 4);
        return EXIT_COUNT;
      }
      errno = 0;
      die("vcpu %d: unexpected port IO %s 0x%x size %d", v->id,
          r->io.direction == KVM_EXIT_IO_OUT ? "out" : "in", r->io.port, r->io.size);
      break;
    }
    case KVM_EXIT_MMIO:
      if (r->mmio.is_write && r->mmio.phys_addr == MMIO_EXIT) return EXIT_MEASURED;
      errno = 0;
      die("vcpu %d: unexpected MMIO %s 0x%llx", v->id, r->mmio.is_write ? "write" : "read",
          (unsigned long long)r->mmio.phys_addr);
      break;
    default:
      errno = 0;
      die("vcpu %d: unexpected exit reason %u", v->id, r->exit_reason);
    }
  }
}

/* One VCPU's timed run: `count` measured exits (the answer to its count
 * read), `measured` of them made, between the count read (t_start, and
 * first_exit_unix_ms on the wall clock) and the done write (t_done). */
struct timed_run {
  struct vcpu vcpu;
  uint32_t count;
  unsigned long measured;
  double t_start, t_done, first_exit_unix_ms;
};

/* Runs the VCPU to its next measured exit and counts it; the count read and
 * the done write are timed on the way. 0 at the done write. */
static inline int run_next_measured(struct timed_run *r) {
  for (;;) {
    enum exit_kind k = vcpu_next_exit(&r->vcpu, r->count);
    if (k == EXIT_MEASURED) {
      r->measured++;
      return 1;
    }
    if (k == EXIT_COUNT) {
      r->first_exit_unix_ms = now_unix_ms();
      r->t_start = now_mono();
    } else {
      r->t_done = now_mono();
      return 0;
    }
  }
}

/* The i-th of an array of workers `size` bytes each, which begin with their
 * struct timed_run (both programs' worker types). */
static inline void *worker_at(void *workers, size_t size, int i) {
  return (char *)workers + (size_t)i * size;
}

/* Calls fn on every worker, a thread each, and waits for them; one worker
 * runs on the calling thread (no thread to create or wake). */
static inline void run_workers(void *(*fn)(void *), void *workers, size_t size, int n) {
  if (n == 1) {
    fn(workers);
    return;
  }
  pthread_t *threads = calloc((size_t)n, sizeof *threads);
  if (!threads) die("calloc");
  for (int i = 0; i < n; i++) {
    errno = pthread_create(&threads[i], NULL, fn, worker_at(workers, size, i));
    if (errno) die("pthread_create");
  }
  for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
  free(threads);
}

/* Seconds from the first count read to the last done write of all the
 * workers' runs; *total gets their measured exits. */
static inline double runs_seconds(void *workers, size_t size, int n, unsigned long *total) {
  double t0 = 0, t1 = 0;
  *total = 0;
  for (int i = 0; i < n; i++) {
    const struct timed_run *r = worker_at(workers, size, i);
    if (i == 0 || r->t_start < t0) t0 = r->t_start;
    if (i == 0 || r->t_done > t1) t1 = r->t_done;
    *total += r->measured;
  }
  return t1 - t0;
}

/* Common command line: EXITS [--cpus N] [--mmio] plus program-specific flags
 * handled by the caller through `extra` (returns args consumed, 0 if unknown). */
struct options {
  unsigned long exits; /* measured exits per VCPU */
  int cpus;
  int mmio;
  int user;
  long spin;
};

static inline void usage(const char *prog, const char *extra) {
  fprintf(stderr, "usage: %s EXITS [--cpus N] [--mmio]%s\n", prog, extra);
  exit(2);
}

/* `allow_spin`: pipe_baseline's --spin N; otherwise raw_exit's --user. */
static inline void parse_options(int argc, char **argv, struct options *o, int allow_spin) {
  const char *extra = allow_spin ? " [--spin N]" : " [--user]";
  o->exits = 0;
  o->cpus = 1;
  o->mmio = 0;
  o->user = 0;
  o->spin = 0;
  for (int i = 1; i < argc; i++) {
    char *end;
    if (strcmp(argv[i], "--cpus") == 0 && i + 1 < argc) {
      o->cpus = (int)strtol(argv[++i], &end, 10);
      if (*end || o->cpus < 1 || o->cpus > 64) usage(argv[0], extra);
    } else if (strcmp(argv[i], "--mmio") == 0) {
      o->mmio = 1;
    } else if (!allow_spin && strcmp(argv[i], "--user") == 0) {
      o->user = 1;
    } else if (allow_spin && strcmp(argv[i], "--spin") == 0 && i + 1 < argc) {
      o->spin = strtol(argv[++i], &end, 10);
      if (*end || o->spin < 0) usage(argv[0], extra);
    } else if (argv[i][0] != '-' && o->exits == 0) {
      o->exits = strtoul(argv[i], &end, 10);
      if (*end || o->exits == 0 || o->exits > 0xffffffffUL) usage(argv[0], extra);
    } else {
      usage(argv[0], extra);
    }
  }
  if (o->exits == 0 || (o->user && o->mmio)) usage(argv[0], extra);
}

#endif
