/*
 * raw_exit: the kernel's floor for one guest exit to userspace and back.
 *
 *   raw_exit EXITS [--cpus N] [--mmio | --user]
 *
 * One VM, N VCPUs (one thread each), the guest of common.h. Every VCPU makes
 * EXITS measured exits (port 0x10 writes, or MMIO writes with --mmio; with
 * --user the port writes come from 64-bit user mode, CPL 3, as plugvisor
 * programs make them, instead of real mode); the
 * VMM does nothing with them but KVM_RUN again. Prints one JSON line:
 *
 *   exits          measured exits, all VCPUs together
 *   seconds        wall time from the first VCPU's count read to the last
 *                  VCPU's "done"
 *   usPerExit      seconds / (exits per VCPU): one exit's latency as one VCPU
 *                  sees it
 *   exitsPerSec    exits / seconds (aggregate)
 *   cpuUserSec, cpuSysSec   getrusage(RUSAGE_SELF) of the whole process
 *   cpuUsPerExit   (user + sys) / exits, in microseconds
 *   maxRssKiB      ru_maxrss
 *   firstExitUnixMs  wall clock (epoch ms) of VCPU 0's first exit, so a
 *                    caller can measure start-up to first guest instruction
 */
#include "common.h"

#include <pthread.h>

struct worker {
  struct vcpu vcpu;
  uint32_t count;
  unsigned long measured;
  double t_start, t_done, first_exit_unix_ms;
};

static void *run_vcpu(void *arg) {
  struct worker *w = arg;
  for (;;) {
    enum exit_kind k = vcpu_next_exit(&w->vcpu, w->count);
    if (k == EXIT_MEASURED) {
      w->measured++;
    } else if (k == EXIT_COUNT) {
      w->first_exit_unix_ms = now_unix_ms();
      w->t_start = now_mono();
    } else {
      w->t_done = now_mono();
      return NULL;
    }
  }
}

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o, 0);

  struct vm vm;
  vm_create(&vm, o.mmio);
  if (o.user) vm_add_user_mode(&vm);
  struct worker *workers = calloc((size_t)o.cpus, sizeof *workers);
  pthread_t *threads = calloc((size_t)o.cpus, sizeof *threads);
  if (!workers || !threads) die("calloc");
  for (int i = 0; i < o.cpus; i++) {
    vcpu_create(&vm, &workers[i].vcpu, i);
    if (o.user) vcpu_enter_user(&workers[i].vcpu);
    workers[i].count = (uint32_t)o.exits;
  }
  for (int i = 0; i < o.cpus; i++) {
    if (o.cpus == 1) break; /* one VCPU: run it on the main thread */
    errno = pthread_create(&threads[i], NULL, run_vcpu, &workers[i]);
    if (errno) die("pthread_create");
  }
  if (o.cpus == 1) run_vcpu(&workers[0]);
  else
    for (int i = 0; i < o.cpus; i++) pthread_join(threads[i], NULL);

  double t0 = workers[0].t_start, t1 = workers[0].t_done;
  unsigned long total = 0;
  for (int i = 0; i < o.cpus; i++) {
    if (workers[i].t_start < t0) t0 = workers[i].t_start;
    if (workers[i].t_done > t1) t1 = workers[i].t_done;
    total += workers[i].measured;
  }
  if (total != o.exits * (unsigned long)o.cpus) {
    errno = 0;
    die("counted %lu measured exits, expected %lu", total, o.exits * (unsigned long)o.cpus);
  }

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double secs = t1 - t0;
  double user = tv_sec(ru.ru_utime), sys = tv_sec(ru.ru_stime);
  printf("{\"program\":\"raw_exit\",\"mode\":\"%s\",\"cpus\":%d,\"exits\":%lu,\"seconds\":%.6f,"
         "\"usPerExit\":%.4f,\"exitsPerSec\":%.1f,\"cpuUserSec\":%.6f,\"cpuSysSec\":%.6f,"
         "\"cpuUsPerExit\":%.4f,\"maxRssKiB\":%ld,\"firstExitUnixMs\":%.3f}\n",
         o.mmio ? "mmio" : o.user ? "user" : "io", o.cpus, total, secs, secs * 1e6 / (double)o.exits, (double)total / secs,
         user, sys, (user + sys) * 1e6 / (double)total, ru.ru_maxrss, workers[0].first_exit_unix_ms);
  return 0;
}
