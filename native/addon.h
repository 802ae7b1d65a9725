/*
 * What every part of the addon uses to talk to JavaScript: errno turned into
 * ErrnoErrors, argument checks with clear TypeErrors and RangeErrors, and small
 * result builders. No system calls here.
 */
#ifndef PLUGVISOR_ADDON_H_
#define PLUGVISOR_ADDON_H_

#include <node_api.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_SAFE_INTEGER 9007199254740991.0 /* 2^53 - 1 */

/* "ENOENT" for ENOENT. */
const char *errno_name(int err);
/* The class errors are made of in this environment: ErrnoError (src/errno.ts). False with an exception pending. */
bool set_errno_error_class(napi_env env, napi_value constructor);
/*
 * Throws new ErrnoError(err, "<prefix>: <strerror>", { syscall }) (a plain
 * Error with errno, code and syscall before the class is set); returns NULL.
 */
napi_value throw_errno_prefixed(napi_env env, int err, const char *syscall_name, const char *prefix);
/* Throws ErrnoError("<syscall>[ <what>]: <strerror>"); see throw_errno_prefixed. */
napi_value throw_errno(napi_env env, int err, const char *syscall_name, const char *what);
/* Turns a failed napi_* call into a JS exception (unless one is pending); returns NULL. */
napi_value napi_failed(napi_env env, const char *call);

#define CHECK(call)                                             \
  do {                                                          \
    if ((call) != napi_ok) return napi_failed(env, #call);      \
  } while (0)

/* For helpers returning bool: false means an exception is pending. */
#define CHECK_BOOL(call)                                        \
  do {                                                          \
    if ((call) != napi_ok) {                                    \
      napi_failed(env, #call);                                  \
      return false;                                             \
    }                                                           \
  } while (0)


/* Fetches up to n arguments (missing ones are `undefined`) and the callback's data. */
bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, void **data);
/* Throw "<name> must be <expected>"; return false. */
bool type_error(napi_env env, const char *name, const char *expected);
bool range_error(napi_env env, const char *name, const char *expected);
/* An integral JS number in [min, max]. */
bool get_integer(napi_env env, napi_value value, const char *name, double min, double max, double *out);
bool get_int(napi_env env, napi_value value, const char *name, int *out);
bool get_size(napi_env env, napi_value value, const char *name, size_t *out);
/* A 64-bit word from an integral number or a BigInt; negative values as two's complement. */
bool get_word(napi_env env, napi_value value, const char *name, uint64_t *out);
/* The bytes of a TypedArray (normally a Uint8Array) or DataView. */
bool get_bytes(napi_env env, napi_value value, const char *name, uint8_t **data, size_t *length);
/* argv[0] (bytes) plus [offset, offset + length) from argv[1], argv[2]. */
bool get_byte_range(napi_env env, napi_value *argv, uint8_t **data, size_t *length);
/* A malloc'ed UTF-8 copy of a JS string without NULs; free() it. NULL with an exception pending. */
char *get_string(napi_env env, napi_value value, const char *name);

napi_value make_int(napi_env env, int64_t value);
napi_value make_undefined(napi_env env);
napi_value make_pointer(napi_env env, const void *ptr);
/* A new descriptor as a number; on failure closes it. */
napi_value make_fd(napi_env env, int fd);
/* [a, b]; on failure closes both fds. */
napi_value make_fd_pair(napi_env env, const int fds[2]);

#endif
