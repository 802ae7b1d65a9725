/*
 * exit_loop_plugin: bench/plugins/exit-loop.ts written against the C plugin
 * API (crosvm.h / libcrosvm_plugin), with one thread per VCPU as a C plugin
 * would do. Same guest (common.h), same arguments, same JSON result:
 *
 *   plugvisor run --plugin bench/build/exit_loop_plugin [--cpus N] -- \
 *       [--exits N] [--warmup-exits W] [--mmio] [--async] [--idle-ms MS] [--out FILE] [--hold FILE]
 *
 * --idle-ms MS: after the exits, every VCPU is resumed from "done" into the
 * guest's HLT (the in-kernel irqchip keeps it halted inside KVM_RUN) and the
 * plugin sleeps MS milliseconds; idleHostCpuPct and idlePluginCpuPct are the
 * host's and the plugin's CPU time over that window, in % of one core.
 *
 * --warmup-exits W adds exit-loop.ts's steady-state fields (warmupExits,
 * usPerExitSteady, warmupExtraMs, steady*CpuSec, cpuUsPerExitSteady): each
 * VCPU thread notes the time of its own W-th measured exit, the steady window
 * starts at the latest of those. This plugin does not JIT, but the host's
 * VCPU loop does.
 *
 * Built by `make -C bench/c plugin` once the project's C library exists
 * (bench/run.ts does it when it finds clients/c's header and library).
 */
#include "common.h"

#include <crosvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#define MAX_CPUS 64

struct options_plugin {
  uint32_t exits, warmup, idle_ms;
  int mmio, async;
  const char *out, *hold;
};

struct worker {
  struct crosvm_vcpu *vcpu;
  int id;
  uint32_t exits;
  uint32_t warmup; /* --warmup-exits, 0 if not given */
  uint32_t measured_space;
  uint64_t measured_address;
  unsigned long measured;
  double t_first, t_warm, t_done, first_exit_unix_ms; /* t_warm: at the W-th measured exit */
  const char *error;
};

/* With --warmup-exits: how many VCPU threads made their W-th measured exit,
 * out of `cpus`, and the CPU counters sampled when the last one did. */
static struct {
  atomic_int warmed;
  int cpus;
  double host_cpu, plugin_cpu;
} steady;

/* CPU seconds of the parent process (the host, when it runs the plugin
 * directly), from /proc/PPID/stat in USER_HZ (1/100 s) ticks. */
static double host_cpu_sec(void) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)getppid());
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  unsigned long utime, stime;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
  return (double)(utime + stime) / 100.0;
}

static double self_cpu_sec(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return tv_sec(ru.ru_utime) + tv_sec(ru.ru_stime);
}

/* This VCPU made its W-th measured exit. The steady window starts at the
 * latest such time, so the last thread to get here samples the CPU counters
 * (a thread that took its time first but counts itself last shifts them by
 * microseconds, far below the host counter's 10 ms resolution). */
static void note_warmed(struct worker *w) {
  w->t_warm = now_mono();
  if (atomic_fetch_add(&steady.warmed, 1) + 1 == steady.cpus) {
    steady.host_cpu = host_cpu_sec();
    steady.plugin_cpu = self_cpu_sec();
  }
}

static void *serve_vcpu(void *arg) {
  struct worker *w = arg;
  struct crosvm_vcpu_event ev;
  int r;
  if ((r = crosvm_vcpu_wait(w->vcpu, &ev)) < 0 || ev.kind != CROSVM_VCPU_EVENT_KIND_INIT) {
    w->error = "first event is not init";
    return NULL;
  }
  if (w->id > 0) {
    struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
    if (crosvm_vcpu_set_mp_state(w->vcpu, &mp) < 0) {
      w->error = "crosvm_vcpu_set_mp_state failed";
      return NULL;
    }
  }
  if (crosvm_vcpu_resume(w->vcpu) < 0) {
    w->error = "resume after init failed";
    return NULL;
  }
  for (;;) {
    if (crosvm_vcpu_wait(w->vcpu, &ev) < 0) {
      w->error = "crosvm_vcpu_wait failed";
      return NULL;
    }
    if (ev.kind != CROSVM_VCPU_EVENT_KIND_IO_ACCESS) {
      w->error = "unexpected event kind";
      return NULL;
    }
    uint32_t space = ev.io_access.address_space;
    uint64_t address = ev.io_access.address;
    if (space == w->measured_space && address == w->measured_address) {
      if (++w->measured == w->warmup) note_warmed(w);
      if (!ev.io_access.no_resume && crosvm_vcpu_resume(w->vcpu) < 0) {
        w->error = "resume failed";
        return NULL;
      }
    } else if (space == CROSVM_ADDRESS_SPACE_IOPORT && address == PORT_COUNT) {
      w->t_first = now_mono();
      w->first_exit_unix_ms = now_unix_ms();
      if (ev.io_access.length >= 4) memcpy(ev.io_access.data, &w->exits, 4);
      if (crosvm_vcpu_resume(w->vcpu) < 0) {
        w->error = "resume failed";
        return NULL;
      }
    } else if (space == CROSVM_ADDRESS_SPACE_IOPORT && address == PORT_DONE) {
      /* Stay stopped (main resumes it into the guest's HLT for --idle-ms). */
      w->t_done = now_mono();
      return NULL;
    } else {
      w->error = "unexpected IO access";
      return NULL;
    }
  }
}

