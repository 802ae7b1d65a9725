/* The N-API face of the native VCPU threads (vcpus.c). */
#ifndef PLUGVISOR_VCPUS_H_
#define PLUGVISOR_VCPUS_H_

#include <node_api.h>

/* createVcpuSet(requestFds, responseFds, spinUs, onEvent): a VcpuSet handle (src/native/index.ts). */
napi_value js_create_vcpu_set(napi_env env, napi_callback_info info);

#endif
