#!/usr/bin/env bash
# Before/after: the same figures for two builds, measured in one run, in
# interleaved rounds (so load and thermal drift hit both alike), medians.
# Usage: bench/compare.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [PROCS]
# Each BIN_DIR holds hostd, procd, meshctl and mesh_bench of one build.
set -euo pipefail
OLD=$1
NEW=$2
ROUNDS=${3:-5}
PROCS=${4:-64}
OUT=$(mktemp -d /tmp/hostmesh-compare-XXXXXX)
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    B=$OLD
    [ "$side" = new ] && B=$NEW
    "$B/mesh_bench" --procs "$PROCS" --calls 2000 2>/dev/null |
      grep '^{' >>"$OUT/$side.bench"
    bench/idle_procd.sh "$B" >>"$OUT/$side.idle"
  done
  echo "round $round done" >&2
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]
rows = {}
for side in ("old", "new"):
    for run in load(f"{out}/{side}.bench"):
        for key, value in run.items():
            kind = key.split(":")[0]
            rows.setdefault((kind, key.split(":")[1].split("(")[0].strip()), {}).setdefault(side, []).append(value["hostmesh"])
    for run in load(f"{out}/{side}.idle"):
        for key, value in run.items():
            rows.setdefault(("idle proc", key), {}).setdefault(side, []).append(value)
print(f"{'figure':45} {'previous main':>14} {'this change':>14}")
for (kind, what), sides in rows.items():
    old = statistics.median(sides.get("old", [float("nan")]))
    new = statistics.median(sides.get("new", [float("nan")]))
    print(f"{kind + ': ' + what:45} {old:14.1f} {new:14.1f}")
PY
rm -rf "$OUT"
