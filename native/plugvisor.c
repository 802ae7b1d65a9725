/*
 * plugvisor.node: the system calls plugvisor needs, as an N-API addon, and
 * (vcpus.c) the native VCPU threads.
 *
 * This file holds no protocol and no policy: one small function per system
 * call, argument checks with clear TypeErrors, and errno turned into an
 * ErrnoError (addon.c). Numbers from kernel and libc headers are exported as
 * `constants`, and struct layouts as `layouts` (layouts.c), computed by the C
 * compiler. src/native/index.ts is the typed contract.
 */
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

/* Tap devices and network interfaces */
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>

#include "addon.h"
#include "layouts.h"
#include "vcpu/kick.h"
#include "vcpus.h"

/* The kernel's SCM_MAX_FD: get_vcpus sends two per VCPU, 128 for 64 VCPUs. */
#define MAX_SEND_FDS 253
#define MAX_RECV_FDS 253

/* ------------------------------------------------------------------------ */
/* Constants                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
  const char *name;
  int64_t value;
  bool is_ioctl; /* used to name the request in ioctl error messages */
} constant_t;

#define K(name) {#name, (int64_t)(name), false}
#define IOC(name) {#name, (int64_t)(name), true}
#define SZ(name, type) {name, (int64_t)sizeof(type), false}
#define OFF(name, type, member) {name, (int64_t)offsetof(type, member), false}
/* Offsets inside struct ifreq's ifr_ifru union (what ifreqIoctl passes in and out). */
#define IFRU_OFF(name, member) \
  {name, (int64_t)(offsetof(struct ifreq, member) - offsetof(struct ifreq, ifr_ifru)), false}

