#!/bin/bash
# The deployment test (`make test-deploy`, part of `make test`): builds the
# image of ./Dockerfile and runs compose.yaml for real, as a deployer would,
# on a Docker engine of its own, then drives the stack through its load
# balancer with the stock socket.io-client (tests/deploy/client.mjs). Then
# the cluster profile (compose.cluster.yaml on top of compose.yaml): three NATS
# nodes in one cluster, streams with three copies, two presence replicas, and
# one NATS node killed while the client checks run through the balancer.
#
# No registry is reachable here, so the images compose.yaml and the Dockerfile
# pin are stand-ins with the same names (tests/deploy/standins/): the Debian
# base is made with debootstrap from Debian's mirror (once; the tarball is kept
# in $STATE_DIR/deploy-cache), the others are built on it from Debian's
# packages. The engine (Debian's dockerd) gets its own data-root, exec-root,
# socket and pidfile in a temp folder, no iptables and no IP forwarding (the
# machine's firewall and sysctls are left alone), and an address pool of its
# own. Whatever happens, the exit trap takes the stack down, stops that
# dockerd by its PID, deletes the bridges it made and unmounts what it left.
#
# Runs as root (dockerd needs it). Bounded: DEPLOY_TIMEOUT_S (1200 s) in all,
# each step on its own bound. Prints "deploy: N passed, N failed" last; logs
# of a failed run are kept in build/deploy/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STATE=${STATE_DIR:-var}
CACHE=$STATE/deploy-cache
LIMIT=${DEPLOY_TIMEOUT_S:-1200}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOGS=$ROOT/build/deploy
PROJECT=chatdeploytest
SUBNETS=10.213.0.0/16 # compose networks of this engine only; nothing routes to them
# The cluster profile's file, on top of compose.yaml, when there is one.
cluster_files=()
[ -f compose.cluster.yaml ] && cluster_files=(-f compose.cluster.yaml)

