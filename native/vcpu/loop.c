/*
 * A VCPU thread: KVM_RUN in a loop, each exit turned into what the protocol
 * says (docs/protocol.md, "The VCPU connection"):
 *
 *  - port IO and MMIO go through the reserved ranges (config.h): an access
 *    nobody reserved is dropped (reads see zeros) and the guest goes on; an
 *    async_write range gets a `no_resume` notification and the guest goes on;
 *    any other reserved access stops the VCPU with `wait{io}` until the
 *    plugin resumes, and a read takes its value from the resume;
 *  - Hyper-V hypercalls and SynIC exits stop it the same way;
 *  - a kick (EINTR) reports a pending pause as `wait{user}`, or ends the
 *    thread when the VM shuts down;
 *  - HLT, SHUTDOWN, an internal error, a failed entry, a `shutdown` request
 *    or a broken pipe end the thread, which reports why.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "conn.h"
#include "kick.h"
#include "vcpu.h"

void vcpu_log(struct vcpu *v, enum vcpu_log_level level, const char *format, ...) {
  char message[VCPU_MESSAGE_MAX];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  v->set->events.log(v->set->events.context, v->index, level, message);
}

/* How the thread ended. */
struct outcome {
  bool failed;
  char reason[VCPU_MESSAGE_MAX];
};

static bool end(struct outcome *out, bool failed, const char *format, ...) __attribute__((format(printf, 3, 4)));
static bool end(struct outcome *out, bool failed, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(out->reason, sizeof out->reason, format, args);
  va_end(args);
  out->failed = failed;
  return false;
}

static bool shutting_down(const struct vcpu *v) { return __atomic_load_n(&v->set->shutdown, __ATOMIC_ACQUIRE) != 0; }

/* Zeros of any access size: what a read of an unreserved address sees, and the `data` of a read's `wait{io}`. */
static const uint8_t ZEROS[4096];

void vcpu_apply_resume(struct vcpu *v, const VcpuResume *resume) {
  const struct {
    const ProtobufCBinaryData *bytes;
    size_t size;
    unsigned long request;
    const char *name;
  } sets[] = {
    {&resume->regs, sizeof(struct kvm_regs), KVM_SET_REGS, "kvm_regs"},
    {&resume->sregs, sizeof(struct kvm_sregs), KVM_SET_SREGS, "kvm_sregs"},
    {&resume->debugregs, sizeof(struct kvm_debugregs), KVM_SET_DEBUGREGS, "kvm_debugregs"},
  };
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
    size_t len = sets[i].bytes->len;
    if (len == 0) continue;
    if (len != sets[i].size) {
      vcpu_log(v, VCPU_LOG_WARN, "registers sent with resume were not applied: struct %s is %zu bytes, got %zu",
               sets[i].name, sets[i].size, len);
      continue;
    }
    if (ioctl(v->fd, sets[i].request, sets[i].bytes->data) < 0) {
      vcpu_log(v, VCPU_LOG_WARN, "registers sent with resume were not applied: %s: %s", sets[i].name, strerror(errno));
    }
  }

  uint8_t *target = NULL;
  size_t length = 0;
  switch (v->pending) {
    case VCPU_PENDING_NONE: break;
    case VCPU_PENDING_DATA:
      target = (uint8_t *)v->run + v->pending_offset;
      length = v->pending_length;
      break;
    case VCPU_PENDING_HCALL:
      target = (uint8_t *)&v->run->hyperv.u.hcall.result;
      length = sizeof v->run->hyperv.u.hcall.result;
      break;
  }
  v->pending = VCPU_PENDING_NONE;
  if (target) {
    size_t copied = resume->data.len < length ? resume->data.len : length;
    if (copied > 0) memcpy(target, resume->data.data, copied); /* an empty bytes field has no data pointer */
    memset(target + copied, 0, length - copied);
  }
}

/*
 * Where a stop left the thread: true to run the guest again (after applying
 * the plugin's resume, if any), false when the thread ends (*out says why).
 */
static bool after_stop(struct vcpu *v, enum vcpu_serve served, VcpuRequest *resume, struct outcome *out) {
  switch (served) {
    case VCPU_SERVE_RESUME:
      if (resume) {
        vcpu_apply_resume(v, resume->resume);
        vcpu_conn_free_request(v, resume);
      }
      return true;
    case VCPU_SERVE_SHUTDOWN: return end(out, false, "shut down on request");
    case VCPU_SERVE_HOST_SHUTDOWN: return end(out, false, "the VM is shutting down");
    case VCPU_SERVE_FAILED:
      /* A pipe that breaks while the VM shuts down (the plugin is gone) is no failure. */
      if (shutting_down(v)) return end(out, false, "the VM is shutting down");
      return end(out, true, "%s", v->failure);
    case VCPU_SERVE_ANSWERED: break;
  }
  return end(out, true, "internal error: a stop ended in state %d", (int)served);
}

