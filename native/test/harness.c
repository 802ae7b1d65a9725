/* The shared part of the native VCPU tests and the fuzz target (see harness.h). */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

/* As the host does (src/host/run.ts): the TSS for real mode on Intel without unrestricted guest. */
#define TSS_ADDRESS 0xfffbd000

void harness_fail(const char *file, int line, const char *format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "%s:%d: ", file, line);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
  abort();
}

static void on_log(void *context, uint32_t index, enum vcpu_log_level level, const char *message) {
  (void)level;
  struct machine *m = context;
  pthread_mutex_lock(&m->lock);
  m->logs++;
  snprintf(m->last_log, sizeof m->last_log, "vcpu %u: %s", index, message);
  pthread_mutex_unlock(&m->lock);
}

static void on_exit_event(void *context, uint32_t index, bool failed, const char *reason) {
  struct machine *m = context;
  pthread_mutex_lock(&m->lock);
  m->ended[index] = true;
  m->failed[index] = failed;
  snprintf(m->reason[index], sizeof m->reason[index], "%s", reason);
  pthread_cond_broadcast(&m->changed);
  pthread_mutex_unlock(&m->lock);
}

struct machine *machine_open(uint32_t vcpus, const uint8_t *code, size_t code_size, long spin_us) {
  CHECK(vcpus >= 1 && vcpus <= HARNESS_MAX_VCPUS, "bad VCPU count %u", vcpus);
  struct machine *m = calloc(1, sizeof *m); /* the plugin ends' buffers make it large */
  CHECK(m, "out of memory");
  pthread_mutex_init(&m->lock, NULL);
  pthread_cond_init(&m->changed, NULL);
  m->vcpus = vcpus;
  m->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  CHECK(m->kvm_fd >= 0, "open /dev/kvm: %s", strerror(errno));
  do m->vm_fd = ioctl(m->kvm_fd, KVM_CREATE_VM, 0); while (m->vm_fd < 0 && errno == EINTR);
  CHECK(m->vm_fd >= 0, "KVM_CREATE_VM: %s", strerror(errno));
  CHECK(ioctl(m->vm_fd, KVM_SET_TSS_ADDR, TSS_ADDRESS) == 0, "KVM_SET_TSS_ADDR: %s", strerror(errno));
  /* No in-kernel irqchip (unlike the host's VM): without it HLT exits to userspace, so a guest can end its VCPU. */

