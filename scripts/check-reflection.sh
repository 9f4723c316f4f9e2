#!/usr/bin/env bash
# Python's grpcio-reflection client, which speaks only grpc.reflection.v1alpha, lists the meeting
# service's API on the `cargo run` binary: reflection works for v1alpha clients, not only v1 ones.
#
#   scripts/check-reflection.sh        (builds the debug `local` binary; LOCAL_BINARY names another)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import grpc_reflection' 2>/dev/null || python3 -m pip install -q grpcio grpcio-reflection
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
check_local
grpc_port="${GRPC##*:}"
python3 - "$grpc_port" <<'PY'
import sys, time
import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

target = f"127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 60
while True:
    try:
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=2)
        break
    except grpc.FutureTimeoutError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing answered on {target}")
stub = reflection_pb2_grpc.ServerReflectionStub(channel)
request = reflection_pb2.ServerReflectionRequest(list_services="")
answer = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
services = sorted(s.name for s in answer.list_services_response.service)
print("v1alpha reflection lists:", ", ".join(services))
if "calendly.meetings.v1.MeetingService" not in services:
    sys.exit("calendly.meetings.v1.MeetingService is missing")
PY
