/*
 * Takes the CPU exception named by argv[1] at an instruction with a global
 * label, so the test can check the reported RIP against the symbol table.
 */
#include "plugvisor.h"

__attribute__((used)) const int read_only_table[4] = {1, 2, 3, 4}; /* in .rodata: a read-only page */

static int same(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

int main(int argc, char **argv, struct pv_info *info) {
  (void)info;
  const char *which = argc > 1 ? argv[1] : "";
  if (same(which, "null")) __asm__ volatile(".globl fault_null\nfault_null: movl 0, %%eax" ::: "rax");
  if (same(which, "ud2")) __asm__ volatile(".globl fault_ud2\nfault_ud2: ud2");
  if (same(which, "divide")) __asm__ volatile(".globl fault_divide\nfault_divide: xor %%ecx, %%ecx\n.globl fault_divide_div\nfault_divide_div: divl %%ecx" ::: "rax", "rcx", "rdx");
  if (same(which, "read-only")) __asm__ volatile(".globl fault_read_only\nfault_read_only: movl $5, read_only_table+4(%%rip)" ::: "memory");
  if (same(which, "syscall")) __asm__ volatile("movl $60, %%eax\n.globl fault_syscall\nfault_syscall: syscall" ::: "rax", "rcx", "r11");
  if (same(which, "stack")) {
    /* Runs into the guard page below the stack: every page on the way down is touched. */
    __asm__ volatile("1: sub $4096, %%rsp\n movq $0, (%%rsp)\n jmp 1b" ::: "memory");
  }
  if (same(which, "spin")) for (;;) __asm__ volatile("");
  if (same(which, "exit-port")) pv_outb(PV_DEBUG_EXIT_PORT, 0x10); /* status (0x10 << 1) | 1 = 33 */
  if (same(which, "bad-pointer")) pv_write(1, (const void *)0x1000, 16); /* the system area */
  return 0;
}
PV_START(main)
