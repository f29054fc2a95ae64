#!/bin/bash
# The benchmark: a private stack on loopback, then build/bin/chatload against it.
#   bench/run.sh full    every scenario against our services and against the
#                        Node reference (bench/node-reference), then the
#                        figures side by side with the ratios (what `make bench` runs)
#   bench/run.sh smoke   every scenario against our services only, tiny and
#                        short; fails unless each produced nonzero figures
#                        (`make bench-smoke`, part of `make test`)
#   bench/run.sh stack   start the stack, print its addresses, wait for Ctrl-C
# The stack: a throwaway PostgreSQL (scripts/testpg.sh, restarted with fsync and
# synchronous_commit on: durable commits), nats-server with JetStream, the three
# services from $BIN_DIR, and (full, stack) the Node reference on its own port
# with its own database in the same cluster. Everything on free ports of
# 127.0.0.1; only the processes started here are stopped, by their pid.
# Sizes are environment variables (defaults in the table below), e.g.
#   BENCH_IDLE_N=100000 BENCH_SIDES=c bench/run.sh full
# full also runs the large sizes against our services only (the Node
# reference would take many minutes): idle and fanout with BENCH_LARGE_N
# sockets (10,000), and a connect storm of BENCH_LARGE_CONNECT_N distinct
# users (5,000), on a second, fresh edge; BENCH_LARGE=0 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-full}
BIN_DIR=${BIN_DIR:-$ROOT/build/bin}
CHATLOAD=$BIN_DIR/chatload
PGBIN=$(pg_config --bindir)
case $MODE in full | smoke | stack) ;; *)
    echo "usage: $0 full|smoke|stack" >&2
    exit 2
    ;;
esac

if [ "$MODE" = smoke ]; then
    : "${BENCH_IDLE_N:=20}" "${BENCH_CONNECT_N:=50}" "${BENCH_RELAY_N:=10}" "${BENCH_MESSAGES_N:=10}"
    : "${BENCH_FANOUT_N:=20}" "${BENCH_SECONDS:=1}" "${BENCH_RELAY_RATE:=500}" "${BENCH_MESSAGES_RATE:=200}"
    : "${BENCH_ROUNDS:=2}" "${BENCH_SIDES:=c}"
else
    : "${BENCH_IDLE_N:=1000}" "${BENCH_CONNECT_N:=1000}" "${BENCH_RELAY_N:=100}" "${BENCH_MESSAGES_N:=100}"
    : "${BENCH_FANOUT_N:=1000}" "${BENCH_SECONDS:=5}" "${BENCH_RELAY_RATE:=20000}" "${BENCH_MESSAGES_RATE:=5000}"
    : "${BENCH_ROUNDS:=5}" "${BENCH_SIDES:=c node}"
