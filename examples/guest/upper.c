/*
 * Asks its plugin (examples/run-program.ts) to upper-case each argument
 * through host function 1, prints the results, and exits with the number of
 * letters changed.
 */
#include "plugvisor.h"

#define HOST_UPPERCASE 1

int main(int argc, char **argv, struct pv_info *info) {
  (void)info;
  uint64_t changed = 0;
  for (int i = 1; i < argc; i++) {
    size_t length = pv_strlen(argv[i]);
    changed += pv_call2(HOST_UPPERCASE, (uint64_t)(uintptr_t)argv[i], length);
    pv_write(1, argv[i], length);
    pv_puts("\n");
  }
  return (int)changed;
}
PV_START(main)
