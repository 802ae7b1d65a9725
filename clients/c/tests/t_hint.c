/*
 * t_hint: call hints, and the caching and deferral of registers.
 *
 * A hint on writes to port 0x720 asks the host to send the registers with
 * each such IO event: the sregs too when rax = 0x1111, the debug registers
 * too when rax = 0x2222, only the regs otherwise. At each stop the plugin
 * reads registers (answered from what came with the event, or from the
 * host), and once changes rbx: the change is held back until resume, and
 * the guest then reports the new rbx on port 0x721. A read of port 0x720
 * (the hint is for writes) is answered with 0x5a and reported too.
 */
#include "testlib.h"

#define HINT_PORT 0x720
#define REPORT_PORT 0x721

static const uint8_t code[] = {
    0xba, 0x20, 0x07,                        /* 1000: mov dx, 0x720 */
    0xb8, 0x11, 0x11,                        /* 1003: mov ax, 0x1111 */
    0xbb, 0xbb, 0xbb,                        /* 1006: mov bx, 0xbbbb */
    0xee,                                    /* 1009: out dx, al  ; hinted write; detail 0 (rax = 0x1111) matches */
    0x89, 0xd8,                              /* 100a: mov ax, bx */
    0xba, 0x21, 0x07,                        /* 100c: mov dx, 0x721 */
    0xef,                                    /* 100f: out dx, ax  ; reports rbx, changed by the plugin */
    0xba, 0x20, 0x07,                        /* 1010: mov dx, 0x720 */
    0xb8, 0x22, 0x22,                        /* 1013: mov ax, 0x2222 */
    0xee,                                    /* 1016: out dx, al  ; detail 1 (rax = 0x2222) matches */
    0xb8, 0x33, 0x33,                        /* 1017: mov ax, 0x3333 */
    0xee,                                    /* 101a: out dx, al  ; no detail matches */
    0xec,                                    /* 101b: in al, dx  ; a read: the hint is for writes */
    0xba, 0x21, 0x07,                        /* 101c: mov dx, 0x721 */
    0xee,                                    /* 101f: out dx, al  ; reports what the read returned */
    0xf4,                                    /* 1020: hlt */
};

static void check_rax(struct crosvm_vcpu *vcpu, uint64_t want) {
  struct kvm_regs regs;
  OK(crosvm_vcpu_get_regs(vcpu, &regs));
  if ((regs.rax & 0xffff) != want) FAIL("rax 0x%llx, wanted 0x%llx",
                                        (unsigned long long)regs.rax, (unsigned long long)want);
}

int main(void) {
  struct guest_mem low;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, HINT_PORT, 2));

  struct crosvm_hint_detail details[2];
  memset(details, 0, sizeof(details));
  details[0].match_rax = true;
  details[0].rax = 0x1111;
  details[0].send_sregs = true;
  details[1].match_rax = true;
  details[1].rax = 0x2222;
  details[1].send_debugregs = true;
  struct crosvm_hint hint;
  memset(&hint, 0, sizeof(hint));
  hint.address_space = CROSVM_ADDRESS_SPACE_IOPORT;
  hint.address = HINT_PORT;
  hint.address_flags = CROSVM_HINT_ON_WRITE;
  hint.details_count = 2;
  hint.details = details;

  /* Set, clear, set again. (The hints the library refuses before sending are mock_host.c's.) */
  OK(crosvm_set_hypercall_hint(c, 1, &hint));
  OK(crosvm_set_hypercall_hint(c, 0, NULL));
  OK(crosvm_set_hypercall_hint(c, 1, &hint));

  struct crosvm_vcpu *vcpu = start_real_mode(c);
  struct crosvm_vcpu_event evt;

  /* rax = 0x1111: regs and sregs came along. Change rbx (deferred). */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, HINT_PORT, true, 1);
  struct kvm_regs regs;
  OK(crosvm_vcpu_get_regs(vcpu, &regs));
  CHECK((regs.rax & 0xffff) == 0x1111 && (regs.rbx & 0xffff) == 0xbbbb);
  struct kvm_sregs sregs;
  OK(crosvm_vcpu_get_sregs(vcpu, &sregs));
  CHECK(sregs.cs.base == 0);
  struct kvm_debugregs dregs;
  OK(crosvm_vcpu_get_debugregs(vcpu, &dregs)); /* not sent: from the host */
  regs.rbx = 0x4444;
  OK(crosvm_vcpu_set_regs(vcpu, &regs));
  struct kvm_regs again;
  OK(crosvm_vcpu_get_regs(vcpu, &again));
  CHECK(again.rbx == 0x4444);
  OK(crosvm_vcpu_resume(vcpu));
  expect_out(vcpu, REPORT_PORT, 2, 0x4444);

  /* rax = 0x2222: regs and debug registers. */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, HINT_PORT, true, 1);
  check_rax(vcpu, 0x2222);
  OK(crosvm_vcpu_get_debugregs(vcpu, &dregs));
  OK(crosvm_vcpu_get_sregs(vcpu, &sregs));
  CHECK(sregs.cs.base == 0);
  OK(crosvm_vcpu_resume(vcpu));

  /* rax = 0x3333: no detail matches, regs only. */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, HINT_PORT, true, 1);
  check_rax(vcpu, 0x3333);
  OK(crosvm_vcpu_resume(vcpu));

  /* A read: not hinted; the registers come from the host. */
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, HINT_PORT, false, 1);
  check_rax(vcpu, 0x3333);
  evt.io_access.data[0] = 0x5a;
  OK(crosvm_vcpu_resume(vcpu));
  expect_out_stop(vcpu, REPORT_PORT, 1, 0x5a);

  OK(crosvm_set_hypercall_hint(c, 0, NULL));
  return finish_test(c, &low, "hint");
}
