/*
 * mock_host: unit tests of libcrosvm_plugin against a scripted fake host.
 *
 * Needs neither KVM nor the plugvisor host: the test makes the socket pair
 * and the VCPU pipes itself, queues the host's answers (hand-encoded
 * protobuf) before each library call, and inspects the requests the library
 * wrote afterwards. Covers request encodings, errno mapping, descriptor
 * passing, buffering of several VCPU messages per read, partial and large
 * VCPU messages, register caching and deferral, and the library's defences
 * against malformed answers (no crash, -EPROTO, received fds closed),
 * including a few hundred random ones.
 *
 * Run it directly (exit 0 = pass); it is also run under valgrind.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crosvm.h>

static int failures;
static int checks;

#define CHECK(cond)                                                     \
  do {                                                                  \
    checks++;                                                           \
    if (!(cond)) {                                                      \
      failures++;                                                       \
      fprintf(stderr, "mock_host.c:%d: check failed: %s\n", __LINE__, #cond); \
    }                                                                   \
  } while (0)

#define CHECK_RC(expr, want)                                                  \
  do {                                                                        \
    int rc_ = (expr);                                                         \
    checks++;                                                                 \
    if (rc_ != (want)) {                                                      \
      failures++;                                                             \
      fprintf(stderr, "mock_host.c:%d: %s returned %d (%s), wanted %d\n",     \
              __LINE__, #expr, rc_, rc_ < 0 ? strerror(-rc_) : "", (want));   \
    }                                                                         \
  } while (0)

/* ------------------------------------------------------------------------ */
/* A tiny protobuf encoder and decoder. */

struct pb {
  uint8_t buf[8192];
  size_t len;
};

static void pb_raw(struct pb *m, const void *data, size_t len) {
  if (m->len + len > sizeof(m->buf)) abort(); /* test bug */
  if (len) memcpy(m->buf + m->len, data, len);
  m->len += len;
}

static void pb_varint(struct pb *m, uint64_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v) b |= 0x80;
    pb_raw(m, &b, 1);
  } while (v);
}

static void pb_uint(struct pb *m, int field, uint64_t v) {
  pb_varint(m, (uint64_t)field << 3);
  pb_varint(m, v);
}

static void pb_sint(struct pb *m, int field, int32_t v) {
  pb_uint(m, field, (uint32_t)((v << 1) ^ (v >> 31)));
}

static void pb_fixed32(struct pb *m, int field, uint32_t v) {
  pb_varint(m, (uint64_t)field << 3 | 5);
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  pb_raw(m, b, 4);
}

static void pb_bytes(struct pb *m, int field, const void *data, size_t len) {
  pb_varint(m, (uint64_t)field << 3 | 2);
  pb_varint(m, len);
  pb_raw(m, data, len);
}

static void pb_msg(struct pb *m, int field, const struct pb *sub) {
  pb_bytes(m, field, sub ? sub->buf : NULL, sub ? sub->len : 0);
}

struct field {
  int num;
  int wt;
  uint64_t v;
  const uint8_t *p;
  size_t len;
};

static bool pb_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* Finds occurrence `nth` (0-based; -1 = the last) of field `num` at the top
   level of a message. */
static bool pb_find_nth(const uint8_t *buf, size_t len, int num, int nth,
                        struct field *out) {
  const uint8_t *p = buf, *end = buf + len;
  bool found = false;
  int seen = 0;
  while (p < end) {
    uint64_t key;
    if (!pb_read_varint(&p, end, &key)) return false;
    struct field f = {.num = (int)(key >> 3), .wt = (int)(key & 7)};
    switch (f.wt) {
      case 0:
        if (!pb_read_varint(&p, end, &f.v)) return false;
        break;
      case 1:
        if (end - p < 8) return false;
        memcpy(&f.v, p, 8);
        p += 8;
        break;
      case 2:
        if (!pb_read_varint(&p, end, &f.v) || (uint64_t)(end - p) < f.v) return false;
        f.p = p;
        f.len = (size_t)f.v;
        p += f.len;
        break;
      case 5:
        if (end - p < 4) return false;
        f.v = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
        p += 4;
        break;
      default:
        return false;
    }
    if (f.num == num) {
      if (nth < 0 || seen == nth) {
        *out = f;
        found = true;
      }
      seen++;
    }
  }
  return found;
}

static bool pb_find(const uint8_t *buf, size_t len, int num, struct field *out) {
  return pb_find_nth(buf, len, num, -1, out);
}

/* Value of varint field `num` in a message (0 when absent). */
static uint64_t pb_get(const uint8_t *buf, size_t len, int num) {
  struct field f;
  return pb_find(buf, len, num, &f) ? f.v : 0;
}

/* ------------------------------------------------------------------------ */
/* The fake host's side of the connections. */

static uint8_t req_buf[65536];
static size_t req_len;

/* Queues a MainResponse {errno, member{sub}} with descriptors attached. */
static void host_send(int fd, int32_t err, int member, const struct pb *sub,
                      const int *fds, int nfds) {
  struct pb m = {.len = 0};
  if (err) pb_sint(&m, 1, err);
  if (member) pb_msg(&m, member, sub);
  struct iovec iov = {.iov_base = m.buf, .iov_len = m.len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * 40)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  if (sendmsg(fd, &msg, 0) != (ssize_t)m.len) {
    perror("host_send");
    abort();
  }
}

static void host_send_raw(int fd, const void *data, size_t len) {
  if (send(fd, data, len, 0) != (ssize_t)len) abort();
}

/*
 * Reads the request the library sent; returns the bytes of its member
 * `member` (NULL if another member) and the fd it carried in *fd_out.
 */
static const uint8_t *host_recv(int fd, int member, size_t *sub_len, int *fd_out) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * 4)];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = req_buf, .iov_len = sizeof(req_buf)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                       .msg_controllen = sizeof(control.buf)};
  ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (fd_out) *fd_out = -1;
  if (n < 0) return NULL;
  req_len = (size_t)n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_type != SCM_RIGHTS) continue;
    int got;
    memcpy(&got, CMSG_DATA(c), sizeof(int));
    if (fd_out)
      *fd_out = got;
    else
      close(got);
  }
  struct field f;
  if (!pb_find(req_buf, req_len, member, &f) || f.wt != 2) return NULL;
  if (sub_len) *sub_len = f.len;
  return f.p;
}

/* No request pending on a non-blocking read end. */
static bool nothing_sent(int fd) {
  uint8_t b;
  ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
  if (n < 0 && errno == ENOTSOCK) {
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    n = read(fd, &b, 1);
    fcntl(fd, F_SETFL, flags);
  }
  return n < 0 && errno == EAGAIN;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the DIR's own fd */
}

/* A VCPU as the host sees it. */
struct host_vcpu {
  int req_rd;  /* reads the plugin's requests */
  int resp_wr; /* writes the responses */
};

/* Appends a length-delimited VcpuResponse {errno, member{sub}} to out. */
static void vcpu_frame(struct pb *out, int32_t err, int member, const struct pb *sub) {
  struct pb m = {.len = 0};
  if (err) pb_sint(&m, 1, err);
  if (member) pb_msg(&m, member, sub);
  pb_varint(out, m.len);
  pb_raw(out, m.buf, m.len);
}

static void vcpu_push(struct host_vcpu *v, int32_t err, int member, const struct pb *sub) {
  struct pb out = {.len = 0};
  vcpu_frame(&out, err, member, sub);
  if (write(v->resp_wr, out.buf, out.len) != (ssize_t)out.len) abort();
}

/* Wait{exit{sub}} as the submessage of VcpuResponse.wait (member 2). */
static struct pb wait_of(int exit_field, const struct pb *exit_sub) {
  struct pb w = {.len = 0};
  pb_msg(&w, exit_field, exit_sub);
  return w;
}

