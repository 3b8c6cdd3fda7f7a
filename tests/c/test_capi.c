/* Tests of every function of the conveyor C API and of its error paths: NULLs, bad
 * config values, garbage from vtables, calls after close, free(NULL), asynchronous
 * completion from threads the test creates, re-entrant calls from callbacks, and
 * free_userdata called exactly once per client and producer. */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"
#include "support.h"

/* ================================================================ basics */

static void test_version(void) {
  char expected[64];
  snprintf(expected, sizeof expected, "%d.%d.%d", CONVEYOR_VERSION_MAJOR, CONVEYOR_VERSION_MINOR,
           CONVEYOR_VERSION_PATCH);
  CHECK(strcmp(conveyor_version(), expected) == 0);
  CHECK(strcmp(conveyor_version(), CONVEYOR_VERSION_STRING) == 0);
}

static void test_result_str(void) {
  static const struct {
    conveyor_result code;
    const char *name;
  } codes[] = {
      {CONVEYOR_OK, "CONVEYOR_OK"},
      {CONVEYOR_ERR_NULL_PARAMETER, "CONVEYOR_ERR_NULL_PARAMETER"},
      {CONVEYOR_ERR_INVALID_ARGUMENT, "CONVEYOR_ERR_INVALID_ARGUMENT"},
      {CONVEYOR_ERR_INVALID_CONFIG, "CONVEYOR_ERR_INVALID_CONFIG"},
      {CONVEYOR_ERR_CLOSED, "CONVEYOR_ERR_CLOSED"},
      {CONVEYOR_ERR_FULL, "CONVEYOR_ERR_FULL"},
      {CONVEYOR_ERR_TIMEOUT, "CONVEYOR_ERR_TIMEOUT"},
      {CONVEYOR_ERR_NO_CLIENTS, "CONVEYOR_ERR_NO_CLIENTS"},
      {CONVEYOR_ERR_CANCELLED, "CONVEYOR_ERR_CANCELLED"},
      {CONVEYOR_ERR_PANIC, "CONVEYOR_ERR_PANIC"},
      {CONVEYOR_ERR_INTERNAL, "CONVEYOR_ERR_INTERNAL"},
      {CONVEYOR_ERR_BUFFER_TOO_SMALL, "CONVEYOR_ERR_BUFFER_TOO_SMALL"},
      {CONVEYOR_ERR_CLIENT, "CONVEYOR_ERR_CLIENT"},
      {CONVEYOR_ERR_ALREADY_SETTLED, "CONVEYOR_ERR_ALREADY_SETTLED"},
  };
  size_t i, j;
  for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    const char *s = conveyor_result_str(codes[i].code);
    CHECK(s != NULL);
    CHECK(strncmp(s, codes[i].name, strlen(codes[i].name)) == 0);
    CHECK(s[strlen(codes[i].name)] == ':');
    for (j = 0; j < i; j++) {
      CHECK(codes[i].code != codes[j].code);
    }
  }
  CHECK(CONVEYOR_OK == 0);
  CHECK(strcmp(conveyor_result_str(9999), "unknown conveyor_result") == 0);
  CHECK(strcmp(conveyor_result_str(UINT32_MAX), "unknown conveyor_result") == 0);
  CHECK(CONVEYOR_PUBLISH_OK == 0 && CONVEYOR_PUBLISH_RETRY == 1 && CONVEYOR_PUBLISH_BROKEN == 2);
}

static void test_last_error(void) {
  conveyor_config *cfg = conveyor_config_new();
  char buf[256], tiny[5];
  size_t n;
  CHECK(cfg != NULL);
  CHECK_RESULT(conveyor_config_set(cfg, "no.such.key", "1"), CONVEYOR_ERR_INVALID_CONFIG);
  n = conveyor_last_error(NULL, 0);
  CHECK(n > 0 && n < sizeof buf);
  CHECK(conveyor_last_error(buf, sizeof buf) == n);
  CHECK(strlen(buf) == n);
  CHECK(strstr(buf, "conveyor_config_set") != NULL);
  CHECK(strstr(buf, "no.such.key") != NULL);
  /* Truncated copies stay NUL-terminated and still report the full length. */
  CHECK(conveyor_last_error(tiny, sizeof tiny) == n);
  CHECK(strlen(tiny) == sizeof tiny - 1);
  CHECK(strncmp(tiny, buf, sizeof tiny - 1) == 0);
  /* A NULL buffer with a length copies nothing and does not crash. */
  CHECK(conveyor_last_error(NULL, 10) == n);
  /* Success leaves it alone. */
  CHECK_OK(conveyor_config_set(cfg, "worker", "2"));
  CHECK(conveyor_last_error(buf, sizeof buf) == n);
  conveyor_config_free(cfg);
}

typedef struct last_error_thread {
  size_t length_seen;
} last_error_thread;

static void *read_last_error(void *arg) {
  ((last_error_thread *)arg)->length_seen = conveyor_last_error(NULL, 0);
  return NULL;
}

static void test_last_error_is_per_thread(void) {
  pthread_t t;
  last_error_thread seen = {99};
  CHECK_RESULT(conveyor_config_set(NULL, "worker", "1"), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(conveyor_last_error(NULL, 0) > 0);
  CHECK(pthread_create(&t, NULL, read_last_error, &seen) == 0);
  pthread_join(t, NULL);
  CHECK(seen.length_seen == 0);
}

static void test_free_null(void) {
  char buf[128];
  conveyor_config_free(NULL);
  conveyor_pipeline_free(NULL);
  conveyor_producer_free(NULL);
  conveyor_completion_done(NULL, 1, CONVEYOR_PUBLISH_OK);
  conveyor_last_error(buf, sizeof buf);
  CHECK(strstr(buf, "conveyor_completion_done") != NULL);
  CHECK(strstr(buf, "NULL") != NULL);
}

/* ================================================================ config */

static void test_config_set_get(void) {
  conveyor_config *cfg = conveyor_config_new();
  char value[64];
  size_t needed = 0;
  static const char *const good[][2] = {
      {"mode", "failover"},           {"failover.policy", "ordered"}, {"worker", "3"},
      {"max_retries", "-1"},          {"backoff.init", "250ms"},      {"backoff.max", "2m"},
      {"timeout", "2s"},              {"publish_timeout", "1500ms"},  {"bulk_max_size", "100"},
      {"pipelining", "4"},            {"queue.type", "mem"},          {"queue.events", "128"},
      {"queue.bytes", "65536"},       {"queue.flush.min_events", "16"},
      {"queue.flush.timeout", "5ms"}, {"error_threshold", "7"},
  };
  size_t i;
  CHECK(cfg != NULL);
  CHECK_OK(conveyor_config_get(cfg, "mode", value, sizeof value, &needed));
  CHECK(strcmp(value, "auto") == 0 && needed == 5);
  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    CHECK_OK(conveyor_config_set(cfg, good[i][0], good[i][1]));
    CHECK_OK(conveyor_config_get(cfg, good[i][0], value, sizeof value, &needed));
    if (strcmp(good[i][0], "backoff.max") == 0) {
      CHECK(strcmp(value, "120s") == 0);
    } else if (strcmp(good[i][0], "publish_timeout") == 0) {
      CHECK(strcmp(value, "1500ms") == 0);
    } else {
      CHECK(strcmp(value, good[i][1]) == 0);
    }
    CHECK(needed == strlen(value) + 1);
  }
  /* A buffer too small: nothing written, the size needed reported. */
  strcpy(value, "untouched");
  CHECK_RESULT(conveyor_config_get(cfg, "failover.policy", value, 3, &needed),
               CONVEYOR_ERR_BUFFER_TOO_SMALL);
  CHECK(needed == strlen("ordered") + 1);
  CHECK(strcmp(value, "untouched") == 0);
  CHECK_RESULT(conveyor_config_get(cfg, "worker", NULL, 0, &needed), CONVEYOR_ERR_BUFFER_TOO_SMALL);
  CHECK(needed == 2);
  /* NULL parameters. */
  CHECK_RESULT(conveyor_config_get(NULL, "worker", value, sizeof value, &needed),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_get(cfg, NULL, value, sizeof value, &needed),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_get(cfg, "worker", value, sizeof value, NULL),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_get(cfg, "worker", NULL, 10, &needed), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_get(cfg, "nope", value, sizeof value, &needed),
               CONVEYOR_ERR_INVALID_CONFIG);
  conveyor_config_free(cfg);
}

