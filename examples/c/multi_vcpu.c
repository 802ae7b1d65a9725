/*
 * multi_vcpu: two VCPUs, two threads, and an interrupt (run with --cpus 2).
 *
 * Both VCPUs run from the same memory; each one's starting rip selects its
 * code path:
 *  - VCPU 0 installs an IVT handler for IRQ 4, programs the PIC (vectors
 *    0x20..0x27, only IRQ 4 unmasked), enables interrupts, says 'R'eady on
 *    port 0x3f0 and halts. The plugin then raises IRQ 4 by writing an irq
 *    event's eventfd; the handler says 'I' on port 0x3f1, acknowledges the
 *    interrupt (EOI), which fires the irq event's resample eventfd, and
 *    says it is done on port 0x3f3, where the plugin leaves it stopped.
 *  - VCPU 1 computes 6 * 7 and writes the product to port 0x3f2. As an
 *    application processor it waits for a startup IPI until the plugin makes
 *    it runnable with crosvm_vcpu_set_mp_state().
 * Each VCPU is served by its own thread with its own connection.
 *
 * Build: make -C clients/c (or see adder.c); run:
 *   node dist/bundle/plugvisor.cjs run --cpus 2 --plugin clients/c/build/examples/multi_vcpu
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <crosvm.h>

#define VCPU0_ENTRY 0x1000
#define VCPU1_ENTRY 0x103e

/* Guest code, 16-bit real mode, loaded at 0x1000. */
static const uint8_t code[] = {
    0xfa,                                    /* 1000: vcpu0: cli */
    0x31, 0xc0,                              /* 1001: xor ax, ax */
    0x8e, 0xd8,                              /* 1003: mov ds, ax */
    0xc7, 0x06, 0x90, 0x00, 0x2f, 0x10,      /* 1005: mov word [0x24*4], irq4  ; IVT: vector 0x24 = IRQ 4 */
    0xc7, 0x06, 0x92, 0x00, 0x00, 0x00,      /* 100b: mov word [0x24*4+2], 0 */
    0xb0, 0x11,                              /* 1011: mov al, 0x11  ; ICW1 */
    0xe6, 0x20,                              /* 1013: out 0x20, al */
    0xb0, 0x20,                              /* 1015: mov al, 0x20  ; ICW2: vector base 0x20 */
    0xe6, 0x21,                              /* 1017: out 0x21, al */
    0xb0, 0x04,                              /* 1019: mov al, 0x04  ; ICW3 */
    0xe6, 0x21,                              /* 101b: out 0x21, al */
    0xb0, 0x01,                              /* 101d: mov al, 0x01  ; ICW4 */
    0xe6, 0x21,                              /* 101f: out 0x21, al */
    0xb0, 0xef,                              /* 1021: mov al, 0xef  ; OCW1: only IRQ 4 unmasked */
    0xe6, 0x21,                              /* 1023: out 0x21, al */
    0xfb,                                    /* 1025: sti */
    0xba, 0xf0, 0x03,                        /* 1026: mov dx, 0x3f0 */
    0xb0, 0x52,                              /* 1029: mov al, 'R' */
    0xee,                                    /* 102b: out dx, al  ; ready for the interrupt */
    0xf4,                                    /* 102c: idle: hlt */
    0xeb, 0xfd,                              /* 102d: jmp idle */
    0xba, 0xf1, 0x03,                        /* 102f: irq4: mov dx, 0x3f1 */
    0xb0, 0x49,                              /* 1032: mov al, 'I' */
    0xee,                                    /* 1034: out dx, al  ; the interrupt arrived */
    0xb0, 0x20,                              /* 1035: mov al, 0x20 */
    0xe6, 0x20,                              /* 1037: out 0x20, al  ; EOI */
    0xba, 0xf3, 0x03,                        /* 1039: mov dx, 0x3f3 */
    0xee,                                    /* 103c: out dx, al  ; done: the plugin stops the VCPU here */
    0xcf,                                    /* 103d: iret */
    0xb0, 0x06,                              /* 103e: vcpu1: mov al, 6 */
    0xb3, 0x07,                              /* 1040: mov bl, 7 */
    0xf6, 0xe3,                              /* 1042: mul bl */
    0xba, 0xf2, 0x03,                        /* 1044: mov dx, 0x3f2 */
    0xee,                                    /* 1047: out dx, al */
    0xf4,                                    /* 1048: hlt */
};

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "multi_vcpu: %s failed: %s\n", what, strerror(-rc));
    exit(1);
  }
}

static struct crosvm *crosvm;
static struct crosvm_irq *irq;

struct vcpu_thread {
  unsigned id;
  pthread_t thread;
  int result; /* what the guest reported: 'I' for VCPU 0, the product for 1 */
};

