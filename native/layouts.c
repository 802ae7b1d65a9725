/*
 * The layouts of the KVM structs that TypeScript builds or reads field by
 * field (src/kvm/structs.ts), exported as `layouts`: for each struct its
 * `size` and the offset of every field used, computed here by the C compiler
 * from <linux/kvm.h>, so no offset is written down anywhere else. Field names
 * are TypeScript's (camelCase); src/native/layouts.ts lists them for the
 * types, and test/native.test.ts checks that the two lists agree.
 */
#include "layouts.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <linux/kvm.h>

typedef struct {
  const char *layout; /* the struct's name: "kvm_regs" */
  const char *field;  /* "size", or a field's name */
  int64_t value;      /* the size, or the field's offset */
} layout_entry_t;

#define SIZE(type) {#type, "size", (int64_t)sizeof(struct type)}
#define FIELD(type, name, member) {#type, name, (int64_t)offsetof(struct type, member)}
/* A field whose name in TypeScript is its name in the header. */
#define SAME(type, member) FIELD(type, #member, member)

static const layout_entry_t entries[] = {
  SIZE(kvm_userspace_memory_region),
  SAME(kvm_userspace_memory_region, slot),
  SAME(kvm_userspace_memory_region, flags),
  FIELD(kvm_userspace_memory_region, "guestPhysAddr", guest_phys_addr),
  FIELD(kvm_userspace_memory_region, "memorySize", memory_size),
  FIELD(kvm_userspace_memory_region, "userspaceAddr", userspace_addr),

  SIZE(kvm_ioeventfd),
  SAME(kvm_ioeventfd, datamatch), SAME(kvm_ioeventfd, addr), SAME(kvm_ioeventfd, len),
  SAME(kvm_ioeventfd, fd), SAME(kvm_ioeventfd, flags),

  SIZE(kvm_irqfd),
  SAME(kvm_irqfd, fd), SAME(kvm_irqfd, gsi), SAME(kvm_irqfd, flags), SAME(kvm_irqfd, resamplefd),

  SIZE(kvm_irq_level),
  SAME(kvm_irq_level, irq), SAME(kvm_irq_level, level),

  SIZE(kvm_irq_routing),
  SAME(kvm_irq_routing, nr), SAME(kvm_irq_routing, entries),

  SIZE(kvm_irq_routing_entry),
  SAME(kvm_irq_routing_entry, gsi), SAME(kvm_irq_routing_entry, type),
  FIELD(kvm_irq_routing_entry, "irqchipIrqchip", u.irqchip.irqchip),
  FIELD(kvm_irq_routing_entry, "irqchipPin", u.irqchip.pin),
  FIELD(kvm_irq_routing_entry, "msiAddressLo", u.msi.address_lo),
  FIELD(kvm_irq_routing_entry, "msiAddressHi", u.msi.address_hi),
  FIELD(kvm_irq_routing_entry, "msiData", u.msi.data),

  SIZE(kvm_cpuid2),
  SAME(kvm_cpuid2, nent), SAME(kvm_cpuid2, entries),

  SIZE(kvm_cpuid_entry2),
  SAME(kvm_cpuid_entry2, function), SAME(kvm_cpuid_entry2, index), SAME(kvm_cpuid_entry2, flags),
  SAME(kvm_cpuid_entry2, eax), SAME(kvm_cpuid_entry2, ebx), SAME(kvm_cpuid_entry2, ecx), SAME(kvm_cpuid_entry2, edx),

  SIZE(kvm_msrs),
  SAME(kvm_msrs, nmsrs), SAME(kvm_msrs, entries),

  SIZE(kvm_msr_entry),
  SAME(kvm_msr_entry, index), SAME(kvm_msr_entry, data),

  SIZE(kvm_msr_list),
  SAME(kvm_msr_list, nmsrs), SAME(kvm_msr_list, indices),

  SIZE(kvm_dirty_log),
  SAME(kvm_dirty_log, slot), FIELD(kvm_dirty_log, "dirtyBitmap", dirty_bitmap),

  /* `pad` follows `args`: the number of args is (pad - args) / 8. */
  SIZE(kvm_enable_cap),
  SAME(kvm_enable_cap, cap), SAME(kvm_enable_cap, flags), SAME(kvm_enable_cap, args), SAME(kvm_enable_cap, pad),

  SIZE(kvm_irqchip),
  FIELD(kvm_irqchip, "chipId", chip_id), SAME(kvm_irqchip, chip),

  SIZE(kvm_pit_config),
  SAME(kvm_pit_config, flags),

  SIZE(kvm_pic_state),
  SAME(kvm_pic_state, imr), FIELD(kvm_pic_state, "irqBase", irq_base), FIELD(kvm_pic_state, "initState", init_state),
  FIELD(kvm_pic_state, "autoEoi", auto_eoi), SAME(kvm_pic_state, init4),

  SIZE(kvm_segment),
  SAME(kvm_segment, base), SAME(kvm_segment, limit), SAME(kvm_segment, selector), SAME(kvm_segment, type),
  SAME(kvm_segment, present), SAME(kvm_segment, dpl), SAME(kvm_segment, db), SAME(kvm_segment, s),
  SAME(kvm_segment, l), SAME(kvm_segment, g), SAME(kvm_segment, avl), SAME(kvm_segment, unusable),

  SIZE(kvm_dtable),
  SAME(kvm_dtable, base), SAME(kvm_dtable, limit),

  SIZE(kvm_sregs),
  SAME(kvm_sregs, cs), SAME(kvm_sregs, ds), SAME(kvm_sregs, es), SAME(kvm_sregs, fs),
  SAME(kvm_sregs, gs), SAME(kvm_sregs, ss), SAME(kvm_sregs, tr), SAME(kvm_sregs, ldt),
  SAME(kvm_sregs, gdt), SAME(kvm_sregs, idt),
  SAME(kvm_sregs, cr0), SAME(kvm_sregs, cr2), SAME(kvm_sregs, cr3), SAME(kvm_sregs, cr4), SAME(kvm_sregs, cr8),
  SAME(kvm_sregs, efer), FIELD(kvm_sregs, "apicBase", apic_base),

  /* In the header's order: REG_NAMES (src/kvm/structs.ts) is this list. */
  SIZE(kvm_regs),
  SAME(kvm_regs, rax), SAME(kvm_regs, rbx), SAME(kvm_regs, rcx), SAME(kvm_regs, rdx),
  SAME(kvm_regs, rsi), SAME(kvm_regs, rdi), SAME(kvm_regs, rsp), SAME(kvm_regs, rbp),
  SAME(kvm_regs, r8), SAME(kvm_regs, r9), SAME(kvm_regs, r10), SAME(kvm_regs, r11),
  SAME(kvm_regs, r12), SAME(kvm_regs, r13), SAME(kvm_regs, r14), SAME(kvm_regs, r15),
  SAME(kvm_regs, rip), SAME(kvm_regs, rflags),

  SIZE(kvm_debugregs),
  SAME(kvm_debugregs, db), SAME(kvm_debugregs, dr6), SAME(kvm_debugregs, dr7), SAME(kvm_debugregs, flags),
};

#define NENTRIES (sizeof(entries) / sizeof(entries[0]))

napi_value make_layouts(napi_env env) {
  napi_value layouts, layout = NULL, value;
  CHECK(napi_create_object(env, &layouts));
  for (size_t i = 0; i < NENTRIES; i++) {
    /* Each struct's entries are consecutive and start with its size. */
    if (i == 0 || strcmp(entries[i].layout, entries[i - 1].layout) != 0) {
      if (layout) CHECK(napi_object_freeze(env, layout));
      CHECK(napi_create_object(env, &layout));
      CHECK(napi_set_named_property(env, layouts, entries[i].layout, layout));
    }
    CHECK(napi_create_int64(env, entries[i].value, &value));
    CHECK(napi_set_named_property(env, layout, entries[i].field, value));
  }
  if (layout) CHECK(napi_object_freeze(env, layout));
  CHECK(napi_object_freeze(env, layouts));
  return layouts;
}
