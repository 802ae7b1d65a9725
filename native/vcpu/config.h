/*
 * What every VCPU thread needs to dispatch an IO or MMIO exit: the reserved
 * ranges of both address spaces and the one call hint.
 *
 * The TypeScript host decides what they are (src/host/ranges.ts and
 * process.ts) and publishes a whole new image after every change
 * (src/host/vcpu-config.ts encodes it). VCPU threads read the newest image at
 * each exit without taking a lock: the image sits behind a seqlock, and a
 * reader that overlapped a publish reads again. A change is therefore seen at
 * the next exit of every VCPU, as the protocol requires.
 *
 * The image is an array of 64-bit words (the layout below is the one contract
 * between the two sides):
 *
 *   [0] number of IOPORT ranges (nio)     [1] number of MMIO ranges (nmmio)
 *   [2] 1 when a call hint is set, else 0 [3] hint address space (0 IOPORT, 1 MMIO)
 *   [4] hint address                      [5] 1 when the hint is on writes
 *   [6] number of register hints (nreg)
 *   then nio ranges, then nmmio ranges, 3 words each, sorted by first address
 *   and never overlapping:    first address, last address (inclusive), 1 for async_write
 *   then nreg register hints, 6 words each, in the plugin's order:
 *     match bits (1 rax, 2 rbx, 4 rcx, 8 rdx), rax, rbx, rcx, rdx,
 *     send bits (1 sregs, 2 debugregs)
 */
#ifndef PLUGVISOR_VCPU_CONFIG_H_
#define PLUGVISOR_VCPU_CONFIG_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VCPU_CONFIG_HEADER_WORDS 7
#define VCPU_CONFIG_RANGE_WORDS 3
#define VCPU_CONFIG_REG_HINT_WORDS 6

enum { VCPU_SPACE_IOPORT = 0, VCPU_SPACE_MMIO = 1 };
enum { VCPU_HINT_MATCH_RAX = 1, VCPU_HINT_MATCH_RBX = 2, VCPU_HINT_MATCH_RCX = 4, VCPU_HINT_MATCH_RDX = 8 };
enum { VCPU_HINT_SEND_SREGS = 1, VCPU_HINT_SEND_DEBUGREGS = 2 };

struct vcpu_config_buffer;

struct vcpu_config {
  uint32_t seq;                       /* odd while a publish is in progress */
  struct vcpu_config_buffer *current; /* the image readers look at */
  struct vcpu_config_buffer *retired; /* earlier, smaller buffers: freed with the config */
};

/* How an access to a reserved range is handled. */
enum vcpu_dispatch { VCPU_NOT_RESERVED, VCPU_RESERVED, VCPU_RESERVED_ASYNC };

/* An empty configuration (nothing reserved, no hint). 0 or an errno. */
int vcpu_config_init(struct vcpu_config *config);
void vcpu_config_destroy(struct vcpu_config *config);

/*
 * Replaces the image (one writer at a time: the host's main thread). Checks
 * that `words` is a well-formed image; EINVAL otherwise, ENOMEM if it cannot
 * grow. Readers see either the whole old image or the whole new one.
 */
int vcpu_config_publish(struct vcpu_config *config, const uint64_t *words, size_t count);

/* The reservation of `address` in `space`. */
enum vcpu_dispatch vcpu_config_lookup(struct vcpu_config *config, int space, uint64_t address);

/* Whether the call hint is set for this access: then the VCPU's regs go with it. */
bool vcpu_config_hint_matches(struct vcpu_config *config, int space, uint64_t address, bool is_write);

/*
 * The send bits of the first register hint whose match bits all agree with
 * these register values (0 when none does).
 */
uint64_t vcpu_config_hint_sends(struct vcpu_config *config, uint64_t rax, uint64_t rbx, uint64_t rcx, uint64_t rdx);

#endif
