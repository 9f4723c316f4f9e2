#!/usr/bin/env bash
# End-to-end benchmarks of the webhook pipeline on this machine, in one go (release build).
#
#   scripts/bench.sh            everything below (about 30-40 minutes on 2 cores)
#   BENCH_RUNS=5 BENCH_N=8000 BENCH_PRELOAD=200000 scripts/bench.sh
#
# What it measures (each figure the median of BENCH_RUNS runs, with min-max, and the 1-minute load
# average at the time; before every measured run it waits, up to 10 minutes, until no rustc runs):
#   - signed invitee.created deliveries at concurrency 1, 16, 64, on SQLite and PostgreSQL;
#   - the realistic mix (creates, cancels, reschedule pairs, no-shows) with 10% duplicates;
#   - the database's own ceiling for the per-delivery transaction (inbox row, meeting, three
#     reminders, commit) issued directly: pgbench -c 64 -j 2 -T 20 on PostgreSQL, a python3 sqlite3
#     loop (WAL, synchronous=NORMAL, as the service opens it) on SQLite; also the service's full
#     statement sequence (with its reads) on PostgreSQL;
#   - rejection throughput: bad signatures and oversized bodies with the per-IP limit raised, and
#     bad signatures with the default limit (429 cost);
#   - RSS (VmRSS idle, VmHWM peak) of the one-process `local` binary and of the adapter and the
#     meeting service as separate binaries; RSS across 100,000 deliveries;
#   - CPU time per delivery (utime+stime from /proc/<pid>/stat around each run);
#   - where the time goes: the adapter's HTTP histogram against the meeting service's gRPC
#     histogram (from /metrics), and a perf cpu-clock profile when perf can sample;
#   - created deliveries at c=64 with and without four stalled change-feed consumers (`watch`;
#     BENCH_WATCH_FILL=before|during);
#   - on PostgreSQL, created deliveries at c=64 with the pool at each of BENCH_POOLS connections
#     (default "2 4 10", i.e. one, two and four batch writers): mean batch size against CPU per
#     delivery (`writers`).
# The measured databases are pre-loaded with BENCH_PRELOAD meetings (three reminders and one inbox
# row each) and as many leads, half of the meetings linked to the first 1,000 leads (100 meetings
# each), then analysed; half of the generated bookings carry one of those leads' e-mails.
#
#   scripts/bench.sh --baseline <commit>
#
# compares the release build of this tree against one of <commit> (built in its own worktree and
# target directory under target/bench-baseline/), in one run: for each backend, each build gets a
# database of its own, pre-loaded alike; then, BENCH_RUNS times, each build in turn (alternating
# which goes first) is started fresh and measured: created deliveries at c=64, the realistic mix
# with 10% duplicates at c=64, created at c=1; throughput, p50/p99, 503s, CPU per delivery of the
# service process and of every PostgreSQL process, peak RSS. On PostgreSQL, pgbench runs the
# baseline's per-delivery statement sequence as a ceiling. The summary gives medians and the ratio
# new/baseline (target/bench/<time>/ab-summary.md). PostgreSQL: database calendly_bench on 127.0.0.1:5432, created fresh and dropped
# at the end. Results: target/bench/<time>/ (results.tsv, summary.md, loadgen JSON, logs).
set -euo pipefail
cd "$(dirname "$0")/.."

BASELINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) BASELINE="$2"; shift ;;
    *) echo "usage: $0 [--baseline <commit>]" >&2; exit 2 ;;
  esac
  shift
done

RUNS="${BENCH_RUNS:-3}"
N="${BENCH_N:-4000}"
PRELOAD="${BENCH_PRELOAD:-200000}"
MEMORY_N="${BENCH_MEMORY_N:-100000}"
REJECT_N="${BENCH_REJECT_N:-60000}"
CEILING_SECS="${BENCH_CEILING_SECS:-20}"
ONLY="${BENCH_ONLY:-}"
BACKENDS="${BENCH_BACKENDS:-sqlite postgres}"
PG_ADMIN="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_DB=calendly_bench
# TLS off, for every build and for pgbench alike: on loopback it protects nothing, and with sqlx
# 0.9.0 (no TCP_NODELAY) it stalls the service's writes behind delayed ACKs (BENCHMARKS.md).
PG_URL="${PG_ADMIN%/*}/$PG_DB?sslmode=disable"
OUT="${BENCH_OUT:-target/bench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SQLITE_FILE="$OUT/bench.db"
SQLITE_URL="sqlite://$SQLITE_FILE?mode=rwc"
SECRET="bench-secret"
TOKEN="bench-token"
RESULTS="$OUT/results.tsv"
PIDS=()

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
wants() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT

# Waits (at most 10 minutes) until nobody compiles on this machine and the CPUs are idle (under
# 25% busy over 2 s while nothing of ours runs); sets LOAD to the 1-minute load average and BUSY to
# that busy share. (The load average lags: right after a run it still counts the run itself.)
cpu_busy_percent() {
  local a b
  read -r -a a < <(head -n 1 /proc/stat)
  sleep 2
  read -r -a b < <(head -n 1 /proc/stat)
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  idle=$(( b[4] - a[4] + b[5] - a[5] ))
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
wait_quiet() {
  local waited=0
  while true; do
    BUSY=$(cpu_busy_percent)
    if ! pgrep -x rustc >/dev/null && ! pgrep -x cc1 >/dev/null && [ "$BUSY" -lt 25 ]; then
      break
    fi
    if [ "$waited" -ge 600 ]; then
      log "the machine is still busy (rustc running or ${BUSY}% CPU) after 10 minutes; measuring anyway"
      break
    fi
    [ "$waited" = 0 ] && log "waiting for the machine to be quiet (rustc running or ${BUSY}% CPU busy)"
    sleep 28
    waited=$((waited + 30))
  done
  LOAD="$(cut -d' ' -f1 /proc/loadavg)"
}

sys_ticks() { # stime of a pid, in clock ticks
  awk '{ sub(/^.*\) /, ""); print $13 }' "/proc/$1/stat"
}
CLK_TCK="$(getconf CLK_TCK)"

# --- Build --------------------------------------------------------------------------------------
log "building release binaries"
binaries release

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r); PostgreSQL: $(psql "$PG_ADMIN" -qAtc 'SHOW server_version')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- adapter meeting-service proto migration service-kit || echo ' (+ local changes)')"
} | tee "$OUT/machine.txt"
printf 'what\tbackend\tconcurrency\trun\tvalue\tunit\tload1\textra\n' >"$RESULTS"
result() { # what backend concurrency run value unit [extra]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$LOAD" "${7:-}" >>"$RESULTS"
}

