/*
 * One JSON line of results from a bench guest (no libc): numbers given in
 * thousandths are printed with three decimals, e.g.
 *   struct json j = {0};
 *   json_number(&j, "kernelMs", ns / 1000);
 *   json_hex(&j, "checksum", sum);
 *   json_end(&j);   ->   {"kernelMs":123.456,"checksum":"00000000deadbeef"}
 */
#ifndef PLUGVISOR_BENCH_GUEST_JSON_H
#define PLUGVISOR_BENCH_GUEST_JSON_H

#include "plugvisor.h"

struct json {
  char text[256];
  size_t n;
};

static inline void json_text(struct json *j, const char *s) {
  while (*s && j->n < sizeof j->text - 3) j->text[j->n++] = *s++;
}

static inline void json_key(struct json *j, const char *key) {
  json_text(j, j->n == 0 ? "{\"" : ",\"");
  json_text(j, key);
  json_text(j, "\":");
}

static inline void json_number(struct json *j, const char *key, uint64_t thousandths) {
  char digits[32];
  int at = (int)sizeof digits - 1;
  digits[at] = 0;
  for (int i = 0; i < 3; i++, thousandths /= 10) digits[--at] = (char)('0' + thousandths % 10);
  digits[--at] = '.';
  do digits[--at] = (char)('0' + thousandths % 10), thousandths /= 10; while (thousandths);
  json_key(j, key);
  json_text(j, digits + at);
}

static inline void json_hex(struct json *j, const char *key, uint64_t value) {
  char hex[19] = {'"'};
  for (int i = 0; i < 16; i++) hex[1 + i] = "0123456789abcdef"[(value >> (60 - 4 * i)) & 15];
  hex[17] = '"';
  json_key(j, key);
  json_text(j, hex);
}

static inline void json_end(struct json *j) {
  j->text[j->n++] = '}';
  j->text[j->n++] = '\n';
  pv_write(1, j->text, j->n);
}

#endif
