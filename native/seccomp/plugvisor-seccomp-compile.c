/*
 * plugvisor-seccomp-compile: turns a plugvisor seccomp policy (a readable text
 * file, format below) into a raw classic-BPF program for the native
 * architecture, as bubblewrap's `--seccomp FD` expects (an array of
 * struct sock_filter, no header).
 *
 *   usage: plugvisor-seccomp-compile [--log-failures] POLICY_FILE > filter.bpf
 *          plugvisor-seccomp-compile [--log-failures] --check POLICY_FILE   (parse + build, no output)
 *          plugvisor-seccomp-compile [--log-failures] --pfc POLICY_FILE     (print the filter as readable pseudo code)
 *
 *   --log-failures (plugvisor run --seccomp-log-failures, crosvm's option):
 *   every action that would end the plugin (kill, kill-thread, trap) becomes
 *   log: the call is allowed and the kernel logs it (audit, or the kernel log
 *   without auditd). `errno` rules still fail their calls, and a foreign-ABI
 *   call still kills: logging those would let any call through by its i386
 *   number, past every rule.
 *
 * Policy format (one rule a line; '#' starts a comment; blank lines ignored):
 *
 *   default ACTION                      action for every syscall not listed (required, once)
 *   NAME ACTION                         NAME is a syscall name, e.g. ptrace
 *   NAME? ACTION                        same, but skipped if this libseccomp does not know NAME
 *   NAME ACTION if argN & MASK          only when (argument N & MASK) == MASK
 *
 *   ACTION: allow | log | trap | kill (the whole process) | kill-thread
 *           | errno NAME-OR-NUMBER   (e.g. errno EPERM, errno 38)
 *
 * Syscalls from a foreign ABI (i386 via int 0x80, x32) kill the process.
 * Exit status: 0 ok, 2 policy error (message "FILE:LINE: ..." on stderr), 1 other failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RULES 1024

static const char *policy_path;
static int line_no;

static void fail_policy(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%d: ", policy_path, line_no);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

static int parse_errno(const char *word) {
  char *end;
  errno = 0;
  long n = strtol(word, &end, 0);
  if (*word != '\0' && *end == '\0' && errno == 0) {
    if (n < 1 || n > 4095) fail_policy("errno value %s out of range 1..4095", word);
    return (int)n;
  }
  for (int e = 1; e < 4096; e++) {
    const char *name = strerrorname_np(e);
    if (name != NULL && strcmp(name, word) == 0) return e;
  }
  fail_policy("unknown errno name '%s'", word);
  return -1;
}

/* --log-failures: actions that would end the plugin become `log`. */
static int log_failures;

/* Parses ACTION starting at words[*i]; advances *i past it. */
static uint32_t parse_action(char **words, int count, int *i) {
  if (*i >= count) fail_policy("missing action");
  const char *w = words[(*i)++];
  if (strcmp(w, "allow") == 0) return SCMP_ACT_ALLOW;
  if (strcmp(w, "log") == 0) return SCMP_ACT_LOG;
  if (strcmp(w, "trap") == 0) return log_failures ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
  if (strcmp(w, "kill") == 0 || strcmp(w, "kill-process") == 0) return log_failures ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
  if (strcmp(w, "kill-thread") == 0) return log_failures ? SCMP_ACT_LOG : SCMP_ACT_KILL_THREAD;
  if (strcmp(w, "errno") == 0) {
    if (*i >= count) fail_policy("'errno' needs a value, e.g. 'errno EPERM'");
    return SCMP_ACT_ERRNO((uint32_t)parse_errno(words[(*i)++]));
  }
  fail_policy("unknown action '%s' (allow, log, trap, kill, kill-thread, errno NAME)", w);
  return 0;
}

static uint64_t parse_u64(const char *word, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(word, &end, 0);
  if (*word == '\0' || *end != '\0' || errno != 0 || word[0] == '-') fail_policy("bad %s '%s'", what, word);
  return (uint64_t)v;
}

