#!/usr/bin/env bash
# SQLite's page size against created-delivery throughput at c=64, one release build:
#
#   scripts/sqlite-page-size.sh                    page sizes 4096 1024 2048, 3 runs each
#   SIZES="4096 8192" RUNS=5 PRELOAD=200000 scripts/sqlite-page-size.sh
#
# For each page size, a file is created with that page size, the service's migrations build its
# schema, and scripts/bench.sh's pre-load fills it (the same history, analysed). Each run starts
# the one-process binary on a fresh copy of that file and sends 4,000 signed invitee.created
# deliveries at c=64 (half of them matching a lead), the page sizes in turn, alternating their
# order. Per run: deliveries/s, p99, the process's CPU per delivery, its peak RSS and the bytes it
# wrote (`wchar`: the database file and its WAL). Results: target/bench/page-size-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-4096 1024 2048}"
RUNS="${RUNS:-3}"
PRELOAD="${PRELOAD:-200000}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
OUT="$(results_dir page-size)"
SECRET="bench-secret"
PIDS=()
kill_started_at_exit

log "building release binaries"
binaries release

# The pre-load is scripts/bench.sh's own, so both measure the same history.
awk '/^preload_sqlite\(\)/ { f = 1 } f && /^import datetime as dt, hashlib/ { p = 1 } p && /^EOF$/ { exit } p { print }' \
  scripts/bench.sh >"$OUT/preload.py"

for size in $SIZES; do
  base="$OUT/base-$size.db"
  python3 - "$base" "$size" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute(f"PRAGMA page_size={int(sys.argv[2])}")
db.execute("PRAGMA journal_mode=WAL")  # writes the header: the page size is fixed from here on
assert db.execute("PRAGMA page_size").fetchone()[0] == int(sys.argv[2])
EOF
  start_local "migrate-$size" "sqlite://$base?mode=rwc"
  stop_pid "$SERVICE_PID"
  python3 "$OUT/preload.py" "$base" "$PRELOAD"
  log "page size $size: pre-loaded file $(du -h "$base" | cut -f1)"
done

printf 'page_size\trun\tdeliveries_per_s\tp99_ms\tcpu_us_per_delivery\tpeak_rss_kib\tkib_written_per_delivery\t503s\n' \
  >"$OUT/results.tsv"
for run in $(seq 1 "$RUNS"); do
  order="$SIZES"
  [ $(( run % 2 )) = 0 ] && order="$(echo "$SIZES" | tr ' ' '\n' | tac | tr '\n' ' ')"
  for size in $order; do
    rm -f "$OUT/run.db" "$OUT/run.db-wal" "$OUT/run.db-shm"
    cp "$OUT/base-$size.db" "$OUT/run.db"
    start_local "run-$size-$run" "sqlite://$OUT/run.db?mode=rwc"
    cpu0=$(cpu_ticks "$SERVICE_PID"); written0=$(awk '/^wchar/ { print $2 }' "/proc/$SERVICE_PID/io")
    "$LOADGEN" --url "$URL" --secret "$SECRET" --time-limit-secs 300 --json "$OUT/run-$size-$run.json" \
      -c 64 -n 4000 --mix created --lead-share 0.5 --lead-pool 1000 >"$OUT/run-$size-$run.txt" 2>&1
    cpu1=$(cpu_ticks "$SERVICE_PID"); written1=$(awk '/^wchar/ { print $2 }' "/proc/$SERVICE_PID/io")
    peak=$(rss_kib "$SERVICE_PID" VmHWM)
    stop_pid "$SERVICE_PID"
    python3 - "$OUT/run-$size-$run.json" "$size" "$run" "$(( cpu1 - cpu0 ))" "$(getconf CLK_TCK)" "$peak" \
      "$(( written1 - written0 ))" >>"$OUT/results.tsv" <<'EOF'
import json, sys
path, size, run, ticks, per_second, peak, written = sys.argv[1:]
j = json.load(open(path))
acked = max(j["acknowledged"], 1)
print(f'{size}\t{run}\t{j["acknowledged_per_sec"]:.1f}\t{j["latency_ms"]["p99_ms"]:.1f}\t'
      f'{int(ticks) / int(per_second) / acked * 1e6:.0f}\t{peak}\t{int(written) / 1024 / acked:.1f}\t'
      f'{j["status_counts"].get("503", 0)}')
EOF
    log "$(tail -n 1 "$OUT/results.tsv")"
  done
done
rm -f "$OUT"/*.db "$OUT"/*.db-wal "$OUT"/*.db-shm
log "results in $OUT/results.tsv"
