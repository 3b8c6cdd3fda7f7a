# Go binding (bindings/go, a cgo package over the C ABI): the tests under the race
# detector and GOEXPERIMENT=cgocheck2, then without them, vet and gofmt, the
# pkg-config route against an installed copy, the demo (examples/go) and the H6
# benchmark (bindings/go/bench, its own module: go-events comes from the Go proxy).
#
#   make test-go                     every Go check (part of `make test`)
#   make demo-go                     examples/go and examples/go/fanout (part of `make demo`)
#   make bench-go BENCH_GO_ARGS=-quick   the H6 lines (part of `make bench`)
#   make go-header                   copy include/conveyor.h into the module after an ABI change

GO ?= go
GO_DIR := bindings/go
GO_BUILD := build/go
GO_PREFIX := $(abspath $(GO_BUILD)/prefix)
BENCH_GO_ARGS ?=
# No VCS stamping: builds must not depend on how git sees this checkout.
GO_RUN := GOFLAGS=-buildvcs=false $(GO)
# Go does not hash files named in #cgo LDFLAGS, so a rebuilt libconveyor.a would not
# reach binaries (and test results) it has cached. The archive's digest, set as an
# otherwise unused linker variable, makes every link depend on the archive.
GO_RELINK = -ldflags=-X=main.libconveyorDigest=$$(sha256sum $(CURDIR)/target/release/libconveyor.a | cut -c1-16)

TEST_TARGETS += test-go
DEMO_TARGETS += demo-go
BENCH_TARGETS += bench-go

.PHONY: go-deps go-header go-header-check go-lint go-test-pkgconfig test-go demo-go bench-go

go-deps:
	@command -v $(GO) >/dev/null || { echo "go is required (https://go.dev/dl)"; exit 1; }

go-header:
	cp include/conveyor.h $(GO_DIR)/conveyor.h

# The module carries its own copy of the header (a downloaded module cannot reach
# ../../include); it must be the one the library was built with.
go-header-check:
	@cmp -s include/conveyor.h $(GO_DIR)/conveyor.h || \
	  { echo "$(GO_DIR)/conveyor.h differs from include/conveyor.h: run 'make go-header'"; exit 1; }

go-lint: go-deps go-header-check
	@unformatted=$$(cd $(GO_DIR) && $$($(GO) env GOROOT)/bin/gofmt -l . ../../examples/go); \
	  test -z "$$unformatted" || { echo "gofmt needed: $$unformatted"; exit 1; }
	cd $(GO_DIR) && $(GO_RUN) vet ./...
	cd $(GO_DIR)/bench && $(GO_RUN) vet ./...
	cd examples/go && $(GO_RUN) vet ./...

# libconveyor installed into a fresh prefix, then the demo and the examples built with
# -tags conveyor_pkgconfig: linked to the shared library pkg-config names.
go-test-pkgconfig: go-deps go-header-check c-deps c-lib
	rm -rf $(GO_PREFIX)
	$(MAKE) --no-print-directory -o c-lib install-c PREFIX=$(GO_PREFIX)
	cd examples/go && PKG_CONFIG_PATH=$(GO_PREFIX)/lib/pkgconfig CGO_LDFLAGS=-Wl,-rpath,$(GO_PREFIX)/lib \
	  $(GO_RUN) build -tags conveyor_pkgconfig -o $(abspath $(GO_BUILD))/demo-pkgconfig .
	readelf -d $(GO_BUILD)/demo-pkgconfig | grep -q 'NEEDED.*libconveyor\.so\.$(C_SOVERSION)'
	$(GO_BUILD)/demo-pkgconfig -events 20000 | grep -q 'linked shared (pkg-config)'
	cd $(GO_DIR) && PKG_CONFIG_PATH=$(GO_PREFIX)/lib/pkgconfig CGO_LDFLAGS=-Wl,-rpath,$(GO_PREFIX)/lib \
	  $(GO_RUN) test -tags conveyor_pkgconfig -count=1 -run Example .
	@echo "go-test-pkgconfig: built and ran against $(GO_PREFIX) through pkg-config"

test-go: go-lint c-lib go-test-pkgconfig
	cd $(GO_DIR) && GOEXPERIMENT=cgocheck2 $(GO_RUN) test -race -count=1 -timeout 600s $(GO_RELINK) ./...
	cd $(GO_DIR) && $(GO_RUN) test -count=1 -timeout 600s $(GO_RELINK) ./...
	cd $(GO_DIR)/bench && $(GO_RUN) test -count=1 -run '^$$' -bench . -benchtime 20000x $(GO_RELINK) .
	@echo "test-go: all Go checks passed"

demo-go: go-deps go-header-check c-lib
	cd examples/go && $(GO_RUN) run $(GO_RELINK) .
	cd examples/go && $(GO_RUN) run $(GO_RELINK) ./fanout

bench-go: go-deps go-header-check c-lib
	cd $(GO_DIR)/bench && $(GO_RUN) run $(GO_RELINK) . $(BENCH_GO_ARGS)