/* Real mode at segment 0, starting at `rip`. */
static void init_vcpu(struct crosvm_vcpu *vcpu, uint64_t rip, uint64_t sp) {
  struct kvm_sregs sregs;
  check(crosvm_vcpu_get_sregs(vcpu, &sregs), "get_sregs");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  sregs.ds.base = sregs.ss.base = 0;
  sregs.ds.selector = sregs.ss.selector = 0;
  check(crosvm_vcpu_set_sregs(vcpu, &sregs), "set_sregs");
  struct kvm_regs regs;
  memset(&regs, 0, sizeof(regs));
  regs.rip = rip;
  regs.rsp = sp;
  regs.rflags = 2;
  check(crosvm_vcpu_set_regs(vcpu, &regs), "set_regs");
}

static void *run_vcpu(void *arg) {
  struct vcpu_thread *t = arg;
  struct crosvm *conn; /* a connection per thread: struct crosvm is not thread-safe */
  check(crosvm_new_connection(crosvm, &conn), "new_connection");
  struct crosvm_vcpu *vcpu;
  check(crosvm_get_vcpu(conn, t->id, &vcpu), "get_vcpu");

  for (;;) {
    struct crosvm_vcpu_event evt;
    check(crosvm_vcpu_wait(vcpu, &evt), "vcpu_wait");
    if (evt.kind == CROSVM_VCPU_EVENT_KIND_INIT) {
      init_vcpu(vcpu, t->id == 0 ? VCPU0_ENTRY : VCPU1_ENTRY, 0x2000 - 0x100 * t->id);
      if (t->id != 0) {
        struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
        check(crosvm_vcpu_set_mp_state(vcpu, &mp), "set_mp_state");
      }
    } else if (evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS && evt.io_access.is_write) {
      uint8_t value = evt.io_access.data[0];
      if (evt.io_access.address == 0x3f0 && value == 'R') {
        /* Ready: raise IRQ 4; it is delivered once the VCPU resumes. */
        uint64_t one = 1;
        if (write(crosvm_irq_event_get_fd(irq), &one, sizeof(one)) != sizeof(one))
          check(-errno, "irq trigger");
      } else if (evt.io_access.address == 0x3f1 || evt.io_access.address == 0x3f2) {
        t->result = value;
        if (evt.io_access.address == 0x3f2) break; /* VCPU 1 is done */
      } else if (evt.io_access.address == 0x3f3) {
        /* After the EOI: the irq event's line was resampled. */
        struct pollfd p = {.fd = crosvm_irq_event_get_resample_fd(irq), .events = POLLIN};
        if (poll(&p, 1, 5000) != 1) check(-ETIMEDOUT, "resample");
        uint64_t count;
        if (read(p.fd, &count, sizeof(count)) != sizeof(count)) check(-errno, "resample read");
        break; /* leave the VCPU stopped: the plugin is about to exit */
      }
    }
    check(crosvm_vcpu_resume(vcpu), "vcpu_resume");
  }
  check(crosvm_destroy_connection(&conn), "destroy_connection");
  return NULL;
}

int main(void) {
  check(crosvm_connect(&crosvm), "connect");

  int fd = memfd_create("multi_vcpu", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, 0x2000) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
    check(-errno, "memfd");
  uint8_t *mem = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) check(-errno, "mmap");
  memcpy(mem + 0x1000, code, sizeof(code));
  munmap(mem, 0x2000);
  struct crosvm_memory *memory;
  check(crosvm_create_memory(crosvm, fd, 0, 0x2000, 0, false, false, &memory), "memory");
  check(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, 0x3f0, 4), "reserve");
  check(crosvm_create_irq_event(crosvm, 4, &irq), "irq event");

  struct crosvm_vcpu *extra;
  if (crosvm_get_vcpu(crosvm, 1, &extra) != 0) {
    fprintf(stderr, "multi_vcpu: needs 2 VCPUs (--cpus 2)\n");
    return 1;
  }
  check(crosvm_start(crosvm), "start");
  struct vcpu_thread threads[2] = {{.id = 0}, {.id = 1}};
  for (int i = 0; i < 2; i++)
    if (pthread_create(&threads[i].thread, NULL, run_vcpu, &threads[i]) != 0) return 1;
  for (int i = 0; i < 2; i++) pthread_join(threads[i].thread, NULL);

  printf("vcpu0: interrupt %s\n", threads[0].result == 'I' ? "handled" : "missing");
  printf("vcpu1: 6 * 7 = %d\n", threads[1].result);

  check(crosvm_destroy_irq_event(crosvm, &irq), "destroy irq event");
  check(crosvm_destroy_memory(crosvm, &memory), "destroy memory");
  close(fd);
  check(crosvm_destroy_connection(&crosvm), "destroy connection");
  return threads[0].result == 'I' && threads[1].result == 42 ? 0 : 1;
}
