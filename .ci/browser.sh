#!/usr/bin/env bash
# What tests/dashboard_browser.rs needs: Chromium and its WebDriver from the Debian packages,
# and axe-core from npm. Installs only what is missing; safe to run again.
#   bash .ci/browser.sh
# Environment:
#   AVTO_NPM_PREFIX  where axe-core is installed (default: /var/cache/avto/npm)
set -euo pipefail

AXE_VERSION=4.14.1
AVTO_NPM_PREFIX="${AVTO_NPM_PREFIX:-/var/cache/avto/npm}"

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "== installing chromium and chromium-driver (Debian packages)"
    as_root=()
    if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver
fi

if [ ! -f "$AVTO_NPM_PREFIX/node_modules/axe-core/axe.min.js" ] \
    || ! grep -q "\"version\": \"$AXE_VERSION\"" "$AVTO_NPM_PREFIX/node_modules/axe-core/package.json"; then
    echo "== installing axe-core $AXE_VERSION into $AVTO_NPM_PREFIX (npm)"
    mkdir -p "$AVTO_NPM_PREFIX"
    npm install --no-audit --no-fund --prefix "$AVTO_NPM_PREFIX" "axe-core@$AXE_VERSION"
fi
