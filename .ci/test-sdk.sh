#!/usr/bin/env bash
# The installed SDK's stage of `make test`, outside `bazel test` (Bazel cannot
# run inside a Bazel test): installs hostmesh into a temp prefix with
# `make install`, builds examples/sdk against it with plain g++ and
# pkg-config and with CMake's find_package(hostmesh), and runs each build
# against a local host (no HOSTMESH_* variable, PATH without the prefix:
# the library finds PREFIX/bin/hostd itself). Each step is one test case;
# a step whose prerequisite failed fails too ("not run").
#
# Closes with "sdk stage: N passed, N failed, N skipped" and, with
# HOSTMESH_TEST_SUMMARY set, appends "N passed, N failed, N skipped" to it
# (as .ci/test-summary.sh does). Exits non-zero if anything failed.
#
# Every example run is its own session (setsid): whatever is left in it
# afterwards (a hostd, a procd) is killed by pid and fails the run. The
# temp dir (prefix, builds) and the hosts' log dir are removed at exit.
#
# BAZEL and BAZEL_FLAGS are passed on to `make install`; HOSTMESH_SDK_KEEP=1
# keeps the temp dir (its path is printed).
set -uo pipefail
set +m
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

passed=0 failed=0 skipped=0
work=$(mktemp -d /tmp/hostmesh-sdk-test.XXXXXX) || exit 1
prefix="$work/prefix"
logs_dirs=()
cleanup() {
  local dir
  for dir in "${logs_dirs[@]}"; do
    case "$dir" in /tmp/hostmesh-*) rm -rf -- "$dir" ;; esac
  done
  if [ "${HOSTMESH_SDK_KEEP:-0}" = 1 ]; then
    echo "sdk: kept $work"
  else
    rm -rf -- "$work"
  fi
}
trap cleanup EXIT

pass() { echo "sdk: PASS $1"; passed=$((passed + 1)); }
fail() {  # name log reason
  echo "sdk: FAIL $1: $3"
  if [ -n "$2" ] && [ -s "$2" ]; then
    echo "---- last lines of $(basename "$2") ----"
    tail -n 25 "$2"
    echo "----"
  fi
  failed=$((failed + 1))
}

# Runs "$@" as its own session, at most 120 s, output to $log; then kills
# (by pid) whatever is left in the session and fails if anything was.
run_session() {  # log command...
  local log=$1 sid rc left
  shift
  setsid --wait timeout 120 "$@" >"$log" 2>&1 </dev/null &
  sid=$!
  wait "$sid"
  rc=$?
  left=$(ps -e -o pid=,sid= | awk -v s="$sid" '$2 == s && $1 != s {print $1}')
  if [ -n "$left" ]; then
    {
      echo "left running after the example exited (killed):"
      for pid in $left; do
        echo "  $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
      done
    } >>"$log"
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null
    [ "$rc" -eq 0 ] && rc=99
  fi
  # The hosts' dir, if the example could not remove it.
  local dir
  dir=$(sed -nE 's/^logs in (\/tmp\/hostmesh-[A-Za-z0-9]+)$/\1/p' "$log" | head -1)
  [ -n "$dir" ] && logs_dirs+=("$dir")
  return "$rc"
}

# Runs an example binary and checks what it says.
run_example() {  # name binary
  local name=$1 bin=$2 log="$work/$1.log"
  if [ ! -x "$bin" ] || [ ! -x "$(dirname "$bin")/my_procd" ]; then
    fail "$name" "" "not run: the build failed"
    return
  fi
  # No HOSTMESH_* variable and no prefix on the PATH: hostd must be found
  # through the library's own location.
  local rc=0
  run_session "$log" env -u HOSTMESH_HOSTD -u HOSTMESH_PROCD \
    PATH=/usr/bin:/bin "$bin" "$(dirname "$bin")/my_procd" || rc=$?
  if [ "$rc" -eq 99 ]; then
    fail "$name" "$log" "it left processes running"
  elif [ "$rc" -eq 124 ]; then
    fail "$name" "$log" "timed out after 120 s"
  elif [ "$rc" -ne 0 ]; then
    fail "$name" "$log" "exited with status $rc"
  elif ! grep -q "^sdk example: ok$" "$log"; then
    fail "$name" "$log" "did not say \"sdk example: ok\""
  elif ! grep -q "runs $prefix/bin/procd$" "$log"; then
    fail "$name" "$log" "its procs did not run the installed $prefix/bin/procd"
  elif ! grep -q "^shout: HELLO from rank 1$" "$log"; then
    fail "$name" "$log" "no answer from my_procd's sdk.shout actor at rank 1"
  else
    pass "$name"
  fi
}

