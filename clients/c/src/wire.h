/*
 * Internal: short names for the protobuf-c types generated from
 * src/protocol/plugin.proto (generated into build/gen at build time). What
 * the host's VCPU side uses too (VCPU oneof cases, VCPU_REQUEST, repeated
 * fields, CPUID entries) is in native/protocol/messages.h.
 */
#ifndef CROSVM_PLUGIN_WIRE_H_
#define CROSVM_PLUGIN_WIRE_H_

/* By its path from here, so that any build of crosvm.c finds it. */
#include "../../../native/protocol/messages.h"
#include "plugin.pb-c.h"

typedef Plugvisor__Plugin__CpuidEntry CpuidEntry;
typedef Plugvisor__Plugin__CpuidRequest CpuidRequest;
typedef Plugvisor__Plugin__CpuidResponse CpuidResponse;

typedef Plugvisor__Plugin__MainRequest MainRequest;
typedef Plugvisor__Plugin__MainRequest__Create MainCreate;
typedef Plugvisor__Plugin__MainRequest__Create__IoEvent MainCreateIoEvent;
typedef Plugvisor__Plugin__MainRequest__Create__Memory MainCreateMemory;
typedef Plugvisor__Plugin__MainRequest__Create__IrqEvent MainCreateIrqEvent;
typedef Plugvisor__Plugin__MainRequest__Destroy MainDestroy;
typedef Plugvisor__Plugin__MainRequest__NewConnection MainNewConnection;
typedef Plugvisor__Plugin__MainRequest__GetShutdownEventfd MainGetShutdownEventfd;
typedef Plugvisor__Plugin__MainRequest__CheckExtension MainCheckExtension;
typedef Plugvisor__Plugin__MainRequest__MsrListRequest MainMsrListRequest;
typedef Plugvisor__Plugin__MainRequest__GetNetConfig MainGetNetConfig;
typedef Plugvisor__Plugin__MainRequest__ReserveRange MainReserveRange;
typedef Plugvisor__Plugin__MainRequest__SetIrq MainSetIrq;
typedef Plugvisor__Plugin__MainRequest__SetIrqRouting MainSetIrqRouting;
typedef Plugvisor__Plugin__MainRequest__SetIrqRouting__Route MainRoute;
typedef Plugvisor__Plugin__MainRequest__SetIrqRouting__Route__Irqchip MainRouteIrqchip;
typedef Plugvisor__Plugin__MainRequest__SetIrqRouting__Route__Msi MainRouteMsi;
typedef Plugvisor__Plugin__MainRequest__GetState MainGetState;
typedef Plugvisor__Plugin__MainRequest__SetState MainSetState;
typedef Plugvisor__Plugin__MainRequest__SetIdentityMapAddr MainSetIdentityMapAddr;
typedef Plugvisor__Plugin__MainRequest__PauseVcpus MainPauseVcpus;
typedef Plugvisor__Plugin__MainRequest__GetVcpus MainGetVcpus;
typedef Plugvisor__Plugin__MainRequest__Start MainStart;
typedef Plugvisor__Plugin__MainRequest__SetCallHint MainSetCallHint;
typedef Plugvisor__Plugin__MainRequest__SetCallHint__RegHint MainRegHint;
typedef Plugvisor__Plugin__MainRequest__DirtyLog MainDirtyLog;
typedef Plugvisor__Plugin__MainResponse MainResponse;

typedef Plugvisor__Plugin__VcpuRequest VcpuRequest;
typedef Plugvisor__Plugin__VcpuRequest__Wait VcpuWait;
typedef Plugvisor__Plugin__VcpuRequest__Resume VcpuResume;
typedef Plugvisor__Plugin__VcpuRequest__GetState VcpuGetState;
typedef Plugvisor__Plugin__VcpuRequest__SetState VcpuSetState;
typedef Plugvisor__Plugin__VcpuRequest__GetMsrs VcpuGetMsrs;
typedef Plugvisor__Plugin__VcpuRequest__SetMsrs VcpuSetMsrs;
typedef Plugvisor__Plugin__VcpuRequest__MsrEntry VcpuMsrEntry;
typedef Plugvisor__Plugin__VcpuRequest__SetCpuid VcpuSetCpuid;
typedef Plugvisor__Plugin__VcpuRequest__EnableCapability VcpuEnableCapability;
typedef Plugvisor__Plugin__VcpuResponse VcpuResponse;
typedef Plugvisor__Plugin__VcpuResponse__Wait VcpuResponseWait;

/* Initializers. */
#define CPUID_REQUEST_INIT PLUGVISOR__PLUGIN__CPUID_REQUEST__INIT

/* Oneof cases, main connection (request numbering). */
#define MREQ(name) PLUGVISOR__PLUGIN__MAIN_REQUEST__MESSAGE_##name
#define MRESP(name) PLUGVISOR__PLUGIN__MAIN_RESPONSE__MESSAGE_##name

/*
 * A request carrying `member` in its oneof, as VCPU_REQUEST (messages.h):
 * MAIN_REQUEST(SET_IRQ, set_irq, &set) is the MainRequest whose case is
 * MREQ(SET_IRQ) and whose set_irq is &set.
 */
#define MAIN_REQUEST(name, field, member)                                \
  (&MESSAGE(MainRequest, plugvisor__plugin__main_request__descriptor,   \
            .message_case = MREQ(name), .field = (member)))

#endif /* CROSVM_PLUGIN_WIRE_H_ */