static const constant_t constants[] = {
  /* libc / kernel flags */
  K(O_RDWR), K(O_RDONLY), K(O_CLOEXEC), K(O_NONBLOCK),
  K(EFD_CLOEXEC), K(EFD_NONBLOCK),
  K(MFD_CLOEXEC), K(MFD_ALLOW_SEALING),
  K(F_GETFD), K(F_SETFD), K(FD_CLOEXEC), K(F_GETFL), K(F_SETFL),
  K(F_ADD_SEALS), K(F_GET_SEALS), K(F_SEAL_SEAL), K(F_SEAL_SHRINK), K(F_SEAL_GROW), K(F_SEAL_WRITE),
  K(F_SETPIPE_SZ), K(F_GETPIPE_SZ),
  K(PROT_READ), K(PROT_WRITE), K(MAP_SHARED), K(MAP_PRIVATE), K(MAP_ANONYMOUS), K(MAP_NORESERVE),
  K(POLLIN), K(POLLOUT), K(POLLERR), K(POLLHUP), K(POLLNVAL),
  /* SIGRTMIN and PAGE_SIZE are runtime values: added in init() */

  /* /dev/kvm ioctls */
  IOC(KVM_GET_API_VERSION), IOC(KVM_CREATE_VM), IOC(KVM_CHECK_EXTENSION), IOC(KVM_GET_VCPU_MMAP_SIZE),
  IOC(KVM_GET_SUPPORTED_CPUID), IOC(KVM_GET_EMULATED_CPUID), IOC(KVM_GET_MSR_INDEX_LIST),
  /* VM ioctls */
  IOC(KVM_CREATE_VCPU), IOC(KVM_CREATE_IRQCHIP), IOC(KVM_CREATE_PIT2), IOC(KVM_SET_USER_MEMORY_REGION),
  IOC(KVM_IOEVENTFD), IOC(KVM_IRQFD), IOC(KVM_IRQ_LINE), IOC(KVM_SET_GSI_ROUTING),
  IOC(KVM_GET_IRQCHIP), IOC(KVM_SET_IRQCHIP), IOC(KVM_GET_PIT2), IOC(KVM_SET_PIT2),
  IOC(KVM_GET_CLOCK), IOC(KVM_SET_CLOCK), IOC(KVM_SET_IDENTITY_MAP_ADDR), IOC(KVM_SET_TSS_ADDR),
  IOC(KVM_GET_DIRTY_LOG), IOC(KVM_ENABLE_CAP),
  /* VCPU ioctls */
  IOC(KVM_RUN), IOC(KVM_GET_REGS), IOC(KVM_SET_REGS), IOC(KVM_GET_SREGS), IOC(KVM_SET_SREGS),
  IOC(KVM_GET_FPU), IOC(KVM_SET_FPU), IOC(KVM_GET_DEBUGREGS), IOC(KVM_SET_DEBUGREGS),
  IOC(KVM_GET_LAPIC), IOC(KVM_SET_LAPIC), IOC(KVM_GET_MP_STATE), IOC(KVM_SET_MP_STATE),
  IOC(KVM_GET_XCRS), IOC(KVM_SET_XCRS), IOC(KVM_GET_VCPU_EVENTS), IOC(KVM_SET_VCPU_EVENTS),
  IOC(KVM_GET_MSRS), IOC(KVM_SET_MSRS), IOC(KVM_SET_CPUID2), IOC(KVM_GET_SUPPORTED_HV_CPUID),

  /* capabilities */
  K(KVM_CAP_IRQCHIP), K(KVM_CAP_USER_MEMORY), K(KVM_CAP_IOEVENTFD), K(KVM_CAP_IRQFD),
  K(KVM_CAP_IRQFD_RESAMPLE), K(KVM_CAP_PIT2), K(KVM_CAP_IMMEDIATE_EXIT), K(KVM_CAP_READONLY_MEM),
  K(KVM_CAP_HYPERV_SYNIC), K(KVM_CAP_HYPERV_SYNIC2), K(KVM_CAP_HYPERV_CPUID), K(KVM_CAP_EXT_EMUL_CPUID),
  K(KVM_CAP_XCRS), K(KVM_CAP_DEBUGREGS), K(KVM_CAP_VCPU_EVENTS), K(KVM_CAP_SET_IDENTITY_MAP_ADDR),
  K(KVM_CAP_NR_VCPUS), K(KVM_CAP_MAX_VCPUS), K(KVM_CAP_NR_MEMSLOTS),

  /* flags and enumerations */
  K(KVM_MEM_LOG_DIRTY_PAGES), K(KVM_MEM_READONLY),
  K(KVM_IOEVENTFD_FLAG_DATAMATCH), K(KVM_IOEVENTFD_FLAG_PIO), K(KVM_IOEVENTFD_FLAG_DEASSIGN),
  K(KVM_IRQFD_FLAG_DEASSIGN), K(KVM_IRQFD_FLAG_RESAMPLE),
  K(KVM_IRQ_ROUTING_IRQCHIP), K(KVM_IRQ_ROUTING_MSI),
  K(KVM_IRQCHIP_PIC_MASTER), K(KVM_IRQCHIP_PIC_SLAVE), K(KVM_IRQCHIP_IOAPIC),
  K(KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
  K(KVM_EXIT_UNKNOWN), K(KVM_EXIT_EXCEPTION), K(KVM_EXIT_IO), K(KVM_EXIT_HYPERCALL), K(KVM_EXIT_DEBUG),
  K(KVM_EXIT_HLT), K(KVM_EXIT_MMIO), K(KVM_EXIT_IRQ_WINDOW_OPEN), K(KVM_EXIT_SHUTDOWN),
  K(KVM_EXIT_FAIL_ENTRY), K(KVM_EXIT_INTR), K(KVM_EXIT_INTERNAL_ERROR), K(KVM_EXIT_SYSTEM_EVENT),
  K(KVM_EXIT_HYPERV), K(KVM_EXIT_HYPERV_SYNIC), K(KVM_EXIT_HYPERV_HCALL),
  K(KVM_EXIT_IO_IN), K(KVM_EXIT_IO_OUT),
  K(KVM_MP_STATE_RUNNABLE), K(KVM_MP_STATE_HALTED),

  /* struct sizes */
  SZ("SIZEOF_KVM_RUN", struct kvm_run),
  SZ("SIZEOF_KVM_REGS", struct kvm_regs),
  SZ("SIZEOF_KVM_SREGS", struct kvm_sregs),
  SZ("SIZEOF_KVM_FPU", struct kvm_fpu),
  SZ("SIZEOF_KVM_DEBUGREGS", struct kvm_debugregs),
  SZ("SIZEOF_KVM_LAPIC_STATE", struct kvm_lapic_state),
  SZ("SIZEOF_KVM_MP_STATE", struct kvm_mp_state),
  SZ("SIZEOF_KVM_XCRS", struct kvm_xcrs),
  SZ("SIZEOF_KVM_VCPU_EVENTS", struct kvm_vcpu_events),
  SZ("SIZEOF_KVM_PIC_STATE", struct kvm_pic_state),
  SZ("SIZEOF_KVM_IOAPIC_STATE", struct kvm_ioapic_state),
  SZ("SIZEOF_KVM_PIT_STATE2", struct kvm_pit_state2),
  SZ("SIZEOF_KVM_CLOCK_DATA", struct kvm_clock_data),
  SZ("SIZEOF_KVM_IRQCHIP", struct kvm_irqchip),
  SZ("SIZEOF_KVM_PIT_CONFIG", struct kvm_pit_config),
  SZ("SIZEOF_KVM_USERSPACE_MEMORY_REGION", struct kvm_userspace_memory_region),
  SZ("SIZEOF_KVM_IOEVENTFD", struct kvm_ioeventfd),
  SZ("SIZEOF_KVM_IRQFD", struct kvm_irqfd),
  SZ("SIZEOF_KVM_IRQ_LEVEL", struct kvm_irq_level),
  SZ("SIZEOF_KVM_IRQ_ROUTING", struct kvm_irq_routing),
  SZ("SIZEOF_KVM_IRQ_ROUTING_ENTRY", struct kvm_irq_routing_entry),
  SZ("SIZEOF_KVM_CPUID2", struct kvm_cpuid2),
  SZ("SIZEOF_KVM_CPUID_ENTRY2", struct kvm_cpuid_entry2),
  SZ("SIZEOF_KVM_MSRS", struct kvm_msrs),
  SZ("SIZEOF_KVM_MSR_ENTRY", struct kvm_msr_entry),
  SZ("SIZEOF_KVM_MSR_LIST", struct kvm_msr_list),
  SZ("SIZEOF_KVM_DIRTY_LOG", struct kvm_dirty_log),
  SZ("SIZEOF_KVM_ENABLE_CAP", struct kvm_enable_cap),
  SZ("SIZEOF_KVM_SEGMENT", struct kvm_segment),

  /* struct kvm_run field offsets */
  OFF("KVM_RUN_REQUEST_INTERRUPT_WINDOW", struct kvm_run, request_interrupt_window),
  OFF("KVM_RUN_IMMEDIATE_EXIT", struct kvm_run, immediate_exit),
  OFF("KVM_RUN_EXIT_REASON", struct kvm_run, exit_reason),
  OFF("KVM_RUN_IO_DIRECTION", struct kvm_run, io.direction),
  OFF("KVM_RUN_IO_SIZE", struct kvm_run, io.size),
  OFF("KVM_RUN_IO_PORT", struct kvm_run, io.port),
  OFF("KVM_RUN_IO_COUNT", struct kvm_run, io.count),
  OFF("KVM_RUN_IO_DATA_OFFSET", struct kvm_run, io.data_offset),
  OFF("KVM_RUN_MMIO_PHYS_ADDR", struct kvm_run, mmio.phys_addr),
  OFF("KVM_RUN_MMIO_DATA", struct kvm_run, mmio.data),
  OFF("KVM_RUN_MMIO_LEN", struct kvm_run, mmio.len),
  OFF("KVM_RUN_MMIO_IS_WRITE", struct kvm_run, mmio.is_write),
  OFF("KVM_RUN_HYPERV_TYPE", struct kvm_run, hyperv.type),
  OFF("KVM_RUN_HYPERV_SYNIC_MSR", struct kvm_run, hyperv.u.synic.msr),
  OFF("KVM_RUN_HYPERV_SYNIC_CONTROL", struct kvm_run, hyperv.u.synic.control),
  OFF("KVM_RUN_HYPERV_SYNIC_EVT_PAGE", struct kvm_run, hyperv.u.synic.evt_page),
  OFF("KVM_RUN_HYPERV_SYNIC_MSG_PAGE", struct kvm_run, hyperv.u.synic.msg_page),
  OFF("KVM_RUN_HYPERV_HCALL_INPUT", struct kvm_run, hyperv.u.hcall.input),
  OFF("KVM_RUN_HYPERV_HCALL_RESULT", struct kvm_run, hyperv.u.hcall.result),
  OFF("KVM_RUN_HYPERV_HCALL_PARAMS", struct kvm_run, hyperv.u.hcall.params),
  OFF("KVM_RUN_INTERNAL_SUBERROR", struct kvm_run, internal.suberror),
  OFF("KVM_RUN_FAIL_ENTRY_REASON", struct kvm_run, fail_entry.hardware_entry_failure_reason),

  /* tap devices (<linux/if_tun.h>) and network interfaces (<net/if.h>, <linux/sockios.h>) */
  K(EBADFD), K(F_DUPFD_CLOEXEC), K(AF_INET), K(SOCK_DGRAM), K(SOCK_CLOEXEC), K(ARPHRD_ETHER), K(IFNAMSIZ),
  K(IFF_TAP), K(IFF_NO_PI), K(IFF_PERSIST), K(IFF_UP),
  IOC(TUNSETIFF), IOC(TUNGETIFF), IOC(TUNGETFEATURES),
  IOC(SIOCGIFFLAGS), IOC(SIOCSIFFLAGS), IOC(SIOCGIFADDR), IOC(SIOCSIFADDR),
  IOC(SIOCGIFNETMASK), IOC(SIOCSIFNETMASK), IOC(SIOCGIFHWADDR), IOC(SIOCSIFHWADDR), IOC(SIOCGIFINDEX),
  {"SIZEOF_IFREQ_IFRU", (int64_t)sizeof(((struct ifreq *)0)->ifr_ifru), false},
  IFRU_OFF("IFREQ_FLAGS", ifr_flags),
  IFRU_OFF("IFREQ_ADDR", ifr_addr),
  IFRU_OFF("IFREQ_NETMASK", ifr_netmask),
  IFRU_OFF("IFREQ_HWADDR", ifr_hwaddr),
  OFF("SOCKADDR_FAMILY", struct sockaddr, sa_family),
  OFF("SOCKADDR_DATA", struct sockaddr, sa_data),
  OFF("SOCKADDR_IN_ADDR", struct sockaddr_in, sin_addr),
};

#define NCONSTANTS (sizeof(constants) / sizeof(constants[0]))

/* The name of a KVM ioctl request, for error messages; NULL if unknown. */
static const char *ioctl_name(unsigned long request) {
  for (size_t i = 0; i < NCONSTANTS; i++)
    if (constants[i].is_ioctl && (unsigned long)constants[i].value == request) return constants[i].name;
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Files and ioctls                                                          */
/* ------------------------------------------------------------------------ */

static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int flags;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  char *path = get_string(env, argv[0], "path");
  if (!path) return NULL;
  if (!get_int(env, argv[1], "flags", &flags)) {
    free(path);
    return NULL;
  }
  int fd;
  do fd = open(path, flags, 0600); while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int err = errno;
    napi_value r = throw_errno(env, err, "open", path);
    free(path);
    return r;
  }
  free(path);
  return make_fd(env, fd);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !get_int(env, argv[0], "fd", &fd)) return NULL;
  /* Never retry close: on Linux the fd is gone even when it reports EINTR. */
  if (close(fd) < 0) return throw_errno(env, errno, "close", NULL);
  return make_undefined(env);
}

