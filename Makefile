# conveyor — entry points. `make demo` runs the main job, `make test` every test.
# Language parts add their targets from mk/*.mk through the *_TARGETS lists.

CARGO ?= cargo
PREFIX ?= /usr/local
SOAK_SEEDS ?= 2000
export SOAK_SEEDS

TEST_TARGETS := test-rust
DEMO_TARGETS := demo-rust
BENCH_TARGETS := bench-rust
INSTALL_TARGETS :=

.PHONY: all build test demo bench install lint test-rust demo-rust bench-rust deps-rust

all: build

build:
	$(CARGO) build --release

deps-rust:
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy 2>/dev/null || true

lint: deps-rust
	$(CARGO) clippy --all-targets -- -D warnings
	@! grep -rn "unsafe" src --include=*.rs | grep -v "^src/capi/" | grep -v "forbid(unsafe" \
	  || { echo "unsafe outside src/capi/"; exit 1; }

test-rust: deps-rust lint
	$(CARGO) test --release

demo-rust:
	$(CARGO) run --release --example demo

bench-rust:
	$(CARGO) bench --bench pipeline

-include mk/*.mk

test: $(TEST_TARGETS)
	@echo "make test: all suites passed ($(TEST_TARGETS))"

demo: $(DEMO_TARGETS)

bench: $(BENCH_TARGETS)

install: $(INSTALL_TARGETS)
