/*
 * t_queries: extensions, CPUID and MSR lists, the network config, VM and
 * VCPU capabilities, Hyper-V CPUID and, where KVM has it, a Hyper-V SynIC
 * exit: with KVM_CAP_HYPERV_SYNIC enabled on the VCPU, the guest's write to
 * the SCONTROL MSR stops it with a HYPERV_SYNIC event.
 */
#include "testlib.h"

#define DONE_PORT 0x750
#define HV_X64_MSR_SCONTROL 0x40000080

static const uint8_t code[] = {
    0x85, 0xf6,                              /* 1000: test si, si  ; si = 1 when SynIC was enabled */
    0x74, 0x11,                              /* 1002: jz skip */
    0x66, 0xb9, 0x80, 0x00, 0x00, 0x40,      /* 1004: mov ecx, 0x40000080  ; HV_X64_MSR_SCONTROL */
    0x66, 0xb8, 0x01, 0x00, 0x00, 0x00,      /* 100a: mov eax, 1 */
    0x66, 0x31, 0xd2,                        /* 1010: xor edx, edx */
    0x0f, 0x30,                              /* 1013: wrmsr  ; a Hyper-V SynIC exit */
    0xba, 0x50, 0x07,                        /* 1015: skip: mov dx, 0x750 */
    0xee,                                    /* 1018: out dx, al */
    0xf4,                                    /* 1019: hlt */
};

static void query_vm(struct crosvm *c) {
  bool has = false;
  OK(crosvm_check_extension(c, KVM_CAP_IRQCHIP, &has));
  CHECK(has);
  OK(crosvm_check_extension(c, KVM_CAP_PIT2, &has));
  CHECK(has);
  OK(crosvm_check_extension(c, 0x7fffffff, &has));
  CHECK(!has);

  uint64_t args[4] = {0};
  CHECK_RC(crosvm_enable_capability(c, KVM_CAP_HYPERV_SYNIC, 0, args), -EINVAL);

  static struct kvm_cpuid_entry2 cpuid[512];
  uint32_t count = 0;
  CHECK_RC(crosvm_get_supported_cpuid(c, 1, cpuid, &count), -E2BIG);
  CHECK(count > 1);
  uint32_t total = count;
  OK(crosvm_get_supported_cpuid(c, 512, cpuid, &count));
  CHECK(count == total);
  bool leaf0 = false;
  for (uint32_t i = 0; i < count; i++) leaf0 |= cpuid[i].function == 0 && cpuid[i].eax >= 1;
  CHECK(leaf0);
  OK(crosvm_get_emulated_cpuid(c, 512, cpuid, &count));
  CHECK(count >= 1);

  static uint32_t msrs[1024];
  CHECK_RC(crosvm_get_msr_index_list(c, 1, msrs, &count), -E2BIG);
  CHECK(count > 1);
  OK(crosvm_get_msr_index_list(c, 1024, msrs, &count));
  bool sysenter = false;
  for (uint32_t i = 0; i < count; i++) sysenter |= msrs[i] == 0x174;
  CHECK(sysenter);

  struct crosvm_net_config net;
  CHECK_RC(crosvm_net_get_config(c, &net), -ENODATA); /* no tap device */
}

int main(void) {
  struct crosvm *c;
  OK(crosvm_connect(&c));
  query_vm(c);
  struct guest_mem low;
  load_real_mode_code(c, &low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, 1));
  bool synic = false, hv_cpuid = false;
  OK(crosvm_check_extension(c, KVM_CAP_HYPERV_SYNIC, &synic));
  OK(crosvm_check_extension(c, KVM_CAP_HYPERV_CPUID, &hv_cpuid));

  struct crosvm_vcpu *vcpu = start_at_init(c);
  struct crosvm_vcpu_event evt;
  struct kvm_regs regs;
  real_mode_init(vcpu, REAL_MODE_CODE, REAL_MODE_STACK, &regs);

  static struct kvm_cpuid_entry2 hv[64];
  uint32_t count = 0;
  int rc = crosvm_get_hyperv_cpuid(vcpu, 1, hv, &count);
  if (hv_cpuid) {
    CHECK_RC(rc, -E2BIG);
    CHECK(count > 1);
    OK(crosvm_get_hyperv_cpuid(vcpu, 64, hv, &count));
    bool vendor = false;
    for (uint32_t i = 0; i < count; i++) vendor |= hv[i].function == 0x40000000;
    CHECK(vendor);
  } else {
    CHECK(rc < 0);
  }

  uint64_t args[4] = {0, 0, 0, 0};
  CHECK_RC(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_HYPERV_SYNIC, 1, args), -EINVAL);
  args[1] = 1;
  CHECK_RC(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_HYPERV_SYNIC, 0, args), -EINVAL);
  args[1] = 0;
  CHECK_RC(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_IRQCHIP, 0, args), -EINVAL);
  if (synic) {
    OK(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_HYPERV_SYNIC, 0, args));
    regs.rsi = 1;
  }
  OK(crosvm_vcpu_set_regs(vcpu, &regs));
  OK(crosvm_vcpu_resume(vcpu));

  if (synic) {
    wait_kind(vcpu, &evt, CROSVM_VCPU_EVENT_KIND_HYPERV_SYNIC);
    CHECK(evt.hyperv_synic.msr == HV_X64_MSR_SCONTROL && evt.hyperv_synic.control == 1);
    OK(crosvm_vcpu_resume(vcpu));
  }
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, true, 1);

  guest_mem_destroy(c, &low);
  OK(crosvm_destroy_connection(&c));
  printf("queries: ok (hyperv cpuid %s, synic %s)\n", hv_cpuid ? "yes" : "no",
         synic ? "yes" : "no");
  return 0;
}
