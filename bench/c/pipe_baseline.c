/*
 * pipe_baseline: the floor for plugvisor's design (crosvm's plugin mode) with
 * the protobuf library taken out: every measured exit makes one round trip
 * through a pair of pipes to a second process.
 *
 *   pipe_baseline EXITS [--cpus N] [--mmio] [--spin N]
 *
 * The VMM (this process, one thread per VCPU) writes, per measured exit, the
 * same bytes the host pushes for it (a length-delimited VcpuResponse{wait{io}},
 * 12 bytes for port IO, 16 for MMIO) to the VCPU's host->plugin pipe, then
 * reads the plugin's answer (VcpuRequest{resume{}}, 2 bytes) from its
 * plugin->host pipe before running the VCPU again. The "plugin" is a forked
 * child with one thread that serves every VCPU's pipes (blocking read when
 * there is one VCPU, poll when there are several, as a single-threaded plugin
 * would). The count read and the done write are handled locally.
 *
 * --spin N: both sides make their read ends non-blocking and retry the read up
 * to N times (with a PAUSE in between) before falling back to poll(). This is
 * the "bounded spin" idea: it trades CPU time for fewer sleeps/wake-ups.
 *
 * Output: one JSON line with the fields of raw_exit plus
 *   childCpuUserSec, childCpuSysSec   getrusage(RUSAGE_CHILDREN) after waitpid
 *   cpuUsPerExit   CPU time of both processes per measured exit
 *   spin           N
 *   vmmSpinHits, vmmBlocks             answers found while spinning / reads
 *   pluginSpinHits, pluginBlocks       that had to poll (0/0 without --spin)
 *   spinReadNs     cost of one failed non-blocking read, measured after the
 *                  run (so a spin bound of N is about N x this long)
 */
#include "common.h"

#include <poll.h>
#include <sys/wait.h>

/* VcpuResponse{wait{io{address 0x10, is_write, data [0]}}}, length-delimited:
 * 0b | 12 09 | 12 07 | 10 10 | 18 01 | 2a 01 00 */
static const uint8_t WAIT_IO_MSG[] = { 0x0b, 0x12, 0x09, 0x12, 0x07, 0x10, 0x10, 0x18, 0x01, 0x2a, 0x01, 0x00 };
/* VcpuResponse{wait{io{space MMIO, address 0x8000, is_write, data [0]}}}:
 * 0f | 12 0d | 12 0b | 08 01 | 10 80 80 02 | 18 01 | 2a 01 00 */
static const uint8_t WAIT_MMIO_MSG[] = { 0x0f, 0x12, 0x0d, 0x12, 0x0b, 0x08, 0x01, 0x10, 0x80, 0x80, 0x02,
                                         0x18, 0x01, 0x2a, 0x01, 0x00 };
/* VcpuRequest{resume{}}: 12 00 */
static const uint8_t RESUME_MSG[] = { 0x12, 0x00 };

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct spin_stats {
  unsigned long hits, blocks;
};

static void write_all(int fd, const uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      die("write");
    }
    buf += n;
    len -= (size_t)n;
  }
}

/* One read of up to `len` bytes. With spin > 0 the fd is non-blocking: try
 * `spin` times, then poll. Returns what read() returned (0 = EOF). */
static ssize_t read_some(int fd, uint8_t *buf, size_t len, long spin, struct spin_stats *st) {
  if (spin == 0) {
    for (;;) {
      ssize_t n = read(fd, buf, len);
      if (n >= 0) return n;
      if (errno != EINTR) die("read");
    }
  }
  for (long i = 0; i < spin; i++) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0) {
      st->hits++;
      return n;
    }
    if (errno != EAGAIN && errno != EINTR) die("read");
    cpu_relax();
  }
  st->blocks++;
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, -1) < 0 && errno != EINTR) die("poll");
    ssize_t n = read(fd, buf, len);
    if (n >= 0) return n;
    if (errno != EAGAIN && errno != EINTR) die("read");
  }
}

static void read_exact(int fd, uint8_t *buf, size_t len, long spin, struct spin_stats *st) {
  while (len > 0) {
    ssize_t n = read_some(fd, buf, len, spin, st);
    if (n == 0) {
      errno = 0;
      die("unexpected end of pipe");
    }
    buf += n;
    len -= (size_t)n;
  }
}

static void set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl O_NONBLOCK");
}

/* What one failed (EAGAIN) read of an empty non-blocking pipe costs, in ns:
 * turns a spin bound in iterations into a time (N x this). */