/* The ioctl request: a number up to 2^32 (an int32 is taken as unsigned) or a BigInt. */
static bool get_request(napi_env env, napi_value value, unsigned long *out) {
  napi_valuetype type;
  CHECK_BOOL(napi_typeof(env, value, &type));
  if (type == napi_number) {
    double d;
    if (!get_integer(env, value, "request", (double)INT32_MIN, (double)UINT32_MAX, &d)) return false;
    *out = d < 0 ? (unsigned long)(uint32_t)(int32_t)d : (unsigned long)d;
    return true;
  }
  uint64_t word;
  if (!get_word(env, value, "request", &word)) return false;
  *out = (unsigned long)word;
  return true;
}

static napi_value throw_ioctl(napi_env env, int err, unsigned long request) {
  const char *name = ioctl_name(request);
  char prefix[40];
  if (name) return throw_errno(env, err, "ioctl", name);
  snprintf(prefix, sizeof prefix, "ioctl(0x%lx)", request);
  return throw_errno_prefixed(env, err, "ioctl", prefix);
}

/* No EINTR retry here: KVM_RUN must report a kick by throwing EINTR. */
static napi_value js_ioctl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  unsigned long request;
  uint64_t arg;
  if (!get_args(env, info, 3, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_request(env, argv[1], &request) || !get_word(env, argv[2], "arg", &arg))
    return NULL;
  int r = ioctl(fd, request, (unsigned long)arg);
  if (r < 0) return throw_ioctl(env, errno, request);
  return make_int(env, r);
}

static napi_value js_ioctl_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  unsigned long request;
  uint8_t *data;
  size_t length;
  if (!get_args(env, info, 3, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_request(env, argv[1], &request) || !get_bytes(env, argv[2], "buf", &data, &length))
    return NULL;
  int r = ioctl(fd, request, data);
  if (r < 0) return throw_ioctl(env, errno, request);
  return make_int(env, r);
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

static napi_value js_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  size_t length, offset;
  int prot, flags, fd;
  if (!get_args(env, info, 5, argv, NULL) || !get_size(env, argv[0], "length", &length) ||
      !get_int(env, argv[1], "prot", &prot) || !get_int(env, argv[2], "flags", &flags) ||
      !get_int(env, argv[3], "fd", &fd) || !get_size(env, argv[4], "offset", &offset))
    return NULL;
  void *address = mmap(NULL, length, prot, flags, fd, (off_t)offset);
  if (address == MAP_FAILED) return throw_errno(env, errno, "mmap", NULL);
  napi_value result = make_pointer(env, address);
  if (!result) munmap(address, length);
  return result;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint64_t address;
  size_t length;
  if (!get_args(env, info, 2, argv, NULL) || !get_word(env, argv[0], "address", &address) ||
      !get_size(env, argv[1], "length", &length))
    return NULL;
  if (munmap((void *)(uintptr_t)address, length) < 0) return throw_errno(env, errno, "munmap", NULL);
  return make_undefined(env);
}

static napi_value js_array_buffer_at(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  uint64_t address;
  size_t length;
  if (!get_args(env, info, 2, argv, NULL) || !get_word(env, argv[0], "address", &address) ||
      !get_size(env, argv[1], "length", &length))
    return NULL;
  if (address == 0) return range_error(env, "address", "non-zero"), NULL;
  /* No finalizer: the mapping belongs to whoever mmap'ed it. */
  CHECK(napi_create_external_arraybuffer(env, (void *)(uintptr_t)address, length, NULL, NULL, &result));
  return result;
}

