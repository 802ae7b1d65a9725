/*
 * adder: the smallest useful plugin, in C.
 *
 * The guest adds 2 and 7 in real mode and writes the sum as an ASCII digit
 * and a newline to port 0x3f8, then writes 1 to port 0x3f9 to say it is done.
 * The plugin supplies the guest's memory, reserves both ports, prints what
 * the guest wrote, and tears everything down again before exiting 0.
 *
 * Build (after `make -C clients/c`, which also builds this file):
 *   cc -pthread -Iclients/c/build/include examples/c/adder.c \
 *      -Lclients/c/build/lib -Wl,-rpath,$PWD/clients/c/build/lib -lcrosvm_plugin
 * Run:
 *   node dist/bundle/plugvisor.cjs run --plugin ./a.out
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <crosvm.h>

#define SERIAL_PORT 0x3f8
#define DONE_PORT 0x3f9
#define CODE_ADDR 0x1000
#define MEM_SIZE 0x1000

/* Guest code, 16-bit real mode, loaded at 0x1000. */
static const uint8_t code[] = {
    0x00, 0xd8,       /* 1000: add al, bl */
    0x04, 0x30,       /* 1002: add al, '0' */
    0xba, 0xf8, 0x03, /* 1004: mov dx, 0x3f8 */
    0xee,             /* 1007: out dx, al */
    0xb0, 0x0a,       /* 1008: mov al, 0x0a */
    0xee,             /* 100a: out dx, al */
    0x42,             /* 100b: inc dx */
    0xb0, 0x01,       /* 100c: mov al, 1 */
    0xee,             /* 100e: out dx, al */
    0xf4,             /* 100f: hlt */
};

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "adder: %s failed: %s\n", what, strerror(-rc));
    exit(1);
  }
}

int main(void) {
  struct crosvm *crosvm, *second;
  check(crosvm_connect(&crosvm), "crosvm_connect");
  check(crosvm_new_connection(crosvm, &second), "crosvm_new_connection");

  int shutdown_fd = crosvm_get_shutdown_eventfd(crosvm);
  check(shutdown_fd, "crosvm_get_shutdown_eventfd");

  check(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, SERIAL_PORT, 1),
        "reserve 0x3f8");
  check(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, 1),
        "reserve 0x3f9");

  /* Guest memory: a memfd sealed against shrinking, as the host requires. */
  int mem_fd = memfd_create("adder", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mem_fd < 0) check(-errno, "memfd_create");
  if (ftruncate(mem_fd, MEM_SIZE) != 0) check(-errno, "ftruncate");
  if (fcntl(mem_fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) check(-errno, "F_ADD_SEALS");
  uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd, 0);
  if (mem == MAP_FAILED) check(-errno, "mmap");
  memcpy(mem, code, sizeof(code));
  munmap(mem, MEM_SIZE);

  struct crosvm_memory *memory;
  check(crosvm_create_memory(crosvm, mem_fd, 0, MEM_SIZE, CODE_ADDR, false, false,
                             &memory),
        "crosvm_create_memory");

  struct crosvm_vcpu *vcpu;
  check(crosvm_get_vcpu(crosvm, 0, &vcpu), "crosvm_get_vcpu");

  /* Any connection may start the VM; use the second one. */
  check(crosvm_start(second), "crosvm_start");

  char output[16];
  size_t out_len = 0;
  for (;;) {
    struct crosvm_vcpu_event evt;
    check(crosvm_vcpu_wait(vcpu, &evt), "crosvm_vcpu_wait");
    if (evt.kind == CROSVM_VCPU_EVENT_KIND_INIT) {
      struct kvm_sregs sregs;
      check(crosvm_vcpu_get_sregs(vcpu, &sregs), "crosvm_vcpu_get_sregs");
      sregs.cs.base = 0;
      sregs.cs.selector = 0;
      check(crosvm_vcpu_set_sregs(vcpu, &sregs), "crosvm_vcpu_set_sregs");

      struct kvm_regs regs;
      memset(&regs, 0, sizeof(regs));
      regs.rip = CODE_ADDR;
      regs.rax = 2;
      regs.rbx = 7;
      regs.rflags = 2;
      check(crosvm_vcpu_set_regs(vcpu, &regs), "crosvm_vcpu_set_regs");
    } else if (evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS &&
               evt.io_access.address_space == CROSVM_ADDRESS_SPACE_IOPORT &&
               evt.io_access.is_write && evt.io_access.length == 1) {
      if (evt.io_access.address == SERIAL_PORT) {
        if (out_len < sizeof(output)) output[out_len++] = (char)evt.io_access.data[0];
      } else if (evt.io_access.address == DONE_PORT && evt.io_access.data[0] == 1) {
        break; /* the guest is done; it halts without being resumed */
      }
    }
    check(crosvm_vcpu_resume(vcpu), "crosvm_vcpu_resume");
  }

  fwrite(output, 1, out_len, stdout);
  /* The same report as the TypeScript adder (examples/adder.ts). */
  printf("guest computed 2 + 7 = %.*s\n", out_len > 0 ? (int)out_len - 1 : 0, output);
  fflush(stdout);

  /* Tell the host we are finished, then undo the set-up. */
  uint64_t one = 1;
  if (write(shutdown_fd, &one, sizeof(one)) != sizeof(one)) check(-errno, "signal shutdown");
  check(crosvm_destroy_memory(crosvm, &memory), "crosvm_destroy_memory");
  check(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, SERIAL_PORT, 0),
        "unreserve 0x3f8");
  check(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, 0),
        "unreserve 0x3f9");
  close(mem_fd);
  close(shutdown_fd);
  check(crosvm_destroy_connection(&second), "destroy second connection");
  check(crosvm_destroy_connection(&crosvm), "destroy connection");

  if (out_len != 2 || memcmp(output, "9\n", 2) != 0) {
    fprintf(stderr, "adder: the guest wrote %zu unexpected bytes\n", out_len);
    return 1;
  }
  return 0;
}
