#!/bin/bash
# A throwaway PostgreSQL for tests, on a free loopback port, in a temporary
# folder. Runs as root too (initdb and postgres then run as the postgres user).
#   testpg.sh start [DIR]   prints: PGHOST=.. PGPORT=.. PGUSER=.. DIR=..  (DIR default: a new temp dir)
#   testpg.sh stop DIR
# A template cluster initialised once per machine (under $TMPDIR) is copied,
# which takes ~0.3 s instead of ~1 s for initdb.
set -euo pipefail
PGBIN=$(pg_config --bindir)
TEMPLATE=${TESTPG_TEMPLATE:-${TMPDIR:-/tmp}/chat-testpg-template-15}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

free_port() {
    local p
    while :; do
        p=$(shuf -i 20000-32000 -n 1) # below the kernel's ephemeral range (32768-60999)
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

start() {
    local dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/chat-testpg.XXXXXX")}
    chmod 755 "$dir"
    mkdir -p "$dir/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir/pg"
    if [ ! -f "$TEMPLATE/PG_VERSION" ]; then
        local tmp="$TEMPLATE.tmp.$$"
        mkdir -p "$tmp"
        [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$tmp"
        chmod 700 "$tmp"
        as_pg "$PGBIN/initdb" -D "$tmp" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
        mv -T "$tmp" "$TEMPLATE" 2>/dev/null || rm -rf "$tmp"
    fi
    as_pg cp -a "$TEMPLATE" "$dir/pg/data"
    local port tries=0
    while :; do
        port=$(free_port)
        as_pg "$PGBIN/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
            -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200" \
            start >/dev/null && break
        tries=$((tries + 1)) # the port was taken between the check and the bind: another one
        [ $tries -lt 5 ] || { echo "testpg: cannot start PostgreSQL, see $dir/pg/server.log" >&2; exit 1; }
    done
    echo "PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres DIR=$dir"
}

stop() {
    local dir=$1
    [ -f "$dir/pg/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
start) start "${2:-}" ;;
stop) stop "$2" ;;
*) echo "usage: $0 start [DIR] | stop DIR" >&2; exit 2 ;;
esac
