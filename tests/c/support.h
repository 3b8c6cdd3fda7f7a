/* Test support for the C API tests: gates, counting probes, configurable sync and
 * async clients, a client factory, producer sinks and a log capture. Every wait is
 * bounded by WAIT_MS and fails the test instead of hanging. */
#ifndef CONVEYOR_TEST_SUPPORT_H
#define CONVEYOR_TEST_SUPPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conveyor.h"

/* Upper bound for anything a test waits on; reaching it fails the test. */
#define WAIT_MS 20000

typedef atomic_uint_fast64_t counter;

static inline uint64_t get(counter *c) { return (uint64_t)atomic_load(c); }
static inline void add(counter *c, uint64_t n) { atomic_fetch_add(c, n); }

static inline struct timespec deadline_in(long ms) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec += 1;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

/* ---------------------------------------------------------------- gates */

/* A door clients wait at until the test opens it; the test can wait until a number of
 * clients have arrived. */
typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
  int entered;
} gate;

static inline void gate_init(gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->open = 0;
  g->entered = 0;
}

static inline void gate_destroy(gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

static inline void gate_open(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Called by a client: waits until the gate opens. Returns 0 if it never did. */
static inline int gate_pass(gate *g) {
  struct timespec until = deadline_in(WAIT_MS);
  int ok = 1;
  pthread_mutex_lock(&g->mu);
  g->entered++;
  pthread_cond_broadcast(&g->cv);
  while (!g->open) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) != 0) {
      ok = g->open;
      break;
    }
  }
  pthread_mutex_unlock(&g->mu);
  return ok;
}

/* Called by the test: waits until `n` clients reached the gate. Returns 0 on timeout. */
static inline int gate_wait_entered(gate *g, int n) {
  struct timespec until = deadline_in(WAIT_MS);
  int ok = 1;
  pthread_mutex_lock(&g->mu);
  while (g->entered < n) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) != 0) {
      ok = g->entered >= n;
      break;
    }
  }
  pthread_mutex_unlock(&g->mu);
  return ok;
}

/* ---------------------------------------------------------------- probes */

/* What the clients of one test saw. Owned by the test (on its stack). */
typedef struct probe {
  counter events, batches, calls, connects, connect_calls, closes, frees, bytes;
  counter order_errors, next_seq, callback_errors, builds, seq_sum;
} probe;

static inline void probe_init(probe *p) {
  memset(p, 0, sizeof *p);
}

/* Payloads of ordered tests are 8-byte sequence numbers. */
static inline uint64_t seq_of(const conveyor_bytes *b) {
  uint64_t v = 0;
  if (b->len == sizeof v) {
    memcpy(&v, b->data, sizeof v);
  }
  return v;
}

static inline conveyor_result publish_seq(conveyor_producer *p, uint64_t seq) {
  return conveyor_producer_publish(p, (const uint8_t *)&seq, sizeof seq, UINT64_MAX);
}

/* ---------------------------------------------------------------- sync client */

/* A synchronous client whose misbehaviour each test scripts. Heap-allocated; its
 * free_userdata counts in the probe and frees it. */
typedef struct client {
  probe *probe;
  int fail_connects;         /* connect fails this many times first */
  int broken_calls;          /* publish reports BROKEN (nothing published) this many times */
  uint32_t bad_status;       /* publish returns this out-of-range status... */
  int bad_status_calls;      /* ...this many times */
  int bad_count;             /* the first publish claims n + 5 events */
  size_t max_per_call;       /* publish at most this many, then RETRY (0: all) */
  gate *gate;                /* publish waits here first */
  int check_order;           /* payloads must be consecutive sequence numbers */
  conveyor_pipeline *reenter; /* publish checks what a client callback may call */
  conveyor_producer *reenter_producer;
} client;

static inline client *client_new(probe *p) {
  client *c = (client *)calloc(1, sizeof *c);
  c->probe = p;
  return c;
}

static inline uint32_t client_connect(void *userdata, uint64_t timeout_ms) {
  client *c = (client *)userdata;
  add(&c->probe->connect_calls, 1);
  if (timeout_ms == 0) {
    add(&c->probe->callback_errors, 1);
  }
  if (c->fail_connects > 0) {
    c->fail_connects--;
    return 1;
  }
  add(&c->probe->connects, 1);
  return 0;
}

