#!/usr/bin/env bash
# Rejections of bodies over 1 MiB, one build against another, interleaved:
#
#   scripts/oversized-ab.sh <baseline-bin-dir> <new-bin-dir>
#
# Each directory holds a release build's `local` and `loadgen` (target/release, or a copy of it
# kept from an earlier commit). RUNS times (default 3), each build in turn, alternating which goes
# first, is started fresh on an empty SQLite file with the per-IP limit raised, warmed with 300
# requests, then sent 1,500 oversized bodies (1.004 MiB, declared) at c=16, one attempt each.
# Per run: requests/s, p50/p99, the service's CPU per request, and how each request ended (413,
# or the connection lost while the client was still writing: `io-error`).
# Results: target/bench/oversized-<time>/results.tsv.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 <baseline-bin-dir> <new-bin-dir>" >&2; exit 2; }
BASELINE_BIN="$(cd "$1" && pwd)"; NEW_BIN="$(cd "$2" && pwd)"
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
OUT="$(results_dir oversized)"
SECRET="bench-secret"
PIDS=()
kill_started_at_exit

printf 'build\trun\trequests_per_s\tp50_ms\tp99_ms\tcpu_us_per_request\tendings\n' >"$OUT/results.tsv"
for run in $(seq 1 "$RUNS"); do
  order="baseline new"
  [ $(( run % 2 )) = 0 ] && order="new baseline"
  for build in $order; do
    if [ "$build" = baseline ]; then BIN="$BASELINE_BIN"; else BIN="$NEW_BIN"; fi
    LOADGEN="$BIN/loadgen"
    rm -f "$OUT"/db.sqlite*
    start_local "$build-$run" "sqlite://$OUT/db.sqlite?mode=rwc" WEBHOOK_RATE_LIMIT=1000000000
    "$LOADGEN" --url "$URL" --secret "$SECRET" --time-limit-secs 120 -c 16 -n 300 --oversized 1.0 \
      --max-attempts 1 >/dev/null 2>&1 || true
    before=$(cpu_ticks "$SERVICE_PID")
    # loadgen exits non-zero when requests end in errors; those are what is counted here.
    "$LOADGEN" --url "$URL" --secret "$SECRET" --time-limit-secs 120 --json "$OUT/$build-$run.json" \
      -c 16 -n 1500 --oversized 1.0 --max-attempts 1 >"$OUT/$build-$run.txt" 2>&1 || true
    after=$(cpu_ticks "$SERVICE_PID")
    stop_pid "$SERVICE_PID"
    python3 - "$OUT/$build-$run.json" "$build" "$run" "$(( after - before ))" "$(getconf CLK_TCK)" \
      >>"$OUT/results.tsv" <<'PY'
import json, sys
path, build, run, ticks, per_second = sys.argv[1:]
j = json.load(open(path))
latency = j["latency_ms"]
requests = max(j["requests"], 1)
endings = " ".join(f"{k}={v}" for k, v in sorted(j["status_counts"].items()))
print(f'{build}\t{run}\t{j["requests_per_sec"]:.1f}\t{latency["p50_ms"]:.1f}\t{latency["p99_ms"]:.1f}\t'
      f'{int(ticks) / int(per_second) / requests * 1e6:.0f}\t{endings}')
PY
    log "$(tail -n 1 "$OUT/results.tsv")"
  done
done
log "results in $OUT/results.tsv"
