#!/usr/bin/env bash
# Runs a Python test file with Debian's interpreter (python3-protobuf, cpp
# backend; a python3 earlier on PATH may lack it) and the package as built:
# PYTHONPATH=<runfiles>/python/site, as a user sets it to bazel-bin/python/site.
set -euo pipefail
root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:-hostmesh}"
export PYTHONPATH="$root/python/site:$root/python/testdata${PYTHONPATH:+:$PYTHONPATH}"
export HOSTMESH_TEST_ROOT="$root"

# Under --config=asan the extension needs the sanitizer runtimes, which must
# come first in an interpreter that is not instrumented: preload them. The
# interpreter does not free everything at exit, so it runs without the leak
# check; the test gives hostd and procd the options it got
# (HOSTMESH_CHILD_ASAN_OPTIONS), leak check included.
extension="$root/python/site/hostmesh/_hostmesh.so"
runtimes=$(ldd "$extension" | awk '/lib(asan|ubsan)\.so/ {print $3}' | paste -sd' ')
if [ -n "$runtimes" ]; then
  export LD_PRELOAD="$runtimes${LD_PRELOAD:+ $LD_PRELOAD}"
  export HOSTMESH_CHILD_ASAN_OPTIONS="${ASAN_OPTIONS:-}"
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi
exec /usr/bin/python3 -u "$root/$1" "${@:2}"
