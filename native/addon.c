/* The addon's JavaScript helpers (see addon.h). */
#include "addon.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

const char *errno_name(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name) return name;
#else
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENOTTY: return "ENOTTY";
    case ENOSPC: return "ENOSPC";
    case EPIPE: return "EPIPE";
    case E2BIG: return "E2BIG";
    case ENOSYS: return "ENOSYS";
    case ENXIO: return "ENXIO";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ECONNRESET: return "ECONNRESET";
    case ENOTCONN: return "ENOTCONN";
  }
#endif
  return "EUNKNOWN";
}

/* What the addon keeps per JavaScript environment (thread): the ErrnoError class. */
typedef struct {
  napi_ref errno_error_class;
} env_data_t;

static void env_data_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  env_data_t *d = data;
  if (d->errno_error_class) napi_delete_reference(env, d->errno_error_class);
  free(d);
}

bool set_errno_error_class(napi_env env, napi_value constructor) {
  env_data_t *d = NULL;
  CHECK_BOOL(napi_get_instance_data(env, (void **)&d));
  if (!d) {
    d = calloc(1, sizeof *d);
    if (!d) {
      throw_errno(env, ENOMEM, "calloc", NULL);
      return false;
    }
    if (napi_set_instance_data(env, d, env_data_finalize, NULL) != napi_ok) {
      free(d);
      napi_failed(env, "napi_set_instance_data");
      return false;
    }
  }
  napi_ref ref;
  CHECK_BOOL(napi_create_reference(env, constructor, 1, &ref));
  if (d->errno_error_class) napi_delete_reference(env, d->errno_error_class);
  d->errno_error_class = ref;
  return true;
}

/* new ErrnoError(err, message, { syscall }) when the class is set; false (nothing pending) if it is not. */
static bool throw_errno_error(napi_env env, int err, const char *syscall_name, const char *message) {
  env_data_t *d = NULL;
  napi_value constructor, args[3], syscall_value, error;
  if (napi_get_instance_data(env, (void **)&d) != napi_ok || !d || !d->errno_error_class ||
      napi_get_reference_value(env, d->errno_error_class, &constructor) != napi_ok || !constructor ||
      napi_create_int32(env, err, &args[0]) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &args[1]) != napi_ok ||
      napi_create_object(env, &args[2]) != napi_ok ||
      napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_set_named_property(env, args[2], "syscall", syscall_value) != napi_ok)
    return false;
  napi_status status = napi_new_instance(env, constructor, 3, args, &error);
  if (status == napi_pending_exception) return true; /* the constructor threw: that is what is thrown */
  if (status != napi_ok) return false;
  napi_throw(env, error);
  return true;
}

/* Throws ErrnoError("<prefix>: <strerror>") with errno, code and syscall. */
napi_value throw_errno_prefixed(napi_env env, int err, const char *syscall_name, const char *prefix) {
  char reason[128];
  char message[320];
  const char *text = strerror_r(err, reason, sizeof reason); /* GNU strerror_r */
  snprintf(message, sizeof message, "%s: %s", prefix, text);
  if (throw_errno_error(env, err, syscall_name, message)) return NULL;

  /* Before src/native/index.ts has set the class: an Error of the same shape. */
  napi_value code, msg, error, errno_value, syscall_value;
  if (napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_error(env, code, msg, &error) != napi_ok ||
      napi_create_int32(env, err, &errno_value) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok) {
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

/* Throws Error("<syscall>[ <what>]: <strerror>"); see throw_errno_prefixed. */
napi_value throw_errno(napi_env env, int err, const char *syscall_name, const char *what) {
  char prefix[256];
  if (what && *what)
    snprintf(prefix, sizeof prefix, "%s %s", syscall_name, what);
  else
    snprintf(prefix, sizeof prefix, "%s", syscall_name);
  return throw_errno_prefixed(env, err, syscall_name, prefix);
}

/* Turns a failed napi_* call into a JS exception (unless one is pending). */
napi_value napi_failed(napi_env env, const char *call) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return NULL;
  const napi_extended_error_info *info = NULL;
  char message[256];
  napi_get_last_error_info(env, &info);
  snprintf(message, sizeof message, "%s failed: %s", call,
           info && info->error_message ? info->error_message : "unknown N-API error");
  napi_throw_error(env, NULL, message);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Arguments and results                                                     */
/* ------------------------------------------------------------------------ */

/* Fetches up to n arguments; missing ones are `undefined`. */
bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, void **data) {
  size_t argc = n;
  CHECK_BOOL(napi_get_cb_info(env, info, &argc, argv, NULL, data));
  if (argc < n) {
    napi_value undefined;
    CHECK_BOOL(napi_get_undefined(env, &undefined));
    for (size_t i = argc; i < n; i++) argv[i] = undefined;
  }
  return true;
}

bool type_error(napi_env env, const char *name, const char *expected) {
  char message[160];
  snprintf(message, sizeof message, "%s must be %s", name, expected);
  napi_throw_type_error(env, NULL, message);
  return false;
}

bool range_error(napi_env env, const char *name, const char *expected) {
  char message[160];
  snprintf(message, sizeof message, "%s must be %s", name, expected);
  napi_throw_range_error(env, NULL, message);
  return false;
}

/* An integral JS number in [min, max]. */
bool get_integer(napi_env env, napi_value value, const char *name, double min, double max, double *out) {
  napi_valuetype type;
  CHECK_BOOL(napi_typeof(env, value, &type));
  if (type != napi_number) return type_error(env, name, "an integer");
  double d;
  CHECK_BOOL(napi_get_value_double(env, value, &d));
  if (!isfinite(d) || d != trunc(d)) return type_error(env, name, "an integer");
  if (d < min || d > max) {
    char expected[96];
    snprintf(expected, sizeof expected, "an integer in [%.0f, %.0f]", min, max);
    return range_error(env, name, expected);
  }
  *out = d;
  return true;
}

bool get_int(napi_env env, napi_value value, const char *name, int *out) {
  double d;
  if (!get_integer(env, value, name, (double)INT32_MIN, (double)INT32_MAX, &d)) return false;
  *out = (int)d;
  return true;
}

bool get_size(napi_env env, napi_value value, const char *name, size_t *out) {
  double d;
  if (!get_integer(env, value, name, 0, MAX_SAFE_INTEGER, &d)) return false;
  *out = (size_t)d;
  return true;
}

/*
 * A 64-bit word from an integral number or a BigInt (addresses, ioctl
 * arguments). Negative values are taken as two's complement.
 */
bool get_word(napi_env env, napi_value value, const char *name, uint64_t *out) {
  napi_valuetype type;
  CHECK_BOOL(napi_typeof(env, value, &type));
  if (type == napi_bigint) {
    bool lossless = false;
    uint64_t u;
    CHECK_BOOL(napi_get_value_bigint_uint64(env, value, &u, &lossless));
    if (lossless) {
      *out = u;
      return true;
    }
    int64_t s;
    CHECK_BOOL(napi_get_value_bigint_int64(env, value, &s, &lossless));
    if (!lossless) return range_error(env, name, "a 64-bit integer");
    *out = (uint64_t)s;
    return true;
  }
  if (type != napi_number) return type_error(env, name, "an integer or a BigInt");
  double d;
  if (!get_integer(env, value, name, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, &d)) return false;
  *out = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
  return true;
}

/* The bytes of a TypedArray (normally a Uint8Array) or DataView. */
bool get_bytes(napi_env env, napi_value value, const char *name, uint8_t **data, size_t *length) {
  bool is_typedarray = false, is_dataview = false;
  CHECK_BOOL(napi_is_typedarray(env, value, &is_typedarray));
  if (is_typedarray) {
    napi_typedarray_type type;
    size_t count;
    void *ptr;
    CHECK_BOOL(napi_get_typedarray_info(env, value, &type, &count, &ptr, NULL, NULL));
    size_t element = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: element = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: element = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: element = 8; break;
      default: element = 1; break;
    }
    *data = ptr;
    *length = count * element;
    return true;
  }
  CHECK_BOOL(napi_is_dataview(env, value, &is_dataview));
  if (is_dataview) {
    void *ptr;
    CHECK_BOOL(napi_get_dataview_info(env, value, length, &ptr, NULL, NULL));
    *data = ptr;
    return true;
  }
  return type_error(env, name, "a Uint8Array");
}