# 1. make install into the temp prefix, twice (idempotent).
log="$work/install.log"
installed=0
if make --no-print-directory install PREFIX="$prefix" \
  BAZEL="${BAZEL:-bazel}" BAZEL_FLAGS="${BAZEL_FLAGS:-}" >"$log" 2>&1 &&
  make --no-print-directory install PREFIX="$prefix" \
    BAZEL="${BAZEL:-bazel}" BAZEL_FLAGS="${BAZEL_FLAGS:-}" >>"$log" 2>&1; then
  missing=""
  for f in bin/hostd bin/procd bin/meshctl lib/libhostmesh.so \
    lib/libhostmesh_procd.so lib/pkgconfig/hostmesh.pc \
    lib/pkgconfig/hostmesh-procd.pc lib/cmake/hostmesh/hostmeshConfig.cmake \
    include/hostmesh/hostmesh.h include/hostmesh/status.h \
    include/hostmesh/procd.h include/proto/actors.pb.h; do
    [ -e "$prefix/$f" ] || missing+=" $f"
  done
  if [ -n "$missing" ]; then
    fail "make install puts the SDK into a prefix" "$log" "missing:$missing"
  else
    installed=1
    pass "make install puts the SDK into a prefix"
  fi
else
  fail "make install puts the SDK into a prefix" "$log" "make install failed"
fi

# 2. plain g++ with pkg-config.
pc_dir="$work/pkg-config"
log="$work/build-pkg-config.log"
if [ "$installed" -ne 1 ]; then
  fail "the example builds with g++ and pkg-config" "" "not run: install failed"
else
  mkdir -p "$pc_dir"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  # shellcheck disable=SC2046  # pkg-config's flags are words, as in the README
  if (
    set -e
    cd examples/sdk
    g++ -std=c++20 -Wall -Werror app.cc -o "$pc_dir/app" \
      $(pkg-config --cflags --libs hostmesh)
    g++ -std=c++20 -Wall -Werror my_procd.cc -o "$pc_dir/my_procd" \
      $(pkg-config --cflags --libs hostmesh-procd)
  ) >"$log" 2>&1; then
    pass "the example builds with g++ and pkg-config"
  else
    fail "the example builds with g++ and pkg-config" "$log" "the build failed"
  fi
  unset PKG_CONFIG_PATH
fi
run_example "the pkg-config build runs against a local host" "$pc_dir/app"

# 3. CMake with find_package(hostmesh).
cm_dir="$work/cmake"
log="$work/build-cmake.log"
if [ "$installed" -ne 1 ]; then
  fail "the example builds with CMake find_package" "" "not run: install failed"
elif (
  set -e
  cmake -S examples/sdk -B "$cm_dir" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_CXX_FLAGS="-Wall -Werror"
  cmake --build "$cm_dir" -j 2
) >"$log" 2>&1; then
  pass "the example builds with CMake find_package"
else
  fail "the example builds with CMake find_package" "$log" "the build failed"
fi
run_example "the CMake build runs against a local host" "$cm_dir/app"

cd "$root" || exit 1
echo "sdk stage: ${passed} passed, ${failed} failed, ${skipped} skipped"
if [ -n "${HOSTMESH_TEST_SUMMARY:-}" ]; then
  echo "${passed} passed, ${failed} failed, ${skipped} skipped" >>"$HOSTMESH_TEST_SUMMARY"
fi
[ "$failed" -eq 0 ]
