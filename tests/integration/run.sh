#!/bin/bash
# Integration tests: a throwaway PostgreSQL (scripts/testpg.sh), then
#  - tests/integration/presence_test against the real chat-presence; the test
#    starts (and restarts) its own nats-server on a free loopback port;
#  - tests/integration/presence_ha_test: replicas of chat-presence on a 3-node
#    nats-server cluster the test starts (kills and restarts), with a database
#    of their own.
# Stops everything whatever happens; prints the logs when a test fails. Only
# processes started here are ever killed, by their pid.
#   PRESENCE_BIN, PRESENCE_TEST, PRESENCE_HA_TEST: the binaries (default: build/)
#   HA_USERS: the synthetic users of presence_ha_test (default 100000)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${PRESENCE_BIN:-build/bin/chat-presence}
TEST=${PRESENCE_TEST:-build/tests/presence_test}
HA_TEST=${PRESENCE_HA_TEST:-build/tests/presence_ha_test}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-it.XXXXXX")
mkdir -p "$WORK/single" "$WORK/ha"
PG_DIR=
cleanup() {
    local status=$?
    # the tests stop their children; this is for when a test itself died
    for f in "$WORK/single/nats.pid" "$WORK/ha/pids"; do
        [ -f "$f" ] || continue
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$f"
    done
    if [ -n "$PG_DIR" ]; then
        scripts/testpg.sh stop "$PG_DIR" || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

# testpg.sh prints PGHOST=.. PGPORT=.. PGUSER=.. DIR=..
PG_ENV=$(scripts/testpg.sh start)
for kv in $PG_ENV; do
    case $kv in
    PGHOST=*) export PGHOST=${kv#*=} ;;
    PGPORT=*) export PGPORT=${kv#*=} ;;
    PGUSER=*) export PGUSER=${kv#*=} ;;
    DIR=*) PG_DIR=${kv#*=} ;;
    esac
done
export PG_DIR
export HEALTH_PORT=0 # no fixed port: other stacks may run on this machine

rc=0
PGDATABASE=postgres DATABASE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/postgres" \
    "$TEST" "$BIN" "$WORK/single" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "---- chat-presence log (last 80 lines)" >&2
    tail -n 80 "$WORK/single/presence.log" >&2 || true
    for f in "$WORK"/single/presence-*.log; do # the replicas of the grace scenarios
        [ -f "$f" ] || continue
        echo "---- $(basename "$f") (last 40 lines)" >&2
        tail -n 40 "$f" >&2 || true
    done
    echo "---- nats-server log (last 20 lines)" >&2
    tail -n 20 "$WORK/single/nats.log" >&2 || true
fi
# PRESENCE_LOG_COPY=file keeps the service's log.
[ -n "${PRESENCE_LOG_COPY:-}" ] && cp "$WORK/single/presence.log" "$PRESENCE_LOG_COPY"

psql -XAtq -d postgres -c "CREATE DATABASE presence_ha" >/dev/null
ha_rc=0
PGDATABASE=presence_ha DATABASE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/presence_ha" \
    "$HA_TEST" "$BIN" "$WORK/ha" || ha_rc=$?
if [ "$ha_rc" -ne 0 ]; then
    for f in "$WORK"/ha/presence-*.log; do
        [ -f "$f" ] || continue
        echo "---- $(basename "$f") (last 60 lines)" >&2
        grep -v ' debug ' "$f" | tail -n 60 >&2 || true
    done
    for f in "$WORK"/ha/nats-*.log; do
        [ -f "$f" ] || continue
        echo "---- $(basename "$f") (last 10 lines)" >&2
        tail -n 10 "$f" >&2 || true
    done
fi
# PRESENCE_HA_LOGS=dir keeps the replicas' and the nodes' logs.
[ -n "${PRESENCE_HA_LOGS:-}" ] && mkdir -p "$PRESENCE_HA_LOGS" && cp "$WORK"/ha/*.log "$PRESENCE_HA_LOGS"/
[ "$rc" -ne 0 ] && exit "$rc"
exit "$ha_rc"
