/*
 * The VCPU's side of the plugin protocol, on its pipe pair: reads the
 * plugin's VcpuRequests, answers them, and pushes a `wait` each time the VCPU
 * stops. Every VcpuRequest is handled in vcpu_conn_handle (conn.c). The
 * messages are encoded and decoded by protobuf-c code generated from
 * src/protocol/plugin.proto.
 */
#ifndef PLUGVISOR_VCPU_CONN_H_
#define PLUGVISOR_VCPU_CONN_H_

#include <stddef.h>
#include <stdint.h>

#include "plugin.pb-c.h"
#include "vcpu.h"

typedef Plugvisor__Plugin__VcpuRequest VcpuRequest;
typedef Plugvisor__Plugin__VcpuRequest__Resume VcpuResume;
typedef Plugvisor__Plugin__VcpuResponse VcpuResponse;
typedef Plugvisor__Plugin__VcpuResponse__Wait VcpuWait;
typedef Plugvisor__Plugin__VcpuResponse__Wait__Io VcpuWaitIo;

/* How a stop of the VCPU ended, or where the conversation stands after one request. */
enum vcpu_serve {
  VCPU_SERVE_ANSWERED,      /* (one request) answered; the VCPU stays stopped */
  VCPU_SERVE_RESUME,        /* the plugin resumed: apply *resume, then run */
  VCPU_SERVE_SHUTDOWN,      /* the plugin sent `shutdown` (or its pipe ended) */
  VCPU_SERVE_HOST_SHUTDOWN, /* the host is ending the VM */
  VCPU_SERVE_FAILED,        /* a pipe failed: v->failure says why */
};

/*
 * The VCPU stopped for `reason`: tells the plugin (an `init` waits for the
 * plugin's first `wait`; every other reason is pushed at once), then serves
 * its requests until it resumes or something ends the conversation. On
 * VCPU_SERVE_RESUME, *resume is the plugin's message: the caller applies it and
 * frees it with vcpu_conn_free_request before the next request is read.
 */
enum vcpu_serve vcpu_conn_stop(struct vcpu *v, VcpuWait *reason, VcpuRequest **resume);

/* Pushes a reason that needs no resume (an async write): VCPU_SERVE_RESUME, or why it could not. */
enum vcpu_serve vcpu_conn_push(struct vcpu *v, VcpuWait *reason);

/* Decodes and handles one request of `length` bytes, as read from the plugin's pipe. */
enum vcpu_serve vcpu_conn_handle(struct vcpu *v, const uint8_t *bytes, size_t length, VcpuRequest **resume);

void vcpu_conn_free_request(struct vcpu *v, VcpuRequest *request);

/* Applies a resume (loop.c): its non-empty register sets, then its data to a pending read. */
void vcpu_apply_resume(struct vcpu *v, const VcpuResume *resume);

/* Allocates the conversation's buffers. 0 or an errno. */
int vcpu_conn_init(struct vcpu *v);
void vcpu_conn_destroy(struct vcpu *v);

#endif
