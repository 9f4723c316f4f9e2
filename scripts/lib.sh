# Helpers the scripts share: sourced by bench.sh, fault-runs.sh, schemathesis.sh,
# check-reflection.sh, sqlite-page-size.sh, oversized-ab.sh and cpu-split.sh. Every service listens
# on 127.0.0.1 only.
#
# start_local, start_meeting_service and start_adapter expect BIN (the binaries' directory), OUT
# (where logs go), SECRET and TOKEN, and a PIDS array the caller kills at exit.

# cargo, also where rustup's environment is not loaded yet.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

now_ms() { date +%s%3N; }

# results_dir NAME: creates target/bench/NAME-<time>/ and prints its absolute path.
results_dir() {
  local dir; dir="target/bench/$1-$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$dir"
  (cd "$dir" && pwd)
}

# kill_started_at_exit: at the script's exit, stops every process in PIDS still running.
kill_started_at_exit() {
  trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
}

# wait_http URL SECONDS: until URL answers 2xx; false if it never does.
wait_http() {
  local _
  for _ in $(seq 1 $(($2 * 10))); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

# stop_pid PID: SIGTERM, and SIGKILL if it has not exited 15 s later.
stop_pid() {
  local _
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# rss_kib PID [VmRSS|VmHWM]: resident memory of a process, 0 once it is gone.
rss_kib() { awk -v k="${2:-VmRSS}" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# cpu_ticks PID: its user plus system time, in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# pg_ticks: the user plus system time of every PostgreSQL process, in clock ticks (a process that
# exits meanwhile counts 0).
pg_ticks() {
  local total=0 pid
  for pid in $(pgrep -x postgres); do
    total=$(( total + $(cpu_ticks "$pid" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

# machine_ticks: the whole machine's CPU time so far, every core, in clock ticks: user nice system
# idle iowait irq softirq steal.
machine_ticks() { head -n 1 /proc/stat | cut -d' ' -f3-10; }

# machine_split BEFORE AFTER DELIVERIES LOADGEN_JSON: from two machine_ticks readings around a
# load generator run, prints the machine's CPU per delivery in µs, the share of the cores left
# idle in percent, and the load generator's own CPU per delivery in µs (from its JSON report).
machine_split() {
  python3 - "$1" "$2" "$(getconf CLK_TCK)" "$3" "$4" <<'EOF'
import json, sys
d = [b - a for a, b in zip(map(int, sys.argv[1].split()), map(int, sys.argv[2].split()))]
tck, n = int(sys.argv[3]), max(int(sys.argv[4]), 1)
idle = d[3] + d[4]
loadgen = json.load(open(sys.argv[5])).get("generator_cpu_secs") or 0
print(round((sum(d) - idle) / tck / n * 1e6), round(100 * idle / max(sum(d), 1), 1), round(loadgen / n * 1e6))
EOF
}

# binaries PROFILE: builds the binaries the scripts start (the one-process `local`, the load
# generator, the adapter and the meeting service) with PROFILE, and sets BIN to where they are.
binaries() {
  local profile="$1"
  cargo build --profile "$profile" -q -p tests --bin loadgen --bin local \
    -p adapter --bin adapter -p meeting-service --bin meeting-service
  local target="${CARGO_TARGET_DIR:-$(pwd)/target}"
  if [ "$profile" = dev ]; then BIN="$target/debug"; else BIN="$target/$profile"; fi
  LOADGEN="$BIN/loadgen"
}

# start_local NAME DATABASE_URL [VAR=VALUE...]: both services in one process, as `cargo run`.
# Sets SERVICE_PID, URL (the webhook), GRPC and METRICS.
start_local() {
  local name="$1" url="$2"; shift 2
  local http_port grpc_port metrics_port
  http_port=$(free_port); grpc_port=$(free_port); metrics_port=$(free_port)
  env DATABASE_URL="$url" HTTP_ADDR="127.0.0.1:$http_port" GRPC_ADDR="127.0.0.1:$grpc_port" \
    METRICS_ADDR="127.0.0.1:$metrics_port" CALENDLY_WEBHOOK_SECRET="$SECRET" LOG_DIR=off \
    SHUTDOWN_GRACE_SECS=5 "$@" "$BIN/local" >"$OUT/$name.log" 2>&1 &
  SERVICE_PID=$!
  PIDS+=("$SERVICE_PID")
  wait_http "http://127.0.0.1:$http_port/webhook/calendly/health" 120 \
    || { log "the local binary did not start; see $OUT/$name.log"; return 1; }
  URL="http://127.0.0.1:$http_port/webhook/calendly"
  GRPC="http://127.0.0.1:$grpc_port"
  METRICS="http://127.0.0.1:$metrics_port/metrics"
}

# start_meeting_service NAME DATABASE_URL GRPC_PORT: its own binary; sets MEETING_PID.
start_meeting_service() {
  env DATABASE_URL="$2" GRPC_ADDR="127.0.0.1:$3" METRICS_ADDR="127.0.0.1:$(free_port)" \
    INTERNAL_API_TOKEN="$TOKEN" LOG_DIR=off SHUTDOWN_GRACE_SECS=5 \
    "$BIN/meeting-service" >>"$OUT/$1-meeting-service.log" 2>&1 &
  MEETING_PID=$!
  PIDS+=("$MEETING_PID")
  "$LOADGEN" health --addr "http://127.0.0.1:$3" --expect SERVING --wait-secs 120 >/dev/null
}

# start_adapter NAME GRPC_PORT: its own binary in front of that meeting service; sets ADAPTER_PID
# and URL.
start_adapter() {
  local http_port; http_port=$(free_port)
  env HTTP_ADDR="127.0.0.1:$http_port" METRICS_ADDR="127.0.0.1:$(free_port)" \
    MEETING_SERVICE_URL="http://127.0.0.1:$2" INTERNAL_API_TOKEN="$TOKEN" \
    CALENDLY_WEBHOOK_SECRET="$SECRET" LOG_DIR=off SHUTDOWN_GRACE_SECS=5 \
    "$BIN/adapter" >>"$OUT/$1-adapter.log" 2>&1 &
  ADAPTER_PID=$!
  PIDS+=("$ADAPTER_PID")
  wait_http "http://127.0.0.1:$http_port/webhook/calendly/health" 120 \
    || { log "the adapter did not start; see $OUT/$1-adapter.log"; return 1; }
  URL="http://127.0.0.1:$http_port/webhook/calendly"
}

# check_local [VAR=VALUE...]: for the check scripts, the debug `local` binary (built first; or
# LOCAL_BINARY) on an SQLite file in a scratch directory, stopped and removed at exit. Sets OUT (the
# scratch directory), URL, GRPC and SERVICE_PID.
check_local() {
  OUT=$(mktemp -d)
  SECRET="${SECRET:-check-key}"
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do stop_pid "$p"; done; rm -rf "$OUT"' EXIT
  if [ -n "${LOCAL_BINARY:-}" ]; then
    BIN=$(dirname "$LOCAL_BINARY")
  else
    cargo build -q -p tests --bin local
    BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/debug"
  fi
  start_local check "${DATABASE_URL:-sqlite://$OUT/meetings.db?mode=rwc}" "$@" \
    || { cat "$OUT/check.log" >&2; return 1; }
}
