/*
 * Kicking a VCPU thread out of KVM_RUN: a real-time signal whose handler sets
 * `immediate_exit` in the kvm_run the receiving thread registered.
 * Used by the native VCPU threads (vcpu/loop.c) and, through the addon, by the
 * KVM layer's own run loops (src/kvm/vcpu.ts) and their tests.
 */
#ifndef PLUGVISOR_KICK_H_
#define PLUGVISOR_KICK_H_

#include <sys/types.h>

struct kvm_run;

/* Installs the handler of the kick signal (SIGRTMIN), once per process. 0 or an errno. */
int kick_install(void);

/*
 * Makes `run` (or NULL: none) the calling thread's kick target, and unblocks
 * the kick signal on the calling thread. 0 or an errno.
 */
int kick_set_target(struct kvm_run *run);

/* Sends the kick signal to thread `tid` of this process. 0 or an errno. */
int kick_thread(pid_t tid);

#endif
