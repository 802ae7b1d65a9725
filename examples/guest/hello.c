/*
 * The smallest plugvisor program worth running: greets on COM1 (as any
 * freestanding program could, one byte per `out`), then lists its arguments
 * and how much memory it has with the write host call.
 *
 *   gcc -static -nostdlib -ffreestanding -O2 -Iexamples/guest -o hello.elf examples/guest/hello.c
 *   plugvisor exec hello.elf -- one two
 */
#include "plugvisor.h"

static void print_number(uint64_t v) {
  char text[20];
  int at = 20;
  do text[--at] = (char)('0' + v % 10), v /= 10; while (v);
  pv_write(1, text + at, (size_t)(20 - at));
}

int main(int argc, char **argv, struct pv_info *info) {
  for (const char *p = "hello from a plugvisor guest\n"; *p; p++) pv_serial_putc(*p);
  for (int i = 0; i < argc; i++) {
    pv_puts("argv[");
    print_number((uint64_t)i);
    pv_puts("] = ");
    pv_puts(argv[i]);
    pv_puts("\n");
  }
  pv_puts("free memory: ");
  print_number((info->heap_end - info->heap_start) >> 20);
  pv_puts(" MiB\n");
  return 0;
}
PV_START(main)
