/*
 * The VCPUs' dispatch configuration behind a seqlock (see config.h).
 *
 * Readers never write shared memory, so VCPU threads looking up addresses on
 * every exit do not bounce a cache line between cores. Every word of an image
 * is read and written with relaxed atomics: a reader may overlap a publish,
 * and C calls that a data race unless both sides are atomic. Counts read from
 * a half-written image are bounded by the buffer's capacity before use, so an
 * overlapping read can see nonsense but never leaves the buffer; the sequence
 * check then throws it away.
 *
 * A buffer that is too small for a new image is replaced, not freed: a reader
 * may still be inside it. Capacities double, so the retired ones together
 * never hold more than the current one.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

struct vcpu_config_buffer {
  struct vcpu_config_buffer *next_retired;
  size_t capacity; /* words */
  uint64_t words[];
};

static uint64_t load(const uint64_t *word) { return __atomic_load_n(word, __ATOMIC_RELAXED); }

static struct vcpu_config_buffer *buffer_new(size_t capacity) {
  struct vcpu_config_buffer *b = calloc(1, sizeof *b + capacity * sizeof(uint64_t));
  if (b) b->capacity = capacity;
  return b;
}

int vcpu_config_init(struct vcpu_config *config) {
  config->seq = 0;
  config->retired = NULL;
  config->current = buffer_new(VCPU_CONFIG_HEADER_WORDS); /* all zero: nothing reserved, no hint */
  return config->current ? 0 : ENOMEM;
}

void vcpu_config_destroy(struct vcpu_config *config) {
  free(config->current);
  config->current = NULL;
  while (config->retired) {
    struct vcpu_config_buffer *next = config->retired->next_retired;
    free(config->retired);
    config->retired = next;
  }
}

/* The number of words an image with these counts has; 0 if that overflows `limit`. */
static size_t image_words(uint64_t nio, uint64_t nmmio, uint64_t nreg, size_t limit) {
  if (nio > limit || nmmio > limit || nreg > limit) return 0;
  uint64_t total = VCPU_CONFIG_HEADER_WORDS + VCPU_CONFIG_RANGE_WORDS * (nio + nmmio) + VCPU_CONFIG_REG_HINT_WORDS * nreg;
  return total <= limit ? (size_t)total : 0;
}

/* Sorted, non-overlapping, first <= last. */
static bool ranges_valid(const uint64_t *range, uint64_t n) {
  const uint64_t *previous = NULL;
  for (uint64_t i = 0; i < n; i++, previous = range, range += VCPU_CONFIG_RANGE_WORDS) {
    if (range[0] > range[1]) return false;
    if (previous && range[0] <= previous[1]) return false;
  }
  return true;
}

int vcpu_config_publish(struct vcpu_config *config, const uint64_t *words, size_t count) {
  if (count < VCPU_CONFIG_HEADER_WORDS) return EINVAL;
  uint64_t nio = words[0], nmmio = words[1], nreg = words[6];
  if (image_words(nio, nmmio, nreg, count) != count) return EINVAL;
  const uint64_t *ranges = words + VCPU_CONFIG_HEADER_WORDS;
  if (!ranges_valid(ranges, nio) || !ranges_valid(ranges + VCPU_CONFIG_RANGE_WORDS * nio, nmmio)) return EINVAL;

  struct vcpu_config_buffer *target = config->current;
  bool replace = count > target->capacity;
  if (replace) {
    size_t capacity = 2 * target->capacity;
    if (capacity < count) capacity = count;
    target = buffer_new(capacity);
    if (!target) return ENOMEM;
  }

  /* The seqlock's write side: odd, (release) the words, even (release). */
  uint32_t seq = config->seq;
  __atomic_store_n(&config->seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  for (size_t i = 0; i < count; i++) __atomic_store_n(&target->words[i], words[i], __ATOMIC_RELAXED);
  if (replace) {
    struct vcpu_config_buffer *old = config->current;
    __atomic_store_n(&config->current, target, __ATOMIC_RELEASE);
    old->next_retired = config->retired;
    config->retired = old;
  }
  __atomic_store_n(&config->seq, seq + 2, __ATOMIC_RELEASE);
  return 0;
}

/*
 * The seqlock's read side: a reader starts with read_begin, reads the image
 * it was given with `load`, and reads again while read_retry says a publish
 * overlapped it.
 */
static uint32_t read_begin(struct vcpu_config *config, const struct vcpu_config_buffer **b) {
  for (;;) {
    uint32_t seq = __atomic_load_n(&config->seq, __ATOMIC_ACQUIRE);
    if ((seq & 1) == 0) {
      *b = __atomic_load_n(&config->current, __ATOMIC_ACQUIRE);
      return seq;
    }
    __builtin_ia32_pause();
  }
}

static bool read_retry(struct vcpu_config *config, uint32_t seq) {
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&config->seq, __ATOMIC_RELAXED) != seq;
}

