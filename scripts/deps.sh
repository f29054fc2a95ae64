#!/bin/sh
# Installs what the build, the tests and `make run` need and is missing:
# Debian packages through apt-get (chromium for the browser test, docker-compose
# to validate compose.yaml offline, docker.io and debootstrap for the deployment
# test), then the pinned npm packages of tests/deploy, tests/e2e,
# tests/browser (playwright-core, which drives Debian's chromium: no browser is
# downloaded) and web/ (the socket.io-client bundle the demo page loads).
# Safe to run again: it does nothing when everything is there.
set -eu
cd "$(dirname "$0")/.."

PKGS="gcc make pkg-config libwebsockets-dev libnats-dev libjwt-dev libjansson-dev libprotobuf-c-dev
protobuf-c-compiler libcmocka-dev nats-server libpq-dev postgresql chromium docker-compose
clang libclang-rt-14-dev libssl-dev docker.io debootstrap iproute2"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

# npm packages, exactly as locked; reinstalled when a lockfile changes.
for dir in tests/deploy tests/e2e tests/browser web; do
    stamp=$dir/node_modules/.lock-stamp
    if [ ! -f "$stamp" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
        echo "deps: npm ci in $dir"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$dir/package-lock.json" "$stamp"
    fi
done
