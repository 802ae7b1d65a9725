/*
 * t_many_vcpus: every VCPU the VM has (up to 64, `--cpus N`), each served by
 * a thread of its own with its own connection, as crosvm plugins do. Every
 * VCPU runs the same real-mode code with its own AL and reports AL + BL on
 * port 0x10; the plugin checks each one's sum and prints "many_vcpus: N ok".
 */
#include "testlib.h"

#include <pthread.h>

#define MAX_VCPUS 64
#define REPORT_PORT 0x10

static const uint8_t code[] = {
    0x00, 0xd8, /* 1000: add al, bl */
    0xe6, 0x10, /* 1002: out 0x10, al */
    0xf4,       /* 1004: hlt */
};

static struct crosvm *crosvm;

struct vcpu_thread {
  uint32_t id;
  pthread_t thread;
  int reported; /* the guest's AL + BL, or -1 */
};

static void *run_vcpu(void *arg) {
  struct vcpu_thread *t = arg;
  struct crosvm *conn;
  OK(crosvm_new_connection(crosvm, &conn));
  struct crosvm_vcpu *vcpu;
  OK(crosvm_get_vcpu(conn, t->id, &vcpu));
  for (;;) {
    struct crosvm_vcpu_event evt;
    OK(crosvm_vcpu_wait(vcpu, &evt));
    if (evt.kind == CROSVM_VCPU_EVENT_KIND_INIT) {
      struct kvm_regs regs;
      real_mode_init(vcpu, REAL_MODE_CODE, REAL_MODE_STACK, &regs);
      regs.rax = t->id;
      regs.rbx = 100;
      OK(crosvm_vcpu_set_regs(vcpu, &regs));
      make_runnable(vcpu);
    } else if (evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS && evt.io_access.address == REPORT_PORT) {
      t->reported = evt.io_access.data[0];
      break; /* leave it stopped: the plugin exits once all have reported */
    }
    OK(crosvm_vcpu_resume(vcpu));
  }
  OK(crosvm_destroy_connection(&conn));
  return NULL;
}

int main(void) {
  OK(crosvm_connect(&crosvm));
  struct guest_mem mem;
  guest_mem_create(crosvm, &mem, REAL_MODE_CODE, 0x1000, false, false);
  memcpy(mem.host, code, sizeof(code));
  OK(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, REPORT_PORT, 1));

  static struct vcpu_thread threads[MAX_VCPUS];
  uint32_t count = 0;
  struct crosvm_vcpu *vcpu;
  while (count < MAX_VCPUS && crosvm_get_vcpu(crosvm, count, &vcpu) == 0) count++;
  CHECK_RC(crosvm_get_vcpu(crosvm, count, &vcpu), -ENOENT);

  OK(crosvm_start(crosvm));
  for (uint32_t i = 0; i < count; i++) {
    threads[i] = (struct vcpu_thread){.id = i, .reported = -1};
    CHECK(pthread_create(&threads[i].thread, NULL, run_vcpu, &threads[i]) == 0);
  }
  for (uint32_t i = 0; i < count; i++) {
    pthread_join(threads[i].thread, NULL);
    if (threads[i].reported != (int)(100 + i)) FAIL("vcpu %u reported %d, not %u", i, threads[i].reported, 100 + i);
  }
  printf("many_vcpus: %u ok\n", count);
  return 0;
}