passed=0
started=$(date +%s)
say() { echo "deploy: $*"; }
pass() {
    passed=$((passed + 1))
    say "ok: $*"
}
fail() {
    say "FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root: it starts a dockerd of its own"
for c in dockerd docker docker-compose debootstrap node ip findmnt; do
    command -v "$c" >/dev/null || fail "$c is missing (make deps installs it)"
done
[ -d tests/deploy/node_modules/socket.io-client ] || fail "tests/deploy/node_modules is missing (make deps installs it)"

# ---- cleanup: everything this run (or a killed earlier one) started

# Stops the engine whose folder is $1: the stack first, then dockerd by its
# PID, then what outlives it (containerd shims started from that folder, the
# bridges noted in $1/bridges, mounts under $1), then the folder.
teardown() {
    local dir=$1 pid=""
    [ -d "$dir" ] || return 0
    [ -f "$dir/dockerd.pid" ] && pid=$(cat "$dir/dockerd.pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        export DOCKER_HOST=unix://$dir/docker.sock
        timeout 90 docker-compose -p "$PROJECT" -f compose.yaml "${cluster_files[@]}" down -v --timeout 10 \
            >>"$dir/teardown.log" 2>&1 || true
        # The engine is ours alone: whatever compose did not take down goes too.
        docker ps -aq | xargs -r timeout 60 docker rm -f -v >>"$dir/teardown.log" 2>&1 || true
        docker network ls -q --filter type=custom | xargs -r timeout 30 docker network rm >>"$dir/teardown.log" 2>&1 || true
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Processes still running from this folder (containerd, its shims): by PID.
    local p
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$dir/"; then
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
    if [ -f "$dir/bridges" ]; then
        while read -r br; do
            ip link show "$br" >/dev/null 2>&1 && ip link delete "$br" 2>/dev/null || true
        done <"$dir/bridges"
    fi
    findmnt -rn -o TARGET | grep -F -- "$dir/" | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$dir"
}

tmp=""
watchdog=""
dockerd_pid=""
cache_state=cold
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] && [ -n "$tmp" ] && [ -d "$tmp" ]; then
        mkdir -p "$LOGS"
        cp "$tmp"/*.log "$LOGS/" 2>/dev/null || true
        if [ -S "$tmp/docker.sock" ]; then
            DOCKER_HOST=unix://$tmp/docker.sock timeout 30 docker-compose -p "$PROJECT" -f compose.yaml \
                "${cluster_files[@]}" logs --no-color >"$LOGS/compose.log" 2>&1 || true
            tail -n 60 "$LOGS/compose.log" >&2 || true
        fi
        say "logs kept in build/deploy/" >&2
    fi
    [ -n "$tmp" ] && teardown "$tmp"
    rm -f "$CACHE/last-run"
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
    if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
        say "FAILED: dockerd $dockerd_pid still runs after the teardown" >&2
        rc=1
    fi
    say "$cache_state cache, $(($(date +%s) - started)) s"
    say "$passed passed, $([ "$rc" -eq 0 ] && echo 0 || echo 1) failed"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'say "over ${LIMIT} s: stopping" >&2; exit 124' TERM

mkdir -p "$CACHE"
# A run that was killed outright left its engine running: stop it first.
if [ -f "$CACHE/last-run" ]; then
    stale=$(cat "$CACHE/last-run")
    case "$stale" in /tmp/chat-deploy.*) say "stopping what a killed run left in $stale"; teardown "$stale" ;; esac
fi
tmp=$(mktemp -d /tmp/chat-deploy.XXXXXX)
echo "$tmp" >"$CACHE/last-run"
rm -rf "$LOGS"

# The whole run is bounded: past LIMIT the watchdog sends TERM (handled above).
(
    sleep "$LIMIT" &
    s=$!
    trap 'kill $s; exit 0' TERM
    wait $s
    kill -TERM $$
) &
watchdog=$!

# ---- the engine

export DOCKER_HOST=unix://$tmp/docker.sock
dockerd --data-root "$tmp/data" --exec-root "$tmp/exec" -H "$DOCKER_HOST" --pidfile "$tmp/dockerd.pid" \
    --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --default-address-pool "base=$SUBNETS,size=24" \
    --containerd-namespace chat-deploy-test --containerd-plugins-namespace chat-deploy-test-plugins \
    >"$tmp/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 1 150); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 20 "$tmp/dockerd.log" >&2; fail "dockerd exited at start"; }
    sleep 0.2
done
docker version >/dev/null 2>&1 || fail "dockerd did not answer within 30 s (see build/deploy/dockerd.log)"
pass "dockerd $(docker version -f '{{.Server.Version}}') on $DOCKER_HOST"

# ---- the images compose.yaml and the Dockerfile name, as stand-ins

base=$(sed -n 's/^FROM[[:space:]]\{1,\}\(debian:[^[:space:]]*\).*/\1/p' Dockerfile | head -n 1)
[ -n "$base" ] || fail "no debian base image in Dockerfile"
tarball=$CACHE/bookworm-minbase.tar
[ -s "$tarball" ] && cache_state=warm
if [ ! -s "$tarball" ]; then
    say "making the base with debootstrap --variant=minbase bookworm (once; kept in $tarball)"
    timeout 600 debootstrap --variant=minbase bookworm "$tmp/rootfs" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 ||
        fail "debootstrap failed (see build/deploy/debootstrap.log)"
    # As the upstream slim image: updates and security suites, no package lists or .debs.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
        "$MIRROR" "$MIRROR" "$MIRROR" >"$tmp/rootfs/etc/apt/sources.list"
    rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*
    tar -C "$tmp/rootfs" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$tmp/rootfs"
fi
timeout 300 docker import "$tarball" "$base" >/dev/null || fail "docker import of $tarball failed"
pass "base image $base from debootstrap ($cache_state cache)"

# Builds stand-in $1 (a folder of tests/deploy/standins) and tags it $2.
standin() {
    local ctx=$tmp/ctx-$1
    cp -r "tests/deploy/standins/$1" "$ctx"
    # npm in the node stand-in trusts what this machine trusts (its TLS proxy, if any).
    [ "$1" != node ] || cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt" 2>/dev/null || : >"$ctx/host-ca.crt"
    timeout 600 docker build --network host --build-arg "BASE=$base" -t "$2" "$ctx" >"$tmp/standin-$1.log" 2>&1 ||
        { tail -n 30 "$tmp/standin-$1.log" >&2; fail "stand-in $2 did not build"; }
}
images=$({
    sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' Dockerfile
    sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*/\1/p' compose.yaml
    [ ${#cluster_files[@]} -eq 0 ] || sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*/\1/p' compose.cluster.yaml
} | sort -u)
for img in $images; do
    case "$img" in
    "$base" | chat-backend:*) ;;
    nats:*) standin nats "$img" ;;
    postgres:*) standin postgres "$img" ;;
    haproxy:*) standin haproxy "$img" ;;
    node:*) standin node "$img" ;;
    *) fail "no stand-in for $img (add one to tests/deploy/standins/)" ;;
    esac
