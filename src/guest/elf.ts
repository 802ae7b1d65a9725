/**
 * Reads a static, freestanding x86-64 ELF executable: its PT_LOAD segments
 * and entry point. Everything else it could be is refused with an error
 * that says what to change (32-bit, another machine, dynamically linked,
 * position-independent, thread-local storage).
 *
 * Why not a library: the npm ELF parsers read far more than this needs and
 * none checks what a loader must (segments inside the file, entry in an
 * executable segment); the format's part used here is a few fixed fields.
 */

export interface ElfSegment {
  /** Where it goes (guest virtual = physical). */
  address: number;
  /** Bytes in memory; past `data` they are zero (.bss). */
  memorySize: number;
  /** The file's bytes of the segment. */
  data: Uint8Array;
  readable: boolean;
  writable: boolean;
  executable: boolean;
}

export interface ElfProgram {
  entry: number;
  segments: ElfSegment[];
}

/** A file the loader cannot run, with the reason in the message. */
export class ElfError extends Error {
  override name = 'ElfError';
}

const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ET_REL = 1;
const ET_EXEC = 2;
const ET_DYN = 3;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_TLS = 7;
const PF_X = 1;
const PF_W = 2;
const PF_R = 4;
const ELF64_HEADER_SIZE = 64;
const ELF64_PHDR_SIZE = 56;

const MACHINES: Record<number, string> = {
  3: 'x86 (i386)',
  40: 'ARM',
  183: 'AArch64',
  243: 'RISC-V',
  8: 'MIPS',
  20: 'PowerPC',
  21: 'PowerPC64',
};

const CLASS_HINT = 'build it as a 64-bit x86-64 executable (gcc -m64)';
const LINK_HINT =
  'link it with -static -nostdlib (and not -static-pie), e.g. gcc -static -nostdlib -ffreestanding -o prog.elf prog.c';

/** Parses `file`; `name` (e.g. its path) starts every error message. */
export function parseElf(file: Uint8Array, name = 'program'): ElfProgram {
  const fail = (why: string): never => {
    throw new ElfError(`${name}: ${why}`);
  };
  if (file.length < 4 || file[0] !== 0x7f || file[1] !== 0x45 || file[2] !== 0x4c || file[3] !== 0x46) {
    fail('not an ELF file (no \\x7fELF magic)');
  }
  if (file.length < ELF64_HEADER_SIZE) fail(`truncated ELF header (${file.length} bytes)`);
  if (file[4] !== ELFCLASS64) fail(`a 32-bit ELF file (ELFCLASS${file[4] === 1 ? '32' : file[4]}): ${CLASS_HINT}`);
  if (file[5] !== ELFDATA2LSB) fail('a big-endian ELF file: build it for x86-64');
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const machine = view.getUint16(18, true);
  if (machine !== EM_X86_64) fail(`built for ${MACHINES[machine] ?? `machine ${machine}`}, not x86-64: ${CLASS_HINT}`);
  const type = view.getUint16(16, true);
  if (type === ET_REL) fail(`an object file (ET_REL), not an executable: ${LINK_HINT}`);
  if (type !== ET_EXEC && type !== ET_DYN) fail(`not an executable (ELF type ${type}): ${LINK_HINT}`);
  const entry = u64(view, 24, fail);
  const phoff = u64(view, 32, fail);
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  if (phentsize !== ELF64_PHDR_SIZE) fail(`unexpected program header size ${phentsize}`);
  if (phnum === 0) fail('no program headers (an object file? link it into an executable)');
  if (phoff + phnum * ELF64_PHDR_SIZE > file.length) fail('program headers beyond the end of the file (truncated?)');

  const segments: ElfSegment[] = [];
  let interpreter: string | undefined;
  let dynamic = false;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * ELF64_PHDR_SIZE;
    const kind = view.getUint32(at, true);
    const flags = view.getUint32(at + 4, true);
    const offset = u64(view, at + 8, fail);
    const address = u64(view, at + 16, fail);
    const fileSize = u64(view, at + 32, fail);
    const memorySize = u64(view, at + 40, fail);
    if (kind === PT_INTERP) {
      const end = Math.min(offset + fileSize, file.length);
      interpreter = new TextDecoder().decode(file.subarray(offset, end)).replace(/\0+$/, '');
    } else if (kind === PT_DYNAMIC) {
      dynamic = true;
    } else if (kind === PT_TLS) {
      fail('uses thread-local storage (a PT_TLS segment), which plugvisor programs do not have: drop __thread / _Thread_local');
    } else if (kind === PT_LOAD && memorySize > 0) {
      if (fileSize > memorySize) fail(`segment ${i} has more file bytes (${fileSize}) than memory bytes (${memorySize})`);
      if (offset + fileSize > file.length) fail(`segment ${i} extends beyond the end of the file (truncated?)`);
      segments.push({
        address,
        memorySize,
        data: file.subarray(offset, offset + fileSize),
        readable: (flags & PF_R) !== 0,
        writable: (flags & PF_W) !== 0,
        executable: (flags & PF_X) !== 0,
      });
    }
  }
  if (interpreter !== undefined) fail(`dynamically linked (it asks for the interpreter ${interpreter}): ${LINK_HINT}`);
  if (type === ET_DYN) {
    fail(
      `a position-independent executable (ET_DYN${dynamic ? ', with relocations' : ''}); plugvisor loads programs at their link address and does not relocate: ${LINK_HINT}`,
    );
  }
  if (dynamic) fail(`has a dynamic section, which a static executable does not: ${LINK_HINT}`);
  if (segments.length === 0) fail('no PT_LOAD segments: nothing to run');
  if (!segments.some((s) => s.executable && entry >= s.address && entry < s.address + s.memorySize)) {
    fail(`the entry point 0x${entry.toString(16)} is not in an executable segment`);
  }
  return { entry, segments };
}

/** A u64 field that must fit a JavaScript number (anything larger could not be a guest address here anyway). */
function u64(view: DataView, at: number, fail: (why: string) => never): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`a header field at offset ${at} is too large (0x${value.toString(16)})`);
  return Number(value);
}