static void test_config_rejects_bad_values(void) {
  conveyor_config *cfg = conveyor_config_new();
  char msg[256], value[32];
  size_t needed;
  static const char *const bad[][2] = {
      {"mode", "fast"},         {"failover.policy", "best"}, {"worker", "0"},
      {"worker", "x"},          {"worker", "-1"},            {"max_retries", "-2"},
      {"max_retries", "1.5"},   {"backoff.init", "5 parsecs"}, {"backoff.init", "10"},
      {"timeout", "-1s"},       {"bulk_max_size", "0"},      {"pipelining", ""},
      {"queue.type", ""},       {"queue.events", "99999999999999999999"},
      {"error_threshold", "x"}, {"no.such.key", "1"},
  };
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_RESULT(conveyor_config_set(cfg, bad[i][0], bad[i][1]), CONVEYOR_ERR_INVALID_CONFIG);
    conveyor_last_error(msg, sizeof msg);
    CHECK(strstr(msg, bad[i][0]) != NULL); /* the message names the key */
  }
  /* The config is unchanged by rejected values. */
  CHECK_OK(conveyor_config_get(cfg, "worker", value, sizeof value, &needed));
  CHECK(strcmp(value, "1") == 0);
  CHECK_RESULT(conveyor_config_set(NULL, "worker", "1"), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_set(cfg, NULL, "1"), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_set(cfg, "worker", NULL), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_set(cfg, "w\xff", "1"), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_config_set(cfg, "worker", "\xc3\x28"), CONVEYOR_ERR_INVALID_ARGUMENT);
  conveyor_config_free(cfg);
}

