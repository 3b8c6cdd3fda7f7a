/* Sinks from C: the go-events cases of research/goevents-aresdb.md §4 (1-22, with the
 * "Fixed" behaviour) that make sense from C, pipelines as sinks, sinks as clients, and
 * the ownership rules (free_userdata exactly once, after the last callback). */
#define _POSIX_C_SOURCE 200809L

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "support.h"

/* ---------------------------------------------------------------- helpers */

static void sleep_ms(long ms) {
  struct timespec t;
  t.tv_sec = ms / 1000;
  t.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&t, NULL);
}

static long elapsed_ms(const struct timespec *since) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000L;
}

/* Polls until *c reaches `want`; returns 0 after WAIT_MS. */
static int wait_counter(counter *c, uint64_t want) {
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (get(c) < want) {
    if (elapsed_ms(&start) > WAIT_MS) {
      return 0;
    }
    sleep_ms(1);
  }
  return 1;
}

/* An event naming its writer and its index: 8 bytes. */
typedef struct tagged {
  uint32_t writer, index;
} tagged;

static conveyor_result write_tagged(conveyor_sink *s, uint32_t writer, uint32_t index) {
  tagged t;
  t.writer = writer;
  t.index = index;
  return conveyor_sink_write(s, (const uint8_t *)&t, sizeof t);
}

static conveyor_result write_str(conveyor_sink *s, const char *text) {
  return conveyor_sink_write(s, (const uint8_t *)text, strlen(text));
}

