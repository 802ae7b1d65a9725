/*
 * crosvm.h - the C API for plugvisor plugins.
 *
 * A plugin is a separate, unprivileged process that owns a virtual machine
 * run by the plugvisor host: it supplies the guest memory, reserves the
 * address ranges it wants to emulate, and answers the VCPUs whenever they
 * touch one of those ranges. This header and libcrosvm_plugin.so are source-
 * and binary-compatible with crosvm's plugin API 0.22, so a plugin written
 * for crosvm builds and runs unchanged against plugvisor.
 *
 * Conventions:
 *  - Every function returning int gives 0 (or a descriptor, where one is
 *    documented) on success and a negative errno value on failure.
 *  - Functions taking `T **out` create an object and store it there; the
 *    matching destroy function takes `T **`, frees the object and stores NULL.
 *  - A `struct crosvm` (one connection to the host) must not be used by two
 *    threads at once; call crosvm_new_connection() to get one per thread.
 *    Different `struct crosvm_vcpu` handles may be used from different
 *    threads at the same time; one handle is used by one thread at a time.
 *  - Object ids are chosen by the library and unique within the process, so
 *    objects created on one connection may be destroyed through another.
 *
 * Build a plugin:
 *   cc -pthread -I<prefix>/include plugin.c -L<prefix>/lib \
 *      -Wl,-rpath,<prefix>/lib -lcrosvm_plugin
 * or, with PKG_CONFIG_PATH=<prefix>/lib/pkgconfig:
 *   cc plugin.c $(pkg-config --cflags --libs crosvm_plugin)
 * where, in a project that installed plugvisor from npm, `npx plugvisor
 * c-flags` prints the first form's flags and `npx plugvisor pkg-config-path`
 * the directory for PKG_CONFIG_PATH.
 *
 * The reference for every name here is docs/c-api.md in the plugvisor
 * package; the protocol beneath it is docs/protocol.md.
 */
#ifndef CROSVM_H_
#define CROSVM_H_

#include <stdbool.h>
#include <stdint.h>

#include <linux/kvm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Compile-time checks of the struct layouts below (C11 or C++11 and later). */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define CROSVM_STATIC_ASSERT_(cond, msg) static_assert(cond, msg)
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define CROSVM_STATIC_ASSERT_(cond, msg) _Static_assert(cond, msg)
#else
#define CROSVM_STATIC_ASSERT_(cond, msg)
#endif

/* The version of the API this header describes. */
#define CROSVM_API_MAJOR 0
#define CROSVM_API_MINOR 22
#define CROSVM_API_PATCH 0

/* The two address spaces a guest can access devices through. */
enum crosvm_address_space {
  /* x86 port I/O (in/out instructions). */
  CROSVM_ADDRESS_SPACE_IOPORT = 0,
  /* Memory-mapped I/O: guest physical addresses not backed by memory. */
  CROSVM_ADDRESS_SPACE_MMIO,
};

/* Opaque handles. */
struct crosvm;        /* one connection to the host */
struct crosvm_io;     /* an eventfd signalled on guest writes to an address */
struct crosvm_memory; /* a guest memory region backed by a memfd */
struct crosvm_irq;    /* an eventfd pair injecting an interrupt line */
struct crosvm_vcpu;   /* one virtual CPU of the VM */

/* Opens the connection the host handed to this process (CROSVM_SOCKET). */
int crosvm_connect(struct crosvm **out);

/* Opens another, independent connection, e.g. for another thread. */
int crosvm_new_connection(struct crosvm *self, struct crosvm **out);

/* Closes a connection and frees it. */
int crosvm_destroy_connection(struct crosvm **self);

/*
 * Returns a new eventfd (owned by the caller) that the host signals when the
 * plugin should exit, or a negative errno.
 */
int crosvm_get_shutdown_eventfd(struct crosvm *self);

/* Asks whether the VM supports a KVM extension (KVM_CHECK_EXTENSION). */
int crosvm_check_extension(struct crosvm *self, uint32_t extension,
                           bool *has_extension);

