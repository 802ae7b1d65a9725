/*
 * The VCPU's side of the plugin protocol (see conn.h and docs/protocol.md):
 *
 *  - The plugin writes one VcpuRequest per write(2) to the plugin->host pipe;
 *    the host reads up to VCPU_REQUEST_MAX bytes at once and decodes them.
 *  - The host writes VcpuResponses to the host->plugin pipe, each prefixed by
 *    its length as a varint32.
 *  - While the VCPU is stopped the plugin may send any number of state, MSR,
 *    CPUID and capability requests; `resume` lets the VCPU run again.
 *
 * Both pipe ends are non-blocking. Waiting always polls the set's wake
 * eventfd too, so a thread blocked on a plugin that stopped reading or
 * writing still ends when the host shuts the VM down.
 */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "../protocol/messages.h"

/* The varint32 length prefix of a response takes at most this many bytes. */
#define LENGTH_PREFIX_MAX 5
/*
 * The largest `wait` the host sends: an access's data (at most a page, see
 * dispatch_access in loop.c) and the three register sets of a call hint,
 * with their tags. The response buffer never holds less, so a wait is packed
 * without sizing it first (on every exit, that would walk the message twice).
 */
#define WAIT_MAX 8192
/* Requests decode into this much of the VCPU's own memory (then malloc): a resume needs a few hundred bytes. */
#define ARENA_SIZE 16384

int vcpu_conn_init(struct vcpu *v) {
  v->request_buf = malloc(VCPU_REQUEST_MAX);
  v->response_capacity = WAIT_MAX;
  v->response_buf = malloc(v->response_capacity);
  int arena = message_arena_init(&v->arena, ARENA_SIZE);
  if (!v->request_buf || !v->response_buf || arena != 0) {
    vcpu_conn_destroy(v);
    return ENOMEM;
  }
  return 0;
}

void vcpu_conn_destroy(struct vcpu *v) {
  free(v->request_buf);
  free(v->response_buf);
  message_arena_destroy(&v->arena);
  v->request_buf = v->response_buf = NULL;
  v->response_capacity = 0;
}

void vcpu_conn_free_request(struct vcpu *v, VcpuRequest *request) { message_arena_free(&v->arena, &request->base); }

static enum vcpu_serve fail(struct vcpu *v, const char *format, ...) __attribute__((format(printf, 2, 3)));
static enum vcpu_serve fail(struct vcpu *v, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(v->failure, sizeof v->failure, format, args);
  va_end(args);
  return VCPU_SERVE_FAILED;
}

static bool shutting_down(const struct vcpu *v) { return __atomic_load_n(&v->set->shutdown, __ATOMIC_ACQUIRE) != 0; }

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * Sleeps until `fd` is ready for `events` or the host shuts down:
 * VCPU_SERVE_ANSWERED (ready), VCPU_SERVE_HOST_SHUTDOWN or VCPU_SERVE_FAILED.
 */
static enum vcpu_serve wait_for(struct vcpu *v, int fd, short events) {
  for (;;) {
    struct pollfd fds[2] = {{.fd = fd, .events = events}, {.fd = v->set->wake_fd, .events = POLLIN}};
    int r = poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue; /* a kick: it is seen at the next KVM_RUN */
      return fail(v, "poll: %s", strerror(errno));
    }
    if (fds[1].revents) return VCPU_SERVE_HOST_SHUTDOWN;
    if (fds[0].revents) return VCPU_SERVE_ANSWERED;
  }
}

/*
 * Reads one request into v->request_buf: polls for up to the set's spin
 * budget, then sleeps (a wake-up costs more than a whole exit on virtualized
 * hosts; see src/protocol/pipe-reader.ts). VCPU_SERVE_ANSWERED with *length
 * set (0 at end of file), or why there is nothing to read.
 */
