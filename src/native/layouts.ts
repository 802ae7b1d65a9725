/**
 * The names in the addon's `layouts` (native/layouts.c): for each KVM struct
 * that TypeScript builds or reads field by field, the fields whose offsets
 * the C compiler computed from <linux/kvm.h>. Only the names live here, for
 * the types; test/native.test.ts checks them against what the addon exports.
 */
export const LAYOUT_FIELDS = {
  kvm_userspace_memory_region: ['slot', 'flags', 'guestPhysAddr', 'memorySize', 'userspaceAddr'],
  kvm_ioeventfd: ['datamatch', 'addr', 'len', 'fd', 'flags'],
  kvm_irqfd: ['fd', 'gsi', 'flags', 'resamplefd'],
  kvm_irq_level: ['irq', 'level'],
  kvm_irq_routing: ['nr', 'entries'],
  kvm_irq_routing_entry: ['gsi', 'type', 'irqchipIrqchip', 'irqchipPin', 'msiAddressLo', 'msiAddressHi', 'msiData'],
  kvm_cpuid2: ['nent', 'entries'],
  kvm_cpuid_entry2: ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'],
  kvm_msrs: ['nmsrs', 'entries'],
  kvm_msr_entry: ['index', 'data'],
  kvm_msr_list: ['nmsrs', 'indices'],
  kvm_dirty_log: ['slot', 'dirtyBitmap'],
  kvm_enable_cap: ['cap', 'flags', 'args', 'pad'],
  kvm_irqchip: ['chipId', 'chip'],
  kvm_pit_config: ['flags'],
  kvm_pic_state: ['imr', 'irqBase', 'initState', 'autoEoi', 'init4'],
  kvm_segment: ['base', 'limit', 'selector', 'type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'],
  kvm_dtable: ['base', 'limit'],
  kvm_sregs: [
    'cs',
    'ds',
    'es',
    'fs',
    'gs',
    'ss',
    'tr',
    'ldt',
    'gdt',
    'idt',
    'cr0',
    'cr2',
    'cr3',
    'cr4',
    'cr8',
    'efer',
    'apicBase',
  ],
  /** In the header's order. */
  kvm_regs: [
    'rax',
    'rbx',
    'rcx',
    'rdx',
    'rsi',
    'rdi',
    'rsp',
    'rbp',
    'r8',
    'r9',
    'r10',
    'r11',
    'r12',
    'r13',
    'r14',
    'r15',
    'rip',
    'rflags',
  ],
  kvm_debugregs: ['db', 'dr6', 'dr7', 'flags'],
} as const;

/** A struct the addon exports the layout of (its name in <linux/kvm.h>). */
export type LayoutName = keyof typeof LAYOUT_FIELDS;

/** One struct's layout: its `size`, and the byte offset of each field. */
export type Layout<N extends LayoutName> = Readonly<Record<(typeof LAYOUT_FIELDS)[N][number] | 'size', number>>;

/** The addon's `layouts`. */
export type Layouts = { readonly [N in LayoutName]: Layout<N> };