/* The ranges of `space` in `b`, or 0 ranges when the counts read are inconsistent. */
static uint64_t ranges_of(const struct vcpu_config_buffer *b, int space, const uint64_t **first) {
  uint64_t nio = load(&b->words[0]), nmmio = load(&b->words[1]), nreg = load(&b->words[6]);
  if (image_words(nio, nmmio, nreg, b->capacity) == 0) return 0;
  *first = b->words + VCPU_CONFIG_HEADER_WORDS + (space == VCPU_SPACE_MMIO ? VCPU_CONFIG_RANGE_WORDS * nio : 0);
  return space == VCPU_SPACE_MMIO ? nmmio : nio;
}

enum vcpu_dispatch vcpu_config_lookup(struct vcpu_config *config, int space, uint64_t address) {
  enum vcpu_dispatch result;
  const struct vcpu_config_buffer *b;
  uint32_t seq;
  do {
    seq = read_begin(config, &b);
    result = VCPU_NOT_RESERVED;
    const uint64_t *ranges = NULL;
    uint64_t low = 0, high = ranges_of(b, space, &ranges);
    while (low < high) { /* binary search over [low, high) */
      uint64_t mid = low + (high - low) / 2;
      const uint64_t *r = ranges + VCPU_CONFIG_RANGE_WORDS * mid;
      if (address < load(&r[0])) {
        high = mid;
      } else if (address > load(&r[1])) {
        low = mid + 1;
      } else {
        result = load(&r[2]) ? VCPU_RESERVED_ASYNC : VCPU_RESERVED;
        break;
      }
    }
  } while (read_retry(config, seq));
  return result;
}

bool vcpu_config_hint_matches(struct vcpu_config *config, int space, uint64_t address, bool is_write) {
  bool result;
  const struct vcpu_config_buffer *b;
  uint32_t seq;
  do {
    seq = read_begin(config, &b);
    result = load(&b->words[2]) != 0 && load(&b->words[3]) == (uint64_t)space && load(&b->words[4]) == address &&
             (load(&b->words[5]) != 0) == is_write;
  } while (read_retry(config, seq));
  return result;
}

uint64_t vcpu_config_hint_sends(struct vcpu_config *config, uint64_t rax, uint64_t rbx, uint64_t rcx, uint64_t rdx) {
  uint64_t result;
  const struct vcpu_config_buffer *b;
  uint32_t seq;
  do {
    seq = read_begin(config, &b);
    result = 0;
    uint64_t nio = load(&b->words[0]), nmmio = load(&b->words[1]), nreg = load(&b->words[6]);
    if (image_words(nio, nmmio, nreg, b->capacity) == 0) continue;
    const uint64_t *hint = b->words + VCPU_CONFIG_HEADER_WORDS + VCPU_CONFIG_RANGE_WORDS * (nio + nmmio);
    for (uint64_t i = 0; i < nreg; i++, hint += VCPU_CONFIG_REG_HINT_WORDS) {
      uint64_t match = load(&hint[0]);
      if ((match & VCPU_HINT_MATCH_RAX) && load(&hint[1]) != rax) continue;
      if ((match & VCPU_HINT_MATCH_RBX) && load(&hint[2]) != rbx) continue;
      if ((match & VCPU_HINT_MATCH_RCX) && load(&hint[3]) != rcx) continue;
      if ((match & VCPU_HINT_MATCH_RDX) && load(&hint[4]) != rdx) continue;
      result = load(&hint[5]);
      break;
    }
  } while (read_retry(config, seq));
  return result;
}