/* Stops the VCPU for `reason` until the plugin resumes it. */
static bool stop(struct vcpu *v, VcpuWait *reason, struct outcome *out) {
  VcpuRequest *resume = NULL;
  enum vcpu_serve served = vcpu_conn_stop(v, reason, &resume);
  return after_stop(v, served, resume, out);
}

/* Adds the VCPU's registers to `io` when the call hint matches (regs always, sregs and debugregs per the first matching register hint). */
static void add_hinted_registers(struct vcpu *v, int space, VcpuWaitIo *io, struct kvm_regs *regs, struct kvm_sregs *sregs,
                                 struct kvm_debugregs *debugregs) {
  if (!vcpu_config_hint_matches(&v->set->config, space, io->address, io->is_write)) return;
  if (ioctl(v->fd, KVM_GET_REGS, regs) < 0) {
    vcpu_log(v, VCPU_LOG_WARN, "KVM_GET_REGS for a hinted access: %s", strerror(errno));
    return;
  }
  io->regs.data = (uint8_t *)regs;
  io->regs.len = sizeof *regs;
  uint64_t sends = vcpu_config_hint_sends(&v->set->config, regs->rax, regs->rbx, regs->rcx, regs->rdx);
  if ((sends & VCPU_HINT_SEND_SREGS) && ioctl(v->fd, KVM_GET_SREGS, sregs) == 0) {
    io->sregs.data = (uint8_t *)sregs;
    io->sregs.len = sizeof *sregs;
  }
  if ((sends & VCPU_HINT_SEND_DEBUGREGS) && ioctl(v->fd, KVM_GET_DEBUGREGS, debugregs) == 0) {
    io->debugregs.data = (uint8_t *)debugregs;
    io->debugregs.len = sizeof *debugregs;
  }
}

/*
 * An IO or MMIO access of `length` bytes at `offset` in kvm_run (the written
 * bytes, or where a read's value goes), dispatched through the reserved ranges.
 */
static bool dispatch_access(struct vcpu *v, int space, uint64_t address, bool is_write, size_t offset, size_t length,
                   struct outcome *out) {
  if (offset > v->run_size || length > v->run_size - offset || length > sizeof ZEROS) {
    return end(out, true, "KVM reported an access of %zu bytes at offset %zu of kvm_run", length, offset);
  }
  uint8_t *data = (uint8_t *)v->run + offset;
  enum vcpu_dispatch dispatch = vcpu_config_lookup(&v->set->config, space, address);
  if (dispatch == VCPU_NOT_RESERVED || (dispatch == VCPU_RESERVED_ASYNC && !is_write)) {
    if (!is_write) memset(data, 0, length);
    return true;
  }
  VcpuWaitIo io = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__IO__INIT;
  io.space = space == VCPU_SPACE_MMIO ? PLUGVISOR__PLUGIN__ADDRESS_SPACE__MMIO : PLUGVISOR__PLUGIN__ADDRESS_SPACE__IOPORT;
  io.address = address;
  io.is_write = is_write;
  io.no_resume = dispatch == VCPU_RESERVED_ASYNC;
  io.data.data = is_write ? data : (uint8_t *)ZEROS;
  io.data.len = length;
  VcpuWait wait = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT;
  wait.exit_case = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__EXIT_IO;
  wait.io = &io;
  if (io.no_resume) return after_stop(v, vcpu_conn_push(v, &wait), NULL, out);

  struct kvm_regs regs;
  struct kvm_sregs sregs;
  struct kvm_debugregs debugregs;
  add_hinted_registers(v, space, &io, &regs, &sregs, &debugregs);
  if (!is_write) {
    v->pending = VCPU_PENDING_DATA;
    v->pending_offset = (uint32_t)offset;
    v->pending_length = (uint32_t)length;
  }
  return stop(v, &wait, out);
}

