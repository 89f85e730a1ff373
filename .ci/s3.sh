#!/usr/bin/env bash
# The S3-protocol server of the S3 tests: s3s-fs (an S3 server over a directory) from crates.io.
#   bash .ci/s3.sh install   # build it into the cache unless it is there (idempotent; ~5 min once per machine)
#   bash .ci/s3.sh start     # install, then start it on 127.0.0.1 on a free port with a temporary data
#                            # directory; prints the S3_* variables for avto and the server's pid
# tests/s3.rs starts its own s3s-fs processes from $AVTO_S3S_FS and fails (never skips) without it.
# Environment:
#   AVTO_S3S_FS   the binary (default: ${AVTO_CACHE:-$HOME/.cache/avto}/s3s-fs/bin/s3s-fs)
set -euo pipefail

VERSION=0.14.1
BIN="${AVTO_S3S_FS:-${AVTO_CACHE:-$HOME/.cache/avto}/s3s-fs/bin/s3s-fs}"

install() {
    if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qx "s3s-fs $VERSION"; then
        return
    fi
    local prefix build start
    prefix="$(dirname "$(dirname "$BIN")")"
    build="$(mktemp -d)"
    start=$(date +%s)
    echo "== installing s3s-fs $VERSION into $prefix (cargo install, a one-off per machine)"
    # Its own target dir: the workspace's CARGO_TARGET_DIR stays untouched.
    env -u CARGO_TARGET_DIR cargo install s3s-fs --version "$VERSION" --features binary --locked \
        --root "$prefix" --target-dir "$build" --quiet
    rm -rf "$build"
    if [ "$(readlink -f "$prefix/bin/s3s-fs")" != "$(readlink -f "$BIN")" ]; then
        echo "s3s-fs was installed as $prefix/bin/s3s-fs but AVTO_S3S_FS=$BIN; point AVTO_S3S_FS at a .../bin/s3s-fs path" >&2
        exit 1
    fi
    echo "== s3s-fs $VERSION installed in $(( $(date +%s) - start )) s: $BIN"
}

start() {
    install
    local data log
    data="$(mktemp -d -t avto-s3s.XXXXXX)"
    log="$data.log"
    RUST_LOG=info NO_COLOR=1 nohup "$BIN" --host 127.0.0.1 --port 0 \
        --access-key avto-access --secret-key avto-secret "$data" >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        if endpoint="$(grep -o 'server is running at http://[0-9.:]*' "$log" | head -n1 | sed 's/.* at //')" \
            && [ -n "$endpoint" ]; then
            echo "S3_ENDPOINT_URL=$endpoint"
            echo "S3_ACCESS_KEY=avto-access"
            echo "S3_SECRET_KEY=avto-secret"
            echo "S3S_FS_PID=$pid"
            echo "S3S_FS_DATA=$data"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "s3s-fs did not start in 10 s:" >&2
    cat "$log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
}

case "${1:-install}" in
    install) install ;;
    start) start ;;
    *) echo "usage: $0 [install|start]" >&2; exit 2 ;;
esac
