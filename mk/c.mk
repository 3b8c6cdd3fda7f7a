# C ABI (src/capi): the generated header, the shared and static library, the C++
# wrapper, the C and C++ tests (test_capi, test_sinks, test_cpp: plain, ASan+UBSan,
# valgrind; dynamic and static linking; an install into a fresh prefix used through
# pkg-config) and the examples.
#
#   make header        regenerate include/conveyor.h after changing src/capi
#   make test-c        every C/C++ check (part of `make test`)
#   make demo-c        the C and C++ examples (part of `make demo`)
#   make install-c PREFIX=/opt/conveyor [DESTDIR=...]   (part of `make install`)

C_BUILD := build/c
C_STAGE := $(abspath $(C_BUILD)/stage)
C_PREFIX_TEST := $(abspath $(C_BUILD)/prefix)
C_VERSION := $(shell sed -n 's/^version = "\([^"]*\)"/\1/p' Cargo.toml | head -n 1)
C_MAJOR := $(word 1,$(subst ., ,$(C_VERSION)))
C_MINOR := $(word 2,$(subst ., ,$(C_VERSION)))
# Matches build.rs: 0.MINOR before 1.0, then MAJOR.
C_SOVERSION := $(if $(filter 0,$(C_MAJOR)),0.$(C_MINOR),$(C_MAJOR))
# What a static link of libconveyor.a needs (`rustc --print native-static-libs`). The
# static test links with exactly this list, so it fails if the list goes stale; keep
# docs/c-api.md in step.
C_STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
C_WARN := -Wall -Wextra -Werror -pedantic
C_STD := -std=c11
CXX_STD := -std=c++17
C_SANITIZE := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
C_INCLUDES := -I$(C_STAGE)/include -Itests/c
C_DYNAMIC := -L$(C_STAGE)/lib -lconveyor -lpthread -Wl,-rpath,$(C_STAGE)/lib
C_VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect
# Bounds every test run: a hang fails instead of blocking CI.
C_RUN := timeout 600

TEST_TARGETS += test-c
DEMO_TARGETS += demo-c
INSTALL_TARGETS += install-c

.PHONY: c-deps c-lib header c-stage test-c c-abi c-test-plain c-test-static c-test-sanitize \
  c-test-valgrind c-test-install demo-c install-c

# valgrind, pkg-config and a C++ compiler, from apt when missing (CI runs as root).
c-deps:
	@missing=""; \
	command -v valgrind >/dev/null || missing="$$missing valgrind"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	command -v $(CXX) >/dev/null || missing="$$missing g++"; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "c-deps: please install:$$missing"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# The libraries. Fails when include/conveyor.h differs from what cbindgen generates.
c-lib: deps-rust
	$(CARGO) build --release --features generate-header

header: deps-rust
	CONVEYOR_UPDATE_HEADER=1 $(CARGO) build --release --features generate-header

# $(call c-install,DIR,PREFIX): the libraries, headers and conveyor.pc in DIR, for a
# library that will live in PREFIX (they differ only with DESTDIR).
define c-install
	install -d $(1)/lib/pkgconfig $(1)/include
	install -m 0755 target/release/libconveyor.so $(1)/lib/libconveyor.so.$(C_VERSION)
	ln -sfn libconveyor.so.$(C_VERSION) $(1)/lib/libconveyor.so.$(C_SOVERSION)
	ln -sfn libconveyor.so.$(C_SOVERSION) $(1)/lib/libconveyor.so
	install -m 0644 target/release/libconveyor.a $(1)/lib/libconveyor.a
	install -m 0644 include/conveyor.h bindings/cpp/conveyor.hpp $(1)/include/
	sed -e 's|@PREFIX@|$(2)|' -e 's|@VERSION@|$(C_VERSION)|' -e 's|@LIBS_PRIVATE@|$(C_STATIC_LIBS)|' \
	  conveyor.pc.in > $(1)/lib/pkgconfig/conveyor.pc
