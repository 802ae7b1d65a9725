/*
 * libFuzzer target: the VCPU side of the protocol as a hostile plugin meets
 * it. Each input is one selector byte and the bytes a plugin could write:
 *
 *   selector % 3 == 0 or 1: one VcpuRequest, decoded and dispatched by
 *     vcpu_conn_handle on a real KVM VCPU, with `init` still to collect (1)
 *     or collected (0); a resume is applied (registers, and a pending read
 *     of kvm_run's MMIO data). Every response the host writes must decode.
 *   selector % 3 == 2: a dispatch configuration image (what the host's main
 *     thread publishes), then lookups of addresses taken from the input.
 *
 * Run by `make -C native/test fuzz` under ASan and UBSan; a crash, a leak, a
 * sanitizer report, an undecodable response or a hang (-timeout) is a finding.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <linux/kvm.h>

#include "harness.h"

static struct machine *machine;
static struct vcpu *vcpu;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const uint8_t code[] = {0xf4};
  machine = machine_open(1, code, sizeof code, 0);
  vcpu = &machine->set->vcpus[0];
  /* The VCPU without its thread: the target calls the dispatcher itself. */
  vcpu->fd = ioctl(machine->vm_fd, KVM_CREATE_VCPU, 0);
  CHECK(vcpu->fd >= 0, "KVM_CREATE_VCPU");
  int size = ioctl(machine->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  vcpu->run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
  CHECK(vcpu->run != MAP_FAILED, "mmap kvm_run");
  vcpu->run_size = (size_t)size;
  return 0;
}

static void drain_responses(void) {
  for (VcpuResponse *r; (r = plugin_receive(machine, 0, 0));) vcpu_response_free(r);
}

static void fuzz_request(const uint8_t *data, size_t size, bool init_unsent) {
  vcpu->init_unsent = init_unsent;
  vcpu->pending = VCPU_PENDING_DATA;
  vcpu->pending_offset = offsetof(struct kvm_run, mmio.data);
  vcpu->pending_length = sizeof vcpu->run->mmio.data;
  VcpuRequest *resume = NULL;
  enum vcpu_serve result = vcpu_conn_handle(vcpu, data, size, &resume);
  CHECK(result != VCPU_SERVE_FAILED, "the dispatcher failed: %s", vcpu->failure);
  if (result == VCPU_SERVE_RESUME) {
    vcpu_apply_resume(vcpu, resume->resume);
    vcpu_conn_free_request(vcpu, resume);
  }
  drain_responses();
}

static void fuzz_config(const uint8_t *data, size_t size) {
  size_t count = size / sizeof(uint64_t);
  uint64_t *words = malloc((count ? count : 1) * sizeof *words);
  CHECK(words, "out of memory");
  memcpy(words, data, count * sizeof *words);
  vcpu_config_publish(&machine->set->config, words, count);
  for (size_t i = 0; i < count && i < 16; i++) {
    vcpu_config_lookup(&machine->set->config, (int)(words[i] & 1), words[i]);
    if (vcpu_config_hint_matches(&machine->set->config, (int)(words[i] & 1), words[i], words[i] & 2)) {
      vcpu_config_hint_sends(&machine->set->config, words[i], words[i] >> 1, words[i] >> 2, words[i] >> 3);
    }
  }
  free(words);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size - 1 > VCPU_REQUEST_MAX) return 0;
  switch (data[0] % 3) {
    case 0: fuzz_request(data + 1, size - 1, false); break;
    case 1: fuzz_request(data + 1, size - 1, true); break;
    case 2: fuzz_config(data + 1, size - 1); break;
  }
  return 0;
}
