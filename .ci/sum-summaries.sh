#!/usr/bin/env bash
# Sums the "N passed, N failed, N skipped" lines in FILE (one per stage of
# `make test`: the Bazel tests, the SDK stage) into the closing line, with
# one more failure per stage (of EXPECTED) that wrote none. With
# HOSTMESH_TEST_SUMMARY set (.ci/run), the total is appended to it.
# Exits non-zero if anything failed.
# Usage: .ci/sum-summaries.sh FILE EXPECTED
set -uo pipefail
if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: .ci/sum-summaries.sh FILE EXPECTED" >&2
  exit 2
fi
passed=0 failed=0 skipped=0 lines=0
while read -r line; do
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
    skipped=$((skipped + BASH_REMATCH[3]))
    lines=$((lines + 1))
  fi
done <"$1"
if [ "$lines" -lt "$2" ]; then failed=$((failed + $2 - lines)); fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped" |
  tee -a ${HOSTMESH_TEST_SUMMARY:+"$HOSTMESH_TEST_SUMMARY"}
[ "$failed" -eq 0 ]
