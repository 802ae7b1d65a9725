/*
 * libcrosvm_plugin: the C client library of the plugvisor plugin protocol.
 *
 * The main connection (struct crosvm) is a SOCK_SEQPACKET socket carrying one
 * protobuf MainRequest per message and one MainResponse back, with
 * descriptors as SCM_RIGHTS. Each VCPU (struct crosvm_vcpu) is a pair of
 * pipes: unframed VcpuRequests out, length-delimited VcpuResponses in. See
 * docs/protocol.md and docs/c-api.md for the contracts.
 *
 * Nothing received from the host is trusted: malformed or unexpected answers
 * give -EPROTO, and descriptors that arrive with them are closed.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "crosvm.h"
#include "wire.h"

#define API_EXPORT __attribute__((visibility("default")))

/* Main-connection responses can be large (a dirty bitmap). */
#define MAIN_RECV_SIZE (256 * 1024)
/*
 * Descriptors accepted with one main-connection response: the kernel's
 * SCM_MAX_FD (get_vcpus sends two per VCPU, 128 for 64 VCPUs).
 */
#define MAIN_MAX_FDS 253
/* Initial VCPU read buffer; grows for larger messages, up to the cap. */
#define VCPU_RECV_SIZE (64 * 1024)
#define VCPU_MAX_MESSAGE (64 * 1024 * 1024)
/* A `wait` decodes into this much (then malloc): its data (at most a page) and a call hint's three register sets. */
#define WAIT_ARENA_SIZE 8192
/* Largest plausible errno value on the wire. */
#define MAX_ERRNO 4095
/* Bytes of dirty bitmap per guest page. */
#define PAGE_SIZE_ 4096ull

/* ------------------------------------------------------------------------ */
/* Types */

struct reg_cache {
  bool valid; /* the cached value answers a get */
  bool dirty; /* the cached value must be sent with the next resume */
};

struct crosvm_vcpu {
  int req_fd;  /* plugin -> host pipe (write end) */
  int resp_fd; /* host -> plugin pipe (read end) */
  bool spin;   /* read_spinning spins before sleeping (spin_pays) */
  bool wait_sent;

  /* Undecoded bytes read from resp_fd: [recv_start, recv_end). */
  uint8_t *recv_buf;
  size_t recv_cap, recv_start, recv_end;

  /* Data of the current IO_ACCESS event; sent back on resume for a read. */
  uint8_t *io_data;
  size_t io_cap;
  uint32_t io_len;
  bool io_read_pending;

  /* The result slot of the current HYPERV_HCALL event. */
  uint64_t hcall_result;
  bool hcall_pending;

  struct kvm_regs regs;
  struct kvm_sregs sregs;
  struct kvm_debugregs debugregs;
  struct reg_cache regs_cache, sregs_cache, debugregs_cache;

  /* Where crosvm_vcpu_wait decodes (messages.h); set up by its first call. */
  struct message_arena wait_arena;
};

/* The VCPUs, shared by every connection made from one crosvm_connect. */
struct vcpu_set {
  atomic_uint refs;
  uint32_t count;
  struct crosvm_vcpu *vcpus;
};

struct crosvm {
  int fd;
  struct vcpu_set *vcpus;
  uint8_t *recv_buf; /* MAIN_RECV_SIZE bytes */
};

struct crosvm_io {
  uint32_t id;
  int fd;
};

struct crosvm_memory {
  uint32_t id;
  uint64_t length;
};

struct crosvm_irq {
  uint32_t id;
  int trigger_fd;
  int resample_fd;
};

/* Object ids: unique within the process, whatever the connection. */
static atomic_uint next_object_id = 1;

static uint32_t new_object_id(void) {
  return (uint32_t)atomic_fetch_add(&next_object_id, 1u);
}

/* ------------------------------------------------------------------------ */
/* Helpers */

static void close_fds(int *fds, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (fds[i] >= 0) close(fds[i]);
    fds[i] = -1;
  }
}

/* The C return value for a wire errno (positive on the wire). */
static int wire_errno(int32_t value) {
  if (value > 0 && value <= MAX_ERRNO) return -value;
  if (value < 0 && value >= -MAX_ERRNO) return value; /* already negated */
  return -EPROTO;
}

static int check_space(uint32_t space) {
  return space == CROSVM_ADDRESS_SPACE_IOPORT ||
                 space == CROSVM_ADDRESS_SPACE_MMIO
             ? 0
             : -EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Main connection */

/*
 * Sends `req` (with `send_fd` attached when >= 0) and receives the answer.
 * On success the response carries member `expect`, and fds[0..*nfds) are
 * the descriptors that came with it: exactly `want_fds` of them, or any
 * number up to MAIN_MAX_FDS when want_fds < 0. The response goes to
 * *resp_out (the caller frees it), or is freed when resp_out is NULL.
 */
static int main_call(struct crosvm *self, const MainRequest *req, int send_fd,
                     int expect, MainResponse **resp_out, int *fds,
                     int want_fds, size_t *nfds) {
  size_t len;
  uint8_t *buf = pack_message(&req->base, &len);
  if (!buf) return -ENOMEM;

  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAIN_MAX_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (send_fd >= 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int));
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &send_fd, sizeof(int));
  }
  ssize_t sent;
  do {
    sent = sendmsg(self->fd, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  int send_errno = errno;
  free(buf);
  if (sent < 0) return -send_errno;
  if ((size_t)sent != len) return -EIO;

  /* Receive the answer. */
  iov.iov_base = self->recv_buf;
  iov.iov_len = MAIN_RECV_SIZE;
  memset(&control, 0, sizeof(control));
  msg = (struct msghdr){.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
  ssize_t got;
  do {
    got = recvmsg(self->fd, &msg, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return -errno;

  size_t count = 0;
  for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      if (count < MAIN_MAX_FDS)
        fds[count++] = fd;
      else
        close(fd);
    }
  }

  int rc = 0;
  MainResponse *resp = NULL;
  if (got == 0) {
    rc = -EPIPE; /* the host hung up */
  } else if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    rc = -EPROTO;
  } else {
    resp = (MainResponse *)protobuf_c_message_unpack(
        &plugvisor__plugin__main_response__descriptor, NULL, (size_t)got,
        self->recv_buf);
    if (!resp)
      rc = -EPROTO;
    else if (resp->errno_value != 0)
      rc = wire_errno(resp->errno_value);
    else if ((int)resp->message_case != expect)
      rc = -EPROTO;
    else if (want_fds >= 0 && count != (size_t)want_fds)
      rc = -EPROTO;
  }
  if (rc != 0) {
    close_fds(fds, count);
    if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
  }
  if (resp_out)
    *resp_out = resp;
  else
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  if (nfds) *nfds = count;
  return 0;
}

/* A request answered without descriptors; the caller frees *resp_out. */
static int main_query(struct crosvm *self, const MainRequest *req, int expect,
                      MainResponse **resp_out) {
  int fds[MAIN_MAX_FDS];
  return main_call(self, req, -1, expect, resp_out, fds, 0, NULL);
}

/* A request whose answer carries nothing but success. */
static int main_simple(struct crosvm *self, const MainRequest *req, int expect) {
  return main_query(self, req, expect, NULL);
}

/* A request answered by exactly one descriptor; returns it. */
static int main_get_fd(struct crosvm *self, const MainRequest *req,
                       int expect) {
  int fds[MAIN_MAX_FDS];
  int rc = main_call(self, req, -1, expect, NULL, fds, 1, NULL);
  return rc != 0 ? rc : fds[0];
}

/* ------------------------------------------------------------------------ */
/* Connections */

static void vcpu_release(struct crosvm_vcpu *vcpu) {
  if (vcpu->req_fd >= 0) close(vcpu->req_fd);
  if (vcpu->resp_fd >= 0) close(vcpu->resp_fd);
  free(vcpu->recv_buf);
  free(vcpu->io_data);
  message_arena_destroy(&vcpu->wait_arena);
}

static void vcpu_set_unref(struct vcpu_set *set) {
  if (!set) return;
  if (atomic_fetch_sub(&set->refs, 1u) != 1u) return;
  for (uint32_t i = 0; i < set->count; i++) vcpu_release(&set->vcpus[i]);
  free(set->vcpus);
  free(set);
}

static struct crosvm *connection_new(int fd, struct vcpu_set *vcpus) {
  struct crosvm *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->recv_buf = malloc(MAIN_RECV_SIZE);
  if (!c->recv_buf) {
    free(c);
    return NULL;
  }
  c->fd = fd;
  c->vcpus = vcpus;
  return c;
}

static void connection_free(struct crosvm *c) {
  free(c->recv_buf);
  free(c);
}


/*
 * A bounded spin before sleeping, as the host and the TypeScript SDK do
 * (src/protocol/pipe-reader.ts): after a resume the next VCPU exit usually
 * comes within microseconds, while waking a sleeping reader costs more than
 * the exit itself on virtualized hosts. PLUGVISOR_SPIN_US sets the budget
 * (default 1000; 0 = crosvm's plain blocking read). An idle VM costs at most
 * one budget per read.
 */
#define DEFAULT_SPIN_US 1000
static long spin_budget_ns;
static long online_cores;
static pthread_once_t spin_budget_once = PTHREAD_ONCE_INIT;

static void read_spin_budget(void) {
  const char *env = getenv("PLUGVISOR_SPIN_US");
  char *end;
  long us = env && *env ? strtol(env, &end, 10) : DEFAULT_SPIN_US;
  if (env && *env && (*end != '\0' || us < 0)) us = DEFAULT_SPIN_US;
  spin_budget_ns = us * 1000;
  online_cores = sysconf(_SC_NPROCESSORS_ONLN);
}

/*
 * Spinning pays only while every VCPU thread of the host still has a core
 * beside the spinners: with as many VCPUs as cores, a spinning plugin thread
 * takes the core a VCPU needs to reach its next exit. (The host applies the
 * same rule to its VCPU threads.)
 */
static bool spin_pays(uint32_t vcpu_count) {
  pthread_once(&spin_budget_once, read_spin_budget);
  return spin_budget_ns > 0 && (long)vcpu_count < online_cores;
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * read(2) that returns only with data, EOF or an error. With `spin` the fd is
 * non-blocking and the read spins, then sleeps in poll(2); without, the fd
 * blocks as in crosvm.
 */
static ssize_t read_spinning(int fd, void *buf, size_t len, bool spin) {
  if (!spin) return read(fd, buf, len);
  ssize_t n = read(fd, buf, len);
  if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
  long long deadline = now_ns() + spin_budget_ns;
  do {
    n = read(fd, buf, len);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
  } while (now_ns() < deadline);
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, -1) < 0 && errno != EINTR) return -1;
    n = read(fd, buf, len);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
  }
}

