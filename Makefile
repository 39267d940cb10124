# The two commands of the quick start (`make demo`, `make test`) do all the
# set-up themselves: deploy/install-deps.sh installs what is missing.
BAZEL ?= bazel
BAZEL_FLAGS ?=

.PHONY: deps build demo test check-clang test-asan bench format clean

deps:
	@./deploy/install-deps.sh

build: deps
	$(BAZEL) build $(BAZEL_FLAGS) //...

demo: build
	./bazel-bin/client/demo/demo

test: deps
	./.ci/test-summary.sh $(BAZEL) test $(BAZEL_FLAGS) //...

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