static double spin_read_ns(void) {
  int p[2];
  uint8_t b;
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) die("pipe2");
  const int n = 20000;
  double t0 = now_mono();
  for (int i = 0; i < n; i++)
    if (read(p[0], &b, 1) >= 0 || errno != EAGAIN) die("calibration read");
  double ns = (now_mono() - t0) * 1e9 / n;
  close(p[0]);
  close(p[1]);
  return ns;
}

/* ---- the plugin side (child process) ---- */

struct plugin_vcpu {
  int in;  /* read end of host->plugin */
  int out; /* write end of plugin->host */
  uint8_t buf[64];
  size_t have;
  int open;
};

/* Consumes whole length-delimited messages from pv->buf, answering each one. */
static void plugin_consume(struct plugin_vcpu *pv) {
  while (pv->have > 0) {
    size_t len = (size_t)pv->buf[0] + 1; /* one-byte varint: messages are < 128 bytes */
    if (pv->buf[0] & 0x80) {
      errno = 0;
      die("plugin: message too long for this benchmark");
    }
    if (pv->have < len) return;
    write_all(pv->out, RESUME_MSG, sizeof RESUME_MSG);
    memmove(pv->buf, pv->buf + len, pv->have - len);
    pv->have -= len;
  }
}

/* Reads what pv->in has (the caller knows it is readable or blocks). */
static int plugin_read(struct plugin_vcpu *pv, long spin, struct spin_stats *st, int may_block) {
  ssize_t n;
  if (may_block) {
    n = read_some(pv->in, pv->buf + pv->have, sizeof pv->buf - pv->have, spin, st);
  } else {
    n = read(pv->in, pv->buf + pv->have, sizeof pv->buf - pv->have);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return 0;
      die("plugin read");
    }
  }
  if (n == 0) {
    pv->open = 0;
    return -1;
  }
  pv->have += (size_t)n;
  plugin_consume(pv);
  return 1;
}