static void test_add_client_rejects_bad_vtables(void) {
  probe pr;
  conveyor_config *cfg = conveyor_config_new();
  client *c;
  conveyor_client_vtable vt;
  probe_init(&pr);
  c = client_new(&pr);
  vt = vtable_for(c);
  CHECK_RESULT(conveyor_config_add_client(NULL, &vt), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_add_client(cfg, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  vt.struct_size = 0;
  CHECK_RESULT(conveyor_config_add_client(cfg, &vt), CONVEYOR_ERR_INVALID_ARGUMENT);
  vt.struct_size = (uint32_t)sizeof vt - 8;
  CHECK_RESULT(conveyor_config_add_client(cfg, &vt), CONVEYOR_ERR_INVALID_ARGUMENT);
  vt.struct_size = (uint32_t)sizeof vt + 8;
  CHECK_RESULT(conveyor_config_add_client(cfg, &vt), CONVEYOR_ERR_INVALID_ARGUMENT);
  vt = vtable_for(c);
  vt.publish = NULL;
  CHECK_RESULT(conveyor_config_add_client(cfg, &vt), CONVEYOR_ERR_INVALID_ARGUMENT);
  {
    /* A caller with a smaller (older) struct: only struct_size may be read. Heap-allocated
     * at its real size so ASan and valgrind catch any read past it. */
    uint32_t *just_size = (uint32_t *)malloc(sizeof *just_size);
    *just_size = sizeof *just_size;
    CHECK_RESULT(conveyor_config_add_client(cfg, (const conveyor_client_vtable *)(void *)just_size),
                 CONVEYOR_ERR_INVALID_ARGUMENT);
    free(just_size);
  }
  /* Rejected: the caller keeps the userdata. */
  conveyor_config_free(cfg);
  CHECK(get(&pr.frees) == 0);
  /* Accepted then never built: conveyor_config_free frees it, once. */
  cfg = conveyor_config_new();
  CHECK_OK(config_add(cfg, c));
  CHECK(get(&pr.frees) == 0);
  conveyor_config_free(cfg);
  CHECK(get(&pr.frees) == 1);
  /* A vtable without free_userdata is fine too. */
  cfg = conveyor_config_new();
  c = client_new(&pr);
  vt = vtable_for(c);
  vt.free_userdata = NULL;
  CHECK_OK(conveyor_config_add_client(cfg, &vt));
  conveyor_config_free(cfg);
  CHECK(get(&pr.frees) == 1);
  free(c);
}

static void test_logger(void) {
  log_capture log;
  probe pr;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  log_init(&log);
  probe_init(&pr);
  CHECK_RESULT(conveyor_config_set_logger(NULL, capture_log, &log), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_config_set_logger(cfg, capture_log, &log));
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK(log.started);
  CHECK_OK(conveyor_pipeline_close(p, WAIT_MS));
  conveyor_pipeline_free(p);
  CHECK(get(&log.infos) >= 2); /* started, closed */
  CHECK(get(&log.malformed) == 0);
  /* NULL turns logging off. */
  log.started = 0;
  cfg = fast_config();
  CHECK_OK(conveyor_config_set_logger(cfg, capture_log, &log));
  CHECK_OK(conveyor_config_set_logger(cfg, NULL, NULL));
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  conveyor_pipeline_free(p);
  CHECK(!log.started);
  CHECK(get(&pr.frees) == 2);
  log_destroy(&log);
}

/* ================================================================ pipeline lifecycle */

static void test_pipeline_new_failure_keeps_config(void) {
  probe pr;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  probe_init(&pr);
  CHECK_RESULT(conveyor_pipeline_new(NULL, &p), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_new(cfg, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_new(cfg, &p), CONVEYOR_ERR_NO_CLIENTS);
  CHECK(p == NULL);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_config_set(cfg, "mode", "single"));
  CHECK_RESULT(conveyor_pipeline_new(cfg, &p), CONVEYOR_ERR_INVALID_CONFIG);
  CHECK_OK(conveyor_config_set(cfg, "mode", "loadbalance"));
  CHECK_OK(conveyor_config_set(cfg, "backoff.init", "10s"));
  CHECK_RESULT(conveyor_pipeline_new(cfg, &p), CONVEYOR_ERR_INVALID_CONFIG);
  CHECK_OK(conveyor_config_set(cfg, "backoff.init", "1ms"));
  CHECK_OK(conveyor_config_set(cfg, "queue.type", "no-such-queue"));
  CHECK_RESULT(conveyor_pipeline_new(cfg, &p), CONVEYOR_ERR_INVALID_CONFIG);
  CHECK_OK(conveyor_config_set(cfg, "queue.type", "mem"));
  /* Failed builds touched no client and freed nothing: the caller still owns them. */
  CHECK(p == NULL);
  CHECK(get(&pr.frees) == 0 && get(&pr.connect_calls) == 0);
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK(p != NULL);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 2);
  CHECK(get(&pr.closes) >= 2);
}

static void test_publish_flush_ack(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_counts counts;
  conveyor_close_report report;
  client *c;
  char *stats;
  uint64_t i, bytes = 0;
  const uint64_t total = 1000;
  probe_init(&pr);
  sink_init(&s);
  c = client_new(&pr);
  c->check_order = 1;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < total; i++) {
    CHECK_OK(publish_seq(prod, i));
    bytes += 8;
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == total && get(&s.drops) == 0);
  CHECK(get(&s.ack_calls) <= get(&pr.batches)); /* coalesced, never per event */
  CHECK(get(&pr.events) == total && get(&pr.bytes) == bytes);
  CHECK(get(&pr.order_errors) == 0 && get(&pr.callback_errors) == 0);
  CHECK_OK(conveyor_producer_counts(prod, &counts));
  CHECK(counts.accepted == total && counts.acked == total && counts.dropped == 0 &&
        counts.in_flight == 0);
  CHECK_RESULT(conveyor_producer_counts(NULL, &counts), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_counts(prod, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  stats = stats_of(p);
  CHECK(stats != NULL);
  CHECK(strstr(stats, "\"acked\":1000") != NULL);
  CHECK(strstr(stats, "\"in_flight\":0") != NULL);
  CHECK(strstr(stats, "\"mode\":\"single\"") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  CHECK(sink_wait_freed(&s) && get(&s.frees) == 1);
  CHECK_RESULT(conveyor_pipeline_close_report(p, WAIT_MS, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_pipeline_close_report(p, WAIT_MS, &report));
  CHECK(report.accepted == total && report.acked == total && report.dropped == 0 &&
        report.drained == 1);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 1);
  CHECK(get(&s.late_callbacks) == 0);
}

static void test_stats_json_buffer(void) {
  probe pr;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  char small[8] = "xxxxxxx";
  char *big;
  size_t needed = 0, again = 0;
  probe_init(&pr);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK_RESULT(conveyor_pipeline_stats_json(NULL, small, sizeof small, &needed),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_stats_json(p, small, sizeof small, NULL),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_stats_json(p, small, sizeof small, &needed),
               CONVEYOR_ERR_BUFFER_TOO_SMALL);
  CHECK(needed > sizeof small);
  CHECK(strcmp(small, "xxxxxxx") == 0);
  CHECK_RESULT(conveyor_pipeline_stats_json(p, NULL, 100000, &needed), CONVEYOR_ERR_NULL_PARAMETER);
  big = (char *)malloc(needed + 1024);
  CHECK_OK(conveyor_pipeline_stats_json(p, big, needed + 1024, &again));
  CHECK(strlen(big) + 1 == again);
  CHECK(big[0] == '{' && big[again - 2] == '}');
  CHECK(strstr(big, "\"clients\":[{\"id\":1") != NULL);
  free(big);
  conveyor_pipeline_free(p);
}

static void test_publish_argument_errors(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL, *plain = NULL;
  conveyor_producer_config pc;
  conveyor_bytes batch[3];
  size_t accepted = 99, removed = 99;
  const uint8_t payload[3] = {1, 2, 3};
  probe_init(&pr);
  sink_init(&s);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  /* producer_new */
  pc = sink_config(&s, 0, 0);
  CHECK_RESULT(conveyor_producer_new(NULL, &pc, &prod), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_new(p, &pc, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  pc.struct_size = 4;
  CHECK_RESULT(conveyor_producer_new(p, &pc, &prod), CONVEYOR_ERR_INVALID_ARGUMENT);
  {
    uint32_t *just_size = (uint32_t *)malloc(sizeof *just_size);
    *just_size = sizeof *just_size;
    CHECK_RESULT(conveyor_producer_new(p, (const conveyor_producer_config *)(void *)just_size, &prod),
                 CONVEYOR_ERR_INVALID_ARGUMENT);
    free(just_size);
  }
  pc = sink_config(&s, 2, 0);
  CHECK_RESULT(conveyor_producer_new(p, &pc, &prod), CONVEYOR_ERR_INVALID_ARGUMENT);
  pc = sink_config(&s, 0, 7);
  CHECK_RESULT(conveyor_producer_new(p, &pc, &prod), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(prod == NULL && get(&s.frees) == 0); /* rejected: the caller keeps its userdata */
  CHECK_OK(conveyor_producer_new(p, NULL, &plain));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  /* publish */
  CHECK_RESULT(conveyor_producer_publish(NULL, payload, 3, 0), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_publish(prod, NULL, 3, 0), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_try_publish(NULL, payload, 3), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_try_publish(prod, NULL, 1), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_producer_publish(prod, NULL, 0, 0)); /* an empty event */
  CHECK_OK(conveyor_producer_try_publish(prod, payload, 3));
  CHECK_OK(conveyor_producer_publish(plain, payload, 3, UINT64_MAX));
  /* publish_batch */
  batch[0].data = payload;
  batch[0].len = 3;
  batch[1].data = NULL;
  batch[1].len = 2;
  batch[2].data = payload;
  batch[2].len = 1;
  CHECK_RESULT(conveyor_producer_publish_batch(NULL, batch, 3, 0, &accepted),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_publish_batch(prod, batch, 3, 0, NULL), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_publish_batch(prod, NULL, 3, 0, &accepted),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(accepted == 0);
  accepted = 99;
  CHECK_RESULT(conveyor_producer_publish_batch(prod, batch, 3, 0, &accepted),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(accepted == 0);
  accepted = 99;
  CHECK_OK(conveyor_producer_publish_batch(prod, NULL, 0, 0, &accepted));
  CHECK(accepted == 0);
  batch[1].data = payload;
  CHECK_OK(conveyor_producer_publish_batch(prod, batch, 3, UINT64_MAX, &accepted));
  CHECK(accepted == 3);
  CHECK_RESULT(conveyor_producer_cancel(NULL, &removed), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  /* 1 empty + 1 + 3 from prod, 1 from plain; the failed batches accepted nothing. */
  CHECK(get(&s.acks) == 5);
  CHECK(get(&pr.events) == 6);
  CHECK(get(&pr.bytes) == 0 + 3 + 3 + 3 + 2 + 1);
  CHECK_OK(conveyor_producer_cancel(plain, NULL));
  CHECK_RESULT(conveyor_producer_publish(plain, payload, 1, 0), CONVEYOR_ERR_CANCELLED);
  conveyor_producer_free(plain);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&s.frees) == 1 && get(&pr.frees) == 1);
}

static void test_calls_after_close(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL, *late = NULL;
  conveyor_producer_config pc;
  conveyor_close_report first, second;
  conveyor_client_vtable vt;
  conveyor_bytes one;
  client *extra;
  size_t accepted = 7;
  uint64_t id = 0;
  char *stats;
  const uint8_t payload[1] = {42};
  probe_init(&pr);
  sink_init(&s);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_config_set(cfg, "mode", "loadbalance"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  CHECK_OK(conveyor_producer_publish(prod, payload, 1, 0));
  CHECK_OK(conveyor_pipeline_close_report(p, WAIT_MS, &first));
  CHECK(first.accepted == 1 && first.acked == 1 && first.drained == 1);
  CHECK(get(&pr.frees) == 1); /* close frees the clients */
  CHECK_RESULT(conveyor_producer_publish(prod, payload, 1, UINT64_MAX), CONVEYOR_ERR_CLOSED);
  CHECK_RESULT(conveyor_producer_try_publish(prod, payload, 1), CONVEYOR_ERR_CLOSED);
  one.data = payload;
  one.len = 1;
  CHECK_RESULT(conveyor_producer_publish_batch(prod, &one, 1, 0, &accepted), CONVEYOR_ERR_CLOSED);
  CHECK(accepted == 0);
  CHECK_RESULT(conveyor_producer_new(p, &pc, &late), CONVEYOR_ERR_CLOSED);
  CHECK(late == NULL);
  CHECK_RESULT(conveyor_pipeline_flush(p, 0), CONVEYOR_ERR_CLOSED);
  CHECK_OK(conveyor_pipeline_close(p, 0)); /* closing twice is fine */
  CHECK_OK(conveyor_pipeline_close_report(p, 0, &second));
  CHECK(second.accepted == first.accepted && second.acked == first.acked &&
        second.drained == first.drained);
  extra = client_new(&pr);
  vt = vtable_for(extra);
  CHECK_RESULT(conveyor_pipeline_add_client(p, &vt, &id), CONVEYOR_ERR_CLOSED);
  CHECK(get(&pr.frees) == 1); /* refused: still ours */
  client_free(extra);
  CHECK_RESULT(conveyor_pipeline_remove_client(p, 1), CONVEYOR_ERR_CLOSED);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"state\":\"stopped\"") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&s.frees) == 1 && get(&s.acks) == 1);
}

static void test_full_and_timeout(void) {
  probe pr;
  sink s;
  gate g;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  conveyor_result r = CONVEYOR_OK;
  uint64_t accepted = 0;
  probe_init(&pr);
  sink_init(&s);
  gate_init(&g);
  c = client_new(&pr);
  c->gate = &g;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "queue.events", "4"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  while (accepted < 100) {
    r = conveyor_producer_try_publish(prod, (const uint8_t *)&accepted, sizeof accepted);
    if (r != CONVEYOR_OK) {
      break;
    }
    accepted++;
  }
  /* Taken events still hold their queue slot: exactly the bound was accepted. */
  CHECK_RESULT(r, CONVEYOR_ERR_FULL);
  CHECK(accepted == 4);
  CHECK_RESULT(conveyor_producer_publish(prod, (const uint8_t *)&accepted, 8, 20),
               CONVEYOR_ERR_TIMEOUT);
  CHECK_RESULT(conveyor_producer_publish(prod, (const uint8_t *)&accepted, 8, 0),
               CONVEYOR_ERR_TIMEOUT);
  CHECK_RESULT(conveyor_pipeline_flush(p, 20), CONVEYOR_ERR_TIMEOUT);
  gate_open(&g);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 4 && get(&pr.events) == 4);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  gate_destroy(&g);
}

static void test_publish_batch_partial(void) {
  probe pr;
  sink s;
  gate g;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_bytes batch[5];
  uint64_t seqs[5] = {0, 1, 2, 3, 4};
  size_t i, accepted = 0;
  client *c;
  probe_init(&pr);
  sink_init(&s);
  gate_init(&g);
  c = client_new(&pr);
  c->gate = &g;
  c->check_order = 1;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "queue.events", "3"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 5; i++) {
    batch[i].data = (const uint8_t *)&seqs[i];
    batch[i].len = sizeof seqs[i];
  }
  CHECK_OK(conveyor_producer_publish_batch(prod, batch, 5, 30, &accepted));
  CHECK(accepted == 3); /* a prefix: the queue stayed full */
  gate_open(&g);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 3 && get(&pr.events) == 3 && get(&pr.order_errors) == 0);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  gate_destroy(&g);
}

/* Events laid end to end: delivered in order, a prefix when the queue stays full,
   and every argument error accepts nothing. */
static void test_publish_packed(void) {
  probe pr;
  sink s;
  gate g;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  uint64_t seqs[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  uint32_t lens[8];
  size_t i, accepted = 99;
  char message[256];
  client *c;
  probe_init(&pr);
  sink_init(&s);
  gate_init(&g);
  c = client_new(&pr);
  c->gate = &g;
  c->check_order = 1;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "queue.events", "5"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 8; i++) {
    lens[i] = sizeof seqs[i];
  }
  CHECK_RESULT(conveyor_producer_publish_packed(NULL, (const uint8_t *)seqs, sizeof seqs, lens, 8, 0, &accepted),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_publish_packed(prod, (const uint8_t *)seqs, sizeof seqs, lens, 8, 0, NULL),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_publish_packed(prod, NULL, sizeof seqs, lens, 8, 0, &accepted),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK(accepted == 0);
  CHECK_RESULT(conveyor_producer_publish_packed(prod, (const uint8_t *)seqs, sizeof seqs, NULL, 8, 0, &accepted),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_producer_publish_packed(prod, (const uint8_t *)seqs, sizeof seqs - 1, lens, 8, 0, &accepted),
               CONVEYOR_ERR_INVALID_ARGUMENT);
  conveyor_last_error(message, sizeof message);
  CHECK(strstr(message, "add up") != NULL);
  accepted = 99;
  CHECK_OK(conveyor_producer_publish_packed(prod, NULL, 0, NULL, 0, 0, &accepted));
  CHECK(accepted == 0);
  CHECK_OK(conveyor_producer_publish_packed(prod, (const uint8_t *)seqs, sizeof seqs, lens, 8, 30, &accepted));
  CHECK(accepted == 5); /* a prefix: the queue stayed full */
  gate_open(&g);
  CHECK_OK(conveyor_producer_publish_packed(prod, (const uint8_t *)&seqs[5], 3 * sizeof seqs[0], lens, 3,
                                            UINT64_MAX, &accepted));
  CHECK(accepted == 3);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 8 && get(&pr.events) == 8 && get(&pr.bytes) == sizeof seqs);
  CHECK(get(&pr.order_errors) == 0);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  gate_destroy(&g);
}

static void test_cancel_drop_on_cancel(void) {
  probe pr;
  sink s;
  gate g;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_counts counts;
  client *c;
  size_t removed = 0, again = 99;
  uint64_t i, expected_sum = 0;
  probe_init(&pr);
  sink_init(&s);
  gate_init(&g);
  c = client_new(&pr);
  c->gate = &g;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "bulk_max_size", "2"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 1);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 10; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK(gate_wait_entered(&g, 1)); /* the client holds the first batch (at most 2) */
  CHECK_OK(conveyor_producer_cancel(prod, &removed));
  CHECK(removed >= 8 && removed <= 10);
  CHECK_OK(conveyor_producer_cancel(prod, &again));
  CHECK(again == 0);
  CHECK_RESULT(publish_seq(prod, 99), CONVEYOR_ERR_CANCELLED);
  gate_open(&g);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  /* The removed ones are the newest: sequence numbers 10-removed .. 9. */
  for (i = 10 - removed; i < 10; i++) {
    expected_sum += i;
  }
  CHECK(get(&s.drops) == removed && get(&s.seq_sum) == expected_sum);
  CHECK(get(&s.acks) == 10 - removed);
  CHECK_OK(conveyor_producer_counts(prod, &counts));
  CHECK(counts.accepted == 10 && counts.acked + counts.dropped == 10 && counts.in_flight == 0);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  gate_destroy(&g);
}

static void test_pipeline_free_open_drops_and_reports(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  c = client_new(&pr);
  c->fail_connects = 1 << 30; /* never connects: events stay queued */
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "-1"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 1, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 1; i <= 10; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  conveyor_producer_free(prod);
  CHECK(get(&s.frees) == 0); /* its events are still in flight */
  conveyor_pipeline_free(p); /* open: closed with a zero timeout */
  CHECK(get(&s.drops) == 10 && get(&s.seq_sum) == 55 && get(&s.acks) == 0);
  CHECK(get(&s.frees) == 1 && get(&s.late_callbacks) == 0);
  CHECK(get(&pr.frees) == 1 && get(&pr.events) == 0);
}

static void test_producer_outlives_pipeline(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  probe_init(&pr);
  sink_init(&s);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  CHECK_OK(publish_seq(prod, 1));
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  conveyor_pipeline_free(p);
  CHECK_RESULT(publish_seq(prod, 2), CONVEYOR_ERR_CLOSED);
  CHECK(get(&s.frees) == 0);
  conveyor_producer_free(prod);
  CHECK(get(&s.frees) == 1 && get(&s.acks) == 1);
}

static void test_producer_freed_with_events_in_flight(void) {
  probe pr;
  sink s;
  gate g;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  gate_init(&g);
  c = client_new(&pr);
  c->gate = &g;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 100; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  conveyor_producer_free(prod);
  CHECK(get(&s.frees) == 0);
  gate_open(&g);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  /* Callbacks kept coming after the handle was freed; free_userdata came last. */
  CHECK(get(&s.acks) == 100);
  CHECK(sink_wait_freed(&s) && get(&s.late_callbacks) == 0);
  conveyor_pipeline_free(p);
  CHECK(get(&s.frees) == 1);
  gate_destroy(&g);
}

/* ================================================================ garbage from vtables */

static void test_out_of_range_status_is_a_failure(void) {
  probe pr;
  sink s;
  log_capture log;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  log_init(&log);
  c = client_new(&pr);
  c->bad_status = 7;
  c->bad_status_calls = 2;
  c->check_order = 1;
  log.needle = "publish callback: status 7 is not a CONVEYOR_PUBLISH_* value";
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set_logger(cfg, capture_log, &log));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 50; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  /* Not trusted (the client claimed all published): retried, then delivered in order. */
  CHECK(get(&s.acks) == 50 && get(&s.drops) == 0);
  CHECK(get(&pr.events) == 50 && get(&pr.order_errors) == 0);
  CHECK(get(&log.needle_hits) == 2);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  log_destroy(&log);
}