done
pass "stand-ins $(echo "$images" | grep -v -e "^$base\$" -e '^chat-backend:' | tr '\n' ' ')built from Debian packages"

# ---- the stack

# The secrets as deploy/secrets/README.md tells a deployer to write them: the
# chat services' owned by root and readable by the image's group chat (gid
# 10001) only, PostgreSQL's password root's alone.
mkdir -p "$tmp/secrets"
cp deploy/secrets/jwt_secret.dev "$tmp/secrets/jwt_secret"
cp deploy/secrets/database_url.dev "$tmp/secrets/database_url"
cp deploy/secrets/postgres_password.dev "$tmp/secrets/postgres_password"
chown 0:10001 "$tmp/secrets/jwt_secret" "$tmp/secrets/database_url"
chmod 0640 "$tmp/secrets/jwt_secret" "$tmp/secrets/database_url"
chown 0:0 "$tmp/secrets/postgres_password"
chmod 0600 "$tmp/secrets/postgres_password"
export CHAT_JWT_SECRET_FILE=$tmp/secrets/jwt_secret CHAT_DATABASE_URL_FILE=$tmp/secrets/database_url
export CHAT_POSTGRES_PASSWORD_FILE=$tmp/secrets/postgres_password
unset EDGE_DEV_LOGIN COMPOSE_FILE COMPOSE_PROJECT_NAME
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
export CHAT_PORT=127.0.0.1:$port # the balancer on loopback only
url=http://127.0.0.1:$port

dc() {
    local t=$1
    shift
    timeout "$t" docker-compose -p "$PROJECT" -f compose.yaml -f tests/deploy/compose.test.yaml "$@" \
        >>"$tmp/compose.log" 2>&1
}
count() { docker ps -q --filter "label=com.docker.compose.project=$PROJECT" | grep -c .; }
# Fails unless service $1 runs $2 containers.
replicas() { [ "$(containers "$1" | grep -c .)" -eq "$2" ] || fail "$1 runs $(containers "$1" | grep -c .) containers, want $2"; }
client() { timeout 120 node tests/deploy/client.mjs "$@"; }

# Notes the bridges of this project's networks, for the teardown.
note_bridges() {
    docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | sed 's/^\(.\{12\}\).*/br-\1/' >>"$tmp/bridges"
}

# Waits (bounded) until every container of the project (as `up -d` left
# them) runs, and is healthy when it has a healthcheck.
wait_healthy() {
    local deadline=$(($(date +%s) + 240)) states bad
    while :; do
        states=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker inspect -f \
            '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}')
        bad=$(echo "$states" | grep -v ' running healthy$' || true)
        [ -z "$bad" ] && [ -n "$states" ] && return 0
        if echo "$bad" | grep -q -e ' exited ' -e ' dead ' -e ' unhealthy$'; then
            echo "$states" >&2
            fail "a container stopped or is unhealthy"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { echo "$states" >&2; fail "not all containers healthy within 240 s"; }
        sleep 1
    done
}