/* Pushes VcpuResponse{wait{exit{sub}}} and returns what crosvm_vcpu_wait makes of it. */
static int push_and_wait(struct host_vcpu *v, int exit_field, const struct pb *exit_sub,
                         struct crosvm_vcpu *vcpu, struct crosvm_vcpu_event *evt) {
  struct pb w = wait_of(exit_field, exit_sub);
  vcpu_push(v, 0, 2, &w);
  return crosvm_vcpu_wait(vcpu, evt);
}

/* Reads one VcpuRequest (unframed, one per write) into req_buf. */
static bool vcpu_read_request(struct host_vcpu *v) {
  ssize_t n = read(v->req_rd, req_buf, sizeof(req_buf));
  if (n < 0) return false;
  req_len = (size_t)n;
  return true;
}

/* The submessage bytes of member `member` of the last request read. */
static const uint8_t *req_member(int member, size_t *len) {
  struct field f;
  if (!pb_find(req_buf, req_len, member, &f) || f.wt != 2) return NULL;
  *len = f.len;
  return f.p;
}

/* ------------------------------------------------------------------------ */

static int make_pair(int sv[2]) {
  return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
}

static void set_socket_env(int fd) {
  char s[16];
  snprintf(s, sizeof(s), "%d", fd);
  setenv("CROSVM_SOCKET", s, 1);
}

static void test_connect_errors(void) {
  struct crosvm *c = NULL;
  unsetenv("CROSVM_SOCKET");
  CHECK_RC(crosvm_connect(&c), -ENOTCONN);
  setenv("CROSVM_SOCKET", "abc", 1);
  CHECK_RC(crosvm_connect(&c), -EINVAL);
  setenv("CROSVM_SOCKET", "-3", 1);
  CHECK_RC(crosvm_connect(&c), -EINVAL);
  setenv("CROSVM_SOCKET", "", 1);
  CHECK_RC(crosvm_connect(&c), -EINVAL);
  setenv("CROSVM_SOCKET", "99999999999999", 1);
  CHECK_RC(crosvm_connect(&c), -EINVAL);
  CHECK_RC(crosvm_connect(NULL), -EINVAL);
  CHECK(c == NULL);

  int base = count_fds();
  int sv[2];
  make_pair(sv);
  set_socket_env(sv[1]);

  /* An odd number of VCPU descriptors is a protocol error; they get closed. */
  int efds[3] = {eventfd(0, 0), eventfd(0, 0), eventfd(0, 0)};
  host_send(sv[0], 0, 18, NULL, efds, 3);
  for (int i = 0; i < 3; i++) close(efds[i]);
  CHECK_RC(crosvm_connect(&c), -EPROTO);
  CHECK(host_recv(sv[0], 17, NULL, NULL) != NULL); /* it asked for get_vcpus */
  CHECK(count_fds() == base + 2);

  /* Garbage. */
  uint8_t junk[] = {0xff, 0xff, 0xff};
  host_send_raw(sv[0], junk, sizeof(junk));
  CHECK_RC(crosvm_connect(&c), -EPROTO);
  host_recv(sv[0], 17, NULL, NULL);

  /* An error answer, with a descriptor that must be closed. */
  int efd = eventfd(0, 0);
  host_send(sv[0], EACCES, 18, NULL, &efd, 1);
  close(efd);
  CHECK_RC(crosvm_connect(&c), -EACCES);
  host_recv(sv[0], 17, NULL, NULL);
  CHECK(count_fds() == base + 2);

  /* The wrong member. */
  host_send(sv[0], 0, 19, NULL, NULL, 0);
  CHECK_RC(crosvm_connect(&c), -EPROTO);
  host_recv(sv[0], 17, NULL, NULL);

  /* An errno outside the plausible range. */
  host_send(sv[0], 100000, 18, NULL, NULL, 0);
  CHECK_RC(crosvm_connect(&c), -EPROTO);
  host_recv(sv[0], 17, NULL, NULL);

  /* A host that hung up. */
  close(sv[0]);
  CHECK_RC(crosvm_connect(&c), -EPIPE);
  close(sv[1]);
  CHECK(count_fds() == base);
  CHECK(c == NULL);
}

/* Connects to a fake host with `n` VCPUs. */
static struct crosvm *connect_mock(int host_fd_out[1], int plugin_fd, int n,
                                   struct host_vcpu *vcpus) {
  int fds[32] = {0};
  for (int i = 0; i < n; i++) {
    int req[2], resp[2];
    if (pipe2(req, O_CLOEXEC) || pipe2(resp, O_CLOEXEC)) abort();
    vcpus[i].req_rd = req[0];
    vcpus[i].resp_wr = resp[1];
    fds[2 * i] = req[1];
    fds[2 * i + 1] = resp[0];
  }
  host_send(host_fd_out[0], 0, 18, NULL, fds, 2 * n);
  for (int i = 0; i < 2 * n; i++) close(fds[i]);
  set_socket_env(plugin_fd);
  struct crosvm *c = NULL;
  CHECK_RC(crosvm_connect(&c), 0);
  size_t len = 99;
  CHECK(host_recv(host_fd_out[0], 17, &len, NULL) != NULL && len == 0);
  return c;
}

/* A plugin connected to a mock host that offers `n` VCPUs (at most 2). */
struct mock {
  int base;               /* descriptors open before it, for the leak check */
  int sv[2];              /* the main connection: [0] the host's end, [1] the plugin's */
  int n;
  struct host_vcpu hv[2]; /* the host's ends of the VCPU pipes */
};

/* Connects; with `vcpu`, also gets VCPU 0 (left NULL if that fails). NULL if the connect fails. */
static struct crosvm *mock_connect(struct mock *m, int n, struct crosvm_vcpu **vcpu) {
  m->base = count_fds();
  m->n = n;
  make_pair(m->sv);
  struct crosvm *c = connect_mock(&m->sv[0], m->sv[1], n, m->hv);
  if (c && vcpu) CHECK_RC(crosvm_get_vcpu(c, 0, vcpu), 0);
  return c;
}

/* Closes the host's ends (the plugin has destroyed its connection) and checks that nothing is left open. */
static void mock_close(struct mock *m) {
  close(m->sv[0]);
  for (int i = 0; i < m->n; i++) {
    close(m->hv[i].req_rd);
    close(m->hv[i].resp_wr);
  }
  CHECK(count_fds() == m->base);
}

