/*
 * t_vm_state: VM-wide state get/set (PIC, IOAPIC, PIT, clock) and the
 * identity map address.
 *
 * Before starting the VM the plugin moves the primary PIC's vector base to
 * 0x40 and unmasks only IRQ 3 by writing the PIC state; the guest, which
 * never programs the PIC itself, then receives IRQ 3 at vector 0x43 and
 * reports it on port 0x701. IOAPIC, PIT and clock changes are read back.
 */
#include "testlib.h"

#define READY_PORT 0x700
#define REPORT_PORT 0x701

static const uint8_t code[] = {
    0x31, 0xc0,                              /* 1000: xor ax, ax */
    0x8e, 0xd8,                              /* 1002: mov ds, ax */
    0xc7, 0x06, 0x0c, 0x01, 0x18, 0x10,      /* 1004: mov word [0x43*4], handler  ; IRQ 3 with the PIC's base moved to 0x40 */
    0xc7, 0x06, 0x0e, 0x01, 0x00, 0x00,      /* 100a: mov word [0x43*4+2], 0 */
    0xfb,                                    /* 1010: sti */
    0xba, 0x00, 0x07,                        /* 1011: mov dx, 0x700 */
    0xee,                                    /* 1014: out dx, al  ; ready */
    0xf4,                                    /* 1015: idle: hlt */
    0xeb, 0xfd,                              /* 1016: jmp idle */
    0x50,                                    /* 1018: handler: push ax */
    0x52,                                    /* 1019: push dx */
    0xb0, 0x43,                              /* 101a: mov al, 0x43 */
    0xba, 0x01, 0x07,                        /* 101c: mov dx, 0x701 */
    0xee,                                    /* 101f: out dx, al */
    0xb0, 0x20,                              /* 1020: mov al, 0x20 */
    0xe6, 0x20,                              /* 1022: out 0x20, al */
    0x5a,                                    /* 1024: pop dx */
    0x58,                                    /* 1025: pop ax */
    0xcf,                                    /* 1026: iret */
};

int main(void) {
  struct guest_mem low;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, READY_PORT, 2));
  OK(crosvm_set_identity_map_addr(c, 0xfffbc000));

  /* PIC: a new vector base and mask for the primary, the secondary as is. */
  struct kvm_pic_state pic, pic2;
  OK(crosvm_get_pic_state(c, true, &pic));
  pic.irq_base = 0x40;
  pic.imr = 0xf7; /* only IRQ 3 */
  OK(crosvm_set_pic_state(c, true, &pic));
  OK(crosvm_get_pic_state(c, true, &pic2));
  CHECK(pic2.irq_base == 0x40 && pic2.imr == 0xf7);
  OK(crosvm_get_pic_state(c, false, &pic2));
  OK(crosvm_set_pic_state(c, false, &pic2));

  /* IOAPIC: its id and one redirection entry. */
  struct kvm_ioapic_state ioapic;
  OK(crosvm_get_ioapic_state(c, &ioapic));
  ioapic.id = 5;
  ioapic.redirtbl[7].bits = 0x10000 | 0x99; /* masked, vector 0x99 */
  OK(crosvm_set_ioapic_state(c, &ioapic));
  memset(&ioapic, 0, sizeof(ioapic));
  OK(crosvm_get_ioapic_state(c, &ioapic));
  CHECK(ioapic.id == 5 && ioapic.redirtbl[7].bits == (0x10000 | 0x99));

  /* PIT: the count of channel 1. */
  struct kvm_pit_state2 pit;
  OK(crosvm_get_pit_state(c, &pit));
  pit.channels[1].count = 0x1234;
  OK(crosvm_set_pit_state(c, &pit));
  memset(&pit, 0, sizeof(pit));
  OK(crosvm_get_pit_state(c, &pit));
  if (pit.channels[1].count != 0x1234) FAIL("PIT channel 1 count 0x%x", pit.channels[1].count);

  /* Clock: move it 100 s ahead. */
  struct kvm_clock_data clock;
  OK(crosvm_get_clock(c, &clock));
  uint64_t ahead = clock.clock + 100ull * 1000 * 1000 * 1000;
  memset(&clock, 0, sizeof(clock));
  clock.clock = ahead;
  OK(crosvm_set_clock(c, &clock));
  OK(crosvm_get_clock(c, &clock));
  if (clock.clock < ahead) FAIL("clock %llu < %llu", (unsigned long long)clock.clock,
                                (unsigned long long)ahead);

  struct crosvm_vcpu *vcpu = start_real_mode(c);
  struct crosvm_vcpu_event evt;

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, READY_PORT, true, 1);
  pulse_irq(c, 3);
  OK(crosvm_vcpu_resume(vcpu));
  expect_out_stop(vcpu, REPORT_PORT, 1, 0x43);

  return finish_test(c, &low, "vm_state");
}
