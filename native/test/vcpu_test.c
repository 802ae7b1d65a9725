/*
 * Tests of the native VCPU threads (native/vcpu/) against real KVM, without
 * node: the test plays the plugin on each VCPU's real pipes. Built and run
 * under AddressSanitizer and UndefinedBehaviorSanitizer by `make -C
 * native/test check` (test/native-vcpu.test.ts runs it in the suite).
 *
 * Guests are 16-bit real-mode code at GUEST_CODE, hand-assembled with the
 * listing beside the bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "harness.h"

#define IOPORT 0

/* A reason text must contain `part`. */
static void expect_end(struct machine *m, uint32_t vcpu, bool failed, const char *part) {
  CHECK(machine_wait_end(m, vcpu, 5000), "vcpu %u did not end within 5 s", vcpu);
  CHECK(m->failed[vcpu] == failed && strstr(m->reason[vcpu], part), "vcpu %u ended %s with \"%s\", expected %s \"%s\"",
        vcpu, m->failed[vcpu] ? "failed" : "cleanly", m->reason[vcpu], failed ? "failed" : "cleanly", part);
}

static void expect_io(struct machine *m, uint32_t vcpu, uint64_t port, bool is_write, uint8_t value) {
  VcpuResponse *r = plugin_expect_io(m, vcpu, 5000);
  const VcpuWaitIo *io = r->wait->io;
  CHECK(io->address == port && io->is_write == is_write && io->data.len == 1 && io->data.data[0] == value && !io->no_resume,
        "vcpu %u: expected %s of 0x%x at port 0x%llx, got %s of %zu bytes (0x%x) at 0x%llx", vcpu,
        is_write ? "a write" : "a read", value, (unsigned long long)port, io->is_write ? "a write" : "a read",
        io->data.len, io->data.len ? io->data.data[0] : 0, (unsigned long long)io->address);
  vcpu_response_free(r);
}

/* The answer to one raw request: its errno and member. */
static void expect_answer(struct machine *m, const void *bytes, size_t length, int err, int member, const char *what) {
  plugin_send_bytes(m, 0, bytes, length);
  VcpuResponse *r = plugin_receive(m, 0, 5000);
  CHECK(r, "%s: no answer", what);
  CHECK(r->errno_value == err && (int)r->message_case == member, "%s: answered errno %d member %d, expected %d and %d",
        what, r->errno_value, (int)r->message_case, err, member);
  vcpu_response_free(r);
}

static void expect_request(struct machine *m, const VcpuRequest *request, int err, int member, const char *what) {
  size_t size;
  uint8_t *bytes = pack_request(request, &size);
  expect_answer(m, bytes, size, err, member, what);
  free(bytes);
}

static void sleep_ms(int ms) {
  struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&t, NULL);
}

/* ------------------------------------------------------------------------ */

/*
 * The whole conversation of one VCPU: init, a reserved write, a reserved read
 * answered by the resume, an unreserved read that sees zeros, HLT.
 */
static void test_io_conversation(void) {
  static const uint8_t code[] = {
    0xba, 0x10, 0x00, /* mov dx, 0x10 */
    0xb0, 0x42,       /* mov al, 0x42 */
    0xee,             /* out dx, al    ; reserved write */
    0xec,             /* in al, dx     ; reserved read: the resume's value */
    0xba, 0x11, 0x00, /* mov dx, 0x11 */
    0xee,             /* out dx, al    ; reports it */
    0xba, 0x12, 0x00, /* mov dx, 0x12 */
    0xec,             /* in al, dx     ; unreserved: zeros, no stop */
    0xba, 0x11, 0x00, /* mov dx, 0x11 */
    0xee,             /* out dx, al    ; reports it */
    0xf4,             /* hlt */
  };
  struct machine *m = machine_open(1, code, sizeof code, 1000);
  const uint64_t ranges[] = {IOPORT, 0x10, 0x11, 0}; /* ports 0x10 and 0x11 */
  machine_reserve(m, ranges, 1);
  machine_start(m);
  plugin_run_real_mode(m, 0, 0);
  expect_io(m, 0, 0x10, true, 0x42);
  plugin_resume(m, 0, NULL, 0);
  expect_io(m, 0, 0x10, false, 0);
  uint8_t value = 0x99;
  plugin_resume(m, 0, &value, 1);
  expect_io(m, 0, 0x11, true, 0x99);
  plugin_resume(m, 0, NULL, 0);
  expect_io(m, 0, 0x11, true, 0x00);
  plugin_resume(m, 0, NULL, 0);
  expect_end(m, 0, false, "halted");
  machine_close(m);
}

