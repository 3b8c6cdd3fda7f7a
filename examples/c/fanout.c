/* conveyor from C: one event stream fanned out to two outputs with sinks.
 *
 *   broadcaster ─┬─ queue sink ─ pipeline "search"  (loadbalance over search-1, search-2)
 *                └─ filter (errors only) ─ queue sink ─ pipeline "archive"
 *                                             (failover: archive-1 is down, archive-2 takes over)
 *
 * Each output is a pipeline over its own clients; the queue sinks isolate them, so a
 * slow or failing output never holds back the other. Every event each output accepted
 * ends acknowledged or reported dropped. Build: cc fanout.c $(pkg-config --cflags --libs conveyor) */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <conveyor.h>

#define EVENTS 20000

/* One endpoint per host, built by the factory; conveyor owns it once built. */
typedef struct endpoint {
  char host[32];
  int down;
  unsigned long received;
} endpoint;

static uint32_t endpoint_connect(void *userdata, uint64_t timeout_ms) {
  (void)timeout_ms;
  return ((endpoint *)userdata)->down ? 1 : 0; /* 1: refused, conveyor fails over */
}

static uint32_t endpoint_publish(void *userdata, const conveyor_bytes *events, size_t n,
                                 size_t *published) {
  (void)events;
  ((endpoint *)userdata)->received += n;
  *published = n;
  return CONVEYOR_PUBLISH_OK;
}

static void endpoint_free(void *userdata) {
  endpoint *e = (endpoint *)userdata;
  printf("  %-10s received %6lu events\n", e->host, e->received);
  free(e);
}

static uint32_t make_endpoint(void *userdata, const char *host, conveyor_client_vtable *out) {
  endpoint *e = (endpoint *)calloc(1, sizeof *e);
  (void)userdata;
  if (e == NULL) {
    return 1;
  }
  snprintf(e->host, sizeof e->host, "%s", host);
  e->down = strcmp(host, "archive-1") == 0;
  out->userdata = e;
  out->connect = endpoint_connect;
  out->publish = endpoint_publish;
  out->free_userdata = endpoint_free;
  return 0;
}

/* What one output's producer heard (callbacks run on its pipeline's dispatcher). */
typedef struct outcome {
  const char *name;
  atomic_uint_fast64_t acked, dropped;
} outcome;

static void on_ack(void *userdata, uint64_t count) {
  atomic_fetch_add(&((outcome *)userdata)->acked, count);
}

static void on_drop(void *userdata, const conveyor_bytes *events, size_t n) {
  (void)events;
  atomic_fetch_add(&((outcome *)userdata)->dropped, n);
}

/* An output: a pipeline over `n` hosts, as a sink behind a queue of its own. */
static conveyor_pipeline *output(const char *mode, const char *const *hosts, size_t n, outcome *o,
                                 conveyor_sink **queued) {
  conveyor_config *cfg = conveyor_config_new();
  conveyor_pipeline *p = NULL;
  conveyor_sink *as_sink = NULL;
  conveyor_producer_config pc = {sizeof pc, o, on_ack, on_drop, 0, 0, NULL};
  conveyor_config_set(cfg, "mode", mode);
  conveyor_config_set(cfg, "backoff.init", "10ms");
  conveyor_config_set(cfg, "backoff.max", "100ms");
  if (conveyor_config_add_hosts(cfg, hosts, n, make_endpoint, NULL) != CONVEYOR_OK ||
      conveyor_pipeline_new(cfg, &p) != CONVEYOR_OK) {
    conveyor_config_free(cfg);
    return NULL;
  }
  /* Writes wait for room in the pipeline; closing the sink closes the pipeline,
   * waiting up to 5 s for delivery. */
  if (conveyor_pipeline_as_sink_with(p, &pc, UINT64_MAX, 5000, &as_sink) != CONVEYOR_OK ||
      conveyor_queue_sink_new(as_sink, 4096, CONVEYOR_OVERFLOW_BLOCK, queued) != CONVEYOR_OK) {
    conveyor_sink_free(as_sink);
    conveyor_pipeline_free(p);
    return NULL;
  }
  conveyor_sink_free(as_sink); /* the queue sink holds it */
  return p;
}

static uint32_t is_error(void *userdata, const uint8_t *data, size_t len) {
  (void)userdata;
  return len >= 5 && memcmp(data, "error", 5) == 0;
}

int main(void) {
  static const char *const search_hosts[] = {"search-1", "search-2"};
  static const char *const archive_hosts[] = {"archive-1", "archive-2"};
  outcome search = {"search", 0, 0}, archive = {"archive", 0, 0};
  conveyor_sink *search_queue = NULL, *archive_queue = NULL, *errors_only = NULL, *fanout = NULL;
  conveyor_sink *members[2];
  conveyor_pipeline *search_p, *archive_p;
  char event[64], stats[4096];
  size_t needed;
  unsigned long errors = 0;
  int i, ok;

  search_p = output("loadbalance", search_hosts, 2, &search, &search_queue);
  archive_p = output("failover", archive_hosts, 2, &archive, &archive_queue);
  if (search_p == NULL || archive_p == NULL ||
      conveyor_filter_sink_new(archive_queue, is_error, NULL, &errors_only) != CONVEYOR_OK) {
    conveyor_last_error(event, sizeof event);
    fprintf(stderr, "setup failed: %s\n", event);
    return 1;
  }
  members[0] = search_queue;
  members[1] = errors_only;
  if (conveyor_broadcaster_new(members, 2, &fanout) != CONVEYOR_OK) {
    return 1;
  }

  for (i = 0; i < EVENTS; i++) {
    int len = snprintf(event, sizeof event, "%s event %05d", i % 10 == 0 ? "error" : "info", i);
    errors += i % 10 == 0;
    if (conveyor_sink_write(fanout, (const uint8_t *)event, (size_t)len) != CONVEYOR_OK) {
      return 1;
    }
  }
  if (conveyor_sink_stats_json(fanout, stats, sizeof stats, &needed) == CONVEYOR_OK) {
    printf("fanout: %d events written; the sinks' counters:\n  %s\n", EVENTS, stats);
  }

  /* Closing the broadcaster closes each branch in turn: the queues deliver what they
   * hold, then close their pipelines, which deliver, drop and report the rest. */
  printf("closing; clients report what they received:\n");
  conveyor_sink_close(fanout);
  printf("search:  %lu acked, %lu dropped of %d\n", (unsigned long)atomic_load(&search.acked),
         (unsigned long)atomic_load(&search.dropped), EVENTS);
  printf("archive: %lu acked, %lu dropped of %lu errors\n", (unsigned long)atomic_load(&archive.acked),
         (unsigned long)atomic_load(&archive.dropped), errors);
  ok = atomic_load(&search.acked) + atomic_load(&search.dropped) == EVENTS &&
       atomic_load(&archive.acked) + atomic_load(&archive.dropped) == errors;

  conveyor_sink_free(fanout);
  conveyor_sink_free(errors_only);
  conveyor_sink_free(search_queue);
  conveyor_sink_free(archive_queue);
  conveyor_pipeline_free(search_p);
  conveyor_pipeline_free(archive_p);
  printf("every event has exactly one outcome on each output: %s\n", ok ? "yes" : "NO");
  return ok ? 0 : 1;
}