static long vm_hwm_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib;
}

static void check(int r, const char *what) {
  if (r < 0) {
    errno = -r;
    die("%s", what);
  }
}

int main(int argc, char **argv) {
  struct options_plugin o = { 10000, 0, 0, 0, NULL, NULL };
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--exits") == 0 && i + 1 < argc) o.exits = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--warmup-exits") == 0 && i + 1 < argc) o.warmup = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--mmio") == 0) o.mmio = 1;
    else if (strcmp(argv[i], "--async") == 0) o.async = 1;
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) o.out = argv[++i];
    else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc) o.hold = argv[++i];
    else if (strcmp(argv[i], "--idle-ms") == 0 && i + 1 < argc) o.idle_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "exit_loop_plugin: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (o.exits == 0) {
    fprintf(stderr, "exit_loop_plugin: --exits must be at least 1\n");
    return 2;
  }
  if (o.warmup >= o.exits) { /* at least one exit must be left for the steady window */
    fprintf(stderr, "exit_loop_plugin: --warmup-exits must be less than --exits\n");
    return 2;
  }

  struct crosvm *crosvm;
  check(crosvm_connect(&crosvm), "crosvm_connect");

  errno = 0;
  int memfd = memfd_create("exit-loop-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) die("memfd_create");
  if (ftruncate(memfd, GUEST_MEM_SIZE) < 0) die("ftruncate");
  if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) die("F_ADD_SEALS");
  uint8_t *mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (mem == MAP_FAILED) die("mmap");
  if (o.mmio) memcpy(mem + GUEST_CODE_OFFSET, GUEST_LOOP_MMIO, sizeof GUEST_LOOP_MMIO);
  else memcpy(mem + GUEST_CODE_OFFSET, GUEST_LOOP_IO, sizeof GUEST_LOOP_IO);
  memcpy(mem + GUEST_RESET_OFFSET, GUEST_RESET_JMP, sizeof GUEST_RESET_JMP);
  struct crosvm_memory *slot;
  check(crosvm_create_memory(crosvm, memfd, 0, GUEST_MEM_SIZE, GUEST_MEM_BASE, false, false, &slot),
        "crosvm_create_memory");

  uint32_t space = o.mmio ? CROSVM_ADDRESS_SPACE_MMIO : CROSVM_ADDRESS_SPACE_IOPORT;
  uint64_t address = o.mmio ? MMIO_EXIT : PORT_EXIT;
  if (o.async) check(crosvm_reserve_async_write_range(crosvm, space, address, 1), "reserve (async)");
  else check(crosvm_reserve_range(crosvm, space, address, 1), "reserve");
  check(crosvm_reserve_range(crosvm, CROSVM_ADDRESS_SPACE_IOPORT, PORT_DONE, 2), "reserve done/count");

  static struct worker workers[MAX_CPUS];
  int cpus = 0;
  for (; cpus < MAX_CPUS; cpus++) {
    struct crosvm_vcpu *v;
    if (crosvm_get_vcpu(crosvm, (uint32_t)cpus, &v) < 0) break;
    workers[cpus] = (struct worker){ .vcpu = v, .id = cpus, .exits = o.exits, .warmup = o.warmup,
                                     .measured_space = space, .measured_address = address };
  }
  if (cpus == 0) {
    errno = 0;
    die("no VCPUs");
  }
  steady.cpus = cpus;
  check(crosvm_start(crosvm), "crosvm_start");

  /* CPU is sampled around the whole serving phase (thread start to join):
   * close to the timed interval, set-up aside. */
  double host_cpu0 = host_cpu_sec(), plugin_cpu0 = self_cpu_sec();
  pthread_t threads[MAX_CPUS];
  for (int i = 0; i < cpus; i++) {
    errno = pthread_create(&threads[i], NULL, serve_vcpu, &workers[i]);
    if (errno) die("pthread_create");
  }
  double t0 = 0, t1 = 0, t_steady = 0;
  unsigned long total = 0;
  for (int i = 0; i < cpus; i++) {
    pthread_join(threads[i], NULL);
    if (workers[i].error) {
      errno = 0;
      die("vcpu %d: %s", i, workers[i].error);
    }
    if (i == 0 || workers[i].t_first < t0) t0 = workers[i].t_first;
    if (workers[i].t_done > t1) t1 = workers[i].t_done;
    if (workers[i].t_warm > t_steady) t_steady = workers[i].t_warm;
    total += workers[i].measured;
  }
  if (total != (unsigned long)o.exits * (unsigned long)cpus) {
    errno = 0;
    die("counted %lu measured exits, expected %lu", total, (unsigned long)o.exits * (unsigned long)cpus);
  }
  double host_cpu1 = host_cpu_sec(), plugin_cpu1 = self_cpu_sec();
  double loop_host_cpu = host_cpu1 - host_cpu0, loop_plugin_cpu = plugin_cpu1 - plugin_cpu0;
  double first_unix = workers[0].first_exit_unix_ms;
  for (int i = 1; i < cpus; i++)
    if (workers[i].first_exit_unix_ms < first_unix) first_unix = workers[i].first_exit_unix_ms;

  double idle_host_pct = 0, idle_plugin_pct = 0;
  if (o.idle_ms) {
    for (int i = 0; i < cpus; i++) check(crosvm_vcpu_resume(workers[i].vcpu), "resume into HLT");
    usleep(100000); /* every VCPU halted, and the host's spin budgets spent */
    double host0 = host_cpu_sec(), plugin0 = self_cpu_sec();
    usleep(o.idle_ms * 1000);
    idle_host_pct = (host_cpu_sec() - host0) * 1e5 / o.idle_ms;
    idle_plugin_pct = (self_cpu_sec() - plugin0) * 1e5 / o.idle_ms;
  }

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double secs = t1 - t0;
  char text[1024];
  size_t len = (size_t)snprintf(text, sizeof text,
           "{\"program\":\"exit_loop_plugin.c\",\"mode\":\"%s\",\"async\":%s,\"cpus\":%d,\"exits\":%lu,"
           "\"seconds\":%.6f,\"usPerExit\":%.4f,\"exitsPerSec\":%.1f,\"firstExitUnixMs\":%.3f,"
           "\"loopPluginCpuSec\":%.6f,\"loopHostCpuSec\":%.6f,\"pluginCpuUserSec\":%.6f,\"pluginCpuSysSec\":%.6f,\"pluginMaxRssKiB\":%ld,\"pid\":%d",
           o.mmio ? "mmio" : "io", o.async ? "true" : "false", cpus, total, secs, secs * 1e6 / (double)o.exits,
           (double)total / secs, first_unix, loop_plugin_cpu, loop_host_cpu, tv_sec(ru.ru_utime), tv_sec(ru.ru_stime), vm_hwm_kib(), (int)getpid());
  if (o.warmup) {
    /* Every thread counted all its exits (checked above) and W < exits, so
     * each noted its W-th: t_steady and the steady CPU counters are set. */
    uint32_t steady_exits = o.exits - o.warmup;
    double us_steady = (t1 - t_steady) * 1e6 / (double)steady_exits;
    double steady_host = host_cpu1 - steady.host_cpu, steady_plugin = plugin_cpu1 - steady.plugin_cpu;
    len += (size_t)snprintf(text + len, sizeof text - len,
           ",\"warmupExits\":%u,\"usPerExitSteady\":%.4f,\"warmupExtraMs\":%.3f,"
           "\"steadyPluginCpuSec\":%.6f,\"steadyHostCpuSec\":%.6f,\"cpuUsPerExitSteady\":%.4f",
           o.warmup, us_steady, (t_steady - t0) * 1e3 - o.warmup * us_steady / 1e3, steady_plugin, steady_host,
           (steady_host + steady_plugin) * 1e6 / ((double)steady_exits * cpus));
  }
  if (o.idle_ms) {
    len += (size_t)snprintf(text + len, sizeof text - len, ",\"idleHostCpuPct\":%.3f,\"idlePluginCpuPct\":%.3f",
                            idle_host_pct, idle_plugin_pct);
  }
  snprintf(text + len, sizeof text - len, "}\n");
  if (o.out) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", o.out);
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, o.out) < 0) die("write %s", o.out);
  } else {
    fputs(text, stdout);
    fflush(stdout);
  }
  if (o.hold) {
    struct stat st;
    while (stat(o.hold, &st) < 0) usleep(5000);
  }
  _exit(0);
}