/* Requests a hostile plugin might write: each gets an errno; the VCPU goes on answering. */
static void test_hostile_requests(void) {
  static const uint8_t code[] = {0xf4}; /* hlt */
  struct machine *m = machine_open(1, code, sizeof code, 0);
  machine_start(m);

  /* Anything but `wait` before init was collected. */
  static const uint8_t get_regs[] = {0x1a, 0x00}; /* get_state {set: REGS} */
  expect_answer(m, get_regs, sizeof get_regs, EPROTO, VRESP(GET_STATE), "get_state before init");
  /* Bytes that are no VcpuRequest: garbage, a nested length past the end, a zero tag, a group. */
  static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  expect_answer(m, garbage, sizeof garbage, EINVAL, 0, "garbage");
  static const uint8_t truncated[] = {0x1a, 0x05, 0x08};
  expect_answer(m, truncated, sizeof truncated, EINVAL, 0, "a truncated get_state");
  static const uint8_t zero_tag[] = {0x00};
  expect_answer(m, zero_tag, sizeof zero_tag, EINVAL, 0, "a zero tag");
  static const uint8_t group[] = {0x0b};
  expect_answer(m, group, sizeof group, EINVAL, 0, "a group start");
  /* The largest request the host reads, all garbage. */
  uint8_t *huge = malloc(VCPU_REQUEST_MAX);
  CHECK(huge, "out of memory");
  memset(huge, 0xff, VCPU_REQUEST_MAX);
  expect_answer(m, huge, VCPU_REQUEST_MAX, EINVAL, 0, "256 KiB of garbage");
  free(huge);

  plugin_take_init(m, 0);
  static const uint8_t wait[] = {0x0a, 0x00};
  expect_answer(m, wait, sizeof wait, EPROTO, VRESP(WAIT), "a second wait with nothing pending");
  static const uint8_t unknown[] = {0xf8, 0x01, 0x05}; /* field 31 only */
  expect_answer(m, unknown, sizeof unknown, ENOTTY, 0, "a request with no known member");

  /* Every state set with a buffer one byte short and one byte long; an unknown set. */
  static const size_t sizes[] = {
    [VSET(REGS)] = sizeof(struct kvm_regs), [VSET(SREGS)] = sizeof(struct kvm_sregs), [VSET(FPU)] = sizeof(struct kvm_fpu),
    [VSET(DEBUGREGS)] = sizeof(struct kvm_debugregs), [VSET(LAPIC)] = sizeof(struct kvm_lapic_state),
    [VSET(MP)] = sizeof(struct kvm_mp_state), [VSET(XCREGS)] = sizeof(struct kvm_xcrs),
    [VSET(EVENTS)] = sizeof(struct kvm_vcpu_events)};
  uint8_t state[sizeof(struct kvm_lapic_state) + 1];
  memset(state, 0, sizeof state);
  for (int set = 0; set < (int)(sizeof sizes / sizeof sizes[0]); set++) {
    CHECK(plugin_set_state(m, 0, set, state, sizes[set] - 1) == EINVAL, "set_state(%d) one byte short", set);
    CHECK(plugin_set_state(m, 0, set, state, sizes[set] + 1) == EINVAL, "set_state(%d) one byte long", set);
  }
  CHECK(plugin_set_state(m, 0, 99, state, 8) == EINVAL, "set_state of an unknown set");
  static const uint8_t get_unknown[] = {0x1a, 0x02, 0x08, 0x63};
  expect_answer(m, get_unknown, sizeof get_unknown, EINVAL, VRESP(GET_STATE), "get_state of an unknown set");

  /* 10 000 MSRs, read and written; 10 000 CPUID entries: the kernel refuses them (an errno, not a crash). */
  enum { MANY = 10000 };
  uint32_t *indices = calloc(MANY, sizeof *indices);
  Plugvisor__Plugin__VcpuRequest__MsrEntry **entries =
      new_repeated(&plugvisor__plugin__vcpu_request__msr_entry__descriptor, MANY);
  Plugvisor__Plugin__CpuidEntry **cpuid = new_repeated(&plugvisor__plugin__cpuid_entry__descriptor, MANY);
  CHECK(indices && entries && cpuid, "out of memory");
  for (int i = 0; i < MANY; i++) {
    indices[i] = 0x10; /* TSC */
    entries[i]->index = 0x10;
    cpuid[i]->function = (uint32_t)i;
  }
  Plugvisor__Plugin__VcpuRequest__GetMsrs get_msrs = PLUGVISOR__PLUGIN__VCPU_REQUEST__GET_MSRS__INIT;
  get_msrs.n_entry_indices = MANY, get_msrs.entry_indices = indices;
  Plugvisor__Plugin__VcpuRequest__SetMsrs set_msrs = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_MSRS__INIT;
  set_msrs.n_entries = MANY, set_msrs.entries = entries;
  Plugvisor__Plugin__VcpuRequest__SetCpuid set_cpuid = PLUGVISOR__PLUGIN__VCPU_REQUEST__SET_CPUID__INIT;
  set_cpuid.n_entries = MANY, set_cpuid.entries = cpuid;
  const struct {
    const VcpuRequest *request;
    int member;
    const char *what;
  } too_many[] = {
    {VCPU_REQUEST(GET_MSRS, get_msrs, &get_msrs), VRESP(GET_MSRS), "get_msrs of 10 000 MSRs"},
    {VCPU_REQUEST(SET_MSRS, set_msrs, &set_msrs), VRESP(SET_MSRS), "set_msrs of 10 000 MSRs"},
    {VCPU_REQUEST(SET_CPUID, set_cpuid, &set_cpuid), VRESP(SET_CPUID), "set_cpuid of 10 000 entries"},
  };
  for (size_t i = 0; i < sizeof too_many / sizeof too_many[0]; i++)
    expect_request(m, too_many[i].request, E2BIG, too_many[i].member, too_many[i].what);
  free(indices);
  free(entries);
  free(cpuid);
  /* An MSR the kernel will not read: EINVAL, as the protocol says. */
  uint32_t bad_index = 0xdeadbeef;
  get_msrs.n_entry_indices = 1;
  get_msrs.entry_indices = &bad_index;
  expect_request(m, VCPU_REQUEST(GET_MSRS, get_msrs, &get_msrs), EINVAL, VRESP(GET_MSRS),
                 "get_msrs of an MSR that does not exist");
  /* Capabilities other than SynIC are refused. */
  Plugvisor__Plugin__VcpuRequest__EnableCapability capability = PLUGVISOR__PLUGIN__VCPU_REQUEST__ENABLE_CAPABILITY__INIT;
  capability.capability = KVM_CAP_IRQCHIP;
  expect_request(m, VCPU_REQUEST(ENABLE_CAPABILITY, enable_capability, &capability), EINVAL, VRESP(ENABLE_CAPABILITY),
                 "enable_capability(KVM_CAP_IRQCHIP)");

  CHECK(m->logs >= 5, "malformed requests were logged (%u lines)", m->logs);
  static const uint8_t shutdown[] = {0x42, 0x00};
  plugin_send_bytes(m, 0, shutdown, sizeof shutdown);
  expect_end(m, 0, false, "shut down on request");
  machine_close(m);
}