/* Asks for every VCPU's pipes and builds the shared VCPU set. */
static int fetch_vcpus(struct crosvm *c) {
  MainGetVcpus get = PLUGVISOR__PLUGIN__MAIN_REQUEST__GET_VCPUS__INIT;
  int fds[MAIN_MAX_FDS];
  size_t count = 0;
  int rc = main_call(c, MAIN_REQUEST(GET_VCPUS, get_vcpus, &get), -1,
                     MRESP(GET_VCPUS), NULL, fds, -1, &count);
  if (rc != 0) return rc;
  if (count % 2 != 0) {
    close_fds(fds, count);
    return -EPROTO;
  }
  struct vcpu_set *set = calloc(1, sizeof(*set));
  struct crosvm_vcpu *vcpus =
      count ? calloc(count / 2, sizeof(struct crosvm_vcpu)) : NULL;
  if (!set || (count && !vcpus)) {
    free(set);
    free(vcpus);
    close_fds(fds, count);
    return -ENOMEM;
  }
  atomic_init(&set->refs, 1u);
  set->count = (uint32_t)(count / 2);
  set->vcpus = vcpus;
  for (uint32_t i = 0; i < set->count; i++) {
    vcpus[i].req_fd = fds[2 * i];
    vcpus[i].resp_fd = fds[2 * i + 1];
    vcpus[i].spin = spin_pays(set->count);
    if (vcpus[i].spin) {
      /* A spinning read must not block (read_spinning). */
      int flags = fcntl(vcpus[i].resp_fd, F_GETFL);
      if (flags < 0 || fcntl(vcpus[i].resp_fd, F_SETFL, flags | O_NONBLOCK) < 0) vcpus[i].spin = false;
    }
  }
  c->vcpus = set;
  return 0;
}

API_EXPORT int crosvm_connect(struct crosvm **out) {
  if (!out) return -EINVAL;
  const char *env = getenv("CROSVM_SOCKET");
  if (!env) return -ENOTCONN;
  if (*env == '\0') return -EINVAL;
  long value = 0;
  for (const char *p = env; *p; p++) {
    if (*p < '0' || *p > '9') return -EINVAL;
    value = value * 10 + (*p - '0');
    if (value > INT_MAX) return -EINVAL;
  }
  struct crosvm *c = connection_new((int)value, NULL);
  if (!c) return -ENOMEM;
  int rc = fetch_vcpus(c);
  if (rc != 0) {
    connection_free(c); /* the inherited socket stays open */
    return rc;
  }
  *out = c;
  return 0;
}

API_EXPORT int crosvm_new_connection(struct crosvm *self, struct crosvm **out) {
  if (!self || !out) return -EINVAL;
  MainNewConnection nc = PLUGVISOR__PLUGIN__MAIN_REQUEST__NEW_CONNECTION__INIT;
  int fd = main_get_fd(self, MAIN_REQUEST(NEW_CONNECTION, new_connection, &nc),
                       MRESP(NEW_CONNECTION));
  if (fd < 0) return fd;
  struct crosvm *c = connection_new(fd, self->vcpus);
  if (!c) {
    close(fd);
    return -ENOMEM;
  }
  if (self->vcpus) atomic_fetch_add(&self->vcpus->refs, 1u);
  *out = c;
  return 0;
}

API_EXPORT int crosvm_destroy_connection(struct crosvm **self) {
  if (!self || !*self) return -EINVAL;
  struct crosvm *c = *self;
  *self = NULL;
  int rc = close(c->fd) == 0 ? 0 : -errno;
  vcpu_set_unref(c->vcpus);
  connection_free(c);
  return rc;
}

API_EXPORT int crosvm_get_shutdown_eventfd(struct crosvm *self) {
  if (!self) return -EINVAL;
  MainGetShutdownEventfd get =
      PLUGVISOR__PLUGIN__MAIN_REQUEST__GET_SHUTDOWN_EVENTFD__INIT;
  return main_get_fd(self,
                     MAIN_REQUEST(GET_SHUTDOWN_EVENTFD, get_shutdown_eventfd, &get),
                     MRESP(GET_SHUTDOWN_EVENTFD));
}

/* ------------------------------------------------------------------------ */
/* Queries */

