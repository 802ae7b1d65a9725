/*
 * A set of VCPU threads (see vcpu.h): creating them, and the controls that
 * reach into running VCPUs from the host's main thread (pause, shutdown,
 * kicks, joins).
 *
 * Lifetime: the set counts one reference for its owner and one per running
 * thread, and is freed by whichever lets go last. So a thread that never ends
 * (a kernel that will not return from an ioctl) leaves the set allocated
 * instead of running on freed memory, and every descriptor a thread uses is
 * the set's own (duplicated from the owner's, or handed over), so a number the
 * owner closes and the kernel reuses can never be written to by a late thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conn.h"
#include "kick.h"
#include "vcpu.h"

/* A VCPU thread's stack: its frames are small (buffers are on the heap); 64 VCPUs then reserve 32 MiB, not 512. */
#define VCPU_STACK_SIZE (512 * 1024)

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void set_free(struct vcpu_set *set) {
  for (uint32_t i = 0; i < set->count; i++) {
    struct vcpu *v = &set->vcpus[i];
    if (v->run) munmap(v->run, v->run_size);
    close_fd(&v->fd);
    close_fd(&v->request_fd);
    close_fd(&v->response_fd);
    vcpu_conn_destroy(v);
  }
  close_fd(&set->wake_fd);
  vcpu_config_destroy(&set->config);
  if (set->events.destroy) set->events.destroy(set->events.context);
  free(set);
}

void vcpu_set_release(struct vcpu_set *set) {
  if (__atomic_sub_fetch(&set->refs, 1, __ATOMIC_ACQ_REL) == 0) set_free(set);
}

/* A close-on-exec, non-blocking duplicate of `fd`, or -1 with errno set. */
static int own_duplicate(int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return -1;
  int flags = fcntl(copy, F_GETFL);
  if (flags < 0 || fcntl(copy, F_SETFL, flags | O_NONBLOCK) < 0) {
    int err = errno;
    close(copy);
    errno = err;
    return -1;
  }
  return copy;
}

struct vcpu_set *vcpu_set_new(uint32_t count, const int *request_fds, const int *response_fds, long spin_us,
                              struct vcpu_events events, int *err) {
  struct vcpu_set *set = calloc(1, sizeof *set + count * sizeof(struct vcpu));
  if (!set) {
    *err = ENOMEM;
    return NULL;
  }
  set->count = count;
  set->spin_ns = spin_us > 0 ? spin_us * 1000 : 0;
  set->refs = 1;
  set->events = events;
  set->wake_fd = -1;
  for (uint32_t i = 0; i < count; i++) {
    struct vcpu *v = &set->vcpus[i];
    v->set = set;
    v->index = i;
    v->fd = v->request_fd = v->response_fd = -1;
  }
  *err = vcpu_config_init(&set->config);
  if (*err) goto fail;
  set->wake_fd = eventfd(0, EFD_CLOEXEC);
  if (set->wake_fd < 0) goto fail_errno;
  for (uint32_t i = 0; i < count; i++) {
    struct vcpu *v = &set->vcpus[i];
    v->request_fd = own_duplicate(request_fds[i]);
    if (v->request_fd < 0) goto fail_errno;
    v->response_fd = own_duplicate(response_fds[i]);
    if (v->response_fd < 0) goto fail_errno;
    *err = vcpu_conn_init(v);
    if (*err) goto fail;
  }
  return set;
fail_errno:
  *err = errno;
fail:
  set_free(set);
  return NULL;
}

