/*
 * What the native VCPU tests and the fuzz target share: a real KVM VM with
 * guest memory, a VCPU set over real pipes (native/vcpu/), and the plugin's
 * side of each VCPU's pipe pair, spoken with the same protobuf-c code.
 *
 * Everything here fails loudly (harness_fail) instead of returning errors: a
 * test that cannot set up has nothing to say.
 */
#ifndef PLUGVISOR_TEST_HARNESS_H_
#define PLUGVISOR_TEST_HARNESS_H_

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../protocol/messages.h"
#include "conn.h"
#include "vcpu.h"

#define HARNESS_MAX_VCPUS 64
/* Guest-physical layout: one slot of this size at 0; real-mode code at 0x1000. */
#define GUEST_MEMORY_SIZE 0x10000
#define GUEST_CODE 0x1000

void harness_fail(const char *file, int line, const char *format, ...) __attribute__((noreturn, format(printf, 3, 4)));
#define FAIL(...) harness_fail(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond, ...)          \
  do {                            \
    if (!(cond)) FAIL(__VA_ARGS__); \
  } while (0)

/* The plugin's ends of one VCPU's pipes, and what has been read from the host but not parsed yet. */
struct plugin_end {
  int request_fd;  /* plugin -> host (write end) */
  int response_fd; /* host -> plugin (read end) */
  uint8_t buffer[1 << 18];
  size_t start, end;
};

/* One VM with its VCPU set, as a plugin would see it. */
struct machine {
  int kvm_fd, vm_fd;
  uint8_t *memory;
  uint32_t vcpus;
  int host_request_fds[HARNESS_MAX_VCPUS], host_response_fds[HARNESS_MAX_VCPUS];
  struct plugin_end plugin[HARNESS_MAX_VCPUS];
  struct vcpu_set *set;
  /* What the set reported, under `lock`. */
  pthread_mutex_t lock;
  pthread_cond_t changed;
  bool ended[HARNESS_MAX_VCPUS];
  bool failed[HARNESS_MAX_VCPUS];
  char reason[HARNESS_MAX_VCPUS][VCPU_MESSAGE_MAX];
  unsigned logs;
  char last_log[VCPU_MESSAGE_MAX];
};

/* A VM (a TSS, no irqchip) with GUEST_MEMORY_SIZE bytes at 0 holding `code` at GUEST_CODE, and a set of `vcpus` VCPUs. */
struct machine *machine_open(uint32_t vcpus, const uint8_t *code, size_t code_size, long spin_us);
/* Creates the VCPUs and starts their threads. */
void machine_start(struct machine *m);
/* Shuts the set down, waits for every thread (bounded) and frees everything, `m` too. */
void machine_close(struct machine *m);
/* Waits up to `ms` for VCPU `index`'s thread to end; true if it did. */
bool machine_wait_end(struct machine *m, uint32_t index, int ms);
/* Publishes reserved ranges: `n` of {space, first, last, async} quadruples, no call hint. */
void machine_reserve(struct machine *m, const uint64_t *ranges, size_t n);

/* A request packed into a new buffer (free() it). */
uint8_t *pack_request(const VcpuRequest *request, size_t *size);
/* Sends a request as one write. */
void plugin_send(struct machine *m, uint32_t vcpu, const VcpuRequest *request);
/* Sends raw bytes as one write (malformed requests). */
void plugin_send_bytes(struct machine *m, uint32_t vcpu, const void *bytes, size_t length);
/* The next response, within `ms` (NULL on timeout); free with vcpu_response_free. */
VcpuResponse *plugin_receive(struct machine *m, uint32_t vcpu, int ms);
void vcpu_response_free(VcpuResponse *response);

/* Request builders and the usual exchanges. */
void plugin_wait(struct machine *m, uint32_t vcpu);
void plugin_resume(struct machine *m, uint32_t vcpu, const void *data, size_t length);
/* Sends wait and expects wait{init}. */
void plugin_take_init(struct machine *m, uint32_t vcpu);
/* set_state(set, bytes): the errno of the answer (which must carry the set_state member). */
int plugin_set_state(struct machine *m, uint32_t vcpu, int set, const void *bytes, size_t length);
/* Real mode at GUEST_CODE (cs = 0, rflags = 2), rdx = `rdx`, runnable (MP state), through the protocol. */
void plugin_set_up_real_mode(struct machine *m, uint32_t vcpu, uint64_t rdx);
/* Takes init and sets up real mode: the VCPU is ready to run the guest at its resume. */
void plugin_init_real_mode(struct machine *m, uint32_t vcpu, uint64_t rdx);
/* plugin_init_real_mode, then an empty resume: the VCPU runs the guest. */
void plugin_run_real_mode(struct machine *m, uint32_t vcpu, uint64_t rdx);
/* Expects wait{io} and returns it (free the response with vcpu_response_free). */
VcpuResponse *plugin_expect_io(struct machine *m, uint32_t vcpu, int ms);

/* Descriptors open in this process (from /proc/self/fd). */
int open_fd_count(void);
/* Threads of this process (from /proc/self/status). */
int thread_count(void);

#endif