static enum vcpu_serve read_request(struct vcpu *v, size_t *length) {
  long long deadline = 0;
  for (;;) {
    ssize_t n = read(v->request_fd, v->request_buf, VCPU_REQUEST_MAX);
    if (n >= 0) {
      *length = (size_t)n;
      return VCPU_SERVE_ANSWERED;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return fail(v, "reading the VCPU request pipe: %s", strerror(errno));
    if (shutting_down(v)) return VCPU_SERVE_HOST_SHUTDOWN;
    if (v->set->spin_ns > 0) {
      long long now = now_ns();
      if (deadline == 0) deadline = now + v->set->spin_ns;
      if (now < deadline) {
        __builtin_ia32_pause();
        continue;
      }
    }
    enum vcpu_serve ready = wait_for(v, v->request_fd, POLLIN);
    if (ready != VCPU_SERVE_ANSWERED) return ready;
  }
}

static enum vcpu_serve write_all(struct vcpu *v, const uint8_t *bytes, size_t length) {
  while (length > 0) {
    ssize_t n = write(v->response_fd, bytes, length);
    if (n > 0) {
      bytes += n;
      length -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      enum vcpu_serve ready = wait_for(v, v->response_fd, POLLOUT);
      if (ready != VCPU_SERVE_ANSWERED) return ready;
      continue;
    }
    if (n < 0 && errno == EPIPE) return fail(v, "the plugin closed its end of the VCPU response pipe");
    return fail(v, "writing the VCPU response pipe: %s", n < 0 ? strerror(errno) : "wrote nothing");
  }
  return VCPU_SERVE_ANSWERED;
}

/*
 * Packs `response` after LENGTH_PREFIX_MAX bytes of the response buffer (which
 * must hold it), puts its varint32 length right in front, and writes both.
 */
static enum vcpu_serve pack_and_send(struct vcpu *v, const VcpuResponse *response) {
  uint8_t *message = v->response_buf + LENGTH_PREFIX_MAX;
  size_t size = plugvisor__plugin__vcpu_response__pack(response, message);
  size_t prefix = 1;
  for (size_t rest = size >> 7; rest > 0; rest >>= 7) prefix++;
  uint8_t *start = message - prefix;
  for (size_t i = 0, rest = size; i < prefix; i++, rest >>= 7) start[i] = (uint8_t)((rest & 0x7f) | (i + 1 < prefix ? 0x80 : 0));
  return write_all(v, start, prefix + size);
}

/* Encodes any response (sized first: answers such as get_msrs have no bound) and writes it. */
static enum vcpu_serve send_response(struct vcpu *v, const VcpuResponse *response) {
  size_t size = plugvisor__plugin__vcpu_response__get_packed_size(response);
  if (size > UINT32_MAX - LENGTH_PREFIX_MAX) return fail(v, "a VCPU response of %zu bytes is too large", size);
  size_t needed = size + LENGTH_PREFIX_MAX;
  if (needed > v->response_capacity) {
    size_t capacity = v->response_capacity;
    while (capacity < needed) capacity *= 2;
    uint8_t *grown = realloc(v->response_buf, capacity);
    if (!grown) return fail(v, "out of memory for a VCPU response of %zu bytes", size);
    v->response_buf = grown;
    v->response_capacity = capacity;
  }
  return pack_and_send(v, response);
}

/* A wait is bounded (WAIT_MAX), and the buffer never smaller: packed without sizing. */
static enum vcpu_serve send_wait(struct vcpu *v, VcpuWait *reason) {
  return pack_and_send(v, VCPU_RESPONSE(0, WAIT, wait, reason));
}

/*
 * The answer that carries nothing but an errno (0: success, for requests
 * whose answer has nothing else in it): `err` and the response member of
 * the request's name, empty (none for requests whose response has no such
 * member: resume, shutdown, and requests the host does not know).
 */
static enum vcpu_serve send_errno(struct vcpu *v, int err, Plugvisor__Plugin__VcpuRequest__MessageCase request) {
  Plugvisor__Plugin__VcpuResponse__Wait wait = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT;
  Plugvisor__Plugin__VcpuResponse__GetState get_state = PLUGVISOR__PLUGIN__VCPU_RESPONSE__GET_STATE__INIT;
  Plugvisor__Plugin__VcpuResponse__SetState set_state = PLUGVISOR__PLUGIN__VCPU_RESPONSE__SET_STATE__INIT;
  Plugvisor__Plugin__VcpuResponse__GetMsrs get_msrs = PLUGVISOR__PLUGIN__VCPU_RESPONSE__GET_MSRS__INIT;
  Plugvisor__Plugin__VcpuResponse__SetMsrs set_msrs = PLUGVISOR__PLUGIN__VCPU_RESPONSE__SET_MSRS__INIT;
  Plugvisor__Plugin__VcpuResponse__SetCpuid set_cpuid = PLUGVISOR__PLUGIN__VCPU_RESPONSE__SET_CPUID__INIT;
  Plugvisor__Plugin__CpuidResponse cpuid = PLUGVISOR__PLUGIN__CPUID_RESPONSE__INIT;
  Plugvisor__Plugin__VcpuResponse__EnableCapability capability = PLUGVISOR__PLUGIN__VCPU_RESPONSE__ENABLE_CAPABILITY__INIT;
  switch (request) {
    case VREQ(WAIT): return send_response(v, VCPU_RESPONSE(err, WAIT, wait, &wait));
    case VREQ(GET_STATE): return send_response(v, VCPU_RESPONSE(err, GET_STATE, get_state, &get_state));
    case VREQ(SET_STATE): return send_response(v, VCPU_RESPONSE(err, SET_STATE, set_state, &set_state));
    case VREQ(GET_MSRS): return send_response(v, VCPU_RESPONSE(err, GET_MSRS, get_msrs, &get_msrs));
    case VREQ(SET_MSRS): return send_response(v, VCPU_RESPONSE(err, SET_MSRS, set_msrs, &set_msrs));
    case VREQ(SET_CPUID): return send_response(v, VCPU_RESPONSE(err, SET_CPUID, set_cpuid, &set_cpuid));
    case VREQ(GET_HYPERV_CPUID): return send_response(v, VCPU_RESPONSE(err, GET_HYPERV_CPUID, get_hyperv_cpuid, &cpuid));
    case VREQ(ENABLE_CAPABILITY):
      return send_response(v, VCPU_RESPONSE(err, ENABLE_CAPABILITY, enable_capability, &capability));
    default: {
      VcpuResponse response = PLUGVISOR__PLUGIN__VCPU_RESPONSE__INIT;
      response.errno_value = err;
      return send_response(v, &response);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* State, MSRs, CPUID, capabilities                                          */
/* ------------------------------------------------------------------------ */

/* A per-VCPU kernel state, by the protocol's StateSet: the struct's size and its two ioctls. */
struct state_set {
  size_t size;
  unsigned long get, set;
};

static const struct state_set STATE_SETS[] = {
  [VSET(REGS)] = {sizeof(struct kvm_regs), KVM_GET_REGS, KVM_SET_REGS},
  [VSET(SREGS)] = {sizeof(struct kvm_sregs), KVM_GET_SREGS, KVM_SET_SREGS},
  [VSET(FPU)] = {sizeof(struct kvm_fpu), KVM_GET_FPU, KVM_SET_FPU},
  [VSET(DEBUGREGS)] = {sizeof(struct kvm_debugregs), KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS},
  [VSET(LAPIC)] = {sizeof(struct kvm_lapic_state), KVM_GET_LAPIC, KVM_SET_LAPIC},
  [VSET(MP)] = {sizeof(struct kvm_mp_state), KVM_GET_MP_STATE, KVM_SET_MP_STATE},
  [VSET(XCREGS)] = {sizeof(struct kvm_xcrs), KVM_GET_XCRS, KVM_SET_XCRS},
  [VSET(EVENTS)] = {sizeof(struct kvm_vcpu_events), KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS},
};

/* Large enough for any of STATE_SETS, and aligned for each. */
union state_buffer {
  struct kvm_regs regs;
  struct kvm_sregs sregs;
  struct kvm_fpu fpu;
  struct kvm_debugregs debugregs;
  struct kvm_lapic_state lapic;
  struct kvm_mp_state mp;
  struct kvm_xcrs xcrs;
  struct kvm_vcpu_events events;
};

static const struct state_set *state_set(int set) {
  if (set < 0 || (size_t)set >= sizeof STATE_SETS / sizeof STATE_SETS[0]) return NULL;
  return &STATE_SETS[set];
}

/* An ioctl on the VCPU: 0 or the errno. */
static int vcpu_ioctl(struct vcpu *v, unsigned long request, void *arg) {
  return ioctl(v->fd, request, arg) < 0 ? errno : 0;
}

static enum vcpu_serve get_state(struct vcpu *v, const Plugvisor__Plugin__VcpuRequest__GetState *request) {
  const struct state_set *set = state_set(request->set);
  if (!set) return send_errno(v, EINVAL, VREQ(GET_STATE));
  union state_buffer state;
  memset(&state, 0, sizeof state);
  int err = vcpu_ioctl(v, set->get, &state);
  if (err) return send_errno(v, err, VREQ(GET_STATE));
  Plugvisor__Plugin__VcpuResponse__GetState answer = PLUGVISOR__PLUGIN__VCPU_RESPONSE__GET_STATE__INIT;
  answer.state.data = (uint8_t *)&state;
  answer.state.len = set->size;
  return send_response(v, VCPU_RESPONSE(0, GET_STATE, get_state, &answer));
}

static enum vcpu_serve set_state(struct vcpu *v, const Plugvisor__Plugin__VcpuRequest__SetState *request) {
  const struct state_set *set = state_set(request->set);
  if (!set || request->state.len != set->size) return send_errno(v, EINVAL, VREQ(SET_STATE));
  union state_buffer state;
  memcpy(&state, request->state.data, set->size);
  return send_errno(v, vcpu_ioctl(v, set->set, &state), VREQ(SET_STATE));
}

/* A struct kvm_msrs for `count` entries (zeroed), or NULL. */
static struct kvm_msrs *msrs_new(size_t count) {
  if (count > UINT32_MAX) return NULL;
  struct kvm_msrs *msrs = calloc(1, sizeof *msrs + count * sizeof(struct kvm_msr_entry));
  if (msrs) msrs->nmsrs = (uint32_t)count;
  return msrs;
}

/*
 * KVM_GET_MSRS or KVM_SET_MSRS, in the entries' order: 0 or the errno. The
 * kernel stops at the first MSR it cannot read or refuses and returns how
 * many it did; fewer than all is EINVAL, as the protocol says.
 */
static int msrs_ioctl(struct vcpu *v, unsigned long request, struct kvm_msrs *msrs) {
  int r = ioctl(v->fd, request, msrs);
  return r < 0 ? errno : (uint32_t)r < msrs->nmsrs ? EINVAL : 0;
}

static enum vcpu_serve get_msrs(struct vcpu *v, const Plugvisor__Plugin__VcpuRequest__GetMsrs *request) {
  size_t n = request->n_entry_indices;
  struct kvm_msrs *msrs = msrs_new(n);
  uint64_t *data = calloc(n ? n : 1, sizeof *data);
  int err = msrs && data ? 0 : ENOMEM;
  for (size_t i = 0; !err && i < n; i++) msrs->entries[i].index = request->entry_indices[i];
  if (!err) err = msrs_ioctl(v, KVM_GET_MSRS, msrs);
  enum vcpu_serve result;
  if (err) {
    result = send_errno(v, err, VREQ(GET_MSRS));
  } else {
    for (size_t i = 0; i < n; i++) data[i] = msrs->entries[i].data;
    Plugvisor__Plugin__VcpuResponse__GetMsrs answer = PLUGVISOR__PLUGIN__VCPU_RESPONSE__GET_MSRS__INIT;
    answer.n_entry_data = n;
    answer.entry_data = data;
    result = send_response(v, VCPU_RESPONSE(0, GET_MSRS, get_msrs, &answer));
  }
  free(msrs);
  free(data);
  return result;
}

static enum vcpu_serve set_msrs(struct vcpu *v, const Plugvisor__Plugin__VcpuRequest__SetMsrs *request) {
  size_t n = request->n_entries;
  struct kvm_msrs *msrs = msrs_new(n);
  if (!msrs) return send_errno(v, ENOMEM, VREQ(SET_MSRS));
  for (size_t i = 0; i < n; i++) {
    msrs->entries[i].index = request->entries[i]->index;
    msrs->entries[i].data = request->entries[i]->data;
  }
  int err = msrs_ioctl(v, KVM_SET_MSRS, msrs);
  free(msrs);
  return send_errno(v, err, VREQ(SET_MSRS));
}

static struct kvm_cpuid2 *cpuid_new(size_t count) {
  if (count > UINT32_MAX) return NULL;
  struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + count * sizeof(struct kvm_cpuid_entry2));
  if (cpuid) cpuid->nent = (uint32_t)count;
  return cpuid;
}

static enum vcpu_serve set_cpuid(struct vcpu *v, const Plugvisor__Plugin__VcpuRequest__SetCpuid *request) {
  size_t n = request->n_entries;
  struct kvm_cpuid2 *cpuid = cpuid_new(n);
  if (!cpuid) return send_errno(v, ENOMEM, VREQ(SET_CPUID));
  for (size_t i = 0; i < n; i++) cpuid_entry_to_kvm(request->entries[i], &cpuid->entries[i]);
  int err = vcpu_ioctl(v, KVM_SET_CPUID2, cpuid);
  free(cpuid);
  return send_errno(v, err, VREQ(SET_CPUID));
}

/* Give up growing the Hyper-V CPUID buffer past this many entries (as src/kvm/ioctl.ts does). */
#define CPUID_QUERY_MAX (1 << 16)

static enum vcpu_serve get_hyperv_cpuid(struct vcpu *v) {
  struct kvm_cpuid2 *cpuid = NULL;
  int err = 0;
  for (size_t capacity = 64;; capacity *= 2) {
    free(cpuid);
    cpuid = cpuid_new(capacity);
    if (!cpuid) {
      err = ENOMEM;
      break;
    }
    err = vcpu_ioctl(v, KVM_GET_SUPPORTED_HV_CPUID, cpuid);
    if (err != E2BIG || capacity >= CPUID_QUERY_MAX) break;
  }
  if (err) {
    free(cpuid);
    return send_errno(v, err, VREQ(GET_HYPERV_CPUID));
  }
  Plugvisor__Plugin__CpuidResponse answer = PLUGVISOR__PLUGIN__CPUID_RESPONSE__INIT;
  answer.n_entries = cpuid->nent;
  answer.entries = new_repeated(&plugvisor__plugin__cpuid_entry__descriptor, answer.n_entries);
  enum vcpu_serve result;
  if (!answer.entries) {
    result = send_errno(v, ENOMEM, VREQ(GET_HYPERV_CPUID));
  } else {
    for (size_t i = 0; i < answer.n_entries; i++) cpuid_entry_from_kvm(&cpuid->entries[i], answer.entries[i]);
    result = send_response(v, VCPU_RESPONSE(0, GET_HYPERV_CPUID, get_hyperv_cpuid, &answer));
  }
  free(answer.entries);
  free(cpuid);
  return result;
}

/* Only the Hyper-V SynIC capabilities may be enabled on a VCPU; others are EINVAL. */
static enum vcpu_serve enable_capability(struct vcpu *v, const Plugvisor__Plugin__VcpuRequest__EnableCapability *request) {
  uint32_t capability = request->capability;
  if (capability != KVM_CAP_HYPERV_SYNIC && capability != KVM_CAP_HYPERV_SYNIC2) {
    return send_errno(v, EINVAL, VREQ(ENABLE_CAPABILITY));
  }
  struct kvm_enable_cap cap;
  memset(&cap, 0, sizeof cap);
  cap.cap = capability;
  return send_errno(v, vcpu_ioctl(v, KVM_ENABLE_CAP, &cap), VREQ(ENABLE_CAPABILITY));
}

/* ------------------------------------------------------------------------ */
/* The conversation                                                          */
/* ------------------------------------------------------------------------ */

/* Every VcpuRequest, in one place. */
enum vcpu_serve vcpu_conn_handle(struct vcpu *v, const uint8_t *bytes, size_t length, VcpuRequest **resume) {
  VcpuRequest *request = plugvisor__plugin__vcpu_request__unpack(&v->arena.allocator, length, bytes);
  if (!request) {
    message_arena_free(&v->arena, NULL);
    vcpu_log(v, VCPU_LOG_WARN, "malformed VCPU request (%zu bytes); answered EINVAL", length);
    return send_errno(v, EINVAL, PLUGVISOR__PLUGIN__VCPU_REQUEST__MESSAGE__NOT_SET);
  }
  enum vcpu_serve result;
  Plugvisor__Plugin__VcpuRequest__MessageCase which = request->message_case;
  if (which == VREQ(SHUTDOWN)) {
    result = VCPU_SERVE_SHUTDOWN;
  } else if (which == VREQ(WAIT)) {
    /* Only the pending `init` is collected with `wait`; later reasons are pushed. */
    if (!v->init_unsent) {
      result = send_errno(v, EPROTO, which);
    } else {
      v->init_unsent = false;
      Plugvisor__Plugin__VcpuResponse__Wait__Init init = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT__INIT;
      VcpuWait wait = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT;
      wait.exit_case = VEXIT(INIT);
      wait.init = &init;
      result = send_wait(v, &wait);
    }
  } else if (which == PLUGVISOR__PLUGIN__VCPU_REQUEST__MESSAGE__NOT_SET) {
    result = send_errno(v, ENOTTY, which); /* only fields this host does not know */
  } else if (v->init_unsent) {
    result = send_errno(v, EPROTO, which); /* the plugin must collect `init` first */
  } else {
    switch (which) {
      case VREQ(RESUME):
        *resume = request;
        return VCPU_SERVE_RESUME;
      case VREQ(GET_STATE): result = get_state(v, request->get_state); break;
      case VREQ(SET_STATE): result = set_state(v, request->set_state); break;
      case VREQ(GET_MSRS): result = get_msrs(v, request->get_msrs); break;
      case VREQ(SET_MSRS): result = set_msrs(v, request->set_msrs); break;
      case VREQ(SET_CPUID): result = set_cpuid(v, request->set_cpuid); break;
      case VREQ(GET_HYPERV_CPUID): result = get_hyperv_cpuid(v); break;
      case VREQ(ENABLE_CAPABILITY): result = enable_capability(v, request->enable_capability); break;
      default: result = send_errno(v, ENOTTY, which); break; /* a member added to the .proto but not here */
    }
  }
  vcpu_conn_free_request(v, request);
  return result;
}

static enum vcpu_serve serve_until_resume(struct vcpu *v, VcpuRequest **resume) {
  for (;;) {
    size_t length = 0;
    enum vcpu_serve result = read_request(v, &length);
    if (result != VCPU_SERVE_ANSWERED) return result;
    /* The host keeps a write end of this pipe (to hand out with get_vcpus), so
     * end of file only comes once the host itself is tearing down. */
    if (length == 0) return VCPU_SERVE_SHUTDOWN;
    result = vcpu_conn_handle(v, v->request_buf, length, resume);
    if (result != VCPU_SERVE_ANSWERED) return result;
  }
}

enum vcpu_serve vcpu_conn_stop(struct vcpu *v, VcpuWait *reason, VcpuRequest **resume) {
  if (reason->exit_case == VEXIT(INIT)) {
    v->init_unsent = true;
  } else {
    enum vcpu_serve sent = send_wait(v, reason);
    if (sent != VCPU_SERVE_ANSWERED) return sent;
  }
  return serve_until_resume(v, resume);
}

enum vcpu_serve vcpu_conn_push(struct vcpu *v, VcpuWait *reason) {
  enum vcpu_serve sent = send_wait(v, reason);
  return sent == VCPU_SERVE_ANSWERED ? VCPU_SERVE_RESUME : sent;
}
