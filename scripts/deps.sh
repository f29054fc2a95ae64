#!/bin/sh
# Installs what the named targets need and is missing, and nothing more:
#   scripts/deps.sh [build|run|test|browser|bench|deploy|all]...   (no argument: all)
# Debian packages through apt-get with --no-install-recommends, then the npm
# packages of the folders the targets use, exactly as their lockfiles say.
#   build    the compiler, make and the -dev packages of the three services
#   run      build, nats-server, PostgreSQL, node (token minting) and web/
#            (the socket.io-client bundle the demo page loads)
#   test     run, cmocka, clang with its fuzzer runtime, libssl-dev (the JWT
#            tests forge tokens with libcrypto), iproute2 (ss), docker-compose
#            (validates compose.yaml offline), tests/e2e and clients/typescript
#            (TypeScript, to type-check the event declarations)
#   browser  run, Debian's chromium and fonts (fonts-noto-color-emoji: the emoji
#            font the demo page names), tests/browser (playwright-core drives
#            that chromium: no browser is downloaded)
#   bench    run (bench/run.sh installs its Node reference's packages itself)
#   deploy   Debian's docker.io, docker-compose, debootstrap, iproute2 and
#            tests/deploy (the deployment test)
#   all      everything above: what `make test` needs
# Safe to run again: it does nothing when everything is there.
set -eu
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || set -- all
pkgs=""
npm_dirs=""
node=""
add() { pkgs="$pkgs $*"; }
for target in "$@"; do
    case "$target" in
    all) set -- build run test browser bench deploy ;;
    esac
done
for target in "$@"; do
    case "$target" in
    build) ;;
    run | bench)
        add nats-server postgresql
        node=1
        npm_dirs="$npm_dirs web"
        ;;
    test)
        add nats-server postgresql libcmocka-dev clang libclang-rt-14-dev libssl-dev docker-compose iproute2
        node=1
        npm_dirs="$npm_dirs web tests/e2e clients/typescript"
        ;;
    browser)
        add nats-server postgresql chromium fonts-liberation fonts-noto-color-emoji
        node=1
        npm_dirs="$npm_dirs web tests/browser"
        ;;
    deploy)
        add docker.io docker-compose debootstrap iproute2
        node=1
        npm_dirs="$npm_dirs tests/deploy"
        ;;
    *)
        echo "deps: unknown target $target (build, run, test, browser, bench, deploy, all)" >&2
        exit 2
        ;;
    esac
done
# Every target builds the services.
add gcc make pkg-config libwebsockets-dev libnats-dev libjwt-dev libjansson-dev libprotobuf-c-dev \
    protobuf-c-compiler libpq-dev

missing=""
for p in $(echo "$pkgs" | tr ' ' '\n' | sort -u); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$node" ]; then
    command -v node >/dev/null 2>&1 || missing="$missing nodejs"
    command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# npm packages, exactly as locked; reinstalled when a lockfile changes.
for dir in $(echo "$npm_dirs" | tr ' ' '\n' | sort -u); do
    stamp=$dir/node_modules/.lock-stamp
    if [ ! -f "$stamp" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
        echo "deps: npm ci in $dir"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$dir/package-lock.json" "$stamp"
    fi
done