/* Enables a VM-wide capability. No capability is supported: -EINVAL. */
int crosvm_enable_capability(struct crosvm *self, uint32_t capability,
                             uint32_t flags, uint64_t args[4]);

/*
 * Fills `entries` with up to `entry_count` of the CPUID entries KVM supports
 * and stores the total count in *out_count. Returns -E2BIG when the array
 * was too small to hold them all.
 */
int crosvm_get_supported_cpuid(struct crosvm *self, uint32_t entry_count,
                               struct kvm_cpuid_entry2 *entries,
                               uint32_t *out_count);

/* Like crosvm_get_supported_cpuid, for the entries KVM emulates. */
int crosvm_get_emulated_cpuid(struct crosvm *self, uint32_t entry_count,
                              struct kvm_cpuid_entry2 *entries,
                              uint32_t *out_count);

/* Like crosvm_get_supported_cpuid, for the MSR indices KVM can save. */
int crosvm_get_msr_index_list(struct crosvm *self, uint32_t entry_count,
                              uint32_t *msr_indices, uint32_t *out_count);

/* The host's network configuration. */
struct crosvm_net_config {
  /* A tap device descriptor, owned by the caller once returned. */
  int tap_fd;
  /* The host's IPv4 address and netmask, in network byte order. */
  uint32_t host_ip;
  uint32_t netmask;
  uint8_t host_mac_address[6];
  uint8_t _padding[2];
};
CROSVM_STATIC_ASSERT_(sizeof(struct crosvm_net_config) == 20,
                      "crosvm_net_config must be 20 bytes");

/* Gets the host's network configuration; -ENODATA when there is none. */
int crosvm_net_get_config(struct crosvm *self,
                          struct crosvm_net_config *config);

/*
 * Reserves [start, start + length) in `space`: guest accesses there stop the
 * VCPU with a CROSVM_VCPU_EVENT_KIND_IO_ACCESS event. A length of 0 releases
 * the reservation that starts at `start`.
 */
int crosvm_reserve_range(struct crosvm *self, uint32_t space, uint64_t start,
                         uint64_t length);

/*
 * Like crosvm_reserve_range, but guest writes there are reported without
 * stopping the VCPU (events with no_resume set; do not resume those), and
 * guest reads there are not reported (they read zeros).
 */
int crosvm_reserve_async_write_range(struct crosvm *self, uint32_t space,
                                     uint64_t start, uint64_t length);

/* Raises or lowers an interrupt line (KVM_IRQ_LINE). */
int crosvm_set_irq(struct crosvm *self, uint32_t irq_id, bool active);

enum crosvm_irq_route_kind {
  CROSVM_IRQ_ROUTE_IRQCHIP = 0,
  CROSVM_IRQ_ROUTE_MSI,
};

/* One entry of the interrupt routing table. */
struct crosvm_irq_route {
  /* The interrupt line (GSI) being routed. */
  uint32_t irq_id;
  /* An enum crosvm_irq_route_kind; selects the union member. */
  uint32_t kind;
  union {
    struct {
      uint32_t irqchip;
      uint32_t pin;
    } irqchip;
    struct {
      uint64_t address;
      uint32_t data;
      uint8_t _reserved[4];
    } msi;
    uint8_t _reserved[16];
  };
};
CROSVM_STATIC_ASSERT_(sizeof(struct crosvm_irq_route) == 24,
                      "crosvm_irq_route must be 24 bytes");

/* Replaces the whole interrupt routing table with `routes`. */
int crosvm_set_irq_routing(struct crosvm *self, uint32_t route_count,
                           const struct crosvm_irq_route *routes);

/* At most this many hints, and details per hint. */
#define CROSVM_MAX_HINT_COUNT 1
#define CROSVM_MAX_HINT_DETAIL_COUNT 32
/* crosvm_hint.address_flags: the hint applies to writes (else to reads). */
#define CROSVM_HINT_ON_WRITE 0x1

/*
 * Register conditions of a hint: the first detail whose selected registers
 * all match decides whether the segment and debug registers are sent too.
 */
