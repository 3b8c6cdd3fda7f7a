/* conveyor from C: publish events through two hosts in failover mode. The first host
 * refuses connections, so conveyor moves to the second; in-memory clients print what
 * they deliver. Build: cc failover.c $(pkg-config --cflags --libs conveyor) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <conveyor.h>

/* One endpoint per host, built by the factory below; conveyor owns it once built. */
typedef struct endpoint {
  char host[64];
  int up;
  unsigned long delivered;
} endpoint;

static uint32_t endpoint_connect(void *userdata, uint64_t timeout_ms) {
  endpoint *e = (endpoint *)userdata;
  (void)timeout_ms;
  if (!e->up) {
    return 1; /* refused: conveyor backs off and fails over */
  }
  printf("connected to %s\n", e->host);
  return 0;
}

/* Runs on a conveyor worker thread; the views are valid during the call only. */
static uint32_t endpoint_publish(void *userdata, const conveyor_bytes *events, size_t n,
                                 size_t *published) {
  endpoint *e = (endpoint *)userdata;
  size_t i;
  for (i = 0; i < n; i++) {
    printf("%s <- %.*s\n", e->host, (int)events[i].len, (const char *)events[i].data);
  }
  e->delivered += n;
  *published = n;
  return CONVEYOR_PUBLISH_OK;
}

static void endpoint_free(void *userdata) {
  endpoint *e = (endpoint *)userdata;
  printf("%s delivered %lu events\n", e->host, e->delivered);
  free(e);
}

static uint32_t make_endpoint(void *userdata, const char *host, conveyor_client_vtable *out) {
  endpoint *e = (endpoint *)calloc(1, sizeof *e);
  (void)userdata;
  if (e == NULL) {
    return 1;
  }
  snprintf(e->host, sizeof e->host, "%s", host);
  e->up = strncmp(host, "down.", 5) != 0;
  out->userdata = e;
  out->connect = endpoint_connect;
  out->publish = endpoint_publish;
  out->free_userdata = endpoint_free;
  return 0;
}

typedef struct outcomes {
  uint64_t acked, dropped;
} outcomes;

/* Producer callbacks run on the pipeline's dispatcher thread, once per ACK round. */
static void on_ack(void *userdata, uint64_t count) {
  ((outcomes *)userdata)->acked += count;
}

static void on_drop(void *userdata, const conveyor_bytes *events, size_t n) {
  (void)events;
  ((outcomes *)userdata)->dropped += n;
}

static void log_line(void *userdata, uint32_t level, const char *message, size_t len) {
  (void)userdata;
  (void)len;
  fprintf(stderr, "[conveyor %s] %s\n", level <= CONVEYOR_LOG_WARN ? "warn" : "info", message);
}

static void check(conveyor_result r, const char *what) {
  char detail[256];
  if (r == CONVEYOR_OK) {
    return;
  }
  conveyor_last_error(detail, sizeof detail);
  fprintf(stderr, "%s: %s\n  %s\n", what, conveyor_result_str(r), detail);
  exit(1);
}

int main(void) {
  const char *hosts[] = {"down.example:5044", "up.example:5044"};
  conveyor_config *config = conveyor_config_new();
  conveyor_pipeline *pipeline = NULL;
  conveyor_producer *producer = NULL;
  conveyor_producer_config pc;
  outcomes seen = {0, 0};
  char event[32], stats[4096];
  size_t needed = 0;
  int i;

  printf("conveyor %s\n", conveyor_version());
  check(conveyor_config_set(config, "mode", "failover"), "mode");
  check(conveyor_config_set(config, "failover.policy", "ordered"), "failover.policy");
  check(conveyor_config_set(config, "backoff.init", "10ms"), "backoff.init");
  check(conveyor_config_set(config, "max_retries", "-1"), "max_retries");
  check(conveyor_config_add_hosts(config, hosts, 2, make_endpoint, NULL), "add_hosts");
  check(conveyor_config_set_logger(config, log_line, NULL), "set_logger");
  check(conveyor_pipeline_new(config, &pipeline), "pipeline_new"); /* owns config now */

  memset(&pc, 0, sizeof pc);
  pc.struct_size = sizeof pc;
  pc.userdata = &seen;
  pc.on_ack = on_ack;
  pc.on_drop = on_drop;
  check(conveyor_producer_new(pipeline, &pc, &producer), "producer_new");
  for (i = 0; i < 10; i++) {
    int len = snprintf(event, sizeof event, "event %d", i);
    check(conveyor_producer_publish(producer, (const uint8_t *)event, (size_t)len, 1000), "publish");
  }
  check(conveyor_pipeline_flush(pipeline, 5000), "flush");
  printf("acked %llu, dropped %llu\n", (unsigned long long)seen.acked,
         (unsigned long long)seen.dropped);
  check(conveyor_pipeline_stats_json(pipeline, stats, sizeof stats, &needed), "stats");
  printf("stats: %s\n", stats);

  conveyor_producer_free(producer);
  check(conveyor_pipeline_close(pipeline, 5000), "close");
  conveyor_pipeline_free(pipeline);
  return seen.acked == 10 ? 0 : 1;
}
