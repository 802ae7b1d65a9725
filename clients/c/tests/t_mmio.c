/*
 * t_mmio: read-only memory and MMIO accesses of every size.
 *
 * - 0x20000: one page of read-only guest memory, filled by the plugin. The
 *   guest reads it normally; its write there becomes an MMIO write, seen by
 *   the plugin because it reserved that MMIO range, and memory is unchanged.
 * - 0x30000: a reserved MMIO range with no memory. The guest writes 1, 2, 4
 *   and 8 bytes (the 8-byte ones with MMX movq) and reads each size back; the
 *   plugin checks addresses, lengths and data, answers the reads, and the
 *   guest reports what it read on port 0x510.
 */
#include "testlib.h"

#define REPORT_PORT 0x510
#define ROM_ADDR 0x20000
#define MMIO_ADDR 0x30000

static const uint8_t code[] = {
    0x31, 0xc0,                              /* 1000: xor ax, ax */
    0x8e, 0xc0,                              /* 1002: mov es, ax */
    0x0f, 0x6f, 0x06, 0x70, 0x10,            /* 1004: movq mm0, [qword_val] */
    0xb8, 0x00, 0x20,                        /* 1009: mov ax, 0x2000 */
    0x8e, 0xd8,                              /* 100c: mov ds, ax */
    0xa0, 0x00, 0x00,                        /* 100e: mov al, [0x0000] */
    0xba, 0x10, 0x05,                        /* 1011: mov dx, 0x510 */
    0xee,                                    /* 1014: out dx, al */
    0xc6, 0x06, 0x10, 0x00, 0x99,            /* 1015: mov byte [0x0010], 0x99 */
    0xa0, 0x10, 0x00,                        /* 101a: mov al, [0x0010] */
    0xee,                                    /* 101d: out dx, al */
    0xb8, 0x00, 0x30,                        /* 101e: mov ax, 0x3000 */
    0x8e, 0xd8,                              /* 1021: mov ds, ax */
    0xc6, 0x06, 0x00, 0x00, 0x11,            /* 1023: mov byte [0x00], 0x11 */
    0xc7, 0x06, 0x02, 0x00, 0x33, 0x22,      /* 1028: mov word [0x02], 0x2233 */
    0x66, 0xc7, 0x06, 0x04, 0x00, 0x77, 0x66, 0x55, 0x44, /* 102e: mov dword [0x04], 0x44556677 */
    0x0f, 0x7f, 0x06, 0x08, 0x00,            /* 1037: movq [0x08], mm0 */
    0xa0, 0x10, 0x00,                        /* 103c: mov al, [0x10] */
    0x8b, 0x1e, 0x12, 0x00,                  /* 103f: mov bx, [0x12] */
    0x66, 0x8b, 0x0e, 0x14, 0x00,            /* 1043: mov ecx, [0x14] */
    0x0f, 0x6f, 0x0e, 0x18, 0x00,            /* 1048: movq mm1, [0x18] */
    0xee,                                    /* 104d: out dx, al */
    0x89, 0xd8,                              /* 104e: mov ax, bx */
    0xef,                                    /* 1050: out dx, ax */
    0x66, 0x89, 0xc8,                        /* 1051: mov eax, ecx */
    0x66, 0xef,                              /* 1054: out dx, eax */
    0x26, 0x0f, 0x7f, 0x0e, 0x00, 0x18,      /* 1056: movq [es:0x1800], mm1 */
    0x26, 0x66, 0xa1, 0x00, 0x18,            /* 105c: mov eax, [es:0x1800] */
    0x66, 0xef,                              /* 1061: out dx, eax */
    0x26, 0x66, 0xa1, 0x04, 0x18,            /* 1063: mov eax, [es:0x1804] */
    0x66, 0xef,                              /* 1068: out dx, eax */
    0xf4,                                    /* 106a: hlt */
    0x00, 0x00, 0x00, 0x00, 0x00,            /* 106b: align 8, db 0 */
    0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, /* 1070: qword_val: dq 0x0123456789abcdef */
};

static void expect_mmio_write(struct crosvm_vcpu *vcpu, uint64_t addr, uint32_t len,
                              uint64_t value) {
  struct crosvm_vcpu_event evt;
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_MMIO, addr, true, len);
  if (io_value(&evt) != value)
    FAIL("MMIO write at 0x%llx: 0x%llx, wanted 0x%llx", (unsigned long long)addr,
         (unsigned long long)io_value(&evt), (unsigned long long)value);
  OK(crosvm_vcpu_resume(vcpu));
}

static void answer_mmio_read(struct crosvm_vcpu *vcpu, uint64_t addr, uint32_t len,
                             uint64_t value) {
  struct crosvm_vcpu_event evt;
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_MMIO, addr, false, len);
  CHECK(io_value(&evt) == 0); /* a read arrives as zeros */
  io_answer(&evt, value);
  OK(crosvm_vcpu_resume(vcpu));
}

int main(void) {
  struct guest_mem low, rom;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  guest_mem_alloc(&rom, 0x1000);
  rom.host[0] = 0x11;
  rom.host[0x10] = 0x22;
  OK(crosvm_create_memory(c, rom.fd, 0, 0x1000, ROM_ADDR, true, false, &rom.mem));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, REPORT_PORT, 1));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, ROM_ADDR, 0x1000));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, MMIO_ADDR, 0x100));

  struct crosvm_vcpu *vcpu = start_real_mode(c);

  expect_out(vcpu, REPORT_PORT, 1, 0x11);                 /* read of ROM */
  expect_mmio_write(vcpu, ROM_ADDR + 0x10, 1, 0x99);      /* write to ROM */
  expect_out(vcpu, REPORT_PORT, 1, 0x22);                 /* unchanged */
  CHECK(rom.host[0x10] == 0x22);

  expect_mmio_write(vcpu, MMIO_ADDR + 0x00, 1, 0x11);
  expect_mmio_write(vcpu, MMIO_ADDR + 0x02, 2, 0x2233);
  expect_mmio_write(vcpu, MMIO_ADDR + 0x04, 4, 0x44556677);
  expect_mmio_write(vcpu, MMIO_ADDR + 0x08, 8, 0x0123456789abcdefull);
  answer_mmio_read(vcpu, MMIO_ADDR + 0x10, 1, 0xa1);
  answer_mmio_read(vcpu, MMIO_ADDR + 0x12, 2, 0xb2b1);
  answer_mmio_read(vcpu, MMIO_ADDR + 0x14, 4, 0xc4c3c2c1);
  answer_mmio_read(vcpu, MMIO_ADDR + 0x18, 8, 0xd8d7d6d5d4d3d2d1ull);
  expect_out(vcpu, REPORT_PORT, 1, 0xa1);
  expect_out(vcpu, REPORT_PORT, 2, 0xb2b1);
  expect_out(vcpu, REPORT_PORT, 4, 0xc4c3c2c1);
  expect_out(vcpu, REPORT_PORT, 4, 0xd4d3d2d1);
  expect_out_stop(vcpu, REPORT_PORT, 4, 0xd8d7d6d5);

  guest_mem_destroy(c, &rom);
  return finish_test(c, &low, "mmio");
}