/* buf plus [offset, offset + length) inside it. */
bool get_byte_range(napi_env env, napi_value *argv, uint8_t **data, size_t *length) {
  uint8_t *base;
  size_t size, offset, count;
  if (!get_bytes(env, argv[0], "buf", &base, &size)) return false;
  if (!get_size(env, argv[1], "offset", &offset)) return false;
  if (!get_size(env, argv[2], "length", &count)) return false;
  if (offset > size || count > size - offset) {
    napi_throw_range_error(env, NULL, "offset + length exceeds the buffer");
    return false;
  }
  *data = base + offset;
  *length = count;
  return true;
}

/* A malloc'ed UTF-8 copy of a JS string; free() it. */
char *get_string(napi_env env, napi_value value, const char *name) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return napi_failed(env, "napi_typeof"), NULL;
  if (type != napi_string) return type_error(env, name, "a string"), NULL;
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok)
    return napi_failed(env, "napi_get_value_string_utf8"), NULL;
  char *s = malloc(length + 1);
  if (!s) return throw_errno(env, ENOMEM, "malloc", NULL), NULL;
  if (napi_get_value_string_utf8(env, value, s, length + 1, &length) != napi_ok) {
    free(s);
    return napi_failed(env, "napi_get_value_string_utf8"), NULL;
  }
  if (strlen(s) != length) {
    free(s);
    return type_error(env, name, "a string without NUL characters"), NULL;
  }
  return s;
}

napi_value make_int(napi_env env, int64_t value) {
  napi_value result;
  CHECK(napi_create_int64(env, value, &result));
  return result;
}

napi_value make_undefined(napi_env env) {
  napi_value result;
  CHECK(napi_get_undefined(env, &result));
  return result;
}

napi_value make_pointer(napi_env env, const void *ptr) {
  napi_value result;
  CHECK(napi_create_bigint_uint64(env, (uint64_t)(uintptr_t)ptr, &result));
  return result;
}

napi_value make_fd(napi_env env, int fd) {
  napi_value result = make_int(env, fd);
  if (!result) close(fd);
  return result;
}

/* [a, b]; on failure closes both fds. */
napi_value make_fd_pair(napi_env env, const int fds[2]) {
  napi_value array, a, b;
  if (napi_create_array_with_length(env, 2, &array) != napi_ok ||
      napi_create_int32(env, fds[0], &a) != napi_ok || napi_create_int32(env, fds[1], &b) != napi_ok ||
      napi_set_element(env, array, 0, a) != napi_ok || napi_set_element(env, array, 1, b) != napi_ok) {
    close(fds[0]);
    close(fds[1]);
    return napi_failed(env, "creating an fd pair");
  }
  return array;
}
