#!/usr/bin/env bash
# Where the machine's CPU goes per delivery, and how much of it sits idle, for one or more variants
# of the one-process binary on PostgreSQL, runs interleaved:
#
#   scripts/cpu-split.sh                                  this tree's release build, c=64, 3 rounds
#   SERVICE_ENVS="-;MALLOC_ARENA_MAX=8" scripts/cpu-split.sh         the same binary, two settings
#   LOCAL_BINARIES="target/release/local /some/other/local" scripts/cpu-split.sh     two builds
#   CONCURRENCY="32 64 128 256" ROUNDS=2 scripts/cpu-split.sh                 a concurrency sweep
#
# Each variant (every binary of LOCAL_BINARIES with every setting of SERVICE_ENVS; "-" is none) is
# measured once per round, in turn, alternating the order between rounds. A run starts the binary
# fresh on a copy of one template database (the service's migrations and scripts/bench.sh's
# pre-load of PRELOAD rows, analysed), warms it with 1,000 deliveries at c=16, then sends N signed
# invitee.created deliveries (half of them matching a lead) at each concurrency. Per run: deliveries/s,
# p99, and per delivery the CPU of the whole machine (/proc/stat, all cores) split into the
# service process, every PostgreSQL process, the load generator (its own report) and the rest
# (interrupts, other processes), with the share of the cores left idle; the service's peak RSS.
# Results: target/bench/cpu-split-<time>/ (runs.tsv, summary.md). PostgreSQL on 127.0.0.1:5432;
# databases calendly_split_*, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
N="${N:-8000}"
PRELOAD="${PRELOAD:-200000}"
CONCURRENCY="${CONCURRENCY:-64}"
SERVICE_ENVS="${SERVICE_ENVS:--}"
PG_ADMIN="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
OUT="$(results_dir cpu-split)"
SECRET="bench-secret"
PIDS=()
database_url() { echo "${PG_ADMIN%/*}/$1?sslmode=disable"; }
drop_databases() {
  local db
  for db in $(psql "$PG_ADMIN" -qAtc "SELECT datname FROM pg_database WHERE datname LIKE 'calendly_split%'"); do
    psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  done
}
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; drop_databases' EXIT

log "building release binaries"
binaries release
LOCAL_BINARIES="${LOCAL_BINARIES:-$BIN/local}"

# The template: the first binary's migrations, then scripts/bench.sh's own pre-load.
PG_URL="$(database_url calendly_split_template)"
eval "$(awk '/^preload_postgres\(\) \{/ { f = 1 } f { print } f && /^\}/ { exit }' scripts/bench.sh)"
drop_databases
psql "$PG_ADMIN" -qAtc "CREATE DATABASE calendly_split_template" >/dev/null
BIN="$(dirname "$(echo "$LOCAL_BINARIES" | cut -d' ' -f1)")"
start_local migrate "$PG_URL"
stop_pid "$SERVICE_PID"
preload_postgres

IFS=';' read -r -a envs <<<"$SERVICE_ENVS"
variants=()
for binary in $LOCAL_BINARIES; do
  for settings in "${envs[@]}"; do variants+=("$binary|$settings"); done
done
printf 'variant\tbinary\tsettings\tc\tround\tdeliveries_per_s\tp99_ms\tmachine_us\tidle_pct\tservice_us\tpostgres_us\tloadgen_us\tother_us\tpeak_rss_mib\n' \
  >"$OUT/runs.tsv"