static napi_value js_address_of(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint8_t *data;
  size_t length;
  if (!get_args(env, info, 1, argv, NULL) || !get_bytes(env, argv[0], "buf", &data, &length)) return NULL;
  return make_pointer(env, data);
}

/* ------------------------------------------------------------------------ */
/* Descriptors                                                               */
/* ------------------------------------------------------------------------ */

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  double initval;
  int flags;
  if (!get_args(env, info, 2, argv, NULL) || !get_integer(env, argv[0], "initval", 0, UINT32_MAX, &initval) ||
      !get_int(env, argv[1], "flags", &flags))
    return NULL;
  int fd = eventfd((unsigned int)initval, flags);
  if (fd < 0) return throw_errno(env, errno, "eventfd", NULL);
  return make_fd(env, fd);
}

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  unsigned int flags;
  int iflags;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  char *name = get_string(env, argv[0], "name");
  if (!name) return NULL;
  if (!get_int(env, argv[1], "flags", &iflags)) {
    free(name);
    return NULL;
  }
  flags = (unsigned int)iflags;
  int fd = memfd_create(name, flags);
  int err = errno;
  free(name);
  if (fd < 0) return throw_errno(env, err, "memfd_create", NULL);
  return make_fd(env, fd);
}

static napi_value js_ftruncate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  size_t length;
  if (!get_args(env, info, 2, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_size(env, argv[1], "length", &length))
    return NULL;
  int r;
  do r = ftruncate(fd, (off_t)length); while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "ftruncate", NULL);
  return make_undefined(env);
}

static napi_value js_fstat_size(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  struct stat st;
  if (!get_args(env, info, 1, argv, NULL) || !get_int(env, argv[0], "fd", &fd)) return NULL;
  if (fstat(fd, &st) < 0) return throw_errno(env, errno, "fstat", NULL);
  return make_int(env, (int64_t)st.st_size);
}

static napi_value js_fcntl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd, cmd, arg;
  if (!get_args(env, info, 3, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_int(env, argv[1], "cmd", &cmd) || !get_int(env, argv[2], "arg", &arg))
    return NULL;
  int r = fcntl(fd, cmd, arg);
  if (r < 0) return throw_errno(env, errno, "fcntl", NULL);
  return make_int(env, r);
}

static napi_value js_pipe2(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int flags, fds[2];
  if (!get_args(env, info, 1, argv, NULL) || !get_int(env, argv[0], "flags", &flags)) return NULL;
  if (pipe2(fds, flags) < 0) return throw_errno(env, errno, "pipe2", NULL);
  return make_fd_pair(env, fds);
}

static napi_value js_seqpacket_pair(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool cloexec;
  int fds[2];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_get_value_bool(env, argv[0], &cloexec) != napi_ok) return type_error(env, "cloexec", "a boolean"), NULL;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | (cloexec ? SOCK_CLOEXEC : 0), 0, fds) < 0)
    return throw_errno(env, errno, "socketpair", NULL);
  return make_fd_pair(env, fds);
}

/* ------------------------------------------------------------------------ */
/* I/O                                                                       */
/* ------------------------------------------------------------------------ */

static bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

/* What a transfer on a non-blocking fd returns: the bytes moved, -1 when it would block, or a throw. */
static napi_value transfer_result(napi_env env, ssize_t n, const char *syscall_name, const char *what) {
  if (n < 0) return would_block(errno) ? make_int(env, -1) : throw_errno(env, errno, syscall_name, what);
  return make_int(env, n);
}

/* read(fd, buf, offset, length) and write(fd, buf, offset, length). */
static napi_value read_or_write(napi_env env, napi_callback_info info, bool is_write) {
  napi_value argv[4];
  int fd;
  uint8_t *data;
  size_t length;
  if (!get_args(env, info, 4, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_byte_range(env, argv + 1, &data, &length))
    return NULL;
  ssize_t n;
  do n = is_write ? write(fd, data, length) : read(fd, data, length); while (n < 0 && errno == EINTR);
  return transfer_result(env, n, is_write ? "write" : "read", NULL);
}

static napi_value js_read(napi_env env, napi_callback_info info) { return read_or_write(env, info, false); }

static napi_value js_write(napi_env env, napi_callback_info info) { return read_or_write(env, info, true); }

static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int fd;
  uint64_t value;
  if (!get_args(env, info, 1, argv, NULL) || !get_int(env, argv[0], "fd", &fd)) return NULL;
  ssize_t n;
  do n = read(fd, &value, sizeof value); while (n < 0 && errno == EINTR);
  if (n < 0) return transfer_result(env, n, "read", "(eventfd)");
  if (n != (ssize_t)sizeof value) return throw_errno(env, EIO, "read", "(eventfd: short read)");
  if (value <= (uint64_t)MAX_SAFE_INTEGER) return make_int(env, (int64_t)value);
  CHECK(napi_create_bigint_uint64(env, value, &result));
  return result;
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t value;
  if (!get_args(env, info, 2, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_word(env, argv[1], "value", &value))
    return NULL;
  ssize_t n;
  do n = write(fd, &value, sizeof value); while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, errno, "write", "(eventfd)");
  return make_undefined(env);
}

