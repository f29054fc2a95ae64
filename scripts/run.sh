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
#
# NATS_CLUSTER=3 (make run NATS_CLUSTER=3): a 3-node nats-server cluster on
# loopback instead (client ports NATS_PORT.., routes on NATS_ROUTE_PORT (6222)..,
# monitoring on NATS_MONITOR_PORT (8222).., JetStream on every node, each its
# own store in $STATE_DIR/nats-cluster/nN), streams, the presence lease and the
# recovery bucket with CHAT_STREAM_REPLICAS=3, and two presence replicas (the
# standby's health on PRESENCE_HEALTH_PORT + 10); every process gets all the
# nodes in NATS_URL, from another node on.
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
MESSAGING_HEALTH_PORT=${MESSAGING_HEALTH_PORT:-$((EDGE_PORT + 1))}
PRESENCE_HEALTH_PORT=${PRESENCE_HEALTH_PORT:-$((EDGE_PORT + 2))}
STANDBY_HEALTH_PORT=$((PRESENCE_HEALTH_PORT + 10))
export HEALTH_HOST=${HEALTH_HOST:-127.0.0.1}
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
taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for var in PG_PORT NATS_PORT EDGE_PORT MESSAGING_HEALTH_PORT PRESENCE_HEALTH_PORT; do
    port=${!var}
    if taken "$port"; then
        echo "run: port $port ($var) is already in use (another make run?): stop it, or pick a free one, e.g. $var=$((port + 100)) make run" >&2
        exit 1
    fi
done
if [ "$NATS_CLUSTER" -gt 1 ]; then
    for i in $(seq 0 $((NATS_CLUSTER - 1))); do
        for var in NATS_PORT ROUTE_PORT MONITOR_PORT; do
            port=$((${!var} + i))
            if taken "$port"; then
                echo "run: port $port (node $((i + 1)) of the cluster, from $var) is already in use: pick other ports, e.g. $var=$((${!var} + 100))" >&2
                exit 1
            fi
        done
    done
    taken "$STANDBY_HEALTH_PORT" && { echo "run: port $STANDBY_HEALTH_PORT (the presence standby's health) is already in use" >&2; exit 1; }
fi
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
# 200 on a node's /healthz: JetStream in contact with its meta leader, its streams current.
healthy() {
    local status
    (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && read -r _ status _ <&3 &&
        [ "$status" = 200 ]) 2>/dev/null
}

if [ "$NATS_CLUSTER" -le 1 ]; then
    nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
    nats_pid=$!
    pids+=($nats_pid)
    for _ in $(seq 1 100); do taken "$NATS_PORT" && break; sleep 0.05; done
    if ! kill -0 "$nats_pid" 2>/dev/null || ! taken "$NATS_PORT"; then
        echo "run: nats-server did not start on port $NATS_PORT: see $STATE/nats.log" >&2
        exit 1
    fi
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

NATS_URL=$(nats_urls 2) HEALTH_PORT=$MESSAGING_HEALTH_PORT build/bin/chat-messaging &
pids+=($!)
NATS_URL=$(nats_urls 0) HEALTH_PORT=$PRESENCE_HEALTH_PORT build/bin/chat-presence &
pids+=($!)
if [ "$NATS_CLUSTER" -gt 1 ]; then # a hot standby on another node, its own health port
    NATS_URL=$(nats_urls 1) HEALTH_PORT=$STANDBY_HEALTH_PORT build/bin/chat-presence &
    pids+=($!)
fi
NATS_URL=$(nats_urls 0) EDGE_STATIC_DIR=${EDGE_STATIC_DIR:-web} EDGE_DEV_LOGIN=$DEV_LOGIN build/bin/chat-edge &
pids+=($!)

alice=0190a0b0-0000-7000-8000-00000000a11c
bob=0190a0b0-0000-7000-8000-000000000b0b
cat <<MSG

run: the demo chat: open http://127.0.0.1:$EDGE_PORT/ in two browser tabs, one name in each
run: Socket.IO on http://127.0.0.1:$EDGE_PORT/socket.io/ (edge on ${EDGE_HOST:-0.0.0.0}; NATS $(nats_urls 0), PostgreSQL port $PG_PORT, state in $STATE/)
run: health and metrics: edge :$EDGE_PORT, messaging :$MESSAGING_HEALTH_PORT, presence :$PRESENCE_HEALTH_PORT (/healthz, /metrics)
run: tokens for two demo users (valid 24 h):
  alice ($alice): $(node scripts/mint-token.mjs "$JWT_SECRET" $alice alice)
  bob   ($bob): $(node scripts/mint-token.mjs "$JWT_SECRET" $bob bob)
run: Ctrl-C stops everything.

MSG
rc=0
wait -n "${pids[@]}" || rc=$?
echo "run: a process of the stack exited (status $rc), so everything stops: its lines are above;" \
    "nats-server logs to $STATE/nats*.log, PostgreSQL to $STATE/pg/server.log" >&2
