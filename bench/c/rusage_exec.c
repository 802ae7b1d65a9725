/*
 * rusage_exec: runs a command and reports what it cost, for the benchmark
 * runner (node cannot get a child's rusage).
 *
 *   rusage_exec OUT.json COMMAND [ARGS...]
 *
 * The command inherits stdin/stdout/stderr. When it ends, OUT.json gets one
 * JSON object:
 *   pid            the command's process id
 *   exitCode       its exit status (or null), signal: the signal that ended it (or null)
 *   wallSec        wall time from just before fork to wait4's return
 *   userSec, sysSec  wait4's rusage: the command and every descendant it waited
 *                  for (for plugvisor: the host plus its plugin)
 *   maxRssKiB      wait4's ru_maxrss: the peak RSS of the largest single process
 *                  in that tree (NOT a sum)
 * rusage_exec exits with the command's status (128+signal when killed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s OUT.json COMMAND [ARGS...]\n", argv[0]);
    return 2;
  }
  /* Let the runner's SIGTERM reach the command instead of orphaning it. */
  signal(SIGINT, SIG_IGN);
  double t0 = mono();
  pid_t pid = fork();
  if (pid < 0) {
    perror("rusage_exec: fork");
    return 1;
  }
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "rusage_exec: %s: %s\n", argv[2], strerror(errno));
    _exit(127);
  }
  int status;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) {
      perror("rusage_exec: wait4");
      return 1;
    }
  }
  double wall = mono() - t0;
  FILE *f = fopen(argv[1], "w");
  if (!f) {
    perror("rusage_exec: open output");
    return 1;
  }
  char code[16] = "null", sig[16] = "null";
  if (WIFEXITED(status)) snprintf(code, sizeof code, "%d", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) snprintf(sig, sizeof sig, "%d", WTERMSIG(status));
  fprintf(f,
          "{\"pid\":%d,\"exitCode\":%s,\"signal\":%s,\"wallSec\":%.6f,\"userSec\":%.6f,\"sysSec\":%.6f,"
          "\"maxRssKiB\":%ld}\n",
          (int)pid, code, sig, wall, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6,
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6, ru.ru_maxrss);
  if (fclose(f) != 0) {
    perror("rusage_exec: write output");
    return 1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
