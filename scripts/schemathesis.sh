#!/usr/bin/env bash
# Property-based run of schemathesis against the running stack, driven by adapter/openapi.json:
# no 5xx, and every status, content type, header and body as the description says.
#
#   scripts/schemathesis.sh                      # on a fresh SQLite file
#   DATABASE_URL=postgres://… scripts/schemathesis.sh
#
# Builds the `local` binary (debug; LOCAL_BINARY names another) and needs schemathesis (pip install
# schemathesis). Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
http_port=$(free_port)
if [ -z "${LOCAL_BINARY:-}" ]; then
  cargo build -q -p tests --bin local
fi
binary=${LOCAL_BINARY:-${CARGO_TARGET_DIR:-target}/debug/local}

# Limits raised so the run explores the API rather than the rate limiter (429 is described too).
env CALENDLY_WEBHOOK_SECRET=schemathesis-key \
  DATABASE_URL="${DATABASE_URL:-sqlite://$work/meetings.db?mode=rwc}" \
  HTTP_ADDR="127.0.0.1:$http_port" GRPC_ADDR="127.0.0.1:$(free_port)" METRICS_ADDR="127.0.0.1:$(free_port)" \
  WEBHOOK_RATE_LIMIT=100000 TEST_RATE_LIMIT=100000 LOG_DIR=off \
  "$binary" >"$work/service.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$http_port/webhook/calendly/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$http_port/webhook/calendly/health" >/dev/null \
  || { cat "$work/service.log"; echo "the service did not start" >&2; exit 1; }

schemathesis run adapter/openapi.json \
  --url "http://127.0.0.1:$http_port" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --workers 2 \
  --max-time 60