struct crosvm_hint_detail {
  bool match_rax;
  bool match_rbx;
  bool match_rcx;
  bool match_rdx;
  uint8_t _reserved[4];
  uint64_t rax;
  uint64_t rbx;
  uint64_t rcx;
  uint64_t rdx;
  bool send_sregs;
  bool send_debugregs;
  uint8_t _reserved2[6];
};
CROSVM_STATIC_ASSERT_(sizeof(struct crosvm_hint_detail) == 48,
                      "crosvm_hint_detail must be 48 bytes");

/*
 * A hint that accesses to one address are calls whose register state the
 * plugin will want: the host then sends the registers along with the
 * IO_ACCESS event, so crosvm_vcpu_get_regs() etc. need no round trip.
 */
struct crosvm_hint {
  uint32_t hint_version; /* must be 0 */
  uint32_t _reserved;    /* must be 0 */
  uint32_t address_space;
  uint16_t address_flags; /* CROSVM_HINT_ON_WRITE or 0 */
  uint16_t details_count; /* at most CROSVM_MAX_HINT_DETAIL_COUNT */
  uint64_t address;
  union {
    struct crosvm_hint_detail *details;
    uint64_t _reserved2;
  };
};
CROSVM_STATIC_ASSERT_(sizeof(struct crosvm_hint) == 32,
                      "crosvm_hint must be 32 bytes");

/* Sets (hints_count 1) or clears (hints_count 0) the call hint. */
int crosvm_set_hypercall_hint(struct crosvm *self, uint32_t hints_count,
                              const struct crosvm_hint *hints);

/* The VM's interrupt controllers, timer and clock. */
int crosvm_get_pic_state(struct crosvm *self, bool primary,
                         struct kvm_pic_state *state);
int crosvm_set_pic_state(struct crosvm *self, bool primary,
                         const struct kvm_pic_state *state);
int crosvm_get_ioapic_state(struct crosvm *self,
                            struct kvm_ioapic_state *state);
int crosvm_set_ioapic_state(struct crosvm *self,
                            const struct kvm_ioapic_state *state);
int crosvm_get_pit_state(struct crosvm *self, struct kvm_pit_state2 *state);
int crosvm_set_pit_state(struct crosvm *self,
                         const struct kvm_pit_state2 *state);
int crosvm_get_clock(struct crosvm *self, struct kvm_clock_data *clock_data);
int crosvm_set_clock(struct crosvm *self,
                     const struct kvm_clock_data *clock_data);

/* KVM_SET_IDENTITY_MAP_ADDR. */
int crosvm_set_identity_map_addr(struct crosvm *self, uint32_t addr);

/*
 * Asks every VCPU whose bit is set in cpu_mask to stop and report a
 * CROSVM_VCPU_EVENT_KIND_PAUSED event carrying `user`.
 */
int crosvm_pause_vcpus(struct crosvm *self, uint64_t cpu_mask, void *user);

/* Starts the VM once set-up is done; the VCPUs then report INIT. */
int crosvm_start(struct crosvm *self);

/*
 * Creates an eventfd signalled when the guest writes to `addr` in `space`.
 * With datamatch NULL any write signals it; otherwise only a write of `len`
 * bytes (1, 2, 4 or 8) equal to the `len` bytes at datamatch does.
 */
int crosvm_create_io_event(struct crosvm *self, uint32_t space, uint64_t addr,
                           uint32_t len, const uint8_t *datamatch,
                           struct crosvm_io **out);
int crosvm_destroy_io_event(struct crosvm *self, struct crosvm_io **self_io);
/* The eventfd; it belongs to the handle. */
int crosvm_io_event_fd(struct crosvm_io *self_io);

/*
 * Makes [offset, offset + length) of `fd` guest memory at guest physical
 * address `start`. `fd` must be a memfd sealed with F_SEAL_SHRINK; the
 * caller keeps ownership of it. dirty_log enables
 * crosvm_memory_get_dirty_log().
 */