# GET $2 on port $3 inside container $1 (the image has bash, not curl).
http_in() {
    docker exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$3 && printf 'GET $2 HTTP/1.0\r\n\r\n' >&3 && cat <&3"
}
containers() { docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"; }

# ---- the cluster profile's probes: NATS monitoring read inside the nodes'
# containers (the nats image has wget), its JSON read with node.

# GET $2 on the monitoring port of the NATS node of service $1.
nats_get() { docker exec "$(containers "$1")" wget -q -T 5 -O - "http://127.0.0.1:8222$2"; }
# Prints what the JavaScript function $1 returns for the JSON read from stdin.
json() {
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(eval(process.argv[1])(JSON.parse(s))));' "$1"
}
# "ROUTES SIZE LEADER" as NATS node $1 sees them: the servers it has routes to,
# the size of the JetStream cluster and its meta leader.
node_view() {
    local r m
    r=$(nats_get "$1" /routez | json '(j) => new Set((j.routes ?? []).map((r) => r.remote_id)).size') || return 1
    m=$(nats_get "$1" /jsz | json '(j) => `${j.meta_cluster?.cluster_size ?? 0} ${j.meta_cluster?.leader || "-"}`') || return 1
    echo "$r $m"
}
# Waits (bounded: 60 s) until every NATS node of $@ has routes to the two
# others and sees a JetStream cluster of 3 with the same meta leader ($meta).
in_cluster() {
    local deadline=$(($(date +%s) + 60)) views n v
    while :; do
        views=$(for n in "$@"; do v=$(node_view "$n") || v="? ? ?"; echo "$n $v"; done)
        if echo "$views" | awk '$2 != 2 || $3 != 3 || $4 == "-" {bad = 1} !($4 in l) {l[$4]; k++} END {exit bad || k != 1}'; then
            meta=$(echo "$views" | awk 'NR == 1 {print $4}')
            return 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { echo "$views" >&2; fail "the NATS nodes are not one cluster within 60 s (node routes size leader above)"; }
        sleep 1
    done
}
STREAMS="CHAT_CMD CHAT_EVENTS KV_CHAT_PRESENCE_LEASE"
# On NATS node $1: "ok NAME=LEADER ..." when each of $STREAMS is there with 3
# replicas (its configuration, and two peers besides this node) and a leader
# other than $2; else the first thing that is not so.
streams_on() {
    nats_get "$1" '/jsz?streams=1&config=1' | json "(j) => {
        const all = (j.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
        const out = [];
        for (const name of '$STREAMS'.split(' ')) {
            const s = all.find((x) => x.name === name);
            if (!s) return 'no ' + name;
            const peers = (s.cluster?.replicas ?? []).length;
            if (s.config?.num_replicas !== 3 || peers !== 2) return name + ': ' + s.config?.num_replicas + ' replicas, ' + peers + ' peers';
            if (!s.cluster.leader || s.cluster.leader === '${2:-}') return name + ': no leader';
            out.push(name + '=' + s.cluster.leader);
        }
        return 'ok ' + out.join(' ');
    }"
}
# Waits (bounded: $1 s) until every NATS node of $3.. says "ok" for the streams
# with no leader named $2 ($2 empty: any); $streams is the first node's answer.
streams_ok() {
    local deadline=$(($(date +%s) + $1)) dead=$2 n v bad
    shift 2
    while :; do
        bad=""
        for n in "$@"; do
            v=$(streams_on "$n" "$dead") || v="unreadable"
            case "$v" in
            ok\ *) if [ "$n" = "$1" ]; then streams=${v#ok }; fi ;;
            *) bad="$bad $n: $v;" ;;
            esac
        done
        [ -z "$bad" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || { echo "$bad" >&2; return 1; }
        sleep 1
    done
}
# Waits (bounded: $1 s) until exactly one of the two presence replicas says
# chat_presence_active 1 ($actives: their values).
one_active() {
    local deadline=$(($(date +%s) + $1)) c
    while :; do
        actives=$(for c in $(containers presence); do http_in "$c" /metrics 9100 | sed -n 's/^chat_presence_active //p'; done)
        [ "$(echo "$actives" | grep -c .)" -eq 2 ] && [ "$(echo "$actives" | awk '{s += $1} END {print s + 0}')" -eq 1 ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 1
    done
}

t0=$(date +%s)
dc 900 up --build -d || { tail -n 40 "$tmp/compose.log" >&2; fail "docker-compose up --build -d"; }
note_bridges
wait_healthy
pass "docker-compose up --build -d: image built, $(count) containers healthy ($(($(date +%s) - t0)) s)"

client ready "$url" || fail "the balancer does not answer"
client chat "$url" "$CHAT_JWT_SECRET_FILE" default,websocket 2 || fail "client checks, one edge"
pass "socket.io-client through the balancer: default transports and WebSocket only"
client devlogin "$url" off || fail "dev login must be off by default"
pass "dev login off by default"

# ---- scaled out: two edges behind the balancer, three messaging replicas
dc 300 up -d --scale edge=2 --scale messaging=3 || { tail -n 40 "$tmp/compose.log" >&2; fail "scale up"; }
wait_healthy
replicas edge 2
replicas messaging 3
# The balancer finds the second edge through DNS (haproxy.cfg's resolvers);
# the first one it had from its start.
lb=$(containers lb)
deadline=$(($(date +%s) + 60))
until [ "$(docker logs "$lb" 2>&1 | sed -n 's/.*Server edges\/\(edge[0-9]*\) .*is UP.*/\1/p' | sort -u | wc -l)" -ge 1 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the balancer did not find the second edge within 60 s"
    sleep 0.5
done
pass "scaled to 2 edges and 3 messaging replicas; the balancer found the new edge"
client chat "$url" "$CHAT_JWT_SECRET_FILE" polling,default,websocket 6 || fail "client checks, two edges"
for c in $(containers edge); do
    n=$(http_in "$c" /metrics 3000 | sed -n 's/^chat_edge_connects_total{result="ok"} //p')
    [ "${n:-0}" -gt 0 ] || fail "edge $c took no client: the sessions were not spread"
done
pass "long-polling only, default and WebSocket clients on both edges (sticky sessions)"
# The balancer names each client to the edges, which trust it; it replaces a
# client's own X-Forwarded-For; its log has paths without query strings.
for c in $(containers edge); do
    n=$(http_in "$c" /metrics 3000 | sed -n 's/^chat_edge_forwarded_total //p')
    [ "${n:-0}" -gt 0 ] || fail "edge $c took no client address from the balancer's X-Forwarded-For"
done
client forged "$url" || fail "a forged X-Forwarded-For"
lines=$(docker logs "$lb" 2>&1 | grep -c '"GET /socket.io/' || true)
[ "$lines" -gt 0 ] || fail "the balancer logged no /socket.io/ request"
! docker logs "$lb" 2>&1 | grep -q 'sid=' || fail "a sid in the balancer's log: $(docker logs "$lb" 2>&1 | grep -m1 'sid=')"
pass "the edges take each client's address from the balancer, a forged one is replaced, no sid in its log ($lines requests)"
deadline=$(($(date +%s) + 60))
while :; do
    owned=$(for c in $(containers messaging); do http_in "$c" /metrics 9100 | sed -n 's/^chat_messaging_partitions_owned //p'; done)
    total=$(echo "$owned" | awk '{s += $1} END {print s + 0}')
    [ "$total" -eq 8 ] && ! echo "$owned" | grep -qx 0 && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "messaging partitions owned: $(echo $owned), want 8 shared by all 3"
    sleep 1
done
pass "the 3 messaging replicas share the 8 partitions ($(echo $owned))"

# ---- the cluster profile (compose.cluster.yaml on top of compose.yaml), when
# there is one: what it claims, the client checks through the balancer, and
# again with one NATS node killed (the leader of CHAT_CMD), then back.
profile=()
if [ ${#cluster_files[@]} -gt 0 ]; then
    profile=("${cluster_files[@]}")
    nodes=(nats nats-2 nats-3)
    t0=$(date +%s)
    dc 600 "${profile[@]}" up -d --scale edge=2 --scale messaging=3 || { tail -n 40 "$tmp/compose.log" >&2; fail "up with the cluster profile"; }
    note_bridges
    wait_healthy
    for n in "${nodes[@]}"; do replicas "$n" 1; done
    replicas presence 2
    replicas edge 2
    replicas messaging 3
    pass "the cluster profile with --scale edge=2 --scale messaging=3: $(count) containers healthy, 3 NATS nodes, 2 presence, 2 edges, 3 messaging ($(($(date +%s) - t0)) s)"

    in_cluster "${nodes[@]}"
    pass "the 3 NATS nodes are one cluster: each routes to the 2 others and has JetStream meta leader $meta"
    # Each service lists the nodes in its own order: each node has clients.
    conns=""
    for n in "${nodes[@]}"; do
        c=$(nats_get "$n" /varz | json '(j) => j.connections') || fail "no /varz from $n"
        [ "$c" -gt 0 ] || fail "NATS node $n has no client: the services' NATS_URL orders do not spread them"
        conns="$conns${conns:+, }$n $c"
    done
    pass "the services spread over the nodes by their NATS_URL orders (client connections: $conns)"
    streams_ok 60 "" "${nodes[@]}" || fail "the streams do not have 3 replicas with a leader on every node within 60 s"
    pass "every node holds a copy of the 3 streams, each with 3 replicas ($streams)"
    one_active 30 || fail "presence replicas: chat_presence_active $(echo $actives), want one 1 and one 0 within 30 s"
    pass "2 presence replicas, exactly one active (chat_presence_active $(echo $actives))"

    client ready "$url" || fail "the balancer does not answer (cluster profile)"
    client chat "$url" "$CHAT_JWT_SECRET_FILE" polling,default,websocket 4 || fail "client checks, cluster profile"
    pass "the cluster profile: the client checks pass through the balancer"

    # One fault: the node leading CHAT_CMD killed; the others elect new leaders.
    victim=$(streams_on nats "" | sed -n 's/.*CHAT_CMD=\([^ ]*\).*/\1/p')
    [ -n "$victim" ] && [ -n "$(containers "$victim")" ] || fail "no NATS node leads CHAT_CMD"
    live=()
    for n in "${nodes[@]}"; do [ "$n" = "$victim" ] || live+=("$n"); done
    vc=$(containers "$victim")
    t0=$(date +%s)
    docker kill "$vc" >/dev/null || fail "docker kill $victim"
    streams_ok 60 "$victim" "${live[@]}" || fail "no new leaders on ${live[*]} within 60 s of killing $victim"
    elected=$(($(date +%s) - t0))
    one_active 30 || fail "presence with $victim down: chat_presence_active $(echo $actives), want one 1 and one 0 within 30 s"
    client ready "$url" || fail "the balancer does not answer with $victim down"
    # A client check that fails while the cluster settles is run again, within a bound.
    attempt=1
    deadline=$(($(date +%s) + 90))
    until client chat "$url" "$CHAT_JWT_SECRET_FILE" polling,default,websocket 2; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "client checks with NATS node $victim down (attempt $attempt)"
        attempt=$((attempt + 1))
        sleep 2
    done
    [ "$(docker inspect -f '{{.State.Running}}' "$vc")" = false ] || fail "$victim was restarted before the checks ended"
    pass "NATS node $victim (CHAT_CMD's leader) killed: new leaders after ${elected} s ($streams), one presence active, the client checks pass through the balancer (attempt $attempt, $(($(date +%s) - t0)) s after the kill)"
    t0=$(date +%s)
    docker start "$vc" >/dev/null || fail "docker start $victim"
    wait_healthy
    in_cluster "${nodes[@]}"
    streams_ok 60 "" "${nodes[@]}" || fail "the streams after $victim came back"
    pass "$victim started again: healthy, back in the cluster with its copies of the streams ($(($(date +%s) - t0)) s)"
fi

# ---- data survives down and up; dev login only when asked for
client write "$url" "$CHAT_JWT_SECRET_FILE" "$tmp/persist.json" || fail "storing a message"
dc 120 "${profile[@]}" down || fail "docker-compose down"
EDGE_DEV_LOGIN=1 dc 300 up -d || { tail -n 40 "$tmp/compose.log" >&2; fail "docker-compose up after down"; }
note_bridges
wait_healthy
client ready "$url" || fail "the balancer does not answer after down/up"
client verify "$url" "$CHAT_JWT_SECRET_FILE" "$tmp/persist.json" || fail "data lost across down/up"
pass "a stored message survives docker-compose down and up"
client devlogin "$url" on || fail "EDGE_DEV_LOGIN=1 must turn dev login on"
pass "EDGE_DEV_LOGIN=1 turns dev login on"

dc 120 "${profile[@]}" down -v || fail "docker-compose down -v"
left=$(docker ps -aq; docker volume ls -q; docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "left after down -v: $(echo $left)"
pass "docker-compose down -v leaves no container, volume or network"
