#!/usr/bin/env bash
# `make bench`: every benchmark, each printed with its same-run baseline and
# the ratio. Sizes: 16 and 64 procs on the embedded local host.
set -euo pipefail
cd "$(dirname "$0")/.."
for procs in 16 64; do
  echo "== ${procs} procs =="
  ./bazel-bin/bench/mesh_bench --procs "$procs" --calls 2000
done
echo "== failures reach their owner =="
./bazel-bin/bench/failure_bench --rounds 20