/*
 * A guest spinning without exits is kicked out of KVM_RUN by a pause, which
 * is reported as wait{user}; after the resume it spins again, and a shutdown
 * kicks it out for good.
 */
static void test_pause_and_shutdown_in_kvm_run(void) {
  static const uint8_t code[] = {0xeb, 0xfe}; /* jmp $ */
  struct machine *m = machine_open(2, code, sizeof code, 0);
  machine_start(m);
  for (uint32_t i = 0; i < 2; i++) plugin_run_real_mode(m, i, 0);
  sleep_ms(50);
  vcpu_set_pause(m->set, 1, 0xfeed0000beefULL);
  VcpuResponse *r = plugin_receive(m, 1, 5000);
  CHECK(r && r->message_case == VRESP(WAIT) && r->wait->exit_case == VEXIT(USER) &&
            r->wait->user->user == 0xfeed0000beefULL,
        "the pause was not reported as wait{user}");
  vcpu_response_free(r);
  CHECK(plugin_receive(m, 0, 100) == NULL, "vcpu 0 was not to stop");
  plugin_resume(m, 1, NULL, 0);
  sleep_ms(50);
  CHECK(!m->ended[0] && !m->ended[1], "the spinning VCPUs ended early");
  vcpu_set_shutdown(m->set);
  expect_end(m, 0, false, "shutting down");
  expect_end(m, 1, false, "shutting down");
  machine_close(m);
}

