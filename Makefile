# The two commands of the quick start (`make demo`, `make test`) do all the
# set-up themselves: deploy/install-deps.sh installs what is missing.
BAZEL ?= bazel
BAZEL_FLAGS ?=

.PHONY: deps build demo test bench format clean

deps:
	@./deploy/install-deps.sh

build: deps
	$(BAZEL) build $(BAZEL_FLAGS) //...

demo: build
	./bazel-bin/client/demo/demo

test: deps
	./.ci/test-summary.sh $(BAZEL) test $(BAZEL_FLAGS) //...

bench: build
	./bench/run.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	$(BAZEL) clean
