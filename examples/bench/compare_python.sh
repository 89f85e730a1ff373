#!/usr/bin/env bash
# Side by side, in one run, with the same load and the same client (examples/bench.rs: J jobs of
# the one-task echo blueprint, C in flight, each waited for through its webhook, plus single
# jobs one at a time for the idle latency):
#   1. the Python reference: avtomatika 1.0b30 (in-memory) + N avtomatika-worker 1.0b20 workers;
#   2. avto (release, in-memory) + the same N Python SDK workers (the orchestrator alone swapped);
#   3. avto + N Rust SDK workers: the full avto stack (in memory);
#   4. the same on Redis (REDIS_URL, default redis://127.0.0.1:6379, under a fresh key prefix);
#   5. memory per retained finished job (RETAINED_JOBS echo jobs kept by the orchestrator, default
#      100,000: at 20,000 the RSS moves in allocator steps of several MiB, so the per-job number
#      varied from 714 to 1,359 bytes between runs of one build; at 100,000 within 3%);
#   6. compile time of blueprints of 0..100 states (incremental debug builds), avto linked
#      statically and through avto-dylib.
# Rate limiting off, signing on, 127.0.0.1 only. Prints each run, then every issue #19 number
# with its ratio and target.
#
#   examples/bench/compare_python.sh [JOBS=20000] [WORKERS=4] [CONCURRENCY=256]
#
# SKIP=python,redis,retained,compile leaves parts out (their rows print "not run").
# Env: AVTO_PY_VENV (the reference venv; installed from PyPI if missing), PY_REF_DIR (the folder
# with py_ref.sh and echo_orchestrator.py; default ../shared/reference/python-ref),
# PY_MAX_CONCURRENT (tasks per Python worker, default CONCURRENCY/WORKERS), RETAINED_JOBS, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS="${1:-20000}"
N="${2:-4}"
C="${3:-256}"
VENV="${AVTO_PY_VENV:-$HOME/.cache/avto/venv-ref}"
REF="${PY_REF_DIR:-$(cd .. && pwd)/shared/reference/python-ref}"
PY="$VENV/bin/python"
RUN="$(mktemp -d)"
TARGET="${CARGO_TARGET_DIR:-target}"
BENCH="$TARGET/release/examples/bench"
CT=bench-client-token WT=bench-worker-token SK=bench-orchestrator-secret
PY_PORT=18180 AV_PORT=18181 AV_RUST_PORT=18182
PY_MAXC="${PY_MAX_CONCURRENT:-$((C / N))}"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
SKIP=",${SKIP:-},"
skip() { [[ "$SKIP" == *",$1,"* ]]; }

[[ -x "$PY" ]] || PY_REF_VENV="$VENV" bash .ci/py_ref_install.sh
[[ -f "$REF/py_ref.sh" ]] || { echo "py_ref.sh not found in $REF (set PY_REF_DIR)" >&2; exit 2; }
cargo build -q --release -p avto-examples --example bench --example echo_server

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    PY_REF_VENV="$VENV" PY_REF_RUN="$RUN/py" bash "$REF/py_ref.sh" stop >/dev/null 2>&1 || true
    rm -rf "$RUN"
}
trap cleanup EXIT

bench() {  # label [bench args...]
    local label="$1"; shift
    "$BENCH" --jobs "$JOBS" --concurrency "$C" --label "$label" --json-out "$RUN/$label.json" "$@" | sed 's/^/  /'
}

if ! skip python; then
    echo "== 1. Python reference: avtomatika 1.0b30 + $N avtomatika-worker 1.0b20 workers ($PY_MAXC tasks each)"
    PY_REF_VENV="$VENV" PY_REF_RUN="$RUN/py" PY_REF_PORT=$PY_PORT PY_REF_CLIENT_TOKEN=$CT PY_REF_WORKER_TOKEN=$WT \
        PY_REF_SECRET=$SK PY_REF_MAX_CONCURRENT="$PY_MAXC" bash "$REF/py_ref.sh" start "$N" | sed 's/^/  /'
    bench python --target "http://127.0.0.1:$PY_PORT" --target-pid "$(cat "$RUN/py/orchestrator.pid")" --workers 0
    PY_REF_VENV="$VENV" PY_REF_RUN="$RUN/py" bash "$REF/py_ref.sh" stop | sed 's/^/  /'

    echo "== 2. avto (release, in-memory) + the same $N Python SDK workers"
    API_HOST=127.0.0.1 API_PORT=$AV_PORT CLIENT_TOKEN=$CT GLOBAL_WORKER_TOKEN=$WT ORCHESTRATOR_SECRET_KEY=$SK \
        RATE_LIMITING_ENABLED=false WEBHOOK_ALLOW_PRIVATE=true LOG_LEVEL=warn EXECUTOR_MAX_CONCURRENT_JOBS=10000 \
        "$TARGET/release/examples/echo_server" >"$RUN/avto.log" 2>&1 &
    avto_pid=$!
    pids+=("$avto_pid")
    for _ in $(seq 1 100); do curl -s -m 1 "http://127.0.0.1:$AV_PORT/_public/status" >/dev/null && break; sleep 0.1; done
    for i in $(seq 1 "$N"); do
        ORCHESTRATOR_URL="http://127.0.0.1:$AV_PORT" WORKER_ID="bench-worker-$i" WORKER_TOKEN=$WT ORCHESTRATOR_SECRET_KEY=$SK \
            LOG_LEVEL=WARNING MAX_CONCURRENT_TASKS="$PY_MAXC" WORKER_ENABLE_WEBSOCKETS=false HEARTBEAT_INTERVAL=15 \
            TASK_FILES_DIR="$RUN/payloads" "$PY" "$REF/echo_worker.py" >"$RUN/worker-$i.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 1 150); do
        got=$(curl -s -m 2 -H "X-Client-Token: $CT" "http://127.0.0.1:$AV_PORT/api/v1/workers" | "$PY" -c 'import sys,json
try: print(len(json.load(sys.stdin)))
except Exception: print(0)')
        [[ "$got" -ge "$N" ]] && break
        sleep 0.2
    done
    bench avto-python-workers --target "http://127.0.0.1:$AV_PORT" --target-pid "$avto_pid" --workers 0
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pids=()
fi

echo "== 3. avto (release, in-memory) + $N Rust SDK workers"
bench avto --workers "$N" --port "$AV_RUST_PORT" --waiting 100000

echo "== 4. avto (release, Redis $REDIS) + $N Rust SDK workers"
skip redis || REDIS_URL="$REDIS" bench avto-redis --workers "$N" --port "$AV_RUST_PORT" --waiting 0

echo "== 5. avto: memory per retained finished job"
skip retained || "$BENCH" --retained "${RETAINED_JOBS:-100000}" --workers "$N" --port "$AV_RUST_PORT" --label retained \
    --json-out "$RUN/retained.json" | sed 's/^/  /'

echo "== 6. compile time of an N-state blueprint (incremental debug build)"
skip compile || "$BENCH" --compile-states 0,10,25,50,100 --compile-dylib --json-out "$RUN/compile.json" | sed 's/^/  /'

"$PY" "$(dirname "$0")/compare_summary.py" "$RUN"
