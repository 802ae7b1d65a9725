/*
 * t_async: async write ranges.
 *
 * Port 0x730 and MMIO 0x50000..0x50010 are reserved for async writes: the
 * guest's writes there are reported with no_resume set while the VCPU keeps
 * running, so several reports pile up (and arrive in one read). The guest
 * writes 0..9 to the port, reads it (not reported: zero) and reports the
 * value on the ordinary port 0x731, then does a 4-byte async MMIO write and
 * a last report.
 */
#include "testlib.h"

#define ASYNC_PORT 0x730
#define SYNC_PORT 0x731
#define ASYNC_MMIO 0x50000

static const uint8_t code[] = {
    0xba, 0x30, 0x07,                        /* 1000: mov dx, 0x730 */
    0x30, 0xc0,                              /* 1003: xor al, al */
    0xee,                                    /* 1005: again: out dx, al  ; async write: reported, the VCPU goes on */
    0xfe, 0xc0,                              /* 1006: inc al */
    0x3c, 0x0a,                              /* 1008: cmp al, 10 */
    0x75, 0xf9,                              /* 100a: jne again */
    0xec,                                    /* 100c: in al, dx  ; a read of an async range: not reported, zero */
    0xba, 0x31, 0x07,                        /* 100d: mov dx, 0x731 */
    0xee,                                    /* 1010: out dx, al  ; synchronous report of the read */
    0xb8, 0x00, 0x50,                        /* 1011: mov ax, 0x5000 */
    0x8e, 0xd8,                              /* 1014: mov ds, ax */
    0x66, 0xc7, 0x06, 0x04, 0x00, 0xef, 0xbe, 0xad, 0xde, /* 1016: mov dword [0x4], 0xdeadbeef  ; async MMIO write */
    0xb0, 0x77,                              /* 101f: mov al, 0x77 */
    0xee,                                    /* 1021: out dx, al */
    0xf4,                                    /* 1022: hlt */
};

int main(void) {
  struct guest_mem low;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_async_write_range(c, CROSVM_ADDRESS_SPACE_IOPORT, ASYNC_PORT, 1));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, SYNC_PORT, 1));
  OK(crosvm_reserve_async_write_range(c, CROSVM_ADDRESS_SPACE_MMIO, ASYNC_MMIO, 0x10));
  /* Overlaps are refused whatever the kind of range. */
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, ASYNC_PORT, 1), -EPERM);

  struct crosvm_vcpu *vcpu = start_real_mode(c);
  struct crosvm_vcpu_event evt;

  /* Give the guest time to run ahead, so that the reports queue up. */
  usleep(200 * 1000);
  for (uint64_t i = 0; i < 10; i++) {
    wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, ASYNC_PORT, true, 1);
    CHECK(evt.io_access.no_resume == 1);
    if (io_value(&evt) != i) FAIL("async write %llu carried %llu", (unsigned long long)i,
                                  (unsigned long long)io_value(&evt));
    /* no resume: the VCPU did not stop */
  }
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, SYNC_PORT, true, 1);
  CHECK(evt.io_access.no_resume == 0);
  CHECK(io_value(&evt) == 0); /* the read of the async range */
  OK(crosvm_vcpu_resume(vcpu));

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_MMIO, ASYNC_MMIO + 4, true, 4);
  CHECK(evt.io_access.no_resume == 1 && io_value(&evt) == 0xdeadbeef);
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, SYNC_PORT, true, 1);
  CHECK(io_value(&evt) == 0x77);

  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, ASYNC_PORT, 0));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, ASYNC_MMIO, 0));
  return finish_test(c, &low, "async");
}