static void test_main_connection(void) {
  struct mock m;
  struct crosvm *c = mock_connect(&m, 2, NULL);
  if (!c) return;
  const uint8_t *sub;
  size_t len;

  /* VCPU handles. */
  struct crosvm_vcpu *v0 = NULL, *v1 = NULL, *again = NULL;
  CHECK_RC(crosvm_get_vcpu(c, 0, &v0), 0);
  CHECK_RC(crosvm_get_vcpu(c, 1, &v1), 0);
  CHECK_RC(crosvm_get_vcpu(c, 0, &again), 0);
  CHECK(v0 && v1 && v0 != v1 && again == v0);
  CHECK_RC(crosvm_get_vcpu(c, 2, &again), -ENOENT);

  /* check_extension */
  struct pb ext = {.len = 0};
  pb_uint(&ext, 1, 1);
  host_send(m.sv[0], 0, 6, &ext, NULL, 0);
  bool has = false;
  CHECK_RC(crosvm_check_extension(c, 77, &has), 0);
  CHECK(has);
  sub = host_recv(m.sv[0], 5, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 77);
  host_send(m.sv[0], 0, 6, NULL, NULL, 0);
  CHECK_RC(crosvm_check_extension(c, 78, &has), 0);
  CHECK(!has);
  host_recv(m.sv[0], 5, NULL, NULL);

  /* VM-level enable_capability is never supported; nothing is sent. */
  uint64_t args[4] = {0};
  CHECK_RC(crosvm_enable_capability(c, 1, 0, args), -EINVAL);
  CHECK(nothing_sent(m.sv[0]));

  /* Shutdown eventfd: exactly one descriptor. */
  int efd = eventfd(0, EFD_CLOEXEC);
  host_send(m.sv[0], 0, 5, NULL, &efd, 1);
  int got = crosvm_get_shutdown_eventfd(c);
  CHECK(got >= 0 && got != efd);
  if (got >= 0) {
    uint64_t one = 1, val = 0;
    CHECK(write(efd, &one, 8) == 8);
    CHECK(read(got, &val, 8) == 8 && val == 1);
    CHECK((fcntl(got, F_GETFD) & FD_CLOEXEC) != 0); /* MSG_CMSG_CLOEXEC */
    close(got);
  }
  CHECK(host_recv(m.sv[0], 4, NULL, NULL) != NULL);
  int base2 = count_fds();
  host_send(m.sv[0], 0, 5, NULL, NULL, 0);
  CHECK_RC(crosvm_get_shutdown_eventfd(c), -EPROTO);
  host_recv(m.sv[0], 4, NULL, NULL);
  int two[2] = {efd, efd};
  host_send(m.sv[0], 0, 5, NULL, two, 2);
  CHECK_RC(crosvm_get_shutdown_eventfd(c), -EPROTO);
  host_recv(m.sv[0], 4, NULL, NULL);
  CHECK(count_fds() == base2);
  close(efd);

  /* Supported/emulated CPUID: fill what fits, -E2BIG, flags from has_index. */
  struct pb cpuid = {.len = 0};
  for (int i = 0; i < 3; i++) {
    struct pb e = {.len = 0};
    pb_uint(&e, 1, 0x100 + i);
    if (i == 1) pb_uint(&e, 3, 1);
    pb_uint(&e, 4, 7);
    pb_uint(&e, 5, 0xa0 + i);
    pb_uint(&e, 6, 0xb0);
    pb_uint(&e, 7, 0xc0);
    pb_uint(&e, 8, 0xd0);
    pb_msg(&cpuid, 1, &e);
  }
  struct kvm_cpuid_entry2 entries[4];
  uint32_t count = 0;
  memset(entries, 0xee, sizeof(entries));
  host_send(m.sv[0], 0, 7, &cpuid, NULL, 0);
  CHECK_RC(crosvm_get_supported_cpuid(c, 2, entries, &count), -E2BIG);
  CHECK(count == 3 && entries[1].function == 0x101 && entries[2].function == 0xeeeeeeee);
  CHECK(host_recv(m.sv[0], 6, NULL, NULL) != NULL);
  host_send(m.sv[0], 0, 8, &cpuid, NULL, 0);
  CHECK_RC(crosvm_get_emulated_cpuid(c, 4, entries, &count), 0);
  CHECK(host_recv(m.sv[0], 7, NULL, NULL) != NULL);
  CHECK(count == 3);
  CHECK(entries[0].function == 0x100 && entries[0].flags == 0 && entries[0].index == 7);
  CHECK(entries[1].flags == KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
  CHECK(entries[2].eax == 0xa2 && entries[2].ebx == 0xb0 && entries[2].ecx == 0xc0 &&
        entries[2].edx == 0xd0);

  /* MSR index list (packed repeated uint32). */
  struct pb msrs = {.len = 0}, packed = {.len = 0};
  pb_varint(&packed, 0x10);
  pb_varint(&packed, 0x174);
  pb_varint(&packed, 0xc0000080);
  pb_bytes(&msrs, 1, packed.buf, packed.len);
  uint32_t idx[3] = {0};
  host_send(m.sv[0], 0, 9, &msrs, NULL, 0);
  CHECK_RC(crosvm_get_msr_index_list(c, 1, idx, &count), -E2BIG);
  CHECK(count == 3 && idx[0] == 0x10 && idx[1] == 0);
  CHECK(host_recv(m.sv[0], 8, NULL, NULL) != NULL);
  host_send(m.sv[0], 0, 9, &msrs, NULL, 0);
  CHECK_RC(crosvm_get_msr_index_list(c, 3, idx, &count), 0);
  CHECK(count == 3 && idx[2] == 0xc0000080);
  host_recv(m.sv[0], 8, NULL, NULL);

  /* Net config: addresses come out in network byte order. */
  struct pb net = {.len = 0};
  uint8_t mac[6] = {2, 3, 4, 5, 6, 7};
  pb_bytes(&net, 1, mac, 6);
  pb_fixed32(&net, 2, 0xc0a80a01);  /* 192.168.10.1 */
  pb_fixed32(&net, 3, 0xffffff00);  /* 255.255.255.0 */
  int tap = eventfd(0, 0);
  host_send(m.sv[0], 0, 10, &net, &tap, 1);
  struct crosvm_net_config cfg;
  CHECK_RC(crosvm_net_get_config(c, &cfg), 0);
  CHECK(host_recv(m.sv[0], 9, NULL, NULL) != NULL);
  const uint8_t *ip = (const uint8_t *)&cfg.host_ip, *nm = (const uint8_t *)&cfg.netmask;
  CHECK(ip[0] == 192 && ip[1] == 168 && ip[2] == 10 && ip[3] == 1);
  CHECK(nm[0] == 255 && nm[3] == 0);
  CHECK(memcmp(cfg.host_mac_address, mac, 6) == 0);
  CHECK(cfg.tap_fd >= 0 && cfg.tap_fd != tap);
  close(cfg.tap_fd);
  base2 = count_fds();
  struct pb badnet = {.len = 0};
  pb_bytes(&badnet, 1, mac, 5);
  host_send(m.sv[0], 0, 10, &badnet, &tap, 1);
  CHECK_RC(crosvm_net_get_config(c, &cfg), -EPROTO);
  host_recv(m.sv[0], 9, NULL, NULL);
  host_send(m.sv[0], ENODATA, 10, NULL, NULL, 0);
  CHECK_RC(crosvm_net_get_config(c, &cfg), -ENODATA);
  host_recv(m.sv[0], 9, NULL, NULL);
  CHECK(count_fds() == base2);
  close(tap);

  /* Reserve ranges. */
  host_send(m.sv[0], 0, 11, NULL, NULL, 0);
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, 0xfeed0000, 0x1000), 0);
  sub = host_recv(m.sv[0], 10, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 1 && pb_get(sub, len, 2) == 0xfeed0000 &&
        pb_get(sub, len, 3) == 0x1000 && pb_get(sub, len, 4) == 0);
  host_send(m.sv[0], 0, 11, NULL, NULL, 0);
  CHECK_RC(crosvm_reserve_async_write_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x80, 1), 0);
  sub = host_recv(m.sv[0], 10, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 0 && pb_get(sub, len, 4) == 1);
  host_send(m.sv[0], EPERM, 11, NULL, NULL, 0);
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x80, 1), -EPERM);
  host_recv(m.sv[0], 10, NULL, NULL);
  CHECK_RC(crosvm_reserve_range(c, 7, 0x80, 1), -EINVAL);
  CHECK(nothing_sent(m.sv[0]));

  /* set_irq */
  host_send(m.sv[0], 0, 12, NULL, NULL, 0);
  CHECK_RC(crosvm_set_irq(c, 9, true), 0);
  sub = host_recv(m.sv[0], 11, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 9 && pb_get(sub, len, 2) == 1);

  /* set_irq_routing */
  struct crosvm_irq_route routes[2];
  memset(routes, 0, sizeof(routes));
  routes[0].irq_id = 4;
  routes[0].kind = CROSVM_IRQ_ROUTE_IRQCHIP;
  routes[0].irqchip.irqchip = 1;
  routes[0].irqchip.pin = 3;
  routes[1].irq_id = 24;
  routes[1].kind = CROSVM_IRQ_ROUTE_MSI;
  routes[1].msi.address = 0xfee00000;
  routes[1].msi.data = 0x41;
  host_send(m.sv[0], 0, 13, NULL, NULL, 0);
  CHECK_RC(crosvm_set_irq_routing(c, 2, routes), 0);
  sub = host_recv(m.sv[0], 12, &len, NULL);
  {
    /* Two Route entries, in order: the irqchip one, then the MSI one. */
    struct field r0, r1, x;
    CHECK(sub && pb_find_nth(sub, len, 1, 0, &r0) && pb_find_nth(sub, len, 1, 1, &r1) &&
          !pb_find_nth(sub, len, 1, 2, &x));
    if (sub && pb_find_nth(sub, len, 1, 1, &r1) && pb_find_nth(sub, len, 1, 0, &r0)) {
      CHECK(pb_get(r0.p, r0.len, 1) == 4 && pb_find(r0.p, r0.len, 2, &x) &&
            pb_get(x.p, x.len, 1) == 1 && pb_get(x.p, x.len, 2) == 3);
      CHECK(pb_get(r1.p, r1.len, 1) == 24 && pb_find(r1.p, r1.len, 3, &x) &&
            pb_get(x.p, x.len, 1) == 0xfee00000 && pb_get(x.p, x.len, 2) == 0x41);
    }
  }
  routes[1].kind = 5;
  CHECK_RC(crosvm_set_irq_routing(c, 2, routes), -EINVAL);
  CHECK(nothing_sent(m.sv[0]));
  host_send(m.sv[0], 0, 13, NULL, NULL, 0);
  CHECK_RC(crosvm_set_irq_routing(c, 0, NULL), 0);
  sub = host_recv(m.sv[0], 12, &len, NULL);
  CHECK(sub && len == 0);

  /* Call hints: validation, encoding, clearing. */
  struct crosvm_hint_detail details[CROSVM_MAX_HINT_DETAIL_COUNT + 1];
  memset(details, 0, sizeof(details));
  details[0].match_rax = true;
  details[0].rax = 0x1234;
  details[0].send_sregs = true;
  details[1].send_debugregs = true;
  struct crosvm_hint hint;
  memset(&hint, 0, sizeof(hint));
  hint.address_space = CROSVM_ADDRESS_SPACE_IOPORT;
  hint.address = 0x5000;
  hint.address_flags = CROSVM_HINT_ON_WRITE;
  hint.details_count = 2;
  hint.details = details;
  host_send(m.sv[0], 0, 20, NULL, NULL, 0);
  CHECK_RC(crosvm_set_hypercall_hint(c, 1, &hint), 0);
  sub = host_recv(m.sv[0], 19, &len, NULL);
  CHECK(sub && pb_get(sub, len, 2) == 0x5000 && pb_get(sub, len, 3) == 1);
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 4, &f) && pb_get(f.p, f.len, 10) == 1);
  }
  struct crosvm_hint bad = hint;
  bad.hint_version = 1;
  CHECK_RC(crosvm_set_hypercall_hint(c, 1, &bad), -EINVAL);
  bad = hint;
  bad._reserved = 1;
  CHECK_RC(crosvm_set_hypercall_hint(c, 1, &bad), -EINVAL);
  bad = hint;
  bad.details_count = CROSVM_MAX_HINT_DETAIL_COUNT + 1;
  CHECK_RC(crosvm_set_hypercall_hint(c, 1, &bad), -EINVAL);
  struct crosvm_hint pair[2] = {hint, hint};
  CHECK_RC(crosvm_set_hypercall_hint(c, 2, pair), -EINVAL);
  CHECK(nothing_sent(m.sv[0]));
  host_send(m.sv[0], 0, 20, NULL, NULL, 0);
  CHECK_RC(crosvm_set_hypercall_hint(c, 0, NULL), 0);
  sub = host_recv(m.sv[0], 19, &len, NULL);
  CHECK(sub && pb_get(sub, len, 2) == 0);

  /* VM state: raw structs, exact sizes. */
  struct kvm_pic_state pic;
  memset(&pic, 0, sizeof(pic));
  pic.irq_base = 0x20;
  struct pb st = {.len = 0};
  pb_bytes(&st, 1, &pic, sizeof(pic));
  host_send(m.sv[0], 0, 14, &st, NULL, 0);
  struct kvm_pic_state pic2;
  CHECK_RC(crosvm_get_pic_state(c, false, &pic2), 0);
  CHECK(pic2.irq_base == 0x20);
  sub = host_recv(m.sv[0], 13, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 1); /* PIC1 = secondary */
  struct pb short_st = {.len = 0};
  pb_bytes(&short_st, 1, &pic, sizeof(pic) - 1);
  host_send(m.sv[0], 0, 14, &short_st, NULL, 0);
  CHECK_RC(crosvm_get_pic_state(c, true, &pic2), -EPROTO);
  host_recv(m.sv[0], 13, NULL, NULL);
  host_send(m.sv[0], 0, 15, NULL, NULL, 0);
  CHECK_RC(crosvm_set_pic_state(c, true, &pic), 0);
  sub = host_recv(m.sv[0], 14, &len, NULL);
  {
    struct field f;
    CHECK(sub && pb_get(sub, len, 1) == 0 && pb_find(sub, len, 2, &f) &&
          f.len == sizeof(pic) && memcmp(f.p, &pic, sizeof(pic)) == 0);
  }
  struct kvm_ioapic_state ioapic;
  struct kvm_pit_state2 pit;
  struct kvm_clock_data clock;
  struct {
    int set;
    void *data;
    size_t size;
  } vm_states[] = {{2, &ioapic, sizeof(ioapic)}, {3, &pit, sizeof(pit)}, {4, &clock, sizeof(clock)}};
  for (int i = 0; i < 3; i++) memset(vm_states[i].data, 0, vm_states[i].size);
  clock.clock = 123456789;
  for (int i = 0; i < 3; i++) {
    struct pb s = {.len = 0};
    pb_bytes(&s, 1, vm_states[i].data, vm_states[i].size);
    host_send(m.sv[0], 0, 14, &s, NULL, 0);
    host_send(m.sv[0], 0, 15, NULL, NULL, 0);
    int rc1 = i == 0 ? crosvm_get_ioapic_state(c, &ioapic)
              : i == 1 ? crosvm_get_pit_state(c, &pit)
                       : crosvm_get_clock(c, &clock);
    sub = host_recv(m.sv[0], 13, &len, NULL);
    CHECK(rc1 == 0 && sub && (int)pb_get(sub, len, 1) == vm_states[i].set);
    int rc2 = i == 0 ? crosvm_set_ioapic_state(c, &ioapic)
              : i == 1 ? crosvm_set_pit_state(c, &pit)
                       : crosvm_set_clock(c, &clock);
    sub = host_recv(m.sv[0], 14, &len, NULL);
    struct field f;
    CHECK(rc2 == 0 && sub && (int)pb_get(sub, len, 1) == vm_states[i].set &&
          pb_find(sub, len, 2, &f) && f.len == vm_states[i].size);
  }
  CHECK(clock.clock == 123456789);

  /* Identity map, pause, start. */
  host_send(m.sv[0], 0, 16, NULL, NULL, 0);
  CHECK_RC(crosvm_set_identity_map_addr(c, 0xfffbc000), 0);
  sub = host_recv(m.sv[0], 15, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 0xfffbc000);
  host_send(m.sv[0], 0, 17, NULL, NULL, 0);
  CHECK_RC(crosvm_pause_vcpus(c, 3, (void *)0x1234567890ull), 0);
  sub = host_recv(m.sv[0], 16, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == 3 && pb_get(sub, len, 2) == 0x1234567890ull);
  host_send(m.sv[0], 0, 19, NULL, NULL, 0);
  CHECK_RC(crosvm_start(c), 0);
  CHECK(host_recv(m.sv[0], 18, NULL, NULL) != NULL);
  host_send(m.sv[0], EINVAL, 19, NULL, NULL, 0);
  CHECK_RC(crosvm_start(c), -EINVAL);
  host_recv(m.sv[0], 18, NULL, NULL);

  /* A second connection shares the VCPUs; object ids are process-wide. */
  int sv2[2];
  make_pair(sv2);
  host_send(m.sv[0], 0, 4, NULL, &sv2[1], 1);
  close(sv2[1]);
  struct crosvm *c2 = NULL;
  CHECK_RC(crosvm_new_connection(c, &c2), 0);
  CHECK(host_recv(m.sv[0], 3, NULL, NULL) != NULL);
  struct crosvm_vcpu *w0 = NULL;
  CHECK_RC(crosvm_get_vcpu(c2, 0, &w0), 0);
  CHECK(w0 == v0);

  /* IO events: datamatch widths, little-endian, NULL = any. */
  int ev = eventfd(0, EFD_CLOEXEC);
  host_send(m.sv[0], 0, 2, NULL, &ev, 1);
  host_send(sv2[0], 0, 2, NULL, &ev, 1);
  struct crosvm_io *io1 = NULL, *io2 = NULL;
  uint8_t match[2] = {0x34, 0x12};
  CHECK_RC(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x60, 2, match, &io1), 0);
  sub = host_recv(m.sv[0], 1, &len, NULL);
  uint64_t id1 = 0, id2 = 0;
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 2, &f) && pb_get(f.p, f.len, 1) == 0 &&
          pb_get(f.p, f.len, 2) == 0x60 && pb_get(f.p, f.len, 3) == 2 &&
          pb_get(f.p, f.len, 4) == 0x1234);
    id1 = sub ? pb_get(sub, len, 1) : 0;
  }
  CHECK_RC(crosvm_create_io_event(c2, CROSVM_ADDRESS_SPACE_MMIO, 0xd0000000, 4, NULL, &io2), 0);
  sub = host_recv(sv2[0], 1, &len, NULL);
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 2, &f) && pb_get(f.p, f.len, 1) == 1 &&
          pb_get(f.p, f.len, 3) == 0 && pb_get(f.p, f.len, 4) == 0);
    id2 = sub ? pb_get(sub, len, 1) : 0;
  }
  CHECK(id1 != id2);
  CHECK(io1 && io2 && crosvm_io_event_fd(io1) >= 0 &&
        crosvm_io_event_fd(io1) != crosvm_io_event_fd(io2));
  CHECK_RC(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x60, 3, match, &io1), -EINVAL);
  CHECK(nothing_sent(m.sv[0]));
  close(ev);
  /* Destroy through the other connection: ids are global. */
  host_send(sv2[0], 0, 3, NULL, NULL, 0);
  CHECK_RC(crosvm_destroy_io_event(c2, &io1), 0);
  CHECK(io1 == NULL);
  sub = host_recv(sv2[0], 2, &len, NULL);
  CHECK(sub && pb_get(sub, len, 1) == id1);
  host_send(m.sv[0], ENOENT, 3, NULL, NULL, 0);
  CHECK_RC(crosvm_destroy_io_event(c, &io2), -ENOENT); /* freed anyway */
  CHECK(io2 == NULL);
  host_recv(m.sv[0], 2, NULL, NULL);

  /* Memory: the memfd travels with the request; dirty log sizes. */
  int mfd = memfd_create("mock", MFD_CLOEXEC);
  CHECK(ftruncate(mfd, 0x10000) == 0);
  host_send(m.sv[0], 0, 2, NULL, NULL, 0);
  struct crosvm_memory *mem = NULL;
  CHECK_RC(crosvm_create_memory(c, mfd, 0, 0x10000, 0x100000, false, true, &mem), 0);
  int sent_fd = -1;
  sub = host_recv(m.sv[0], 1, &len, &sent_fd);
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 3, &f) && pb_get(f.p, f.len, 2) == 0x100000 &&
          pb_get(f.p, f.len, 3) == 0x10000 && pb_get(f.p, f.len, 4) == 0 &&
          pb_get(f.p, f.len, 5) == 1);
    struct stat a, b;
    CHECK(sent_fd >= 0 && fstat(sent_fd, &a) == 0 && fstat(mfd, &b) == 0 &&
          a.st_ino == b.st_ino);
    if (sent_fd >= 0) close(sent_fd);
  }
  CHECK_RC(crosvm_create_memory(c, -1, 0, 0x1000, 0, false, false, &mem), -EBADF);
  uint8_t log[4] = {0xee, 0xee, 0xee, 0xee};
  struct pb bitmap = {.len = 0};
  uint8_t bits[2] = {0x05, 0x80};
  pb_bytes(&bitmap, 1, bits, 2);
  host_send(m.sv[0], 0, 101, &bitmap, NULL, 0);
  CHECK_RC(crosvm_memory_get_dirty_log(c, mem, log), 0);
  CHECK(log[0] == 0x05 && log[1] == 0x80 && log[2] == 0xee);
  host_recv(m.sv[0], 101, NULL, NULL);
  struct pb bigmap = {.len = 0};
  uint8_t bits3[3] = {0};
  pb_bytes(&bigmap, 1, bits3, 3);
  host_send(m.sv[0], 0, 101, &bigmap, NULL, 0);
  CHECK_RC(crosvm_memory_get_dirty_log(c, mem, log), -EPROTO);
  host_recv(m.sv[0], 101, NULL, NULL);
  host_send(m.sv[0], 0, 3, NULL, NULL, 0);
  CHECK_RC(crosvm_destroy_memory(c, &mem), 0);
  CHECK(mem == NULL);
  host_recv(m.sv[0], 2, NULL, NULL);
  close(mfd);

  /* IRQ events: two descriptors, resample requested. */
  int tr = eventfd(0, 0), rs = eventfd(0, 0);
  int irqfds[2] = {tr, rs};
  host_send(m.sv[0], 0, 2, NULL, irqfds, 2);
  struct crosvm_irq *irq = NULL;
  CHECK_RC(crosvm_create_irq_event(c, 5, &irq), 0);
  sub = host_recv(m.sv[0], 1, &len, NULL);
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 4, &f) && pb_get(f.p, f.len, 1) == 5 &&
          pb_get(f.p, f.len, 2) == 1);
  }
  CHECK(irq && crosvm_irq_event_get_fd(irq) >= 0 && crosvm_irq_event_get_resample_fd(irq) >= 0 &&
        crosvm_irq_event_get_fd(irq) != crosvm_irq_event_get_resample_fd(irq));
  if (irq) {
    uint64_t one = 1, val = 0;
    CHECK(write(crosvm_irq_event_get_fd(irq), &one, 8) == 8);
    CHECK(read(tr, &val, 8) == 8 && val == 1);
  }
  base2 = count_fds();
  host_send(m.sv[0], 0, 2, NULL, irqfds, 1); /* one short */
  struct crosvm_irq *irq2 = NULL;
  CHECK_RC(crosvm_create_irq_event(c, 6, &irq2), -EPROTO);
  host_recv(m.sv[0], 1, NULL, NULL);
  CHECK(count_fds() == base2 && irq2 == NULL);
  close(tr);
  close(rs);
  host_send(m.sv[0], 0, 3, NULL, NULL, 0);
  CHECK_RC(crosvm_destroy_irq_event(c, &irq), 0);
  CHECK(irq == NULL);
  host_recv(m.sv[0], 2, NULL, NULL);

  /* A request the host answers with an unknown member and ENOTTY. */
  host_send(m.sv[0], ENOTTY, 0, NULL, NULL, 0);
  CHECK_RC(crosvm_set_irq(c, 1, false), -ENOTTY);
  host_recv(m.sv[0], 11, NULL, NULL);

  CHECK_RC(crosvm_destroy_connection(&c2), 0);
  CHECK(c2 == NULL);
  close(sv2[0]);
  CHECK_RC(crosvm_destroy_connection(&c), 0);
  CHECK(c == NULL);
  mock_close(&m);
}

