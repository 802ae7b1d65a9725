/*
 * The native VCPU threads: a set of VCPUs, each run by its own thread, which
 * calls KVM_RUN, dispatches every exit through the reserved ranges and the
 * call hint (config.h), and holds the VCPU's side of the plugin protocol on
 * the VCPU's pipe pair (conn.c).
 *
 * What the set does is mechanism only. The TypeScript host decides when it
 * starts and stops, what is reserved, which VCPUs pause, and what a VCPU that
 * ended means for the VM; it hears of logs and ends through `vcpu_events`.
 * This header has no N-API in it, so that tests and the fuzz target
 * (native/test/) drive the same code without node.
 */
#ifndef PLUGVISOR_VCPU_H_
#define PLUGVISOR_VCPU_H_

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "../protocol/messages.h"
#include "config.h"

struct kvm_run;

enum vcpu_log_level { VCPU_LOG_INFO, VCPU_LOG_WARN, VCPU_LOG_ERROR };

/* What the owner of a set hears from its threads (any thread may call these). */
struct vcpu_events {
  void (*log)(void *context, uint32_t index, enum vcpu_log_level level, const char *message);
  /* The VCPU's thread has ended: the last call it makes. `failed` when that is an error. */
  void (*exit)(void *context, uint32_t index, bool failed, const char *reason);
  /* The set is being freed: no call comes after this one (may be NULL). */
  void (*destroy)(void *context);
  void *context;
};

/* Where the value of a pending read goes when the plugin resumes. */
enum vcpu_pending_read { VCPU_PENDING_NONE, VCPU_PENDING_DATA, VCPU_PENDING_HCALL };

/* Longest text of a reason or a log line. */
#define VCPU_MESSAGE_MAX 256

struct vcpu_set;

struct vcpu {
  struct vcpu_set *set;
  uint32_t index;
  int fd;              /* the KVM VCPU, -1 until the set starts */
  struct kvm_run *run; /* its mapping, NULL until the set starts */
  size_t run_size;
  int request_fd;      /* read end of the plugin->host pipe: the set's own duplicate, non-blocking */
  int response_fd;     /* write end of the host->plugin pipe: the set's own duplicate, non-blocking */
  pthread_t thread;
  bool started;        /* the thread was created */
  bool joined;
  pid_t tid;           /* atomic: the thread's id while it runs, else 0 */
  uint32_t pause_pending; /* atomic */
  uint64_t pause_user;    /* atomic */

  /* The conversation; only the VCPU's thread touches these. */
  bool init_unsent;    /* `init` waits for the plugin's first `wait` */
  enum vcpu_pending_read pending;
  uint32_t pending_offset, pending_length; /* VCPU_PENDING_DATA: where in kvm_run */
  uint8_t *request_buf;   /* VCPU_REQUEST_MAX bytes */
  uint8_t *response_buf;
  size_t response_capacity;
  struct message_arena arena; /* where a request decodes (conn.c) */
  char failure[VCPU_MESSAGE_MAX]; /* why the conversation failed (VCPU_SERVE_FAILED) */
};

struct vcpu_set {
  uint32_t count;
  long spin_ns;        /* how long a read of the request pipe polls before it sleeps */
  int wake_fd;         /* an eventfd, readable once shutdown was requested */
  uint32_t shutdown;   /* atomic */
  uint32_t refs;       /* atomic: the owner's reference plus one per running thread */
  struct vcpu_config config;
  struct vcpu_events events;
  struct vcpu vcpus[];
};

/* The protocol's largest VcpuRequest: the host reads up to this much in one read. */
#define VCPU_REQUEST_MAX (256 * 1024)

/*
 * A set of `count` VCPUs over the host's ends of their pipes (duplicated: the
 * caller keeps and closes its own). `spin_us` bounds the polling of a request
 * pipe before sleeping (0: crosvm's plain blocking read). NULL with *err set
 * on failure, leaving nothing behind.
 */
struct vcpu_set *vcpu_set_new(uint32_t count, const int *request_fds, const int *response_fds, long spin_us,
                              struct vcpu_events events, int *err);

/*
 * Starts one thread per VCPU on these KVM VCPU fds, which the set owns from
 * here on even when it fails (it closes them). `run_size` is
 * KVM_GET_VCPU_MMAP_SIZE. Returns 0, or an errno with no thread left running
 * and *failed_call naming what failed (EBUSY: the set was started before).
 */
int vcpu_set_start(struct vcpu_set *set, const int *vcpu_fds, size_t run_size, const char **failed_call);

/* Records a pause for VCPU `index` with this user value and kicks it (reported at its next interrupted run). */
void vcpu_set_pause(struct vcpu_set *set, uint32_t index, uint64_t user);

/*
 * Ends every VCPU: sets the shutdown flag, wakes threads sleeping on a pipe,
 * kicks them out of KVM_RUN. Returns at once; see vcpu_set_reap.
 */
void vcpu_set_shutdown(struct vcpu_set *set);

/* Kicks every running VCPU again (a thread that was between two checks); cheap, idempotent. */
void vcpu_set_kick_all(struct vcpu_set *set);

/* Joins the threads that have ended, without blocking; returns how many still run. */
uint32_t vcpu_set_reap(struct vcpu_set *set);

/*
 * The owner lets go of the set: reaps what has ended, detaches threads still
 * running (they free the set when the last one ends) and drops its reference.
 * Events still come from threads that were running.
 */
void vcpu_set_close(struct vcpu_set *set);

/* Drops one reference (the owner's, through vcpu_set_close, or an ending thread's); the last frees the set. */
void vcpu_set_release(struct vcpu_set *set);

/* The thread body (loop.c); exported for the tests, which may run a VCPU on a thread of their own. */
void *vcpu_thread_main(void *vcpu);

/* Formats a log line and hands it to the owner. */
void vcpu_log(struct vcpu *v, enum vcpu_log_level level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