# --- Starting the service (start_local, start_meeting_service, start_adapter: scripts/lib.sh) ---
# start_split NAME DATABASE_URL: the adapter and the meeting service as their own binaries.
start_split() {
  local grpc_port; grpc_port=$(free_port)
  start_meeting_service "$1" "$2" "$grpc_port"
  start_adapter "$1" "$grpc_port"
}

# loadgen_run NAME ARGS...: one loadgen run; sets RPS P50 P90 P99 MAX ACKED from its JSON.
loadgen_run() {
  local name="$1"; shift
  "$LOADGEN" --url "$URL" --secret "$SECRET" --time-limit-secs 300 --json "$OUT/$name.json" "$@" \
    >"$OUT/$name.txt" 2>&1 || { log "loadgen $name failed:"; cat "$OUT/$name.txt" >&2; return 1; }
  read -r RPS ACKPS P50 P90 P99 MAX ACKED REQS < <(python3 - "$OUT/$name.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
l = j["latency_ms"]
print(f'{j["requests_per_sec"]:.1f} {j["acknowledged_per_sec"]:.1f} {l["p50_ms"]:.2f} {l["p90_ms"]:.2f} '
      f'{l["p99_ms"]:.2f} {l["max_ms"]:.2f} {j["acknowledged"]} {j["requests"]}')
EOF
)
}

# measure WHAT BACKEND CONCURRENCY LOADGEN-ARGS...: BENCH_RUNS runs against $SERVICE_PID.
measure() {
  local what="$1" backend="$2" conc="$3"; shift 3
  for run in $(seq 1 "$RUNS"); do
    wait_quiet
    local before sys_before; before=$(cpu_ticks "$SERVICE_PID"); sys_before=$(sys_ticks "$SERVICE_PID")
    loadgen_run "$what-$backend-c$conc-$run" -c "$conc" "$@"
    local after sys_after; after=$(cpu_ticks "$SERVICE_PID"); sys_after=$(sys_ticks "$SERVICE_PID")
    local cpu_us sys_share
    cpu_us=$(python3 -c "print(round(($after - $before) / $CLK_TCK / max($REQS, 1) * 1e6))")
    sys_share=$(python3 -c "print(round(100 * ($sys_after - $sys_before) / max($after - $before, 1)))")
    result "$what" "$backend" "$conc" "$run" "$RPS" "requests/s" \
      "p50=$P50 p90=$P90 p99=$P99 max=$MAX acked/s=$ACKPS cpu_us_per_request=$cpu_us kernel_share=$sys_share% busy_before=$BUSY%"
    log "$what $backend c=$conc run $run: $RPS req/s, p50 $P50 p99 $P99 ms, ${cpu_us} µs CPU/request (load $LOAD)"
  done
}

# --- Pre-loading a realistic history ------------------------------------------------------------
preload_postgres() {
  log "pre-loading $PRELOAD meetings into PostgreSQL"
  local started; started=$(date +%s)
  psql "$PG_URL" -q -v ON_ERROR_STOP=1 -v n="$PRELOAD" <<'SQL'
BEGIN;
INSERT INTO leads (email, name, status, created_at, updated_at)
SELECT 'lead' || g || '@example.com', 'Lead ' || g, 'meeting_scheduled', now(), now()
FROM generate_series(1, :n) g;
INSERT INTO meetings (lead_id, calendly_event_id, calendly_invitee_id, meeting_name, start_time, end_time,
  status, invitee_email, invitee_name, invitee_timezone, no_show, last_event_at, created_at, updated_at)
SELECT CASE WHEN g % 2 = 0 THEN (SELECT min(id) FROM leads) + (g / 2) % 1000 END,
  'https://api.calendly.com/scheduled_events/history-' || g,
  'https://api.calendly.com/scheduled_events/history-' || g || '/invitees/history-' || g,
  '30 Minute Discovery Call', ts, ts + interval '30 minutes',
  CASE WHEN g % 10 = 0 THEN 'canceled' ELSE 'scheduled' END,
  'history' || g || '@example.com', 'History ' || g, 'Europe/London', false, now(), now(), now()
FROM (SELECT g, now() + ((g % 20000) - 10000) * interval '1 hour' AS ts
      FROM generate_series(1, :n) g) s;
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, sent_at, attempts,
  created_at, updated_at)
SELECT m.id, r.t, m.start_time - r.o, m.start_time - r.o < now(),
  CASE WHEN m.status = 'canceled' THEN 'canceled' WHEN m.start_time - r.o < now() THEN 'sent' ELSE 'pending' END,
  CASE WHEN m.start_time - r.o < now() THEN m.start_time - r.o END, 0, now(), now()
FROM meetings m
CROSS JOIN (VALUES ('24h', interval '24 hours'), ('1h', interval '1 hour'), ('15min', interval '15 minutes')) r(t, o)
WHERE m.calendly_invitee_id LIKE 'https://api.calendly.com/scheduled_events/history-%';
-- Raw bodies older than the retention period are pruned: only the newest 20,000 keep one.
INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, payload_uri, raw_body, event_proto,
  received_at, processed_at, outcome, attempts)
SELECT md5(g::text), 'invitee.created', 'history:' || g, 'webhook',
  'https://api.calendly.com/scheduled_events/history-' || g || '/invitees/history-' || g,
  CASE WHEN g > :n - 20000 THEN convert_to(repeat('x', 2600), 'UTF8') END, '\x0a00'::bytea,
  now() - interval '1 day', now() - interval '1 day', 'processed', 1
FROM generate_series(1, :n) g;
COMMIT;
VACUUM ANALYZE;
SQL
  log "PostgreSQL pre-load took $(( $(date +%s) - started )) s"
  echo "postgres preload: $PRELOAD meetings in $(( $(date +%s) - started )) s" >>"$OUT/machine.txt"
}