/* Writes `len` bytes in two pieces, with a pause between them. */
struct slow_write {
  int fd;
  const uint8_t *data;
  size_t len;
  size_t split;
};

static void *slow_writer(void *arg) {
  struct slow_write *w = arg;
  size_t done = 0;
  while (done < w->split) {
    ssize_t n = write(w->fd, w->data + done, w->split - done);
    if (n <= 0) return NULL;
    done += (size_t)n;
  }
  usleep(50 * 1000);
  while (done < w->len) {
    ssize_t n = write(w->fd, w->data + done, w->len - done);
    if (n <= 0) return NULL;
    done += (size_t)n;
  }
  return NULL;
}

static void test_vcpu(void) {
  struct mock m;
  struct crosvm_vcpu *vcpu = NULL;
  struct crosvm *c = mock_connect(&m, 1, &vcpu);
  if (!vcpu) return;
  struct host_vcpu *h = &m.hv[0];
  struct crosvm_vcpu_event evt;
  const uint8_t *sub;
  size_t len;

  /* Two pushed reasons in one write: INIT, then an IO write. */
  struct pb two = {.len = 0};
  struct pb w = wait_of(1, NULL);
  vcpu_frame(&two, 0, 2, &w);
  struct pb io = {.len = 0};
  pb_uint(&io, 1, 0);
  pb_uint(&io, 2, 0x3f8);
  pb_uint(&io, 3, 1);
  pb_bytes(&io, 5, "A", 1);
  w = wait_of(2, &io);
  vcpu_frame(&two, 0, 2, &w);
  CHECK(write(h->resp_wr, two.buf, two.len) == (ssize_t)two.len);

  CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), 0);
  CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_INIT);
  CHECK(vcpu_read_request(h) && req_member(1, &len) != NULL && len == 0); /* wait */

  /* Set-up on INIT: registers are deferred until resume. */
  struct kvm_regs regs;
  memset(&regs, 0, sizeof(regs));
  regs.rip = 0x1000;
  regs.rflags = 2;
  CHECK_RC(crosvm_vcpu_set_regs(vcpu, &regs), 0);
  struct kvm_regs back;
  CHECK_RC(crosvm_vcpu_get_regs(vcpu, &back), 0);
  CHECK(back.rip == 0x1000);
  CHECK(nothing_sent(h->req_rd));
  struct kvm_debugregs dregs;
  memset(&dregs, 0, sizeof(dregs));
  dregs.db[0] = 0xabc;
  CHECK_RC(crosvm_vcpu_set_debugregs(vcpu, &dregs), 0);
  CHECK(nothing_sent(h->req_rd));
  CHECK_RC(crosvm_vcpu_resume(vcpu), 0);
  CHECK(vcpu_read_request(h));
  sub = req_member(2, &len);
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 2, &f) && f.len == sizeof(regs) &&
          memcmp(f.p, &regs, sizeof(regs)) == 0);
    CHECK(sub && !pb_find(sub, len, 3, &f)); /* no sregs were set */
    CHECK(sub && pb_find(sub, len, 4, &f) && f.len == sizeof(dregs));
    CHECK(sub && !pb_find(sub, len, 1, &f)); /* nothing to read back */
  }

  /* The already-buffered IO write: no further read needed. */
  CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), 0);
  CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS);
  CHECK(evt.io_access.address_space == CROSVM_ADDRESS_SPACE_IOPORT &&
        evt.io_access.address == 0x3f8 && evt.io_access.is_write == 1 &&
        evt.io_access.no_resume == 0 && evt.io_access.length == 1 &&
        evt.io_access.data && evt.io_access.data[0] == 'A');
  CHECK(nothing_sent(h->req_rd)); /* wait is only sent once */
  /* Not cached now (the VCPU ran): get_regs asks the host. */
  struct pb st = {.len = 0};
  regs.rax = 77;
  pb_bytes(&st, 1, &regs, sizeof(regs));
  vcpu_push(h, 0, 4, &st);
  CHECK_RC(crosvm_vcpu_get_regs(vcpu, &back), 0);
  CHECK(back.rax == 77);
  CHECK(vcpu_read_request(h));
  sub = req_member(3, &len);
  CHECK(sub && pb_get(sub, len, 1) == 0); /* REGS */
  CHECK_RC(crosvm_vcpu_resume(vcpu), 0);
  CHECK(vcpu_read_request(h));
  sub = req_member(2, &len);
  CHECK(sub && len == 0); /* an empty resume */

  /* A hinted IO read: regs and sregs come with it, get needs no round trip. */
  struct kvm_sregs sregs;
  memset(&sregs, 0, sizeof(sregs));
  sregs.cs.selector = 0x1234;
  regs.rax = 0x5555;
  struct pb rd = {.len = 0};
  pb_uint(&rd, 1, 1);
  pb_uint(&rd, 2, 0xd0000000);
  uint8_t zeros[4] = {0};
  pb_bytes(&rd, 5, zeros, 4);
  pb_bytes(&rd, 6, &regs, sizeof(regs));
  pb_bytes(&rd, 7, &sregs, sizeof(sregs));
  CHECK_RC(push_and_wait(h, 2, &rd, vcpu, &evt), 0);
  CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS &&
        evt.io_access.address_space == CROSVM_ADDRESS_SPACE_MMIO &&
        evt.io_access.is_write == 0 && evt.io_access.length == 4);
  CHECK_RC(crosvm_vcpu_get_regs(vcpu, &back), 0);
  CHECK(back.rax == 0x5555);
  struct kvm_sregs sback;
  CHECK_RC(crosvm_vcpu_get_sregs(vcpu, &sback), 0);
  CHECK(sback.cs.selector == 0x1234);
  CHECK(nothing_sent(h->req_rd));
  /* Debug registers were not pushed: a round trip. */
  struct pb dst = {.len = 0};
  pb_bytes(&dst, 1, &dregs, sizeof(dregs));
  vcpu_push(h, 0, 4, &dst);
  struct kvm_debugregs dback;
  CHECK_RC(crosvm_vcpu_get_debugregs(vcpu, &dback), 0);
  CHECK(dback.db[0] == 0xabc);
  CHECK(vcpu_read_request(h));
  sub = req_member(3, &len);
  CHECK(sub && pb_get(sub, len, 1) == 3); /* DEBUGREGS */
  /* Answer the read, change rax; both go with the resume. */
  evt.io_access.data[0] = 0x78;
  evt.io_access.data[1] = 0x56;
  evt.io_access.data[2] = 0x34;
  evt.io_access.data[3] = 0x12;
  back.rax = 6;
  CHECK_RC(crosvm_vcpu_set_regs(vcpu, &back), 0);
  struct kvm_regs again;
  CHECK_RC(crosvm_vcpu_get_regs(vcpu, &again), 0);
  CHECK(again.rax == 6);
  CHECK_RC(crosvm_vcpu_resume(vcpu), 0);
  CHECK(vcpu_read_request(h));
  sub = req_member(2, &len);
  {
    struct field f;
    uint8_t want[4] = {0x78, 0x56, 0x34, 0x12};
    CHECK(sub && pb_find(sub, len, 1, &f) && f.len == 4 && memcmp(f.p, want, 4) == 0);
    struct kvm_regs sent;
    memset(&sent, 0, sizeof(sent));
    CHECK(sub && pb_find(sub, len, 2, &f) && f.len == sizeof(sent));
    if (sub && pb_find(sub, len, 2, &f) && f.len == sizeof(sent)) memcpy(&sent, f.p, sizeof(sent));
    CHECK(sent.rax == 6);
    CHECK(sub && !pb_find(sub, len, 3, &f));
  }

  /* Pushed registers of the wrong size are a protocol error. */
  struct pb badrd = {.len = 0};
  pb_uint(&badrd, 2, 0x60);
  pb_bytes(&badrd, 6, &regs, sizeof(regs) - 8);
  CHECK_RC(push_and_wait(h, 2, &badrd, vcpu, &evt), -EPROTO);

  /* PAUSED carries the user pointer; HCALL gives a result slot. */
  struct pb user = {.len = 0};
  pb_uint(&user, 1, 0xfeedbeefull);
  CHECK_RC(push_and_wait(h, 3, &user, vcpu, &evt), 0);
  CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_PAUSED && evt.user == (void *)0xfeedbeefull);
  CHECK_RC(crosvm_vcpu_resume(vcpu), 0);
  CHECK(vcpu_read_request(h));

  struct pb hc = {.len = 0};
  pb_uint(&hc, 1, 0x10001);
  pb_uint(&hc, 2, 0x22);
  pb_uint(&hc, 3, 0x33);
  CHECK_RC(push_and_wait(h, 4, &hc, vcpu, &evt), 0);
  CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_HYPERV_HCALL && evt.hyperv_call.input == 0x10001 &&
        evt.hyperv_call.params[0] == 0x22 && evt.hyperv_call.params[1] == 0x33 &&
        evt.hyperv_call.result != NULL);
  if (evt.hyperv_call.result) *evt.hyperv_call.result = 0x0102030405060708ull;
  CHECK_RC(crosvm_vcpu_resume(vcpu), 0);
  CHECK(vcpu_read_request(h));
  sub = req_member(2, &len);
  {
    struct field f;
    uint8_t want[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    CHECK(sub && pb_find(sub, len, 1, &f) && f.len == 8 && memcmp(f.p, want, 8) == 0);
  }

  struct pb syn = {.len = 0};
  pb_uint(&syn, 1, 0x40000080);
  pb_uint(&syn, 2, 1);
  pb_uint(&syn, 3, 0x2000);
  pb_uint(&syn, 4, 0x3000);
  CHECK_RC(push_and_wait(h, 5, &syn, vcpu, &evt), 0);
  CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_HYPERV_SYNIC && evt.hyperv_synic.msr == 0x40000080 &&
        evt.hyperv_synic.control == 1 && evt.hyperv_synic.evt_page == 0x2000 &&
        evt.hyperv_synic.msg_page == 0x3000);
  CHECK_RC(crosvm_vcpu_resume(vcpu), 0);
  CHECK(vcpu_read_request(h));

  /* Async-write notifications queue up; several arrive in one read. */
  struct pb many = {.len = 0};
  for (int i = 0; i < 5; i++) {
    struct pb a = {.len = 0};
    pb_uint(&a, 2, 0x80);
    pb_uint(&a, 3, 1);
    pb_uint(&a, 4, 1);
    uint8_t b = (uint8_t)i;
    pb_bytes(&a, 5, &b, 1);
    w = wait_of(2, &a);
    vcpu_frame(&many, 0, 2, &w);
  }
  CHECK(write(h->resp_wr, many.buf, many.len) == (ssize_t)many.len);
  for (int i = 0; i < 5; i++) {
    CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), 0);
    CHECK(evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS && evt.io_access.no_resume == 1 &&
          evt.io_access.data[0] == i);
  }
  CHECK(nothing_sent(h->req_rd));

  /* A wait answer that is an error, or not a wait. */
  vcpu_push(h, EPROTO, 2, NULL);
  CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), -EPROTO);
  vcpu_push(h, 0, 5, NULL);
  CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), -EPROTO);
  vcpu_push(h, 0, 0, NULL); /* an empty message */
  CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), -EPROTO);

  /* Immediate state: FPU, XCRs, LAPIC, MP, events. */
  struct kvm_fpu fpu;
  memset(&fpu, 0, sizeof(fpu));
  fpu.fcw = 0x37f;
  struct pb fst = {.len = 0};
  pb_bytes(&fst, 1, &fpu, sizeof(fpu));
  vcpu_push(h, 0, 4, &fst);
  struct kvm_fpu fback;
  CHECK_RC(crosvm_vcpu_get_fpu(vcpu, &fback), 0);
  CHECK(fback.fcw == 0x37f);
  CHECK(vcpu_read_request(h) && (sub = req_member(3, &len)) && pb_get(sub, len, 1) == 2);
  vcpu_push(h, 0, 5, NULL);
  CHECK_RC(crosvm_vcpu_set_fpu(vcpu, &fpu), 0);
  CHECK(vcpu_read_request(h) && (sub = req_member(4, &len)) && pb_get(sub, len, 1) == 2);
  {
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events events;
    struct {
      int set;
      void *p;
      size_t size;
    } sets[] = {{6, &xcrs, sizeof(xcrs)}, {4, &lapic, sizeof(lapic)},
                {5, &mp, sizeof(mp)}, {7, &events, sizeof(events)}};
    for (int i = 0; i < 4; i++) memset(sets[i].p, 0, sets[i].size);
    for (int i = 0; i < 4; i++) {
      struct pb s = {.len = 0};
      pb_bytes(&s, 1, sets[i].p, sets[i].size);
      vcpu_push(h, 0, 4, &s);
      int rc = i == 0   ? crosvm_vcpu_get_xcrs(vcpu, &xcrs)
               : i == 1 ? crosvm_vcpu_get_lapic_state(vcpu, &lapic)
               : i == 2 ? crosvm_vcpu_get_mp_state(vcpu, &mp)
                        : crosvm_vcpu_get_vcpu_events(vcpu, &events);
      CHECK(rc == 0);
      CHECK(vcpu_read_request(h) && (sub = req_member(3, &len)) &&
            (int)pb_get(sub, len, 1) == sets[i].set);
      vcpu_push(h, 0, 5, NULL);
      rc = i == 0   ? crosvm_vcpu_set_xcrs(vcpu, &xcrs)
           : i == 1 ? crosvm_vcpu_set_lapic_state(vcpu, &lapic)
           : i == 2 ? crosvm_vcpu_set_mp_state(vcpu, &mp)
                    : crosvm_vcpu_set_vcpu_events(vcpu, &events);
      CHECK(rc == 0);
      struct field f;
      CHECK(vcpu_read_request(h) && (sub = req_member(4, &len)) &&
            (int)pb_get(sub, len, 1) == sets[i].set && pb_find(sub, len, 2, &f) &&
            f.len == sets[i].size);
    }
    /* A host error comes back negated. */
    vcpu_push(h, EINVAL, 5, NULL);
    CHECK_RC(crosvm_vcpu_set_mp_state(vcpu, &mp), -EINVAL);
    CHECK(vcpu_read_request(h));
  }

  /* MSRs. */
  struct kvm_msr_entry msrs[2];
  memset(msrs, 0, sizeof(msrs));
  msrs[0].index = 0x174;
  msrs[1].index = 0x175;
  struct pb md = {.len = 0}, mdp = {.len = 0};
  pb_varint(&mdp, 0x10);
  pb_varint(&mdp, 0x20);
  pb_bytes(&md, 1, mdp.buf, mdp.len);
  vcpu_push(h, 0, 6, &md);
  uint32_t n = 0;
  CHECK_RC(crosvm_vcpu_get_msrs(vcpu, 2, msrs, &n), 0);
  CHECK(n == 2 && msrs[0].data == 0x10 && msrs[1].data == 0x20);
  CHECK(vcpu_read_request(h) && req_member(5, &len) != NULL);
  vcpu_push(h, 0, 6, &md);
  CHECK_RC(crosvm_vcpu_get_msrs(vcpu, 1, msrs, &n), -EPROTO); /* more than asked */
  CHECK(vcpu_read_request(h));
  vcpu_push(h, 0, 7, NULL);
  CHECK_RC(crosvm_vcpu_set_msrs(vcpu, 2, msrs), 0);
  CHECK(vcpu_read_request(h) && (sub = req_member(6, &len)));
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 1, &f) && pb_get(f.p, f.len, 1) == 0x175 &&
          pb_get(f.p, f.len, 2) == 0x20);
  }

  /* CPUID. */
  struct kvm_cpuid_entry2 cpuid[2];
  memset(cpuid, 0, sizeof(cpuid));
  cpuid[0].function = 0;
  cpuid[0].eax = 1;
  cpuid[1].function = 7;
  cpuid[1].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  cpuid[1].index = 0;
  cpuid[1].ebx = 0x99;
  vcpu_push(h, 0, 8, NULL);
  CHECK_RC(crosvm_vcpu_set_cpuid(vcpu, 2, cpuid), 0);
  CHECK(vcpu_read_request(h) && (sub = req_member(7, &len)));
  {
    struct field f;
    CHECK(sub && pb_find(sub, len, 1, &f) && pb_get(f.p, f.len, 1) == 7 &&
          pb_get(f.p, f.len, 3) == 1 && pb_get(f.p, f.len, 6) == 0x99);
  }

  /* Hyper-V CPUID, large enough to outgrow the initial read buffer and the
     pipe: written by a thread, in two pieces. */
  {
    static uint8_t frame[200000];
    static uint8_t body[190000];
    struct pb entry = {.len = 0};
    pb_uint(&entry, 1, 0x40000001);
    pb_uint(&entry, 5, 0x31237648);
    size_t total = 0, entries = 0, blen = 0;
    /* The CpuidResponse, built by hand (struct pb is too small). */
    while (blen + entry.len + 8 < sizeof(body) - 16 && entries < 9000) {
      body[blen++] = 0x0a;
      body[blen++] = (uint8_t)entry.len;
      memcpy(body + blen, entry.buf, entry.len);
      blen += entry.len;
      entries++;
    }
    /* VcpuResponse { get_hyperv_cpuid (9) = body } */
    struct pb hdr = {.len = 0};
    pb_varint(&hdr, (9 << 3) | 2);
    pb_varint(&hdr, blen);
    struct pb outer = {.len = 0};
    pb_varint(&outer, hdr.len + blen);
    memcpy(frame, outer.buf, outer.len);
    total = outer.len;
    memcpy(frame + total, hdr.buf, hdr.len);
    total += hdr.len;
    memcpy(frame + total, body, blen);
    total += blen;
    struct slow_write sw = {.fd = h->resp_wr, .data = frame, .len = total, .split = 3};
    pthread_t t;
    pthread_create(&t, NULL, slow_writer, &sw);
    struct kvm_cpuid_entry2 hv_entries[2];
    uint32_t hv_count = 0;
    CHECK_RC(crosvm_get_hyperv_cpuid(vcpu, 2, hv_entries, &hv_count), -E2BIG);
    CHECK(hv_count == entries && hv_entries[1].function == 0x40000001 &&
          hv_entries[1].eax == 0x31237648);
    pthread_join(t, NULL);
    CHECK(vcpu_read_request(h) && req_member(9, &len) != NULL);
  }

  /* Capabilities: flags/args must be zero; nothing is sent then. */
  uint64_t args[4] = {0, 0, 1, 0};
  CHECK_RC(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_HYPERV_SYNIC, 1, NULL), -EINVAL);
  CHECK_RC(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_HYPERV_SYNIC, 0, args), -EINVAL);
  CHECK(nothing_sent(h->req_rd));
  vcpu_push(h, 0, 10, NULL);
  args[2] = 0;
  CHECK_RC(crosvm_vcpu_enable_capability(vcpu, KVM_CAP_HYPERV_SYNIC, 0, args), 0);
  CHECK(vcpu_read_request(h) && (sub = req_member(10, &len)) &&
        pb_get(sub, len, 1) == KVM_CAP_HYPERV_SYNIC);

  /* Malformed framing: a varint longer than 5 bytes, then a hang-up. */
  uint8_t longvar[6] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  CHECK(write(h->resp_wr, longvar, sizeof(longvar)) == sizeof(longvar));
  CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), -EPROTO);
  CHECK_RC(crosvm_destroy_connection(&c), 0);

  /* A fresh VCPU whose host closes the pipe mid-message. */
  int sv2[2];
  make_pair(sv2);
  struct host_vcpu hv2[1];
  c = connect_mock(&sv2[0], sv2[1], 1, hv2);
  if (c) {
    CHECK_RC(crosvm_get_vcpu(c, 0, &vcpu), 0);
    uint8_t partial[2] = {0x05, 0x12};
    CHECK(write(hv2[0].resp_wr, partial, 2) == 2);
    close(hv2[0].resp_wr);
    CHECK_RC(crosvm_vcpu_wait(vcpu, &evt), -EPIPE);
    close(hv2[0].req_rd); /* now a request gets EPIPE (SIGPIPE is ignored) */
    CHECK_RC(crosvm_vcpu_get_mp_state(vcpu, &(struct kvm_mp_state){0}), -EPIPE);
    CHECK_RC(crosvm_destroy_connection(&c), 0);
  }
  close(sv2[0]);
  mock_close(&m);
}

