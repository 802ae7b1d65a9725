// header_cxx: crosvm.h compiles as C++ (extern "C", static_assert) and its
// layouts are the same there. Built with g++ -std=c++11 -Wall -Wextra -Werror.
#include <crosvm.h>

#include <cstddef>
#include <cstdio>

static_assert(sizeof(crosvm_net_config) == 20, "net config");
static_assert(sizeof(crosvm_irq_route) == 24, "irq route");
static_assert(sizeof(crosvm_hint_detail) == 48, "hint detail");
static_assert(sizeof(crosvm_hint) == 32, "hint");
static_assert(sizeof(crosvm_vcpu_event) == 72, "vcpu event");
static_assert(offsetof(crosvm_vcpu_event, io_access) == 8, "io_access");
static_assert(offsetof(crosvm_hint, details) == 24, "details");

// The functions have C linkage: taking their addresses names the C symbols.
static int (*const connect_fn)(crosvm **) = crosvm_connect;
static int (*const wait_fn)(crosvm_vcpu *, crosvm_vcpu_event *) = crosvm_vcpu_wait;

int main() {
  crosvm_vcpu_event event = {};
  event.kind = CROSVM_VCPU_EVENT_KIND_IO_ACCESS;
  event.io_access.length = 4;
  crosvm_irq_route route = {};
  route.kind = CROSVM_IRQ_ROUTE_MSI;
  route.msi.address = 0xfee00000;
  std::printf("header_cxx: ok (%d %d %p %p)\n", static_cast<int>(event.kind),
              static_cast<int>(route.kind), reinterpret_cast<void *>(connect_fn),
              reinterpret_cast<void *>(wait_fn));
  return 0;
}
