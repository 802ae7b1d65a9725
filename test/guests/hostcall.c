/*
 * Calls the plugin's host function 7 (a, b) -> a * b + 1 and uses each
 * result for the next call; prints the last one in decimal with the write
 * host call and exits with its low byte.
 */
#include "plugvisor.h"

int main(int argc, char **argv, struct pv_info *info) {
  (void)argc; (void)argv; (void)info;
  uint64_t x = 3;
  for (int i = 0; i < 5; i++) x = pv_call2(7, x, (uint64_t)i + 2);
  char text[24];
  int at = 23;
  text[at] = '\n';
  uint64_t v = x;
  do { text[--at] = (char)('0' + v % 10); v /= 10; } while (v);
  pv_write(1, text + at, (size_t)(24 - at));
  return (int)(x & 0xff);
}
PV_START(main)
