/*
 * The native VCPU threads (vcpu/) as a JavaScript object: `createVcpuSet`
 * returns a handle whose methods are the set's controls, one call each, and
 * the threads' logs and ends come back to the creating thread's event loop
 * through a thread-safe function as `onEvent(index, kind, message)`.
 *
 * Lifetimes. The set is freed by the vcpu/ code once its owner (this handle)
 * and its threads have all let go (vcpu/set.c). The handle's state
 * (`js_vcpu_set_t`) is shared by three holders, freed by the last: the JS
 * handle, the thread-safe function (until its finalizer), and the set (until
 * it is freed), since events may still be queued, and threads may still end,
 * after the handle is closed. VCPU threads reach the thread-safe function only
 * under `lock` and while `tsfn_usable`: node deletes it when the environment
 * goes away, and a thread that outlived the environment must not touch it.
 */
#include "vcpus.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addon.h"
#include "vcpu/vcpu.h"

/* Log lines wait at most this many deep for the main thread; more are dropped (a flood from a hostile plugin). */
#define EVENT_QUEUE_MAX 1024
/* At environment teardown (a worker ending, node exiting), how long to wait for the threads. */
#define TEARDOWN_WAIT_MS 1000

typedef struct {
  napi_env env;
  napi_threadsafe_function tsfn;
  pthread_mutex_t lock; /* guards tsfn_usable */
  bool tsfn_usable;
  struct vcpu_set *set; /* main thread only; NULL once closed */
  uint32_t refs;        /* atomic: the JS handle, the thread-safe function, the set */
} js_vcpu_set_t;

typedef struct {
  uint32_t index;
  const char *kind; /* a string literal */
  char message[VCPU_MESSAGE_MAX];
} event_t;

static void state_unref(js_vcpu_set_t *s) {
  if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    pthread_mutex_destroy(&s->lock);
    free(s);
  }
}

static void disable_tsfn(js_vcpu_set_t *s) {
  pthread_mutex_lock(&s->lock);
  s->tsfn_usable = false;
  pthread_mutex_unlock(&s->lock);
}

/* Queues an event; napi_queue_full when the queue is full, napi_ok when queued or dropped for good. */
static napi_status post(js_vcpu_set_t *s, uint32_t index, const char *kind, const char *message) {
  event_t *e = malloc(sizeof *e);
  if (!e) return napi_ok;
  e->index = index;
  e->kind = kind;
  snprintf(e->message, sizeof e->message, "%s", message);
  napi_status status = napi_closing;
  pthread_mutex_lock(&s->lock);
  if (s->tsfn_usable) status = napi_call_threadsafe_function(s->tsfn, e, napi_tsfn_nonblocking);
  pthread_mutex_unlock(&s->lock);
  if (status != napi_ok) free(e);
  return status == napi_queue_full ? napi_queue_full : napi_ok;
}

static void on_vcpu_log(void *context, uint32_t index, enum vcpu_log_level level, const char *message) {
  static const char *const kinds[] = {[VCPU_LOG_INFO] = "info", [VCPU_LOG_WARN] = "warn", [VCPU_LOG_ERROR] = "error"};
  post(context, index, kinds[level], message); /* dropped when the queue is full */
}

static void on_vcpu_exit(void *context, uint32_t index, bool failed, const char *reason) {
  /* A thread's end is never dropped: wait for room (never while holding the lock the main thread may need). */
  struct timespec pause = {.tv_sec = 0, .tv_nsec = 200000};
  while (post(context, index, failed ? "failed" : "ended", reason) == napi_queue_full) nanosleep(&pause, NULL);
}

/* From the set's last reference, on any thread. */
static void on_set_freed(void *context) {
  js_vcpu_set_t *s = context;
  pthread_mutex_lock(&s->lock);
  if (s->tsfn_usable) napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  pthread_mutex_unlock(&s->lock);
  state_unref(s);
}

/* On the main thread: onEvent(index, kind, message), unless the handle was closed. */
static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  js_vcpu_set_t *s = context;
  event_t *e = data;
  if (env && callback && s->set) {
    napi_value global, argv[3], ignored;
    if (napi_get_global(env, &global) == napi_ok && napi_create_uint32(env, e->index, &argv[0]) == napi_ok &&
        napi_create_string_utf8(env, e->kind, NAPI_AUTO_LENGTH, &argv[1]) == napi_ok &&
        napi_create_string_utf8(env, e->message, NAPI_AUTO_LENGTH, &argv[2]) == napi_ok) {
      if (napi_call_function(env, global, callback, 3, argv, &ignored) == napi_pending_exception) {
        napi_value error;
        if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
      }
    }
  }
  free(e);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  disable_tsfn(data);
  state_unref(data);
}

