#!/bin/bash
# `make run`: a local nats-server (JetStream, data in var/nats), a local
# PostgreSQL cluster (data in var/pg, kept across runs) and the three services
# in the foreground. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${STATE_DIR:-var}
mkdir -p "$STATE/nats"
NATS_PORT=${NATS_PORT:-4222}
PG_PORT=${PG_PORT:-5433}
PGBIN=$(pg_config --bindir)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
export EDGE_PORT=${EDGE_PORT:-3000}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:$NATS_PORT}
export LOG_LEVEL=${LOG_LEVEL:-info}
if [ -z "${JWT_SECRET:-}" ]; then
    # A dev secret ("dev-" prefix): the only kind the edge accepts with EDGE_DEV_LOGIN.
    grep -q '^dev-' "$STATE/jwt-secret" 2>/dev/null || printf 'dev-%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n=/+')" >"$STATE/jwt-secret"
    JWT_SECRET=$(cat "$STATE/jwt-secret")
fi
export JWT_SECRET

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
    -o "-p $PG_PORT -k $(realpath "$STATE/pg") -c listen_addresses=127.0.0.1" start >/dev/null
pg_started=1
export DATABASE_URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:$PG_PORT/postgres}

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.05; done

build/bin/chat-messaging &
pids+=($!)
build/bin/chat-presence &
pids+=($!)
DEV_LOGIN=0
case "$JWT_SECRET" in dev-*) DEV_LOGIN=1 ;; esac # the demo login only with a dev secret
EDGE_STATIC_DIR=${EDGE_STATIC_DIR:-web} EDGE_DEV_LOGIN=$DEV_LOGIN build/bin/chat-edge &
pids+=($!)

alice=0190a0b0-0000-7000-8000-00000000a11c
bob=0190a0b0-0000-7000-8000-000000000b0b
cat <<MSG

run: the demo chat: open http://127.0.0.1:$EDGE_PORT/ in two browser tabs, one name in each
run: Socket.IO on http://127.0.0.1:$EDGE_PORT/socket.io/ (NATS $NATS_URL, PostgreSQL port $PG_PORT, state in $STATE/)
run: tokens for two demo users (valid 24 h):
  alice ($alice): $(node scripts/mint-token.mjs "$JWT_SECRET" $alice alice)
  bob   ($bob): $(node scripts/mint-token.mjs "$JWT_SECRET" $bob bob)
run: Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