endef

install-c: c-lib
	$(call c-install,$(DESTDIR)$(abspath $(PREFIX)),$(abspath $(PREFIX)))

# An install under build/ that the tests build against.
c-stage: c-lib
	rm -rf $(C_STAGE)
	$(call c-install,$(C_STAGE),$(C_STAGE))

test-c: c-abi c-test-plain c-test-static c-test-sanitize c-test-valgrind c-test-install
	@echo "test-c: all C and C++ suites passed"

# Exports match the header, names are prefixed, the SONAME is set, and the headers
# compile alone as C11 and C++17.
c-abi: c-stage
	tests/c/check_abi.sh $(C_STAGE)/lib/libconveyor.so include/conveyor.h libconveyor.so.$(C_SOVERSION)
	$(CC) $(C_STD) $(C_WARN) -fsyntax-only -x c $(C_STAGE)/include/conveyor.h
	$(CXX) $(CXX_STD) $(C_WARN) -fsyntax-only -x c++ $(C_STAGE)/include/conveyor.h
	$(CXX) $(CXX_STD) $(C_WARN) -fsyntax-only -x c++ $(C_STAGE)/include/conveyor.hpp

$(C_BUILD)/test_capi $(C_BUILD)/test_capi_static $(C_BUILD)/test_capi_asan: tests/c/test_capi.c \
  tests/c/harness.h tests/c/support.h c-stage
$(C_BUILD)/test_cpp $(C_BUILD)/test_cpp_asan: tests/c/test_cpp.cpp tests/c/harness.h c-stage
$(C_BUILD)/test_sinks $(C_BUILD)/test_sinks_asan: tests/c/test_sinks.c tests/c/harness.h tests/c/support.h \
  c-stage

$(C_BUILD)/test_capi:
	$(CC) $(C_STD) $(C_WARN) -g $(C_INCLUDES) tests/c/test_capi.c -o $@ $(C_DYNAMIC)

# libconveyor.a by path, with exactly the documented native libraries.
$(C_BUILD)/test_capi_static:
	$(CC) $(C_STD) $(C_WARN) -g $(C_INCLUDES) tests/c/test_capi.c -o $@ $(C_STAGE)/lib/libconveyor.a \
	  $(C_STATIC_LIBS)

$(C_BUILD)/test_capi_asan:
	$(CC) $(C_STD) $(C_WARN) -g $(C_SANITIZE) $(C_INCLUDES) tests/c/test_capi.c -o $@ $(C_DYNAMIC)

$(C_BUILD)/test_sinks:
	$(CC) $(C_STD) $(C_WARN) -g $(C_INCLUDES) tests/c/test_sinks.c -o $@ $(C_DYNAMIC)

$(C_BUILD)/test_sinks_asan:
	$(CC) $(C_STD) $(C_WARN) -g $(C_SANITIZE) $(C_INCLUDES) tests/c/test_sinks.c -o $@ $(C_DYNAMIC)

$(C_BUILD)/test_cpp:
	$(CXX) $(CXX_STD) $(C_WARN) -g $(C_INCLUDES) tests/c/test_cpp.cpp -o $@ $(C_DYNAMIC)

$(C_BUILD)/test_cpp_asan:
	$(CXX) $(CXX_STD) $(C_WARN) -g $(C_SANITIZE) $(C_INCLUDES) tests/c/test_cpp.cpp -o $@ $(C_DYNAMIC)

c-test-plain: $(C_BUILD)/test_capi $(C_BUILD)/test_cpp $(C_BUILD)/test_sinks
	$(C_RUN) $(C_BUILD)/test_capi
	$(C_RUN) $(C_BUILD)/test_cpp
	$(C_RUN) $(C_BUILD)/test_sinks

