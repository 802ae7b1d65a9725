/*
 * t_pause: pausing running VCPUs (run with --cpus 2).
 *
 * Both VCPUs spin forever incrementing a counter (VCPU 1 is made runnable
 * with set_mp_state: as an application processor it would otherwise wait
 * for a startup IPI). Once both counters move, the plugin pauses every VCPU
 * (with a mask that also names VCPUs that do not exist); each reports
 * PAUSED with the plugin's pointer. Each VCPU thread then moves rip to a
 * report routine and sets rsi, and the guest writes rsi to port 0x740.
 * Each thread uses its own VCPU handle; the main thread the connection.
 */
#include "testlib.h"

#include <pthread.h>

#define REPORT_PORT 0x740
#define VCPU0_ENTRY 0x1000
#define VCPU1_ENTRY 0x1006
#define REPORT_ENTRY 0x100c

static const uint8_t code[] = {
    0xff, 0x06, 0x00, 0x18,                  /* 1000: vcpu0: inc word [0x1800]  ; VCPU 0 spins here */
    0xeb, 0xfa,                              /* 1004: jmp vcpu0 */
    0xff, 0x06, 0x02, 0x18,                  /* 1006: vcpu1: inc word [0x1802]  ; VCPU 1 spins here */
    0xeb, 0xfa,                              /* 100a: jmp vcpu1 */
    0xba, 0x40, 0x07,                        /* 100c: report: mov dx, 0x740 */
    0x89, 0xf0,                              /* 100f: mov ax, si */
    0xef,                                    /* 1011: out dx, ax  ; the plugin moved rip here and set rsi */
    0xf4,                                    /* 1012: hlt */
};

static int marker; /* its address is the pause's user pointer */
static struct guest_mem low;

struct worker {
  struct crosvm_vcpu *vcpu;
  unsigned id;
  pthread_t thread;
};

static void *vcpu_thread(void *arg) {
  struct worker *w = arg;
  struct crosvm_vcpu_event evt;
  wait_kind(w->vcpu, &evt, CROSVM_VCPU_EVENT_KIND_INIT);
  real_mode_init(w->vcpu, w->id == 0 ? VCPU0_ENTRY : VCPU1_ENTRY, 0x1f00 - 0x80 * w->id,
                 NULL);
  if (w->id != 0) make_runnable(w->vcpu);
  OK(crosvm_vcpu_resume(w->vcpu));

  wait_kind(w->vcpu, &evt, CROSVM_VCPU_EVENT_KIND_PAUSED);
  CHECK(evt.user == &marker);
  struct kvm_regs regs;
  OK(crosvm_vcpu_get_regs(w->vcpu, &regs));
  uint64_t entry = w->id == 0 ? VCPU0_ENTRY : VCPU1_ENTRY;
  if (regs.rip < entry || regs.rip >= entry + 6)
    FAIL("vcpu %u paused at rip 0x%llx", w->id, (unsigned long long)regs.rip);
  regs.rip = REPORT_ENTRY;
  regs.rsi = 0x100 + w->id;
  OK(crosvm_vcpu_set_regs(w->vcpu, &regs));
  OK(crosvm_vcpu_resume(w->vcpu));

  wait_io(w->vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, REPORT_PORT, true, 2);
  CHECK(io_value(&evt) == 0x100 + w->id);
  return NULL; /* left stopped: the plugin exits */
}

static uint16_t counter(unsigned id) {
  return __atomic_load_n((uint16_t *)(low.host + 0x1800 + 2 * id), __ATOMIC_RELAXED);
}

int main(void) {
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, REPORT_PORT, 1));

  struct worker workers[2];
  for (unsigned i = 0; i < 2; i++) {
    workers[i].id = i;
    OK(crosvm_get_vcpu(c, i, &workers[i].vcpu));
  }
  struct crosvm_vcpu *none;
  CHECK_RC(crosvm_get_vcpu(c, 2, &none), -ENOENT);
  OK(crosvm_start(c));
  for (unsigned i = 0; i < 2; i++)
    CHECK(pthread_create(&workers[i].thread, NULL, vcpu_thread, &workers[i]) == 0);

  /* Wait until both guests are spinning. */
  for (int tries = 0; counter(0) == 0 || counter(1) == 0; tries++) {
    if (tries > 1000) FAIL("the VCPUs do not run (counters %u %u)", counter(0), counter(1));
    usleep(10 * 1000);
  }
  OK(crosvm_pause_vcpus(c, 0x3 | (1ull << 40), &marker));
  for (unsigned i = 0; i < 2; i++) pthread_join(workers[i].thread, NULL);

  return finish_test(c, &low, "pause");
}
