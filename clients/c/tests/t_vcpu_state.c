/*
 * t_vcpu_state: per-VCPU state, each change made visible by the guest.
 *
 * On INIT the plugin sets rbx (deferred regs), dr0 (deferred debugregs),
 * MSR 0x174, the CPUID table (a brand-string leaf), the
 * XCRs where XSAVE is available, the LAPIC's TPR and the MP state, and at
 * the first stop the FPU's st0/mm0. The
 * guest reports rbx, dr0, MSR 0x174, mm0 and CPUID 0x80000002 on port
 * 0x710, writes MSR 0x176 for the plugin to read with get_msrs, and finally
 * takes an NMI the plugin injects with set_vcpu_events (its handler reports
 * on port 0x711).
 */
#include "testlib.h"

#define PORT 0x710
#define NMI_PORT 0x711
#define BRAND 0x67756c50u /* "Plug" */

static const uint8_t code[] = {
    0x31, 0xc0,                              /* 1000: xor ax, ax */
    0x8e, 0xd8,                              /* 1002: mov ds, ax */
    0xc7, 0x06, 0x08, 0x00, 0x5f, 0x10,      /* 1004: mov word [2*4], nmi  ; IVT vector 2: NMI */
    0xc7, 0x06, 0x0a, 0x00, 0x00, 0x00,      /* 100a: mov word [2*4+2], 0 */
    0x0f, 0x6f, 0x06, 0x00, 0x18,            /* 1010: movq mm0, [0x1800]  ; touch the x87/MMX state (see the plugin) */
    0xba, 0x10, 0x07,                        /* 1015: mov dx, 0x710 */
    0x89, 0xd8,                              /* 1018: mov ax, bx */
    0xef,                                    /* 101a: out dx, ax  ; 1: rbx, set on INIT; the plugin sets st0 now */
    0x0f, 0x21, 0xc0,                        /* 101b: mov eax, dr0 */
    0x66, 0xef,                              /* 101e: out dx, eax  ; 2: dr0, set on INIT (deferred set_debugregs) */
    0x66, 0xb9, 0x74, 0x01, 0x00, 0x00,      /* 1020: mov ecx, 0x174 */
    0x0f, 0x32,                              /* 1026: rdmsr */
    0xba, 0x10, 0x07,                        /* 1028: mov dx, 0x710 */
    0x66, 0xef,                              /* 102b: out dx, eax  ; 3: MSR 0x174, set on INIT with set_msrs */
    0x66, 0xb9, 0x76, 0x01, 0x00, 0x00,      /* 102d: mov ecx, 0x176 */
    0x66, 0xb8, 0xcd, 0xab, 0x00, 0x00,      /* 1033: mov eax, 0xabcd */
    0x66, 0x31, 0xd2,                        /* 1039: xor edx, edx */
    0x0f, 0x30,                              /* 103c: wrmsr */
    0xba, 0x10, 0x07,                        /* 103e: mov dx, 0x710 */
    0xee,                                    /* 1041: out dx, al  ; 4: the plugin reads MSR 0x176 */
    0x0f, 0x7f, 0x06, 0x00, 0x18,            /* 1042: movq [0x1800], mm0 */
    0x66, 0xa1, 0x00, 0x18,                  /* 1047: mov eax, [0x1800] */
    0x66, 0xef,                              /* 104b: out dx, eax  ; 5: mm0 (= st0), set on INIT with set_fpu */
    0x66, 0xb8, 0x02, 0x00, 0x00, 0x80,      /* 104d: mov eax, 0x80000002 */
    0x0f, 0xa2,                              /* 1053: cpuid */
    0xba, 0x10, 0x07,                        /* 1055: mov dx, 0x710 */
    0x66, 0xef,                              /* 1058: out dx, eax  ; 6: CPUID brand leaf, set on INIT with set_cpuid */
    0xee,                                    /* 105a: out dx, al  ; 7: the plugin injects an NMI with set_vcpu_events */
    0xb0, 0xff,                              /* 105b: mov al, 0xff */
    0xee,                                    /* 105d: out dx, al  ; 9: done */
    0xf4,                                    /* 105e: hlt */
    0x50,                                    /* 105f: nmi: push ax */
    0x52,                                    /* 1060: push dx */
    0xba, 0x11, 0x07,                        /* 1061: mov dx, 0x711 */
    0xb0, 0x02,                              /* 1064: mov al, 2 */
    0xee,                                    /* 1066: out dx, al  ; 8: in the NMI handler */
    0x5a,                                    /* 1067: pop dx */
    0x58,                                    /* 1068: pop ax */
    0xcf,                                    /* 1069: iret */
};

