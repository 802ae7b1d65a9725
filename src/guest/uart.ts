/**
 * A 16550A UART, enough of one for what programs do with COM1: transmit
 * (every byte written to THR goes to `output` at once, so the transmitter is
 * always empty), receive (bytes given to {@link Uart16550.receive}), the
 * divisor latch, scratch, modem control with loopback, FIFO control, and
 * the interrupt logic: IER enables "data received" and "transmitter
 * empty" interrupts, IIR reports the highest pending one, and the line
 * (gated by MCR.OUT2, as on PCs) goes to an {@link InterruptLine}.
 *
 * Register offsets from the base port (DLAB = LCR bit 7):
 *   0  RBR (read) / THR (write); DLL with DLAB
 *   1  IER; DLM with DLAB
 *   2  IIR (read) / FCR (write)
 *   3  LCR    4  MCR    5  LSR    6  MSR    7  SCR
 */

/** Where the UART's interrupt goes (e.g. an irqfd: see runner.ts). */
export interface InterruptLine {
  /** Called when the line's level changes. */
  set(level: boolean): void;
}

const IER_RX = 0x01;
const IER_THRE = 0x02;
const IIR_NONE = 0x01;
const IIR_THRE = 0x02;
const IIR_RX = 0x04;
const IIR_FIFO = 0xc0;
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
const LCR_DLAB = 0x80;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
/** CTS, DSR and DCD asserted: a terminal is attached and ready. */
const MSR_CONNECTED = 0xb0;

export class Uart16550 {
  private ier = 0;
  private lcr = 0x03; // 8N1
  private mcr = 0;
  private scr = 0;
  private fcr = 0;
  private dll = 0x0c; // 9600 baud
  private dlm = 0;
  /** THRE interrupt pending: set when THR empties (always at once here) or THRE is enabled; cleared by reading IIR or writing THR. */
  private thrEmptyPending = true;
  private level = false;
  private readonly rx: number[] = [];

  /**
   * @param output receives each transmitted byte.
   * @param line the interrupt line, if the UART has one.
   */
  constructor(
    private readonly output: (byte: number) => void,
    private readonly line?: InterruptLine,
  ) {}

  /** Bytes for the program to read from RBR. */
  receive(bytes: Uint8Array): void {
    for (const b of bytes) this.rx.push(b);
    this.update();
  }

  /** True while the interrupt line is asserted. */
  get interruptLevel(): boolean {
    return this.level;
  }

  /** A read of register `offset` (0..7). */
  read(offset: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    let value: number;
    switch (offset) {
      case 0:
        if (dlab) return this.dll;
        value = this.rx.shift() ?? 0;
        break;
      case 1:
        return dlab ? this.dlm : this.ier;
      case 2:
        value = this.interruptId();
        if ((value & 0x0f) === IIR_THRE) this.thrEmptyPending = false;
        break;
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5:
        return (this.rx.length > 0 ? LSR_DR : 0) | LSR_THRE | LSR_TEMT;
      case 6:
        return this.mcr & MCR_LOOP ? this.loopbackModemStatus() : MSR_CONNECTED;
      case 7:
        return this.scr;
      default:
        throw new RangeError(`UART register offset ${offset} is not 0..7`);
    }
    this.update();
    return value;
  }

  /** A write of `value` to register `offset` (0..7). */
  write(offset: number, value: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case 0:
        if (dlab) {
          this.dll = value;
          return;
        }
        if (this.mcr & MCR_LOOP) this.rx.push(value);
        else this.output(value);
        this.thrEmptyPending = true; // sent at once: THR is empty again
        break;
      case 1:
        if (dlab) {
          this.dlm = value;
          return;
        }
        // Enabling THRE while THR is empty raises it at once, as on a real 16550.
        if (value & IER_THRE && !(this.ier & IER_THRE)) this.thrEmptyPending = true;
        this.ier = value & 0x0f;
        break;
      case 2:
        this.fcr = value & FCR_ENABLE ? value : 0;
        if (value & FCR_CLEAR_RX) this.rx.length = 0;
        break;
      case 3:
        this.lcr = value;
        return;
      case 4:
        this.mcr = value & 0x1f;
        break;
      case 5:
      case 6:
        return; // read-only (factory test on some chips)
      case 7:
        this.scr = value;
        return;
      default:
        throw new RangeError(`UART register offset ${offset} is not 0..7`);
    }
    this.update();
  }

  /** Re-asserts the line if an interrupt is still pending (after an irqfd resample: the line was lowered at EOI). */
  resample(): void {
    this.level = false;
    this.update();
  }

  private interruptId(): number {
    const fifo = this.fcr & FCR_ENABLE ? IIR_FIFO : 0;
    if (this.ier & IER_RX && this.rx.length > 0) return IIR_RX | fifo;
    if (this.ier & IER_THRE && this.thrEmptyPending) return IIR_THRE | fifo;
    return IIR_NONE | fifo;
  }

  private loopbackModemStatus(): number {
    // In loopback, DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
    const m = this.mcr;
    return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4);
  }

  private update(): void {
    const pending = (this.interruptId() & IIR_NONE) === 0;
    // OUT2 connects the interrupt output to the bus on PCs; loopback disconnects it.
    const level = pending && (this.mcr & MCR_OUT2) !== 0 && (this.mcr & MCR_LOOP) === 0;
    if (level === this.level) return;
    this.level = level;
    this.line?.set(level);
  }
}
