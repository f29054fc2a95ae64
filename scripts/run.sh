#!/bin/bash
# `make run`: a local nats-server (JetStream, data in var/nats), a local
# PostgreSQL cluster (data in var/pg, kept across runs) and the three services
# in the foreground. Ctrl-C stops everything it started.
# NATS_CLUSTER=3 (make run NATS_CLUSTER=3): a 3-node nats-server cluster on
# loopback instead (client ports NATS_PORT.., routes on NATS_ROUTE_PORT (6222)..,
# monitoring on NATS_MONITOR_PORT (8222).., JetStream on every node, each its
# own store in var/nats-cluster/nN), streams and the presence lease with
# CHAT_STREAM_REPLICAS=3, and two presence replicas (health on HEALTH_PORT 9102
# and the next); every process gets all the nodes in NATS_URL, from another
# node on.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${STATE_DIR:-var}
mkdir -p "$STATE/nats"
NATS_PORT=${NATS_PORT:-4222}
NATS_CLUSTER=${NATS_CLUSTER:-1}
ROUTE_PORT=${NATS_ROUTE_PORT:-6222}     # cluster mode: the nodes' route ports from here on
MONITOR_PORT=${NATS_MONITOR_PORT:-8222} # and their monitoring (/healthz) ports
PG_PORT=${PG_PORT:-5433}
PGBIN=$(pg_config --bindir)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
export EDGE_PORT=${EDGE_PORT:-3000}
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

# The servers from node $1 on, comma-separated (a NATS_URL): processes given
# different first nodes spread over the cluster, and fail over to the others.
nats_urls() {
    if [ -n "${NATS_URL:-}" ]; then echo "$NATS_URL"; return; fi
    local first=$1 list="" k
    for k in $(seq 0 $((NATS_CLUSTER - 1))); do
        list="$list${list:+,}nats://127.0.0.1:$((NATS_PORT + (first + k) % NATS_CLUSTER))"
    done
    echo "$list"
}
# 200 on /healthz: JetStream in contact with its meta leader, its streams current.
healthy() { curl -sf -o /dev/null "http://127.0.0.1:$1/healthz"; }

if [ "$NATS_CLUSTER" -le 1 ]; then
    nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.05; done
else
    export CHAT_STREAM_REPLICAS=${CHAT_STREAM_REPLICAS:-3}
    for i in $(seq 0 $((NATS_CLUSTER - 1))); do
        routes=""
        for j in $(seq 0 $((NATS_CLUSTER - 1))); do
            [ "$j" -ne "$i" ] && routes="$routes${routes:+,}nats://127.0.0.1:$((ROUTE_PORT + j))"
        done
        mkdir -p "$STATE/nats-cluster/n$((i + 1))"
        nats-server -a 127.0.0.1 -p $((NATS_PORT + i)) -m $((MONITOR_PORT + i)) -n "n$((i + 1))" -js \
            -sd "$STATE/nats-cluster/n$((i + 1))" --cluster_name chat-local \
            --cluster "nats://127.0.0.1:$((ROUTE_PORT + i))" --routes "$routes" >"$STATE/nats-n$((i + 1)).log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 1 300); do
        ok=1
        for i in $(seq 0 $((NATS_CLUSTER - 1))); do healthy $((MONITOR_PORT + i)) || ok=0; done
        [ "$ok" -eq 1 ] && break
        sleep 0.1
    done
    [ "$ok" -eq 1 ] || { echo "run: the NATS cluster is not healthy, see $STATE/nats-n*.log" >&2; exit 1; }
fi

NATS_URL=$(nats_urls 2) build/bin/chat-messaging &
pids+=($!)
NATS_URL=$(nats_urls 0) build/bin/chat-presence &
pids+=($!)
if [ "$NATS_CLUSTER" -gt 1 ]; then # a hot standby on another node, its own health port
    NATS_URL=$(nats_urls 1) HEALTH_PORT=$((${HEALTH_PORT:-9102} + 1)) build/bin/chat-presence &
    pids+=($!)
fi
DEV_LOGIN=0
case "$JWT_SECRET" in dev-*) DEV_LOGIN=1 ;; esac # the demo login only with a dev secret
NATS_URL=$(nats_urls 0) EDGE_STATIC_DIR=${EDGE_STATIC_DIR:-web} EDGE_DEV_LOGIN=$DEV_LOGIN build/bin/chat-edge &
pids+=($!)

alice=0190a0b0-0000-7000-8000-00000000a11c
bob=0190a0b0-0000-7000-8000-000000000b0b
cat <<MSG

run: the demo chat: open http://127.0.0.1:$EDGE_PORT/ in two browser tabs, one name in each
run: Socket.IO on http://127.0.0.1:$EDGE_PORT/socket.io/ (NATS $(nats_urls 0), PostgreSQL port $PG_PORT, state in $STATE/)
run: tokens for two demo users (valid 24 h):
  alice ($alice): $(node scripts/mint-token.mjs "$JWT_SECRET" $alice alice)
  bob   ($bob): $(node scripts/mint-token.mjs "$JWT_SECRET" $bob bob)
run: Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
