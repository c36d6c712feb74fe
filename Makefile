# The README's commands. Everything real lives in CMakeLists.txt and tools/.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build test demo asan test-asan soak bench fuzz clean install

all: build

deps:
	@tools/deps.sh

# Keyed on the generated Makefile, not CMakeCache.txt: a configure that
# fails (a package missing) leaves a cache behind but no Makefile, and the
# next make must configure again. deps is order-only so that make -j does
# not configure while the packages are still being installed.
$(BUILD)/Makefile: | deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# Starts a private nats-server on a free loopback port for the whole run,
# then gives each fuzzer a bounded, seeded run over its corpus.
test: build
	tools/with-nats.sh ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	FUZZ_RUNS=1 tools/fuzz.sh $(FUZZ_BUILD)

FUZZ_SECONDS ?= 60
FUZZ_BUILD ?= build-fuzz

fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) tools/fuzz.sh $(FUZZ_BUILD)

demo: build
	$(BUILD)/hemera examples/demo.lua

# The whole suite under AddressSanitizer and UBSan.
asan test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DHM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  tools/with-nats.sh ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# 100,000 requests natively (RSS flat) and under valgrind memcheck.
soak: build
	tools/with-nats.sh tools/soak.sh $(BUILD)

bench: build
	tools/with-nats.sh bench/run.sh $(BUILD)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