preload_sqlite() {
  log "pre-loading $PRELOAD meetings into SQLite"
  local started; started=$(date +%s)
  python3 - "$SQLITE_FILE" "$PRELOAD" <<'EOF'
import datetime as dt, hashlib, sqlite3, sys
path, n = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
iso = lambda t: t.isoformat()
offsets = [("24h", dt.timedelta(hours=24)), ("1h", dt.timedelta(hours=1)), ("15min", dt.timedelta(minutes=15))]
db.execute("BEGIN")
for g in range(1, n + 1):
    db.execute("INSERT INTO leads (email, name, status, created_at, updated_at) VALUES (?,?,?,?,?)",
               (f"lead{g}@example.com", f"Lead {g}", "meeting_scheduled", iso(now), iso(now)))
first_lead = db.execute("SELECT min(id) FROM leads").fetchone()[0]
for g in range(1, n + 1):
    start = now + dt.timedelta(hours=(g % 20000) - 10000)
    uri = f"https://api.calendly.com/scheduled_events/history-{g}/invitees/history-{g}"
    status = "canceled" if g % 10 == 0 else "scheduled"
    cur = db.execute(
        "INSERT INTO meetings (lead_id, calendly_event_id, calendly_invitee_id, meeting_name, start_time,"
        " end_time, status, invitee_email, invitee_name, invitee_timezone, no_show, last_event_at,"
        " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,0,?,?,?)",
        (first_lead + (g // 2) % 1000 if g % 2 == 0 else None,
         f"https://api.calendly.com/scheduled_events/history-{g}", uri, "30 Minute Discovery Call",
         iso(start), iso(start + dt.timedelta(minutes=30)), status, f"history{g}@example.com",
         f"History {g}", "Europe/London", iso(now), iso(now), iso(now)))
    meeting = cur.lastrowid
    for label, before in offsets:
        at = start - before
        past = at < now
        state = "canceled" if status == "canceled" else ("sent" if past else "pending")
        db.execute(
            "INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state,"
            " sent_at, attempts, created_at, updated_at) VALUES (?,?,?,?,?,?,0,?,?)",
            (meeting, label, iso(at), int(past), state, iso(at) if past else None, iso(now), iso(now)))
    db.execute(
        "INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, payload_uri, raw_body,"
        " event_proto, received_at, processed_at, outcome, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,1)",
        (hashlib.md5(str(g).encode()).hexdigest(), "invitee.created", f"history:{g}", "webhook", uri,
         b"x" * 2600 if g > n - 20000 else None, b"\x0a\x00", iso(now - dt.timedelta(days=1)),
         iso(now - dt.timedelta(days=1)), "processed"))
db.execute("COMMIT")
db.execute("ANALYZE")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
EOF
  log "SQLite pre-load took $(( $(date +%s) - started )) s"
  echo "sqlite preload: $PRELOAD meetings in $(( $(date +%s) - started )) s" >>"$OUT/machine.txt"
}

# --- The databases' own ceilings ----------------------------------------------------------------
pgbench_ceiling() {
  pgbench_scripts
  pgbench_runs
}

pgbench_scripts() {
  # The brief's transaction: inbox row, meeting, three reminders, commit.
  cat >"$OUT/pgbench-writes.sql" <<'SQL'
BEGIN;
INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, payload_uri, raw_body, event_proto, received_at, processed_at, outcome, attempts) VALUES (gen_random_uuid()::text, 'invitee.created', 'pgbench:' || gen_random_uuid()::text, 'webhook', 'https://api.calendly.com/scheduled_events/pgbench/invitees/pgbench-' || gen_random_uuid()::text, convert_to(repeat('x', 2600), 'UTF8'), '\x0a00'::bytea, now(), now(), 'processed', 1) RETURNING payload_uri AS uri \gset
INSERT INTO meetings (lead_id, calendly_event_id, calendly_invitee_id, meeting_name, start_time, end_time, status, invitee_email, invitee_name, invitee_timezone, no_show, last_event_at, created_at, updated_at) VALUES (NULL, 'https://api.calendly.com/scheduled_events/pgbench', :uri, '30 Minute Discovery Call', now() + interval '7 days', now() + interval '7 days 30 minutes', 'scheduled', 'pgbench@example.com', 'Pg Bench', 'Europe/London', false, now(), now(), now()) RETURNING id AS mid \gset
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES (:mid, '24h', now() + interval '6 days', false, 'pending', 0, now(), now());
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES (:mid, '1h', now() + interval '7 days' - interval '1 hour', false, 'pending', 0, now(), now());
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES (:mid, '15min', now() + interval '7 days' - interval '15 minutes', false, 'pending', 0, now(), now());
COMMIT;
SQL
  # The service's whole statement sequence for a new booking: the writes plus its reads (meeting
  # FOR UPDATE, lead by e-mail, existing reminders).
  cat >"$OUT/pgbench-service-sequence.sql" <<'SQL'
BEGIN;
INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, payload_uri, raw_body, event_proto, received_at, processed_at, outcome, attempts) VALUES (gen_random_uuid()::text, 'invitee.created', 'pgbench:' || gen_random_uuid()::text, 'webhook', 'https://api.calendly.com/scheduled_events/pgbench/invitees/pgbench-' || gen_random_uuid()::text, convert_to(repeat('x', 2600), 'UTF8'), '\x0a00'::bytea, now(), now(), 'processed', 1) RETURNING payload_uri AS uri \gset
SELECT id FROM meetings WHERE calendly_invitee_id = :uri LIMIT 1 FOR UPDATE;
SELECT id FROM leads WHERE email = 'pgbench@example.com' LIMIT 1;
INSERT INTO meetings (lead_id, calendly_event_id, calendly_invitee_id, meeting_name, start_time, end_time, status, invitee_email, invitee_name, invitee_timezone, no_show, last_event_at, created_at, updated_at) VALUES (NULL, 'https://api.calendly.com/scheduled_events/pgbench', :uri, '30 Minute Discovery Call', now() + interval '7 days', now() + interval '7 days 30 minutes', 'scheduled', 'pgbench@example.com', 'Pg Bench', 'Europe/London', false, now(), now(), now()) RETURNING id AS mid \gset
SELECT id, reminder_type, state FROM meeting_reminders WHERE meeting_id = :mid;
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES (:mid, '24h', now() + interval '6 days', false, 'pending', 0, now(), now());
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES (:mid, '1h', now() + interval '7 days' - interval '1 hour', false, 'pending', 0, now(), now());
INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES (:mid, '15min', now() + interval '7 days' - interval '15 minutes', false, 'pending', 0, now(), now());
COMMIT;
SQL
}

