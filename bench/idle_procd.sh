#!/usr/bin/env bash
# One idle proc's footprint under a build: starts that build's hostd on
# loopback, spawns one proc with its meshctl, and prints the proc's RSS and
# PSS (kB) and thread count as one JSON line. Cleans up what it started.
# Usage: bench/idle_procd.sh BIN_DIR (holding hostd, procd, meshctl)
set -euo pipefail
B=$1
T=$(mktemp -d /tmp/hostmesh-idle-XXXXXX)
"$B/hostd" --listen 127.0.0.1:0 --state-dir "$T/state" --runtime-dir "$T/run" \
  >"$T/hostd.out" 2>"$T/hostd.err" &
HPID=$!
cleanup() {
  kill "$HPID" 2>/dev/null || true
  wait "$HPID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
for _ in $(seq 100); do
  grep -q "hostd listening on" "$T/hostd.out" 2>/dev/null && break
  sleep 0.1
done
ADDR=$(sed -n 's/^hostd listening on //p' "$T/hostd.out")
# A build with authentication lets its own user in with the runtime dir's
# admin token (meshctl reads the variable; older builds ignore it).
export HOSTMESH_TOKEN_FILE="$T/run/admin.token"
"$B/meshctl" --host "$ADDR" proc spawn idle >/dev/null
PID=$("$B/meshctl" --host "$ADDR" -o json proc get idle |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
sleep 1
RSS=$(awk '/^Rss:/{print $2}' "/proc/$PID/smaps_rollup")
PSS=$(awk '/^Pss:/{print $2}' "/proc/$PID/smaps_rollup")
THREADS=$(awk '/^Threads:/{print $2}' "/proc/$PID/status")
LISTEN=$(ls -l "/proc/$PID/fd" | grep -c socket || true)
echo "{\"rss_kb\": $RSS, \"pss_kb\": $PSS, \"threads\": $THREADS, \"sockets\": $LISTEN}"
"$B/meshctl" --host "$ADDR" host shutdown >/dev/null
wait "$HPID" || true
