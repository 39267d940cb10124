#!/usr/bin/env bash
# Runs the given `bazel test` command and closes with "N passed, N failed",
# counted per test case from each test's own Catch2 summary in its log
# (Bazel's summary line is not used). A test binary that failed to build,
# crashed or timed out before Catch2 summed up counts as one failure.
# Exits non-zero if anything failed.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
testlogs=$(bazel info bazel-testlogs 2>/dev/null || echo bazel-testlogs)

passed=0
failed=0
while read -r target status; do
  path=${target#//}
  test_log="$testlogs/${path/://}/test.log"
  summary=$(grep -E '^(All tests passed|test cases:)' "$test_log" 2>/dev/null | tail -1)
  if [[ $summary =~ ^All\ tests\ passed.*\ in\ ([0-9]+)\ test\ case ]]; then
    p=${BASH_REMATCH[1]}; f=0
  elif [[ $summary =~ test\ cases:\ *[0-9]+\ \|\ *([0-9]+)\ passed\ \|\ *([0-9]+)\ failed ]]; then
    p=${BASH_REMATCH[1]}; f=${BASH_REMATCH[2]}
  elif [[ $summary =~ test\ cases:\ *([0-9]+)\ \|\ *([0-9]+)\ failed ]]; then
    p=0; f=${BASH_REMATCH[2]}
  elif [ "$status" = PASSED ]; then
    p=1; f=0
  else
    p=0; f=1
  fi
  # A binary Bazel did not pass must count as failed even if its cases did.
  if [ "$status" != PASSED ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
done < <(grep -E '^//[^ ]+ +' "$log" |
         sed -E 's/^(\/\/[^ ]+) +(\(cached\) )?(PASSED|FAILED TO BUILD|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE).*/\1 \3/' |
         grep -E ' (PASSED|FAILED TO BUILD|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)$' |
         sed -E 's/ FAILED TO BUILD$/ FAILED_TO_BUILD/; s/ NO STATUS$/ NO_STATUS/')

if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1  # the build itself broke before any test ran
fi
echo "${passed} passed, ${failed} failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
