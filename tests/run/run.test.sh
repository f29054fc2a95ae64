#!/bin/bash
# `make run` (scripts/run.sh) as a user meets it (`make test-run`): a stack on
# free ports with a temp STATE_DIR serves the demo page, a printed token
# connects, the dev-login edge listens on 127.0.0.1 only, and the health ports
# follow EDGE_PORT. Then a second stack on a taken port, or on the same state
# folder, must stop at once with an error naming the port (or the folder) and
# what to read. Everything it starts it stops; every wait is bounded.
# Prints "run: N passed, N failed" last.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ -x build/bin/chat-edge ] || { echo "run test: build first (make all)" >&2; exit 1; }

passed=0
pass() {
    passed=$((passed + 1))
    echo "run test: ok: $*"
}
fail() {
    echo "run test: FAILED: $*" >&2
    exit 1
}

tmp=$(mktemp -d /tmp/chat-run-test.XXXXXX)
chmod 755 "$tmp" # PostgreSQL runs as the user postgres under it
first=""
on_exit() {
    local rc=$?
    trap - EXIT
    if [ -n "$first" ] && kill -0 "$first" 2>/dev/null; then
        kill -TERM "$first" # (an async job ignores SIGINT)
        for _ in $(seq 1 100); do kill -0 "$first" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$first" 2>/dev/null || true
        [ "$rc" -ne 0 ] || { [ -f "$tmp/first.log" ] && grep -q '^run: stopped' "$tmp/first.log"; } || rc=1
    fi
    [ "$rc" -eq 0 ] || { echo "--- first make run's output:" >&2; tail -n 40 "$tmp/first.log" >&2 || true; }
    rm -rf "$tmp"
    echo "run: $passed passed, $([ "$rc" -eq 0 ] && echo 0 || echo 1) failed"
    exit "$rc"
}
trap on_exit EXIT

# Free ports: a base whose next few are free too (EDGE_PORT + 1 and + 2 are
# the health ports).
free_base() {
    local p i
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        for i in 0 1 2; do (exec 3<>"/dev/tcp/127.0.0.1/$((p + i))") 2>/dev/null && continue 2; done
        echo "$p"
        return
    done
    fail "no free ports"
}
edge=$(free_base)
nats=$(free_base)
pg=$(free_base)

# Waits (bounded) for $2 in file $1.
wait_for() {
    for _ in $(seq 1 600); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

EDGE_PORT=$edge NATS_PORT=$nats PG_PORT=$pg STATE_DIR=$tmp/state LOG_LEVEL=warn \
    scripts/run.sh >"$tmp/first.log" 2>&1 &
first=$!
wait_for "$tmp/first.log" "Ctrl-C stops everything" "$first" || fail "make run did not start within 60 s"
curl_status() { node -e 'fetch(process.argv[1],{method:process.argv[2]||"GET",body:process.argv[3],signal:AbortSignal.timeout(5000)}).then(r=>console.log(r.status),()=>console.log(0))' "$@"; }
# The services answer once connected to NATS and PostgreSQL: bounded wait.
for url in "http://127.0.0.1:$edge/healthz" "http://127.0.0.1:$((edge + 1))/healthz" "http://127.0.0.1:$((edge + 2))/healthz"; do
    for _ in $(seq 1 100); do [ "$(curl_status "$url")" = 200 ] && break; sleep 0.1; done
    [ "$(curl_status "$url")" = 200 ] || fail "$url does not answer 200"
done
pass "edge on $edge, messaging health on $((edge + 1)), presence health on $((edge + 2))"
[ "$(curl_status "http://127.0.0.1:$edge/")" = 200 ] || fail "the demo page is not served"
[ "$(curl_status "http://127.0.0.1:$edge/dev/login" POST '{"username":"carol"}')" = 200 ] || fail "dev login refused"
pass "the demo page and its dev login answer"
listen=$(ss -ltnH "sport = :$edge" | awk '{print $4}')
[ "$listen" = "127.0.0.1:$edge" ] || fail "the dev-login edge listens on '$listen', want 127.0.0.1:$edge only"
pass "the dev-login edge listens on 127.0.0.1 only"
token=$(sed -n 's/^  alice ([^)]*): //p' "$tmp/first.log")
[ -n "$token" ] || fail "no token printed"
(cd tests/e2e && timeout 30 node --input-type=module -e '
import { io } from "socket.io-client";
const s = io(process.argv[1], { auth: { token: process.argv[2] }, transports: ["websocket"], reconnection: false });
const t = setTimeout(() => { console.error("no connect within 10 s"); process.exit(1); }, 10000);
s.on("connect", async () => {
  const r = await s.timeout(5000).emitWithAck("presence:request", []).catch((e) => ({ error: e.message }));
  clearTimeout(t); s.close(); process.exit(r?.ok ? 0 : 1);
});
s.on("connect_error", (e) => { console.error("connect_error", e.message); process.exit(1); });
' "http://127.0.0.1:$edge" "$token") || fail "the printed token does not connect"
pass "a printed token connects and gets an ack"

# A second make run: each way of colliding gives an error that names the port
# (or the state folder) and exits at once, leaving the first one running.
second() { # expected-text, then variables for run.sh
    local want=$1 out rc=0
    shift
    out=$(env "$@" timeout 30 scripts/run.sh 2>&1) || rc=$?
    [ "$rc" -ne 0 ] || fail "a second make run with $* started"
    [ "$rc" -ne 124 ] || fail "a second make run with $* hung"
    echo "$out" | grep -q -- "$want" || fail "a second make run with $*: no '$want' in: $out"
    echo "$out" | grep '^run: ' | grep -v '^run: stopped' | head -n 1
}
second "port $pg (PG_PORT)" EDGE_PORT="$edge" NATS_PORT="$nats" PG_PORT="$pg" STATE_DIR="$tmp/state2"
pass "the same ports again: PG_PORT named"
other=$(free_base)
second "port $edge (EDGE_PORT)" EDGE_PORT="$edge" NATS_PORT="$other" PG_PORT="$((other + 1))" STATE_DIR="$tmp/state2"
pass "only EDGE_PORT taken: EDGE_PORT named"
second "port $((edge + 1)) (MESSAGING_HEALTH_PORT)" EDGE_PORT="$other" NATS_PORT="$((other + 1))" PG_PORT="$((other + 2))" \
    MESSAGING_HEALTH_PORT="$((edge + 1))" STATE_DIR="$tmp/state2"
pass "a health port taken: MESSAGING_HEALTH_PORT named"
second "$tmp/state/pg/server.log" EDGE_PORT="$other" NATS_PORT="$((other + 1))" PG_PORT="$((other + 2))" STATE_DIR="$tmp/state"
pass "the same STATE_DIR: its PostgreSQL log named"
[ "$(curl_status "http://127.0.0.1:$edge/healthz")" = 200 ] || fail "the first make run was disturbed"
pass "the first make run still serves"
