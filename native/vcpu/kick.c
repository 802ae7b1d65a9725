/*
 * The VCPU kick signal (see kick.h).
 *
 * Why a kick is never lost: KVM reads immediate_exit each time KVM_RUN is
 * entered and, when it is non-zero, returns EINTR at once without running the
 * guest. So:
 *  - a kick that lands while the thread is inside KVM_RUN interrupts the
 *    guest (a pending signal forces KVM_RUN out with EINTR), and
 *  - a kick that lands while the thread is anywhere else (handling an exit,
 *    about to call KVM_RUN) sets immediate_exit, and the next KVM_RUN returns
 *    EINTR before the guest runs.
 * There is no window where the signal is consumed and the VCPU still goes on
 * running the guest. The VCPU thread clears immediate_exit itself after it has
 * seen the EINTR and done what the kick asked for. SA_RESTART is safe: KVM_RUN
 * reports EINTR, which the kernel never restarts, and other blocking calls of
 * the thread are simply restarted (poll(2) is not, and its callers retry).
 */
#include "kick.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/kvm.h>

/*
 * The kvm_run of the VCPU that runs on this thread (NULL: none).
 *
 * initial-exec TLS: the signal handler reads it, and in a dlopen'ed object
 * the default (global-dynamic) model may allocate the thread's TLS block
 * lazily inside __tls_get_addr, which is not async-signal-safe. initial-exec
 * puts it in the static TLS block that exists from thread creation on.
 */
static __thread struct kvm_run *kick_target __attribute__((tls_model("initial-exec")));

/* One atomic byte store through a thread-local pointer: async-signal-safe, and errno is left alone. */
static void kick_handler(int sig) {
  (void)sig;
  struct kvm_run *run = __atomic_load_n(&kick_target, __ATOMIC_RELAXED);
  if (run) __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_errno;

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = kick_handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGRTMIN, &sa, NULL) < 0) install_errno = errno;
}

int kick_install(void) {
  pthread_once(&install_once, install);
  return install_errno;
}

int kick_set_target(struct kvm_run *run) {
  if (run) {
    /* The kick must reach this thread: make sure it is not blocked here. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    int err = pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (err) return err;
  }
  __atomic_store_n(&kick_target, run, __ATOMIC_SEQ_CST);
  return 0;
}

int kick_thread(pid_t tid) {
  if (syscall(SYS_tgkill, (long)getpid(), (long)tid, (long)SIGRTMIN) < 0) return errno;
  return 0;
}
