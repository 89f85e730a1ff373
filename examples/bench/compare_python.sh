#!/usr/bin/env bash
# Side by side, in one run, with the same load generator (load.py, waiting through webhooks):
#   1. the Python reference (avtomatika 1.0b30, in-memory) + N Python SDK workers (avtomatika-worker 1.0b20);
#   2. avto (release, in-memory) + the same N Python SDK workers (the orchestrator alone swapped);
#   3. avto + N Rust SDK workers (examples/echo_worker.rs): full stack vs full stack.
# Rate limiting off, signing on, on 127.0.0.1 only.
#
#   examples/bench/compare_python.sh [JOBS=1000] [WORKERS=4]
#
# Env: AVTO_PY_VENV (the reference venv; installed from PyPI if missing), PY_REF_DIR (the folder with
# py_ref.sh, echo_worker.py and load.py; default ../shared/reference/python-ref), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS="${1:-1000}"
N="${2:-4}"
VENV="${AVTO_PY_VENV:-$HOME/.cache/avto/venv-ref}"
REF="${PY_REF_DIR:-$(cd .. && pwd)/shared/reference/python-ref}"
PY="$VENV/bin/python"
RUN="$(mktemp -d)"
TARGET="${CARGO_TARGET_DIR:-target}"
CT=bench-client-token WT=bench-worker-token SK=bench-orchestrator-secret
PY_PORT=18180 AV_PORT=18181

[[ -x "$PY" ]] || PY_REF_VENV="$VENV" bash .ci/py_ref_install.sh
[[ -f "$REF/load.py" ]] || { echo "load.py not found in $REF (set PY_REF_DIR)" >&2; exit 2; }
cargo build -q --release -p avto-examples --example echo_server --example echo_worker

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; PY_REF_VENV="$VENV" PY_REF_RUN="$RUN/py" bash "$REF/py_ref.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