c-test-static: $(C_BUILD)/test_capi_static
	@! readelf -d $< | grep -q 'libconveyor' || { echo "$< links libconveyor dynamically"; exit 1; }
	$(C_RUN) $<

c-test-sanitize: $(C_BUILD)/test_capi_asan $(C_BUILD)/test_cpp_asan $(C_BUILD)/test_sinks_asan
	@nm $(C_BUILD)/test_capi_asan | grep -q __asan_init || { echo "ASan is not linked in"; exit 1; }
	$(C_RUN) $(C_BUILD)/test_capi_asan
	$(C_RUN) $(C_BUILD)/test_cpp_asan
	$(C_RUN) $(C_BUILD)/test_sinks_asan

c-test-valgrind: c-deps $(C_BUILD)/test_capi $(C_BUILD)/test_cpp $(C_BUILD)/test_sinks
	$(C_RUN) $(C_VALGRIND) $(C_BUILD)/test_capi
	$(C_RUN) $(C_VALGRIND) $(C_BUILD)/test_cpp
	$(C_RUN) $(C_VALGRIND) $(C_BUILD)/test_sinks

# `make install` into a fresh prefix, then the examples built only through pkg-config.
c-test-install: c-deps c-lib
	rm -rf $(C_PREFIX_TEST)
	$(MAKE) --no-print-directory install-c PREFIX=$(C_PREFIX_TEST)
	test -L $(C_PREFIX_TEST)/lib/libconveyor.so -a -f $(C_PREFIX_TEST)/lib/libconveyor.a
	PKG_CONFIG_PATH=$(C_PREFIX_TEST)/lib/pkgconfig; export PKG_CONFIG_PATH; \
	  test "$$(pkg-config --modversion conveyor)" = "$(C_VERSION)" && \
	  pkg-config --static --libs conveyor | grep -q -- '-ldl' && \
	  $(CC) $(C_STD) $(C_WARN) examples/c/failover.c -o $(C_BUILD)/failover_pkgconfig \
	    $$(pkg-config --cflags --libs conveyor) -Wl,-rpath,$$(pkg-config --variable=libdir conveyor) && \
	  $(CC) $(C_STD) $(C_WARN) examples/c/fanout.c -o $(C_BUILD)/fanout_pkgconfig \
	    $$(pkg-config --cflags --libs conveyor) -Wl,-rpath,$$(pkg-config --variable=libdir conveyor) && \
	  $(CXX) $(CXX_STD) $(C_WARN) examples/cpp/loadbalance.cpp -o $(C_BUILD)/loadbalance_pkgconfig \
	    $$(pkg-config --cflags --libs conveyor) -lpthread -Wl,-rpath,$$(pkg-config --variable=libdir conveyor)
	readelf -d $(C_BUILD)/failover_pkgconfig | grep -q 'NEEDED.*libconveyor.so.$(C_SOVERSION)'
	$(C_RUN) $(C_BUILD)/failover_pkgconfig >/dev/null 2>&1
	$(C_RUN) $(C_BUILD)/fanout_pkgconfig >/dev/null
	$(C_RUN) $(C_BUILD)/loadbalance_pkgconfig >/dev/null
	@echo "c-test-install: installed into $(C_PREFIX_TEST) and built the examples with pkg-config"

demo-c: c-stage
	$(CC) $(C_STD) $(C_WARN) $(C_INCLUDES) examples/c/failover.c -o $(C_BUILD)/failover $(C_DYNAMIC)
	$(CC) $(C_STD) $(C_WARN) $(C_INCLUDES) examples/c/fanout.c -o $(C_BUILD)/fanout $(C_DYNAMIC)
	$(CXX) $(CXX_STD) $(C_WARN) $(C_INCLUDES) examples/cpp/loadbalance.cpp -o $(C_BUILD)/loadbalance $(C_DYNAMIC)
	$(C_BUILD)/failover
	$(C_BUILD)/fanout
	$(C_BUILD)/loadbalance