pgbench_runs() {
  for script in writes service-sequence; do
    for clients in 64 10; do
      for run in $(seq 1 "$RUNS"); do
        wait_quiet
        pgbench -n -M prepared -f "$OUT/pgbench-$script.sql" -c "$clients" -j 2 -T "$CEILING_SECS" "$PG_URL" \
          >"$OUT/pgbench-$script-c$clients-$run.txt" 2>&1 || log "pgbench failed: $OUT/pgbench-$script-c$clients-$run.txt"
        local tps lat
        tps=$(awk '/^tps = / {print $3; exit}' "$OUT/pgbench-$script-c$clients-$run.txt")
        lat=$(awk '/^latency average/ {print $4; exit}' "$OUT/pgbench-$script-c$clients-$run.txt")
        result "ceiling-pgbench-$script" postgres "$clients" "$run" "$tps" "tx/s" "latency_avg_ms=$lat"
        log "pgbench $script -c $clients run $run: $tps tx/s, $lat ms (load $LOAD)"
      done
    done
  done
  psql "$PG_URL" -qAtc "DELETE FROM webhook_events WHERE dedupe_key LIKE 'pgbench:%'" >/dev/null
  psql "$PG_URL" -qAtc "DELETE FROM meetings
    WHERE calendly_event_id = 'https://api.calendly.com/scheduled_events/pgbench'" >/dev/null
  psql "$PG_URL" -qAtc "VACUUM ANALYZE" >/dev/null
}

sqlite_ceiling() {
  for run in $(seq 1 "$RUNS"); do
    wait_quiet
    local tps
    tps=$(python3 - "$SQLITE_FILE" "$CEILING_SECS" <<'EOF'
import datetime as dt, sqlite3, sys, time, uuid
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=NORMAL")
db.execute("PRAGMA foreign_keys=ON"); db.execute("PRAGMA busy_timeout=10000")
body = b"x" * 2600
now = dt.datetime.now(dt.timezone.utc).isoformat()
start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7)).isoformat()
done, began = 0, time.monotonic()
while time.monotonic() - began < float(sys.argv[2]):
    key = uuid.uuid4().hex
    uri = f"https://api.calendly.com/scheduled_events/ceiling/invitees/ceiling-{key}"
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, payload_uri, raw_body,"
               " event_proto, received_at, processed_at, outcome, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,1)",
               (key, "invitee.created", "ceiling:" + key, "webhook", uri, body, b"\x0a\x00", now, now, "processed"))
    mid = db.execute("INSERT INTO meetings (lead_id, calendly_event_id, calendly_invitee_id, meeting_name,"
                     " start_time, end_time, status, invitee_email, invitee_name, invitee_timezone, no_show,"
                     " last_event_at, created_at, updated_at) VALUES (NULL,?,?,?,?,?,?,?,?,?,0,?,?,?)",
                     ("https://api.calendly.com/scheduled_events/ceiling", uri, "Call", start, start,
                      "scheduled", "c@example.com", "C", "UTC", now, now, now)).lastrowid
    for label in ("24h", "1h", "15min"):
        db.execute("INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state,"
                   " attempts, created_at, updated_at) VALUES (?,?,?,0,'pending',0,?,?)",
                   (mid, label, start, now, now))
    db.execute("COMMIT")
    done += 1
print(f"{done / (time.monotonic() - began):.1f}")
db.execute("DELETE FROM webhook_events WHERE dedupe_key LIKE 'ceiling:%'")
db.execute("DELETE FROM meetings WHERE calendly_event_id = 'https://api.calendly.com/scheduled_events/ceiling'")
EOF
)
    result ceiling-sqlite-writes sqlite 1 "$run" "$tps" "tx/s" "python3 sqlite3, one connection"
    log "SQLite ceiling run $run: $tps tx/s (load $LOAD)"
  done
}

# --- /metrics: adapter (HTTP) against meeting service (gRPC) time ------------------------------
metrics_snapshot() { curl -fs "$METRICS" >"$1"; }
metrics_split() { # before after -> "http_mean_ms grpc_mean_ms"
  python3 - "$1" "$2" <<'EOF'
import re, sys
def sums(path):
    out = {}
    for line in open(path):
        m = re.match(r'(calendly_(?:http|grpc)_request_duration_seconds)_(sum|count)\{([^}]*)\} (\S+)', line)
        if not m: continue
        name, kind, labels, value = m.groups()
        if name.startswith("calendly_http") and ('route="/webhook/calendly"' not in labels or 'status="200"' not in labels):
            continue
        if name.startswith("calendly_grpc") and 'method="IngestCalendlyEvent"' not in labels:
            continue
        key = (name, kind)
        out[key] = out.get(key, 0.0) + float(value)
    return out
a, b = sums(sys.argv[1]), sums(sys.argv[2])
def mean(name):
    c = b.get((name, "count"), 0) - a.get((name, "count"), 0)
    s = b.get((name, "sum"), 0) - a.get((name, "sum"), 0)
    return s / c * 1000 if c else float("nan")
print(f'{mean("calendly_http_request_duration_seconds"):.2f} {mean("calendly_grpc_request_duration_seconds"):.2f}')
EOF
}

# --- A/B against a baseline commit (--baseline) ----------------------------------------------------
build_baseline() {
  local sha; sha=$(git rev-parse --short "$BASELINE")
  BASE_SRC="$(pwd)/target/bench-baseline/src-$sha"
  if [ ! -d "$BASE_SRC" ]; then
    mkdir -p target/bench-baseline
    git worktree add --detach -f "$BASE_SRC" "$BASELINE" >/dev/null
  fi
  log "building the baseline $sha (release) in target/bench-baseline"
  (cd "$BASE_SRC" && CARGO_TARGET_DIR="$(cd .. && pwd)/target" cargo build --release -q -p tests --bin local)
  BASE_BIN="$(pwd)/target/bench-baseline/target/release"
  echo "baseline: $sha" >>"$OUT/machine.txt"
}

