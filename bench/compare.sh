#!/usr/bin/env bash
# Before/after: mesh_bench of two builds, run in turns (one round each, so
# load and thermal drift hit both alike), medians per row id.
# Usage: bench/compare.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [PROCS]
# Each BIN_DIR is a build's bazel-bin/bench (mesh_bench with its floors/,
# cold_client, and ../hostd, ../procd beside it as Bazel lays them out).
# Needs mesh_bench with --rows on both sides (bench/report.h).
set -euo pipefail
OLD=$1
NEW=$2
ROUNDS=${3:-5}
PROCS=${4:-64}
OUT=$(mktemp -d /tmp/hostmesh-compare-XXXXXX)
trap 'rm -rf "$OUT"' EXIT
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    B=$OLD
    [ "$side" = new ] && B=$NEW
    "$B/mesh_bench" --rows "$OUT/$side.rows" --rounds 1 --procs "$PROCS" \
      --skip b8,b9 2>/dev/null || echo "round $round: $side reported a problem" >&2
  done
  echo "round $round done" >&2
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
rows = {}
order = []
for side in ("old", "new"):
    for line in open(f"{out}/{side}.rows"):
        record = json.loads(line)
        row = record.get("row")
        if not row or not row.get("n"):
            continue
        if row["id"] not in rows:
            order.append(row["id"])
        entry = rows.setdefault(row["id"], {"unit": row.get("unit", "")})
        entry.setdefault(side, []).append(row.get("value", 0.0))
print(f"{'id':12} {'unit':8} {'previous':>12} {'this change':>12}")
for key in order:
    entry = rows[key]
    old = statistics.median(entry.get("old", [float("nan")]))
    new = statistics.median(entry.get("new", [float("nan")]))
    print(f"{key:12} {entry['unit']:8} {old:12.2f} {new:12.2f}")
PY