/*
 * A plugin that never reads its pipe while the guest floods an async_write
 * port: the VCPU thread blocks writing notifications into a full pipe, and a
 * shutdown still ends it.
 */
static void test_shutdown_blocked_in_pipe_write(void) {
  static const uint8_t code[] = {
    0xee,       /* l: out dx, al */
    0xeb, 0xfd, /*    jmp l */
  };
  struct machine *m = machine_open(1, code, sizeof code, 0);
  const uint64_t ranges[] = {IOPORT, 0x20, 0x20, 1};
  machine_reserve(m, ranges, 1);
  machine_start(m);
  plugin_run_real_mode(m, 0, 0x20);
  int queued = 0, capacity = fcntl(m->plugin[0].response_fd, F_GETPIPE_SZ);
  for (int waited = 0; waited < 10000 && queued < capacity - 4096; waited += 10) {
    sleep_ms(10);
    CHECK(ioctl(m->plugin[0].response_fd, FIONREAD, &queued) == 0, "FIONREAD: %s", strerror(errno));
  }
  CHECK(queued >= capacity - 4096, "the response pipe did not fill (%d of %d bytes)", queued, capacity);
  sleep_ms(20);
  CHECK(!m->ended[0], "the VCPU ended before the shutdown");
  vcpu_set_shutdown(m->set);
  expect_end(m, 0, false, "shutting down");
  machine_close(m);
}

/* A plugin that never resumes: the thread waits on its pipe until the shutdown. */
static void test_plugin_never_resumes(void) {
  static const uint8_t code[] = {0xf4};
  struct machine *m = machine_open(1, code, sizeof code, 1000);
  machine_start(m);
  plugin_take_init(m, 0);
  sleep_ms(20);
  vcpu_set_shutdown(m->set);
  expect_end(m, 0, false, "shutting down");
  machine_close(m);
}

/* The plugin closes its end of the response pipe: the next push fails, and the VCPU ends with that failure. */
static void test_plugin_closes_its_pipe(void) {
  static const uint8_t code[] = {0xba, 0x10, 0x00, 0xee, 0xf4}; /* mov dx, 0x10; out dx, al; hlt */
  struct machine *m = machine_open(1, code, sizeof code, 0);
  const uint64_t ranges[] = {IOPORT, 0x10, 0x10, 0};
  machine_reserve(m, ranges, 1);
  machine_start(m);
  plugin_init_real_mode(m, 0, 0);
  close(m->plugin[0].response_fd);
  m->plugin[0].response_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* so that machine_close has one to close */
  plugin_resume(m, 0, NULL, 0);
  expect_end(m, 0, true, "closed its end");
  machine_close(m);
}

