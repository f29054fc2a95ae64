#!/bin/sh
# Validates compose.yaml, and the cluster profile (compose.yaml with
# compose.cluster.yaml on top), without a Docker engine: Debian's
# docker-compose (v1, which parses, interpolates, merges and checks the files
# against the Compose schema offline) installed with apt-get when missing.
# Also checks that every file the compose file mounts or builds from is there,
# and what the cluster profile claims (three NATS nodes routed to each other,
# each with its own store and healthcheck; every service on all three with
# three stream copies; two presence replicas). Prints "compose: ok" or fails.
set -eu
cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
    echo "check-compose: installing docker-compose"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends docker-compose
fi

# Unset so that the defaults of compose.yaml (the dev secret files) are checked.
unset CHAT_JWT_SECRET_FILE CHAT_POSTGRES_PASSWORD_FILE CHAT_DATABASE_URL_FILE 2>/dev/null || true

docker-compose -f compose.yaml config -q
docker-compose -f compose.yaml -f compose.cluster.yaml config -q

# Files compose would read at `up` time; `config -q` does not open them.
for f in Dockerfile deploy/haproxy.cfg deploy/secrets/jwt_secret.dev deploy/secrets/postgres_password.dev \
    deploy/secrets/database_url.dev web/package.json web/package-lock.json; do
    [ -s "$f" ] || { echo "check-compose: $f is missing or empty" >&2; exit 1; }
done

# Scaling must stay possible: no fixed container names.
if grep -q '^[[:space:]]*container_name:' compose.yaml compose.cluster.yaml; then
    echo "check-compose: container_name would break --scale" >&2
    exit 1
fi
# Dev login (tokens for anyone) only when asked for: off with the variable unset.
unset EDGE_DEV_LOGIN 2>/dev/null || true
if ! docker-compose -f compose.yaml config | grep -Eq "^ +EDGE_DEV_LOGIN: '?0'?$"; then
    echo "check-compose: EDGE_DEV_LOGIN must default to 0 in compose.yaml" >&2
    exit 1
fi

# The cluster profile as merged, and compose.yaml alone still a single node
# (python3-yaml comes with docker-compose).
{
    docker-compose -f compose.yaml config
    echo ---
    docker-compose -f compose.yaml -f compose.cluster.yaml config
} | python3 -c '
import sys, yaml
single, cluster = yaml.safe_load_all(sys.stdin)
def fail(why):
    sys.exit("check-compose: " + why)
nodes = ["nats", "nats-2", "nats-3"]
apps = ["messaging", "presence", "edge"]
if any(n in single["services"] for n in nodes[1:]):
    fail("compose.yaml alone must run one NATS node")
for a in apps:
    env = single["services"][a]["environment"]
    if env.get("NATS_URL") != "nats://nats:4222" or str(env.get("CHAT_STREAM_REPLICAS")) != "1":
        fail("compose.yaml: %s must use the one node with CHAT_STREAM_REPLICAS=1" % a)
svc = cluster["services"]
stores = set()
for n in nodes:
    s = svc.get(n) or fail("the cluster profile has no service " + n)
    cmd = s["command"]
    arg = lambda flag: cmd[cmd.index(flag) + 1] if flag in cmd else ""
    others = ["nats://%s:6222" % o for o in nodes if o != n]
    if "-js" not in cmd or arg("-sd") != "/data" or arg("-m") != "8222" or arg("-n") != n:
        fail("%s: want -js -sd /data -m 8222 -n %s" % (n, n))
    if arg("--cluster_name") != "chat" or sorted(arg("--routes").split(",")) != sorted(others):
        fail("%s: want --cluster_name chat and --routes %s" % (n, ",".join(others)))
    vol = [v for v in s.get("volumes", []) if v.endswith(":/data") or ":/data:" in v]
    if len(vol) != 1 or vol[0].split(":")[0] in stores:
        fail("%s: want a volume of its own at /data, got %s" % (n, vol))
    stores.add(vol[0].split(":")[0])
    if "/healthz" not in " ".join(s.get("healthcheck", {}).get("test", [])):
        fail(n + ": no healthcheck on /healthz")
firsts = set()
for a in apps:
    env = svc[a]["environment"]
    urls = env.get("NATS_URL", "").split(",")
    if sorted(urls) != sorted("nats://%s:4222" % n for n in nodes) or str(env.get("CHAT_STREAM_REPLICAS")) != "3":
        fail("cluster profile: %s must list the three nodes in NATS_URL and set CHAT_STREAM_REPLICAS=3" % a)
    firsts.add(urls[0])
    for n in nodes:
        if svc[a].get("depends_on", {}).get(n, {}).get("condition") != "service_healthy":
            fail("cluster profile: %s must wait for %s to be healthy" % (a, n))
if len(firsts) != len(apps):
    fail("cluster profile: give each service the nodes in a different order")
if svc["presence"].get("deploy", {}).get("replicas") != 2:
    fail("cluster profile: want two presence replicas")
'

# HAProxy finds the edges through the nameservers of its container's
# resolv.conf, not an address that only one engine uses.
if grep -Eq '^[[:space:]]*nameserver[[:space:]]' deploy/haproxy.cfg ||
    ! grep -Eq '^[[:space:]]*parse-resolv-conf' deploy/haproxy.cfg; then
    echo "check-compose: deploy/haproxy.cfg must resolve through parse-resolv-conf, not a fixed nameserver" >&2
    exit 1
fi
echo "compose: ok"