static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd;
  uint8_t *data;
  size_t size, length;
  if (!get_args(env, info, 4, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_bytes(env, argv[1], "buf", &data, &size) || !get_size(env, argv[2], "length", &length))
    return NULL;
  if (length > size) return range_error(env, "length", "at most the buffer's length"), NULL;

  bool is_array = false;
  uint32_t nfds = 0;
  CHECK(napi_is_array(env, argv[3], &is_array));
  if (!is_array) return type_error(env, "fds", "an array of fds"), NULL;
  CHECK(napi_get_array_length(env, argv[3], &nfds));
  if (nfds > MAX_SEND_FDS) return throw_errno(env, EINVAL, "sendmsg", "(more than 253 fds, the kernel's SCM_MAX_FD)");

  union {
    char buf[CMSG_SPACE(MAX_SEND_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    int fds[MAX_SEND_FDS];
    for (uint32_t i = 0; i < nfds; i++) {
      napi_value element;
      CHECK(napi_get_element(env, argv[3], i, &element));
      if (!get_int(env, element, "fds[i]", &fds[i])) return NULL;
    }
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  return transfer_result(env, n, "sendmsg", NULL);
}

static void close_all(const int *fds, size_t count) {
  for (size_t i = 0; i < count; i++) close(fds[i]);
}

static napi_value js_recvmsg(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint8_t *data;
  size_t size, max_fds;
  if (!get_args(env, info, 3, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_bytes(env, argv[1], "buf", &data, &size))
    return NULL;
  double d;
  if (!get_integer(env, argv[2], "maxFds", 0, MAX_RECV_FDS, &d)) return NULL;
  max_fds = (size_t)d;

  union {
    char buf[CMSG_SPACE(MAX_RECV_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = size};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (max_fds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(max_fds * sizeof(int));
  }
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (!would_block(errno)) return throw_errno(env, errno, "recvmsg", NULL);
    napi_value null;
    CHECK(napi_get_null(env, &null));
    return null;
  }

  /* Collect every fd that arrived (even on truncation) so none can leak. */
  int fds[MAX_RECV_FDS];
  size_t nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count && nfds < MAX_RECV_FDS; i++)
      memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  bool truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
  if (nfds > max_fds) {
    /* CMSG_SPACE rounds up, so the kernel may pass more than asked: drop those. */
    close_all(fds + max_fds, nfds - max_fds);
    nfds = max_fds;
    truncated = true;
  }

  napi_value result, bytes, fd_array, trunc_value;
  if (napi_create_object(env, &result) != napi_ok || napi_create_int64(env, n, &bytes) != napi_ok ||
      napi_create_array_with_length(env, nfds, &fd_array) != napi_ok ||
      napi_get_boolean(env, truncated, &trunc_value) != napi_ok)
    goto fail;
  for (size_t i = 0; i < nfds; i++) {
    napi_value v;
    if (napi_create_int32(env, fds[i], &v) != napi_ok || napi_set_element(env, fd_array, (uint32_t)i, v) != napi_ok)
      goto fail;
  }
  if (napi_set_named_property(env, result, "bytes", bytes) != napi_ok ||
      napi_set_named_property(env, result, "fds", fd_array) != napi_ok ||
      napi_set_named_property(env, result, "truncated", trunc_value) != napi_ok)
    goto fail;
  return result;

fail:
  close_all(fds, nfds);
  return napi_failed(env, "building the recvmsg result");
}

static int64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static napi_value js_poll(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd, events, timeout;
  if (!get_args(env, info, 3, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_int(env, argv[1], "events", &events) || !get_int(env, argv[2], "timeoutMs", &timeout))
    return NULL;
  struct pollfd p = {.fd = fd, .events = (short)events};
  int64_t deadline = timeout > 0 ? monotonic_ms() + timeout : 0;
  int r;
  for (;;) {
    r = poll(&p, 1, timeout);
    if (r >= 0 || errno != EINTR) break;
    if (timeout > 0) { /* retry with the time that is left */
      int64_t left = deadline - monotonic_ms();
      timeout = left > 0 ? (int)left : 0;
    }
  }
  if (r < 0) return throw_errno(env, errno, "poll", NULL);
  return make_int(env, r == 0 ? 0 : p.revents);
}

/* ------------------------------------------------------------------------ */
/* Processes                                                                 */
/* ------------------------------------------------------------------------ */

static void free_string_array(char **strings) {
  if (!strings) return;
  for (char **s = strings; *s; s++) free(*s);
  free(strings);
}

/* A NULL-terminated, malloc'ed copy of a JS array of strings; free_string_array() it. */
static char **get_string_array(napi_env env, napi_value value, const char *name) {
  bool is_array = false;
  uint32_t count;
  if (napi_is_array(env, value, &is_array) != napi_ok) return napi_failed(env, "napi_is_array"), NULL;
  if (!is_array) return type_error(env, name, "an array of strings"), NULL;
  if (napi_get_array_length(env, value, &count) != napi_ok) return napi_failed(env, "napi_get_array_length"), NULL;
  char **strings = calloc((size_t)count + 1, sizeof *strings);
  if (!strings) return throw_errno(env, ENOMEM, "calloc", NULL), NULL;
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    if (napi_get_element(env, value, i, &element) != napi_ok) {
      free_string_array(strings);
      return napi_failed(env, "napi_get_element"), NULL;
    }
    strings[i] = get_string(env, element, name);
    if (!strings[i]) {
      free_string_array(strings);
      return NULL;
    }
  }
  return strings;
}

/* For a child the caller will never hear of: it must not run on, nor stay a zombie. */
static void kill_and_reap(pid_t pid) {
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/*
 * spawn(file, argv, envp, fds, newSession): posix_spawnp(3). fd i of the
 * child is fds[i] of this process, passed with dup2 even when fds[i] is i
 * (node makes its own 0, 1 and 2 close-on-exec); every other descriptor of
 * this process is close-on-exec. Returns
 * { pid, pidfd }: pidfd_open(2) of the child, which polls readable once it
 * has ended (close-on-exec, as every pidfd). glibc's posix_spawn shares the
 * caller's memory until the exec (no copy of the page tables, as fork makes)
 * and reports a failed exec as its result.
 */
static napi_value js_spawn(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  bool new_session = false;
  uint32_t nfds = 0;
  if (!get_args(env, info, 5, argv, NULL)) return NULL;
  bool is_array = false;
  CHECK(napi_is_array(env, argv[3], &is_array));
  if (!is_array) return type_error(env, "fds", "an array of descriptors"), NULL;
  CHECK(napi_get_array_length(env, argv[3], &nfds));
  if (nfds > 1024) return range_error(env, "fds", "at most 1024 descriptors"), NULL;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[4], &type));
  if (type != napi_boolean) return type_error(env, "newSession", "a boolean"), NULL;
  CHECK(napi_get_value_bool(env, argv[4], &new_session));

  napi_value result = NULL;
  char *file = NULL;
  char **args = NULL, **envp = NULL;
  int *copies = NULL;
  bool actions_made = false, attr_made = false;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;

  if (!(file = get_string(env, argv[0], "file")) || !(args = get_string_array(env, argv[1], "argv")) ||
      !(envp = get_string_array(env, argv[2], "envp")))
    goto out;
  if (!(copies = malloc((nfds ? nfds : 1) * sizeof *copies))) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    goto out;
  }
  for (uint32_t i = 0; i < nfds; i++) copies[i] = -1;
  int err = posix_spawn_file_actions_init(&actions);
  if (err) {
    throw_errno(env, err, "posix_spawn_file_actions_init", NULL);
    goto out;
  }
  actions_made = true;
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value element;
    double value;
    if (napi_get_element(env, argv[3], i, &element) != napi_ok) {
      napi_failed(env, "napi_get_element");
      goto out;
    }
    if (!get_integer(env, element, "fds[i]", 0, INT32_MAX, &value)) goto out;
    /*
     * The child's dup2 reads from a close-on-exec copy numbered above every
     * target, so that no target overwrites a source still to be read and
     * no source is its own target (dup2 onto itself would keep the flag).
     */
    copies[i] = fcntl((int)value, F_DUPFD_CLOEXEC, (int)nfds);
    if (copies[i] < 0) {
      throw_errno(env, errno, "fcntl", "(F_DUPFD_CLOEXEC)");
      goto out;
    }
    err = posix_spawn_file_actions_adddup2(&actions, copies[i], (int)i);
    if (err) {
      throw_errno(env, err, "posix_spawn_file_actions_adddup2", NULL);
      goto out;
    }
  }
  err = posix_spawnattr_init(&attr);
  if (err) {
    throw_errno(env, err, "posix_spawnattr_init", NULL);
    goto out;
  }
  attr_made = true;
  /*
   * What a fresh process expects: every signal at its default action (node
   * ignores SIGPIPE, and an ignored signal stays ignored across exec) and
   * none blocked. Every bit of the set, not sigfillset(): that leaves out
   * glibc's two internal signals, which glibc's posix_spawn would then set
   * to SIG_IGN in the child, and so in the program it runs (as fork + exec
   * does not).
   */
  sigset_t all, none;
  memset(&all, 0xff, sizeof all);
  sigemptyset(&none);
  short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (new_session ? POSIX_SPAWN_SETSID : 0);
  if ((err = posix_spawnattr_setsigdefault(&attr, &all)) || (err = posix_spawnattr_setsigmask(&attr, &none)) ||
      (err = posix_spawnattr_setflags(&attr, flags))) {
    throw_errno(env, err, "posix_spawnattr", NULL);
    goto out;
  }
  pid_t pid;
  err = posix_spawnp(&pid, file, &actions, &attr, args, envp);
  if (err) {
    char prefix[256];
    snprintf(prefix, sizeof prefix, "cannot execute %s", file);
    throw_errno_prefixed(env, err, "posix_spawnp", prefix);
    goto out;
  }
  /*
   * A pidfd at once, while the child cannot have been reaped (by anyone:
   * only its parent can) and its pid cannot be another process's.
   */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    int open_err = errno;
    kill_and_reap(pid);
    throw_errno(env, open_err, "pidfd_open", "(for the process just started, now killed)");
    goto out;
  }
  napi_value pid_value, pidfd_value;
  if (napi_create_object(env, &result) != napi_ok || napi_create_int32(env, pid, &pid_value) != napi_ok ||
      napi_create_int32(env, pidfd, &pidfd_value) != napi_ok ||
      napi_set_named_property(env, result, "pid", pid_value) != napi_ok ||
      napi_set_named_property(env, result, "pidfd", pidfd_value) != napi_ok) {
    /* The caller never learns of the child: do not leave it running. */
    close(pidfd);
    kill_and_reap(pid);
    result = napi_failed(env, "building the spawn result");
  }

out:
  if (copies)
    for (uint32_t i = 0; i < nfds; i++)
      if (copies[i] >= 0) close(copies[i]);
  free(copies);
  if (attr_made) posix_spawnattr_destroy(&attr);
  if (actions_made) posix_spawn_file_actions_destroy(&actions);
  free_string_array(envp);
  free_string_array(args);
  free(file);
  return result;
}