static void plugin_main(struct plugin_vcpu *pvs, int cpus, long spin, int stats_fd) {
  struct spin_stats st = { 0, 0 };
  int open = cpus;
  struct pollfd *pfds = calloc((size_t)cpus, sizeof *pfds);
  if (!pfds) die("calloc");
  if (spin > 0)
    for (int i = 0; i < cpus; i++) set_nonblocking(pvs[i].in);

  if (cpus == 1) {
    /* One VCPU: a plain (possibly spinning) read, as a single-VCPU plugin does. */
    while (plugin_read(&pvs[0], spin, &st, 1) >= 0) {
    }
  } else {
    while (open > 0) {
      int got = 0;
      /* Spin over every VCPU's pipe first, when asked to. */
      for (long it = 0; spin > 0 && it < spin && !got; it++) {
        for (int i = 0; i < cpus; i++) {
          if (!pvs[i].open) continue;
          int r = plugin_read(&pvs[i], spin, &st, 0);
          if (r > 0) got = 1;
          if (r < 0) open--;
        }
        if (!got) cpu_relax();
      }
      if (got) {
        st.hits++;
        continue;
      }
      if (spin > 0) st.blocks++;
      int n = 0;
      for (int i = 0; i < cpus; i++) {
        pfds[i].fd = pvs[i].open ? pvs[i].in : -1;
        pfds[i].events = POLLIN;
        pfds[i].revents = 0;
        if (pvs[i].open) n++;
      }
      if (n == 0) break;
      if (poll(pfds, (nfds_t)cpus, -1) < 0) {
        if (errno == EINTR) continue;
        die("plugin poll");
      }
      for (int i = 0; i < cpus; i++) {
        if (!pvs[i].open || !(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        /* With spin the fd is non-blocking; without, poll said it is readable. */
        if (plugin_read(&pvs[i], 0, &st, spin == 0) < 0) open--;
      }
    }
  }
  write_all(stats_fd, (const uint8_t *)&st, sizeof st);
  _exit(0);
}

/* ---- the VMM side ---- */

struct worker {
  struct timed_run run; /* first: see worker_at */
  int to_plugin; /* write end */
  int from_plugin; /* read end */
  const uint8_t *msg;
  size_t msg_len;
  long spin;
  struct spin_stats st;
};

/* Every measured exit is a round trip to the plugin. */
static void *run_vcpu(void *arg) {
  struct worker *w = arg;
  uint8_t answer[sizeof RESUME_MSG];
  while (run_next_measured(&w->run)) {
    write_all(w->to_plugin, w->msg, w->msg_len);
    read_exact(w->from_plugin, answer, sizeof answer, w->spin, &w->st);
  }
  close(w->to_plugin); /* the plugin sees EOF on this VCPU */
  return NULL;
}

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o, 1);

  struct worker *workers = calloc((size_t)o.cpus, sizeof *workers);
  struct plugin_vcpu *pvs = calloc((size_t)o.cpus, sizeof *pvs);
  if (!workers || !pvs) die("calloc");

  /* Pipes first, then fork, then the VM: the child never holds a KVM fd. */
  for (int i = 0; i < o.cpus; i++) {
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) < 0 || pipe2(up, O_CLOEXEC) < 0) die("pipe2");
    workers[i].to_plugin = down[1];
    workers[i].from_plugin = up[0];
    pvs[i].in = down[0];
    pvs[i].out = up[1];
    pvs[i].open = 1;
  }
  int stats[2];
  if (pipe2(stats, O_CLOEXEC) < 0) die("pipe2");

  fflush(stdout);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(stats[0]);
    for (int i = 0; i < o.cpus; i++) {
      close(workers[i].to_plugin);
      close(workers[i].from_plugin);
    }
    plugin_main(pvs, o.cpus, o.spin, stats[1]);
  }
  close(stats[1]);
  for (int i = 0; i < o.cpus; i++) {
    close(pvs[i].in);
    close(pvs[i].out);
  }

  struct vm vm;
  vm_create(&vm, o.mmio);
  for (int i = 0; i < o.cpus; i++) {
    struct worker *w = &workers[i];
    vcpu_create(&vm, &w->run.vcpu, i);
    w->run.count = (uint32_t)o.exits;
    w->msg = o.mmio ? WAIT_MMIO_MSG : WAIT_IO_MSG;
    w->msg_len = o.mmio ? sizeof WAIT_MMIO_MSG : sizeof WAIT_IO_MSG;
    w->spin = o.spin;
    if (o.spin > 0) set_nonblocking(w->from_plugin);
  }
  run_workers(run_vcpu, workers, sizeof *workers, o.cpus);

  double read_ns = o.spin > 0 ? spin_read_ns() : 0;
  struct spin_stats child_st = { 0, 0 };
  if (read(stats[0], &child_st, sizeof child_st) != (ssize_t)sizeof child_st) {
    errno = 0;
    die("no statistics from the plugin process");
  }
  int status;
  if (waitpid(child, &status, 0) < 0) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    errno = 0;
    die("plugin process failed (status 0x%x)", status);
  }

  unsigned long total;
  double secs = runs_seconds(workers, sizeof *workers, o.cpus, &total);
  struct spin_stats vmm_st = { 0, 0 };
  for (int i = 0; i < o.cpus; i++) {
    vmm_st.hits += workers[i].st.hits;
    vmm_st.blocks += workers[i].st.blocks;
  }

  struct rusage self, kids;
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &kids);
  double user = tv_sec(self.ru_utime), sys = tv_sec(self.ru_stime);
  double cuser = tv_sec(kids.ru_utime), csys = tv_sec(kids.ru_stime);
  printf("{\"program\":\"pipe_baseline\",\"mode\":\"%s\",\"cpus\":%d,\"spin\":%ld,\"exits\":%lu,"
         "\"seconds\":%.6f,\"usPerExit\":%.4f,\"exitsPerSec\":%.1f,"
         "\"cpuUserSec\":%.6f,\"cpuSysSec\":%.6f,\"childCpuUserSec\":%.6f,\"childCpuSysSec\":%.6f,"
         "\"cpuUsPerExit\":%.4f,\"maxRssKiB\":%ld,\"firstExitUnixMs\":%.3f,"
         "\"vmmSpinHits\":%lu,\"vmmBlocks\":%lu,\"pluginSpinHits\":%lu,\"pluginBlocks\":%lu,"
         "\"spinReadNs\":%.1f}\n",
         o.mmio ? "mmio" : "io", o.cpus, o.spin, total, secs, secs * 1e6 / (double)o.exits,
         (double)total / secs, user, sys, cuser, csys, (user + sys + cuser + csys) * 1e6 / (double)total,
         self.ru_maxrss, workers[0].run.first_exit_unix_ms, vmm_st.hits, vmm_st.blocks, child_st.hits,
         child_st.blocks, read_ns);
  return 0;
}
