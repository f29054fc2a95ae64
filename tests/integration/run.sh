#!/bin/bash
# Integration tests: a throwaway PostgreSQL (scripts/testpg.sh), then
# tests/integration/presence_test against the real chat-presence; the test
# starts (and restarts) its own nats-server on a free loopback port. Stops
# both whatever happens; prints the logs when a test fails. Only processes
# started here are ever killed, by their pid.
#   PRESENCE_BIN, PRESENCE_TEST: the binaries (default: build/)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${PRESENCE_BIN:-build/bin/chat-presence}
TEST=${PRESENCE_TEST:-build/tests/presence_test}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-it.XXXXXX")
PG_DIR=
cleanup() {
    local status=$?
    # the test stops its nats-server; this is for when the test itself died
    if [ -f "$WORK/nats.pid" ]; then
        kill "$(cat "$WORK/nats.pid")" 2>/dev/null || true
    fi
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
export PGDATABASE=postgres PG_DIR
export DATABASE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/postgres"
export HEALTH_PORT=0 # no fixed port: other stacks may run on this machine

rc=0
"$TEST" "$BIN" "$WORK" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "---- chat-presence log (last 80 lines)" >&2
    tail -n 80 "$WORK/presence.log" >&2 || true
    echo "---- nats-server log (last 20 lines)" >&2
    tail -n 20 "$WORK/nats.log" >&2 || true
fi
# PRESENCE_LOG_COPY=file keeps the service's log.
[ -n "${PRESENCE_LOG_COPY:-}" ] && cp "$WORK/presence.log" "$PRESENCE_LOG_COPY"
exit "$rc"