static void test_garbage_status_forever_drops_after_retries(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  char *stats;
  uint64_t i, sum = 0;
  probe_init(&pr);
  sink_init(&s);
  c = client_new(&pr);
  c->bad_status = 0xFFFFFFFFu;
  c->bad_status_calls = 1 << 30;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "1"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 20; i++) {
    CHECK_OK(publish_seq(prod, i));
    sum += i;
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 0 && get(&s.drops) == 20 && get(&s.seq_sum) == sum);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"dropped\":20") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
}

static void test_count_above_batch_is_a_failure(void) {
  probe pr;
  sink s;
  log_capture log;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  char *stats;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  log_init(&log);
  c = client_new(&pr);
  c->bad_count = 1;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set_logger(cfg, capture_log, &log));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 30; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 30 && get(&pr.events) == 30);
  CHECK(get(&log.errors) >= 1);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"invalid_results\":1") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  log_destroy(&log);
}

static void test_partial_publish_and_retry(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  c = client_new(&pr);
  c->max_per_call = 3;
  c->broken_calls = 2;
  c->check_order = 1;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 200; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  /* Prefixes are never re-sent: the client saw each event exactly once, in order. */
  CHECK(get(&s.acks) == 200 && get(&pr.events) == 200 && get(&pr.order_errors) == 0);
  CHECK(get(&pr.connects) >= 2); /* BROKEN closed and reconnected */
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
}

