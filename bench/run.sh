#!/usr/bin/env bash
# `make bench`: every benchmark, each figure beside a floor measured in the
# same run (bench/floors/). Prints one table to stdout (id, figure, value,
# unit, floor, ratio, goal, met?) and writes the rows as a JSON list to
# $BENCH_OUT (default: bench-results.json in the project root).
#
# The bench binaries append their rows to one rows file (bench/report.h);
# bench_table merges them. What the binaries and the daemons they start log
# goes to a temp dir, never to the table; it is removed unless a bench
# reported a problem (then its path is printed). Exits 1 if one did.
#
# MESH_BENCH_ARGS, FAILURE_BENCH_ARGS and SLURM_BENCH_ARGS pass flags to
# mesh_bench, failure_bench and slurm_bench (e.g. MESH_BENCH_ARGS="--rounds
# 3").
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${BENCH_OUT:-$PWD/bench-results.json}
BIN=./bazel-bin/bench
T=$(mktemp -d /tmp/hostmesh-bench-run-XXXXXX)
ROWS="$T/rows.jsonl"
: >"$ROWS"
status=0
began=$SECONDS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

run() {
  local name=$1
  shift
  echo "bench: running $name ..." >&2
  if ! "$BIN/$name" --rows "$ROWS" "$@" 2>"$T/$name.log"; then
    echo "bench: $name reported a problem (log: $T/$name.log)" >&2
    status=1
  fi
}

# shellcheck disable=SC2086 # the *_ARGS are word lists
run mesh_bench ${MESH_BENCH_ARGS:-}
# shellcheck disable=SC2086
run failure_bench --rounds 20 ${FAILURE_BENCH_ARGS:-}
# shellcheck disable=SC2086
run slurm_bench ${SLURM_BENCH_ARGS:-}

# The load the run had to share the machine with: others' work inflates
# every figure and floor alike, but not their ratios as much.
echo "hostmesh bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores," \
  "$((SECONDS - began)) s; load average at start $LOAD0, at end" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
if ! "$BIN/bench_table" --out "$OUT" "$ROWS"; then
  status=1
fi
echo "ratio: the figure in times its floor's cost (rates: floor / figure);" \
  "JSON: $OUT"
if [ "$status" -eq 0 ]; then
  rm -rf "$T"
else
  echo "bench: logs kept in $T" >&2
fi
exit "$status"