static inline void client_close(void *userdata) {
  add(&((client *)userdata)->probe->closes, 1);
}

static inline void client_free(void *userdata) {
  client *c = (client *)userdata;
  add(&c->probe->frees, 1);
  free(c);
}

static inline void client_reenter(client *c) {
  uint64_t seq = 1u << 30;
  /* Waiting calls would wait for this very callback: they must refuse. */
  if (conveyor_pipeline_flush(c->reenter, UINT64_MAX) != CONVEYOR_ERR_INVALID_ARGUMENT ||
      conveyor_pipeline_close(c->reenter, UINT64_MAX) != CONVEYOR_ERR_INVALID_ARGUMENT ||
      conveyor_pipeline_remove_client(c->reenter, 1) != CONVEYOR_ERR_INVALID_ARGUMENT) {
    add(&c->probe->callback_errors, 1);
  }
  /* Publishing without waiting is fine. */
  if (c->reenter_producer != NULL) {
    conveyor_result r =
        conveyor_producer_try_publish(c->reenter_producer, (const uint8_t *)&seq, sizeof seq);
    if (r != CONVEYOR_OK && r != CONVEYOR_ERR_FULL) {
      add(&c->probe->callback_errors, 1);
    }
    c->reenter_producer = NULL;
  }
}

static inline uint32_t client_publish(void *userdata, const conveyor_bytes *events, size_t n,
                               size_t *published) {
  client *c = (client *)userdata;
  size_t i, take = n;
  add(&c->probe->calls, 1);
  if (*published != 0 || n == 0 || events == NULL) {
    add(&c->probe->callback_errors, 1);
  }
  if (c->gate != NULL && !gate_pass(c->gate)) {
    add(&c->probe->callback_errors, 1);
    return CONVEYOR_PUBLISH_BROKEN;
  }
  if (c->reenter != NULL) {
    client_reenter(c);
  }
  if (c->broken_calls > 0) {
    c->broken_calls--;
    return CONVEYOR_PUBLISH_BROKEN;
  }
  if (c->bad_status_calls > 0) {
    c->bad_status_calls--;
    *published = n;
    return c->bad_status;
  }
  if (c->bad_count) {
    c->bad_count = 0;
    *published = n + 5;
    return CONVEYOR_PUBLISH_OK;
  }
  if (c->max_per_call != 0 && n > c->max_per_call) {
    take = c->max_per_call;
  }
  for (i = 0; i < take; i++) {
    add(&c->probe->bytes, events[i].len);
    if (c->check_order) {
      uint64_t seq = seq_of(&events[i]);
      if (seq != get(&c->probe->next_seq)) {
        add(&c->probe->order_errors, 1);
      }
      atomic_store(&c->probe->next_seq, seq + 1);
    }
  }
  add(&c->probe->events, take);
  add(&c->probe->batches, 1);
  *published = take;
  return take < n ? CONVEYOR_PUBLISH_RETRY : CONVEYOR_PUBLISH_OK;
}

static inline conveyor_client_vtable vtable_for(client *c) {
  conveyor_client_vtable vt;
  memset(&vt, 0, sizeof vt);
  vt.struct_size = (uint32_t)sizeof vt;
  vt.userdata = c;
  vt.connect = client_connect;
  vt.close = client_close;
  vt.publish = client_publish;
  vt.free_userdata = client_free;
  return vt;
}

static inline conveyor_result config_add(conveyor_config *cfg, client *c) {
  conveyor_client_vtable vt = vtable_for(c);
  return conveyor_config_add_client(cfg, &vt);
}

/* ---------------------------------------------------------------- async client */

#define ASYNC_SLOTS 64

typedef struct pending_batch {
  conveyor_completion *completion;
  const conveyor_bytes *events;
  size_t n;
} pending_batch;

/* An asynchronous client completed by a thread of its own. Every `retry_every`-th
 * batch reports half published and RETRY. */
typedef struct async_client {
  probe *probe;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pending_batch slots[ASYNC_SLOTS];
  size_t head, len;
  int stop;
  int retry_every;
  uint64_t completions;
} async_client;

