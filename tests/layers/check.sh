#!/bin/bash
# The layer check (make test-layers): every #include of the C sources is
# resolved to the room it comes from, and a file may only include from the
# rooms below its own (docs/architecture.md §Layers):
#
#   lib                 shared code; includes nothing of services/
#   pure files          the codecs engineio/eio, engineio/frame, socketio/sio, and
#                       lib's wheel, mem, map, log, ids, bucket: only other
#                       pure files (no lws, NATS, PostgreSQL, sockets, threads)
#   edge engineio       Engine.IO sessions: no socketio/, server/, apps, NATS, PostgreSQL
#   edge socketio       Socket.IO: engineio/ only (no transport, no app, no NATS)
#   edge server         the transports and the lws server: engineio/ only
#   edge apps           chat/, conform/: socketio/, engineio/; never server/, never each other
#   edge top            site.c, abuse.c: server/ but no app; main.c alone sees both
#   messaging, presence their own folder and lib/ only (never the edge's headers)
#   examples            the protocol layers and lib/ only (no app, no NATS)
#
# Usage: tests/layers/check.sh [ROOT]   (ROOT: a checkout; default: this one)
#        tests/layers/check.sh --selftest   (the check must catch a planted violation)
# Prints every violation as file:line and one summary line; exits 1 on any.
set -uo pipefail

