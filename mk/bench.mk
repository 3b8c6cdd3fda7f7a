# The benchmark report: `make bench` runs every suite (Rust, then Python, then Go,
# then any other registered suite) and then `bench-report`, which turns their
# results into build/bench/results.md (machine, date, table) and
# build/bench/throughput.png (events/s of each scenario next to its reference).
#
#   make bench                 every suite, then the report
#   make bench-chart           the report again from the last results
#   make bench-doc             the last report and chart into BENCHMARKS.md and
#                              benches/throughput.png (to commit)
#
# Each suite writes its results as JSON lines to $(BENCH_RESULTS_DIR)/<suite>.jsonl
# (format: benches/report.py); the report reads the suites that are registered.

BENCH_DIR := build/bench
export BENCH_RESULTS_DIR := $(abspath $(BENCH_DIR))
# The report's matplotlib lives in the Python binding's virtual environment (mk/python.mk).
BENCH_VENV := build/python-venv
BENCH_CHART_DEPS := $(BENCH_VENV)/.bench-chart-deps

BENCH_TARGETS += bench-report

.PHONY: bench-report bench-chart bench-doc

# Suite names in report order: bench-rust, bench-python, bench-go first, then the rest.
bench_suites = $(patsubst bench-%,%,$(filter bench-rust,$(BENCH_TARGETS)) $(filter bench-python,$(BENCH_TARGETS)) \
  $(filter bench-go,$(BENCH_TARGETS)) $(filter-out bench-rust bench-python bench-go bench-report,$(BENCH_TARGETS)))

# Expanded when make runs, after every fragment has registered its suite, so that
# the report comes last and the suites run in report order.
.SECONDEXPANSION:
bench-report: $$(addprefix bench-,$$(bench_suites)) bench-chart

bench-chart: $(BENCH_CHART_DEPS)
	$(BENCH_VENV)/bin/python benches/report.py --results $(BENCH_DIR) $(bench_suites)

bench-doc:
	python3 benches/report.py --results $(BENCH_DIR) --update-doc BENCHMARKS.md

$(BENCH_CHART_DEPS):
	$(MAKE) --no-print-directory python-venv
	$(BENCH_VENV)/bin/pip install -q "matplotlib>=3.7,<4"
	touch $@