# ab_measure BUILD BACKEND WHAT CONCURRENCY RUN LOADGEN-ARGS...
ab_measure() {
  local build="$1" backend="$2" what="$3" conc="$4" run="$5"; shift 5
  wait_quiet
  local s0 p0 m0 s1 p1 m1 unavailable service_us pg_us machine_us idle_pct loadgen_us
  s0=$(cpu_ticks "$SERVICE_PID"); p0=$(pg_ticks); m0=$(machine_ticks)
  loadgen_run "ab-$build-$backend-$what-c$conc-$run" -c "$conc" "$@"
  s1=$(cpu_ticks "$SERVICE_PID"); p1=$(pg_ticks); m1=$(machine_ticks)
  unavailable=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['status_counts'].get('503', 0))" \
    "$OUT/ab-$build-$backend-$what-c$conc-$run.json")
  service_us=$(python3 -c "print(round(($s1 - $s0) / $CLK_TCK / max($ACKED, 1) * 1e6))")
  pg_us=$(python3 -c "print(round(($p1 - $p0) / $CLK_TCK / max($ACKED, 1) * 1e6))")
  [ "$backend" = sqlite ] && pg_us=0
  # The whole machine and the load generator's own CPU, so that what the cores left idle and what
  # the other parties spent is on record beside the service's share.
  read -r machine_us idle_pct loadgen_us \
    < <(machine_split "$m0" "$m1" "$ACKED" "$OUT/ab-$build-$backend-$what-c$conc-$run.json")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$build" "$backend" "$what" "$conc" \
    "$run" "$ACKPS" "$P50" "$P99" "$unavailable" "$service_us" "$pg_us" "$LOAD" "$machine_us" "$idle_pct" \
    "$loadgen_us" >>"$OUT/ab.tsv"
  log "$build $backend $what c=$conc run $run: $ACKPS acked/s p50 $P50 p99 $P99 ms, 503s $unavailable," \
    "CPU/delivery service ${service_us} µs, PostgreSQL ${pg_us} µs, load generator ${loadgen_us} µs," \
    "whole machine ${machine_us} µs with ${idle_pct}% of the cores idle (load $LOAD)"
}

# ab_database BUILD BACKEND: sets DB_URL (and SQLITE_FILE or PG_URL) to that build's database.
ab_database() {
  if [ "$2" = sqlite ]; then
    SQLITE_FILE="$OUT/bench-$1.db"; DB_URL="sqlite://$SQLITE_FILE?mode=rwc"
  else
    PG_URL="${PG_ADMIN%/*}/${PG_DB}_$1?sslmode=disable"; DB_URL="$PG_URL"
  fi
}

# ab_start BUILD NAME: that build's one-process binary on DB_URL.
ab_start() {
  local saved="$BIN"
  [ "$1" = baseline ] && BIN="$BASE_BIN"
  start_local "$2" "$DB_URL"
  BIN="$saved"
}

ab_compare() {
  build_baseline
  printf 'build\tbackend\twhat\tc\trun\tdeliveries_per_s\tp50_ms\tp99_ms\tunavailable\tservice_cpu_us\tpg_cpu_us\tload1\tmachine_cpu_us\tidle_pct\tloadgen_cpu_us\n' \
    >"$OUT/ab.tsv"
  : >"$OUT/ab-memory.tsv"
  local leads=(--lead-share 0.5 --lead-pool 1000)
  for backend in $BACKENDS; do
    for build in baseline new; do
      ab_database "$build" "$backend"
      if [ "$backend" = postgres ]; then
        psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS ${PG_DB}_$build WITH (FORCE)" >/dev/null
        psql "$PG_ADMIN" -qAtc "CREATE DATABASE ${PG_DB}_$build" >/dev/null
      fi
      # Each build's own migrations create its schema; then the same history goes in.
      ab_start "$build" "ab-migrate-$build-$backend"
      stop_pid "$SERVICE_PID"
      if [ "$PRELOAD" -gt 0 ]; then "preload_$backend"; fi
    done
    for run in $(seq 1 "$RUNS"); do
      local order="baseline new"
      [ $(( run % 2 )) = 0 ] && order="new baseline"
      for build in $order; do
        ab_database "$build" "$backend"
        ab_start "$build" "ab-$build-$backend-$run"
        loadgen_run "ab-warmup-$build-$backend-$run" -c 16 -n 1000 "${leads[@]}"
        ab_measure "$build" "$backend" created 64 "$run" --mix created -n "$N" "${leads[@]}"
        ab_measure "$build" "$backend" realistic-dup10 64 "$run" --mix realistic --duplicates 0.1 -n "$N" "${leads[@]}"
        ab_measure "$build" "$backend" created 1 "$run" --mix created -n $(( N / 8 )) "${leads[@]}"
        printf '%s\t%s\t%s\t%s\n' "$build" "$backend" "$run" "$(rss_kib "$SERVICE_PID" VmHWM)" >>"$OUT/ab-memory.tsv"
        stop_pid "$SERVICE_PID"
      done
      if [ "$backend" = postgres ]; then
        # The baseline's per-delivery statement sequence, issued directly (pgbench_ceiling's script),
        # on the baseline's database.
        ab_database baseline postgres
        wait_quiet
        pgbench -n -M prepared -f "$OUT/pgbench-service-sequence.sql" -c 64 -j 2 -T "$CEILING_SECS" "$PG_URL" \
          >"$OUT/ab-pgbench-$run.txt" 2>&1 || log "pgbench failed: $OUT/ab-pgbench-$run.txt"
        local tps; tps=$(awk '/^tps = / {print $3; exit}' "$OUT/ab-pgbench-$run.txt")
        printf 'pgbench\tpostgres\tservice-sequence\t64\t%s\t%s\t\t\t\t\t\t%s\n' "$run" "$tps" "$LOAD" >>"$OUT/ab.tsv"
        log "pgbench, the service's statement sequence, c=64 run $run: $tps tx/s"
      fi
    done
    if [ "$backend" = postgres ]; then
      for build in baseline new; do
        psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS ${PG_DB}_$build WITH (FORCE)" >/dev/null
      done
    fi
  done
  python3 - "$OUT/ab.tsv" "$OUT/ab-memory.tsv" >"$OUT/ab-summary.md" <<'EOF'
import collections, csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["backend"], r["what"], r["c"], r["build"])].append(r)
def med(rs, key):
    vals = [float(r[key]) for r in rs if r[key] not in ("", None)]
    return statistics.median(vals) if vals else float("nan")