static inline void *async_completer(void *arg) {
  async_client *a = (async_client *)arg;
  for (;;) {
    pending_batch b;
    size_t i, published;
    uint32_t status = CONVEYOR_PUBLISH_OK;
    pthread_mutex_lock(&a->mu);
    while (a->len == 0 && !a->stop) {
      pthread_cond_wait(&a->cv, &a->mu);
    }
    if (a->len == 0) {
      pthread_mutex_unlock(&a->mu);
      return NULL;
    }
    b = a->slots[a->head];
    a->head = (a->head + 1) % ASYNC_SLOTS;
    a->len--;
    a->completions++;
    published = b.n;
    if (a->retry_every > 0 && a->completions % (uint64_t)a->retry_every == 0 && b.n > 1) {
      published = b.n / 2;
      status = CONVEYOR_PUBLISH_RETRY;
    }
    pthread_mutex_unlock(&a->mu);
    /* Read the views on this thread: they must still be valid. */
    for (i = 0; i < published; i++) {
      add(&a->probe->bytes, b.events[i].len);
      add(&a->probe->seq_sum, seq_of(&b.events[i]));
    }
    add(&a->probe->events, published);
    add(&a->probe->batches, 1);
    conveyor_completion_done(b.completion, published, status);
  }
}

static inline uint32_t async_publish(void *userdata, const conveyor_bytes *events, size_t n,
                              conveyor_completion *completion) {
  async_client *a = (async_client *)userdata;
  uint32_t taken = 0;
  add(&a->probe->calls, 1);
  pthread_mutex_lock(&a->mu);
  if (a->len == ASYNC_SLOTS) {
    taken = 1;
  } else {
    pending_batch b;
    b.completion = completion;
    b.events = events;
    b.n = n;
    a->slots[(a->head + a->len) % ASYNC_SLOTS] = b;
    a->len++;
    pthread_cond_signal(&a->cv);
  }
  pthread_mutex_unlock(&a->mu);
  return taken;
}

static inline void async_free(void *userdata) {
  async_client *a = (async_client *)userdata;
  pthread_mutex_lock(&a->mu);
  a->stop = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->thread, NULL);
  pthread_cond_destroy(&a->cv);
  pthread_mutex_destroy(&a->mu);
  add(&a->probe->frees, 1);
  free(a);
}

static inline async_client *async_client_new(probe *p, int retry_every) {
  async_client *a = (async_client *)calloc(1, sizeof *a);
  a->probe = p;
  a->retry_every = retry_every;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  pthread_create(&a->thread, NULL, async_completer, a);
  return a;
}

static inline conveyor_client_vtable async_vtable_for(async_client *a) {
  conveyor_client_vtable vt;
  memset(&vt, 0, sizeof vt);
  vt.struct_size = (uint32_t)sizeof vt;
  vt.userdata = a;
  vt.publish_async = async_publish;
  vt.free_userdata = async_free;
  return vt;
}

/* ---------------------------------------------------------------- producer sinks */

/* What one producer heard. Owned by the test; free_userdata only counts (and wakes
 * sink_wait_freed: it may run on the dispatcher thread just after a flush returns). */
typedef struct sink {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  counter acks, ack_calls, drops, drop_calls, frees, seq_sum, late_callbacks;
  /* re-entrant calls from on_ack */
  conveyor_pipeline *pipeline;
  conveyor_producer *producer;
  conveyor_producer *free_on_ack; /* freed by the first on_ack */
  counter published, target, reentry_errors;
} sink;

static inline void sink_init(sink *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
}