fi
: "${BENCH_SCENARIOS:=idle connect relay messages fanout}"
: "${BENCH_RELAY_WINDOW:=32}" "${BENCH_MESSAGES_WINDOW:=16}"
if [ "$MODE" = smoke ]; then : "${BENCH_IDLE_USERS:=}"; else : "${BENCH_IDLE_USERS:=10}"; fi
: "${BENCH_FANOUT_USERS:=}"
JWT_SECRET=${JWT_SECRET:-bench-$(head -c 24 /dev/urandom | base64 | tr -d '\n=/+')}
export JWT_SECRET

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() {
    local p
    while :; do
        p=$(shuf -i 20000-32000 -n 1) # below the ephemeral range the clients use
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}
# 0 when GET /healthz on 127.0.0.1:$1 answers 200
healthy() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    read -r -t 2 line <&3 || line=
    exec 3<&- 3>&-
    [[ $line == *" 200 "* ]]
}
wait_for() { # what, tries (0.1 s each), command...
    local what=$1 tries=$2
    shift 2
    for _ in $(seq 1 "$tries"); do "$@" 2>/dev/null && return 0; sleep 0.1; done
    echo "bench: $what did not come up; logs in $WORK" >&2
    return 1
}
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-bench.XXXXXX")
chmod 755 "$WORK"
PG_DIR=
pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do # the reverse of the start order
        kill "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    [ -n "$PG_DIR" ] && scripts/testpg.sh stop "$PG_DIR" || true
    if [ "$status" -ne 0 ] && [ "$MODE" != stack ]; then
        for f in "$WORK"/*.log; do
            [ -f "$f" ] || continue
            echo "---- $(basename "$f") (last 30 lines)" >&2
            tail -n 30 "$f" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Connections: every process here may hold 100,000 sockets.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Private copies of the binaries: a rebuild of the tree during the run changes
# nothing here (and perf can still read their symbols).
mkdir -p "$WORK/bin"
for b in chatload chat-edge chat-messaging chat-presence; do
    [ -x "$BIN_DIR/$b" ] || { echo "bench: $BIN_DIR/$b missing (make all build/bin/chatload)" >&2; exit 1; }
    cp "$BIN_DIR/$b" "$WORK/bin/$b"
done
BIN_DIR=$WORK/bin
CHATLOAD=$BIN_DIR/chatload

# ---- PostgreSQL: testpg.sh's throwaway cluster, restarted durable
PG_ENV=$(scripts/testpg.sh start)
for kv in $PG_ENV; do
    case $kv in
    PGPORT=*) PGPORT=${kv#*=} ;;
    DIR=*) PG_DIR=${kv#*=} ;;
    esac
done
as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/pg/data" -l "$PG_DIR/pg/server.log" -w -t 60 -m fast \
    -o "-p $PGPORT -k $PG_DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on -c synchronous_commit=on -c full_page_writes=on" \
    restart >/dev/null
PG_SETTINGS=$("$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atc \
    "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync','synchronous_commit','full_page_writes')")
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE noderef" >/dev/null

# ---- NATS and our three services
NATS_PORT=$(free_port)
NATS_MON=$(free_port) # its monitoring: chatload messages reads /varz and /jsz
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
pids+=("$NATS_PID")
wait_for "nats-server" 100 tcp_open "$NATS_PORT"

export NATS_URL=nats://127.0.0.1:$NATS_PORT
export DATABASE_URL=postgresql://postgres@127.0.0.1:$PGPORT/postgres
export LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
EDGE_PORT=$(free_port)
MSG_HEALTH=$(free_port)
PRS_HEALTH=$(free_port)
# Messaging's send quotas would refuse chatload's senders (hundreds of sends
# per second each): lifted, but not off, so that the counting (its per-day
# counter is written by every batch's INSERT) is measured. The known-recipient
# check stays on, as deployed: chatload's users connect, so presence has seen
# them. History limits are not exercised by any scenario.
: "${MESSAGING_SENDS_PER_MIN:=1000000000}" "${MESSAGING_SENDS_PER_DAY:=1000000000}"
export MESSAGING_SENDS_PER_MIN MESSAGING_SENDS_PER_DAY
HEALTH_HOST=127.0.0.1 HEALTH_PORT=$MSG_HEALTH "$BIN_DIR/chat-messaging" >"$WORK/messaging.log" 2>&1 &
MSG_PID=$!
pids+=("$MSG_PID")
HEALTH_HOST=127.0.0.1 HEALTH_PORT=$PRS_HEALTH "$BIN_DIR/chat-presence" >"$WORK/presence.log" 2>&1 &
PRS_PID=$!
pids+=("$PRS_PID")
# The edge's abuse limits (per address, per socket, per user) would measure
# themselves, not the edge: lifted for the benchmark.
export EDGE_MAX_CONN_PER_IP=0 EDGE_HANDSHAKES_PER_S=0 EDGE_EVENTS_PER_S=1000000 EDGE_EVENTS_BURST=1000000 \
    EDGE_RATE_DISCONNECT=1000000 EDGE_MAX_SOCKETS_PER_USER=1000000 EDGE_MAX_TCP_PER_IP=0 EDGE_EVENTS_TO_USER_PER_S=0 \
    EDGE_QUERIES_PER_USER_PER_S=0
# smoke: a fast Engine.IO heartbeat, so that the idle hold sees pings answered
[ "$MODE" = smoke ] && export EDGE_PING_INTERVAL_MS=${EDGE_PING_INTERVAL_MS:-300}
EDGE_HOST=127.0.0.1 EDGE_PORT=$EDGE_PORT "$BIN_DIR/chat-edge" >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
pids+=("$EDGE_PID")
wait_for "chat-edge" 300 healthy "$EDGE_PORT"
wait_for "chat-messaging" 300 healthy "$MSG_HEALTH"
wait_for "chat-presence" 300 healthy "$PRS_HEALTH"
C_URL=http://127.0.0.1:$EDGE_PORT
PM_PID=$(head -n 1 "$PG_DIR/pg/data/postmaster.pid")
C_PIDS="edge=$EDGE_PID,nats=$NATS_PID,presence=$PRS_PID,messaging=$MSG_PID,postgres=$PM_PID"

# ---- the Node reference
NODE_URL=
if [ "$MODE" != smoke ] && [[ " $BENCH_SIDES " == *" node "* || $MODE == stack ]]; then
    stamp=bench/node-reference/node_modules/.lock-stamp
    if [ ! -f "$stamp" ] || ! cmp -s bench/node-reference/package-lock.json "$stamp"; then
        (cd bench/node-reference && npm ci --no-audit --no-fund --loglevel=error)
        cp bench/node-reference/package-lock.json "$stamp"
    fi
    NODE_PORT=$(free_port)
    PORT=$NODE_PORT DATABASE_URL=postgresql://postgres@127.0.0.1:$PGPORT/noderef \
        node bench/node-reference/server.js >"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    pids+=("$NODE_PID")
    wait_for "node reference" 300 grep -q listening "$WORK/node.log"
    NODE_URL=http://127.0.0.1:$NODE_PORT
fi

if [ "$MODE" = stack ]; then
    cat <<MSG
bench: stack up (logs in $WORK); Ctrl-C stops it
  JWT_SECRET=$JWT_SECRET
  ours:  $C_URL   pids $C_PIDS
  node:  $NODE_URL   pid ${NODE_PID:-}
  PostgreSQL 127.0.0.1:$PGPORT ($PG_SETTINGS)   NATS $NATS_URL
MSG
    wait "$EDGE_PID" || true
    exit 0
fi

# ---- the scenarios
TSV=$WORK/results.tsv
: >"$TSV"
echo "bench: $(date -u +%FT%TZ), PostgreSQL $PG_SETTINGS, sides: $BENCH_SIDES"
run_one() { # side scenario
    local side=$1 sc=$2 url pidarg args=()
    if [ "$side" = c ]; then url=$C_URL pidarg=$C_PIDS; else url=$NODE_URL pidarg="node=$NODE_PID,postgres=$PM_PID"; fi
    case $sc in
    idle) args=(--n "$BENCH_IDLE_N" --seconds "$BENCH_SECONDS") ;;
    connect) args=(--n "$BENCH_CONNECT_N") ;;
    relay) args=(--n "$BENCH_RELAY_N" --seconds "$BENCH_SECONDS" --rate "$BENCH_RELAY_RATE" --window "$BENCH_RELAY_WINDOW") ;;
    messages) args=(--n "$BENCH_MESSAGES_N" --seconds "$BENCH_SECONDS" --rate "$BENCH_MESSAGES_RATE" --window "$BENCH_MESSAGES_WINDOW") ;;
    fanout) args=(--n "$BENCH_FANOUT_N" --rounds "$BENCH_ROUNDS") ;;
    esac
    [ "$sc" = idle ] && [ -n "$BENCH_IDLE_USERS" ] && args+=(--users "$BENCH_IDLE_USERS")
    [ "$sc" = fanout ] && [ -n "$BENCH_FANOUT_USERS" ] && args+=(--users "$BENCH_FANOUT_USERS")
    [ "$sc" = messages ] && [ "$side" = c ] && args+=(--nats-monitor "127.0.0.1:$NATS_MON")
    echo "\$ chatload $sc --url $url --secret \$JWT_SECRET ${args[*]} --pid $pidarg --label $side"
    "$CHATLOAD" "$sc" --url "$url" --secret "$JWT_SECRET" "${args[@]}" --pid "$pidarg" \
        --label "$side" --tsv "$TSV" || echo "bench: chatload $sc against $side exited $?"
}
for sc in $BENCH_SCENARIOS; do
    for side in $BENCH_SIDES; do
        if [ "$side" = node ] && [ -z "$NODE_URL" ]; then continue; fi
        run_one "$side" "$sc"
        if ! kill -0 "$EDGE_PID" 2>/dev/null; then
            echo "bench: chat-edge died during $sc" >&2
            exit 1
        fi
    done
done
# ---- the large sizes, ours only (label "large")
LARGE=0
if [ "$MODE" = full ] && [ "${BENCH_LARGE:-1}" != 0 ] && [[ " $BENCH_SIDES " == *" c "* ]]; then
    LARGE=1
    : "${BENCH_LARGE_N:=10000}" "${BENCH_LARGE_CONNECT_N:=5000}"
    # A fresh edge: the first edge's heap has grown and shrunk through the
    # scenarios above, which would hide the RSS that new sockets cost.
    LARGE_PORT=$(free_port)
    EDGE_HOST=127.0.0.1 EDGE_PORT=$LARGE_PORT "$BIN_DIR/chat-edge" >"$WORK/edge-large.log" 2>&1 &
    LARGE_PID=$!
    pids+=("$LARGE_PID")
    wait_for "chat-edge (large)" 300 healthy "$LARGE_PORT"
    LARGE_URL=http://127.0.0.1:$LARGE_PORT
    LARGE_PIDS="edge=$LARGE_PID,nats=$NATS_PID,presence=$PRS_PID,messaging=$MSG_PID,postgres=$PM_PID"
    run_large() { # scenario args...
        local sc=$1
        shift
        echo "\$ chatload $sc --url $LARGE_URL --secret \$JWT_SECRET $* --pid $LARGE_PIDS --label large"
        "$CHATLOAD" "$sc" --url "$LARGE_URL" --secret "$JWT_SECRET" "$@" --pid "$LARGE_PIDS" --label large \
            --tsv "$TSV" || echo "bench: chatload $sc (large) exited $?"
        if ! kill -0 "$LARGE_PID" 2>/dev/null; then
            echo "bench: chat-edge died during the large $sc" >&2
            exit 1
        fi
    }
    run_large idle --n "$BENCH_LARGE_N" --users 10 --seconds "$BENCH_SECONDS"
    run_large fanout --n "$BENCH_LARGE_N" --users 100 --rounds "$BENCH_ROUNDS"
    run_large connect --n "$BENCH_LARGE_CONNECT_N"
fi
# ---- presence past broadcast-to-everyone (label storm-interest, storm-broadcast):
# BENCH_STORM_N users (10,000), each with BENCH_STORM_CONTACTS contacts (20:
# conversations written straight into PostgreSQL by chatload seed), connect at
# once to a fresh edge with PRESENCE_SCOPE=interest, then other users as many
# to a fresh edge in broadcast mode (the original contract: each connect is
# sent to everyone online and gets the whole list).
STORM=0
if [ "$MODE" = full ] && [ "${BENCH_STORM:-1}" != 0 ] && [[ " $BENCH_SIDES " == *" c "* ]]; then
    STORM=1
    : "${BENCH_STORM_N:=10000}" "${BENCH_STORM_CONTACTS:=20}"
    seed=$((RANDOM * 32768 + RANDOM))
    "$CHATLOAD" seed --users "$BENCH_STORM_N" --contacts "$BENCH_STORM_CONTACTS" --user-seed "$seed" --out "$WORK/seed.tsv"
    chmod 644 "$WORK/seed.tsv"
    "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qc \
        "\\copy messages (id, sender_id, recipient_id, type, content, created_at) FROM '$WORK/seed.tsv'"
    storm() { # label scope seed extra-args...
        local label=$1 scope=$2 useed=$3 port pid
        shift 3
        port=$(free_port)
        EDGE_HOST=127.0.0.1 EDGE_PORT=$port PRESENCE_SCOPE=$scope "$BIN_DIR/chat-edge" >"$WORK/edge-$label.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        wait_for "chat-edge ($label)" 300 healthy "$port"
        echo "\$ chatload connect --url http://127.0.0.1:$port --secret \$JWT_SECRET --n $BENCH_STORM_N --contacts $BENCH_STORM_CONTACTS --user-seed $useed $* --label $label"
        "$CHATLOAD" connect --url "http://127.0.0.1:$port" --secret "$JWT_SECRET" --n "$BENCH_STORM_N" \
            --contacts "$BENCH_STORM_CONTACTS" --user-seed "$useed" "$@" \
            --pid "edge=$pid,nats=$NATS_PID,presence=$PRS_PID,messaging=$MSG_PID,postgres=$PM_PID" --label "$label" \
            --tsv "$TSV" || echo "bench: chatload connect ($label) exited $?"
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    }
    storm storm-interest interest "$seed" --interest
    storm storm-broadcast broadcast "$((seed + 1))"
fi
# ---- connection state recovery on and off (labels rec-on-N, rec-off-N): the
# messages scenario against the first edge (recovery on, the default) and a
# second one with EDGE_RECOVERY_WINDOW_MS=0, alternated BENCH_RECOVERY_PAIRS
# times on the same stack, so that the machine's noise falls on both alike.
RECOVERY=0
if [ "$MODE" = full ] && [ "${BENCH_RECOVERY_PAIRS:-3}" != 0 ] && [[ " $BENCH_SCENARIOS " == *" messages "* ]] &&
    [[ " $BENCH_SIDES " == *" c "* ]]; then
    RECOVERY=1
    OFF_PORT=$(free_port)
    EDGE_HOST=127.0.0.1 EDGE_PORT=$OFF_PORT EDGE_RECOVERY_WINDOW_MS=0 "$BIN_DIR/chat-edge" >"$WORK/edge-off.log" 2>&1 &
    OFF_PID=$!
    pids+=("$OFF_PID")
    wait_for "chat-edge (recovery off)" 300 healthy "$OFF_PORT"
    margs=(--n "$BENCH_MESSAGES_N" --seconds "$BENCH_SECONDS" --rate "$BENCH_MESSAGES_RATE" --window "$BENCH_MESSAGES_WINDOW")
    for i in $(seq 1 "${BENCH_RECOVERY_PAIRS:-3}"); do
        for mode in on off; do
            if [ $mode = on ]; then url=$C_URL pid=$EDGE_PID; else url=http://127.0.0.1:$OFF_PORT pid=$OFF_PID; fi
            echo "\$ chatload messages --url $url --secret \$JWT_SECRET ${margs[*]} --label rec-$mode-$i"
            "$CHATLOAD" messages --url "$url" --secret "$JWT_SECRET" "${margs[@]}" \
                --pid "edge=$pid,nats=$NATS_PID,messaging=$MSG_PID,postgres=$PM_PID" --label "rec-$mode-$i" \
                --tsv "$TSV" || echo "bench: chatload messages (recovery $mode) exited $?"
        done
    done
fi
[ -n "${BENCH_TSV_COPY:-}" ] && cp "$TSV" "$BENCH_TSV_COPY"

# value of figure $3 for side $1, scenario $2 ("" when absent)
val() { awk -F'\t' -v s="$1" -v c="$2" -v f="$3" '$1==s && $2==c && $3==f {v=$4} END {print v}' "$TSV"; }

if [ "$MODE" = smoke ]; then
    passed=0 failed=0
    check() { # scenario figure...: each must be > 0
        local sc=$1 f v ok=1
        shift
        for f in "$@"; do
            v=$(val c "$sc" "$f")
            if [ -z "$v" ] || ! awk -v x="$v" 'BEGIN {exit !(x > 0)}'; then
                echo "bench-smoke: FAIL $sc: $f = ${v:-missing}"
                ok=0
            fi
        done
        if [ "$ok" = 1 ]; then
            echo "bench-smoke: ok   $sc"
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    }
    for sc in $BENCH_SCENARIOS; do
        case $sc in
        idle) check idle connected rss_after_mib.edge pings_answered ;;
        connect) check connect connected connects_per_s connect_p50_ms ;;
        relay) check relay events_per_s received latency_p50_ms ;;
        messages) check messages persisted_per_s received latency_p50_ms confirm_p50_ms ;;
        fanout) check fanout received_min last_ms_median ;;
        esac
    done
    echo "bench-smoke: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
fi

# ---- side by side
echo
echo "== summary (machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, Linux $(uname -r))"
printf '%-10s %-30s %14s %14s %10s  %s\n' scenario figure ours node ours/node better
summary() { # scenario figure better(higher|lower)
    local c n r
    c=$(val c "$1" "$2")
    n=$(val node "$1" "$2")
    r=$(awk -v a="$c" -v b="$n" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
    printf '%-10s %-30s %14s %14s %10s  %s\n' "$1" "$2" "${c:--}" "${n:--}" "$r" "$3"
}
for sc in $BENCH_SCENARIOS; do
    case $sc in
    idle)
        summary idle connected higher
        summary idle rss_per_conn_kib lower
        summary idle cpu_idle lower
        ;;
    connect)
        summary connect connects_per_s higher
        summary connect connects_per_core_s higher
        summary connect connect_p50_ms lower
        summary connect connect_p99_ms lower
        summary connect connected_without_list lower
        summary connect list_late lower
        ;;
    relay)
        summary relay events_per_s higher
        summary relay events_per_core_s higher
        summary relay sent_per_s higher
        summary relay latency_p50_ms lower
        summary relay latency_p99_ms lower
        summary relay latency_p999_ms lower
        summary relay lost lower
        ;;
    messages)
        summary messages persisted_per_s higher
        summary messages persisted_per_core_s higher
        summary messages sent_per_s higher
        summary messages latency_p50_ms lower
        summary messages latency_p99_ms lower
        summary messages latency_p999_ms lower
        summary messages lost lower
        summary messages nats_msgs_in_per_message lower
        summary messages nats_msgs_out_per_message lower
        summary messages jetstream_stores_per_message lower
        ;;
    fanout)
        summary fanout sockets higher
        summary fanout received_min higher
        summary fanout last_ms_median lower
        summary fanout last_ms_max lower
        summary fanout main_us_per_frame lower
        ;;
    esac
    summary "$sc" client_cpu_pct lower
    summary "$sc" machine_other_cpu_pct lower
done
if [ "$LARGE" = 1 ]; then
    echo
    echo "== large sizes, ours only"
    large() { printf '%-10s %-30s %14s  %s\n' "$1" "$2" "$(val large "$1" "$2")" "$3"; }
    large idle connected sockets
    large idle rss_per_conn_kib "KiB of edge RSS per connection"
    large idle cpu_idle "% of one core, edge, idle with pings"
    large fanout received_min "sockets that got the change"
    large fanout last_ms_median "ms until the last socket had it"
    large fanout first_ms_median "ms until the first"
    large fanout main_us_per_frame "µs of edge CPU per frame delivered"
    large connect connected "distinct users"
    large connect connect_seconds "s until all were connected (each broadcast to all)"
    large connect connects_per_s "per second"
    large connect closed_by_server "sockets closed by the edge while the storm went on"
    large connect connected_without_list "sockets whose list never came"
    large connect list_late "lists that came over 1 s after their CONNECT reply"
    large connect list_late_max_ms "ms, the latest list after its CONNECT reply"
    large connect closed_awaiting_lists "sockets closed afterwards, their client still reading late lists"
fi
if [ "$STORM" = 1 ]; then
    echo
    echo "== a connect storm of $BENCH_STORM_N users, $BENCH_STORM_CONTACTS contacts each: PRESENCE_SCOPE=interest and broadcast, each on a fresh edge"
    printf '%-26s %14s %14s  %s\n' figure interest broadcast ""
    st() { printf '%-26s %14s %14s  %s\n' "$1" "$(val storm-interest connect "$1")" "$(val storm-broadcast connect "$1")" "$2"; }
    st connected "sockets"
    st connect_seconds "s from the first start to the last ready"
    st connects_per_s "per second"
    st connected_without_list "sockets whose list never came"
    st list_late "lists that came over 1 s after their CONNECT reply"
    st closed_by_server "sockets the edge closed (a client too slow to read)"
    st closed_awaiting_lists "closed afterwards, their client still reading late lists"
    st contacts_complete "sockets that know each contact online (interest: all)"
    st strangers_heard "users heard of without a conversation (interest: 0)"
fi
if [ "$RECOVERY" = 1 ]; then
    echo
    echo "== connection state recovery: the messages scenario with it on and off, alternated (persisted/s)"
    on=() off=()
    for i in $(seq 1 "${BENCH_RECOVERY_PAIRS:-3}"); do
        on+=("$(val "rec-on-$i" messages persisted_per_s)")
        off+=("$(val "rec-off-$i" messages persisted_per_s)")
    done
    med() { printf '%s\n' "$@" | grep . | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print ""}'; }
    mon=$(med "${on[@]}") moff=$(med "${off[@]}")
    printf '%-12s %s\n' "on:" "${on[*]}   (median ${mon:--})"
    printf '%-12s %s\n' "off:" "${off[*]}   (median ${moff:--})"
    awk -v a="$mon" -v b="$moff" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "on/off: -";
        else printf "on/off: %.2f of the persisted messages/s with recovery off (the aim: at least 0.85)\n", a / b }'
fi
echo "(rss_per_conn_kib and cpu_*: ours is chat-edge, node the Node process; the other processes of our"
echo " stack are in the per-scenario blocks above as .nats, .presence, .messaging, .postgres;"
echo " machine_other_cpu_pct: CPU that processes outside the benchmark took meanwhile, in % of one core)"
