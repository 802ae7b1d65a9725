/*
 * offsets: the ABI of crosvm.h, checked field by field (needs no host).
 *
 * Sizes, offsets, enum values and constants must match crosvm's API 0.22 so
 * that plugins built against either header work with either library.
 */
#include <stddef.h>
#include <stdio.h>

#include <crosvm.h>

static int failures;

#define EXPECT(expr, want)                                                       \
  do {                                                                           \
    unsigned long long got_ = (unsigned long long)(expr);                        \
    if (got_ != (unsigned long long)(want)) {                                    \
      fprintf(stderr, "offsets: %s is %llu, wanted %llu\n", #expr, got_,         \
              (unsigned long long)(want));                                       \
      failures++;                                                                \
    }                                                                            \
  } while (0)

int main(void) {
  EXPECT(CROSVM_API_MAJOR, 0);
  EXPECT(CROSVM_API_MINOR, 22);
  EXPECT(CROSVM_API_PATCH, 0);
  EXPECT(CROSVM_ADDRESS_SPACE_IOPORT, 0);
  EXPECT(CROSVM_ADDRESS_SPACE_MMIO, 1);
  EXPECT(CROSVM_IRQ_ROUTE_IRQCHIP, 0);
  EXPECT(CROSVM_IRQ_ROUTE_MSI, 1);
  EXPECT(CROSVM_MAX_HINT_COUNT, 1);
  EXPECT(CROSVM_MAX_HINT_DETAIL_COUNT, 32);
  EXPECT(CROSVM_HINT_ON_WRITE, 1);
  EXPECT(CROSVM_VCPU_EVENT_KIND_INIT, 0);
  EXPECT(CROSVM_VCPU_EVENT_KIND_IO_ACCESS, 1);
  EXPECT(CROSVM_VCPU_EVENT_KIND_PAUSED, 2);
  EXPECT(CROSVM_VCPU_EVENT_KIND_HYPERV_HCALL, 3);
  EXPECT(CROSVM_VCPU_EVENT_KIND_HYPERV_SYNIC, 4);

  EXPECT(sizeof(struct crosvm_net_config), 20);
  EXPECT(offsetof(struct crosvm_net_config, tap_fd), 0);
  EXPECT(offsetof(struct crosvm_net_config, host_ip), 4);
  EXPECT(offsetof(struct crosvm_net_config, netmask), 8);
  EXPECT(offsetof(struct crosvm_net_config, host_mac_address), 12);
  EXPECT(offsetof(struct crosvm_net_config, _padding), 18);

  EXPECT(sizeof(struct crosvm_irq_route), 24);
  EXPECT(offsetof(struct crosvm_irq_route, irq_id), 0);
  EXPECT(offsetof(struct crosvm_irq_route, kind), 4);
  EXPECT(offsetof(struct crosvm_irq_route, irqchip.irqchip), 8);
  EXPECT(offsetof(struct crosvm_irq_route, irqchip.pin), 12);
  EXPECT(offsetof(struct crosvm_irq_route, msi.address), 8);
  EXPECT(offsetof(struct crosvm_irq_route, msi.data), 16);
  EXPECT(offsetof(struct crosvm_irq_route, msi._reserved), 20);
  EXPECT(offsetof(struct crosvm_irq_route, _reserved), 8);

  EXPECT(sizeof(struct crosvm_hint_detail), 48);
  EXPECT(offsetof(struct crosvm_hint_detail, match_rax), 0);
  EXPECT(offsetof(struct crosvm_hint_detail, match_rbx), 1);
  EXPECT(offsetof(struct crosvm_hint_detail, match_rcx), 2);
  EXPECT(offsetof(struct crosvm_hint_detail, match_rdx), 3);
  EXPECT(offsetof(struct crosvm_hint_detail, rax), 8);
  EXPECT(offsetof(struct crosvm_hint_detail, rbx), 16);
  EXPECT(offsetof(struct crosvm_hint_detail, rcx), 24);
  EXPECT(offsetof(struct crosvm_hint_detail, rdx), 32);
  EXPECT(offsetof(struct crosvm_hint_detail, send_sregs), 40);
  EXPECT(offsetof(struct crosvm_hint_detail, send_debugregs), 41);
  EXPECT(offsetof(struct crosvm_hint_detail, _reserved2), 42);

  EXPECT(sizeof(struct crosvm_hint), 32);
  EXPECT(offsetof(struct crosvm_hint, hint_version), 0);
  EXPECT(offsetof(struct crosvm_hint, _reserved), 4);
  EXPECT(offsetof(struct crosvm_hint, address_space), 8);
  EXPECT(offsetof(struct crosvm_hint, address_flags), 12);
  EXPECT(offsetof(struct crosvm_hint, details_count), 14);
  EXPECT(offsetof(struct crosvm_hint, address), 16);
  EXPECT(offsetof(struct crosvm_hint, details), 24);
  EXPECT(offsetof(struct crosvm_hint, _reserved2), 24);

  EXPECT(sizeof(struct crosvm_vcpu_event), 72);
  EXPECT(offsetof(struct crosvm_vcpu_event, kind), 0);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access), 8);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access.address_space), 8);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access.address), 16);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access.data), 24);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access.length), 32);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access.is_write), 36);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access.no_resume), 37);
  EXPECT(offsetof(struct crosvm_vcpu_event, io_access._reserved), 38);
  EXPECT(offsetof(struct crosvm_vcpu_event, user), 8);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_call.input), 8);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_call.result), 16);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_call.params), 24);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_synic.msr), 8);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_synic.control), 16);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_synic.evt_page), 24);
  EXPECT(offsetof(struct crosvm_vcpu_event, hyperv_synic.msg_page), 32);
  EXPECT(offsetof(struct crosvm_vcpu_event, _reserved), 8);

  if (failures) return 1;
  printf("offsets: ok\n");
  return 0;
}