static void test_connect_failures_retry(void) {
  probe pr;
  sink s;
  log_capture log;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  char *stats;
  probe_init(&pr);
  sink_init(&s);
  log_init(&log);
  c = client_new(&pr);
  c->fail_connects = 3;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "-1"));
  CHECK_OK(conveyor_config_set_logger(cfg, capture_log, &log));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  CHECK_OK(publish_seq(prod, 1));
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 1 && get(&pr.connect_calls) == 4 && get(&pr.connects) == 1);
  CHECK(get(&log.warnings) >= 3);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"connect_failures\":3") != NULL);
  CHECK(strstr(stats, "connect callback returned 1") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  log_destroy(&log);
}

static void test_guaranteed_never_dropped(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  c = client_new(&pr);
  c->broken_calls = 6;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "0"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 1, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 40; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 40 && get(&s.drops) == 0);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
}

/* ================================================================ re-entrancy */

static void test_reentrant_publish_from_ack(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  probe_init(&pr);
  sink_init(&s);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_config_set(cfg, "queue.events", "16"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  s.producer = prod;
  s.pipeline = p;
  atomic_store(&s.target, 500);
  atomic_store(&s.published, 1);
  CHECK_OK(publish_seq(prod, 0));
  /* Each ACK callback publishes more (blocking) until 500: one flush sees them all,
   * since a callback's publishes are accepted before its round counts as reported. */
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.published) == 500);
  CHECK(get(&s.acks) == 500 && get(&pr.events) == 500);
  CHECK(get(&s.reentry_errors) == 0);
  s.producer = NULL;
  s.pipeline = NULL;
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&s.frees) == 1);
}

