/*
 * Writes the fuzz target's seed corpus (vcpu_fuzz.c's input format) into the
 * directory given: every VcpuRequest member in a well-formed shape, encoded by
 * the generated protobuf-c code, and a few well-formed configuration images.
 * The fuzzer mutates from the real shapes instead of finding them by chance.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/kvm.h>

#include "../protocol/messages.h"

typedef Plugvisor__Plugin__VcpuRequest VcpuRequest;

static const char *directory;
static int written;

static void write_seed(const char *name, uint8_t selector, const void *bytes, size_t length) {
  char path[4096];
  snprintf(path, sizeof path, "%s/seed-%s", directory, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    exit(1);
  }
  fputc(selector, f);
  fwrite(bytes, 1, length, f);
  fclose(f);
  written++;
}

static void seed_request(const char *name, const VcpuRequest *request) {
  size_t size;
  uint8_t *bytes = pack_message(&request->base, &size);
  if (!bytes) {
    fprintf(stderr, "fuzz_seeds: out of memory\n");
    exit(1);
  }
  write_seed(name, 0, bytes, size);
  char pending[128];
  snprintf(pending, sizeof pending, "%s-before-init", name);
  write_seed(pending, 1, bytes, size);
  free(bytes);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seeds DIRECTORY\n");
    return 2;
  }
  directory = argv[1];

  Plugvisor__Plugin__VcpuRequest__Wait wait = PLUGVISOR__PLUGIN__VCPU_REQUEST__WAIT__INIT;
  seed_request("wait", VCPU_REQUEST(WAIT, wait, &wait));

  static uint8_t regs[sizeof(struct kvm_regs)], sregs[sizeof(struct kvm_sregs)], debugregs[sizeof(struct kvm_debugregs)];
  uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  Plugvisor__Plugin__VcpuRequest__Resume resume = PLUGVISOR__PLUGIN__VCPU_REQUEST__RESUME__INIT;
  resume.data = (ProtobufCBinaryData){sizeof data, data};
  seed_request("resume-data", VCPU_REQUEST(RESUME, resume, &resume));
  resume.regs = (ProtobufCBinaryData){sizeof regs, regs};
  resume.sregs = (ProtobufCBinaryData){sizeof sregs, sregs};
  resume.debugregs = (ProtobufCBinaryData){sizeof debugregs, debugregs};
  seed_request("resume-registers", VCPU_REQUEST(RESUME, resume, &resume));

  static const size_t sizes[] = {sizeof(struct kvm_regs), sizeof(struct kvm_sregs), sizeof(struct kvm_fpu),
                                 sizeof(struct kvm_debugregs), sizeof(struct kvm_lapic_state), sizeof(struct kvm_mp_state),
                                 sizeof(struct kvm_xcrs), sizeof(struct kvm_vcpu_events)};
  static uint8_t state[sizeof(struct kvm_lapic_state)];
  for (int set = 0; set < 8; set++) {
    char name[64];
    Plugvisor__Plugin__VcpuRequest__GetState get = PLUGVISOR__PLUGIN__VCPU_REQUEST__GET_STATE__INIT;
    get.set = set;
    snprintf(name, sizeof name, "get-state-%d", set);
    seed_request(name, VCPU_REQUEST(GET_STATE, get_state, &get));
    Plugvisor__Plugin__VcpuRequest__SetState put = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_STATE__INIT;
    put.set = set;
    put.state = (ProtobufCBinaryData){sizes[set], state};
    snprintf(name, sizeof name, "set-state-%d", set);
    seed_request(name, VCPU_REQUEST(SET_STATE, set_state, &put));
  }

  uint32_t indices[] = {0x10, 0x174, 0xc0000081, 0x1b};
  Plugvisor__Plugin__VcpuRequest__GetMsrs get_msrs = PLUGVISOR__PLUGIN__VCPU_REQUEST__GET_MSRS__INIT;
  get_msrs.n_entry_indices = 4, get_msrs.entry_indices = indices;
  seed_request("get-msrs", VCPU_REQUEST(GET_MSRS, get_msrs, &get_msrs));

  Plugvisor__Plugin__VcpuRequest__MsrEntry entry = PLUGVISOR__PLUGIN__VCPU_REQUEST__MSR_ENTRY__INIT;
  entry.index = 0x174, entry.data = 0xbeef;
  Plugvisor__Plugin__VcpuRequest__MsrEntry *entries[] = {&entry};
  Plugvisor__Plugin__VcpuRequest__SetMsrs set_msrs = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_MSRS__INIT;
  set_msrs.n_entries = 1, set_msrs.entries = entries;
  seed_request("set-msrs", VCPU_REQUEST(SET_MSRS, set_msrs, &set_msrs));

  Plugvisor__Plugin__CpuidEntry cpuid = PLUGVISOR__PLUGIN__CPUID_ENTRY__INIT;
  cpuid.function = 0x40000000, cpuid.has_index = 1, cpuid.eax = 0x40000001;
  Plugvisor__Plugin__CpuidEntry *cpuid_entries[] = {&cpuid};
  Plugvisor__Plugin__VcpuRequest__SetCpuid set_cpuid = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_CPUID__INIT;
  set_cpuid.n_entries = 1, set_cpuid.entries = cpuid_entries;
  seed_request("set-cpuid", VCPU_REQUEST(SET_CPUID, set_cpuid, &set_cpuid));

  Plugvisor__Plugin__CpuidRequest hyperv = PLUGVISOR__PLUGIN__CPUID_REQUEST__INIT;
  seed_request("get-hyperv-cpuid", VCPU_REQUEST(GET_HYPERV_CPUID, get_hyperv_cpuid, &hyperv));

  Plugvisor__Plugin__VcpuRequest__EnableCapability capability = PLUGVISOR__PLUGIN__VCPU_REQUEST__ENABLE_CAPABILITY__INIT;
  capability.capability = KVM_CAP_HYPERV_SYNIC;
  seed_request("enable-capability", VCPU_REQUEST(ENABLE_CAPABILITY, enable_capability, &capability));

  Plugvisor__Plugin__VcpuRequest__Shutdown shutdown = PLUGVISOR__PLUGIN__VCPU_REQUEST__SHUTDOWN__INIT;
  seed_request("shutdown", VCPU_REQUEST(SHUTDOWN, shutdown, &shutdown));

  /* Configuration images (native/vcpu/config.h): two IO ranges and a hint with two register hints. */
  const uint64_t image[] = {2, 1, 1, 0, 0x10, 1, 2,          0x10, 0x11, 0, 0x20, 0x2f, 1, 0x1000, 0x1fff, 0,
                            1, 0x1111, 0, 0, 0, 1, 0xf, 1, 2, 3, 4, 3};
  write_seed("config", 2, image, sizeof image);
  const uint64_t empty[7] = {0};
  write_seed("config-empty", 2, empty, sizeof empty);

  printf("fuzz_seeds: %d seeds in %s\n", written, directory);
  return 0;
}