  m->memory = mmap(NULL, GUEST_MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(m->memory != MAP_FAILED, "mmap: %s", strerror(errno));
  CHECK(code_size <= GUEST_MEMORY_SIZE - GUEST_CODE, "guest code too large");
  memcpy(m->memory + GUEST_CODE, code, code_size);
  struct kvm_userspace_memory_region region = {
    .slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEMORY_SIZE, .userspace_addr = (uintptr_t)m->memory};
  CHECK(ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) == 0, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));

  for (uint32_t i = 0; i < vcpus; i++) {
    int request[2], response[2];
    CHECK(pipe2(request, O_CLOEXEC) == 0 && pipe2(response, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
    /* As the host does (src/host/vcpus.ts): the protocol's 256 KiB, so that the largest request is one read. */
    CHECK(fcntl(request[1], F_SETPIPE_SZ, VCPU_REQUEST_MAX) >= 0 && fcntl(response[1], F_SETPIPE_SZ, VCPU_REQUEST_MAX) >= 0,
          "F_SETPIPE_SZ: %s", strerror(errno));
    m->host_request_fds[i] = request[0];
    m->plugin[i].request_fd = request[1];
    m->plugin[i].response_fd = response[0];
    m->host_response_fds[i] = response[1];
  }
  struct vcpu_events events = {.log = on_log, .exit = on_exit_event, .destroy = NULL, .context = m};
  int err = 0;
  m->set = vcpu_set_new(vcpus, m->host_request_fds, m->host_response_fds, spin_us, events, &err);
  CHECK(m->set, "vcpu_set_new: %s", strerror(err));
  return m;
}

void machine_start(struct machine *m) {
  int fds[HARNESS_MAX_VCPUS];
  for (uint32_t i = 0; i < m->vcpus; i++) {
    fds[i] = ioctl(m->vm_fd, KVM_CREATE_VCPU, i);
    CHECK(fds[i] >= 0, "KVM_CREATE_VCPU %u: %s", i, strerror(errno));
  }
  int size = ioctl(m->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  CHECK(size > 0, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
  const char *failed_call = NULL;
  int err = vcpu_set_start(m->set, fds, (size_t)size, &failed_call);
  CHECK(err == 0, "vcpu_set_start: %s: %s", failed_call, strerror(err));
}

void machine_reserve(struct machine *m, const uint64_t *ranges, size_t n) {
  uint64_t image[7 + 3 * 16] = {0};
  CHECK(n <= 16, "too many ranges");
  size_t at = 7;
  for (int space = 0; space < 2; space++) {
    for (size_t i = 0; i < n; i++) {
      if (ranges[4 * i] != (uint64_t)space) continue;
      image[space]++;
      image[at++] = ranges[4 * i + 1];
      image[at++] = ranges[4 * i + 2];
      image[at++] = ranges[4 * i + 3];
    }
  }
  int err = vcpu_config_publish(&m->set->config, image, at);
  CHECK(err == 0, "vcpu_config_publish: %s", strerror(err));
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool machine_wait_end(struct machine *m, uint32_t index, int ms) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += ms / 1000;
  deadline.tv_nsec += (long)(ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&m->lock);
  while (!m->ended[index]) {
    if (pthread_cond_timedwait(&m->changed, &m->lock, &deadline) == ETIMEDOUT) break;
  }
  bool ended = m->ended[index];
  pthread_mutex_unlock(&m->lock);
  return ended;
}

void machine_close(struct machine *m) {
  vcpu_set_shutdown(m->set);
  long long deadline = now_ms() + 5000;
  while (vcpu_set_reap(m->set) > 0) {
    CHECK(now_ms() < deadline, "VCPU threads did not end within 5 s of shutdown");
    vcpu_set_kick_all(m->set);
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
    nanosleep(&pause, NULL);
  }
  vcpu_set_close(m->set);
  for (uint32_t i = 0; i < m->vcpus; i++) {
    close(m->host_request_fds[i]);
    close(m->host_response_fds[i]);
    close(m->plugin[i].request_fd);
    close(m->plugin[i].response_fd);
  }
  munmap(m->memory, GUEST_MEMORY_SIZE);
  close(m->vm_fd);
  close(m->kvm_fd);
  pthread_cond_destroy(&m->changed);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

void plugin_send_bytes(struct machine *m, uint32_t vcpu, const void *bytes, size_t length) {
  ssize_t n = write(m->plugin[vcpu].request_fd, bytes, length);
  CHECK(n == (ssize_t)length, "writing a request of %zu bytes: %s", length, n < 0 ? strerror(errno) : "short write");
}

uint8_t *pack_request(const VcpuRequest *request, size_t *size) {
  uint8_t *bytes = pack_message(&request->base, size);
  CHECK(bytes, "out of memory");
  return bytes;
}

void plugin_send(struct machine *m, uint32_t vcpu, const VcpuRequest *request) {
  size_t size;
  uint8_t *bytes = pack_request(request, &size);
  plugin_send_bytes(m, vcpu, bytes, size);
  free(bytes);
}

/* The next complete length-delimited message in the buffer, or NULL. */
static VcpuResponse *parse_next(struct plugin_end *p) {
  uint64_t length = 0;
  size_t at = p->start;
  for (int shift = 0;; shift += 7) {
    if (at >= p->end) return NULL;
    CHECK(shift < 35, "a response length prefix longer than a varint32");
    uint8_t byte = p->buffer[at++];
    length |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) break;
  }
  if (p->end - at < length) {
    CHECK(length <= sizeof p->buffer, "a response of %llu bytes", (unsigned long long)length);
    return NULL;
  }
  VcpuResponse *response = plugvisor__plugin__vcpu_response__unpack(NULL, length, p->buffer + at);
  CHECK(response, "the host sent a response that does not decode (%llu bytes)", (unsigned long long)length);
  p->start = at + length;
  if (p->start == p->end) p->start = p->end = 0;
  return response;
}

VcpuResponse *plugin_receive(struct machine *m, uint32_t vcpu, int ms) {
  struct plugin_end *p = &m->plugin[vcpu];
  long long deadline = now_ms() + ms;
  for (;;) {
    VcpuResponse *response = parse_next(p);
    if (response) return response;
    if (p->start > 0) { /* make room at the end */
      memmove(p->buffer, p->buffer + p->start, p->end - p->start);
      p->end -= p->start;
      p->start = 0;
    }
    long long left = deadline - now_ms();
    struct pollfd fd = {.fd = p->response_fd, .events = POLLIN};
    int r = poll(&fd, 1, left > 0 ? (int)left : 0);
    if (r < 0 && errno == EINTR) continue;
    CHECK(r >= 0, "poll: %s", strerror(errno));
    if (r == 0) return NULL;
    ssize_t n = read(p->response_fd, p->buffer + p->end, sizeof p->buffer - p->end);
    CHECK(n > 0, "reading responses of vcpu %u: %s", vcpu, n < 0 ? strerror(errno) : "end of file");
    p->end += (size_t)n;
  }
}

void vcpu_response_free(VcpuResponse *response) { plugvisor__plugin__vcpu_response__free_unpacked(response, NULL); }

void plugin_wait(struct machine *m, uint32_t vcpu) {
  Plugvisor__Plugin__VcpuRequest__Wait wait = PLUGVISOR__PLUGIN__VCPU_REQUEST__WAIT__INIT;
  plugin_send(m, vcpu, VCPU_REQUEST(WAIT, wait, &wait));
}

void plugin_resume(struct machine *m, uint32_t vcpu, const void *data, size_t length) {
  VcpuResume resume = PLUGVISOR__PLUGIN__VCPU_REQUEST__RESUME__INIT;
  resume.data.data = (uint8_t *)data;
  resume.data.len = length;
  plugin_send(m, vcpu, VCPU_REQUEST(RESUME, resume, &resume));
}

void plugin_take_init(struct machine *m, uint32_t vcpu) {
  plugin_wait(m, vcpu);
  VcpuResponse *r = plugin_receive(m, vcpu, 5000);
  CHECK(r, "vcpu %u: no answer to the first wait", vcpu);
  CHECK(r->errno_value == 0 && r->message_case == VRESP(WAIT) && r->wait->exit_case == VEXIT(INIT),
        "vcpu %u: the first wait was not answered with init (errno %d, member %d)", vcpu, r->errno_value,
        (int)r->message_case);
  vcpu_response_free(r);
}

static VcpuResponse *exchange(struct machine *m, uint32_t vcpu, const VcpuRequest *request) {
  plugin_send(m, vcpu, request);
  VcpuResponse *r = plugin_receive(m, vcpu, 5000);
  CHECK(r, "vcpu %u: no answer to request %d", vcpu, (int)request->message_case);
  return r;
}

int plugin_set_state(struct machine *m, uint32_t vcpu, int set, const void *bytes, size_t length) {
  Plugvisor__Plugin__VcpuRequest__SetState state = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_STATE__INIT;
  state.set = set;
  state.state.data = (uint8_t *)bytes;
  state.state.len = length;
  VcpuResponse *r = exchange(m, vcpu, VCPU_REQUEST(SET_STATE, set_state, &state));
  CHECK(r->message_case == VRESP(SET_STATE), "set_state answered with member %d", (int)r->message_case);
  int err = r->errno_value;
  vcpu_response_free(r);
  return err;
}

/* get_state(set) into `out` (exactly `length` bytes). */
static void plugin_get_state(struct machine *m, uint32_t vcpu, int set, void *out, size_t length) {
  Plugvisor__Plugin__VcpuRequest__GetState state = PLUGVISOR__PLUGIN__VCPU_REQUEST__GET_STATE__INIT;
  state.set = set;
  VcpuResponse *r = exchange(m, vcpu, VCPU_REQUEST(GET_STATE, get_state, &state));
  CHECK(r->errno_value == 0 && r->message_case == VRESP(GET_STATE) && r->get_state->state.len == length,
        "get_state(%d): errno %d, member %d", set, r->errno_value, (int)r->message_case);
  memcpy(out, r->get_state->state.data, length);
  vcpu_response_free(r);
}

void plugin_set_up_real_mode(struct machine *m, uint32_t vcpu, uint64_t rdx) {
  struct kvm_sregs sregs;
  plugin_get_state(m, vcpu, VSET(SREGS), &sregs, sizeof sregs);
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  CHECK(plugin_set_state(m, vcpu, VSET(SREGS), &sregs, sizeof sregs) == 0, "set_state(SREGS) failed");
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = GUEST_CODE;
  regs.rflags = 2;
  regs.rdx = rdx;
  CHECK(plugin_set_state(m, vcpu, VSET(REGS), &regs, sizeof regs) == 0, "set_state(REGS) failed");
  /* The host's VMs have the in-kernel irqchip, where VCPUs other than 0 wait for INIT/SIPI until made runnable. */
  struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
  CHECK(plugin_set_state(m, vcpu, VSET(MP), &mp, sizeof mp) == 0, "set_state(MP) failed");
}

void plugin_init_real_mode(struct machine *m, uint32_t vcpu, uint64_t rdx) {
  plugin_take_init(m, vcpu);
  plugin_set_up_real_mode(m, vcpu, rdx);
}

void plugin_run_real_mode(struct machine *m, uint32_t vcpu, uint64_t rdx) {
  plugin_init_real_mode(m, vcpu, rdx);
  plugin_resume(m, vcpu, NULL, 0);
}

VcpuResponse *plugin_expect_io(struct machine *m, uint32_t vcpu, int ms) {
  VcpuResponse *r = plugin_receive(m, vcpu, ms);
  CHECK(r, "vcpu %u: no wait{io} within %d ms", vcpu, ms);
  CHECK(r->errno_value == 0 && r->message_case == VRESP(WAIT) && r->wait->exit_case == VEXIT(IO),
        "vcpu %u: expected wait{io}, got errno %d member %d", vcpu, r->errno_value, (int)r->message_case);
  return r;
}

int open_fd_count(void) {
  DIR *dir = opendir("/proc/self/fd");
  CHECK(dir, "opendir /proc/self/fd: %s", strerror(errno));
  int count = 0;
  for (struct dirent *e; (e = readdir(dir));) count += e->d_name[0] != '.';
  closedir(dir);
  return count - 1; /* the directory's own fd */
}

int thread_count(void) {
  FILE *status = fopen("/proc/self/status", "r");
  CHECK(status, "fopen /proc/self/status: %s", strerror(errno));
  char line[256];
  int threads = -1;
  while (fgets(line, sizeof line, status)) {
    if (sscanf(line, "Threads: %d", &threads) == 1) break;
  }
  fclose(status);
  return threads;
}