print("| backend | workload | c | figure | baseline | new | new / baseline |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for backend, what, c in sorted({k[:3] for k in groups if k[3] != "pgbench"}):
    base = groups.get((backend, what, c, "baseline"), [])
    new = groups.get((backend, what, c, "new"), [])
    for figure, key in [("deliveries/s", "deliveries_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
                        ("503 answers", "unavailable"), ("service CPU µs/delivery", "service_cpu_us"),
                        ("PostgreSQL CPU µs/delivery", "pg_cpu_us"),
                        ("load generator CPU µs/delivery", "loadgen_cpu_us"),
                        ("whole machine CPU µs/delivery", "machine_cpu_us"), ("cores idle %", "idle_pct")]:
        if backend == "sqlite" and key == "pg_cpu_us":
            continue
        b, n = med(base, key), med(new, key)
        ratio = f"{n / b:.2f}×" if b else "n/a"
        print(f"| {backend} | {what} | {c} | {figure} | {b:,.1f} | {n:,.1f} | {ratio} |")
pg = groups.get(("postgres", "service-sequence", "64", "pgbench"), [])
if pg:
    ceiling = med(pg, "deliveries_per_s")
    new = med(groups.get(("postgres", "created", "64", "new"), []), "deliveries_per_s")
    print(f"| postgres | pgbench: the baseline's per-delivery statements | 64 | tx/s vs new deliveries/s "
          f"| {ceiling:,.1f} | {new:,.1f} | {new / ceiling:.2f}× |")
mem = collections.defaultdict(list)
for line in open(sys.argv[2]):
    build, backend, run, kib = line.rstrip("\n").split("\t")
    mem[(backend, build)].append(int(kib))
for backend in sorted({b for b, _ in mem}):
    b, n = max(mem.get((backend, "baseline"), [0])), max(mem.get((backend, "new"), [0]))
    print(f"| {backend} | peak RSS, one-process binary, all runs | - | MiB | {b / 1024:.1f} | {n / 1024:.1f} | {n / b:.2f}× |")
EOF
  cat "$OUT/ab-summary.md"
  git worktree remove --force "$BASE_SRC" >/dev/null 2>&1 || true
  log "results in $OUT"
}

if [ -n "$BASELINE" ]; then
  pgbench_scripts
  ab_compare
  exit 0
fi

# --- The runs -----------------------------------------------------------------------------------
psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
psql "$PG_ADMIN" -qAtc "CREATE DATABASE $PG_DB" >/dev/null

for backend in $BACKENDS; do
  if [ "$backend" = sqlite ]; then DB_URL="$SQLITE_URL"; else DB_URL="$PG_URL"; fi
  # Start once so the migrations create the schema, then pre-load the history.
  start_local "migrate-$backend" "$DB_URL"
  stop_pid "$SERVICE_PID"
  if [ "$PRELOAD" -gt 0 ]; then "preload_$backend"; fi

  if wants ceiling; then
    if [ "$backend" = sqlite ]; then sqlite_ceiling; else pgbench_ceiling; fi
  fi

  start_local "service-$backend" "$DB_URL"
  sleep 2
  LOAD="$(cut -d' ' -f1 /proc/loadavg)"
  result rss-idle-local "$backend" 0 1 "$(rss_kib "$SERVICE_PID")" KiB "one process, right after start"
  # Warm-up: connections, caches, the pool.
  loadgen_run "warmup-$backend" -c 16 -n 1000
  if wants throughput; then
    for conc in 1 16 64; do
      n=$N; [ "$conc" = 1 ] && n=$(( N / 4 ))
      [ "$conc" = 64 ] && metrics_snapshot "$OUT/metrics-$backend-before.txt"
      measure created "$backend" "$conc" --mix created -n "$n"
      if [ "$conc" = 64 ]; then
        metrics_snapshot "$OUT/metrics-$backend-after.txt"
        read -r HTTP_MS GRPC_MS < <(metrics_split "$OUT/metrics-$backend-before.txt" "$OUT/metrics-$backend-after.txt")
        result split-http-vs-grpc "$backend" 64 1 "$HTTP_MS" "ms mean HTTP" "grpc_mean_ms=$GRPC_MS"
      fi
    done
    for conc in 1 16 64; do
      n=$N; [ "$conc" = 1 ] && n=$(( N / 4 ))
      measure realistic-dup10 "$backend" "$conc" --mix realistic --duplicates 0.1 -n "$n"
    done
    # Exactly-once check of everything above (this backend's last realistic run).
    "$LOADGEN" --url "$URL" --secret "$SECRET" --mix realistic --duplicates 0.1 -n 500 -c 16 \
      --verify-database "$DB_URL" --require-all-acknowledged >"$OUT/verify-$backend.txt" 2>&1 \
      && log "verification on $backend passed" || log "VERIFICATION ON $backend FAILED: $OUT/verify-$backend.txt"
  fi
  LOAD="$(cut -d' ' -f1 /proc/loadavg)"
  result rss-peak-local "$backend" 64 1 "$(rss_kib "$SERVICE_PID" VmHWM)" KiB "VmHWM after the runs"
  sleep 5
  result rss-idle-after-load-local "$backend" 0 1 "$(rss_kib "$SERVICE_PID")" KiB "idle again after the runs"

  # perf profile (cpu-clock samples of the service process) of one c=64 run, when perf can sample.
  if wants profile && command -v perf >/dev/null && perf record -e cpu-clock -o /dev/null true >/dev/null 2>&1; then
    wait_quiet
    perf record -e cpu-clock -F 499 -g -p "$SERVICE_PID" -o "$OUT/perf-$backend.data" -- sleep 12 \
      >"$OUT/perf-record-$backend.log" 2>&1 &
    perf_pid=$!
    loadgen_run "profile-$backend" -c 64 -n $(( N * 4 )) || true
    wait "$perf_pid" || true
    perf report -i "$OUT/perf-$backend.data" --stdio --no-children -g none --sort dso,symbol \
      --percent-limit 0 >"$OUT/perf-report-$backend.txt" 2>/dev/null || true
    python3 - "$OUT/perf-report-$backend.txt" >"$OUT/perf-categories-$backend.txt" <<'EOF'
import collections, re, sys
rules = [
    ("kernel: TCP loopback, syscalls, scheduling", lambda d, s: d.startswith("[kernel")),
    ("SQLite engine", lambda d, s: "sqlite3" in s),
    ("database client: sqlx, sea-orm, sea-query", lambda d, s: re.search(r"sqlx|sea_orm|sea_query", s)),
    ("HTTP and gRPC: hyper, h2, tonic, axum, tower", lambda d, s: re.search(r"hyper|h2::|tonic|axum|tower|http::|httparse", s)),
    ("logging: tracing, fmt", lambda d, s: re.search(r"tracing|core::fmt|alloc::fmt|Formatter|Display|Debug", s)),
    ("JSON: serde_json", lambda d, s: re.search(r"serde_json|serde::", s)),
    ("protobuf: prost", lambda d, s: "prost" in s),
    ("HMAC-SHA256, hashing", lambda d, s: re.search(r"sha2|hmac|sha256|digest", s, re.I)),
    ("metrics", lambda d, s: "metrics" in s),
    ("tokio runtime", lambda d, s: "tokio" in s),
    ("allocator, memcpy (libc)", lambda d, s: re.search(r"malloc|free|realloc|memcpy|memmove|memset|_int_", s) or "libc" in d),
]
totals = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
    for name, rule in rules:
        if rule(dso, sym):
            totals[name] += pct
            break
    else:
        totals["other (the services' own code, std, unresolved)"] += pct
for name, pct in totals.most_common():
    print(f"{pct:6.1f}%  {name}")
EOF
    log "perf profile ($backend): $OUT/perf-categories-$backend.txt"
  fi
  if [ "$backend" = sqlite ] && wants rejections; then
    stop_pid "$SERVICE_PID"
    start_local "rejections" "$DB_URL" WEBHOOK_RATE_LIMIT=1000000000
    # One attempt each: a rejection is the answer being measured, never retried.
    loadgen_run warmup-rejections -c 64 -n 5000 --invalid-signatures 1.0 --max-attempts 1
    measure bad-signature-raised-limit sqlite 64 -n "$REJECT_N" --invalid-signatures 1.0 --max-attempts 1
    measure oversized-raised-limit sqlite 16 -n 1500 --oversized 1.0 --max-attempts 1
    stop_pid "$SERVICE_PID"
    start_local "rejections-default-limit" "$DB_URL"
    measure bad-signature-default-limit sqlite 64 -n "$REJECT_N" --invalid-signatures 1.0 --max-attempts 1
  fi
  stop_pid "$SERVICE_PID"
done

# --- A stalled change-feed consumer (BENCH_ONLY=watch) ------------------------------------------
# Created deliveries at c=64 with no change stream open, and with four WatchMeetingChanges streams
# that read nothing (loadgen stalled-watchers), alternating which goes first; each run on a fresh
# pair of processes. BENCH_WATCH_FILL=before (the default) opens the streams before a 2,000-event
# warm-up, so that they are stalled (their buffers full) when the measured run starts: the
# steady cost of a stalled consumer. BENCH_WATCH_FILL=during opens them right before the measured
# run, which then also pays for filling their buffers. The stall timeout is raised for the section
# so that the streams stay connected through the run.
if wants watch; then
  WATCH_FILL="${BENCH_WATCH_FILL:-before}"
  export WATCH_STALL_TIMEOUT_SECS=600
  for backend in $BACKENDS; do
    if [ "$backend" = sqlite ]; then DB_URL="$SQLITE_URL"; else DB_URL="$PG_URL"; fi
    for run in $(seq 1 "$RUNS"); do
      order="none stalled"; [ $(( run % 2 )) = 0 ] && order="stalled none"
      for watchers in $order; do
        grpc_port=$(free_port)
        start_meeting_service "watch-$watchers-$backend-$run" "$DB_URL" "$grpc_port"
        start_adapter "watch-$watchers-$backend-$run" "$grpc_port"
        SERVICE_PID=$MEETING_PID
        watcher_pid=""
        open_watchers() {
          rm -f "$OUT/release-watchers"
          "$LOADGEN" stalled-watchers --addr "http://127.0.0.1:$grpc_port" --token "$TOKEN" --streams 4 \
            --until-file "$OUT/release-watchers" --json "$OUT/stalled-$backend-$run.json" \
            >"$OUT/stalled-$backend-$run.txt" 2>&1 &
          watcher_pid=$!
          sleep 1
        }
        [ "$watchers" = stalled ] && [ "$WATCH_FILL" = before ] && open_watchers
        loadgen_run "watch-warmup-$watchers-$backend-$run" -c 16 -n 2000
        [ "$watchers" = stalled ] && [ "$WATCH_FILL" = during ] && open_watchers
        wait_quiet
        m0=$(cpu_ticks "$MEETING_PID")
        loadgen_run "watch-$watchers-$backend-c64-$run" -c 64 -n "$N" --mix created
        m1=$(cpu_ticks "$MEETING_PID")
        held=""
        if [ -n "$watcher_pid" ]; then
          touch "$OUT/release-watchers"
          wait "$watcher_pid" || true
          held=" fill=$WATCH_FILL stalled_streams=$(tr -d '\n' <"$OUT/stalled-$backend-$run.txt" | sed 's/.*ended: //; s/ //g')"
        fi
        result "watch-$watchers-$WATCH_FILL" "$backend" 64 "$run" "$RPS" requests/s \
          "p50=$P50 p99=$P99 meeting_cpu_us=$(( (m1 - m0) * 1000000 / CLK_TCK / REQS )) meeting_rss_peak_kib=$(rss_kib "$MEETING_PID" VmHWM)$held"
        log "watchers=$watchers ($WATCH_FILL) $backend run $run: $RPS req/s p99 $P99 ms$held"
        stop_pid "$ADAPTER_PID"
        stop_pid "$MEETING_PID"
      done
    done
  done
  unset WATCH_STALL_TIMEOUT_SECS
fi

# --- Batch writers: batch size against CPU per delivery (BENCH_ONLY=writers) --------------------
# The meeting service runs one batch writer per two pooled connections, at most four. Created
# deliveries at c=64 (half the bookings matching a lead), with the pool at each size in turn,
# rotating the order, each run on a fresh process: the mean batch size (from
# calendly_ingest_batch_size in /metrics) and the CPU per delivery of the service and of every
# PostgreSQL process, which is what a larger batch amortises and what it does not.
batch_mean() { # metrics-before metrics-after -> mean events per batch between them
  awk '$1 == "calendly_ingest_batch_size_sum" { s[FILENAME] = $2 }
       $1 == "calendly_ingest_batch_size_count" { c[FILENAME] = $2 }
       END { n = c[ARGV[2]] - c[ARGV[1]]; printf "%.1f", (n > 0 ? (s[ARGV[2]] - s[ARGV[1]]) / n : 0) }' "$1" "$2"
}
if wants writers && [[ " $BACKENDS " == *" postgres "* ]]; then
  read -ra pools <<<"${BENCH_POOLS:-2 4 10}"
  for run in $(seq 1 "$RUNS"); do
    for i in "${!pools[@]}"; do
      pool=${pools[$(( (i + run - 1) % ${#pools[@]} ))]}
      start_local "writers-$pool-$run" "$PG_URL" DATABASE_MAX_CONNECTIONS="$pool"
      loadgen_run "writers-warmup-$pool-$run" -c 16 -n 1000
      wait_quiet
      metrics_snapshot "$OUT/metrics-writers-$pool-$run-before.txt"
      s0=$(cpu_ticks "$SERVICE_PID"); p0=$(pg_ticks)
      loadgen_run "writers-$pool-c64-$run" -c 64 -n "$N" --mix created --lead-share 0.5 --lead-pool 1000
      s1=$(cpu_ticks "$SERVICE_PID"); p1=$(pg_ticks)
      metrics_snapshot "$OUT/metrics-writers-$pool-$run-after.txt"
      batch=$(batch_mean "$OUT/metrics-writers-$pool-$run-before.txt" "$OUT/metrics-writers-$pool-$run-after.txt")
      service_us=$(( (s1 - s0) * 1000000 / CLK_TCK / REQS ))
      postgres_us=$(( (p1 - p0) * 1000000 / CLK_TCK / REQS ))
      result "writers-pool-$pool" postgres 64 "$run" "$ACKPS" deliveries/s \
        "p99=$P99 mean_batch=$batch service_cpu_us=$service_us postgres_cpu_us=$postgres_us"
      log "pool $pool run $run: $ACKPS deliveries/s, mean batch $batch, CPU/delivery service $service_us µs, PostgreSQL $postgres_us µs"
      stop_pid "$SERVICE_PID"
    done
  done
fi

# --- Separate binaries: per-process memory and CPU, and 100,000 deliveries -----------------------
if wants memory; then
  start_split split "$PG_URL"
  sleep 2
  LOAD="$(cut -d' ' -f1 /proc/loadavg)"
  result rss-idle-adapter postgres 0 1 "$(rss_kib "$ADAPTER_PID")" KiB "own binary, right after start"
  result rss-idle-meeting-service postgres 0 1 "$(rss_kib "$MEETING_PID")" KiB "own binary, right after start"
  loadgen_run warmup-split -c 16 -n 1000
  for run in $(seq 1 "$RUNS"); do
    wait_quiet
    a0=$(cpu_ticks "$ADAPTER_PID"); m0=$(cpu_ticks "$MEETING_PID")
    loadgen_run "split-created-c64-$run" -c 64 -n "$N" --mix created
    a1=$(cpu_ticks "$ADAPTER_PID"); m1=$(cpu_ticks "$MEETING_PID")
    result split-created postgres 64 "$run" "$RPS" requests/s \
      "p50=$P50 p99=$P99 adapter_cpu_us=$(( (a1 - a0) * 1000000 / CLK_TCK / REQS )) meeting_cpu_us=$(( (m1 - m0) * 1000000 / CLK_TCK / REQS ))"
    log "split c=64 run $run: $RPS req/s p99 $P99 ms"
  done
  result rss-peak-adapter postgres 64 1 "$(rss_kib "$ADAPTER_PID" VmHWM)" KiB "VmHWM after c=64 runs"
  result rss-peak-meeting-service postgres 64 1 "$(rss_kib "$MEETING_PID" VmHWM)" KiB "VmHWM after c=64 runs"

  log "memory across $MEMORY_N deliveries (c=16), RSS every 10 s"
  wait_quiet
  echo "elapsed_s,adapter_rss_kib,meeting_service_rss_kib" >"$OUT/memory-100k.csv"
  "$LOADGEN" --url "$URL" --secret "$SECRET" --mix created -n "$MEMORY_N" -c 16 --time-limit-secs 1500 \
    --json "$OUT/memory-100k.json" >"$OUT/memory-100k.txt" 2>&1 &
  gen=$!
  started=$(date +%s)
  while kill -0 "$gen" 2>/dev/null; do
    echo "$(( $(date +%s) - started )),$(rss_kib "$ADAPTER_PID"),$(rss_kib "$MEETING_PID")" >>"$OUT/memory-100k.csv"
    sleep 10
  done
  wait "$gen" || log "the 100k run reported a failure: $OUT/memory-100k.txt"
  sleep 5
  echo "$(( $(date +%s) - started )),$(rss_kib "$ADAPTER_PID"),$(rss_kib "$MEETING_PID")" >>"$OUT/memory-100k.csv"
  result rss-after-100k-adapter postgres 16 1 "$(rss_kib "$ADAPTER_PID")" KiB "idle after $MEMORY_N deliveries"
  result rss-after-100k-meeting-service postgres 16 1 "$(rss_kib "$MEETING_PID")" KiB "idle after $MEMORY_N deliveries"
  stop_pid "$ADAPTER_PID"
  stop_pid "$MEETING_PID"
fi

# --- Summary ------------------------------------------------------------------------------------
python3 - "$RESULTS" >"$OUT/summary.md" <<'EOF'
import collections, csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = collections.OrderedDict()
for r in rows:
    groups.setdefault((r["what"], r["backend"], r["concurrency"], r["unit"]), []).append(r)
print("| what | backend | c | median | min-max | unit | load1 | details (median run) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (what, backend, c, unit), rs in groups.items():
    vals = [float(r["value"]) for r in rs]
    med = statistics.median(vals)
    mid = min(rs, key=lambda r: abs(float(r["value"]) - med))
    loads = ",".join(r["load1"] for r in rs)
    print(f"| {what} | {backend} | {c} | {med:,.1f} | {min(vals):,.1f}-{max(vals):,.1f} | {unit} | {loads} | {mid['extra']} |")
EOF
cat "$OUT/summary.md"
log "results in $OUT"
