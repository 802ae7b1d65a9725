/*
 * t_dirty_log: dirty page logging of guest memory.
 *
 * Two dirty-logged regions: 8 pages at 0x10000 (a 1-byte bitmap) and 17
 * pages at 0x20000 (3 bytes). The guest writes to chosen pages and stops on
 * port 0x500; the plugin checks the bitmaps, that reading a log clears it,
 * that the bytes really landed in the memfd, and that a region without
 * dirty logging has no log (-ENOENT).
 */
#include "testlib.h"

#define DONE_PORT 0x500

static const uint8_t code[] = {
    0xb8, 0x00, 0x10,             /* 1000: mov ax, 0x1000 */
    0x8e, 0xd8,                   /* 1003: mov ds, ax */
    0xc6, 0x06, 0x00, 0x00, 0x01, /* 1005: mov byte [0x0000], 1   ; page 0 of A */
    0xc6, 0x06, 0x00, 0x20, 0x02, /* 100a: mov byte [0x2000], 2   ; page 2 of A */
    0xc6, 0x06, 0xff, 0x7f, 0x03, /* 100f: mov byte [0x7fff], 3   ; page 7 of A */
    0xb8, 0x00, 0x30,             /* 1014: mov ax, 0x3000 */
    0x8e, 0xd8,                   /* 1017: mov ds, ax */
    0xc6, 0x06, 0x00, 0x00, 0x05, /* 1019: mov byte [0x0000], 5   ; page 16 of B */
    0xba, 0x00, 0x05,             /* 101e: mov dx, 0x500 */
    0xb0, 0x01,                   /* 1021: mov al, 1 */
    0xee,                         /* 1023: out dx, al             ; checkpoint 1 */
    0xb8, 0x00, 0x10,             /* 1024: mov ax, 0x1000 */
    0x8e, 0xd8,                   /* 1027: mov ds, ax */
    0xc6, 0x06, 0x00, 0x40, 0x04, /* 1029: mov byte [0x4000], 4   ; page 4 of A */
    0xb0, 0x02,                   /* 102e: mov al, 2 */
    0xee,                         /* 1030: out dx, al             ; checkpoint 2 */
    0xf4,                         /* 1031: hlt */
};

int main(void) {
  struct guest_mem low, a, b;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  guest_mem_create(c, &a, 0x10000, 0x8000, false, true);
  guest_mem_create(c, &b, 0x20000, 0x11000, false, true);
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, 1));

  uint8_t log[3];
  CHECK_RC(crosvm_memory_get_dirty_log(c, low.mem, log), -ENOENT);
  memset(log, 0xff, sizeof(log));
  OK(crosvm_memory_get_dirty_log(c, a.mem, log));
  CHECK(log[0] == 0); /* nothing written yet */

  struct crosvm_vcpu *vcpu = start_real_mode(c);
  struct crosvm_vcpu_event evt;

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, true, 1);
  CHECK(io_value(&evt) == 1);
  memset(log, 0xee, sizeof(log));
  OK(crosvm_memory_get_dirty_log(c, a.mem, log));
  if (log[0] != 0x85) FAIL("region A dirty log 0x%02x, wanted 0x85", log[0]);
  CHECK(log[1] == 0xee); /* only ceil(8 / 8) = 1 byte is written */
  OK(crosvm_memory_get_dirty_log(c, b.mem, log));
  if (log[0] != 0 || log[1] != 0 || log[2] != 0x01)
    FAIL("region B dirty log %02x %02x %02x, wanted 00 00 01", log[0], log[1], log[2]);
  CHECK(a.host[0] == 1 && a.host[0x2000] == 2 && a.host[0x7fff] == 3);
  CHECK(b.host[0x10000] == 5);
  /* Reading the log cleared it. */
  OK(crosvm_memory_get_dirty_log(c, a.mem, log));
  CHECK(log[0] == 0);
  OK(crosvm_vcpu_resume(vcpu));

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, true, 1);
  CHECK(io_value(&evt) == 2);
  OK(crosvm_memory_get_dirty_log(c, a.mem, log));
  if (log[0] != 0x10) FAIL("region A dirty log 0x%02x, wanted 0x10", log[0]);
  CHECK(a.host[0x4000] == 4);

  guest_mem_destroy(c, &b);
  guest_mem_destroy(c, &a);
  return finish_test(c, &low, "dirty_log");
}
