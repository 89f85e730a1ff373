#!/usr/bin/env bash
# Fuzzes the orchestrator against its own OpenAPI document (issue #15): the document is checked
# against the OpenAPI 3.1 meta-schema (openapi-spec-validator), then Schemathesis (both from PyPI,
# in a venv cached at $AVTO_SCHEMATHESIS_VENV) runs every operation of /_public/openapi.json of
# examples/api_demo.rs (the demo blueprints, in-memory storage, 127.0.0.1), with and without a
# valid token, plus the stateful sequences the document's links describe. Fails on a 5xx, on an
# answer that breaks the document, or on a request the document calls invalid being accepted.
# (Not positive_data_acceptance: an approval's valid decisions depend on the job, and the links
# Schemathesis infers by itself feed blueprint names into job ids.)
#   bash .ci/schemathesis.sh install   # only the venv (idempotent)
#   bash .ci/schemathesis.sh           # install if needed, build the example, fuzz
# Both processes run in a network namespace of their own with only a loopback interface (when
# `unshare --net` is allowed, as root in CI): no generated webhook URL can reach any other host.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
# The document is also checked against the OpenAPI 3.1 meta-schema.
VALIDATOR_VERSION=0.9.0
VENV="${AVTO_SCHEMATHESIS_VENV:-/var/cache/avto/venv-schemathesis}"
installed() {
    "$VENV/bin/python" -c "import importlib.metadata as m, sys
sys.exit(not (m.version('schemathesis') == '$VERSION' and m.version('openapi-spec-validator') == '$VALIDATOR_VERSION'))" 2>/dev/null
}
if ! installed; then
    echo "== installing schemathesis $VERSION and openapi-spec-validator $VALIDATOR_VERSION into $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "schemathesis==$VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
fi
"$VENV/bin/st" --version
[ "${1:-}" = install ] && exit 0

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# The workspace's feature set (the same build as `cargo test --workspace --all-features`), so S3 is in.
cargo build -q --workspace --all-features --example api_demo
BIN="$(cd "$CARGO_TARGET_DIR" && pwd)/debug/examples/api_demo"
# The file routes run against a real S3-protocol server (without one they answer 501).
export AVTO_S3S_FS="${AVTO_S3S_FS:-$HOME/.cache/avto/s3s-fs/bin/s3s-fs}"
bash .ci/s3.sh install
S3S="$AVTO_S3S_FS"

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

inner() {
    set -euo pipefail
    if [ "${AVTO_OWN_NETNS:-}" = 1 ]; then ip link set lo up; fi
    local port=18950 s3_port=18951
    local log
    log=$(mktemp)
    DATA=$(mktemp -d)
    mkdir "$DATA/s3"
    "$S3S" --host 127.0.0.1 --port $s3_port --access-key fuzz-access --secret-key fuzz-secret "$DATA/s3" >"$log.s3" 2>&1 &
    S3S_PID=$!
    wait_port $s3_port || { echo "s3s-fs did not start:"; cat "$log.s3"; return 1; }
    API_HOST=127.0.0.1 API_PORT=$port CLIENT_TOKEN=fuzz-client-token ADMIN_TOKEN=fuzz-admin-token \
        GLOBAL_WORKER_TOKEN=fuzz-worker-token ORCHESTRATOR_SECRET_KEY=fuzz-secret RATE_LIMITING_ENABLED=false \
        S3_ENDPOINT_URL="http://127.0.0.1:$s3_port" S3_ACCESS_KEY=fuzz-access S3_SECRET_KEY=fuzz-secret \
        LOG_LEVEL=warn LOG_FORMAT=text "$BIN" >"$log" 2>&1 &
    SERVER_PID=$!
    trap 'kill $SERVER_PID $S3S_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
    wait_port $port || { echo "the orchestrator did not start:"; cat "$log"; return 1; }
    local base="http://127.0.0.1:$port"
    local status=0
    echo "== openapi-spec-validator (OpenAPI 3.1)"
    "$VENV/bin/python" -c "import sys, urllib.request
open(sys.argv[2], 'wb').write(urllib.request.urlopen(sys.argv[1]).read())" "$base/_public/openapi.json" "$DATA/openapi.json"
    "$VENV/bin/openapi-spec-validator" --schema 3.1 "$DATA/openapi.json" || status=1
    # With the client token (the operator routes then answer 403, documented), without any, and
    # the operator's routes with the operator credential.
    for auth in client-token no-token operator-token; do
        local args=() phases=examples,coverage,fuzzing,stateful
        case $auth in
            client-token) args=(-H "X-Client-Token: fuzz-client-token") ;;
            # (the operator's routes have no links: no stateful phase)
            operator-token)
                args=(-H "Authorization: Bearer fuzz-admin-token" -H "X-Admin-Token: fuzz-admin-token" --include-tag operator)
                phases=examples,coverage,fuzzing
                ;;
        esac
        echo "== schemathesis ($auth)"
        # Stateful sequences follow the document's links only: the links Schemathesis would infer
        # from parameter names feed blueprint names into job ids (GET /api/v1/jobs/echo is the
        # create route's 405, not a job).
        printf '[phases.stateful.inference]\nalgorithms = []\n' >"$DATA/schemathesis.toml"
        # (from the temporary directory: Schemathesis keeps a `.schemathesis/` cache where it runs)
        (cd "$DATA" && "$VENV/bin/st" --config-file "$DATA/schemathesis.toml" run "$base/_public/openapi.json" --url "$base" "${args[@]}" \
            --phases "$phases" --max-examples "${AVTO_FUZZ_EXAMPLES:-50}" \
            --checks not_a_server_error,negative_data_rejection,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,use_after_free,ensure_resource_availability \
            --request-timeout 10 --no-color --suppress-health-check all --seed 1) || status=1
    done
    if grep -q "panicked" "$log"; then echo "the orchestrator panicked:"; cat "$log"; status=1; fi
    return $status
}
export -f inner wait_port
export BIN VENV S3S
if unshare --net true 2>/dev/null; then
    AVTO_OWN_NETNS=1 unshare --net bash -c inner
else
    echo "(no network namespace: running on the host's loopback)"
    inner
fi