int main(int argc, char **argv) {
  int check_only = 0, pfc = 0;
  int arg = 1;
  if (arg < argc && strcmp(argv[arg], "--log-failures") == 0) {
    log_failures = 1;
    arg++;
  }
  if (arg < argc && strcmp(argv[arg], "--check") == 0) {
    check_only = 1;
    arg++;
  } else if (arg < argc && strcmp(argv[arg], "--pfc") == 0) {
    pfc = 1;
    arg++;
  }
  if (arg + 1 == argc && argv[arg][0] != '-') {
    policy_path = argv[arg];
  } else {
    fprintf(stderr, "usage: %s [--log-failures] [--check|--pfc] POLICY_FILE > filter.bpf\n", argv[0]);
    return 1;
  }
  if (!check_only && !pfc && isatty(STDOUT_FILENO)) {
    fprintf(stderr, "%s: refusing to write binary BPF to a terminal\n", argv[0]);
    return 1;
  }

  FILE *f = fopen(policy_path, "r");
  if (f == NULL) {
    fprintf(stderr, "%s: cannot open policy: %s\n", policy_path, strerror(errno));
    return 1;
  }

  /* Read every rule first: the context is made with the default action, which may come last. */
  static struct {
    int line, nr, has_cond;
    uint32_t action;
    unsigned arg;
    uint64_t mask;
  } rules[MAX_RULES];
  int nrules = 0;
  int have_default = 0, default_line = 0;
  uint32_t default_action = 0;

  char *buf = NULL;
  size_t cap = 0;
  while (getline(&buf, &cap, f) >= 0) {
    line_no++;
    char *hash = strchr(buf, '#');
    if (hash) *hash = '\0';
    char *words[16];
    int count = 0;
    for (char *tok = strtok(buf, " \t\r\n"); tok != NULL; tok = strtok(NULL, " \t\r\n")) {
      if (count == 16) fail_policy("too many words");
      words[count++] = tok;
    }
    if (count == 0) continue;
    int i = 1;
    if (strcmp(words[0], "default") == 0) {
      if (have_default) fail_policy("second 'default' line (first on line %d)", default_line);
      default_action = parse_action(words, count, &i);
      if (i != count) fail_policy("unexpected '%s' after the default action", words[i]);
      have_default = 1;
      default_line = line_no;
      continue;
    }
    char *name = words[0];
    size_t len = strlen(name);
    if (strchr(name, ':') != NULL || name[0] == '@')
      fail_policy("'%s' is minijail's policy syntax (crosvm's 'NAME: FILTER' lines); plugvisor's policies are "
                  "'NAME ACTION' lines (see src/sandbox/plugin-seccomp.policy)", words[0]);
    int optional = 0;
    if (len > 1 && name[len - 1] == '?') {
      optional = 1;
      name[len - 1] = '\0';
    }
    int nr = seccomp_syscall_resolve_name(name);
    uint32_t action = parse_action(words, count, &i);
    int has_cond = 0;
    unsigned arg = 0;
    uint64_t mask = 0;
    if (i < count) {
      /* if argN & MASK */
      if (strcmp(words[i], "if") != 0 || count - i != 4 || strncmp(words[i + 1], "arg", 3) != 0 ||
          strcmp(words[i + 2], "&") != 0)
        fail_policy("expected 'if argN & MASK' after the action");
      arg = (unsigned)parse_u64(words[i + 1] + 3, "argument index");
      if (arg > 5) fail_policy("argument index must be 0..5");
      mask = parse_u64(words[i + 3], "mask");
      if (mask == 0) fail_policy("mask must not be 0");
      has_cond = 1;
    }
    if (nr == __NR_SCMP_ERROR) {
      if (optional) continue;
      fail_policy("unknown syscall '%s' (append '?' to skip names this system does not know)", name);
    }
    for (int r = 0; r < nrules; r++) {
      if (rules[r].nr == nr && (!rules[r].has_cond || !has_cond))
        fail_policy("'%s' already has a rule on line %d", name, rules[r].line);
    }
    if (nrules == MAX_RULES) fail_policy("too many rules (max %d)", MAX_RULES);
    rules[nrules].line = line_no;
    rules[nrules].nr = nr;
    rules[nrules].action = action;
    rules[nrules].has_cond = has_cond;
    rules[nrules].arg = arg;
    rules[nrules].mask = mask;
    nrules++;
  }
  free(buf);
  fclose(f);
  if (!have_default) {
    line_no = 0;
    fail_policy("no 'default ACTION' line");
  }

  scmp_filter_ctx ctx = seccomp_init(default_action);
  if (ctx == NULL) {
    fprintf(stderr, "seccomp_init failed\n");
    return 1;
  }
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  if (rc < 0) {
    fprintf(stderr, "seccomp_attr_set(BADARCH): %s\n", strerror(-rc));
    return 1;
  }
  for (int r = 0; r < nrules; r++) {
    line_no = rules[r].line;
    if (rules[r].action == default_action) continue; /* same as the default: nothing to add */
    if (rules[r].has_cond) {
      struct scmp_arg_cmp cmp = SCMP_CMP64(rules[r].arg, SCMP_CMP_MASKED_EQ, rules[r].mask, rules[r].mask);
      rc = seccomp_rule_add_exact_array(ctx, rules[r].action, rules[r].nr, 1, &cmp);
    } else {
      rc = seccomp_rule_add_exact(ctx, rules[r].action, rules[r].nr, 0);
    }
    if (rc < 0) {
      char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, rules[r].nr);
      fail_policy("libseccomp refused the rule for '%s': %s", name ? name : "?", strerror(-rc));
    }
  }
  if (pfc) {
    rc = seccomp_export_pfc(ctx, STDOUT_FILENO);
    if (rc < 0) {
      fprintf(stderr, "seccomp_export_pfc: %s\n", strerror(-rc));
      return 1;
    }
  } else if (!check_only) {
    rc = seccomp_export_bpf(ctx, STDOUT_FILENO);
    if (rc < 0) {
      fprintf(stderr, "seccomp_export_bpf: %s\n", strerror(-rc));
      return 1;
    }
  }
  seccomp_release(ctx);
  return 0;
}