if [ "${1:-}" = "--selftest" ]; then
    here=$(cd "$(dirname "$0")/../.." && pwd)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    fail=0
    # Each plant must be caught on its own; the clean copy must pass.
    for plant in \
        'services/edge/socketio/sock.c|#include "server/server.h"' \
        'services/edge/engineio/session.c|#include "socketio/sock.h"' \
        'services/edge/chat/chat_socks.c|#include "server/conn.h"' \
        'services/edge/engineio/eio.c|#include <libwebsockets.h>' \
        'services/edge/site.c|#include "chat/chat.h"' \
        'services/presence/roster.c|#include "engineio/eio.h"' \
        'lib/log.c|#include "engineio/session.h"' \
        'services/edge/engineio/eio.c|#include "session.h"' \
        'services/edge/socketio/sio.c|#include "bus.h"' \
        'examples/echo/echo.c|#include "chat/chat.h"'; do
        rm -rf "$tmp/tree" && mkdir -p "$tmp/tree"
        (cd "$here" && tar cf - lib services examples tools) | (cd "$tmp/tree" && tar xf -)
        file=${plant%%|*}
        line=${plant#*|}
        printf '%s\n' "$line" >>"$tmp/tree/$file"
        if "$0" "$tmp/tree" >/dev/null 2>&1; then
            echo "layers selftest: NOT caught: $line in $file"
            fail=1
        fi
    done
    rm -rf "$tmp/tree" && mkdir -p "$tmp/tree"
    (cd "$here" && tar cf - lib services examples tools) | (cd "$tmp/tree" && tar xf -)
    "$0" "$tmp/tree" >/dev/null || { echo "layers selftest: the clean copy fails"; fail=1; }
    [ $fail -eq 0 ] && echo "layers selftest: 10 planted violations caught, the clean tree passes"
    exit $fail
fi

root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root" || exit 2

# The room of a source file.
room_of() {
    case "$1" in
    lib/*) echo lib ;;
    services/edge/engineio/*) echo engineio ;;
    services/edge/socketio/*) echo socketio ;;
    services/edge/server/*) echo server ;;
    services/edge/chat/*) echo chat ;;
    services/edge/conform/*) echo conform ;;
    services/edge/main.c) echo main ;;
    services/edge/*) echo edgetop ;;
    services/messaging/*) echo messaging ;;
    services/presence/*) echo presence ;;
    examples/*) echo example ;;
    tools/*) echo tool ;;
    *) echo other ;;
    esac
}

# 1 for the pure files (the codecs and the wheel).
is_pure() {
    case "$1" in
    lib/wheel.[ch] | lib/mem.[ch] | lib/map.[ch] | lib/log.[ch] | lib/ids.[ch] | lib/bucket.[ch]) return 0 ;;
    services/edge/engineio/eio.[ch] | services/edge/engineio/frame.[ch] | services/edge/socketio/sio.[ch]) return 0 ;;
    esac
    return 1
}

# The file a quoted include of file resolves to (same folder, then the
# room-prefixed path under services/edge, then lib/), or "proto" (generated)
# or "unknown".
resolve() {
    local file=$1 inc=$2 dir
    dir=$(dirname "$file")
    if [ -f "$dir/$inc" ]; then
        echo "$dir/$inc"
    elif [ -f "services/edge/$inc" ]; then
        echo "services/edge/$inc"
    elif [ -f "lib/$inc" ]; then
        echo "lib/$inc"
    elif [ "$inc" = chat.pb-c.h ]; then
        echo proto
    else
        echo unknown
    fi
}

# May a file of room `from` include from room `to`? (quoted includes)
allowed() {
    local from=$1 to=$2
    [ "$from" = "$to" ] && return 0
    case "$from:$to" in
    *:unknown) return 1 ;;
    lib:proto) return 0 ;;
    engineio:lib) return 0 ;;
    socketio:engineio | socketio:lib) return 0 ;;
    server:engineio | server:lib) return 0 ;;
    chat:socketio | chat:engineio | chat:lib | chat:proto) return 0 ;;
    conform:socketio | conform:engineio | conform:lib) return 0 ;;
    edgetop:server | edgetop:engineio | edgetop:lib) return 0 ;;
    main:*) return 0 ;;
    messaging:lib | messaging:proto | presence:lib | presence:proto) return 0 ;;
    example:server | example:socketio | example:engineio | example:lib) return 0 ;;
    tool:lib | tool:proto) return 0 ;;
    esac
    return 1
}

# System headers a room may not include.
forbidden_system() {
    local from=$1 inc=$2
    if is_pure "$3"; then
        case "$inc" in libwebsockets.h | nats/* | libpq-fe.h | sys/socket.h | pthread.h | jwt.h) return 0 ;; esac
    fi
    case "$from" in
    engineio | socketio | server | example) case "$inc" in nats/* | libpq-fe.h) return 0 ;; esac ;;
    conform) case "$inc" in nats/* | libpq-fe.h | libwebsockets.h) return 0 ;; esac ;;
    chat) case "$inc" in libpq-fe.h | libwebsockets.h) return 0 ;; esac ;;
    lib) case "$inc" in libwebsockets.h) [ "$3" = lib/wheel_lws.c ] || return 0 ;; esac ;;
    esac
    return 1
}

violations=0
files=0
while IFS= read -r file; do
    files=$((files + 1))
    from=$(room_of "$file")
    while IFS=: read -r line text; do
        if [[ $text =~ \#include\ *\"([^\"]+)\" ]]; then
            inc=${BASH_REMATCH[1]}
            target=$(resolve "$file" "$inc")
            case "$target" in proto | unknown) to=$target ;; *) to=$(room_of "$target") ;; esac
            if ! allowed "$from" "$to"; then
                echo "$file:$line: $from may not include \"$inc\" ($to)"
                violations=$((violations + 1))
            elif is_pure "$file" && ! is_pure "$target"; then
                echo "$file:$line: a pure file may not include \"$inc\" (not pure)"
                violations=$((violations + 1))
            fi
        elif [[ $text =~ \#include\ *\<([^\>]+)\> ]]; then
            inc=${BASH_REMATCH[1]}
            if forbidden_system "$from" "$inc" "$file"; then
                echo "$file:$line: $from may not include <$inc>"
                violations=$((violations + 1))
            fi
        fi
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$file")
done < <(find lib services examples tools -name '*.[ch]' | sort)

echo "layers: $files files checked, $violations violation(s)"
[ "$violations" -eq 0 ]