struct publisher {
  struct machine *m;
  volatile bool stop;
  unsigned published;
};

/* Publishes images that all reserve port 0x10, with 0 to 40 more ranges around it (the buffer grows). */
static void *publish_loop(void *arg) {
  struct publisher *p = arg;
  uint64_t image[7 + 3 * 41];
  while (!p->stop) {
    unsigned extra = p->published % 41;
    memset(image, 0, sizeof image);
    image[0] = extra + 1;
    size_t at = 7;
    for (unsigned i = 0; i <= extra; i++) {
      uint64_t first = i == 0 ? 0x10 : 0x100 + 4 * i;
      image[at++] = first;
      image[at++] = first + (i == 0 ? 0 : 1);
      image[at++] = 0;
    }
    /* Sorted by first address: 0x10 comes before 0x104.. */
    int err = vcpu_config_publish(&p->m->set->config, image, at);
    CHECK(err == 0, "vcpu_config_publish: %s", strerror(err));
    p->published++;
  }
  return NULL;
}

/* Configurations published while a VCPU exits: a range present in every image is never missed. */
static void test_config_published_while_running(void) {
  static const uint8_t code[] = {0xee, 0xeb, 0xfd}; /* l: out dx, al; jmp l */
  struct machine *m = machine_open(1, code, sizeof code, 1000);
  const uint64_t ranges[] = {IOPORT, 0x10, 0x10, 0};
  machine_reserve(m, ranges, 1);
  machine_start(m);
  plugin_init_real_mode(m, 0, 0x10);
  struct publisher p = {.m = m, .stop = false, .published = 0};
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, publish_loop, &p) == 0, "pthread_create");
  plugin_resume(m, 0, NULL, 0);
  for (int i = 0; i < 2000; i++) {
    VcpuResponse *r = plugin_expect_io(m, 0, 5000);
    CHECK(r->wait->io->address == 0x10, "an exit at port 0x%llx", (unsigned long long)r->wait->io->address);
    vcpu_response_free(r);
    plugin_resume(m, 0, NULL, 0);
  }
  p.stop = true;
  pthread_join(thread, NULL);
  CHECK(p.published > 100, "only %u images were published during the exits", p.published);
  machine_close(m);
}

/* The protocol's largest VM: 64 VCPUs, each run to HLT. */
static void test_64_vcpus(void) {
  static const uint8_t code[] = {0xf4};
  struct machine *m = machine_open(64, code, sizeof code, 0);
  machine_start(m);
  for (uint32_t i = 0; i < 64; i++) plugin_run_real_mode(m, i, 0);
  for (uint32_t i = 0; i < 64; i++) expect_end(m, i, false, "halted");
  machine_close(m);
}

