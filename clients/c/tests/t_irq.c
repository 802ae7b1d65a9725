/*
 * t_irq: interrupts through irq events, irq lines and the routing table.
 *
 * The guest installs IVT handlers for IRQ 3, 4 and 5, programs the primary
 * PIC (vector base 0x20), enables interrupts and reports ready on port
 * 0x700; each handler reports its IRQ number on port 0x701 and sends EOI.
 *  - IRQ 4 comes from an irq event (irqfd, GSI 4): the plugin writes its
 *    trigger eventfd, and after the guest's EOI the resample eventfd fires.
 *  - IRQ 3 comes from crosvm_set_irq(3) (a pulse of the line).
 *  - IRQ 5 comes from GSI 10 after crosvm_set_irq_routing() routes GSI 10
 *    to pin 5 of the primary PIC (plus an MSI route, which must be accepted).
 */
#include "testlib.h"

#define READY_PORT 0x700
#define REPORT_PORT 0x701

static const uint8_t code[] = {
    0xfa,                                    /* 1000: cli */
    0x31, 0xc0,                              /* 1001: xor ax, ax */
    0x8e, 0xd8,                              /* 1003: mov ds, ax */
    0xc7, 0x06, 0x8c, 0x00, 0x45, 0x10,      /* 1005: mov word [0x23*4], irq3  ; IVT: vectors 0x23..0x25 = IRQ 3..5 */
    0xc7, 0x06, 0x8e, 0x00, 0x00, 0x00,      /* 100b: mov word [0x23*4+2], 0 */
    0xc7, 0x06, 0x90, 0x00, 0x4a, 0x10,      /* 1011: mov word [0x24*4], irq4 */
    0xc7, 0x06, 0x92, 0x00, 0x00, 0x00,      /* 1017: mov word [0x24*4+2], 0 */
    0xc7, 0x06, 0x94, 0x00, 0x4f, 0x10,      /* 101d: mov word [0x25*4], irq5 */
    0xc7, 0x06, 0x96, 0x00, 0x00, 0x00,      /* 1023: mov word [0x25*4+2], 0 */
    0xb0, 0x11,                              /* 1029: mov al, 0x11  ; ICW1: edge triggered, cascade, ICW4 follows */
    0xe6, 0x20,                              /* 102b: out 0x20, al */
    0xb0, 0x20,                              /* 102d: mov al, 0x20  ; ICW2: vector base 0x20 */
    0xe6, 0x21,                              /* 102f: out 0x21, al */
    0xb0, 0x04,                              /* 1031: mov al, 0x04  ; ICW3: secondary on IRQ2 */
    0xe6, 0x21,                              /* 1033: out 0x21, al */
    0xb0, 0x01,                              /* 1035: mov al, 0x01  ; ICW4: 8086 mode */
    0xe6, 0x21,                              /* 1037: out 0x21, al */
    0xb0, 0xc7,                              /* 1039: mov al, 0xc7  ; OCW1: unmask IRQ 3, 4 and 5 only */
    0xe6, 0x21,                              /* 103b: out 0x21, al */
    0xfb,                                    /* 103d: sti */
    0xba, 0x00, 0x07,                        /* 103e: mov dx, 0x700 */
    0xee,                                    /* 1041: out dx, al  ; ready */
    0xf4,                                    /* 1042: idle: hlt */
    0xeb, 0xfd,                              /* 1043: jmp idle */
    0x50,                                    /* 1045: irq3: push ax */
    0xb0, 0x03,                              /* 1046: mov al, 3 */
    0xeb, 0x08,                              /* 1048: jmp report */
    0x50,                                    /* 104a: irq4: push ax */
    0xb0, 0x04,                              /* 104b: mov al, 4 */
    0xeb, 0x03,                              /* 104d: jmp report */
    0x50,                                    /* 104f: irq5: push ax */
    0xb0, 0x05,                              /* 1050: mov al, 5 */
    0x52,                                    /* 1052: report: push dx */
    0xba, 0x01, 0x07,                        /* 1053: mov dx, 0x701 */
    0xee,                                    /* 1056: out dx, al  ; which IRQ arrived */
    0xb0, 0x20,                              /* 1057: mov al, 0x20 */
    0xe6, 0x20,                              /* 1059: out 0x20, al  ; non-specific EOI */
    0x5a,                                    /* 105b: pop dx */
    0x58,                                    /* 105c: pop ax */
    0xcf,                                    /* 105d: iret */
};

int main(void) {
  struct guest_mem low;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, READY_PORT, 2));

  struct crosvm_irq *irq;
  OK(crosvm_create_irq_event(c, 4, &irq));
  int trigger = crosvm_irq_event_get_fd(irq);
  int resample = crosvm_irq_event_get_resample_fd(irq);
  CHECK(trigger >= 0 && resample >= 0 && trigger != resample);

  struct crosvm_vcpu *vcpu = start_real_mode(c);
  struct crosvm_vcpu_event evt;

  /* Ready: raise IRQ 4 through the irq event. */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, READY_PORT, true, 1);
  uint64_t one = 1;
  CHECK(write(trigger, &one, sizeof(one)) == sizeof(one));
  OK(crosvm_vcpu_resume(vcpu));
  expect_out(vcpu, REPORT_PORT, 1, 4);
  if (eventfd_wait(resample, 5000) != 1) FAIL("the resample eventfd did not fire after EOI");

  /* IRQ 3 through the irq line. */
  pulse_irq(c, 3);
  expect_out(vcpu, REPORT_PORT, 1, 3);

  /* A new routing table: GSI 10 -> primary PIC pin 5, GSI 11 -> an MSI. */
  struct crosvm_irq_route routes[2];
  memset(routes, 0, sizeof(routes));
  routes[0].irq_id = 10;
  routes[0].kind = CROSVM_IRQ_ROUTE_IRQCHIP;
  routes[0].irqchip.irqchip = KVM_IRQCHIP_PIC_MASTER;
  routes[0].irqchip.pin = 5;
  routes[1].irq_id = 11;
  routes[1].kind = CROSVM_IRQ_ROUTE_MSI;
  routes[1].msi.address = 0xfee00000;
  routes[1].msi.data = 0x31;
  OK(crosvm_set_irq_routing(c, 2, routes));
  pulse_irq(c, 10);
  expect_out_stop(vcpu, REPORT_PORT, 1, 5);

  routes[1].kind = 7; /* not a route kind */
  CHECK_RC(crosvm_set_irq_routing(c, 2, routes), -EINVAL);

  OK(crosvm_destroy_irq_event(c, &irq));
  CHECK(irq == NULL);
  return finish_test(c, &low, "irq");
}