/* The sink's stats JSON (caller frees), or NULL. */
static char *sink_stats(conveyor_sink *s) {
  size_t needed = 0;
  char *buf;
  if (conveyor_sink_stats_json(s, NULL, 0, &needed) != CONVEYOR_ERR_BUFFER_TOO_SMALL) {
    return NULL;
  }
  needed += 256;
  buf = (char *)malloc(needed);
  if (conveyor_sink_stats_json(s, buf, needed, &needed) != CONVEYOR_OK) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* The first (outermost) value of `key` in the sink's stats, or UINT64_MAX. */
static uint64_t sink_stat(conveyor_sink *s, const char *key) {
  char pattern[64];
  char *json = sink_stats(s);
  const char *at;
  uint64_t value = UINT64_MAX;
  if (json == NULL) {
    return value;
  }
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  at = strstr(json, pattern);
  if (at != NULL) {
    value = strtoull(at + strlen(pattern), NULL, 10);
  }
  free(json);
  return value;
}

static int last_error_contains(const char *needle) {
  char detail[512];
  conveyor_last_error(detail, sizeof detail);
  return strstr(detail, needle) != NULL;
}

/* Matchers: evens (counting its calls in the counter passed as userdata), and all. */
static uint32_t match_even(void *userdata, const uint8_t *data, size_t len) {
  counter *calls = (counter *)userdata;
  add(calls, 1);
  return len > 0 && data[0] % 2 == 0;
}

static uint32_t match_all(void *userdata, const uint8_t *data, size_t len) {
  (void)userdata;
  (void)data;
  (void)len;
  return 1;
}

/* ---------------------------------------------------------------- a recording C sink */

/* A sink written in C that keeps a copy of every event it took; it can fail, block at a
 * gate, be flaky or report closed, as each test scripts. Heap-allocated; its
 * free_userdata counts (the test frees it after checking that it ran exactly once). */
typedef struct rec {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint8_t **data;
  size_t *lens;
  size_t n, cap;
  counter writes, closes, frees, late;
  uint64_t fail_first;  /* this many writes fail first (status 7) */
  long closed_after;    /* >= 0: once this many were taken, writes report CLOSED */
  gate *gate;           /* writes wait here first */
  int flaky;            /* the first 50 attempts fail, then 9 in 10 (a fixed sequence) */
  uint64_t rng;
} rec;

static rec *rec_new(void) {
  rec *r = (rec *)calloc(1, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->closed_after = -1;
  r->rng = 42;
  return r;
}

static int rec_flaky_fails(rec *r) {
  uint64_t attempt = get(&r->writes);
  r->rng = r->rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return attempt <= 50 || (r->rng >> 33) % 10 != 0;
}

static uint32_t rec_write(void *userdata, const uint8_t *data, size_t len) {
  rec *r = (rec *)userdata;
  uint32_t code = 0;
  if (get(&r->frees) != 0) {
    add(&r->late, 1);
  }
  if (data == NULL) {
    add(&r->late, 1); /* never NULL, also for empty events */
  }
  if (r->gate != NULL && !gate_pass(r->gate)) {
    return 99;
  }
  pthread_mutex_lock(&r->mu);
  add(&r->writes, 1);
  if (r->fail_first > 0) {
    r->fail_first--;
    code = 7;
  } else if (r->flaky && rec_flaky_fails(r)) {
    code = 7;
  } else if (r->closed_after >= 0 && r->n >= (size_t)r->closed_after) {
    code = CONVEYOR_ERR_CLOSED;
  } else {
    if (r->n == r->cap) {
      r->cap = r->cap == 0 ? 64 : r->cap * 2;
      r->data = (uint8_t **)realloc(r->data, r->cap * sizeof *r->data);
      r->lens = (size_t *)realloc(r->lens, r->cap * sizeof *r->lens);
    }
    r->data[r->n] = (uint8_t *)malloc(len + 1);
    memcpy(r->data[r->n], data, len);
    r->lens[r->n] = len;
    r->n++;
    pthread_cond_broadcast(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
  return code;
}

static void rec_close(void *userdata) {
  add(&((rec *)userdata)->closes, 1);
}

static void rec_free_userdata(void *userdata) {
  rec *r = (rec *)userdata;
  pthread_mutex_lock(&r->mu);
  add(&r->frees, 1);
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static conveyor_sink_vtable rec_vtable(rec *r) {
  conveyor_sink_vtable vt;
  memset(&vt, 0, sizeof vt);
  vt.struct_size = (uint32_t)sizeof vt;
  vt.userdata = r;
  vt.write = rec_write;
  vt.close = rec_close;
  vt.free_userdata = rec_free_userdata;
  return vt;
}

static conveyor_sink *rec_sink(rec *r) {
  conveyor_sink_vtable vt = rec_vtable(r);
  conveyor_sink *s = NULL;
  if (conveyor_sink_new(&vt, &s) != CONVEYOR_OK) {
    return NULL;
  }
  return s;
}

static size_t rec_count(rec *r) {
  size_t n;
  pthread_mutex_lock(&r->mu);
  n = r->n;
  pthread_mutex_unlock(&r->mu);
  return n;
}

static int rec_has(rec *r, size_t i, const char *text) {
  int same;
  pthread_mutex_lock(&r->mu);
  same = i < r->n && r->lens[i] == strlen(text) && memcmp(r->data[i], text, r->lens[i]) == 0;
  pthread_mutex_unlock(&r->mu);
  return same;
}

static tagged rec_tagged(rec *r, size_t i) {
  tagged t = {UINT32_MAX, UINT32_MAX};
  pthread_mutex_lock(&r->mu);
  if (i < r->n && r->lens[i] == sizeof t) {
    memcpy(&t, r->data[i], sizeof t);
  }
  pthread_mutex_unlock(&r->mu);
  return t;
}

/* Waits until free_userdata ran; returns 0 if it did not in time. */
static int rec_wait_freed(rec *r) {
  struct timespec until = deadline_in(WAIT_MS);
  int ok = 1;
  pthread_mutex_lock(&r->mu);
  while (get(&r->frees) == 0) {
    if (pthread_cond_timedwait(&r->cv, &r->mu, &until) != 0) {
      ok = get(&r->frees) != 0;
      break;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return ok;
}

/* Releases the recorder once its sink is gone (free_userdata ran exactly once). */
static int rec_destroy(rec *r) {
  size_t i;
  int ok = rec_wait_freed(r) && get(&r->frees) == 1 && get(&r->late) == 0;
  if (!ok) {
    return 0; /* leaked on purpose: a callback may still come */
  }
  for (i = 0; i < r->n; i++) {
    free(r->data[i]);
  }
  free(r->data);
  free(r->lens);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r);
  return 1;
}

/* ---------------------------------------------------------------- a drop hook */

typedef struct hook {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  counter dropped, calls, frees, late;
  char first[8][16]; /* the first dropped payloads, as strings */
} hook;

static hook *hook_new(void) {
  hook *h = (hook *)calloc(1, sizeof *h);
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  return h;
}

static void hook_on_drop(void *userdata, const conveyor_bytes *events, size_t n) {
  hook *h = (hook *)userdata;
  size_t i;
  if (get(&h->frees) != 0) {
    add(&h->late, 1);
  }
  pthread_mutex_lock(&h->mu);
  for (i = 0; i < n; i++) {
    uint64_t k = get(&h->dropped) + i;
    if (k < 8) {
      size_t len = events[i].len < 15 ? events[i].len : 15;
      memcpy(h->first[k], events[i].data, len);
      h->first[k][len] = '\0';
    }
  }
  add(&h->dropped, n);
  add(&h->calls, 1);
  pthread_mutex_unlock(&h->mu);
}

static void hook_free(void *userdata) {
  hook *h = (hook *)userdata;
  pthread_mutex_lock(&h->mu);
  add(&h->frees, 1);
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

static conveyor_queue_sink_options hook_options(hook *h, uint64_t close_timeout_ms) {
  conveyor_queue_sink_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = (uint32_t)sizeof o;
  o.close_timeout_ms = close_timeout_ms;
  o.userdata = h;
  o.on_drop = hook_on_drop;
  o.free_userdata = hook_free;
  return o;
}

/* Waits until conveyor released the hook: no drop can be reported after that. */
static int hook_wait_released(hook *h) {
  struct timespec until = deadline_in(WAIT_MS);
  int ok = 1;
  pthread_mutex_lock(&h->mu);
  while (get(&h->frees) == 0) {
    if (pthread_cond_timedwait(&h->cv, &h->mu, &until) != 0) {
      ok = get(&h->frees) != 0;
      break;
    }
  }
  pthread_mutex_unlock(&h->mu);
  return ok;
}

static int hook_destroy(hook *h) {
  if (!hook_wait_released(h) || get(&h->frees) != 1 || get(&h->late) != 0) {
    return 0;
  }
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
  return 1;
}

/* ---------------------------------------------------------------- a C retry strategy */

/* Counts its calls; gives up after `limit` failures in a row (0: never). */
typedef struct strat {
  counter proceeds, failures, successes, frees;
  uint64_t in_a_row, limit;
} strat;

static uint64_t strat_proceed(void *userdata) {
  add(&((strat *)userdata)->proceeds, 1);
  return 0;
}

static uint32_t strat_failure(void *userdata) {
  strat *s = (strat *)userdata;
  add(&s->failures, 1);
  s->in_a_row++;
  return s->limit != 0 && s->in_a_row >= s->limit ? 1u : 0u;
}

static void strat_success(void *userdata) {
  strat *s = (strat *)userdata;
  add(&s->successes, 1);
  s->in_a_row = 0;
}

static void strat_free(void *userdata) {
  add(&((strat *)userdata)->frees, 1);
}

static conveyor_retry_strategy_vtable strat_vtable(strat *s) {
  conveyor_retry_strategy_vtable vt;
  memset(&vt, 0, sizeof vt);
  vt.struct_size = (uint32_t)sizeof vt;
  vt.userdata = s;
  vt.proceed = strat_proceed;
  vt.failure = strat_failure;
  vt.success = strat_success;
  vt.free_userdata = strat_free;
  return vt;
}

/* ---------------------------------------------------------------- writer threads */

typedef struct writer {
  pthread_t thread;
  conveyor_sink *sink;
  uint32_t id, count;
  atomic_int done;
  conveyor_result result; /* the first failure, or CONVEYOR_OK */
} writer;

static void *writer_run(void *arg) {
  writer *w = (writer *)arg;
  uint32_t i;
  w->result = CONVEYOR_OK;
  for (i = 0; i < w->count; i++) {
    conveyor_result r = write_tagged(w->sink, w->id, i);
    if (r != CONVEYOR_OK) {
      w->result = r;
      break;
    }
  }
  atomic_store(&w->done, 1);
  return NULL;
}

static void writer_start(writer *w, conveyor_sink *s, uint32_t id, uint32_t count) {
  w->sink = s;
  w->id = id;
  w->count = count;
  atomic_store(&w->done, 0);
  pthread_create(&w->thread, NULL, writer_run, w);
}

/* ---------------------------------------------------------------- vtables and arguments */

static void test_sink_new_checks_its_arguments(void) {
  rec *r = rec_new();
  conveyor_sink_vtable vt = rec_vtable(r);
  conveyor_sink *s = NULL;
  CHECK_RESULT(conveyor_sink_new(NULL, &s), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_sink_new(&vt, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  vt.struct_size = 8;
  CHECK_RESULT(conveyor_sink_new(&vt, &s), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(last_error_contains("struct_size"));
  vt = rec_vtable(r);
  vt.write = NULL;
  CHECK_RESULT(conveyor_sink_new(&vt, &s), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(s == NULL && get(&r->frees) == 0); /* refused: the userdata is still ours */
  vt = rec_vtable(r);
  CHECK_OK(conveyor_sink_new(&vt, &s));
  CHECK_RESULT(conveyor_sink_write(NULL, (const uint8_t *)"x", 1), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_sink_write(s, NULL, 3), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_sink_write(s, NULL, 0));
  CHECK_RESULT(conveyor_sink_close(NULL), CONVEYOR_ERR_NULL_PARAMETER);
  conveyor_sink_free(NULL);
  conveyor_retry_strategy_free(NULL);
  CHECK(rec_count(r) == 1 && get(&r->frees) == 0);
  conveyor_sink_free(s);
  CHECK(get(&r->frees) == 1 && get(&r->closes) == 0); /* freeing does not close */
  CHECK(rec_destroy(r));
}

static void test_kind_specific_calls_refuse_other_kinds(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *ch = NULL, *q = NULL, *f = NULL;
  uint8_t buf[8];
  size_t needed = 0;
  conveyor_queue_sink_report report;
  CHECK(s != NULL);
  CHECK_OK(conveyor_channel_sink_new(4, &ch));
  CHECK_OK(conveyor_queue_sink_new(s, 4, CONVEYOR_OVERFLOW_BLOCK, &q));
  CHECK_RESULT(conveyor_filter_sink_new(s, NULL, NULL, &f), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_channel_sink_recv(q, buf, sizeof buf, &needed, 0), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(last_error_contains("the sink is a queue sink, not a channel sink"));
  CHECK_RESULT(conveyor_broadcaster_add(ch, s), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_broadcaster_remove(s, ch), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_queue_sink_close(ch, 0, &report), CONVEYOR_ERR_INVALID_ARGUMENT);
  /* Out-of-domain values. */
  CHECK_RESULT(conveyor_queue_sink_new(s, 0, CONVEYOR_OVERFLOW_BLOCK, &f), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_queue_sink_new(s, 4, 3, &f), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(last_error_contains("CONVEYOR_OVERFLOW_"));
  CHECK_RESULT(conveyor_channel_sink_new(0, &f), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_channel_sink_recv(ch, NULL, 4, &needed, 0), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_channel_sink_recv(ch, buf, sizeof buf, NULL, 0), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_broadcaster_new(NULL, 2, &f), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(f == NULL);
  conveyor_sink_free(q);
  conveyor_sink_free(ch);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* ---------------------------------------------------------------- case 1 */

static int closes_twice_and_refuses_after(conveyor_sink *s) {
  return conveyor_sink_close(s) == CONVEYOR_OK && conveyor_sink_close(s) == CONVEYOR_OK &&
         write_str(s, "late") == CONVEYOR_ERR_CLOSED;
}

static void test_every_sink_closes_twice_and_refuses_writes_after(void) {
  rec *r[5];
  conveyor_sink *s[5], *b, *q, *f, *rs, *ch, *ps;
  counter calls = 0;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  probe pr;
  int i;
  for (i = 0; i < 5; i++) {
    r[i] = rec_new();
    s[i] = rec_sink(r[i]);
    CHECK(s[i] != NULL);
  }
  CHECK_OK(conveyor_broadcaster_new(&s[0], 1, &b));
  CHECK_OK(conveyor_queue_sink_new(s[1], 8, CONVEYOR_OVERFLOW_BLOCK, &q));
  CHECK_OK(conveyor_filter_sink_new(s[2], match_even, &calls, &f));
  CHECK(closes_twice_and_refuses_after(s[4]));
  CHECK(get(&r[4]->closes) == 1 && get(&r[4]->writes) == 0);
  CHECK_OK(conveyor_retrying_sink_new(s[3], conveyor_breaker_new(3, 1), &rs));
  CHECK_OK(conveyor_channel_sink_new(4, &ch));
  probe_init(&pr);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK_OK(conveyor_pipeline_as_sink(p, &ps));
  CHECK(closes_twice_and_refuses_after(b));
  CHECK(closes_twice_and_refuses_after(q));
  CHECK(closes_twice_and_refuses_after(f));
  CHECK(get(&calls) == 0); /* a closed filter does not run its matcher */
  CHECK(closes_twice_and_refuses_after(rs));
  CHECK(closes_twice_and_refuses_after(ch));
  CHECK(closes_twice_and_refuses_after(ps));
  CHECK_RESULT(conveyor_pipeline_flush(p, 0), CONVEYOR_ERR_CLOSED); /* the sink closed it */
  /* Closing a combinator closes what it wraps, once. */
  for (i = 0; i < 4; i++) {
    CHECK(get(&r[i]->closes) == 1);
  }
  for (i = 0; i < 5; i++) {
    conveyor_sink_free(s[i]);
  }
  conveyor_sink_free(b);
  conveyor_sink_free(q);
  conveyor_sink_free(f);
  conveyor_sink_free(rs);
  conveyor_sink_free(ch);
  conveyor_sink_free(ps);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 1);
  for (i = 0; i < 5; i++) {
    CHECK(rec_destroy(r[i]));
  }
}

/* ---------------------------------------------------------------- broadcaster */

/* Case 2 */
static void test_broadcast_of_concurrent_writes_reaches_every_member_exactly_once(void) {
  enum { SINKS = 10, WRITERS = 10, EACH = 100 };
  rec *r[SINKS];
  conveyor_sink *s[SINKS], *b = NULL;
  writer w[WRITERS];
  int i, j;
  for (i = 0; i < SINKS; i++) {
    r[i] = rec_new();
    s[i] = rec_sink(r[i]);
  }
  CHECK_OK(conveyor_broadcaster_new(s, SINKS, &b));
  for (i = 0; i < SINKS; i++) {
    CHECK_OK(conveyor_broadcaster_add(b, s[i])); /* already there: no effect */
  }
  for (i = 0; i < WRITERS; i++) {
    writer_start(&w[i], b, (uint32_t)i, EACH);
  }
  for (i = 0; i < WRITERS; i++) {
    pthread_join(w[i].thread, NULL);
    CHECK_OK(w[i].result);
  }
  for (i = 0; i < SINKS; i++) {
    char seen[WRITERS * EACH];
    memset(seen, 0, sizeof seen);
    CHECK(rec_count(r[i]) == WRITERS * EACH);
    for (j = 0; j < WRITERS * EACH; j++) {
      tagged t = rec_tagged(r[i], (size_t)j);
      CHECK(t.writer < WRITERS && t.index < EACH);
      CHECK(!seen[t.writer * EACH + t.index]); /* no event twice */
      seen[t.writer * EACH + t.index] = 1;
    }
  }
  CHECK(sink_stat(b, "written") == WRITERS * EACH);
  CHECK(sink_stat(b, "forwarded") == SINKS * WRITERS * EACH);
  CHECK_OK(conveyor_sink_close(b));
  conveyor_sink_free(b);
  for (i = 0; i < SINKS; i++) {
    CHECK(get(&r[i]->closes) == 1);
    conveyor_sink_free(s[i]);
    CHECK(rec_destroy(r[i]));
  }
}

/* Cases 3 and 4 */
static void test_membership_add_twice_remove_unknown_remove_without_close(void) {
  rec *ra = rec_new(), *rc = rec_new(), *rx = rec_new();
  conveyor_sink *a = rec_sink(ra), *c = rec_sink(rc), *x = rec_sink(rx), *b = NULL;
  conveyor_sink *twice[2];
  twice[0] = a;
  twice[1] = a;
  CHECK_OK(conveyor_broadcaster_new(twice, 2, &b));
  CHECK_OK(conveyor_broadcaster_add(b, a));
  CHECK_OK(conveyor_broadcaster_add(b, c));
  CHECK_OK(conveyor_broadcaster_remove(b, x)); /* unknown: no effect */
  CHECK_OK(write_str(b, "1"));
  CHECK(rec_count(ra) == 1 && rec_count(rc) == 1); /* once per event, not per add */
  CHECK_OK(conveyor_broadcaster_remove(b, a));
  CHECK_OK(write_str(b, "2"));
  CHECK(rec_count(ra) == 1 && rec_count(rc) == 2);
  CHECK(get(&ra->closes) == 0); /* removed, not closed */
  CHECK_OK(conveyor_sink_close(b));
  CHECK(get(&ra->closes) == 0 && get(&rc->closes) == 1);
  conveyor_sink_free(b);
  conveyor_sink_free(a);
  conveyor_sink_free(c);
  conveyor_sink_free(x);
  CHECK(rec_destroy(ra) && rec_destroy(rc) && rec_destroy(rx));
}

/* Case 5 (Fixed: no skipped or doubled member) */
static void test_a_member_reporting_closed_is_removed_and_the_others_get_the_event_once(void) {
  rec *r[4];
  conveyor_sink *s[4], *b = NULL;
  int i;
  for (i = 0; i < 4; i++) {
    r[i] = rec_new();
    s[i] = rec_sink(r[i]);
  }
  r[1]->closed_after = 0;
  CHECK_OK(conveyor_broadcaster_new(s, 4, &b));
  CHECK_OK(write_str(b, "e"));
  CHECK(rec_count(r[0]) == 1 && rec_count(r[1]) == 0 && rec_count(r[2]) == 1 && rec_count(r[3]) == 1);
  CHECK_OK(write_str(b, "f"));
  CHECK(rec_count(r[0]) == 2 && rec_count(r[1]) == 0 && rec_count(r[2]) == 2 && rec_count(r[3]) == 2);
  CHECK(get(&r[1]->writes) == 1); /* removed after its CLOSED */
  CHECK(rec_has(r[3], 0, "e") && rec_has(r[3], 1, "f"));
  CHECK_OK(conveyor_sink_close(b));
  CHECK(get(&r[1]->closes) == 0); /* no longer a member */
  conveyor_sink_free(b);
  for (i = 0; i < 4; i++) {
    conveyor_sink_free(s[i]);
    CHECK(rec_destroy(r[i]));
  }
}

/* Case 6 */
static void test_broadcaster_close_closes_each_member_once(void) {
  rec *r[3], *late = rec_new();
  conveyor_sink *s[3], *b = NULL, *l = rec_sink(late);
  int i;
  for (i = 0; i < 3; i++) {
    r[i] = rec_new();
    s[i] = rec_sink(r[i]);
  }
  CHECK_OK(conveyor_broadcaster_new(s, 3, &b));
  CHECK_OK(conveyor_sink_close(b));
  CHECK_OK(conveyor_sink_close(b));
  for (i = 0; i < 3; i++) {
    CHECK(get(&r[i]->closes) == 1);
  }
  CHECK_RESULT(conveyor_broadcaster_add(b, l), CONVEYOR_ERR_CLOSED);
  CHECK_RESULT(conveyor_broadcaster_remove(b, s[0]), CONVEYOR_ERR_CLOSED);
  CHECK_RESULT(write_str(b, "x"), CONVEYOR_ERR_CLOSED);
  conveyor_sink_free(b);
  conveyor_sink_free(l);
  CHECK(rec_destroy(late));
  for (i = 0; i < 3; i++) {
    conveyor_sink_free(s[i]);
    CHECK(rec_destroy(r[i]));
  }
}

static void test_a_membership_making_a_sink_write_into_itself_is_refused(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *b = NULL, *inner = NULL, *f = NULL, *q = NULL;
  CHECK_OK(conveyor_broadcaster_new(&s, 1, &b));
  CHECK_RESULT(conveyor_broadcaster_add(b, b), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(last_error_contains("write into itself"));
  CHECK_OK(conveyor_filter_sink_new(b, match_all, NULL, &f));
  CHECK_OK(conveyor_queue_sink_new(f, 4, CONVEYOR_OVERFLOW_BLOCK, &q));
  CHECK_OK(conveyor_broadcaster_new(&q, 1, &inner));
  CHECK_RESULT(conveyor_broadcaster_add(b, inner), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_broadcaster_add(b, f), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_OK(write_str(b, "still fine"));
  CHECK(rec_count(r) == 1);
  /* Once the broadcaster is no longer a member, the link is allowed. */
  CHECK_OK(conveyor_broadcaster_remove(inner, q));
  CHECK_OK(conveyor_broadcaster_add(b, inner));
  CHECK_OK(conveyor_sink_close(b));
  CHECK_OK(conveyor_sink_close(q));
  conveyor_sink_free(inner);
  conveyor_sink_free(q);
  conveyor_sink_free(f);
  conveyor_sink_free(b);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* Case 7 (Fixed: isolation with queue sinks) */
static void test_a_stalled_member_behind_a_queue_does_not_delay_the_others(void) {
  rec *stalled = rec_new(), *fast = rec_new();
  conveyor_sink *st = rec_sink(stalled), *fa = rec_sink(fast), *q = NULL, *b = NULL;
  conveyor_sink *members[2];
  conveyor_queue_sink_report report;
  gate g;
  uint32_t i;
  gate_init(&g);
  stalled->gate = &g;
  CHECK_OK(conveyor_queue_sink_new(st, 10000, CONVEYOR_OVERFLOW_BLOCK, &q));
  members[0] = q;
  members[1] = fa;
  CHECK_OK(conveyor_broadcaster_new(members, 2, &b));
  for (i = 0; i < 1000; i++) {
    CHECK_OK(write_tagged(b, 0, i));
  }
  CHECK(rec_count(fast) == 1000); /* while the other member is stuck */
  CHECK(gate_wait_entered(&g, 1) && rec_count(stalled) == 0);
  gate_open(&g);
  CHECK_OK(conveyor_queue_sink_close(q, WAIT_MS, &report));
  CHECK(report.delivered == 1000 && report.dropped == 0 && report.drained == 1);
  CHECK(rec_count(stalled) == 1000 && get(&stalled->closes) == 1);
  for (i = 0; i < 1000; i++) {
    CHECK(rec_tagged(stalled, i).index == i);
  }
  conveyor_sink_free(b);
  conveyor_sink_free(q);
  conveyor_sink_free(st);
  conveyor_sink_free(fa);
  CHECK(rec_destroy(stalled) && rec_destroy(fast));
  gate_destroy(&g);
}

/* ---------------------------------------------------------------- channel sink */

typedef struct reader {
  pthread_t thread;
  conveyor_sink *sink;
  conveyor_result result;
} reader;

static void *reader_run(void *arg) {
  reader *rd = (reader *)arg;
  uint8_t buf[16];
  size_t needed = 0;
  rd->result = conveyor_channel_sink_recv(rd->sink, buf, sizeof buf, &needed, UINT64_MAX);
  return NULL;
}

/* Case 8 (Fixed: deterministic), and reading with a buffer too small */
static void test_channel_closed_with_room_always_refuses_and_keeps_what_it_buffered(void) {
  conveyor_sink *ch = NULL;
  uint8_t buf[8];
  size_t needed = 0;
  int i;
  CHECK_OK(conveyor_channel_sink_new(100, &ch));
  CHECK_RESULT(conveyor_channel_sink_recv(ch, buf, sizeof buf, &needed, 0), CONVEYOR_ERR_TIMEOUT);
  CHECK_OK(write_str(ch, "a"));
  CHECK_OK(write_str(ch, "longer than 8"));
  CHECK_OK(conveyor_sink_write(ch, NULL, 0));
  CHECK_OK(conveyor_sink_close(ch));
  for (i = 0; i < 100; i++) {
    CHECK_RESULT(write_str(ch, "c"), CONVEYOR_ERR_CLOSED);
  }
  CHECK(sink_stat(ch, "queued") == 3);
  CHECK_OK(conveyor_channel_sink_recv(ch, buf, sizeof buf, &needed, UINT64_MAX));
  CHECK(needed == 1 && buf[0] == 'a');
  /* Too small: the size is reported and the event stays first in line. */
  CHECK_RESULT(conveyor_channel_sink_recv(ch, NULL, 0, &needed, 0), CONVEYOR_ERR_BUFFER_TOO_SMALL);
  CHECK(needed == 13);
  CHECK_RESULT(conveyor_channel_sink_recv(ch, buf, sizeof buf, &needed, 0), CONVEYOR_ERR_BUFFER_TOO_SMALL);
  CHECK(needed == 13 && last_error_contains("needs 13 bytes"));
  {
    uint8_t big[13];
    CHECK_OK(conveyor_channel_sink_recv(ch, big, sizeof big, &needed, 0));
    CHECK(needed == 13 && memcmp(big, "longer than 8", 13) == 0);
  }
  CHECK_OK(conveyor_channel_sink_recv(ch, NULL, 0, &needed, 0)); /* the empty event */
  CHECK(needed == 0);
  CHECK_RESULT(conveyor_channel_sink_recv(ch, buf, sizeof buf, &needed, UINT64_MAX), CONVEYOR_ERR_CLOSED);
  conveyor_sink_free(ch);
}

static void test_closing_a_channel_wakes_blocked_writers_and_readers(void) {
  conveyor_sink *ch = NULL, *empty = NULL;
  writer w;
  reader rd;
  uint8_t buf[8];
  size_t needed = 0;
  CHECK_OK(conveyor_channel_sink_new(1, &ch));
  CHECK_OK(write_str(ch, "a"));
  writer_start(&w, ch, 0, 1); /* waits for room */
  CHECK_OK(conveyor_channel_sink_new(1, &empty));
  rd.sink = empty;
  pthread_create(&rd.thread, NULL, reader_run, &rd); /* waits for an event */
  CHECK_OK(conveyor_sink_close(ch));
  CHECK_OK(conveyor_sink_close(empty));
  pthread_join(w.thread, NULL);
  pthread_join(rd.thread, NULL);
  CHECK_RESULT(w.result, CONVEYOR_ERR_CLOSED);
  CHECK_RESULT(rd.result, CONVEYOR_ERR_CLOSED);
  CHECK_OK(conveyor_channel_sink_recv(ch, buf, sizeof buf, &needed, 0));
  CHECK(needed == 1 && buf[0] == 'a');
  conveyor_sink_free(ch);
  conveyor_sink_free(empty);
}

static void test_channel_reads_concurrent_writers_completely(void) {
  enum { WRITERS = 10, EACH = 10 };
  conveyor_sink *ch = NULL;
  writer w[WRITERS];
  char seen[WRITERS * EACH];
  tagged t;
  size_t needed = 0;
  int i;
  memset(seen, 0, sizeof seen);
  CHECK_OK(conveyor_channel_sink_new(1, &ch));
  for (i = 0; i < WRITERS; i++) {
    writer_start(&w[i], ch, (uint32_t)i, EACH);
  }
  for (i = 0; i < WRITERS * EACH; i++) {
    CHECK_OK(conveyor_channel_sink_recv(ch, (uint8_t *)&t, sizeof t, &needed, WAIT_MS));
    CHECK(needed == sizeof t && t.writer < WRITERS && t.index < EACH && !seen[t.writer * EACH + t.index]);
    seen[t.writer * EACH + t.index] = 1;
  }
  for (i = 0; i < WRITERS; i++) {
    pthread_join(w[i].thread, NULL);
    CHECK_OK(w[i].result);
  }
  CHECK_RESULT(conveyor_channel_sink_recv(ch, (uint8_t *)&t, sizeof t, &needed, 1), CONVEYOR_ERR_TIMEOUT);
  conveyor_sink_free(ch);
}

/* ---------------------------------------------------------------- filter */

/* Case 9 */
static void test_filter_keeps_evens(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *f = NULL;
  counter calls = 0;
  uint8_t i;
  CHECK_OK(conveyor_filter_sink_new(s, match_even, &calls, &f));
  for (i = 0; i < 100; i++) {
    CHECK_OK(conveyor_sink_write(f, &i, 1)); /* discarded writes succeed too */
  }
  CHECK(rec_count(r) == 50 && get(&calls) == 100);
  CHECK(sink_stat(f, "written") == 100 && sink_stat(f, "forwarded") == 50 && sink_stat(f, "filtered") == 50);
  conveyor_sink_free(f);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* ---------------------------------------------------------------- queue sink */

/* Case 10 */
static void test_queue_sink_keeps_fifo(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *q = NULL;
  uint32_t i;
  CHECK_OK(conveyor_queue_sink_new(s, 64, CONVEYOR_OVERFLOW_BLOCK, &q));
  for (i = 0; i < 10000; i++) {
    CHECK_OK(write_tagged(q, 0, i));
  }
  CHECK_OK(conveyor_sink_close(q));
  CHECK(rec_count(r) == 10000);
  for (i = 0; i < 10000; i++) {
    CHECK(rec_tagged(r, i).index == i);
  }
  conveyor_sink_free(q);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* Case 11 */
static void test_queue_sink_close_drains_then_closes_downstream(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *q = NULL;
  conveyor_queue_sink_report report;
  uint32_t i;
  CHECK_OK(conveyor_queue_sink_new(s, 1000, CONVEYOR_OVERFLOW_BLOCK, &q));
  conveyor_sink_free(s); /* the queue holds its own reference */
  for (i = 0; i < 500; i++) {
    CHECK_OK(write_tagged(q, 0, i));
  }
  CHECK_OK(conveyor_queue_sink_close(q, UINT64_MAX, &report));
  CHECK(report.delivered == 500 && report.dropped == 0 && report.drained == 1);
  CHECK(rec_count(r) == 500 && get(&r->closes) == 1);
  CHECK_OK(conveyor_queue_sink_close(q, 0, NULL)); /* again: nothing more to do */
  CHECK_RESULT(write_str(q, "late"), CONVEYOR_ERR_CLOSED);
  conveyor_sink_free(q);
  CHECK(rec_destroy(r));
}

/* Case 12 (Fixed: the close has a deadline and reports the drops) */
static void test_queue_sink_in_front_of_a_dead_sink_closes_within_its_deadline(void) {
  rec *dead = rec_new();
  hook *h = hook_new();
  conveyor_sink *s = rec_sink(dead), *q = NULL;
  conveyor_queue_sink_options o = hook_options(h, UINT64_MAX);
  conveyor_queue_sink_report report;
  struct timespec started;
  gate g;
  uint32_t i;
  gate_init(&g);
  dead->gate = &g;
  CHECK_OK(conveyor_queue_sink_new_with_options(s, 100, CONVEYOR_OVERFLOW_BLOCK, &o, &q));
  for (i = 0; i < 50; i++) {
    CHECK_OK(write_tagged(q, 0, i));
  }
  CHECK(gate_wait_entered(&g, 1)); /* the dead sink holds the first event */
  CHECK(sink_stat(q, "queued") == 49);
  clock_gettime(CLOCK_MONOTONIC, &started);
  CHECK_OK(conveyor_queue_sink_close(q, 50, &report));
  CHECK(elapsed_ms(&started) < 5000);
  CHECK(report.drained == 0 && report.dropped == 49 && report.delivered == 0);
  CHECK(get(&h->dropped) == 49); /* all but the one stuck in the dead sink */
  CHECK(get(&dead->closes) == 1);
  conveyor_sink_free(q);
  conveyor_sink_free(s);
  CHECK(get(&h->frees) == 0 && get(&dead->frees) == 0); /* the stuck write still runs */
  gate_open(&g);
  /* Once the stuck write returns, the queue's thread ends and releases both. */
  CHECK(hook_destroy(h));
  CHECK(rec_destroy(dead));
  gate_destroy(&g);
}

typedef struct held_queue {
  rec *r;
  hook *h;
  gate g;
  conveyor_sink *s, *q;
} held_queue;

/* A queue of capacity 2 whose destination holds event "0" while "1" and "2" wait. */
static int held_queue_start(held_queue *hq, uint32_t overflow) {
  conveyor_queue_sink_options o;
  hq->r = rec_new();
  hq->h = hook_new();
  gate_init(&hq->g);
  hq->r->gate = &hq->g;
  hq->s = rec_sink(hq->r);
  o = hook_options(hq->h, WAIT_MS);
  return conveyor_queue_sink_new_with_options(hq->s, 2, overflow, &o, &hq->q) == CONVEYOR_OK &&
         write_str(hq->q, "0") == CONVEYOR_OK && gate_wait_entered(&hq->g, 1) &&
         write_str(hq->q, "1") == CONVEYOR_OK && write_str(hq->q, "2") == CONVEYOR_OK;
}

static int held_queue_finish(held_queue *hq, uint64_t delivered, uint64_t dropped) {
  conveyor_queue_sink_report report;
  int ok;
  gate_open(&hq->g);
  ok = conveyor_queue_sink_close(hq->q, WAIT_MS, &report) == CONVEYOR_OK && report.drained == 1 &&
       report.delivered == delivered && report.dropped == dropped;
  conveyor_sink_free(hq->q);
  conveyor_sink_free(hq->s);
  ok = ok && hook_destroy(hq->h) && rec_destroy(hq->r);
  gate_destroy(&hq->g);
  return ok;
}

/* Case 13 */
static void test_bounded_queue_sink_overflow_policies(void) {
  held_queue newest, oldest, block;
  writer w;
  CHECK(held_queue_start(&newest, CONVEYOR_OVERFLOW_DROP_NEWEST));
  CHECK_RESULT(write_str(newest.q, "3"), CONVEYOR_ERR_FULL);
  CHECK(get(&newest.h->dropped) == 1 && strcmp(newest.h->first[0], "3") == 0);
  CHECK(held_queue_finish(&newest, 3, 1));

  CHECK(held_queue_start(&oldest, CONVEYOR_OVERFLOW_DROP_OLDEST));
  CHECK_OK(write_str(oldest.q, "3"));
  CHECK(get(&oldest.h->dropped) == 1 && strcmp(oldest.h->first[0], "1") == 0);
  CHECK(sink_stat(oldest.q, "dropped") == 1);
  {
    rec *r = oldest.r;
    gate_open(&oldest.g);
    CHECK(wait_counter(&r->writes, 3));
    CHECK(rec_has(r, 0, "0") && rec_has(r, 1, "2") && rec_has(r, 2, "3"));
  }
  CHECK(held_queue_finish(&oldest, 3, 1));

  CHECK(held_queue_start(&block, CONVEYOR_OVERFLOW_BLOCK));
  writer_start(&w, block.q, 9, 1);
  sleep_ms(20);
  CHECK(!atomic_load(&w.done)); /* a full blocking queue applies back-pressure */
  gate_open(&block.g);
  pthread_join(w.thread, NULL);
  CHECK_OK(w.result);
  CHECK(get(&block.h->dropped) == 0);
  CHECK(held_queue_finish(&block, 4, 0));
}

/* Case 14 (Fixed: surfaced) */
static void test_downstream_errors_are_counted_and_reported(void) {
  rec *r = rec_new();
  hook *h = hook_new();
  conveyor_sink *s = rec_sink(r), *q = NULL;
  conveyor_queue_sink_options o = hook_options(h, WAIT_MS);
  conveyor_queue_sink_report report;
  uint32_t i;
  r->fail_first = 3;
  CHECK_OK(conveyor_queue_sink_new_with_options(s, 16, CONVEYOR_OVERFLOW_BLOCK, &o, &q));
  for (i = 0; i < 10; i++) {
    CHECK_OK(write_tagged(q, 0, i));
  }
  CHECK_OK(conveyor_queue_sink_close(q, WAIT_MS, &report));
  CHECK(report.delivered == 7 && report.dropped == 3 && report.drained == 1);
  CHECK(get(&h->dropped) == 3 && sink_stat(q, "failures") == 3);
  conveyor_sink_free(q);
  conveyor_sink_free(s);
  CHECK(hook_destroy(h) && rec_destroy(r));
}

/* Case 15 (Fixed: empty payloads are fine) */
static void test_empty_payloads_pass_through_every_sink(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *f = NULL, *q = NULL, *b = NULL;
  CHECK_OK(conveyor_filter_sink_new(s, match_all, NULL, &f));
  CHECK_OK(conveyor_queue_sink_new(f, 4, CONVEYOR_OVERFLOW_BLOCK, &q));
  CHECK_OK(conveyor_broadcaster_new(&q, 1, &b));
  CHECK_OK(conveyor_sink_write(b, NULL, 0));
  CHECK_OK(conveyor_sink_close(b));
  CHECK(rec_count(r) == 1 && r->lens[0] == 0);
  conveyor_sink_free(b);
  conveyor_sink_free(q);
  conveyor_sink_free(f);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* ---------------------------------------------------------------- retrying sink */

/* Case 16: a flaky sink (the first 50 attempts fail, then 9 in 10) behind a retrying
 * sink: every one of 100 concurrent writes is delivered. */
static int flaky_run(conveyor_retry_strategy *strategy) {
  enum { WRITERS = 20, EACH = 5 };
  rec *r = rec_new();
  conveyor_sink *s, *rs = NULL;
  writer w[WRITERS];
  int i, ok = 1;
  r->flaky = 1;
  s = rec_sink(r);
  if (strategy == NULL || conveyor_retrying_sink_new(s, strategy, &rs) != CONVEYOR_OK) {
    return 0;
  }
  for (i = 0; i < WRITERS; i++) {
    writer_start(&w[i], rs, (uint32_t)i, EACH);
  }
  for (i = 0; i < WRITERS; i++) {
    pthread_join(w[i].thread, NULL);
    ok = ok && w[i].result == CONVEYOR_OK;
  }
  ok = ok && rec_count(r) == WRITERS * EACH && get(&r->writes) > 50 + WRITERS * EACH;
  ok = ok && sink_stat(rs, "forwarded") == WRITERS * EACH && closes_twice_and_refuses_after(rs);
  conveyor_sink_free(rs);
  conveyor_sink_free(s);
  return ok && get(&r->closes) == 1 && rec_destroy(r);
}

static void test_retrying_sink_delivers_everything_through_a_flaky_sink(void) {
  CHECK(flaky_run(conveyor_breaker_new(3, 1)));
  CHECK(flaky_run(conveyor_exponential_backoff_new(0, 1, 2)));
}

/* Case 17 */
static void test_downstream_closed_is_returned_at_once(void) {
  rec *r = rec_new();
  strat st;
  conveyor_retry_strategy_vtable vt;
  conveyor_retry_strategy *strategy = NULL;
  conveyor_sink *s = rec_sink(r), *rs = NULL;
  memset(&st, 0, sizeof st);
  vt = strat_vtable(&st);
  r->closed_after = 0;
  CHECK_OK(conveyor_retry_strategy_new(&vt, &strategy));
  CHECK_OK(conveyor_retrying_sink_new(s, strategy, &rs));
  CHECK_RESULT(write_str(rs, "x"), CONVEYOR_ERR_CLOSED);
  CHECK(get(&st.proceeds) == 1 && get(&st.failures) == 0); /* one attempt, no retry */
  conveyor_sink_free(rs);
  CHECK(get(&st.frees) == 1); /* the retrying sink took the strategy */
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* Case 18 (Fixed: a give-up is reported to the writer) */
static void test_a_strategy_giving_up_is_reported_to_the_writer(void) {
  rec *r = rec_new();
  strat st;
  conveyor_retry_strategy_vtable vt;
  conveyor_retry_strategy *strategy = NULL;
  conveyor_sink *s = rec_sink(r), *rs = NULL;
  memset(&st, 0, sizeof st);
  st.limit = 3;
  vt = strat_vtable(&st);
  r->fail_first = 10;
  CHECK_OK(conveyor_retry_strategy_new(&vt, &strategy));
  CHECK_OK(conveyor_retrying_sink_new(s, strategy, &rs));
  CHECK_RESULT(write_str(rs, "x"), CONVEYOR_ERR_CLIENT);
  CHECK(last_error_contains("dropped by the retry strategy after 3 attempts"));
  CHECK(sink_stat(rs, "dropped") == 1 && get(&r->writes) == 3);
  conveyor_sink_free(rs);
  conveyor_sink_free(s);
  CHECK(get(&st.frees) == 1 && rec_destroy(r));
}

static void test_strategy_ownership_and_arguments(void) {
  strat st;
  conveyor_retry_strategy_vtable vt;
  conveyor_retry_strategy *strategy = NULL;
  conveyor_sink *rs = NULL;
  memset(&st, 0, sizeof st);
  vt = strat_vtable(&st);
  vt.failure = NULL;
  CHECK_RESULT(conveyor_retry_strategy_new(&vt, &strategy), CONVEYOR_ERR_INVALID_ARGUMENT);
  vt = strat_vtable(&st);
  vt.struct_size = 4;
  CHECK_RESULT(conveyor_retry_strategy_new(&vt, &strategy), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_retry_strategy_new(NULL, &strategy), CONVEYOR_ERR_NULL_PARAMETER);
  vt = strat_vtable(&st);
  CHECK_OK(conveyor_retry_strategy_new(&vt, &strategy));
  /* A failed retrying_sink_new leaves the strategy with the caller. */
  CHECK_RESULT(conveyor_retrying_sink_new(NULL, strategy, &rs), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(get(&st.frees) == 0);
  conveyor_retry_strategy_free(strategy);
  CHECK(get(&st.frees) == 1);
}

/* Case 19 */
static void test_close_during_a_backoff_wait_returns_closed_promptly(void) {
  rec *r = rec_new();
  conveyor_sink *s, *rs = NULL;
  writer w;
  struct timespec started;
  r->fail_first = UINT64_MAX;
  s = rec_sink(r);
  CHECK_OK(conveyor_retrying_sink_new(s, conveyor_breaker_new(1, 600000), &rs));
  writer_start(&w, rs, 0, 1);
  CHECK(wait_counter(&r->writes, 1)); /* the first attempt failed: now the breaker waits */
  clock_gettime(CLOCK_MONOTONIC, &started);
  CHECK_OK(conveyor_sink_close(rs));
  pthread_join(w.thread, NULL);
  CHECK_RESULT(w.result, CONVEYOR_ERR_CLOSED);
  CHECK(elapsed_ms(&started) < 5000 && get(&r->writes) == 1);
  conveyor_sink_free(rs);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* Case 20 */
static void test_retrying_sink_serializes_concurrent_writers_in_order(void) {
  enum { WRITERS = 4, EACH = 200 };
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *rs = NULL;
  writer w[WRITERS];
  uint32_t next[WRITERS] = {0, 0, 0, 0};
  size_t i;
  r->fail_first = 5;
  CHECK_OK(conveyor_retrying_sink_new(s, conveyor_breaker_new(100, 0), &rs));
  for (i = 0; i < WRITERS; i++) {
    writer_start(&w[i], rs, (uint32_t)i, EACH);
  }
  for (i = 0; i < WRITERS; i++) {
    pthread_join(w[i].thread, NULL);
    CHECK_OK(w[i].result);
  }
  CHECK(rec_count(r) == WRITERS * EACH);
  for (i = 0; i < WRITERS * EACH; i++) {
    tagged t = rec_tagged(r, i);
    CHECK(t.writer < WRITERS && t.index == next[t.writer]); /* each writer in order */
    next[t.writer]++;
  }
  conveyor_sink_free(rs);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

/* ---------------------------------------------------------------- pipelines and sinks */

static void test_a_pipeline_as_a_sink(void) {
  probe pr;
  sink outcomes;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_sink *ps = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&outcomes);
  c = client_new(&pr);
  c->check_order = 1;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&outcomes, 2, 0);
  CHECK_RESULT(conveyor_pipeline_as_sink_with(p, &pc, UINT64_MAX, WAIT_MS, &ps), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(get(&outcomes.frees) == 0); /* refused: the userdata is still ours */
  pc = sink_config(&outcomes, 0, 0);
  CHECK_OK(conveyor_pipeline_as_sink_with(p, &pc, UINT64_MAX, WAIT_MS, &ps));
  for (i = 0; i < 1000; i++) {
    CHECK_OK(conveyor_sink_write(ps, (const uint8_t *)&i, sizeof i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&outcomes.acks) == 1000 && get(&pr.events) == 1000 && get(&pr.order_errors) == 0);
  CHECK(sink_stat(ps, "written") == 1000 && sink_stat(ps, "forwarded") == 1000);
  CHECK_OK(conveyor_sink_close(ps)); /* closes the pipeline */
  CHECK_RESULT(conveyor_pipeline_flush(p, 0), CONVEYOR_ERR_CLOSED);
  CHECK(get(&pr.frees) == 1);
  conveyor_pipeline_free(p); /* the sink still holds the pipeline */
  CHECK_RESULT(write_str(ps, "late"), CONVEYOR_ERR_CLOSED);
  conveyor_sink_free(ps);
  CHECK(sink_wait_freed(&outcomes) && get(&outcomes.frees) == 1 && get(&outcomes.late_callbacks) == 0);
}

static void test_a_sink_serves_as_a_client(void) {
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_sink *ch = NULL;
  uint64_t i, got;
  size_t needed;
  CHECK_OK(conveyor_channel_sink_new(10000, &ch));
  CHECK_RESULT(conveyor_config_add_sink(NULL, ch), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_add_sink(cfg, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_config_add_sink(cfg, ch));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK_OK(conveyor_producer_new(p, NULL, &prod));
  for (i = 0; i < 1000; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  for (i = 0; i < 1000; i++) {
    CHECK_OK(conveyor_channel_sink_recv(ch, (uint8_t *)&got, sizeof got, &needed, WAIT_MS));
    CHECK(needed == sizeof got && got == i);
  }
  conveyor_producer_free(prod);
  CHECK_OK(conveyor_pipeline_close(p, WAIT_MS));
  CHECK_OK(write_str(ch, "the pipeline does not close its sinks"));
  conveyor_pipeline_free(p);
  conveyor_sink_free(ch);
}

static void test_a_closed_sink_client_counts_as_broken_and_events_go_elsewhere(void) {
  probe pr;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_sink *ch = NULL;
  probe_init(&pr);
  CHECK_OK(conveyor_channel_sink_new(10, &ch));
  CHECK_OK(conveyor_sink_close(ch));
  CHECK_OK(conveyor_config_set(cfg, "mode", "failover"));
  CHECK_OK(conveyor_config_set(cfg, "failover.policy", "ordered"));
  CHECK_OK(conveyor_config_add_sink(cfg, ch)); /* first in line */
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  conveyor_sink_free(ch); /* the pipeline holds it */
  CHECK_OK(conveyor_producer_new(p, NULL, &prod));
  CHECK_OK(publish_seq(prod, 7));
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&pr.events) == 1);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 1);
}

static void test_sinks_added_to_a_running_pipeline_and_cycles_refused(void) {
  probe pr;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_sink *ch = NULL, *b = NULL, *ps = NULL;
  client *dead;
  uint64_t id = 0, got, i;
  size_t needed;
  probe_init(&pr);
  dead = client_new(&pr);
  dead->fail_connects = INT_MAX;
  CHECK_OK(conveyor_config_set(cfg, "mode", "failover"));
  CHECK_OK(conveyor_config_set(cfg, "failover.policy", "ordered"));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "-1"));
  CHECK_OK(config_add(cfg, dead));
  CHECK_OK(conveyor_broadcaster_new(NULL, 0, &b));
  CHECK_OK(conveyor_config_add_sink(cfg, b));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK_OK(conveyor_pipeline_as_sink(p, &ps));
  /* The pipeline feeds b: b feeding the pipeline would loop forever. */
  CHECK_RESULT(conveyor_broadcaster_add(b, ps), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_pipeline_add_sink(p, ps, &id), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(last_error_contains("write into itself"));
  CHECK_OK(conveyor_channel_sink_new(100, &ch));
  CHECK_OK(conveyor_broadcaster_add(b, ch));
  CHECK_OK(conveyor_producer_new(p, NULL, &prod));
  for (i = 0; i < 10; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS)); /* the dead client fails over to b */
  for (i = 0; i < 10; i++) {
    CHECK_OK(conveyor_channel_sink_recv(ch, (uint8_t *)&got, sizeof got, &needed, WAIT_MS));
    CHECK(got == i);
  }
  CHECK_OK(conveyor_pipeline_add_sink(p, ch, &id));
  CHECK(id != 0);
  CHECK_OK(conveyor_pipeline_remove_client(p, id));
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK_RESULT(conveyor_pipeline_add_sink(NULL, ch, &id), CONVEYOR_ERR_NULL_PARAMETER);
  conveyor_sink_free(ps);
  conveyor_sink_free(b);
  conveyor_sink_free(ch);
  CHECK(get(&pr.frees) == 1);
}

/* Every event into a broadcaster of two queued pipelines: the output whose hosts are
 * all dead does not hold back the other, and every event has an outcome on both. */
static void test_a_broadcaster_of_two_pipelines_keeps_delivering_when_one_output_is_dead(void) {
  enum { EVENTS = 2000 };
  probe live_pr, dead_pr;
  sink live_out, dead_out;
  hook *h = hook_new();
  conveyor_config *live_cfg = fast_config(), *dead_cfg = fast_config();
  conveyor_pipeline *live = NULL, *dead = NULL;
  conveyor_sink *live_sink = NULL, *dead_sink = NULL, *lq = NULL, *dq = NULL, *b = NULL;
  conveyor_sink *members[2];
  conveyor_producer_config pc;
  conveyor_queue_sink_options o = hook_options(h, 50);
  client *c;
  int i;
  uint32_t n;
  probe_init(&live_pr);
  probe_init(&dead_pr);
  sink_init(&live_out);
  sink_init(&dead_out);
  CHECK_OK(conveyor_config_set(live_cfg, "mode", "loadbalance"));
  CHECK_OK(conveyor_config_set(dead_cfg, "mode", "loadbalance"));
  CHECK_OK(conveyor_config_set(dead_cfg, "queue.events", "512"));
  for (i = 0; i < 2; i++) {
    CHECK_OK(config_add(live_cfg, client_new(&live_pr)));
    c = client_new(&dead_pr);
    c->fail_connects = INT_MAX;
    CHECK_OK(config_add(dead_cfg, c));
  }
  CHECK_OK(conveyor_pipeline_new(live_cfg, &live));
  CHECK_OK(conveyor_pipeline_new(dead_cfg, &dead));
  pc = sink_config(&live_out, 0, 0);
  CHECK_OK(conveyor_pipeline_as_sink_with(live, &pc, UINT64_MAX, WAIT_MS, &live_sink));
  pc = sink_config(&dead_out, 0, 0);
  CHECK_OK(conveyor_pipeline_as_sink_with(dead, &pc, UINT64_MAX, 0, &dead_sink));
  CHECK_OK(conveyor_queue_sink_new(live_sink, 256, CONVEYOR_OVERFLOW_BLOCK, &lq));
  CHECK_OK(conveyor_queue_sink_new_with_options(dead_sink, 256, CONVEYOR_OVERFLOW_DROP_OLDEST, &o, &dq));
  members[0] = lq;
  members[1] = dq;
  CHECK_OK(conveyor_broadcaster_new(members, 2, &b));
  for (n = 0; n < EVENTS; n++) {
    CHECK_OK(write_tagged(b, 0, n));
  }
  CHECK(wait_counter(&live_out.acks, EVENTS)); /* while the other output is dead */
  CHECK(get(&dead_out.acks) == 0 && get(&dead_pr.events) == 0);
  CHECK_OK(conveyor_sink_close(b));
  conveyor_sink_free(b);
  conveyor_sink_free(lq);
  conveyor_sink_free(dq);
  conveyor_sink_free(live_sink);
  conveyor_sink_free(dead_sink);
  /* The dead side's queue is gone once its hook is released (its worker may still have
   * been handing its last event to the closing pipeline): then every drop is counted. */
  {
    uint64_t hook_drops;
    CHECK(hook_wait_released(h));
    hook_drops = get(&h->dropped);
    CHECK(hook_destroy(h));
    CHECK(get(&dead_out.acks) + get(&dead_out.drops) + hook_drops == EVENTS);
    CHECK(get(&dead_out.drops) > 0 && hook_drops > 0);
  }
  conveyor_pipeline_free(live);
  conveyor_pipeline_free(dead);
  CHECK(get(&live_out.acks) == EVENTS && get(&live_out.drops) == 0 && get(&live_pr.events) == EVENTS);
  CHECK(sink_wait_freed(&live_out) && sink_wait_freed(&dead_out));
  CHECK(get(&live_pr.frees) == 2 && get(&dead_pr.frees) == 2);
}

/* ---------------------------------------------------------------- ownership and stats */

static void test_free_userdata_runs_once_after_the_last_reference(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *q = NULL, *f = NULL, *b = NULL;
  conveyor_sink *members[2];
  CHECK_OK(conveyor_queue_sink_new(s, 8, CONVEYOR_OVERFLOW_BLOCK, &q));
  CHECK_OK(conveyor_filter_sink_new(s, match_all, NULL, &f));
  members[0] = q;
  members[1] = f;
  CHECK_OK(conveyor_broadcaster_new(members, 2, &b));
  conveyor_sink_free(s);
  conveyor_sink_free(q);
  conveyor_sink_free(f);
  CHECK_OK(write_str(b, "x"));
  CHECK(wait_counter(&r->writes, 2)); /* through the queue and through the filter */
  CHECK(get(&r->frees) == 0);
  conveyor_sink_free(b); /* the last reference: the queue's close closes s */
  CHECK(rec_wait_freed(r));
  CHECK(get(&r->closes) == 1 && rec_count(r) == 2);
  CHECK(rec_destroy(r));
}

typedef struct matcher_data {
  counter calls;
  counter frees;
} matcher_data;

static uint32_t match_counting(void *userdata, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  add(&((matcher_data *)userdata)->calls, 1);
  return 1;
}

static void free_matcher_data(void *userdata) {
  add(&((matcher_data *)userdata)->frees, 1);
}

static void test_a_filter_frees_its_matcher_userdata_once_it_is_gone(void) {
  rec *r = rec_new();
  matcher_data m;
  atomic_init(&m.calls, 0);
  atomic_init(&m.frees, 0);
  conveyor_sink *s = rec_sink(r), *f = NULL, *b = NULL;
  /* Refused: the userdata stays the caller's. */
  CHECK_RESULT(conveyor_filter_sink_new_with_free(s, NULL, &m, free_matcher_data, &f), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(f == NULL && get(&m.frees) == 0);
  CHECK_OK(conveyor_filter_sink_new_with_free(s, match_counting, &m, free_matcher_data, &f));
  CHECK_OK(conveyor_broadcaster_new(&f, 1, &b));
  conveyor_sink_free(f);
  CHECK_OK(write_str(b, "x"));
  CHECK(get(&m.calls) == 1 && get(&m.frees) == 0); /* the broadcaster still holds the filter */
  conveyor_sink_free(b);
  CHECK(get(&m.frees) == 1);
  conveyor_sink_free(s);
  CHECK(rec_wait_freed(r) && rec_count(r) == 1);
  CHECK(rec_destroy(r));
}

static void test_stats_json_nests_and_reports_its_size(void) {
  rec *r = rec_new();
  conveyor_sink *s = rec_sink(r), *f = NULL, *q = NULL;
  char small[8], *json;
  size_t needed = 0;
  counter calls = 0;
  uint8_t one = 1, two = 2;
  CHECK_OK(conveyor_filter_sink_new(s, match_even, &calls, &f));
  CHECK_OK(conveyor_queue_sink_new(f, 8, CONVEYOR_OVERFLOW_BLOCK, &q));
  CHECK_OK(conveyor_sink_write(q, &one, 1));
  CHECK_OK(conveyor_sink_write(q, &two, 1));
  CHECK_OK(conveyor_sink_close(q));
  CHECK_RESULT(conveyor_sink_stats_json(q, small, sizeof small, &needed), CONVEYOR_ERR_BUFFER_TOO_SMALL);
  CHECK(needed > sizeof small);
  CHECK_RESULT(conveyor_sink_stats_json(q, small, sizeof small, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  json = sink_stats(q);
  CHECK(json != NULL);
  CHECK(strncmp(json, "{\"kind\":\"queue\",\"written\":2,\"forwarded\":2", 41) == 0);
  CHECK(strstr(json, "{\"kind\":\"filter\",\"written\":2,\"forwarded\":1,\"dropped\":0,\"filtered\":1") != NULL);
  CHECK(strstr(json, "{\"kind\":\"custom\",\"written\":1") != NULL);
  free(json);
  conveyor_sink_free(q);
  conveyor_sink_free(f);
  conveyor_sink_free(s);
  CHECK(rec_destroy(r));
}

int main(void) {
  static const harness_test tests[] = {
      HARNESS_TEST(test_sink_new_checks_its_arguments),
      HARNESS_TEST(test_kind_specific_calls_refuse_other_kinds),
      HARNESS_TEST(test_every_sink_closes_twice_and_refuses_writes_after),
      HARNESS_TEST(test_broadcast_of_concurrent_writes_reaches_every_member_exactly_once),
      HARNESS_TEST(test_membership_add_twice_remove_unknown_remove_without_close),
      HARNESS_TEST(test_a_member_reporting_closed_is_removed_and_the_others_get_the_event_once),
      HARNESS_TEST(test_broadcaster_close_closes_each_member_once),
      HARNESS_TEST(test_a_membership_making_a_sink_write_into_itself_is_refused),
      HARNESS_TEST(test_a_stalled_member_behind_a_queue_does_not_delay_the_others),
      HARNESS_TEST(test_channel_closed_with_room_always_refuses_and_keeps_what_it_buffered),
      HARNESS_TEST(test_closing_a_channel_wakes_blocked_writers_and_readers),
      HARNESS_TEST(test_channel_reads_concurrent_writers_completely),
      HARNESS_TEST(test_filter_keeps_evens),
      HARNESS_TEST(test_queue_sink_keeps_fifo),
      HARNESS_TEST(test_queue_sink_close_drains_then_closes_downstream),
      HARNESS_TEST(test_queue_sink_in_front_of_a_dead_sink_closes_within_its_deadline),
      HARNESS_TEST(test_bounded_queue_sink_overflow_policies),
      HARNESS_TEST(test_downstream_errors_are_counted_and_reported),
      HARNESS_TEST(test_empty_payloads_pass_through_every_sink),
      HARNESS_TEST(test_retrying_sink_delivers_everything_through_a_flaky_sink),
      HARNESS_TEST(test_downstream_closed_is_returned_at_once),
      HARNESS_TEST(test_a_strategy_giving_up_is_reported_to_the_writer),
      HARNESS_TEST(test_strategy_ownership_and_arguments),
      HARNESS_TEST(test_close_during_a_backoff_wait_returns_closed_promptly),
      HARNESS_TEST(test_retrying_sink_serializes_concurrent_writers_in_order),
      HARNESS_TEST(test_a_pipeline_as_a_sink),
      HARNESS_TEST(test_a_sink_serves_as_a_client),
      HARNESS_TEST(test_a_closed_sink_client_counts_as_broken_and_events_go_elsewhere),
      HARNESS_TEST(test_sinks_added_to_a_running_pipeline_and_cycles_refused),
      HARNESS_TEST(test_a_broadcaster_of_two_pipelines_keeps_delivering_when_one_output_is_dead),
      HARNESS_TEST(test_free_userdata_runs_once_after_the_last_reference),
      HARNESS_TEST(test_a_filter_frees_its_matcher_userdata_once_it_is_gone),
      HARNESS_TEST(test_stats_json_nests_and_reports_its_size),
  };
  return harness_run("test_sinks", tests, sizeof tests / sizeof tests[0]);
}
