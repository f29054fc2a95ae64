#!/bin/bash
# `make run`: a local nats-server (JetStream, data in $STATE_DIR/nats), a local
# PostgreSQL cluster (data in $STATE_DIR/pg, kept across runs) and the three
# services in the foreground. Ctrl-C stops everything it started.
#
# Ports, all on 127.0.0.1 unless said otherwise: EDGE_PORT (3000), NATS_PORT
# (4222), PG_PORT (5433), the health ports of messaging and presence
# MESSAGING_HEALTH_PORT and PRESENCE_HEALTH_PORT (EDGE_PORT + 1 and + 2, so a
# second stack on another EDGE_PORT moves them too). The edge listens on
# EDGE_HOST, 127.0.0.1 while the dev login is on (anyone who reaches it can
# mint a token). A port already taken stops the start, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${STATE_DIR:-var}
mkdir -p "$STATE/nats"
NATS_PORT=${NATS_PORT:-4222}
PG_PORT=${PG_PORT:-5433}
PGBIN=$(pg_config --bindir)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
export EDGE_PORT=${EDGE_PORT:-3000}
MESSAGING_HEALTH_PORT=${MESSAGING_HEALTH_PORT:-$((EDGE_PORT + 1))}
PRESENCE_HEALTH_PORT=${PRESENCE_HEALTH_PORT:-$((EDGE_PORT + 2))}
export HEALTH_HOST=${HEALTH_HOST:-127.0.0.1}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:$NATS_PORT}
export LOG_LEVEL=${LOG_LEVEL:-info}
if [ -z "${JWT_SECRET:-}" ]; then
    # A dev secret ("dev-" prefix): the only kind the edge accepts with EDGE_DEV_LOGIN.
    grep -q '^dev-' "$STATE/jwt-secret" 2>/dev/null || printf 'dev-%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n=/+')" >"$STATE/jwt-secret"
    JWT_SECRET=$(cat "$STATE/jwt-secret")
fi
export JWT_SECRET
DEV_LOGIN=0
case "$JWT_SECRET" in dev-*) DEV_LOGIN=1 ;; esac # the demo login only with a dev secret
[ "$DEV_LOGIN" = 1 ] && export EDGE_HOST=${EDGE_HOST:-127.0.0.1}

# A taken port would make one of ours fail later with a less clear message, or
# worse, make us talk to another stack's server: check them all first.
for var in PG_PORT NATS_PORT EDGE_PORT MESSAGING_HEALTH_PORT PRESENCE_HEALTH_PORT; do
    port=${!var}
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run: port $port ($var) is already in use (another make run?): stop it, or pick a free one, e.g. $var=$((port + 100)) make run" >&2
        exit 1
    fi
done
# Another make run on the same state folder holds its PostgreSQL data.
if [ -f "$STATE/pg/data/postmaster.pid" ] && kill -0 "$(head -n 1 "$STATE/pg/data/postmaster.pid")" 2>/dev/null; then
    echo "run: $STATE/ is in use by another PostgreSQL (pid $(head -n 1 "$STATE/pg/data/postmaster.pid"), log $STATE/pg/server.log): stop that make run, or use STATE_DIR=another-folder" >&2
    exit 1
fi

pids=()
pg_started=""
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$pg_started" ] && as_pg "$PGBIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1
    echo "run: stopped"
}
trap stop INT TERM EXIT

# PostgreSQL: a cluster of our own in the state folder (initialised once).
if [ ! -f "$STATE/pg/data/PG_VERSION" ]; then
    mkdir -p "$STATE/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$STATE/pg" && chmod 755 "$STATE"
    as_pg "$PGBIN/initdb" -D "$STATE/pg/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$STATE/pg/initdb.log"
fi
as_pg "$PGBIN/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/server.log" -w -t 30 \
    -o "-p $PG_PORT -k $(realpath "$STATE/pg") -c listen_addresses=127.0.0.1" start >/dev/null ||
    { echo "run: PostgreSQL did not start on port $PG_PORT: see $STATE/pg/server.log" >&2; exit 1; }
pg_started=1
export DATABASE_URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:$PG_PORT/postgres}

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
nats_pid=$!
pids+=($nats_pid)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.05; done
if ! kill -0 "$nats_pid" 2>/dev/null || ! (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then
    echo "run: nats-server did not start on port $NATS_PORT: see $STATE/nats.log" >&2
    exit 1
fi

HEALTH_PORT=$MESSAGING_HEALTH_PORT build/bin/chat-messaging &
pids+=($!)
HEALTH_PORT=$PRESENCE_HEALTH_PORT build/bin/chat-presence &
pids+=($!)
EDGE_STATIC_DIR=${EDGE_STATIC_DIR:-web} EDGE_DEV_LOGIN=$DEV_LOGIN build/bin/chat-edge &
pids+=($!)

alice=0190a0b0-0000-7000-8000-00000000a11c
bob=0190a0b0-0000-7000-8000-000000000b0b
cat <<MSG

run: the demo chat: open http://127.0.0.1:$EDGE_PORT/ in two browser tabs, one name in each
run: Socket.IO on http://127.0.0.1:$EDGE_PORT/socket.io/ (edge on ${EDGE_HOST:-0.0.0.0}; NATS $NATS_URL, PostgreSQL port $PG_PORT, state in $STATE/)
run: health and metrics: edge :$EDGE_PORT, messaging :$MESSAGING_HEALTH_PORT, presence :$PRESENCE_HEALTH_PORT (/healthz, /metrics)
run: tokens for two demo users (valid 24 h):
  alice ($alice): $(node scripts/mint-token.mjs "$JWT_SECRET" $alice alice)
  bob   ($bob): $(node scripts/mint-token.mjs "$JWT_SECRET" $bob bob)
run: Ctrl-C stops everything.

MSG
rc=0
wait -n "${pids[@]}" || rc=$?
echo "run: a process of the stack exited (status $rc), so everything stops: its lines are above;" \
    "nats-server logs to $STATE/nats.log, PostgreSQL to $STATE/pg/server.log" >&2