static void setup(struct crosvm *c, struct crosvm_vcpu *vcpu) {
  struct kvm_regs regs;
  real_mode_init(vcpu, REAL_MODE_CODE, REAL_MODE_STACK, &regs);
  regs.rbx = 0xcafe;
  OK(crosvm_vcpu_set_regs(vcpu, &regs));
  struct kvm_regs back;
  OK(crosvm_vcpu_get_regs(vcpu, &back)); /* the deferred value */
  CHECK(back.rbx == 0xcafe && back.rip == REAL_MODE_CODE);

  struct kvm_debugregs dregs;
  OK(crosvm_vcpu_get_debugregs(vcpu, &dregs));
  dregs.db[0] = 0x12345678;
  OK(crosvm_vcpu_set_debugregs(vcpu, &dregs));
  struct kvm_debugregs dback;
  OK(crosvm_vcpu_get_debugregs(vcpu, &dback));
  CHECK(dback.db[0] == 0x12345678);

  struct kvm_msr_entry msrs[2];
  memset(msrs, 0, sizeof(msrs));
  msrs[0].index = 0x174; /* IA32_SYSENTER_CS */
  msrs[0].data = 0x1234;
  msrs[1].index = 0x175; /* IA32_SYSENTER_ESP */
  msrs[1].data = 0x5678;
  OK(crosvm_vcpu_set_msrs(vcpu, 2, msrs));
  msrs[0].data = msrs[1].data = 0;
  uint32_t count = 0;
  OK(crosvm_vcpu_get_msrs(vcpu, 2, msrs, &count));
  CHECK(count == 2 && msrs[0].data == 0x1234 && msrs[1].data == 0x5678);

  /* FPU: a round trip here; the visible change comes at the first stop. */
  struct kvm_fpu fpu;
  OK(crosvm_vcpu_get_fpu(vcpu, &fpu));
  OK(crosvm_vcpu_set_fpu(vcpu, &fpu));

  /* CPUID: what KVM supports, with our own brand string. */
  static struct kvm_cpuid_entry2 cpuid[256];
  OK(crosvm_get_supported_cpuid(c, 256, cpuid, &count));
  bool brand = false, xsave = false, sse_state = false;
  for (uint32_t i = 0; i < count; i++) {
    if (cpuid[i].function == 0x80000002) {
      cpuid[i].eax = BRAND;
      brand = true;
    }
    if (cpuid[i].function == 1) xsave = (cpuid[i].ecx >> 26) & 1;
    if (cpuid[i].function == 0xd && cpuid[i].index == 0) sse_state = (cpuid[i].eax >> 1) & 1;
  }
  CHECK(brand);
  OK(crosvm_vcpu_set_cpuid(vcpu, count, cpuid));

  struct kvm_xcrs xcrs;
  OK(crosvm_vcpu_get_xcrs(vcpu, &xcrs));
  if (xsave && sse_state && xcrs.nr_xcrs >= 1) {
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = 0x3; /* x87 | SSE */
    xcrs.nr_xcrs = 1;
    OK(crosvm_vcpu_set_xcrs(vcpu, &xcrs));
    memset(&xcrs, 0, sizeof(xcrs));
    OK(crosvm_vcpu_get_xcrs(vcpu, &xcrs));
    CHECK(xcrs.nr_xcrs >= 1 && xcrs.xcrs[0].xcr == 0 && xcrs.xcrs[0].value == 0x3);
  } else {
    OK(crosvm_vcpu_set_xcrs(vcpu, &xcrs)); /* at least the round trip */
  }

  struct kvm_lapic_state lapic;
  OK(crosvm_vcpu_get_lapic_state(vcpu, &lapic));
  lapic.regs[0x80] = 0x10; /* task priority */
  OK(crosvm_vcpu_set_lapic_state(vcpu, &lapic));
  memset(&lapic, 0, sizeof(lapic));
  OK(crosvm_vcpu_get_lapic_state(vcpu, &lapic));
  CHECK(lapic.regs[0x80] == 0x10);
  lapic.regs[0x80] = 0;
  OK(crosvm_vcpu_set_lapic_state(vcpu, &lapic));

  struct kvm_mp_state mp;
  OK(crosvm_vcpu_get_mp_state(vcpu, &mp));
  CHECK(mp.mp_state == KVM_MP_STATE_RUNNABLE);
  OK(crosvm_vcpu_set_mp_state(vcpu, &mp));

  struct kvm_vcpu_events events;
  OK(crosvm_vcpu_get_vcpu_events(vcpu, &events));
  OK(crosvm_vcpu_set_vcpu_events(vcpu, &events));
}