int crosvm_create_memory(struct crosvm *self, int fd, uint64_t offset,
                         uint64_t length, uint64_t start, bool read_only,
                         bool dirty_log, struct crosvm_memory **out);
int crosvm_destroy_memory(struct crosvm *self, struct crosvm_memory **mem);

/*
 * Copies the dirty bitmap (one bit per 4 KiB page, lowest bit first) into
 * `log`, which must hold ceil(pages / 8) bytes, pages = ceil(length / 4096).
 * Reading the log clears it.
 */
int crosvm_memory_get_dirty_log(struct crosvm *self,
                                struct crosvm_memory *mem, uint8_t *log);

/*
 * Creates a pair of eventfds for interrupt line irq_id: writing to the
 * trigger fd raises the line; the resample fd is signalled when the guest
 * acknowledges it (the line is then lowered).
 */
int crosvm_create_irq_event(struct crosvm *self, uint32_t irq_id,
                            struct crosvm_irq **out);
int crosvm_destroy_irq_event(struct crosvm *self, struct crosvm_irq **irq);
/* The descriptors belong to the handle. */
int crosvm_irq_event_get_fd(const struct crosvm_irq *irq);
int crosvm_irq_event_get_resample_fd(const struct crosvm_irq *irq);

/* Gets VCPU cpu_id (the same handle each time); -ENOENT past the last. */
int crosvm_get_vcpu(struct crosvm *self, uint32_t cpu_id,
                    struct crosvm_vcpu **out);

/* Why a VCPU stopped. */
enum crosvm_vcpu_event_kind {
  /* The VCPU is about to run for the first time: set up its state now. */
  CROSVM_VCPU_EVENT_KIND_INIT = 0,
  /* The guest accessed a reserved range. */
  CROSVM_VCPU_EVENT_KIND_IO_ACCESS,
  /* The VCPU stopped because of crosvm_pause_vcpus(). */
  CROSVM_VCPU_EVENT_KIND_PAUSED,
  /* The guest made a Hyper-V hypercall. */
  CROSVM_VCPU_EVENT_KIND_HYPERV_HCALL,
  /* The guest wrote a Hyper-V SynIC MSR. */
  CROSVM_VCPU_EVENT_KIND_HYPERV_SYNIC,
};

struct crosvm_vcpu_event {
  /* An enum crosvm_vcpu_event_kind; selects the union member. */
  uint32_t kind;
  uint8_t _padding[4];
  union {
    /* CROSVM_VCPU_EVENT_KIND_IO_ACCESS */
    struct {
      uint32_t address_space;
      uint8_t _padding[4];
      uint64_t address;
      /*
       * The accessed bytes, in a buffer owned by the VCPU handle and valid
       * until the next crosvm_vcpu_wait(): the written value, or for a read
       * the place to store the value before crosvm_vcpu_resume().
       */
      uint8_t *data;
      uint32_t length;
      uint8_t is_write;
      /* Set for async writes: the VCPU did not stop, do not resume it. */
      uint8_t no_resume;
      uint8_t _reserved[2];
    } io_access;

    /* CROSVM_VCPU_EVENT_KIND_PAUSED: the pointer given to pause_vcpus. */
    void *user;

    /* CROSVM_VCPU_EVENT_KIND_HYPERV_HCALL */
    struct {
      uint64_t input;
      /* Store the hypercall's result here before resuming. */
      uint64_t *result;
      uint64_t params[2];
    } hyperv_call;

    /* CROSVM_VCPU_EVENT_KIND_HYPERV_SYNIC */
    struct {
      uint32_t msr;
      uint32_t _reserved;
      uint64_t control;
      uint64_t evt_page;
      uint64_t msg_page;
    } hyperv_synic;

    uint8_t _reserved[64];
  };
};
CROSVM_STATIC_ASSERT_(sizeof(struct crosvm_vcpu_event) == 72,
                      "crosvm_vcpu_event must be 72 bytes");

/*
 * Waits until the VCPU stops and describes why in *event. The first call
 * asks the host for the VCPU's INIT; later ones read what the host pushes.
 */