static void test_producer_freed_from_its_own_ack(void) {
  probe pr;
  sink s;
  gate g;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  gate_init(&g);
  c = client_new(&pr);
  c->gate = &g;
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_config_set(cfg, "bulk_max_size", "10"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 100; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  s.free_on_ack = prod; /* the dispatcher frees it from the first on_ack */
  gate_open(&g);
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  /* Its other events were still reported, then its userdata was freed, once. */
  CHECK(get(&s.acks) == 100);
  CHECK(sink_wait_freed(&s) && get(&s.late_callbacks) == 0);
  conveyor_pipeline_free(p);
  CHECK(get(&s.frees) == 1);
  gate_destroy(&g);
}

static void test_reentry_from_client_callback(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  client *c;
  probe_init(&pr);
  sink_init(&s);
  c = client_new(&pr);
  CHECK_OK(config_add(cfg, c));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  /* The pipeline owns `c` now but has not called it yet: no other thread reads these. */
  c->reenter = p;
  c->reenter_producer = prod;
  CHECK_OK(publish_seq(prod, 1));
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&pr.callback_errors) == 0);
  CHECK(get(&s.acks) == 2); /* the event and the one published from the callback */
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
}

/* ================================================================ async clients */

typedef struct publisher_arg {
  conveyor_producer *producer;
  uint64_t first, count;
  conveyor_result result;
} publisher_arg;

static void *publisher(void *arg) {
  publisher_arg *a = (publisher_arg *)arg;
  uint64_t i;
  a->result = CONVEYOR_OK;
  for (i = a->first; i < a->first + a->count && a->result == CONVEYOR_OK; i++) {
    a->result = publish_seq(a->producer, i);
  }
  return NULL;
}

static void test_async_completion_from_other_threads(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_client_vtable vt;
  pthread_t threads[4];
  publisher_arg args[4];
  uint64_t i, per = 2000;
  char *stats;
  probe_init(&pr);
  sink_init(&s);
  for (i = 0; i < 2; i++) {
    vt = async_vtable_for(async_client_new(&pr, 5));
    CHECK_OK(conveyor_config_add_client(cfg, &vt));
  }
  CHECK_OK(conveyor_config_set(cfg, "pipelining", "4"));
  CHECK_OK(conveyor_config_set(cfg, "bulk_max_size", "64"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 4; i++) {
    args[i].producer = prod;
    args[i].first = i * per;
    args[i].count = per;
    CHECK(pthread_create(&threads[i], NULL, publisher, &args[i]) == 0);
  }
  for (i = 0; i < 4; i++) {
    pthread_join(threads[i], NULL);
    CHECK_OK(args[i].result);
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 4 * per && get(&s.drops) == 0);
  /* Every event reached a completer thread exactly once (prefixes are never re-sent). */
  CHECK(get(&pr.events) == 4 * per && get(&pr.bytes) == 4 * per * 8);
  CHECK(get(&pr.seq_sum) == (4 * per) * (4 * per - 1) / 2);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"mode\":\"loadbalance\"") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 2);
}

/* An async client completing inline, scripted per call. */
typedef struct inline_client {
  probe *probe;
  int double_done;                 /* complete, then complete again */
  int bad_status_calls;            /* complete with status 42 */
  int bad_count_calls;             /* complete claiming n + 3 published */
  int refuse_calls;                /* return "not taken" */
  int keep;                        /* never complete; keep the handles */
  conveyor_completion *kept[16];
  size_t kept_n;
  counter second_done_detected, garbage_detected;
} inline_client;

static uint32_t inline_publish(void *userdata, const conveyor_bytes *events, size_t n,
                               conveyor_completion *completion) {
  inline_client *c = (inline_client *)userdata;
  char msg[256];
  (void)events;
  add(&c->probe->calls, 1);
  if (c->refuse_calls > 0) {
    c->refuse_calls--;
    return 9;
  }
  if (c->keep) {
    if (c->kept_n < 16) {
      c->kept[c->kept_n++] = completion;
    }
    return 0;
  }
  if (c->bad_status_calls > 0) {
    c->bad_status_calls--;
    conveyor_completion_done(completion, n, 42);
    return 0;
  }
  if (c->bad_count_calls > 0) {
    c->bad_count_calls--;
    conveyor_completion_done(completion, n + 3, CONVEYOR_PUBLISH_OK);
    return 0;
  }
  add(&c->probe->events, n);
  conveyor_completion_done(completion, n, CONVEYOR_PUBLISH_OK);
  if (c->double_done) {
    c->double_done = 0;
    conveyor_completion_done(completion, n, CONVEYOR_PUBLISH_OK);
    conveyor_last_error(msg, sizeof msg);
    if (strstr(msg, "not pending") != NULL) {
      add(&c->second_done_detected, 1);
    }
    conveyor_completion_done((conveyor_completion *)(uintptr_t)0x1234, 1, CONVEYOR_PUBLISH_OK);
    conveyor_last_error(msg, sizeof msg);
    if (strstr(msg, "not pending") != NULL) {
      add(&c->garbage_detected, 1);
    }
  }
  return 0;
}

static void inline_free(void *userdata) {
  add(&((inline_client *)userdata)->probe->frees, 1);
}

static conveyor_client_vtable inline_vtable(inline_client *c) {
  conveyor_client_vtable vt;
  memset(&vt, 0, sizeof vt);
  vt.struct_size = (uint32_t)sizeof vt;
  vt.userdata = c;
  vt.publish_async = inline_publish;
  vt.free_userdata = inline_free;
  return vt;
}

static void test_async_misbehaviour(void) {
  probe pr;
  sink s;
  log_capture log;
  inline_client ic;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_client_vtable vt;
  char *stats;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  log_init(&log);
  memset(&ic, 0, sizeof ic);
  ic.probe = &pr;
  ic.double_done = 1;
  ic.bad_status_calls = 1;
  ic.bad_count_calls = 1;
  ic.refuse_calls = 2;
  log.needle = "conveyor_completion_done: status 42 is not a CONVEYOR_PUBLISH_* value";
  vt = inline_vtable(&ic);
  CHECK_OK(conveyor_config_add_client(cfg, &vt));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "-1"));
  CHECK_OK(conveyor_config_set_logger(cfg, capture_log, &log));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 25; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 25 && get(&s.drops) == 0 && get(&pr.events) == 25);
  CHECK(get(&log.needle_hits) == 1);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"invalid_results\":1") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  /* The second done runs after the first settled the batch, so flush may return before
   * the client's call does; freeing the pipeline joins the worker that runs it. */
  CHECK(get(&ic.second_done_detected) == 1 && get(&ic.garbage_detected) == 1);
  CHECK(get(&pr.frees) == 1);
  log_destroy(&log);
}