/*
 * waitpid(pid, WNOHANG): null while child `pid` runs, else { code } (it
 * exited) or { signal } (the number of the signal that killed it).
 */
static napi_value js_waitpid(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int pid;
  if (!get_args(env, info, 1, argv, NULL) || !get_int(env, argv[0], "pid", &pid)) return NULL;
  int status;
  pid_t r;
  do r = waitpid((pid_t)pid, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "waitpid", NULL);
  napi_value result, value;
  if (r == 0) {
    CHECK(napi_get_null(env, &result));
    return result;
  }
  CHECK(napi_create_object(env, &result));
  if (WIFSIGNALED(status)) {
    CHECK(napi_create_int32(env, WTERMSIG(status), &value));
    CHECK(napi_set_named_property(env, result, "signal", value));
  } else {
    CHECK(napi_create_int32(env, WEXITSTATUS(status), &value));
    CHECK(napi_set_named_property(env, result, "code", value));
  }
  return result;
}

/* ------------------------------------------------------------------------ */
/* Network interfaces (tap devices)                                          */
/* ------------------------------------------------------------------------ */

static napi_value js_socket(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int domain, type, protocol;
  if (!get_args(env, info, 3, argv, NULL) || !get_int(env, argv[0], "domain", &domain) ||
      !get_int(env, argv[1], "type", &type) || !get_int(env, argv[2], "protocol", &protocol))
    return NULL;
  int fd = socket(domain, type, protocol);
  if (fd < 0) return throw_errno(env, errno, "socket", NULL);
  return make_fd(env, fd);
}

/*
 * An ioctl whose argument is a struct ifreq (TUNSETIFF, TUNGETIFF, SIOC*IF*):
 * ifr_name is `name`, the ifr_ifru union starts as `data` (the rest zero) and
 * is copied back into `data` afterwards. Returns ifr_name as the kernel left
 * it (TUNSETIFF and TUNGETIFF write the device's name there).
 */
static napi_value js_ifreq_ioctl(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd;
  unsigned long request;
  uint8_t *data;
  size_t length;
  if (!get_args(env, info, 4, argv, NULL) || !get_int(env, argv[0], "fd", &fd) ||
      !get_request(env, argv[1], &request) || !get_bytes(env, argv[3], "data", &data, &length))
    return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (length > sizeof ifr.ifr_ifru) return range_error(env, "data", "at most SIZEOF_IFREQ_IFRU bytes"), NULL;
  char *name = get_string(env, argv[2], "name");
  if (!name) return NULL;
  size_t name_length = strlen(name);
  if (name_length >= IFNAMSIZ) {
    free(name);
    return range_error(env, "name", "shorter than IFNAMSIZ (16) bytes"), NULL;
  }
  memcpy(ifr.ifr_name, name, name_length);
  free(name);
  memcpy(&ifr.ifr_ifru, data, length);
  if (ioctl(fd, request, &ifr) < 0) return throw_ioctl(env, errno, request);
  memcpy(data, &ifr.ifr_ifru, length);
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  napi_value result;
  CHECK(napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &result));
  return result;
}