int crosvm_vcpu_wait(struct crosvm_vcpu *self, struct crosvm_vcpu_event *event);

/*
 * Lets the VCPU run again, handing over the value of a pending read and any
 * register writes deferred by the set_regs/set_sregs/set_debugregs calls.
 */
int crosvm_vcpu_resume(struct crosvm_vcpu *self);

/*
 * VCPU state, while the VCPU is stopped. The general, segment and debug
 * register getters use the registers sent with a hinted IO_ACCESS event when
 * there are some; their setters are deferred until crosvm_vcpu_resume() (a
 * get before that returns the value set). The others are immediate.
 */
int crosvm_vcpu_get_regs(struct crosvm_vcpu *self, struct kvm_regs *regs);
int crosvm_vcpu_set_regs(struct crosvm_vcpu *self, const struct kvm_regs *regs);
int crosvm_vcpu_get_sregs(struct crosvm_vcpu *self, struct kvm_sregs *sregs);
int crosvm_vcpu_set_sregs(struct crosvm_vcpu *self,
                          const struct kvm_sregs *sregs);
int crosvm_vcpu_get_fpu(struct crosvm_vcpu *self, struct kvm_fpu *fpu);
int crosvm_vcpu_set_fpu(struct crosvm_vcpu *self, const struct kvm_fpu *fpu);
int crosvm_vcpu_get_debugregs(struct crosvm_vcpu *self,
                              struct kvm_debugregs *dregs);
int crosvm_vcpu_set_debugregs(struct crosvm_vcpu *self,
                              const struct kvm_debugregs *dregs);
int crosvm_vcpu_get_xcrs(struct crosvm_vcpu *self, struct kvm_xcrs *xcrs);
int crosvm_vcpu_set_xcrs(struct crosvm_vcpu *self, const struct kvm_xcrs *xcrs);
int crosvm_vcpu_get_lapic_state(struct crosvm_vcpu *self,
                                struct kvm_lapic_state *state);
int crosvm_vcpu_set_lapic_state(struct crosvm_vcpu *self,
                                const struct kvm_lapic_state *state);
int crosvm_vcpu_get_mp_state(struct crosvm_vcpu *self,
                             struct kvm_mp_state *state);
int crosvm_vcpu_set_mp_state(struct crosvm_vcpu *self,
                             const struct kvm_mp_state *state);
int crosvm_vcpu_get_vcpu_events(struct crosvm_vcpu *self,
                                struct kvm_vcpu_events *events);
int crosvm_vcpu_set_vcpu_events(struct crosvm_vcpu *self,
                                const struct kvm_vcpu_events *events);

/*
 * Reads the MSRs named by entries[i].index into entries[i].data; *out_count
 * is the number read (KVM stops at the first MSR it cannot read).
 */
int crosvm_vcpu_get_msrs(struct crosvm_vcpu *self, uint32_t msr_count,
                         struct kvm_msr_entry *msr_entries,
                         uint32_t *out_count);
int crosvm_vcpu_set_msrs(struct crosvm_vcpu *self, uint32_t msr_count,
                         const struct kvm_msr_entry *msr_entries);

/* Sets the CPUID the guest sees (KVM_SET_CPUID2). */
int crosvm_vcpu_set_cpuid(struct crosvm_vcpu *self, uint32_t cpuid_count,
                          const struct kvm_cpuid_entry2 *cpuid_entries);

/* Like crosvm_get_supported_cpuid, for the VCPU's Hyper-V CPUID leaves. */
int crosvm_get_hyperv_cpuid(struct crosvm_vcpu *self, uint32_t entry_count,
                            struct kvm_cpuid_entry2 *entries,
                            uint32_t *out_count);

/*
 * Enables a VCPU capability; only KVM_CAP_HYPERV_SYNIC and
 * KVM_CAP_HYPERV_SYNIC2 are allowed, and flags and args must be 0.
 */
int crosvm_vcpu_enable_capability(struct crosvm_vcpu *self, uint32_t capability,
                                  uint32_t flags, uint64_t args[4]);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CROSVM_H_ */
