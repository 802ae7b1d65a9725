/*
 * hostcall_guest.elf CALLS WARMUP: makes WARMUP host calls of function 1
 * (bench/plugins/host-call.ts: returns its argument + 1), then CALLS more
 * timed with the host's monotonic clock, checking every result. Prints
 * {"usPerCall":..., ...}: one call's round trip, guest -> plugin -> guest.
 */
#include "guest_json.h"

static uint64_t parse(const char *s) {
  uint64_t v = 0;
  while (*s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s++ - '0');
  return v;
}

static int run(int argc, char **argv, struct pv_info *info) {
  (void)info;
  if (argc < 3) return 2;
  uint64_t calls = parse(argv[1]), warmup = parse(argv[2]);
  for (uint64_t i = 0; i < warmup; i++)
    if (pv_call1(1, i) != i + 1) return 3;
  uint64_t start = pv_clock_ns(1);
  for (uint64_t i = 0; i < calls; i++)
    if (pv_call1(1, i) != i + 1) return 3;
  uint64_t end = pv_clock_ns(1);
  struct json j = {0};
  json_number(&j, "usPerCall", (end - start) / calls);
  json_end(&j);
  return 0;
}
PV_START(run)