/* ------------------------------------------------------------------------ */
/* Fd watcher (uv_poll_t on the calling thread's loop)                       */
/* ------------------------------------------------------------------------ */

/*
 * Lifetime: the JS wrapper object owns the watcher. While watching, `self`
 * and `callback` are strong references (an active watcher is reachable from
 * its loop, like any libuv handle); while stopped they are weak (the wrapper
 * holds the callback as a property), so a stopped watcher that was never
 * closed is reclaimed by GC. The struct is freed once both the uv handle has
 * closed and the wrapper has been finalized. An async cleanup hook closes the
 * handle when the thread's environment is torn down (a worker exiting), so a
 * loop is never closed with our handle open.
 */
typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref self;     /* the wrapper object */
  napi_ref callback; /* the JS callback */
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup;
  bool active;       /* uv_poll_start'ed: refs are strong */
  bool closing;      /* uv_close called */
  bool handle_done;  /* uv_close's callback ran */
  bool js_gone;      /* wrapper finalized */
} watcher_t;

static void watcher_maybe_free(watcher_t *w) {
  if (w->handle_done && w->js_gone) free(w);
}

static void watcher_on_closed(uv_handle_t *handle) {
  watcher_t *w = handle->data;
  w->handle_done = true;
  if (w->cleanup) napi_remove_async_cleanup_hook(w->cleanup);
  w->cleanup = NULL;
  watcher_maybe_free(w);
}

/* Stops the watcher, drops its JS references and closes the handle. */
static void watcher_close(watcher_t *w) {
  if (w->closing) return;
  w->closing = true;
  napi_env env = w->env;
  if (w->active) {
    uv_poll_stop(&w->handle);
    w->active = false;
  }
  if (w->callback) napi_delete_reference(env, w->callback);
  w->callback = NULL;
  if (w->self) napi_delete_reference(env, w->self);
  w->self = NULL;
  if (w->async_context) napi_async_destroy(env, w->async_context);
  w->async_context = NULL;
  uv_close((uv_handle_t *)&w->handle, watcher_on_closed);
}

static void watcher_set_strong(watcher_t *w, bool strong) {
  uint32_t count;
  if (strong) {
    napi_reference_ref(w->env, w->self, &count);
    napi_reference_ref(w->env, w->callback, &count);
  } else {
    napi_reference_unref(w->env, w->self, &count);
    napi_reference_unref(w->env, w->callback, &count);
  }
}

static void watcher_on_event(uv_poll_t *handle, int status, int events) {
  watcher_t *w = handle->data;
  if (w->closing || !w->callback) return;
  napi_env env = w->env;
  int revents = 0;
  if (status < 0) {
    revents = POLLERR;
  } else {
    if (events & UV_READABLE) revents |= POLLIN;
    if (events & UV_WRITABLE) revents |= POLLOUT;
    if (events & UV_PRIORITIZED) revents |= POLLPRI;
    if (events & UV_DISCONNECT) revents |= POLLHUP;
  }

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, global, arg, ignored;
  if (napi_get_reference_value(env, w->callback, &callback) == napi_ok && callback &&
      napi_get_global(env, &global) == napi_ok && napi_create_int32(env, revents, &arg) == napi_ok) {
    /* make_callback (not call_function) so microtasks and nextTicks run after it. */
    napi_status s = napi_make_callback(env, w->async_context, global, callback, 1, &arg, &ignored);
    if (s == napi_pending_exception) {
      napi_value error;
      if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void watcher_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  watcher_t *w = data;
  w->js_gone = true;
  watcher_close(w); /* no-op if already closed */
  watcher_maybe_free(w);
}

static void watcher_env_cleanup(napi_async_cleanup_hook_handle handle, void *data) {
  (void)handle;
  watcher_close(data); /* watcher_on_closed removes the hook */
}

/* The arguments and the watcher_t behind a start/stop/close method. */
static bool watcher_this(napi_env env, napi_callback_info info, size_t n, napi_value *argv, watcher_t **out) {
  void *data = NULL;
  if (!get_args(env, info, n, argv, &data)) return false;
  *out = data;
  return true;
}

static napi_value js_watcher_start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher_t *w;
  int events;
  if (!watcher_this(env, info, 1, argv, &w) || !get_int(env, argv[0], "events", &events)) return NULL;
  if (w->closing) {
    napi_throw_error(env, NULL, "FdWatcher is closed");
    return NULL;
  }
  int uv_events = 0;
  if (events & POLLIN) uv_events |= UV_READABLE;
  if (events & POLLOUT) uv_events |= UV_WRITABLE;
  if (events & POLLPRI) uv_events |= UV_PRIORITIZED;
  if (events & (POLLHUP | POLLRDHUP)) uv_events |= UV_DISCONNECT;
  int r = uv_poll_start(&w->handle, uv_events, watcher_on_event);
  if (r < 0) return throw_errno(env, -r, "uv_poll_start", NULL);
  if (!w->active) {
    w->active = true;
    watcher_set_strong(w, true);
  }
  return make_undefined(env);
}

static napi_value js_watcher_stop(napi_env env, napi_callback_info info) {
  watcher_t *w;
  if (!watcher_this(env, info, 0, NULL, &w)) return NULL;
  if (w->active && !w->closing) {
    uv_poll_stop(&w->handle);
    w->active = false;
    watcher_set_strong(w, false);
  }
  return make_undefined(env);
}

static napi_value js_watcher_close(napi_env env, napi_callback_info info) {
  watcher_t *w;
  if (!watcher_this(env, info, 0, NULL, &w)) return NULL;
  watcher_close(w);
  return make_undefined(env);
}

static napi_value js_create_fd_watcher(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (!get_args(env, info, 2, argv, NULL) || !get_int(env, argv[0], "fd", &fd)) return NULL;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_function) return type_error(env, "callback", "a function"), NULL;

  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, ENOMEM, "calloc", NULL);
  w->env = env;
  int r = uv_poll_init(loop, &w->handle, fd);
  if (r < 0) {
    free(w);
    return throw_errno(env, -r, "uv_poll_init", NULL);
  }
  w->handle.data = w;

  napi_value object, name;
  napi_property_descriptor props[] = {
    {"start", NULL, js_watcher_start, NULL, NULL, NULL, napi_enumerable, w},
    {"stop", NULL, js_watcher_stop, NULL, NULL, NULL, napi_enumerable, w},
    {"close", NULL, js_watcher_close, NULL, NULL, NULL, napi_enumerable, w},
    {"callback", NULL, NULL, NULL, NULL, argv[1], napi_default, NULL},
  };
  if (napi_create_object(env, &object) != napi_ok ||
      napi_define_properties(env, object, sizeof props / sizeof props[0], props) != napi_ok ||
      napi_create_reference(env, argv[1], 0, &w->callback) != napi_ok ||
      napi_create_reference(env, object, 0, &w->self) != napi_ok ||
      napi_create_string_utf8(env, "plugvisor:FdWatcher", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, object, name, &w->async_context) != napi_ok ||
      napi_add_async_cleanup_hook(env, watcher_env_cleanup, w, &w->cleanup) != napi_ok) {
    /* Nothing refers to w from JS yet: close the handle and free w when done. */
    w->js_gone = true;
    napi_value r2 = napi_failed(env, "creating an FdWatcher");
    if (w->cleanup) napi_remove_async_cleanup_hook(w->cleanup);
    w->cleanup = NULL;
    watcher_close(w); /* frees w once the handle has closed */
    return r2;
  }
  if (napi_add_finalizer(env, object, w, watcher_finalize, NULL, NULL) != napi_ok) {
    /* Cannot tie w to the object: stop it from ever firing and let it go. */
    w->js_gone = true;
    watcher_close(w);
    return napi_failed(env, "napi_add_finalizer");
  }
  return object;
}