static void test_async_never_completed(void) {
  probe pr;
  sink s;
  inline_client ic;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_client_vtable vt;
  conveyor_close_report report;
  char msg[256];
  size_t i;
  probe_init(&pr);
  sink_init(&s);
  memset(&ic, 0, sizeof ic);
  ic.probe = &pr;
  ic.keep = 1;
  vt = inline_vtable(&ic);
  CHECK_OK(conveyor_config_add_client(cfg, &vt));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 10; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_close_report(p, 50, &report));
  CHECK(report.drained == 0 && report.dropped == 10 && report.acked == 0);
  CHECK(get(&s.drops) == 10 && get(&pr.frees) == 1);
  CHECK(ic.kept_n >= 1);
  /* The client is gone: its completions were voided, and completing them is harmless. */
  for (i = 0; i < ic.kept_n; i++) {
    conveyor_completion_done(ic.kept[i], 1, CONVEYOR_PUBLISH_OK);
    conveyor_last_error(msg, sizeof msg);
    CHECK(strstr(msg, "not pending") != NULL);
  }
  CHECK(get(&s.acks) == 0);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
}

/* ================================================================ runtime clients */

static void test_add_and_remove_clients(void) {
  probe first, second;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_client_vtable vt;
  client *extra;
  uint64_t id = 0, i;
  probe_init(&first);
  probe_init(&second);
  sink_init(&s);
  CHECK_OK(config_add(cfg, client_new(&first)));
  CHECK_OK(conveyor_config_set(cfg, "mode", "loadbalance"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  extra = client_new(&second);
  vt = vtable_for(extra);
  CHECK_RESULT(conveyor_pipeline_add_client(NULL, &vt, &id), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_add_client(p, NULL, &id), CONVEYOR_ERR_NULL_PARAMETER);
  vt.struct_size = 3;
  CHECK_RESULT(conveyor_pipeline_add_client(p, &vt, &id), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(get(&second.frees) == 0);
  vt = vtable_for(extra);
  CHECK_OK(conveyor_pipeline_add_client(p, &vt, &id));
  CHECK(id == 2);
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 300; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 300 && get(&first.events) + get(&second.events) == 300);
  CHECK_RESULT(conveyor_pipeline_remove_client(NULL, id), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_remove_client(p, 999), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_OK(conveyor_pipeline_remove_client(p, id));
  CHECK(get(&second.frees) == 1); /* freed before remove_client returned */
  CHECK_RESULT(conveyor_pipeline_remove_client(p, id), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_pipeline_remove_client(p, 1), CONVEYOR_ERR_INVALID_ARGUMENT); /* last */
  vt = vtable_for(client_new(&second));
  CHECK_OK(conveyor_pipeline_add_client(p, &vt, NULL)); /* the id is optional */
  for (i = 0; i < 50; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 350);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&first.frees) == 1 && get(&second.frees) == 2);
}

static void test_add_client_to_single_mode_is_refused(void) {
  probe pr;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_client_vtable vt;
  client *extra;
  uint64_t id = 77;
  probe_init(&pr);
  CHECK_OK(config_add(cfg, client_new(&pr)));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  extra = client_new(&pr);
  vt = vtable_for(extra);
  CHECK_RESULT(conveyor_pipeline_add_client(p, &vt, &id), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(id == 77 && get(&pr.frees) == 0);
  client_free(extra); /* refused: still ours */
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 2);
}

/* ================================================================ hosts and factories */

typedef struct factory_state {
  probe *probe;
  const char *fail_on;   /* host whose build fails */
  int invalid_vtable;    /* build vtables without publish */
  int broken_instances;  /* the first N clients built always fail */
  counter builds, zeroed_errors;
  pthread_mutex_t mu;
  char seen[256];
} factory_state;

static void factory_init(factory_state *f, probe *p) {
  memset(f, 0, sizeof *f);
  f->probe = p;
  pthread_mutex_init(&f->mu, NULL);
}

static uint32_t test_factory(void *userdata, const char *host, conveyor_client_vtable *out) {
  factory_state *f = (factory_state *)userdata;
  client *c;
  if (out->struct_size != sizeof *out || out->publish != NULL || out->userdata != NULL) {
    add(&f->zeroed_errors, 1);
  }
  pthread_mutex_lock(&f->mu);
  if (strlen(f->seen) + strlen(host) + 2 < sizeof f->seen) {
    strcat(f->seen, host);
    strcat(f->seen, ",");
  }
  pthread_mutex_unlock(&f->mu);
  if (f->fail_on != NULL && strcmp(host, f->fail_on) == 0) {
    return 3;
  }
  c = client_new(f->probe);
  if (get(&f->builds) < (uint64_t)f->broken_instances) {
    c->broken_calls = 1 << 30;
  }
  add(&f->builds, 1);
  add(&f->probe->builds, 1);
  *out = vtable_for(c);
  if (f->invalid_vtable) {
    out->publish = NULL;
  }
  return 0;
}

static void test_hosts_failover(void) {
  probe pr;
  sink s;
  factory_state f;
  const char *hosts[3] = {"alpha:1", "beta:2", "gamma:3"};
  const char *with_null[2] = {"alpha:1", NULL};
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  char *stats;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  factory_init(&f, &pr);
  CHECK_RESULT(conveyor_config_add_hosts(NULL, hosts, 3, test_factory, &f),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_add_hosts(cfg, NULL, 3, test_factory, &f),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_add_hosts(cfg, hosts, 0, test_factory, &f),
               CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(conveyor_config_add_hosts(cfg, hosts, 3, NULL, &f), CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_config_add_hosts(cfg, with_null, 2, test_factory, &f),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_OK(conveyor_config_add_hosts(cfg, hosts, 3, test_factory, &f));
  CHECK_OK(conveyor_config_set(cfg, "mode", "failover"));
  CHECK_OK(conveyor_config_set(cfg, "failover.policy", "ordered"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK(get(&f.builds) == 3 && get(&f.zeroed_errors) == 0);
  CHECK(strcmp(f.seen, "alpha:1,beta:2,gamma:3,") == 0);
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 100; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 100 && get(&pr.events) == 100);
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"host\":\"gamma:3\"") != NULL);
  CHECK(strstr(stats, "\"mode\":\"failover\"") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 3);
  pthread_mutex_destroy(&f.mu);
}

static void test_factory_failures(void) {
  probe pr, direct;
  factory_state f;
  const char *hosts[3] = {"a", "b", "c"};
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  probe_init(&pr);
  probe_init(&direct);
  factory_init(&f, &pr);
  f.fail_on = "c";
  CHECK_OK(config_add(cfg, client_new(&direct)));
  CHECK_OK(conveyor_config_add_hosts(cfg, hosts, 3, test_factory, &f));
  CHECK_RESULT(conveyor_pipeline_new(cfg, &p), CONVEYOR_ERR_CLIENT);
  /* The clients the factory did build were freed; the config's own client was not. */
  CHECK(get(&f.builds) == 2 && get(&pr.frees) == 2 && get(&direct.frees) == 0);
  /* An invalid vtable from a factory is freed at once and fails the build. */
  f.fail_on = NULL;
  f.invalid_vtable = 1;
  CHECK_RESULT(conveyor_pipeline_new(cfg, &p), CONVEYOR_ERR_CLIENT);
  CHECK(get(&f.builds) == 3 && get(&pr.frees) == 3);
  conveyor_config_free(cfg);
  CHECK(get(&direct.frees) == 1);
  pthread_mutex_destroy(&f.mu);
}

static void test_factory_rebuilds_after_error_threshold(void) {
  probe pr;
  sink s;
  factory_state f;
  const char *hosts[1] = {"flaky"};
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  char *stats;
  uint64_t i;
  probe_init(&pr);
  sink_init(&s);
  factory_init(&f, &pr);
  f.broken_instances = 1;
  CHECK_OK(conveyor_config_add_hosts(cfg, hosts, 1, test_factory, &f));
  CHECK_OK(conveyor_config_set(cfg, "error_threshold", "2"));
  CHECK_OK(conveyor_config_set(cfg, "max_retries", "-1"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 20; i++) {
    CHECK_OK(publish_seq(prod, i));
  }
  CHECK_OK(conveyor_pipeline_flush(p, WAIT_MS));
  CHECK(get(&s.acks) == 20 && get(&pr.events) == 20);
  CHECK(get(&f.builds) == 2);
  CHECK(get(&pr.frees) == 1); /* the broken instance, replaced */
  stats = stats_of(p);
  CHECK(stats != NULL && strstr(stats, "\"restarts\":1") != NULL);
  free(stats);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 2);
  pthread_mutex_destroy(&f.mu);
}

static void test_add_host_at_runtime(void) {
  probe pr;
  factory_state f;
  const char *hosts[1] = {"first"};
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  uint64_t id = 0;
  probe_init(&pr);
  factory_init(&f, &pr);
  CHECK_OK(conveyor_config_add_hosts(cfg, hosts, 1, test_factory, &f));
  CHECK_OK(conveyor_config_set(cfg, "mode", "loadbalance"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  CHECK_RESULT(conveyor_pipeline_add_host(NULL, "x", test_factory, &f, &id),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_add_host(p, NULL, test_factory, &f, &id),
               CONVEYOR_ERR_NULL_PARAMETER);
  CHECK_RESULT(conveyor_pipeline_add_host(p, "x", NULL, &f, &id), CONVEYOR_ERR_NULL_PARAMETER);
  f.fail_on = "bad";
  CHECK_RESULT(conveyor_pipeline_add_host(p, "bad", test_factory, &f, &id), CONVEYOR_ERR_CLIENT);
  CHECK_OK(conveyor_pipeline_add_host(p, "second", test_factory, &f, &id));
  CHECK(id == 2 && get(&f.builds) == 2);
  CHECK_OK(conveyor_pipeline_remove_client(p, id));
  CHECK(get(&pr.frees) == 1);
  conveyor_pipeline_free(p);
  CHECK(get(&pr.frees) == 2);
  pthread_mutex_destroy(&f.mu);
}

/* ================================================================ concurrency */

static void test_many_threads_many_clients(void) {
  probe pr;
  sink s;
  conveyor_config *cfg = fast_config();
  conveyor_pipeline *p = NULL;
  conveyor_producer *prod = NULL;
  conveyor_producer_config pc;
  conveyor_close_report report;
  pthread_t threads[4];
  publisher_arg args[4];
  uint64_t i, per = 3000;
  probe_init(&pr);
  sink_init(&s);
  for (i = 0; i < 3; i++) {
    client *c = client_new(&pr);
    c->max_per_call = 50;
    CHECK_OK(config_add(cfg, c));
  }
  CHECK_OK(conveyor_config_set(cfg, "queue.events", "256"));
  CHECK_OK(conveyor_pipeline_new(cfg, &p));
  pc = sink_config(&s, 0, 0);
  CHECK_OK(conveyor_producer_new(p, &pc, &prod));
  for (i = 0; i < 4; i++) {
    args[i].producer = prod;
    args[i].first = i * per;
    args[i].count = per;
    CHECK(pthread_create(&threads[i], NULL, publisher, &args[i]) == 0);
  }
  for (i = 0; i < 4; i++) {
    pthread_join(threads[i], NULL);
    CHECK_OK(args[i].result);
  }
  CHECK_OK(conveyor_pipeline_close_report(p, WAIT_MS, &report));
  CHECK(report.accepted == 4 * per && report.acked == 4 * per && report.drained == 1);
  CHECK(get(&s.acks) == 4 * per && get(&pr.events) == 4 * per);
  CHECK(get(&pr.frees) == 3 && get(&pr.callback_errors) == 0);
  conveyor_producer_free(prod);
  conveyor_pipeline_free(p);
}

int main(void) {
  static const harness_test tests[] = {
      HARNESS_TEST(test_version),
      HARNESS_TEST(test_result_str),
      HARNESS_TEST(test_last_error),
      HARNESS_TEST(test_last_error_is_per_thread),
      HARNESS_TEST(test_free_null),
      HARNESS_TEST(test_config_set_get),
      HARNESS_TEST(test_config_rejects_bad_values),
      HARNESS_TEST(test_add_client_rejects_bad_vtables),
      HARNESS_TEST(test_logger),
      HARNESS_TEST(test_pipeline_new_failure_keeps_config),
      HARNESS_TEST(test_publish_flush_ack),
      HARNESS_TEST(test_stats_json_buffer),
      HARNESS_TEST(test_publish_argument_errors),
      HARNESS_TEST(test_calls_after_close),
      HARNESS_TEST(test_full_and_timeout),
      HARNESS_TEST(test_publish_batch_partial),
      HARNESS_TEST(test_publish_packed),
      HARNESS_TEST(test_cancel_drop_on_cancel),
      HARNESS_TEST(test_pipeline_free_open_drops_and_reports),
      HARNESS_TEST(test_producer_outlives_pipeline),
      HARNESS_TEST(test_producer_freed_with_events_in_flight),
      HARNESS_TEST(test_out_of_range_status_is_a_failure),
      HARNESS_TEST(test_garbage_status_forever_drops_after_retries),
      HARNESS_TEST(test_count_above_batch_is_a_failure),
      HARNESS_TEST(test_partial_publish_and_retry),
      HARNESS_TEST(test_connect_failures_retry),
      HARNESS_TEST(test_guaranteed_never_dropped),
      HARNESS_TEST(test_reentrant_publish_from_ack),
      HARNESS_TEST(test_producer_freed_from_its_own_ack),
      HARNESS_TEST(test_reentry_from_client_callback),
      HARNESS_TEST(test_async_completion_from_other_threads),
      HARNESS_TEST(test_async_misbehaviour),
      HARNESS_TEST(test_async_never_completed),
      HARNESS_TEST(test_add_and_remove_clients),
      HARNESS_TEST(test_add_client_to_single_mode_is_refused),
      HARNESS_TEST(test_hosts_failover),
      HARNESS_TEST(test_factory_failures),
      HARNESS_TEST(test_factory_rebuilds_after_error_threshold),
      HARNESS_TEST(test_add_host_at_runtime),
      HARNESS_TEST(test_many_threads_many_clients),
  };
  return harness_run("capi", tests, sizeof tests / sizeof tests[0]);
}
