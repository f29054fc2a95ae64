#!/bin/bash
# make test-conformance: the official Engine.IO v4 and Socket.IO v5 test
# suites (written by the Socket.IO maintainers, kept unmodified beside the
# repository in ../shared/conformance, never committed here) against the edge
# in EDGE_MODE=conformance, with the suites' timing (pingInterval 300 ms,
# pingTimeout 200 ms, connectTimeout 1000 ms). Fails if any test fails or if
# the edge does not stop cleanly (exit 0, no sanitizer report). Without the
# suites (a clone elsewhere) it says so and passes.
#
#   CHAT_EDGE_BIN     the edge (default build/bin/chat-edge)
#   CONFORMANCE_DIR   the suites (default ../shared/conformance)
#   CONFORMANCE_RUNS  how many times to run both (default 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${CONFORMANCE_DIR:-../shared/conformance}
EDGE=${CHAT_EDGE_BIN:-build/bin/chat-edge}
RUNS=${CONFORMANCE_RUNS:-1}
WORK=build/conformance

if [ ! -f "$SRC/run-suite.mjs" ]; then
    echo "conformance: skipped: the official suites are not at $SRC (they are kept beside the repository, not in it)"
    exit 0
fi

# A writable copy; the suites' npm packages (installed by run-suite.mjs with
# npm ci on first use) are kept while their lockfiles do not change.
mkdir -p "$WORK"
for suite in engine.io-protocol socket.io-protocol; do
    if [ -d "$WORK/$suite/node_modules" ] && ! cmp -s "$SRC/$suite/package-lock.json" "$WORK/$suite/package-lock.json"; then
        rm -rf "$WORK/$suite"
    fi
    mkdir -p "$WORK/$suite"
    cp "$SRC/$suite"/*.js "$SRC/$suite"/*.json "$WORK/$suite/"
done
cp "$SRC/run-suite.mjs" "$SRC/LICENSE" "$WORK/"

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
log=$WORK/edge.log
EDGE_MODE=conformance EDGE_HOST=127.0.0.1 EDGE_PORT=$port EDGE_PING_INTERVAL_MS=300 EDGE_PING_TIMEOUT_MS=200 \
    EDGE_CONNECT_TIMEOUT_MS=1000 EDGE_MAX_CONN_PER_IP=0 EDGE_HANDSHAKES_PER_S=0 LOG_LEVEL=info \
    "$EDGE" >"$log" 2>&1 &
edge=$!
stop_edge() {
    kill -TERM "$edge" 2>/dev/null || true
    wait "$edge" 2>/dev/null
}
trap 'kill -KILL "$edge" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q listening "$log" && break
    kill -0 "$edge" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q listening "$log"; then
    echo "conformance: the edge did not start; its log:"
    cat "$log"
    exit 1
fi

failed=0
summary=()
for run in $(seq 1 "$RUNS"); do
    for suite in engine.io socket.io; do
        out=$WORK/$suite-$run.log
        if node "$WORK/run-suite.mjs" "$suite" --url "http://127.0.0.1:$port" >"$out" 2>&1; then
            :
        else
            failed=$((failed + 1))
            cat "$out"
        fi
        summary+=("run $run: $(tail -n 1 "$out")")
    done
done

stop_edge && code=0 || code=$?
trap - EXIT
if [ "$code" -ne 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
    echo "conformance: the edge did not stop cleanly (exit $code); its log:"
    tail -n 80 "$log"
    failed=$((failed + 1))
fi
printf '%s\n' "${summary[@]}"
total=$(printf '%s\n' "${summary[@]}" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' |
    awk '{p += $1; f += $2} END {printf "%d passed, %d failed", p, f}')
echo "conformance: $RUNS run(s) of both official suites against $EDGE: $total"
[ "$failed" -eq 0 ]
