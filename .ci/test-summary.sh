#!/usr/bin/env bash
# Runs the given `bazel test` command and closes with
# "N passed, N failed, N skipped", counted per test case from each test's own
# Catch2 summary in its log (Bazel's summary line is not used). A test binary
# that failed to build, crashed or timed out before Catch2 summed up counts as
# one failure.
#
# Skips: Catch2 v2 has no SKIP. A test case that cannot set up what it needs
# uses HOSTMESH_SKIP(reason) (lib/testing/skip.h), which prints
# "HOSTMESH-SKIP: [<test case>] <reason>" and returns, so Catch2 counts it as
# passed; each test case named in such a line moves from passed to skipped.
# Under CI (CI set to anything but "", "0" or "false"; .bazelrc passes it to
# tests with --test_env=CI) HOSTMESH_SKIP fails instead, and a skip line that
# still shows up counts as failed.
#
# Exits non-zero if anything failed. With HOSTMESH_TEST_SUMMARY set (.ci/run),
# the closing line is also appended to that file.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# Where the test logs are: `info` with the same Bazel, startup options (an
# --output_base) and --config / --compilation_mode as the test command.
info=()
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = test ]; then
    info=("${@:1:i-1}" info)
    for arg in "${@:i+1}"; do
      case "$arg" in
        --) break ;;
        --config=* | --compilation_mode=* | -c=*) info+=("$arg") ;;
      esac
    done
    break
  fi
done
testlogs=""
[ ${#info[@]} -gt 0 ] && testlogs=$("${info[@]}" bazel-testlogs 2>/dev/null)
[ -n "$testlogs" ] || testlogs=bazel-testlogs

in_ci=0
case "${CI:-}" in "" | 0 | false) ;; *) in_ci=1 ;; esac

passed=0
failed=0
skipped=0
skip_lines=()
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
  # Skipped test cases passed as far as Catch2 knows; one per test case name.
  s=0
  if [ -f "$test_log" ]; then
    s=$(sed -nE 's/.*HOSTMESH-SKIP: \[([^]]*)\].*/\1/p' "$test_log" | sort -u | wc -l)
    while IFS= read -r line; do
      skip_lines+=("$target:${line#*HOSTMESH-SKIP:}")
    done < <(grep -E 'HOSTMESH-SKIP: \[' "$test_log")
  fi
  if [ "$s" -gt "$p" ]; then s=$p; fi
  p=$((p - s))
  if [ "$in_ci" = 1 ]; then f=$((f + s)); s=0; fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done < <(grep -E '^//[^ ]+ +' "$log" |
         sed -E 's/^(\/\/[^ ]+) +(\(cached\) )?(PASSED|FAILED TO BUILD|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE).*/\1 \3/' |
         grep -E ' (PASSED|FAILED TO BUILD|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)$' |
         sed -E 's/ FAILED TO BUILD$/ FAILED_TO_BUILD/; s/ NO STATUS$/ NO_STATUS/')

if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1  # the build itself broke before any test ran
fi
if [ ${#skip_lines[@]} -gt 0 ]; then
  if [ "$in_ci" = 1 ]; then
    echo "skipped under CI (counted as failed):"
  else
    echo "skipped:"
  fi
  printf '  %s\n' "${skip_lines[@]}"
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped" |
  tee -a ${HOSTMESH_TEST_SUMMARY:+"$HOSTMESH_TEST_SUMMARY"}
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
