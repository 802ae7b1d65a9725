/*
 * What the two C ends of the VCPU protocol share about its protobuf-c
 * messages (src/protocol/plugin.proto): the host's VCPU side
 * (native/vcpu/conn.c, and its tests in native/test/) and the C client
 * library (clients/c/src/crosvm.c), each built against the plugin.pb-c.h it
 * generates. Header-only, no policy: oneof cases, how a message carrying one
 * member is written, packing, repeated message fields, the arena each side
 * decodes its exit-path messages into, and the one mapping between a wire
 * CPUID entry and KVM's.
 */
#ifndef PLUGVISOR_PROTOCOL_MESSAGES_H_
#define PLUGVISOR_PROTOCOL_MESSAGES_H_

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/kvm.h>

#include "plugin.pb-c.h"

/* Oneof cases and enumerations of the VCPU connection. */
#define VREQ(name) PLUGVISOR__PLUGIN__VCPU_REQUEST__MESSAGE_##name
#define VRESP(name) PLUGVISOR__PLUGIN__VCPU_RESPONSE__MESSAGE_##name
#define VEXIT(name) PLUGVISOR__PLUGIN__VCPU_RESPONSE__WAIT__EXIT_##name
#define VSET(name) PLUGVISOR__PLUGIN__VCPU_REQUEST__STATE_SET__##name

/*
 * A message of `type`, protobuf-c's struct for descriptor `desc`, with the
 * fields given as designated initializers and every other field 0, which is
 * its default: plugin.proto is proto3, and has no string fields (whose
 * default protobuf-c spells otherwise). A compound literal: it lives until
 * the end of the enclosing block.
 */
#define MESSAGE(type, desc, ...) ((type){.base = PROTOBUF_C_MESSAGE_INIT(&(desc)), __VA_ARGS__})

/*
 * A request carrying `member` in its oneof: VCPU_REQUEST(GET_STATE,
 * get_state, &get) points at the VcpuRequest whose case is VREQ(GET_STATE)
 * and whose get_state is &get. protobuf-c names a member's case and its
 * field apart, so only a macro can pair them; assigning the field keeps the
 * compiler's type check.
 */
#define VCPU_REQUEST(name, field, member)                                                 \
  (&MESSAGE(Plugvisor__Plugin__VcpuRequest, plugvisor__plugin__vcpu_request__descriptor, \
            .message_case = VREQ(name), .field = (member)))
/* The response with errno `err` (0: success) carrying `member`, likewise. */
#define VCPU_RESPONSE(err, name, field, member)                                             \
  (&MESSAGE(Plugvisor__Plugin__VcpuResponse, plugvisor__plugin__vcpu_response__descriptor, \
            .errno_value = (err), .message_case = VRESP(name), .field = (member)))

/* Packs a message into a new buffer (free() it); NULL when out of memory. */
static inline uint8_t *pack_message(const ProtobufCMessage *msg, size_t *len) {
  size_t size = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) return NULL;
  *len = protobuf_c_message_pack(msg, buf);
  return buf;
}

/*
 * The entries of a repeated message field, each initialized as a `desc`
 * message, after the array of pointers to them that protobuf-c takes
 * (array[i] points at entry i): one block, which free() releases. NULL when
 * out of memory; never for count 0. The pointers are stored as void *, as
 * protobuf-c's own unpacking stores them; the entries follow pointer-aligned,
 * which is all a message struct needs.
 */
static inline void *new_repeated(const ProtobufCMessageDescriptor *desc, size_t count) {
  size_t n = count ? count : 1;
  void **array = calloc(n, sizeof(void *) + desc->sizeof_message);
  if (!array) return NULL;
  uint8_t *entries = (uint8_t *)(array + n);
  for (size_t i = 0; i < count; i++) {
    array[i] = entries + i * desc->sizeof_message;
    protobuf_c_message_init(desc, array[i]);
  }
  return array;
}

/*
 * Where one side decodes the messages of an exit (the host a `resume`, the
 * library a `wait`): protobuf-c's allocator as a bump allocator over a block
 * of its own, malloc past its end. One message at a time is decoded into it
 * and freed (message_arena_free) before the next one. A message that fitted
 * whole is freed by emptying the block, without protobuf-c's walk over its
 * fields and a free() per part: together with the mallocs that walk was
 * ~40% of decoding a `wait` (bench/README.md, the steady state's profile).
 *
 * Under AddressSanitizer every part is malloc'ed, so that it checks each one.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MESSAGE_ARENA_OFF 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MESSAGE_ARENA_OFF 1
#endif
#ifndef MESSAGE_ARENA_OFF
#define MESSAGE_ARENA_OFF 0
#endif

struct message_arena {
  uint8_t *block;
  size_t size, used;
  size_t spilled; /* parts of the current message that were malloc'ed */
  ProtobufCAllocator allocator;
};

static inline void *message_arena_alloc(void *data, size_t size) {
  struct message_arena *a = data;
  size_t rounded = (size + 15) & ~(size_t)15;
  if (!MESSAGE_ARENA_OFF && rounded >= size && rounded <= a->size - a->used) {
    void *p = a->block + a->used;
    a->used += rounded;
    return p;
  }
  a->spilled++;
  return malloc(size);
}

static inline void message_arena_release(void *data, void *p) {
  struct message_arena *a = data;
  if ((uint8_t *)p >= a->block && (uint8_t *)p < a->block + a->size) return; /* emptied with the message */
  free(p);
}

/* A block of `size` bytes; the arena must stay where it is (its allocator points at it). 0 or ENOMEM. */
static inline int message_arena_init(struct message_arena *a, size_t size) {
  a->block = malloc(size);
  a->size = a->block ? size : 0;
  a->used = a->spilled = 0;
  a->allocator = (ProtobufCAllocator){.alloc = message_arena_alloc, .free = message_arena_release, .allocator_data = a};
  return a->block ? 0 : ENOMEM;
}

static inline void message_arena_destroy(struct message_arena *a) {
  free(a->block);
  a->block = NULL;
  a->size = a->used = 0;
}

/*
 * Frees `message`, decoded with a->allocator, and empties the arena. NULL
 * after a failed decode, which freed its own parts: only empties it.
 */
static inline void message_arena_free(struct message_arena *a, ProtobufCMessage *message) {
  if (message && a->spilled > 0) protobuf_c_message_free_unpacked(message, &a->allocator);
  a->used = a->spilled = 0;
}

/* A wire CPUID entry as KVM's: has_index is KVM's significant-index flag. */
static inline void cpuid_entry_to_kvm(const Plugvisor__Plugin__CpuidEntry *e,
                                      struct kvm_cpuid_entry2 *out) {
  memset(out, 0, sizeof(*out));
  if (!e) return;
  out->function = e->function;
  out->index = e->index;
  out->flags = e->has_index ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  out->eax = e->eax;
  out->ebx = e->ebx;
  out->ecx = e->ecx;
  out->edx = e->edx;
}

/* KVM's CPUID entry as a wire entry (initialized here). */
static inline void cpuid_entry_from_kvm(const struct kvm_cpuid_entry2 *e,
                                        Plugvisor__Plugin__CpuidEntry *out) {
  plugvisor__plugin__cpuid_entry__init(out);
  out->function = e->function;
  out->has_index = (e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0;
  out->index = e->index;
  out->eax = e->eax;
  out->ebx = e->ebx;
  out->ecx = e->ecx;
  out->edx = e->edx;
}

#endif /* PLUGVISOR_PROTOCOL_MESSAGES_H_ */