for round in $(seq 1 "$ROUNDS"); do
  order=("${variants[@]}")
  if [ $(( round % 2 )) = 0 ]; then
    order=(); for (( i = ${#variants[@]} - 1; i >= 0; i-- )); do order+=("${variants[$i]}"); done
  fi
  for variant in "${order[@]}"; do
    binary="${variant%%|*}"; settings="${variant#*|}"
    index=0; for v in "${variants[@]}"; do [ "$v" = "$variant" ] && break; index=$((index + 1)); done
    psql "$PG_ADMIN" -qAtc "CREATE DATABASE calendly_split_run TEMPLATE calendly_split_template" >/dev/null
    BIN="$(dirname "$binary")"
    # shellcheck disable=SC2086 # the settings are words on purpose
    start_local "run-$index-$round" "$(database_url calendly_split_run)" $( [ "$settings" = - ] || echo "$settings" )
    "$LOADGEN" --url "$URL" --secret "$SECRET" -c 16 -n 1000 --lead-share 0.5 --lead-pool 1000 >/dev/null
    for c in $CONCURRENCY; do
      name="run-$index-$round-c$c"
      m0=$(machine_ticks); s0=$(cpu_ticks "$SERVICE_PID"); p0=$(pg_ticks)
      "$LOADGEN" --url "$URL" --secret "$SECRET" --time-limit-secs 300 --json "$OUT/$name.json" \
        -c "$c" -n "$N" --mix created --lead-share 0.5 --lead-pool 1000 >"$OUT/$name.txt" 2>&1
      m1=$(machine_ticks); s1=$(cpu_ticks "$SERVICE_PID"); p1=$(pg_ticks)
      acked=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["acknowledged"])' "$OUT/$name.json")
      read -r machine_us idle_pct loadgen_us < <(machine_split "$m0" "$m1" "$acked" "$OUT/$name.json")
      python3 - "$OUT/$name.json" "$s0" "$s1" "$p0" "$p1" "$(getconf CLK_TCK)" "$machine_us" "$idle_pct" \
        "$loadgen_us" "$index" "$binary" "$settings" "$c" "$round" "$(rss_kib "$SERVICE_PID" VmHWM)" \
        >>"$OUT/runs.tsv" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
s0, s1, p0, p1, tck, machine = (int(x) for x in sys.argv[2:8])
idle_pct, loadgen = float(sys.argv[8]), int(sys.argv[9])
index, binary, settings, c, rnd, rss = sys.argv[10:16]
n = max(j["acknowledged"], 1)
service, postgres = ((b - a) / tck / n * 1e6 for a, b in ((s0, s1), (p0, p1)))
print("\t".join(str(x) for x in [
    index, binary, settings, c, rnd, round(j["acknowledged_per_sec"], 1), j["latency_ms"]["p99_ms"],
    machine, idle_pct, round(service), round(postgres), loadgen,
    round(machine - service - postgres - loadgen), round(int(rss) / 1024, 1)]))
EOF
      log "$(tail -n 1 "$OUT/runs.tsv" | cut -f3-)"
    done
    stop_pid "$SERVICE_PID"
    psql "$PG_ADMIN" -qAtc "DROP DATABASE calendly_split_run WITH (FORCE)" >/dev/null
  done
done

python3 - "$OUT/runs.tsv" >"$OUT/summary.md" <<'EOF'
import collections, csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["variant"], r["c"])].append(r)
keys = ["deliveries_per_s", "p99_ms", "machine_us", "idle_pct", "service_us", "postgres_us", "loadgen_us",
        "other_us", "peak_rss_mib"]
print("| variant | c | " + " | ".join(keys) + " |")
print("| --- | --- | " + " | ".join("---" for _ in keys) + " |")
for (variant, c), rs in sorted(groups.items(), key=lambda kv: (int(kv[0][0]), int(kv[0][1]))):
    label = f'{variant}: {os.path.relpath(rs[0]["binary"])} {rs[0]["settings"]}'
    cells = []
    for k in keys:
        values = [float(r[k]) for r in rs]
        cells.append(f"{statistics.median(values):,.1f} ({', '.join(f'{v:,.1f}' for v in values)})")
    print(f"| {label} | {c} | " + " | ".join(cells) + " |")
EOF
cat "$OUT/summary.md"
log "results in $OUT"