static void env_teardown(void *data);

static void close_set(js_vcpu_set_t *s, bool remove_hook) {
  if (!s->set) return;
  struct vcpu_set *set = s->set;
  s->set = NULL;
  if (remove_hook) napi_remove_env_cleanup_hook(s->env, env_teardown, s);
  vcpu_set_close(set);
}

/*
 * The environment is going away with the set open: end the threads
 * (bounded), let go, and keep any thread that still runs away from the
 * thread-safe function node is about to delete.
 */
static void env_teardown(void *data) {
  js_vcpu_set_t *s = data;
  if (s->set) {
    vcpu_set_shutdown(s->set);
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
    for (int waited = 0; vcpu_set_reap(s->set) > 0 && waited < TEARDOWN_WAIT_MS; waited++) {
      vcpu_set_kick_all(s->set);
      nanosleep(&pause, NULL);
    }
    close_set(s, false);
  }
  disable_tsfn(s);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  js_vcpu_set_t *s = data;
  if (s->set) {
    vcpu_set_shutdown(s->set); /* collected while open: nobody is left to ask */
    close_set(s, true);
  }
  state_unref(s);
}

/* The handle's state, or NULL with an Error thrown if it was closed. */
static js_vcpu_set_t *open_state(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  void *data = NULL;
  if (!get_args(env, info, n, argv, &data)) return NULL;
  js_vcpu_set_t *s = data;
  if (!s->set) {
    napi_throw_error(env, NULL, "the VcpuSet is closed");
    return NULL;
  }
  return s;
}

/* An array of exactly `count` fds (malloc'ed), or NULL with an exception pending. */
static int *get_fd_array(napi_env env, napi_value value, const char *name, uint32_t count) {
  bool is_array = false;
  uint32_t length = 0;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array) return type_error(env, name, "an array of fds"), NULL;
  if (napi_get_array_length(env, value, &length) != napi_ok) return napi_failed(env, "napi_get_array_length"), NULL;
  if (count != UINT32_MAX && length != count) return range_error(env, name, "one fd per VCPU"), NULL;
  if (length == 0 || length > 1024) return range_error(env, name, "1 to 1024 fds"), NULL;
  int *fds = calloc(length, sizeof *fds);
  if (!fds) return throw_errno(env, ENOMEM, "calloc", NULL), NULL;
  for (uint32_t i = 0; i < length; i++) {
    napi_value element;
    if (napi_get_element(env, value, i, &element) != napi_ok || !get_int(env, element, name, &fds[i])) {
      free(fds);
      return NULL;
    }
  }
  return fds;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  js_vcpu_set_t *s = open_state(env, info, 2, argv);
  size_t run_size;
  if (!s || !get_size(env, argv[1], "mmapSize", &run_size)) return NULL;
  int *fds = get_fd_array(env, argv[0], "vcpuFds", s->set->count);
  if (!fds) return NULL;
  const char *failed_call = "vcpu_set_start";
  int err = vcpu_set_start(s->set, fds, run_size, &failed_call);
  free(fds);
  if (err) return throw_errno_prefixed(env, err, failed_call, "cannot start the VCPU threads");
  return make_undefined(env);
}

static napi_value js_publish_config(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  js_vcpu_set_t *s = open_state(env, info, 1, argv);
  if (!s) return NULL;
  napi_typedarray_type type;
  size_t count;
  void *words;
  bool is_typedarray = false;
  if (napi_is_typedarray(env, argv[0], &is_typedarray) != napi_ok || !is_typedarray ||
      napi_get_typedarray_info(env, argv[0], &type, &count, &words, NULL, NULL) != napi_ok ||
      type != napi_biguint64_array)
    return type_error(env, "image", "a BigUint64Array"), NULL;
  int err = vcpu_config_publish(&s->set->config, words, count);
  if (err) return throw_errno_prefixed(env, err, "vcpu_config_publish", "the VCPU configuration image was refused");
  return make_undefined(env);
}

