/*
 * kernel_guest.elf: the compute kernel (kernel.h) as a plugvisor program,
 * run with `plugvisor exec`, twice, as kernel_native does. Timed with the
 * host's monotonic clock (host calls around each pass); prints the same
 * JSON line as kernel_native.
 */
#include "guest_json.h"
#include "kernel.h"

static int run(int argc, char **argv, struct pv_info *info) {
  (void)argc; (void)argv; (void)info;
  uint64_t start = pv_clock_ns(1);
  uint64_t checksum = kernel();
  uint64_t middle = pv_clock_ns(1);
  if (kernel() != checksum) return 1;
  uint64_t end = pv_clock_ns(1);
  struct json j = {0};
  json_number(&j, "firstPassMs", (middle - start) / 1000);
  json_number(&j, "kernelMs", (end - middle) / 1000);
  json_hex(&j, "checksum", checksum);
  json_end(&j);
  return 0;
}
PV_START(run)
