# The two commands of the quick start (`make demo`, `make test`) do all the
# set-up themselves: deploy/install-deps.sh installs what is missing.
BAZEL ?= bazel
BAZEL_FLAGS ?=

.PHONY: deps build demo test test-sdk install check-clang test-asan bench format clean

deps:
	@./deploy/install-deps.sh

build: deps
	$(BAZEL) build $(BAZEL_FLAGS) //...

demo: build
	./bazel-bin/client/demo/demo

# The Bazel tests, then the installed SDK's stage (test-sdk: Bazel cannot
# run inside a Bazel test); both counted in the closing line.
test: deps
	@stages=$$(mktemp); rc=0; \
	HOSTMESH_TEST_SUMMARY=$$stages ./.ci/test-summary.sh $(BAZEL) test $(BAZEL_FLAGS) //... || rc=1; \
	HOSTMESH_TEST_SUMMARY=$$stages BAZEL="$(BAZEL)" BAZEL_FLAGS="$(BAZEL_FLAGS)" ./.ci/test-sdk.sh || rc=1; \
	./.ci/sum-summaries.sh $$stages 2 || rc=1; rm -f $$stages; exit $$rc

# The C++ SDK (README "Use it from your own build"): hostd, procd, meshctl
# into $(PREFIX)/bin; libhostmesh.so, libhostmesh_procd.so, hostmesh.pc,
# hostmesh-procd.pc and the CMake package into $(PREFIX)/lib; the public
# headers into $(PREFIX)/include. DESTDIR stages it elsewhere.
PREFIX ?= /usr/local
DESTDIR ?=
SDK_TARGETS = //deploy/sdk:all //hostd //procd //meshctl //proto:all //python:site //python:procd_py
install: deps
	$(BAZEL) build $(BAZEL_FLAGS) $(SDK_TARGETS)
	./deploy/install-sdk.sh --prefix "$(PREFIX)" --destdir "$(DESTDIR)" \
	  --bazel-bin "$$($(BAZEL) info $(BAZEL_FLAGS) bazel-bin)"

# The SDK stage of `make test` alone: installs into a temp prefix, builds
# examples/sdk with pkg-config and with CMake, runs both on a local host.
test-sdk: deps
	BAZEL="$(BAZEL)" BAZEL_FLAGS="$(BAZEL_FLAGS)" ./.ci/test-sdk.sh

# The checks (README "Checks") build in their own output bases (one pair per
# checkout, as Bazel's own), so they never evict the main build's cache.
# There, the main build's bazel-* symlinks are ordinary folders that //...
# would walk into (and a pattern like -//bazel-x/... walks them too), so the
# targets are every top-level package folder's, spelled out.
CHECKS_BASE ?= $(HOME)/.cache/hostmesh/$(shell printf %s '$(CURDIR)' | md5sum | cut -c1-12)
CHECK_DIRS = $(filter-out bazel-%,$(patsubst %/,%,$(wildcard */)))
CHECK_TARGETS = //:all $(foreach d,$(CHECK_DIRS),$(if $(shell find $(d) \
  -name BUILD.bazel -o -name BUILD | head -1),//$(d)/...))

# clang's -Wthread-safety over everything (.bazelrc: build:clang).
check-clang: deps
	$(BAZEL) --output_base=$(CHECKS_BASE)/clang build --config=clang $(BAZEL_FLAGS) -- $(CHECK_TARGETS)

# Every test under ASan + UBSan + LSan (.bazelrc: build:asan), same closing line
# as `make test`.
test-asan: deps
	./.ci/test-summary.sh $(BAZEL) --output_base=$(CHECKS_BASE)/asan test --config=asan $(BAZEL_FLAGS) -- $(CHECK_TARGETS)

# Builds only what the benchmarks run; prints one table, writes
# $BENCH_OUT (default bench-results.json) as JSON.
bench: deps
	@$(BAZEL) build $(BAZEL_FLAGS) //bench/...
	@./bench/run.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	$(BAZEL) clean