static napi_value js_pause(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  js_vcpu_set_t *s = open_state(env, info, 2, argv);
  double index;
  uint64_t user;
  if (!s || !get_integer(env, argv[0], "index", 0, (double)s->set->count - 1, &index) ||
      !get_word(env, argv[1], "user", &user))
    return NULL;
  vcpu_set_pause(s->set, (uint32_t)index, user);
  return make_undefined(env);
}

static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  js_vcpu_set_t *s = open_state(env, info, 0, NULL);
  if (!s) return NULL;
  vcpu_set_shutdown(s->set);
  return make_undefined(env);
}

static napi_value js_kick_all(napi_env env, napi_callback_info info) {
  js_vcpu_set_t *s = open_state(env, info, 0, NULL);
  if (!s) return NULL;
  vcpu_set_kick_all(s->set);
  return make_undefined(env);
}

static napi_value js_reap(napi_env env, napi_callback_info info) {
  js_vcpu_set_t *s = open_state(env, info, 0, NULL);
  if (!s) return NULL;
  return make_int(env, vcpu_set_reap(s->set));
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  void *data = NULL;
  if (!get_args(env, info, 0, NULL, &data)) return NULL;
  close_set(data, true);
  return make_undefined(env);
}

napi_value js_create_vcpu_set(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  double spin_us;
  if (!get_args(env, info, 4, argv, NULL) || !get_integer(env, argv[2], "spinUs", 0, 60e6, &spin_us)) return NULL;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[3], &type));
  if (type != napi_function) return type_error(env, "onEvent", "a function"), NULL;
  int *request_fds = get_fd_array(env, argv[0], "requestFds", UINT32_MAX);
  if (!request_fds) return NULL;
  uint32_t count;
  CHECK(napi_get_array_length(env, argv[0], &count));
  int *response_fds = get_fd_array(env, argv[1], "responseFds", count);
  if (!response_fds) {
    free(request_fds);
    return NULL;
  }

  napi_value result = NULL;
  js_vcpu_set_t *s = calloc(1, sizeof *s);
  if (!s) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    goto done;
  }
  s->env = env;
  s->refs = 3;
  pthread_mutex_init(&s->lock, NULL);
  napi_value name;
  if (napi_create_string_utf8(env, "plugvisor:VcpuSet", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, argv[3], NULL, name, EVENT_QUEUE_MAX, 1, s, tsfn_finalize, s, call_js,
                                      &s->tsfn) != napi_ok) {
    pthread_mutex_destroy(&s->lock);
    free(s);
    napi_failed(env, "napi_create_threadsafe_function");
    goto done;
  }
  s->tsfn_usable = true;
  /* Events alone do not keep node running: the host's own work (the plugin, its sockets) does. */
  napi_unref_threadsafe_function(env, s->tsfn);
  int err;
  struct vcpu_events events = {.log = on_vcpu_log, .exit = on_vcpu_exit, .destroy = on_set_freed, .context = s};
  s->set = vcpu_set_new(count, request_fds, response_fds, (long)spin_us, events, &err);
  if (!s->set) {
    state_unref(s); /* the handle's reference; the set's went with on_set_freed, the tsfn's goes with its finalizer */
    throw_errno(env, err, "vcpu_set_new", NULL);
    goto done;
  }
  napi_add_env_cleanup_hook(env, env_teardown, s);
  napi_value object;
  napi_property_descriptor props[] = {
    {"start", NULL, js_start, NULL, NULL, NULL, napi_enumerable, s},
    {"publishConfig", NULL, js_publish_config, NULL, NULL, NULL, napi_enumerable, s},
    {"pause", NULL, js_pause, NULL, NULL, NULL, napi_enumerable, s},
    {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_enumerable, s},
    {"kickAll", NULL, js_kick_all, NULL, NULL, NULL, napi_enumerable, s},
    {"reap", NULL, js_reap, NULL, NULL, NULL, napi_enumerable, s},
    {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, s},
  };
  if (napi_create_object(env, &object) != napi_ok ||
      napi_define_properties(env, object, sizeof props / sizeof props[0], props) != napi_ok ||
      napi_add_finalizer(env, object, s, handle_finalize, NULL, NULL) != napi_ok) {
    close_set(s, true);
    state_unref(s);
    napi_failed(env, "creating a VcpuSet");
    goto done;
  }
  result = object;
done:
  free(request_fds);
  free(response_fds);
  return result;
}
