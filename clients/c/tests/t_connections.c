/*
 * t_connections: connections, object ids across connections and threads,
 * and the errors the host reports.
 *
 *  - crosvm_connect fails cleanly without (or with a bad) CROSVM_SOCKET;
 *  - extra connections share the VCPU handles; objects created on one
 *    connection can be destroyed through another (ids are process-wide);
 *  - four threads, each with its own connection, create and destroy IO
 *    events concurrently: ids never collide;
 *  - the host's refusals come back as negative errno values (EPERM, ENOENT,
 *    EINVAL, ENOSPC, EOVERFLOW, EBADF...);
 *  - the VM then runs a one-instruction guest to completion.
 */
#include "testlib.h"

#include <pthread.h>

#define DONE_PORT 0x760
#define THREADS 4
#define ROUNDS 25

static const uint8_t code[] = {
    0xba, 0x60, 0x07,                        /* 1000: mov dx, 0x760 */
    0xee,                                    /* 1003: out dx, al */
    0xf4,                                    /* 1004: hlt */
};

static struct crosvm *root;

static void *churn(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  struct crosvm *c;
  OK(crosvm_new_connection(root, &c));
  for (unsigned i = 0; i < ROUNDS; i++) {
    struct crosvm_io *io;
    uint8_t match = (uint8_t)i;
    OK(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x800 + id * 0x40 + i, 1,
                              &match, &io));
    CHECK(crosvm_io_event_fd(io) >= 0);
    OK(crosvm_destroy_io_event(c, &io));
  }
  OK(crosvm_destroy_connection(&c));
  return NULL;
}

static void host_errors(struct crosvm *c) {
  /* Ranges. */
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x900, 0x10));
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x908, 1), -EPERM);
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x8f8, 0x10), -EPERM);
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x901, 0), -ENOENT);
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, UINT64_MAX - 1, 0x10), -EINVAL);
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, 0x900, 0x10)); /* another space */
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x900, 0));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_MMIO, 0x900, 0));
  CHECK_RC(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x900, 0), -ENOENT);
  CHECK_RC(crosvm_reserve_range(c, 2, 0x900, 1), -EINVAL);

  /* Memory. */
  struct crosvm_memory *mem = NULL;
  int plain = memfd_create("unsealed", MFD_CLOEXEC);
  CHECK(plain >= 0 && ftruncate(plain, 0x1000) == 0);
  CHECK_RC(crosvm_create_memory(c, plain, 0, 0x1000, 0x100000, false, false, &mem), -EPERM);
  close(plain);
  struct guest_mem g;
  guest_mem_alloc(&g, 0x2000);
  CHECK_RC(crosvm_create_memory(c, g.fd, 0x1000, 0x2000, 0x100000, false, false, &mem),
           -EINVAL); /* past the end of the file */
  CHECK_RC(crosvm_create_memory(c, g.fd, UINT64_MAX - 0xfff, 0x2000, 0x100000, false, false,
                                &mem),
           -EOVERFLOW);
  CHECK_RC(crosvm_create_memory(c, -1, 0, 0x1000, 0x100000, false, false, &mem), -EBADF);
  CHECK(mem == NULL);
  OK(crosvm_create_memory(c, g.fd, 0, 0x2000, 0x100000, false, false, &mem));
  struct crosvm_memory *overlap = NULL;
  CHECK_RC(crosvm_create_memory(c, g.fd, 0, 0x1000, 0x101000, false, false, &overlap),
           -ENOSPC);
  uint8_t log[1];
  CHECK_RC(crosvm_memory_get_dirty_log(c, mem, log), -ENOENT); /* not dirty-logged */
  g.mem = mem;
  guest_mem_destroy(c, &g);

  /* Library-side refusals. */
  uint64_t args[4] = {0};
  CHECK_RC(crosvm_enable_capability(c, 0, 0, args), -EINVAL);
  struct crosvm_irq_route route;
  memset(&route, 0, sizeof(route));
  route.kind = 9;
  CHECK_RC(crosvm_set_irq_routing(c, 1, &route), -EINVAL);
}

int main(void) {
  /* Connecting needs a valid CROSVM_SOCKET. */
  const char *env = getenv("CROSVM_SOCKET");
  CHECK(env != NULL);
  char *saved = strdup(env);
  struct crosvm *c = NULL;
  unsetenv("CROSVM_SOCKET");
  CHECK_RC(crosvm_connect(&c), -ENOTCONN);
  setenv("CROSVM_SOCKET", "not-a-number", 1);
  CHECK_RC(crosvm_connect(&c), -EINVAL);
  setenv("CROSVM_SOCKET", saved, 1);
  free(saved);
  OK(crosvm_connect(&c));
  root = c;

  /* More connections: the same VCPUs; ids shared across connections. */
  struct crosvm *c2, *c3;
  OK(crosvm_new_connection(c, &c2));
  OK(crosvm_new_connection(c2, &c3));
  struct crosvm_vcpu *v1, *v2, *v3;
  OK(crosvm_get_vcpu(c, 0, &v1));
  OK(crosvm_get_vcpu(c2, 0, &v2));
  OK(crosvm_get_vcpu(c3, 0, &v3));
  CHECK(v1 == v2 && v2 == v3);
  CHECK_RC(crosvm_get_vcpu(c3, 1, &v3), -ENOENT);
  struct crosvm_io *io;
  OK(crosvm_create_io_event(c2, CROSVM_ADDRESS_SPACE_IOPORT, 0x7f0, 0, NULL, &io));
  OK(crosvm_destroy_io_event(c3, &io));
  struct crosvm_irq *irq;
  OK(crosvm_create_irq_event(c3, 6, &irq));
  OK(crosvm_destroy_irq_event(c, &irq));
  int shutdown_fd = crosvm_get_shutdown_eventfd(c3);
  CHECK(shutdown_fd >= 0);
  CHECK(eventfd_wait(shutdown_fd, 0) == 0); /* not signalled */
  close(shutdown_fd);
  OK(crosvm_destroy_connection(&c3));
  CHECK(c3 == NULL);

  pthread_t threads[THREADS];
  for (unsigned i = 0; i < THREADS; i++)
    CHECK(pthread_create(&threads[i], NULL, churn, (void *)(uintptr_t)i) == 0);
  for (unsigned i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);

  host_errors(c2);

  struct guest_mem low;
  load_real_mode_code(c, &low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, 1));
  OK(crosvm_start(c2));
  CHECK_RC(crosvm_start(c), -EINVAL); /* only once */
  struct crosvm_vcpu_event evt;
  wait_kind(v1, &evt, CROSVM_VCPU_EVENT_KIND_INIT);
  real_mode_init(v1, REAL_MODE_CODE, REAL_MODE_STACK, NULL);
  OK(crosvm_vcpu_resume(v1));
  wait_io(v1, &evt, CROSVM_ADDRESS_SPACE_IOPORT, DONE_PORT, true, 1);

  guest_mem_destroy(c, &low);
  OK(crosvm_destroy_connection(&c2));
  OK(crosvm_destroy_connection(&c));
  CHECK(c == NULL && c2 == NULL);
  printf("connections: ok\n");
  return 0;
}
