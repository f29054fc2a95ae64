#!/bin/sh
# Validates compose.yaml without a Docker engine: Debian's docker-compose (v1,
# which parses, interpolates and checks the file against the Compose schema
# offline) installed with apt-get when missing. Also checks that every file the
# compose file mounts or builds from is there. Prints "compose: ok" or fails.
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

# Files compose would read at `up` time; `config -q` does not open them.
for f in Dockerfile deploy/haproxy.cfg deploy/secrets/jwt_secret.dev deploy/secrets/postgres_password.dev \
    deploy/secrets/database_url.dev web/package.json web/package-lock.json; do
    [ -s "$f" ] || { echo "check-compose: $f is missing or empty" >&2; exit 1; }
done

# Scaling must stay possible: no fixed container names.
if grep -q '^[[:space:]]*container_name:' compose.yaml; then
    echo "check-compose: container_name would break --scale" >&2
    exit 1
fi
# Dev login (tokens for anyone) only when asked for: off with the variable unset.
unset EDGE_DEV_LOGIN 2>/dev/null || true
if ! docker-compose -f compose.yaml config | grep -Eq "^ +EDGE_DEV_LOGIN: '?0'?$"; then
    echo "check-compose: EDGE_DEV_LOGIN must default to 0 in compose.yaml" >&2
    exit 1
fi

# HAProxy finds the edges through the nameservers of its container's
# resolv.conf, not an address that only one engine uses.
if grep -Eq '^[[:space:]]*nameserver[[:space:]]' deploy/haproxy.cfg ||
    ! grep -Eq '^[[:space:]]*parse-resolv-conf' deploy/haproxy.cfg; then
    echo "check-compose: deploy/haproxy.cfg must resolve through parse-resolv-conf, not a fixed nameserver" >&2
    exit 1
fi
echo "compose: ok"