API_EXPORT int crosvm_check_extension(struct crosvm *self, uint32_t extension,
                                      bool *has_extension) {
  if (!self || !has_extension) return -EINVAL;
  MainCheckExtension check = PLUGVISOR__PLUGIN__MAIN_REQUEST__CHECK_EXTENSION__INIT;
  check.extension = extension;
  MainResponse *resp;
  int rc = main_query(self, MAIN_REQUEST(CHECK_EXTENSION, check_extension, &check),
                      MRESP(CHECK_EXTENSION), &resp);
  if (rc != 0) return rc;
  *has_extension = resp->check_extension && resp->check_extension->has_extension;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

API_EXPORT int crosvm_enable_capability(struct crosvm *self, uint32_t capability,
                                        uint32_t flags, uint64_t args[4]) {
  (void)self;
  (void)capability;
  (void)flags;
  (void)args;
  return -EINVAL; /* no VM-wide capability can be enabled */
}

/*
 * How much of an answer of `total` entries fits a caller's array of `room`:
 * *n entries. *out_count (when given) gets the total, so that the caller can
 * ask again with room for all. -E2BIG when some do not fit (the caller still
 * copies the *n that do), -EPROTO for more than a uint32_t counts.
 */
static int fit_answer(size_t total, uint32_t room, uint32_t *out_count,
                      size_t *n) {
  *n = 0;
  if (total > UINT32_MAX) return -EPROTO;
  if (out_count) *out_count = (uint32_t)total;
  *n = total < room ? total : room;
  return total > room ? -E2BIG : 0;
}

/* Copies wire CPUID entries out; -E2BIG when they do not all fit. */
static int copy_cpuid_out(const CpuidResponse *cpuid, uint32_t entry_count,
                          struct kvm_cpuid_entry2 *entries,
                          uint32_t *out_count) {
  size_t n;
  int rc = fit_answer(cpuid ? cpuid->n_entries : 0, entry_count, out_count, &n);
  for (size_t i = 0; i < n; i++) cpuid_entry_to_kvm(cpuid->entries[i], &entries[i]);
  return rc;
}

static int get_cpuid(struct crosvm *self, bool emulated, uint32_t entry_count,
                     struct kvm_cpuid_entry2 *entries, uint32_t *out_count) {
  if (!self || (entry_count && !entries)) return -EINVAL;
  CpuidRequest cpuid = CPUID_REQUEST_INIT;
  const MainRequest *req =
      emulated ? MAIN_REQUEST(GET_EMULATED_CPUID, get_emulated_cpuid, &cpuid)
               : MAIN_REQUEST(GET_SUPPORTED_CPUID, get_supported_cpuid, &cpuid);
  int expect = emulated ? MRESP(GET_EMULATED_CPUID) : MRESP(GET_SUPPORTED_CPUID);
  MainResponse *resp;
  int rc = main_query(self, req, expect, &resp);
  if (rc != 0) return rc;
  rc = copy_cpuid_out(emulated ? resp->get_emulated_cpuid
                               : resp->get_supported_cpuid,
                      entry_count, entries, out_count);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

API_EXPORT int crosvm_get_supported_cpuid(struct crosvm *self,
                                          uint32_t entry_count,
                                          struct kvm_cpuid_entry2 *entries,
                                          uint32_t *out_count) {
  return get_cpuid(self, false, entry_count, entries, out_count);
}

API_EXPORT int crosvm_get_emulated_cpuid(struct crosvm *self,
                                         uint32_t entry_count,
                                         struct kvm_cpuid_entry2 *entries,
                                         uint32_t *out_count) {
  return get_cpuid(self, true, entry_count, entries, out_count);
}

API_EXPORT int crosvm_get_msr_index_list(struct crosvm *self,
                                         uint32_t entry_count,
                                         uint32_t *msr_indices,
                                         uint32_t *out_count) {
  if (!self || (entry_count && !msr_indices)) return -EINVAL;
  MainMsrListRequest list = PLUGVISOR__PLUGIN__MAIN_REQUEST__MSR_LIST_REQUEST__INIT;
  MainResponse *resp;
  int rc = main_query(self, MAIN_REQUEST(GET_MSR_INDEX_LIST, get_msr_index_list, &list),
                      MRESP(GET_MSR_INDEX_LIST), &resp);
  if (rc != 0) return rc;
  const Plugvisor__Plugin__MainResponse__MsrListResponse *answer =
      resp->get_msr_index_list;
  size_t n;
  rc = fit_answer(answer ? answer->n_indices : 0, entry_count, out_count, &n);
  for (size_t i = 0; i < n; i++) msr_indices[i] = answer->indices[i];
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

API_EXPORT int crosvm_net_get_config(struct crosvm *self,
                                     struct crosvm_net_config *config) {
  if (!self || !config) return -EINVAL;
  MainGetNetConfig get = PLUGVISOR__PLUGIN__MAIN_REQUEST__GET_NET_CONFIG__INIT;
  MainResponse *resp;
  int fds[MAIN_MAX_FDS];
  int rc = main_call(self, MAIN_REQUEST(GET_NET_CONFIG, get_net_config, &get), -1,
                     MRESP(GET_NET_CONFIG), &resp, fds, 1, NULL);
  if (rc != 0) return rc;
  const Plugvisor__Plugin__MainResponse__GetNetConfig *net = resp->get_net_config;
  if (!net || net->host_mac_address.len != sizeof(config->host_mac_address)) {
    close(fds[0]);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return -EPROTO;
  }
  memset(config, 0, sizeof(*config));
  config->tap_fd = fds[0];
  /* On the wire the addresses are numbers (a.b.c.d = a << 24 | ...). */
  config->host_ip = __builtin_bswap32(net->host_ipv4_address);
  config->netmask = __builtin_bswap32(net->netmask);
  memcpy(config->host_mac_address, net->host_mac_address.data,
         sizeof(config->host_mac_address));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Address ranges, interrupts, hints */

static int reserve(struct crosvm *self, uint32_t space, uint64_t start,
                   uint64_t length, bool async_write) {
  if (!self) return -EINVAL;
  int rc = check_space(space);
  if (rc != 0) return rc;
  MainReserveRange range = PLUGVISOR__PLUGIN__MAIN_REQUEST__RESERVE_RANGE__INIT;
  range.space = (Plugvisor__Plugin__AddressSpace)space;
  range.start = start;
  range.length = length;
  range.async_write = async_write;
  return main_simple(self, MAIN_REQUEST(RESERVE_RANGE, reserve_range, &range),
                     MRESP(RESERVE_RANGE));
}

API_EXPORT int crosvm_reserve_range(struct crosvm *self, uint32_t space,
                                    uint64_t start, uint64_t length) {
  return reserve(self, space, start, length, false);
}

API_EXPORT int crosvm_reserve_async_write_range(struct crosvm *self,
                                                uint32_t space, uint64_t start,
                                                uint64_t length) {
  return reserve(self, space, start, length, true);
}

API_EXPORT int crosvm_set_irq(struct crosvm *self, uint32_t irq_id, bool active) {
  if (!self) return -EINVAL;
  MainSetIrq set = PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_IRQ__INIT;
  set.irq_id = irq_id;
  set.active = active;
  return main_simple(self, MAIN_REQUEST(SET_IRQ, set_irq, &set), MRESP(SET_IRQ));
}

/* Where a wire route points: an irqchip pin or an MSI, by the route's kind. */
union route_target {
  MainRouteIrqchip irqchip;
  MainRouteMsi msi;
};

#define ROUTE_CASE(name) \
  PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_IRQ_ROUTING__ROUTE__ROUTE_##name

/* Fills the (initialized) wire route `w` and its target; -EINVAL for an unknown kind. */
static int route_to_wire(const struct crosvm_irq_route *r, MainRoute *w,
                         union route_target *target) {
  w->irq_id = r->irq_id;
  switch (r->kind) {
    case CROSVM_IRQ_ROUTE_IRQCHIP:
      target->irqchip = MESSAGE(
          MainRouteIrqchip,
          plugvisor__plugin__main_request__set_irq_routing__route__irqchip__descriptor,
          .irqchip = r->irqchip.irqchip, .pin = r->irqchip.pin);
      w->route_case = ROUTE_CASE(IRQCHIP);
      w->irqchip = &target->irqchip;
      return 0;
    case CROSVM_IRQ_ROUTE_MSI:
      target->msi = MESSAGE(
          MainRouteMsi,
          plugvisor__plugin__main_request__set_irq_routing__route__msi__descriptor,
          .address = r->msi.address, .data = r->msi.data);
      w->route_case = ROUTE_CASE(MSI);
      w->msi = &target->msi;
      return 0;
    default:
      return -EINVAL;
  }
}

API_EXPORT int crosvm_set_irq_routing(struct crosvm *self, uint32_t route_count,
                                      const struct crosvm_irq_route *routes) {
  if (!self || (route_count && !routes)) return -EINVAL;
  MainSetIrqRouting routing = PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_IRQ_ROUTING__INIT;
  routing.n_routes = route_count;
  routing.routes = new_repeated(
      &plugvisor__plugin__main_request__set_irq_routing__route__descriptor, route_count);
  union route_target *targets = calloc(route_count ? route_count : 1, sizeof(*targets));
  int rc = routing.routes && targets ? 0 : -ENOMEM;
  for (uint32_t i = 0; rc == 0 && i < route_count; i++)
    rc = route_to_wire(&routes[i], routing.routes[i], &targets[i]);
  if (rc == 0)
    rc = main_simple(self, MAIN_REQUEST(SET_IRQ_ROUTING, set_irq_routing, &routing),
                     MRESP(SET_IRQ_ROUTING));
  free(routing.routes);
  free(targets);
  return rc;
}

API_EXPORT int crosvm_set_hypercall_hint(struct crosvm *self,
                                         uint32_t hints_count,
                                         const struct crosvm_hint *hints) {
  if (!self) return -EINVAL;
  if (hints_count > CROSVM_MAX_HINT_COUNT) return -EINVAL;
  MainSetCallHint hint = PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_CALL_HINT__INIT;
  MainRegHint wire[CROSVM_MAX_HINT_DETAIL_COUNT];
  MainRegHint *ptrs[CROSVM_MAX_HINT_DETAIL_COUNT];
  if (hints_count == 1) {
    if (!hints) return -EINVAL;
    const struct crosvm_hint *h = &hints[0];
    if (h->hint_version != 0 || h->_reserved != 0) return -EINVAL;
    if (check_space(h->address_space) != 0) return -EINVAL;
    if (h->details_count > CROSVM_MAX_HINT_DETAIL_COUNT) return -EINVAL;
    if (h->details_count && !h->details) return -EINVAL;
    hint.space = (Plugvisor__Plugin__AddressSpace)h->address_space;
    hint.address = h->address;
    hint.on_write = (h->address_flags & CROSVM_HINT_ON_WRITE) != 0;
    for (uint16_t i = 0; i < h->details_count; i++) {
      static const MainRegHint init =
          PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_CALL_HINT__REG_HINT__INIT;
      const struct crosvm_hint_detail *d = &h->details[i];
      wire[i] = init;
      wire[i].match_rax = d->match_rax;
      wire[i].match_rbx = d->match_rbx;
      wire[i].match_rcx = d->match_rcx;
      wire[i].match_rdx = d->match_rdx;
      wire[i].rax = d->rax;
      wire[i].rbx = d->rbx;
      wire[i].rcx = d->rcx;
      wire[i].rdx = d->rdx;
      wire[i].send_sregs = d->send_sregs;
      wire[i].send_debugregs = d->send_debugregs;
      ptrs[i] = &wire[i];
    }
    hint.n_hints = h->details_count;
    hint.hints = ptrs;
  }
  /* hints_count 0: address 0 clears the hint. */
  return main_simple(self, MAIN_REQUEST(SET_CALL_HINT, set_call_hint, &hint),
                     MRESP(SET_CALL_HINT));
}

/* ------------------------------------------------------------------------ */
/* VM state */

/*
 * A kernel struct as the state bytes of a get_state answer (main connection
 * or VCPU): exactly its size, or -EPROTO. `answer` may be NULL (no member).
 */
static int copy_state_out(const ProtobufCBinaryData *answer, void *out, size_t size) {
  if (!answer || answer->len != size) return -EPROTO;
  memcpy(out, answer->data, size);
  return 0;
}

/* A kernel struct as the state bytes of a set_state request (never written through). */
static ProtobufCBinaryData state_bytes(const void *in, size_t size) {
  return (ProtobufCBinaryData){.len = size, .data = (uint8_t *)in};
}

static int vm_get_state(struct crosvm *self, Plugvisor__Plugin__MainRequest__StateSet set,
                        void *out, size_t size) {
  if (!self || !out) return -EINVAL;
  MainGetState get = PLUGVISOR__PLUGIN__MAIN_REQUEST__GET_STATE__INIT;
  get.set = set;
  MainResponse *resp;
  int rc = main_query(self, MAIN_REQUEST(GET_STATE, get_state, &get), MRESP(GET_STATE),
                      &resp);
  if (rc != 0) return rc;
  rc = copy_state_out(resp->get_state ? &resp->get_state->state : NULL, out, size);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static int vm_set_state(struct crosvm *self, Plugvisor__Plugin__MainRequest__StateSet set,
                        const void *in, size_t size) {
  if (!self || !in) return -EINVAL;
  MainSetState st = PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_STATE__INIT;
  st.set = set;
  st.state = state_bytes(in, size);
  return main_simple(self, MAIN_REQUEST(SET_STATE, set_state, &st), MRESP(SET_STATE));
}

#define VM_SET(name) PLUGVISOR__PLUGIN__MAIN_REQUEST__STATE_SET__##name

API_EXPORT int crosvm_get_pic_state(struct crosvm *self, bool primary,
                                    struct kvm_pic_state *state) {
  return vm_get_state(self, primary ? VM_SET(PIC0) : VM_SET(PIC1), state,
                      sizeof(*state));
}

API_EXPORT int crosvm_set_pic_state(struct crosvm *self, bool primary,
                                    const struct kvm_pic_state *state) {
  return vm_set_state(self, primary ? VM_SET(PIC0) : VM_SET(PIC1), state,
                      sizeof(*state));
}

/* crosvm_get_<name> and crosvm_set_<name>: the VM state set `set`, a `type`. */
#define VM_STATE_ACCESSORS(name, type, set)                                    \
  API_EXPORT int crosvm_get_##name(struct crosvm *self, type *out) {           \
    return vm_get_state(self, VM_SET(set), out, sizeof(*out));                 \
  }                                                                            \
  API_EXPORT int crosvm_set_##name(struct crosvm *self, const type *in) {      \
    return vm_set_state(self, VM_SET(set), in, sizeof(*in));                   \
  }

VM_STATE_ACCESSORS(ioapic_state, struct kvm_ioapic_state, IOAPIC)
VM_STATE_ACCESSORS(pit_state, struct kvm_pit_state2, PIT)
VM_STATE_ACCESSORS(clock, struct kvm_clock_data, CLOCK)

API_EXPORT int crosvm_set_identity_map_addr(struct crosvm *self, uint32_t addr) {
  if (!self) return -EINVAL;
  MainSetIdentityMapAddr set =
      PLUGVISOR__PLUGIN__MAIN_REQUEST__SET_IDENTITY_MAP_ADDR__INIT;
  set.address = addr;
  return main_simple(self,
                     MAIN_REQUEST(SET_IDENTITY_MAP_ADDR, set_identity_map_addr, &set),
                     MRESP(SET_IDENTITY_MAP_ADDR));
}

API_EXPORT int crosvm_pause_vcpus(struct crosvm *self, uint64_t cpu_mask,
                                  void *user) {
  if (!self) return -EINVAL;
  MainPauseVcpus pause = PLUGVISOR__PLUGIN__MAIN_REQUEST__PAUSE_VCPUS__INIT;
  pause.cpu_mask = cpu_mask;
  pause.user = (uint64_t)(uintptr_t)user;
  return main_simple(self, MAIN_REQUEST(PAUSE_VCPUS, pause_vcpus, &pause),
                     MRESP(PAUSE_VCPUS));
}

API_EXPORT int crosvm_start(struct crosvm *self) {
  if (!self) return -EINVAL;
  MainStart start = PLUGVISOR__PLUGIN__MAIN_REQUEST__START__INIT;
  return main_simple(self, MAIN_REQUEST(START, start, &start), MRESP(START));
}

/* ------------------------------------------------------------------------ */
/* Objects */

/* A create request's kind, as MAIN_REQUEST pairs a request's member. */
#define CREATE(name, field, member)                                          \
  (&MESSAGE(MainCreate, plugvisor__plugin__main_request__create__descriptor, \
            .kind_case = PLUGVISOR__PLUGIN__MAIN_REQUEST__CREATE__KIND_##name, \
            .field = (member)))

/*
 * Sends `create` under a new object id (with `send_fd` attached when >= 0);
 * fds receive exactly want_fds descriptors, *id the object's id.
 */
static int create_object(struct crosvm *self, MainCreate *create, int send_fd,
                         int *fds, int want_fds, uint32_t *id) {
  create->id = new_object_id();
  int rc = main_call(self, MAIN_REQUEST(CREATE, create, create), send_fd, MRESP(CREATE),
                     NULL, fds, want_fds, NULL);
  if (rc == 0) *id = create->id;
  return rc;
}

static int destroy_object(struct crosvm *self, uint32_t id) {
  MainDestroy destroy = PLUGVISOR__PLUGIN__MAIN_REQUEST__DESTROY__INIT;
  destroy.id = id;
  return main_simple(self, MAIN_REQUEST(DESTROY, destroy, &destroy), MRESP(DESTROY));
}

API_EXPORT int crosvm_create_io_event(struct crosvm *self, uint32_t space,
                                      uint64_t addr, uint32_t len,
                                      const uint8_t *datamatch,
                                      struct crosvm_io **out) {
  if (!self || !out) return -EINVAL;
  int rc = check_space(space);
  if (rc != 0) return rc;
  uint64_t match = 0;
  uint32_t length = 0;
  if (datamatch) {
    if (len != 1 && len != 2 && len != 4 && len != 8) return -EINVAL;
    for (uint32_t i = 0; i < len; i++) match |= (uint64_t)datamatch[i] << (8 * i);
    length = len;
  }
  struct crosvm_io *io = calloc(1, sizeof(*io));
  if (!io) return -ENOMEM;
  MainCreateIoEvent ev = PLUGVISOR__PLUGIN__MAIN_REQUEST__CREATE__IO_EVENT__INIT;
  ev.space = (Plugvisor__Plugin__AddressSpace)space;
  ev.address = addr;
  ev.length = length;
  ev.datamatch = match;
  int fds[MAIN_MAX_FDS];
  rc = create_object(self, CREATE(IO_EVENT, io_event, &ev), -1, fds, 1, &io->id);
  if (rc != 0) {
    free(io);
    return rc;
  }
  io->fd = fds[0];
  *out = io;
  return 0;
}

API_EXPORT int crosvm_destroy_io_event(struct crosvm *self,
                                       struct crosvm_io **self_io) {
  if (!self || !self_io || !*self_io) return -EINVAL;
  struct crosvm_io *io = *self_io;
  *self_io = NULL;
  int rc = destroy_object(self, io->id);
  close(io->fd);
  free(io);
  return rc;
}

API_EXPORT int crosvm_io_event_fd(struct crosvm_io *self_io) {
  if (!self_io) return -EINVAL;
  return self_io->fd;
}

API_EXPORT int crosvm_create_memory(struct crosvm *self, int fd,
                                    uint64_t offset, uint64_t length,
                                    uint64_t start, bool read_only,
                                    bool dirty_log, struct crosvm_memory **out) {
  if (!self || !out) return -EINVAL;
  if (fd < 0) return -EBADF;
  struct crosvm_memory *mem = calloc(1, sizeof(*mem));
  if (!mem) return -ENOMEM;
  MainCreateMemory m = PLUGVISOR__PLUGIN__MAIN_REQUEST__CREATE__MEMORY__INIT;
  m.offset = offset;
  m.start = start;
  m.length = length;
  m.read_only = read_only;
  m.dirty_log = dirty_log;
  int fds[MAIN_MAX_FDS];
  int rc = create_object(self, CREATE(MEMORY, memory, &m), fd, fds, 0, &mem->id);
  if (rc != 0) {
    free(mem);
    return rc;
  }
  mem->length = length;
  *out = mem;
  return 0;
}

API_EXPORT int crosvm_destroy_memory(struct crosvm *self,
                                     struct crosvm_memory **mem) {
  if (!self || !mem || !*mem) return -EINVAL;
  struct crosvm_memory *m = *mem;
  *mem = NULL;
  int rc = destroy_object(self, m->id);
  free(m);
  return rc;
}

API_EXPORT int crosvm_memory_get_dirty_log(struct crosvm *self,
                                           struct crosvm_memory *mem,
                                           uint8_t *log) {
  if (!self || !mem || !log) return -EINVAL;
  MainDirtyLog dl = PLUGVISOR__PLUGIN__MAIN_REQUEST__DIRTY_LOG__INIT;
  dl.id = mem->id;
  MainResponse *resp;
  int rc = main_query(self, MAIN_REQUEST(DIRTY_LOG, dirty_log, &dl), MRESP(DIRTY_LOG),
                      &resp);
  if (rc != 0) return rc;
  uint64_t pages = mem->length / PAGE_SIZE_ + (mem->length % PAGE_SIZE_ != 0);
  uint64_t size = pages / 8 + (pages % 8 != 0);
  size_t got = resp->dirty_log ? resp->dirty_log->bitmap.len : 0;
  if (got > size) {
    rc = -EPROTO;
  } else {
    if (got) memcpy(log, resp->dirty_log->bitmap.data, got);
    memset(log + got, 0, (size_t)(size - got));
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

API_EXPORT int crosvm_create_irq_event(struct crosvm *self, uint32_t irq_id,
                                       struct crosvm_irq **out) {
  if (!self || !out) return -EINVAL;
  struct crosvm_irq *irq = calloc(1, sizeof(*irq));
  if (!irq) return -ENOMEM;
  MainCreateIrqEvent ev = PLUGVISOR__PLUGIN__MAIN_REQUEST__CREATE__IRQ_EVENT__INIT;
  ev.irq_id = irq_id;
  ev.resample = true;
  int fds[MAIN_MAX_FDS];
  int rc = create_object(self, CREATE(IRQ_EVENT, irq_event, &ev), -1, fds, 2, &irq->id);
  if (rc != 0) {
    free(irq);
    return rc;
  }
  irq->trigger_fd = fds[0];
  irq->resample_fd = fds[1];
  *out = irq;
  return 0;
}

API_EXPORT int crosvm_destroy_irq_event(struct crosvm *self,
                                        struct crosvm_irq **irq) {
  if (!self || !irq || !*irq) return -EINVAL;
  struct crosvm_irq *i = *irq;
  *irq = NULL;
  int rc = destroy_object(self, i->id);
  close(i->trigger_fd);
  close(i->resample_fd);
  free(i);
  return rc;
}

API_EXPORT int crosvm_irq_event_get_fd(const struct crosvm_irq *irq) {
  if (!irq) return -EINVAL;
  return irq->trigger_fd;
}

API_EXPORT int crosvm_irq_event_get_resample_fd(const struct crosvm_irq *irq) {
  if (!irq) return -EINVAL;
  return irq->resample_fd;
}

API_EXPORT int crosvm_get_vcpu(struct crosvm *self, uint32_t cpu_id,
                               struct crosvm_vcpu **out) {
  if (!self || !out) return -EINVAL;
  if (!self->vcpus || cpu_id >= self->vcpus->count) return -ENOENT;
  *out = &self->vcpus->vcpus[cpu_id];
  return 0;
}

/* ------------------------------------------------------------------------ */
/* VCPU connection */

/*
 * Sends a request. `bound`, if not 0, is at least its packed size: a request
 * that fits the stack buffer by it is packed without being sized first
 * (that walks the message once more, and a resume is sent on every exit).
 */
static int vcpu_send(struct crosvm_vcpu *vcpu, const VcpuRequest *req, size_t bound) {
  /* The usual request (a resume after an exit) fits on the stack: no malloc on the exit path. */
  uint8_t small[1024];
  size_t len = bound != 0 && bound <= sizeof small ? bound : protobuf_c_message_get_packed_size(&req->base);
  uint8_t *buf = len <= sizeof small ? small : malloc(len);
  if (!buf) return -ENOMEM;
  len = protobuf_c_message_pack(&req->base, buf);
  size_t done = 0;
  int rc = 0;
  while (done < len) {
    ssize_t n = write(vcpu->req_fd, buf + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      break;
    }
    done += (size_t)n;
  }
  if (buf != small) free(buf);
  return rc;
}


/*
 * Reads the next length-delimited VcpuResponse, decoded with `allocator`
 * (NULL: malloc). Several may have arrived in one read; the rest stay
 * buffered for the next call.
 */
static int vcpu_recv(struct crosvm_vcpu *vcpu, ProtobufCAllocator *allocator, VcpuResponse **out) {
  for (;;) {
    size_t avail = vcpu->recv_end - vcpu->recv_start;
    const uint8_t *p = vcpu->recv_buf + vcpu->recv_start;
    /* Decode the varint32 length prefix, if complete. */
    uint64_t msg_len = 0;
    size_t hdr = 0;
    bool have_len = false;
    for (size_t i = 0; i < avail && i < 5; i++) {
      msg_len |= (uint64_t)(p[i] & 0x7f) << (7 * i);
      if (!(p[i] & 0x80)) {
        hdr = i + 1;
        have_len = true;
        break;
      }
      if (i == 4) return -EPROTO; /* longer than a varint32 */
    }
    if (have_len && msg_len > VCPU_MAX_MESSAGE) return -EPROTO;
    if (have_len && avail - hdr >= msg_len) {
      VcpuResponse *resp = (VcpuResponse *)protobuf_c_message_unpack(
          &plugvisor__plugin__vcpu_response__descriptor, allocator, (size_t)msg_len,
          p + hdr);
      vcpu->recv_start += hdr + (size_t)msg_len;
      if (vcpu->recv_start == vcpu->recv_end) vcpu->recv_start = vcpu->recv_end = 0;
      if (!resp) return -EPROTO;
      *out = resp;
      return 0;
    }

    /* Need more bytes: make room, then read. */
    size_t need = have_len ? hdr + (size_t)msg_len : 16;
    if (vcpu->recv_start > 0) {
      memmove(vcpu->recv_buf, p, avail);
      vcpu->recv_start = 0;
      vcpu->recv_end = avail;
    }
    if (need > vcpu->recv_cap || vcpu->recv_end == vcpu->recv_cap) {
      size_t cap = vcpu->recv_cap ? vcpu->recv_cap : VCPU_RECV_SIZE;
      while (cap < need || cap <= vcpu->recv_end) cap *= 2;
      uint8_t *grown = realloc(vcpu->recv_buf, cap);
      if (!grown) return -ENOMEM;
      vcpu->recv_buf = grown;
      vcpu->recv_cap = cap;
    }
    ssize_t n = read_spinning(vcpu->resp_fd, vcpu->recv_buf + vcpu->recv_end,
                              vcpu->recv_cap - vcpu->recv_end, vcpu->spin);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EPIPE; /* the host closed the pipe */
    vcpu->recv_end += (size_t)n;
  }
}

/* Sends a request and reads its answer, which must carry member `expect`. */
static int vcpu_call(struct crosvm_vcpu *vcpu, const VcpuRequest *req,
                     int expect, VcpuResponse **out) {
  int rc = vcpu_send(vcpu, req, 0);
  if (rc != 0) return rc;
  VcpuResponse *resp;
  rc = vcpu_recv(vcpu, NULL, &resp);
  if (rc != 0) return rc;
  if (resp->errno_value != 0)
    rc = wire_errno(resp->errno_value);
  else if ((int)resp->message_case != expect)
    rc = -EPROTO;
  if (rc != 0) {
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
  }
  if (out)
    *out = resp;
  else
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

/* Makes the IO data buffer hold at least `len` bytes (never NULL). */
static int io_reserve(struct crosvm_vcpu *vcpu, size_t len) {
  if (len == 0) len = 8;
  if (len <= vcpu->io_cap && vcpu->io_data) return 0;
  uint8_t *grown = realloc(vcpu->io_data, len);
  if (!grown) return -ENOMEM;
  vcpu->io_data = grown;
  vcpu->io_cap = len;
  return 0;
}

/* Takes register bytes pushed with an event into a cache (unless set). */
static int take_pushed(const ProtobufCBinaryData *bytes, void *dst,
                       size_t size, struct reg_cache *cache) {
  if (bytes->len == 0) return 0;
  if (bytes->len != size) return -EPROTO;
  if (!cache->dirty) {
    memcpy(dst, bytes->data, size);
    cache->valid = true;
  }
  return 0;
}

API_EXPORT int crosvm_vcpu_wait(struct crosvm_vcpu *self,
                                struct crosvm_vcpu_event *event) {
  if (!self || !event) return -EINVAL;
  int rc;
  if (!self->wait_sent) {
    VcpuWait wait = PLUGVISOR__PLUGIN__VCPU_REQUEST__WAIT__INIT;
    rc = vcpu_send(self, VCPU_REQUEST(WAIT, wait, &wait), 0);
    if (rc != 0) return rc;
    self->wait_sent = true;
  }

  /* The VCPU may have run since the last event: drop what it pushed then. */
  self->regs_cache.valid = self->regs_cache.dirty;
  self->sregs_cache.valid = self->sregs_cache.dirty;
  self->debugregs_cache.valid = self->debugregs_cache.dirty;
  self->io_read_pending = false;
  self->hcall_pending = false;
  self->io_len = 0;

  /* Without its block (out of memory) the arena still decodes, with malloc. */
  if (!self->wait_arena.allocator.alloc) message_arena_init(&self->wait_arena, WAIT_ARENA_SIZE);
  VcpuResponse *resp;
  rc = vcpu_recv(self, &self->wait_arena.allocator, &resp);
  if (rc != 0) {
    message_arena_free(&self->wait_arena, NULL);
    return rc;
  }
  if (resp->errno_value != 0) {
    rc = wire_errno(resp->errno_value);
    goto out;
  }
  if (resp->message_case != VRESP(WAIT) || !resp->wait) {
    rc = -EPROTO;
    goto out;
  }
  const VcpuResponseWait *w = resp->wait;
  memset(event, 0, sizeof(*event));
  switch (w->exit_case) {
    case VEXIT(INIT):
      event->kind = CROSVM_VCPU_EVENT_KIND_INIT;
      break;
    case VEXIT(IO): {
      const Plugvisor__Plugin__VcpuResponse__Wait__Io *io = w->io;
      if (!io || io->data.len > UINT32_MAX) {
        rc = -EPROTO;
        goto out;
      }
      rc = take_pushed(&io->regs, &self->regs, sizeof(self->regs), &self->regs_cache);
      if (rc == 0)
        rc = take_pushed(&io->sregs, &self->sregs, sizeof(self->sregs),
                         &self->sregs_cache);
      if (rc == 0)
        rc = take_pushed(&io->debugregs, &self->debugregs,
                         sizeof(self->debugregs), &self->debugregs_cache);
      if (rc == 0) rc = io_reserve(self, io->data.len);
      if (rc != 0) goto out;
      if (io->data.len) memcpy(self->io_data, io->data.data, io->data.len);
      self->io_len = (uint32_t)io->data.len;
      self->io_read_pending = !io->is_write && !io->no_resume;
      event->kind = CROSVM_VCPU_EVENT_KIND_IO_ACCESS;
      event->io_access.address_space = (uint32_t)io->space;
      event->io_access.address = io->address;
      event->io_access.data = self->io_data;
      event->io_access.length = self->io_len;
      event->io_access.is_write = io->is_write ? 1 : 0;
      event->io_access.no_resume = io->no_resume ? 1 : 0;
      break;
    }
    case VEXIT(USER):
      if (!w->user) {
        rc = -EPROTO;
        goto out;
      }
      event->kind = CROSVM_VCPU_EVENT_KIND_PAUSED;
      event->user = (void *)(uintptr_t)w->user->user;
      break;
    case VEXIT(HYPERV_CALL):
      if (!w->hyperv_call) {
        rc = -EPROTO;
        goto out;
      }
      self->hcall_result = 0;
      self->hcall_pending = true;
      event->kind = CROSVM_VCPU_EVENT_KIND_HYPERV_HCALL;
      event->hyperv_call.input = w->hyperv_call->input;
      event->hyperv_call.result = &self->hcall_result;
      event->hyperv_call.params[0] = w->hyperv_call->params0;
      event->hyperv_call.params[1] = w->hyperv_call->params1;
      break;
    case VEXIT(HYPERV_SYNIC):
      if (!w->hyperv_synic) {
        rc = -EPROTO;
        goto out;
      }
      event->kind = CROSVM_VCPU_EVENT_KIND_HYPERV_SYNIC;
      event->hyperv_synic.msr = w->hyperv_synic->msr;
      event->hyperv_synic.control = w->hyperv_synic->control;
      event->hyperv_synic.evt_page = w->hyperv_synic->evt_page;
      event->hyperv_synic.msg_page = w->hyperv_synic->msg_page;
      break;
    default:
      rc = -EPROTO;
      break;
  }
out:
  message_arena_free(&self->wait_arena, &resp->base);
  return rc;
}

API_EXPORT int crosvm_vcpu_resume(struct crosvm_vcpu *self) {
  if (!self) return -EINVAL;
  VcpuResume resume = PLUGVISOR__PLUGIN__VCPU_REQUEST__RESUME__INIT;
  uint8_t result[8];
  if (self->io_read_pending) {
    resume.data.data = self->io_data;
    resume.data.len = self->io_len;
  } else if (self->hcall_pending) {
    for (int i = 0; i < 8; i++) result[i] = (uint8_t)(self->hcall_result >> (8 * i));
    resume.data.data = result;
    resume.data.len = sizeof(result);
  }
  if (self->regs_cache.dirty) {
    resume.regs.data = (uint8_t *)&self->regs;
    resume.regs.len = sizeof(self->regs);
  }
  if (self->sregs_cache.dirty) {
    resume.sregs.data = (uint8_t *)&self->sregs;
    resume.sregs.len = sizeof(self->sregs);
  }
  if (self->debugregs_cache.dirty) {
    resume.debugregs.data = (uint8_t *)&self->debugregs;
    resume.debugregs.len = sizeof(self->debugregs);
  }
  /* Each field costs its bytes and at most a tag and a length of 5 bytes each; so does the member. */
  size_t bound = 10 * 5 + resume.data.len + resume.regs.len + resume.sregs.len + resume.debugregs.len;
  int rc = vcpu_send(self, VCPU_REQUEST(RESUME, resume, &resume), bound);
  if (rc != 0) return rc;
  self->io_read_pending = false;
  self->hcall_pending = false;
  self->regs_cache = (struct reg_cache){false, false};
  self->sregs_cache = (struct reg_cache){false, false};
  self->debugregs_cache = (struct reg_cache){false, false};
  return 0;
}

#define VCPU_SET(name) PLUGVISOR__PLUGIN__VCPU_REQUEST__STATE_SET__##name

static int vcpu_get_state(struct crosvm_vcpu *vcpu,
                          Plugvisor__Plugin__VcpuRequest__StateSet set,
                          void *out, size_t size) {
  if (!vcpu || !out) return -EINVAL;
  VcpuGetState get = PLUGVISOR__PLUGIN__VCPU_REQUEST__GET_STATE__INIT;
  get.set = set;
  VcpuResponse *resp;
  int rc = vcpu_call(vcpu, VCPU_REQUEST(GET_STATE, get_state, &get), VRESP(GET_STATE),
                     &resp);
  if (rc != 0) return rc;
  rc = copy_state_out(resp->get_state ? &resp->get_state->state : NULL, out, size);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static int vcpu_set_state(struct crosvm_vcpu *vcpu,
                          Plugvisor__Plugin__VcpuRequest__StateSet set,
                          const void *in, size_t size) {
  if (!vcpu || !in) return -EINVAL;
  VcpuSetState st = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_STATE__INIT;
  st.set = set;
  st.state = state_bytes(in, size);
  return vcpu_call(vcpu, VCPU_REQUEST(SET_STATE, set_state, &st), VRESP(SET_STATE), NULL);
}

/* Get of a cached register set: the cache if valid, else the host. */
static int cached_get(struct crosvm_vcpu *vcpu,
                      Plugvisor__Plugin__VcpuRequest__StateSet set,
                      const struct reg_cache *cache, const void *cached,
                      void *out, size_t size) {
  if (!vcpu || !out) return -EINVAL;
  if (cache->valid) {
    memcpy(out, cached, size);
    return 0;
  }
  return vcpu_get_state(vcpu, set, out, size);
}

/* Set of a cached register set: only the cache, sent with the next resume. */
static int cached_set(struct reg_cache *cache, void *cached, const void *in,
                      size_t size) {
  if (!in) return -EINVAL;
  memcpy(cached, in, size);
  *cache = (struct reg_cache){true, true};
  return 0;
}

API_EXPORT int crosvm_vcpu_get_regs(struct crosvm_vcpu *self,
                                    struct kvm_regs *regs) {
  if (!self) return -EINVAL;
  return cached_get(self, VCPU_SET(REGS), &self->regs_cache, &self->regs, regs,
                    sizeof(*regs));
}

API_EXPORT int crosvm_vcpu_set_regs(struct crosvm_vcpu *self,
                                    const struct kvm_regs *regs) {
  if (!self) return -EINVAL;
  return cached_set(&self->regs_cache, &self->regs, regs, sizeof(*regs));
}

API_EXPORT int crosvm_vcpu_get_sregs(struct crosvm_vcpu *self,
                                     struct kvm_sregs *sregs) {
  if (!self) return -EINVAL;
  return cached_get(self, VCPU_SET(SREGS), &self->sregs_cache, &self->sregs,
                    sregs, sizeof(*sregs));
}

API_EXPORT int crosvm_vcpu_set_sregs(struct crosvm_vcpu *self,
                                     const struct kvm_sregs *sregs) {
  if (!self) return -EINVAL;
  return cached_set(&self->sregs_cache, &self->sregs, sregs, sizeof(*sregs));
}

API_EXPORT int crosvm_vcpu_get_debugregs(struct crosvm_vcpu *self,
                                         struct kvm_debugregs *dregs) {
  if (!self) return -EINVAL;
  return cached_get(self, VCPU_SET(DEBUGREGS), &self->debugregs_cache,
                    &self->debugregs, dregs, sizeof(*dregs));
}

API_EXPORT int crosvm_vcpu_set_debugregs(struct crosvm_vcpu *self,
                                         const struct kvm_debugregs *dregs) {
  if (!self) return -EINVAL;
  return cached_set(&self->debugregs_cache, &self->debugregs, dregs, sizeof(*dregs));
}

#define VCPU_STATE_ACCESSORS(name, type, set)                                  \
  API_EXPORT int crosvm_vcpu_get_##name(struct crosvm_vcpu *self, type *out) { \
    return vcpu_get_state(self, VCPU_SET(set), out, sizeof(*out));             \
  }                                                                            \
  API_EXPORT int crosvm_vcpu_set_##name(struct crosvm_vcpu *self,              \
                                        const type *in) {                      \
    return vcpu_set_state(self, VCPU_SET(set), in, sizeof(*in));               \
  }

VCPU_STATE_ACCESSORS(fpu, struct kvm_fpu, FPU)
VCPU_STATE_ACCESSORS(xcrs, struct kvm_xcrs, XCREGS)
VCPU_STATE_ACCESSORS(lapic_state, struct kvm_lapic_state, LAPIC)
VCPU_STATE_ACCESSORS(mp_state, struct kvm_mp_state, MP)
VCPU_STATE_ACCESSORS(vcpu_events, struct kvm_vcpu_events, EVENTS)

API_EXPORT int crosvm_vcpu_get_msrs(struct crosvm_vcpu *self, uint32_t msr_count,
                                    struct kvm_msr_entry *msr_entries,
                                    uint32_t *out_count) {
  if (!self || (msr_count && !msr_entries)) return -EINVAL;
  uint32_t *indices = calloc(msr_count ? msr_count : 1, sizeof(*indices));
  if (!indices) return -ENOMEM;
  for (uint32_t i = 0; i < msr_count; i++) indices[i] = msr_entries[i].index;
  VcpuGetMsrs get = PLUGVISOR__PLUGIN__VCPU_REQUEST__GET_MSRS__INIT;
  get.n_entry_indices = msr_count;
  get.entry_indices = indices;
  VcpuResponse *resp;
  int rc = vcpu_call(self, VCPU_REQUEST(GET_MSRS, get_msrs, &get), VRESP(GET_MSRS),
                     &resp);
  free(indices);
  if (rc != 0) return rc;
  size_t n = resp->get_msrs ? resp->get_msrs->n_entry_data : 0;
  if (n > msr_count) {
    rc = -EPROTO;
  } else {
    for (size_t i = 0; i < n; i++) msr_entries[i].data = resp->get_msrs->entry_data[i];
    if (out_count) *out_count = (uint32_t)n;
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

API_EXPORT int crosvm_vcpu_set_msrs(struct crosvm_vcpu *self, uint32_t msr_count,
                                    const struct kvm_msr_entry *msr_entries) {
  if (!self || (msr_count && !msr_entries)) return -EINVAL;
  VcpuMsrEntry **wire =
      new_repeated(&plugvisor__plugin__vcpu_request__msr_entry__descriptor, msr_count);
  if (!wire) return -ENOMEM;
  for (uint32_t i = 0; i < msr_count; i++) {
    wire[i]->index = msr_entries[i].index;
    wire[i]->data = msr_entries[i].data;
  }
  VcpuSetMsrs set = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_MSRS__INIT;
  set.n_entries = msr_count;
  set.entries = wire;
  int rc = vcpu_call(self, VCPU_REQUEST(SET_MSRS, set_msrs, &set), VRESP(SET_MSRS), NULL);
  free(wire);
  return rc;
}

API_EXPORT int crosvm_vcpu_set_cpuid(struct crosvm_vcpu *self,
                                     uint32_t cpuid_count,
                                     const struct kvm_cpuid_entry2 *cpuid_entries) {
  if (!self || (cpuid_count && !cpuid_entries)) return -EINVAL;
  VcpuSetCpuid set = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_CPUID__INIT;
  set.n_entries = cpuid_count;
  set.entries = new_repeated(&plugvisor__plugin__cpuid_entry__descriptor, cpuid_count);
  if (!set.entries) return -ENOMEM;
  for (uint32_t i = 0; i < cpuid_count; i++)
    cpuid_entry_from_kvm(&cpuid_entries[i], set.entries[i]);
  int rc = vcpu_call(self, VCPU_REQUEST(SET_CPUID, set_cpuid, &set), VRESP(SET_CPUID),
                     NULL);
  free(set.entries);
  return rc;
}

API_EXPORT int crosvm_get_hyperv_cpuid(struct crosvm_vcpu *self,
                                       uint32_t entry_count,
                                       struct kvm_cpuid_entry2 *entries,
                                       uint32_t *out_count) {
  if (!self || (entry_count && !entries)) return -EINVAL;
  CpuidRequest cpuid = CPUID_REQUEST_INIT;
  VcpuResponse *resp;
  int rc = vcpu_call(self, VCPU_REQUEST(GET_HYPERV_CPUID, get_hyperv_cpuid, &cpuid),
                     VRESP(GET_HYPERV_CPUID), &resp);
  if (rc != 0) return rc;
  rc = copy_cpuid_out(resp->get_hyperv_cpuid, entry_count, entries, out_count);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

API_EXPORT int crosvm_vcpu_enable_capability(struct crosvm_vcpu *self,
                                             uint32_t capability,
                                             uint32_t flags, uint64_t args[4]) {
  if (!self) return -EINVAL;
  if (flags != 0) return -EINVAL;
  if (args)
    for (int i = 0; i < 4; i++)
      if (args[i] != 0) return -EINVAL;
  VcpuEnableCapability cap = PLUGVISOR__PLUGIN__VCPU_REQUEST__ENABLE_CAPABILITY__INIT;
  cap.capability = capability;
  return vcpu_call(self, VCPU_REQUEST(ENABLE_CAPABILITY, enable_capability, &cap),
                   VRESP(ENABLE_CAPABILITY), NULL);
}