int main(void) {
  struct guest_mem low;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, PORT, 2));

  struct crosvm_vcpu *vcpu = start_at_init(c);
  struct crosvm_vcpu_event evt;
  setup(c, vcpu);
  OK(crosvm_vcpu_resume(vcpu));

  /*
   * 1: rbx. The guest has touched its MMX state by now; only then does KVM
   * load what KVM_SET_FPU writes (it leaves the x87 component of a never
   * used XSAVE state marked as "init"), so set st0/mm0 here.
   */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, PORT, true, 2);
  CHECK(io_value(&evt) == 0xcafe);
  struct kvm_fpu fpu;
  OK(crosvm_vcpu_get_fpu(vcpu, &fpu));
  static const uint8_t st0[8] = {0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55};
  memcpy(fpu.fpr[0], st0, sizeof(st0));
  OK(crosvm_vcpu_set_fpu(vcpu, &fpu));
  struct kvm_fpu fback;
  OK(crosvm_vcpu_get_fpu(vcpu, &fback));
  CHECK(memcmp(fback.fpr[0], st0, sizeof(st0)) == 0);
  OK(crosvm_vcpu_resume(vcpu));
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, PORT, true, 4);
  CHECK(io_value(&evt) == 0x12345678);   /* 2: dr0 */
  struct kvm_debugregs dregs;
  OK(crosvm_vcpu_get_debugregs(vcpu, &dregs)); /* from the host now */
  CHECK(dregs.db[0] == 0x12345678);
  OK(crosvm_vcpu_resume(vcpu));
  expect_out(vcpu, PORT, 4, 0x1234);     /* 3: MSR 0x174 */

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, PORT, true, 1); /* 4 */
  struct kvm_msr_entry msr;
  memset(&msr, 0, sizeof(msr));
  msr.index = 0x176;
  uint32_t count = 0;
  OK(crosvm_vcpu_get_msrs(vcpu, 1, &msr, &count));
  CHECK(count == 1 && msr.data == 0xabcd);
  struct kvm_sregs sregs;
  OK(crosvm_vcpu_get_sregs(vcpu, &sregs));
  CHECK(sregs.cs.base == 0 && sregs.cs.selector == 0);
  struct kvm_regs regs;
  OK(crosvm_vcpu_get_regs(vcpu, &regs));
  CHECK(regs.rcx == 0x176 && regs.rbx == 0xcafe);
  OK(crosvm_vcpu_resume(vcpu));

  expect_out(vcpu, PORT, 4, 0x11223344); /* 5: mm0 = st0 */
  expect_out(vcpu, PORT, 4, BRAND);      /* 6: CPUID */

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, PORT, true, 1); /* 7 */
  struct kvm_vcpu_events events;
  OK(crosvm_vcpu_get_vcpu_events(vcpu, &events));
  events.nmi.pending = 1;
  events.flags = KVM_VCPUEVENT_VALID_NMI_PENDING;
  OK(crosvm_vcpu_set_vcpu_events(vcpu, &events));
  OK(crosvm_vcpu_resume(vcpu));
  expect_out(vcpu, NMI_PORT, 1, 2);      /* 8: the NMI handler */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, PORT, true, 1);
  CHECK(io_value(&evt) == 0xff);         /* 9: done */

  return finish_test(c, &low, "vcpu_state");
}
