/*
 * startup_guest.elf: its first instruction asks the host for the wall clock
 * (a host call), so `plugvisor exec` start-up to the first guest
 * instruction is that time minus the runner's clock before spawn(). Prints
 * {"firstInstructionUnixMs":..., ...}.
 */
#include "guest_json.h"

/* _start: the clock host call before anything else, its result passed on to main as argc would be. */
__asm__(".globl _start\n"
        "_start:\n"
        "  mov $0x80000002, %eax\n" /* PV_CALL_CLOCK */
        "  xor %edi, %edi\n"        /* the wall clock */
        "  out %eax, $0xf8\n"       /* PV_HOST_CALL_PORT */
        "  mov %rax, %rdi\n"
        "  and $-16, %rsp\n"
        "  call startup_main\n"
        "  ud2\n");

__attribute__((noreturn, used)) void startup_main(uint64_t first_ns) {
  struct json j = {0};
  json_number(&j, "firstInstructionUnixMs", first_ns / 1000);
  json_end(&j);
  pv_exit(0);
}