/* Waits until the producer's free_userdata ran; returns 0 if it did not in time. */
static inline int sink_wait_freed(sink *s) {
  struct timespec until = deadline_in(WAIT_MS);
  int ok = 1;
  pthread_mutex_lock(&s->mu);
  while (get(&s->frees) == 0) {
    if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0) {
      ok = get(&s->frees) != 0;
      break;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return ok;
}

static inline void sink_on_ack(void *userdata, uint64_t count) {
  sink *s = (sink *)userdata;
  if (get(&s->frees) != 0) {
    add(&s->late_callbacks, 1);
  }
  add(&s->acks, count);
  add(&s->ack_calls, 1);
  if (s->free_on_ack != NULL) {
    conveyor_producer_free(s->free_on_ack);
    s->free_on_ack = NULL;
  }
  if (s->producer != NULL) {
    /* Re-entrant: publish more from the callback, until the target. */
    while (get(&s->published) < get(&s->target)) {
      uint64_t seq = get(&s->published);
      if (publish_seq(s->producer, seq) != CONVEYOR_OK) {
        add(&s->reentry_errors, 1);
        break;
      }
      add(&s->published, 1);
      if (seq % 7 == 0) {
        break; /* leave some for later rounds */
      }
    }
  }
  if (s->pipeline != NULL) {
    if (conveyor_pipeline_flush(s->pipeline, UINT64_MAX) != CONVEYOR_ERR_INVALID_ARGUMENT ||
        conveyor_pipeline_close(s->pipeline, UINT64_MAX) != CONVEYOR_ERR_INVALID_ARGUMENT) {
      add(&s->reentry_errors, 1);
    }
    conveyor_pipeline_free(s->pipeline); /* refused inside a callback */
  }
}

static inline void sink_on_drop(void *userdata, const conveyor_bytes *events, size_t n) {
  sink *s = (sink *)userdata;
  size_t i;
  if (get(&s->frees) != 0) {
    add(&s->late_callbacks, 1);
  }
  for (i = 0; i < n; i++) {
    add(&s->seq_sum, seq_of(&events[i]));
  }
  add(&s->drops, n);
  add(&s->drop_calls, 1);
}

static inline void sink_free(void *userdata) {
  sink *s = (sink *)userdata;
  pthread_mutex_lock(&s->mu);
  add(&s->frees, 1);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static inline conveyor_producer_config sink_config(sink *s, uint32_t guaranteed, uint32_t drop_on_cancel) {
  conveyor_producer_config pc;
  memset(&pc, 0, sizeof pc);
  pc.struct_size = (uint32_t)sizeof pc;
  pc.userdata = s;
  pc.on_ack = sink_on_ack;
  pc.on_drop = sink_on_drop;
  pc.guaranteed = guaranteed;
  pc.drop_on_cancel = drop_on_cancel;
  pc.free_userdata = sink_free;
  return pc;
}

/* ---------------------------------------------------------------- logs */

typedef struct log_capture {
  pthread_mutex_t mu;
  counter errors, warnings, infos, malformed, needle_hits;
  const char *needle; /* messages containing it are counted in needle_hits */
  int started;
} log_capture;

static inline void log_init(log_capture *l) {
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
}

static inline void log_destroy(log_capture *l) {
  pthread_mutex_destroy(&l->mu);
}

static inline void capture_log(void *userdata, uint32_t level, const char *message, size_t len) {
  log_capture *l = (log_capture *)userdata;
  if (message == NULL || message[len] != '\0' || strlen(message) != len) {
    add(&l->malformed, 1);
    return;
  }
  if (l->needle != NULL && strstr(message, l->needle) != NULL) {
    add(&l->needle_hits, 1);
  }
  pthread_mutex_lock(&l->mu);
  switch (level) {
  case CONVEYOR_LOG_ERROR:
    add(&l->errors, 1);
    break;
  case CONVEYOR_LOG_WARN:
    add(&l->warnings, 1);
    break;
  case CONVEYOR_LOG_INFO:
    add(&l->infos, 1);
    if (strstr(message, "pipeline started") != NULL) {
      l->started = 1;
    }
    break;
  case CONVEYOR_LOG_DEBUG:
    break;
  default:
    add(&l->malformed, 1);
  }
  pthread_mutex_unlock(&l->mu);
}

/* ---------------------------------------------------------------- config */

/* Defaults tuned for tests: fast backoff, small batches forming at once. */
static inline conveyor_config *fast_config(void) {
  conveyor_config *cfg = conveyor_config_new();
  conveyor_config_set(cfg, "backoff.init", "1ms");
  conveyor_config_set(cfg, "backoff.max", "5ms");
  conveyor_config_set(cfg, "timeout", "5s");
  conveyor_config_set(cfg, "queue.flush.min_events", "0");
  return cfg;
}

/* The stats snapshot (NUL-terminated, caller frees), or NULL. */
static inline char *stats_of(conveyor_pipeline *p) {
  size_t needed = 0;
  char *buf;
  if (conveyor_pipeline_stats_json(p, NULL, 0, &needed) != CONVEYOR_ERR_BUFFER_TOO_SMALL) {
    return NULL;
  }
  needed += 4096; /* counters may grow between the two calls */
  buf = (char *)malloc(needed);
  if (conveyor_pipeline_stats_json(p, buf, needed, &needed) != CONVEYOR_OK) {
    free(buf);
    return NULL;
  }
  return buf;
}

#endif /* CONVEYOR_TEST_SUPPORT_H */