/* Random answers (fixed seed): any return value is fine, a crash is not. */
static void test_garbage(void) {
  struct mock m;
  struct crosvm_vcpu *vcpu = NULL;
  struct crosvm *c = mock_connect(&m, 1, &vcpu);
  if (!c) return;
  uint32_t seed = 12345;
#define RAND() (seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff)
  for (int round = 0; round < 300; round++) {
    /* Main connection: random bytes, sometimes a valid prefix. */
    uint8_t junk[96];
    size_t n = 1 + RAND() % sizeof(junk);
    for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)RAND();
    if (round % 3 == 0) junk[0] = 0x12 + (RAND() % 2) * 0x20; /* field 2 or 6 */
    host_send_raw(m.sv[0], junk, n);
    bool has;
    struct kvm_pic_state pic;
    int rc = round % 2 ? crosvm_check_extension(c, 1, &has) : crosvm_get_pic_state(c, true, &pic);
    CHECK(rc <= 0);
    uint8_t drain[256];
    while (recv(m.sv[0], drain, sizeof(drain), MSG_DONTWAIT) > 0) {
    }

    /* VCPU: a well-framed message with a random body. */
    struct pb frame = {.len = 0};
    size_t body = RAND() % 64;
    pb_varint(&frame, body);
    for (size_t i = 0; i < body; i++) {
      uint8_t b = (uint8_t)RAND();
      if (i == 0 && round % 2) b = 0x12; /* a wait member */
      pb_raw(&frame, &b, 1);
    }
    CHECK(write(m.hv[0].resp_wr, frame.buf, frame.len) == (ssize_t)frame.len);
    struct crosvm_vcpu_event evt;
    rc = crosvm_vcpu_wait(vcpu, &evt);
    CHECK(rc <= 0);
    if (rc == 0 && evt.kind == CROSVM_VCPU_EVENT_KIND_IO_ACCESS && evt.io_access.length)
      evt.io_access.data[evt.io_access.length - 1] ^= 1; /* the buffer is really there */
  }
#undef RAND
  CHECK_RC(crosvm_destroy_connection(&c), 0);
  mock_close(&m);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  test_connect_errors();
  test_main_connection();
  test_vcpu();
  test_garbage();
  printf("mock_host: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