/* Bad images are refused, and a refused image changes nothing. */
static void test_config_validation(void) {
  struct vcpu_config config;
  CHECK(vcpu_config_init(&config) == 0, "vcpu_config_init");
  const uint64_t good[] = {1, 0, 0, 0, 0, 0, 0, 0x10, 0x1f, 0};
  CHECK(vcpu_config_publish(&config, good, 10) == 0, "a good image");
  const uint64_t overlapping[] = {2, 0, 0, 0, 0, 0, 0, 0x10, 0x1f, 0, 0x1f, 0x20, 0};
  CHECK(vcpu_config_publish(&config, overlapping, 13) == EINVAL, "overlapping ranges");
  const uint64_t unsorted[] = {2, 0, 0, 0, 0, 0, 0, 0x30, 0x3f, 0, 0x10, 0x1f, 0};
  CHECK(vcpu_config_publish(&config, unsorted, 13) == EINVAL, "unsorted ranges");
  const uint64_t inverted[] = {1, 0, 0, 0, 0, 0, 0, 0x20, 0x10, 0};
  CHECK(vcpu_config_publish(&config, inverted, 10) == EINVAL, "first after last");
  const uint64_t short_image[] = {5, 0, 0, 0, 0, 0, 0, 0x10, 0x1f, 0};
  CHECK(vcpu_config_publish(&config, short_image, 10) == EINVAL, "counts beyond the image");
  const uint64_t huge_counts[] = {UINT64_MAX / 3, UINT64_MAX / 3, 0, 0, 0, 0, UINT64_MAX / 6};
  CHECK(vcpu_config_publish(&config, huge_counts, 7) == EINVAL, "counts that overflow");
  CHECK(vcpu_config_publish(&config, good, 3) == EINVAL, "shorter than the header");
  CHECK(vcpu_config_lookup(&config, 0, 0x10) == VCPU_RESERVED && vcpu_config_lookup(&config, 0, 0x1f) == VCPU_RESERVED,
        "the good image stayed");
  CHECK(vcpu_config_lookup(&config, 0, 0x20) == VCPU_NOT_RESERVED && vcpu_config_lookup(&config, 1, 0x10) == VCPU_NOT_RESERVED,
        "lookups outside the ranges");
  /* A range that ends at 2^64, and the call hint. */
  const uint64_t top[] = {0, 1, 1, 1, 0x8000, 1, 2, UINT64_MAX - 0xfff, UINT64_MAX, 1,
                          1, 0x1111, 0, 0, 0, 1, /* rax == 0x1111: sregs */
                          0, 0, 0, 0, 0, 2};     /* anything else: debugregs */
  CHECK(vcpu_config_publish(&config, top, sizeof top / sizeof top[0]) == 0, "an image with a hint");
  CHECK(vcpu_config_lookup(&config, 1, UINT64_MAX) == VCPU_RESERVED_ASYNC, "the last address of the space");
  CHECK(vcpu_config_hint_matches(&config, 1, 0x8000, true) && !vcpu_config_hint_matches(&config, 1, 0x8000, false) &&
            !vcpu_config_hint_matches(&config, 0, 0x8000, true),
        "the hint matches its space, address and direction only");
  CHECK(vcpu_config_hint_sends(&config, 0x1111, 0, 0, 0) == VCPU_HINT_SEND_SREGS &&
            vcpu_config_hint_sends(&config, 0x2222, 0, 0, 0) == VCPU_HINT_SEND_DEBUGREGS,
        "the first matching register hint decides");
  vcpu_config_destroy(&config);
}

int main(void) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    fprintf(stderr, "SKIP: /dev/kvm is not usable (%s): the native VCPU tests need KVM\n", strerror(errno));
    return 77;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  int fds = open_fd_count(), threads = thread_count();
  static const struct {
    const char *name;
    void (*run)(void);
  } tests[] = {
    {"config validation", test_config_validation},
    {"IO conversation", test_io_conversation},
    {"hostile requests", test_hostile_requests},
    {"pause and shutdown in KVM_RUN", test_pause_and_shutdown_in_kvm_run},
    {"shutdown blocked in a pipe write", test_shutdown_blocked_in_pipe_write},
    {"a plugin that never resumes", test_plugin_never_resumes},
    {"a plugin that closes its pipe", test_plugin_closes_its_pipe},
    {"configurations published while running", test_config_published_while_running},
    {"64 VCPUs", test_64_vcpus},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    tests[i].run();
    CHECK(open_fd_count() == fds, "%s: %d fds open, %d before", tests[i].name, open_fd_count(), fds);
    CHECK(thread_count() == threads, "%s: %d threads, %d before", tests[i].name, thread_count(), threads);
    printf("ok %zu - %s\n", i + 1, tests[i].name);
  }
  printf("1..%zu\n", sizeof tests / sizeof tests[0]);
  return 0;
}