/* ------------------------------------------------------------------------ */
/* VCPU kick (vcpu/kick.c)                                                   */
/* ------------------------------------------------------------------------ */

static napi_value js_install_kick_handler(napi_env env, napi_callback_info info) {
  (void)info;
  int err = kick_install();
  if (err) return throw_errno(env, err, "sigaction", "(SIGRTMIN)");
  return make_undefined(env);
}

static napi_value js_set_kick_target(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint64_t address;
  if (!get_args(env, info, 1, argv, NULL) || !get_word(env, argv[0], "kvmRunAddress", &address)) return NULL;
  int err = kick_set_target((struct kvm_run *)(uintptr_t)address);
  if (err) return throw_errno(env, err, "pthread_sigmask", NULL);
  return make_undefined(env);
}

static napi_value js_gettid(napi_env env, napi_callback_info info) {
  (void)info;
  return make_int(env, (int64_t)syscall(SYS_gettid));
}

static napi_value js_kick(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int tid;
  if (!get_args(env, info, 1, argv, NULL) || !get_int(env, argv[0], "tid", &tid)) return NULL;
  int err = kick_thread(tid);
  if (err) return throw_errno(env, err, "tgkill", NULL);
  return make_undefined(env);
}

/* ------------------------------------------------------------------------ */
/* Module                                                                    */
/* ------------------------------------------------------------------------ */

/* Sets the class of the errors this environment's calls throw (src/errno.ts's ErrnoError). */
static napi_value js_set_errno_error_class(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_valuetype type;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  CHECK(napi_typeof(env, argv[0], &type));
  if (type != napi_function) return type_error(env, "errorClass", "a class"), NULL;
  if (!set_errno_error_class(env, argv[0])) return NULL;
  return make_undefined(env);
}

static napi_value make_constants(napi_env env) {
  napi_value object, value;
  CHECK(napi_create_object(env, &object));
  for (size_t i = 0; i < NCONSTANTS; i++) {
    CHECK(napi_create_int64(env, constants[i].value, &value));
    CHECK(napi_set_named_property(env, object, constants[i].name, value));
  }
  CHECK(napi_create_int64(env, SIGRTMIN, &value));
  CHECK(napi_set_named_property(env, object, "SIGRTMIN", value));
  long page_size = sysconf(_SC_PAGESIZE);
  if (page_size <= 0) return throw_errno(env, errno ? errno : EINVAL, "sysconf", "(_SC_PAGESIZE)");
  CHECK(napi_create_int64(env, page_size, &value));
  CHECK(napi_set_named_property(env, object, "PAGE_SIZE", value));
  CHECK(napi_object_freeze(env, object));
  return object;
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {
    {"setErrnoErrorClass", js_set_errno_error_class},
    {"open", js_open},
    {"close", js_close},
    {"ioctl", js_ioctl},
    {"ioctlBuffer", js_ioctl_buffer},
    {"mmap", js_mmap},
    {"munmap", js_munmap},
    {"arrayBufferAt", js_array_buffer_at},
    {"addressOf", js_address_of},
    {"eventfd", js_eventfd},
    {"memfdCreate", js_memfd_create},
    {"ftruncate", js_ftruncate},
    {"fstatSize", js_fstat_size},
    {"fcntl", js_fcntl},
    {"pipe2", js_pipe2},
    {"seqpacketPair", js_seqpacket_pair},
    {"read", js_read},
    {"write", js_write},
    {"eventfdRead", js_eventfd_read},
    {"eventfdWrite", js_eventfd_write},
    {"sendmsg", js_sendmsg},
    {"recvmsg", js_recvmsg},
    {"poll", js_poll},
    {"spawn", js_spawn},
    {"waitpid", js_waitpid},
    {"createFdWatcher", js_create_fd_watcher},
    {"installKickHandler", js_install_kick_handler},
    {"setKickTarget", js_set_kick_target},
    {"gettid", js_gettid},
    {"kick", js_kick},
    {"createVcpuSet", js_create_vcpu_set},
    {"socket", js_socket},
    {"ifreqIoctl", js_ifreq_ioctl},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    CHECK(napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn));
    CHECK(napi_set_named_property(env, exports, functions[i].name, fn));
  }
  napi_value constants_object = make_constants(env);
  if (!constants_object) return NULL;
  CHECK(napi_set_named_property(env, exports, "constants", constants_object));
  napi_value layouts_object = make_layouts(env);
  if (!layouts_object) return NULL;
  CHECK(napi_set_named_property(env, exports, "layouts", layouts_object));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
