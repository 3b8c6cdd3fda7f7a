/* A tiny test harness for the C and C++ tests: CHECK macros that fail the current
 * test and return, a runner that prints one line per failure and closes with
 * "<suite>: N passed, M failed", and an exit status of 1 when anything failed. */
#ifndef CONVEYOR_TEST_HARNESS_H
#define CONVEYOR_TEST_HARNESS_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conveyor.h"

typedef void (*harness_fn)(void);

typedef struct harness_test {
  const char *name;
  harness_fn fn;
} harness_test;

#define HARNESS_TEST(fn) {#fn, fn}

static int harness_current_failed;

static inline void harness_fail(const char *file, int line, const char *what) {
  char detail[512];
  conveyor_last_error(detail, sizeof detail);
  fprintf(stderr, "  FAILED %s:%d: %s\n    (last conveyor error on this thread: %s)\n", file, line,
          what, detail);
  harness_current_failed = 1;
}

static inline void harness_fail_result(const char *file, int line, const char *what, conveyor_result got,
                                conveyor_result want) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s returned %u (%s), expected %u (%s)", what, (unsigned)got,
           conveyor_result_str(got), (unsigned)want, conveyor_result_str(want));
  harness_fail(file, line, msg);
}

/* Fails the current test (and returns from it) unless `cond` holds. */
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      harness_fail(__FILE__, __LINE__, #cond);                                                     \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

/* Fails the current test unless `expr` returns the status `want`. */
#define CHECK_RESULT(expr, want)                                                                   \
  do {                                                                                             \
    conveyor_result harness_got_ = (expr);                                                         \
    if (harness_got_ != (conveyor_result)(want)) {                                                 \
      harness_fail_result(__FILE__, __LINE__, #expr, harness_got_, (conveyor_result)(want));       \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

#define CHECK_OK(expr) CHECK_RESULT(expr, CONVEYOR_OK)

/* Runs every test, prints the closing line and returns the process exit status. */
static inline int harness_run(const char *suite, const harness_test *tests, size_t n) {
  size_t passed = 0, failed = 0, i;
  const char *only = getenv("CONVEYOR_TEST_ONLY");
  for (i = 0; i < n; i++) {
    if (only != NULL && strcmp(only, tests[i].name) != 0) {
      continue;
    }
    harness_current_failed = 0;
    fprintf(stderr, "%s: %s\n", suite, tests[i].name);
    tests[i].fn();
    if (harness_current_failed) {
      failed++;
      fprintf(stderr, "%s: %s FAILED\n", suite, tests[i].name);
    } else {
      passed++;
    }
  }
  fflush(stderr);
  printf("%s: %zu passed, %zu failed\n", suite, passed, failed);
  fflush(stdout);
  return failed == 0 && passed > 0 ? 0 : 1;
}

#endif /* CONVEYOR_TEST_HARNESS_H */