int vcpu_set_start(struct vcpu_set *set, const int *vcpu_fds, size_t run_size, const char **failed_call) {
  for (uint32_t i = 0; i < set->count; i++) {
    if (set->vcpus[i].fd >= 0) {
      for (uint32_t j = 0; j < set->count; j++) close(vcpu_fds[j]);
      *failed_call = "vcpu_set_start (already started)";
      return EBUSY;
    }
  }
  for (uint32_t i = 0; i < set->count; i++) set->vcpus[i].fd = vcpu_fds[i];
  int err = kick_install();
  if (err) *failed_call = "sigaction";
  for (uint32_t i = 0; i < set->count && !err; i++) {
    struct vcpu *v = &set->vcpus[i];
    void *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (run == MAP_FAILED) {
      err = errno;
      *failed_call = "mmap";
      break;
    }
    v->run = run;
    v->run_size = run_size;
  }
  if (err) return err;

  pthread_attr_t attr;
  err = pthread_attr_init(&attr);
  if (err) {
    *failed_call = "pthread_attr_init";
    return err;
  }
  pthread_attr_setstacksize(&attr, VCPU_STACK_SIZE);
  /*
   * The threads start with every signal blocked (kick_set_target unblocks
   * the kick), so that signals meant for the process (SIGINT, SIGCHLD, ...)
   * are handled by node's threads, never in the middle of a VCPU's syscalls.
   */
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  for (uint32_t i = 0; i < set->count; i++) {
    struct vcpu *v = &set->vcpus[i];
    __atomic_add_fetch(&set->refs, 1, __ATOMIC_ACQ_REL);
    err = pthread_create(&v->thread, &attr, vcpu_thread_main, v);
    if (err) {
      __atomic_sub_fetch(&set->refs, 1, __ATOMIC_ACQ_REL);
      *failed_call = "pthread_create";
      break;
    }
    v->started = true;
  }
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  pthread_attr_destroy(&attr);
  if (err) {
    /* Those already running only wait for the plugin's first `wait`: they end at once. */
    vcpu_set_shutdown(set);
    for (uint32_t i = 0; i < set->count; i++) {
      struct vcpu *v = &set->vcpus[i];
      if (v->started && !v->joined) pthread_join(v->thread, NULL);
      v->joined = true;
    }
  }
  return err;
}

static void kick(struct vcpu *v) {
  pid_t tid = __atomic_load_n(&v->tid, __ATOMIC_SEQ_CST);
  if (tid != 0) kick_thread(tid); /* ESRCH: it just ended */
}

/*
 * The pending flag is stored before the thread id is read, and the thread
 * publishes its id before it reads the flag: whichever comes second sees the
 * other, so a pause is never missed between the thread's start and its first run.
 */
void vcpu_set_pause(struct vcpu_set *set, uint32_t index, uint64_t user) {
  if (index >= set->count) return;
  struct vcpu *v = &set->vcpus[index];
  __atomic_store_n(&v->pause_user, user, __ATOMIC_RELEASE);
  __atomic_store_n(&v->pause_pending, 1, __ATOMIC_SEQ_CST);
  kick(v);
}

void vcpu_set_kick_all(struct vcpu_set *set) {
  for (uint32_t i = 0; i < set->count; i++) kick(&set->vcpus[i]);
}

void vcpu_set_shutdown(struct vcpu_set *set) {
  __atomic_store_n(&set->shutdown, 1, __ATOMIC_SEQ_CST);
  uint64_t one = 1;
  /* Only fails if the counter would overflow: it is already readable then. */
  (void)!write(set->wake_fd, &one, sizeof one);
  vcpu_set_kick_all(set);
}

uint32_t vcpu_set_reap(struct vcpu_set *set) {
  uint32_t running = 0;
  for (uint32_t i = 0; i < set->count; i++) {
    struct vcpu *v = &set->vcpus[i];
    if (!v->started || v->joined) continue;
    if (pthread_tryjoin_np(v->thread, NULL) == 0) {
      v->joined = true;
    } else {
      running++;
    }
  }
  return running;
}

void vcpu_set_close(struct vcpu_set *set) {
  vcpu_set_reap(set);
  for (uint32_t i = 0; i < set->count; i++) {
    struct vcpu *v = &set->vcpus[i];
    if (v->started && !v->joined) pthread_detach(v->thread);
    v->joined = true;
  }
  vcpu_set_release(set);
}