static bool hyperv_exit(struct vcpu *v, struct outcome *out) {
  const struct kvm_hyperv_exit *hv = &v->run->hyperv;
  VcpuWait wait = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT;
  if (hv->type == KVM_EXIT_HYPERV_HCALL) {
    Plugvisor__Plugin__VcpuResponse__Wait__HypervCall call = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__HYPERV_CALL__INIT;
    call.input = hv->u.hcall.input;
    call.params0 = hv->u.hcall.params[0];
    call.params1 = hv->u.hcall.params[1];
    wait.exit_case = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__EXIT_HYPERV_CALL;
    wait.hyperv_call = &call;
    v->pending = VCPU_PENDING_HCALL;
    return stop(v, &wait, out);
  }
  if (hv->type == KVM_EXIT_HYPERV_SYNIC) {
    Plugvisor__Plugin__VcpuResponse__Wait__HypervSynic synic = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__HYPERV_SYNIC__INIT;
    synic.msr = hv->u.synic.msr;
    synic.control = hv->u.synic.control;
    synic.evt_page = hv->u.synic.evt_page;
    synic.msg_page = hv->u.synic.msg_page;
    wait.exit_case = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__EXIT_HYPERV_SYNIC;
    wait.hyperv_synic = &synic;
    return stop(v, &wait, out);
  }
  vcpu_log(v, VCPU_LOG_WARN, "unhandled Hyper-V exit type %u; continuing", hv->type);
  return true;
}

/* The exit KVM_RUN just returned: true to run again, false when the thread ends. */
static bool handle_exit(struct vcpu *v, struct outcome *out) {
  struct kvm_run *run = v->run;
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      return dispatch_access(v, VCPU_SPACE_IOPORT, run->io.port, run->io.direction == KVM_EXIT_IO_OUT, run->io.data_offset,
                    (size_t)run->io.size * run->io.count, out);
    case KVM_EXIT_MMIO:
      return dispatch_access(v, VCPU_SPACE_MMIO, run->mmio.phys_addr, run->mmio.is_write != 0,
                    offsetof(struct kvm_run, mmio.data), run->mmio.len, out);
    case KVM_EXIT_HYPERV: return hyperv_exit(v, out);
    case KVM_EXIT_HLT: return end(out, false, "the guest halted (HLT)");
    case KVM_EXIT_SHUTDOWN: return end(out, false, "the guest shut down (triple fault or SHUTDOWN exit)");
    case KVM_EXIT_INTERNAL_ERROR: return end(out, true, "KVM internal error (suberror %u)", run->internal.suberror);
    case KVM_EXIT_FAIL_ENTRY:
      return end(out, true, "VM entry failed (hardware reason 0x%llx)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
    default:
      vcpu_log(v, VCPU_LOG_WARN, "unhandled exit reason %u; continuing", run->exit_reason);
      return true;
  }
}

/* KVM_RUN was interrupted (a kick): end, report a pending pause, or run on. */
static bool interrupted(struct vcpu *v, struct outcome *out) {
  __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
  if (shutting_down(v)) return end(out, false, "the VM is shutting down");
  if (!__atomic_exchange_n(&v->pause_pending, 0, __ATOMIC_ACQ_REL)) return true;
  Plugvisor__Plugin__VcpuResponse__Wait__User user = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__USER__INIT;
  user.user = __atomic_load_n(&v->pause_user, __ATOMIC_ACQUIRE);
  VcpuWait wait = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT;
  wait.exit_case = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__EXIT_USER;
  wait.user = &user;
  return stop(v, &wait, out);
}

static void run(struct vcpu *v, struct outcome *out) {
  int err = kick_set_target(v->run);
  if (err) {
    end(out, true, "cannot receive kicks: %s", strerror(err));
    return;
  }
  /* Kicks need the id; publish it before looking at the flags they announce (see vcpu_set_pause). */
  __atomic_store_n(&v->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
  /* A pause requested before the thread could be kicked: the first KVM_RUN returns at once and reports it. */
  if (__atomic_load_n(&v->pause_pending, __ATOMIC_SEQ_CST)) __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);

  Plugvisor__Plugin__VcpuResponse__Wait__Init init = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT__INIT;
  VcpuWait wait = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__INIT;
  wait.exit_case = PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__EXIT_INIT;
  wait.init = &init;
  if (!stop(v, &wait, out)) return;
  for (;;) {
    if (shutting_down(v)) {
      end(out, false, "the VM is shutting down");
      return;
    }
    bool go_on;
    if (ioctl(v->fd, KVM_RUN, 0) == 0) {
      go_on = handle_exit(v, out);
    } else if (errno == EINTR) {
      go_on = interrupted(v, out);
    } else {
      go_on = end(out, true, "KVM_RUN: %s", strerror(errno));
    }
    if (!go_on) return;
  }
}

void *vcpu_thread_main(void *arg) {
  struct vcpu *v = arg;
  struct outcome out = {.failed = false, .reason = ""};
  run(v, &out);
  __atomic_store_n(&v->tid, 0, __ATOMIC_SEQ_CST);
  kick_set_target(NULL);
  struct vcpu_set *set = v->set;
  set->events.exit(set->events.context, v->index, out.failed, out.reason);
  vcpu_set_release(set);
  return NULL;
}
