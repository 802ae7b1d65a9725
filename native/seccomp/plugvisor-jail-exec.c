/*
 * plugvisor-jail-exec: the first step of a sandboxed plugin launch, run by the
 * host in place of the sandbox command. It
 *   - sets RLIMIT_NOFILE (soft and hard) to N, which the plugin then inherits,
 *   - closes every fd from K up, so that nothing the host process happened to
 *     inherit without close-on-exec leaks into the jail (the host passes
 *     stdio, the main socket at 3 and the sandbox's own fds at 4.. only),
 *   - and execs PROGRAM (an absolute path: no PATH search).
 *
 *   usage: plugvisor-jail-exec --nofile N --keep-fds-below K -- PROGRAM [ARG...]
 *
 * Exit status when it cannot go on: 125 (bad usage or a failed step), 127 (exec failed).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static void usage(const char *self) {
  fprintf(stderr, "usage: %s --nofile N --keep-fds-below K -- PROGRAM [ARG...]\n", self);
  exit(125);
}

static unsigned long number(const char *self, const char *text) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || text[0] == '-') usage(self);
  return v;
}

/* Closes fds >= from. close_range() where the kernel has it, else a /proc walk. */
static int close_from(unsigned from) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, from, ~0U, 0) == 0) return 0;
  if (errno != ENOSYS) return -1;
#endif
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int self_fd = dirfd(d);
  struct dirent *e;
  int fds[1024];
  int n = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd >= (int)from && fd != self_fd && n < 1024) fds[n++] = fd;
  }
  closedir(d);
  for (int i = 0; i < n; i++) close(fds[i]);
  return n == 1024 ? close_from(from) : 0;
}

int main(int argc, char **argv) {
  const char *self = argv[0];
  long nofile = -1, keep = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) usage(self);
    if (strcmp(argv[i], "--nofile") == 0) nofile = (long)number(self, argv[++i]);
    else if (strcmp(argv[i], "--keep-fds-below") == 0) keep = (long)number(self, argv[++i]);
    else usage(self);
  }
  if (nofile < 1 || keep < 3 || i >= argc || argv[i][0] != '/') usage(self);

  struct rlimit rl = { (rlim_t)nofile, (rlim_t)nofile };
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    fprintf(stderr, "%s: cannot set RLIMIT_NOFILE to %ld: %s\n", self, nofile, strerror(errno));
    return 125;
  }
  if (close_from((unsigned)keep) != 0) {
    fprintf(stderr, "%s: cannot close inherited fds: %s\n", self, strerror(errno));
    return 125;
  }
  execv(argv[i], &argv[i]);
  fprintf(stderr, "%s: cannot run %s: %s\n", self, argv[i], strerror(errno));
  return 127;
}