workers_up() {  # base n
    for _ in $(seq 1 150); do
        got=$(curl -s -m 2 -H "X-Client-Token: $CT" "$1/api/v1/workers" | "$PY" -c 'import sys,json
try: print(len(json.load(sys.stdin)))
except Exception: print(0)')
        [[ "$got" -ge "$2" ]] && return 0
        sleep 0.2
    done
    echo "workers did not register at $1" >&2; return 1
}

load() {  # label base jobs concurrency
    "$PY" "$REF/load.py" --base-url "$2" --path /api/v1/jobs/echo --header "X-Client-Token: $CT" \
        --body '{"initial_data":{"msg":"hello"}}' --jobs "$3" -c "$4" --wait webhook --warmup 20 \
        --label "$1" --json-out "$RUN/$1.json" | sed 's/^/  /'
}

echo "== Python reference: avtomatika 1.0b30 + $N avtomatika-worker 1.0b20 workers"
PY_REF_VENV="$VENV" PY_REF_RUN="$RUN/py" PY_REF_PORT=$PY_PORT PY_REF_CLIENT_TOKEN=$CT PY_REF_WORKER_TOKEN=$WT \
    PY_REF_SECRET=$SK bash "$REF/py_ref.sh" start "$N" | sed 's/^/  /'
load py-idle "http://127.0.0.1:$PY_PORT" 100 1
load py-load "http://127.0.0.1:$PY_PORT" "$JOBS" 64
PY_REF_VENV="$VENV" PY_REF_RUN="$RUN/py" bash "$REF/py_ref.sh" stop | sed 's/^/  /'

echo "== avto (release, in-memory) + the same $N Python SDK workers"
API_HOST=127.0.0.1 API_PORT=$AV_PORT CLIENT_TOKEN=$CT GLOBAL_WORKER_TOKEN=$WT ORCHESTRATOR_SECRET_KEY=$SK \
    RATE_LIMITING_ENABLED=false LOG_LEVEL=warn "$TARGET/release/examples/echo_server" >"$RUN/avto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -s -m 1 "http://127.0.0.1:$AV_PORT/_public/status" >/dev/null && break; sleep 0.1; done
for i in $(seq 1 "$N"); do
    ORCHESTRATOR_URL="http://127.0.0.1:$AV_PORT" WORKER_ID="bench-worker-$i" WORKER_TOKEN=$WT ORCHESTRATOR_SECRET_KEY=$SK \
        LOG_LEVEL=WARNING MAX_CONCURRENT_TASKS=10 WORKER_ENABLE_WEBSOCKETS=false HEARTBEAT_INTERVAL=15 \
        TASK_FILES_DIR="$RUN/payloads" "$PY" "$REF/echo_worker.py" >"$RUN/worker-$i.log" 2>&1 &
    pids+=($!)
done
workers_up "http://127.0.0.1:$AV_PORT" "$N"
load avto-idle "http://127.0.0.1:$AV_PORT" 100 1
load avto-load "http://127.0.0.1:$AV_PORT" "$JOBS" 64
for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
pids=("${pids[0]}")
sleep 1

echo "== avto (release, in-memory) + $N Rust SDK workers"
for i in $(seq 1 "$N"); do
    ORCHESTRATOR_URL="http://127.0.0.1:$AV_PORT" WORKER_ID="bench-rust-$i" WORKER_TOKEN=$WT ORCHESTRATOR_SECRET_KEY=$SK \
        MAX_CONCURRENT_TASKS=64 RUST_LOG=warn "$TARGET/release/examples/echo_worker" >"$RUN/rust-worker-$i.log" 2>&1 &
    pids+=($!)
done
# The Python workers said goodbye (offline heartbeats); wait for the Rust ones.
for _ in $(seq 1 150); do
    got=$(curl -s -m 2 -H "X-Client-Token: $CT" "http://127.0.0.1:$AV_PORT/api/v1/workers" | "$PY" -c 'import sys,json
try: print(sum(1 for w in json.load(sys.stdin) if w["worker_id"].startswith("bench-rust")))
except Exception: print(0)')
    [[ "$got" -ge "$N" ]] && break
    sleep 0.2
done
load rust-idle "http://127.0.0.1:$AV_PORT" 100 1
load rust-load "http://127.0.0.1:$AV_PORT" "$JOBS" 64

"$PY" - "$RUN" <<'PYEOF'
import json, sys, os
run = sys.argv[1]
r = {k: json.load(open(os.path.join(run, k + ".json"))) for k in ["py-idle", "py-load", "avto-idle", "avto-load", "rust-idle", "rust-load"]}
def g(d, *names):
    for n in names:
        if n in d: return d[n]
        for k, v in d.items():
            if isinstance(v, dict) and n in v: return v[n]
    return float("nan")
py_tp, av_tp = g(r["py-load"], "jobs_per_s"), g(r["avto-load"], "jobs_per_s")
py_lat, av_lat = r["py-idle"]["lat_ms"]["p50"], r["avto-idle"]["lat_ms"]["p50"]
ru_tp, ru_lat = g(r["rust-load"], "jobs_per_s"), r["rust-idle"]["lat_ms"]["p50"]
print("== same run, same client (load.py, webhooks)")
print(f"  orchestrator only (Python workers on both):  throughput python {py_tp:8.1f}  avto {av_tp:8.1f} jobs/s  -> {av_tp/py_tp:5.2f}x;  idle p50 python {py_lat:6.2f}  avto {av_lat:6.2f} ms -> {py_lat/av_lat:5.2f}x")
print(f"  full stack (avto + Rust workers):            throughput python {py_tp:8.1f}  avto {ru_tp:8.1f} jobs/s  -> {ru_tp/py_tp:5.2f}x;  idle p50 python {py_lat:6.2f}  avto {ru_lat:6.2f} ms -> {py_lat/ru_lat:5.2f}x")
PYEOF
