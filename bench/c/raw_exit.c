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

/* The VMM does nothing with an exit but KVM_RUN again. */
static void *run_vcpu(void *arg) {
  while (run_next_measured(arg)) {
  }
  return NULL;
}

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o, 0);

  struct vm vm;
  vm_create(&vm, o.mmio);
  if (o.user) vm_add_user_mode(&vm);
  struct timed_run *runs = calloc((size_t)o.cpus, sizeof *runs);
  if (!runs) die("calloc");
  for (int i = 0; i < o.cpus; i++) {
    vcpu_create(&vm, &runs[i].vcpu, i);
    if (o.user) vcpu_enter_user(&runs[i].vcpu);
    runs[i].count = (uint32_t)o.exits;
  }
  run_workers(run_vcpu, runs, sizeof *runs, o.cpus);

  unsigned long total;
  double secs = runs_seconds(runs, sizeof *runs, o.cpus, &total);
  if (total != o.exits * (unsigned long)o.cpus) {
    errno = 0;
    die("counted %lu measured exits, expected %lu", total, o.exits * (unsigned long)o.cpus);
  }

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double user = tv_sec(ru.ru_utime), sys = tv_sec(ru.ru_stime);
  printf("{\"program\":\"raw_exit\",\"mode\":\"%s\",\"cpus\":%d,\"exits\":%lu,\"seconds\":%.6f,"
         "\"usPerExit\":%.4f,\"exitsPerSec\":%.1f,\"cpuUserSec\":%.6f,\"cpuSysSec\":%.6f,"
         "\"cpuUsPerExit\":%.4f,\"maxRssKiB\":%ld,\"firstExitUnixMs\":%.3f}\n",
         o.mmio ? "mmio" : o.user ? "user" : "io", o.cpus, total, secs, secs * 1e6 / (double)o.exits, (double)total / secs,
         user, sys, (user + sys) * 1e6 / (double)total, ru.ru_maxrss, runs[0].first_exit_unix_ms);
  return 0;
}
