/*
 * COM1's interrupt: unmask IRQ 4 at the PIC the runner set up (vector
 * 0x24), enable the transmitter-empty interrupt with OUT2 set, and wait
 * until the plugin says (host function 2) that it saw the interrupt. Then
 * IIR must say "THR empty", and after reading it and disabling the
 * interrupt, "none".
 */
#include "plugvisor.h"

int main(int argc, char **argv, struct pv_info *info) {
  (void)argc; (void)argv; (void)info;
  pv_outb(0x21, 0xeb);             /* PIC: unmask IRQ 4 (and keep the cascade, IRQ 2) */
  pv_outb(PV_COM1_PORT + 4, 0x08); /* MCR: OUT2 connects the interrupt */
  pv_outb(PV_COM1_PORT + 1, 0x02); /* IER: THR empty */
  uint64_t seen = 0;
  for (long i = 0; i < 1000000 && seen == 0; i++) seen = pv_call0(2);
  if (seen == 0) return 1;
  uint8_t iir = pv_inb(PV_COM1_PORT + 2);
  pv_outb(PV_COM1_PORT + 1, 0x00);
  uint8_t after = pv_inb(PV_COM1_PORT + 2);
  if (iir != 0x02) return 2;
  if (after != 0x01) return 3;
  return 0;
}
PV_START(main)
