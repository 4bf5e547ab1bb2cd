#!/usr/bin/env bash
# Starts a local PostgreSQL for Kiln's tests and prints its admin URL on the last line.
#
# Idempotent: installs Debian's `postgresql` only when it is missing, starts the cluster only
# when it is down, creates the `kiln` role only when it does not exist. Meant to run as root
# (developer machines and CI); psql runs as the `postgres` OS user, which owns the cluster and
# can log in through the local peer socket without a password.
#
#   export KILN_TEST_POSTGRES_URL="$(scripts/start-postgres.sh | tail -n 1)"
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }

as_postgres() {
    if command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        # `su -c` takes one string; every argument we pass is a fixed word, so plain joining is safe.
        su postgres -s /bin/sh -c "$*"
    fi
}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q postgresql >&2
fi

# The newest installed major version (Debian 12 ships 15; later releases ship newer ones).
major="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)"
if [[ -z "$major" ]]; then
    log "no PostgreSQL server found under /usr/lib/postgresql"
    exit 1
fi

# The Debian package creates `main` on install; recreate it if someone dropped it.
if ! pg_lsclusters -h 2>/dev/null | awk -v v="$major" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
    log "creating cluster $major/main"
    pg_createcluster "$major" main >&2
fi

status="$(pg_lsclusters -h | awk -v v="$major" '$1 == v && $2 == "main" { print $4 }')"
if [[ "$status" != online* ]]; then
    log "starting cluster $major/main"
    pg_ctlcluster "$major" main start >&2
fi

port="$(pg_lsclusters -h | awk -v v="$major" '$1 == v && $2 == "main" { print $3 }')"

# `pg_ctlcluster start` returns once the postmaster is up, but recovery may still be running.
for _ in $(seq 1 60); do
    if as_postgres pg_isready -q -p "$port"; then
        break
    fi
    sleep 0.5
done
if ! as_postgres pg_isready -q -p "$port"; then
    log "PostgreSQL $major/main does not accept connections on port $port"
    exit 1
fi

role_exists="$(as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'kiln'")"
if [[ "$role_exists" != "1" ]]; then
    log "creating role kiln"
    as_postgres psql -p "$port" -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE kiln LOGIN SUPERUSER CREATEDB PASSWORD 'kiln'"
fi

# A TCP connection with the password proves what the tests will do actually works
# (Debian's default pg_hba.conf allows scram-sha-256 on 127.0.0.1).
if ! PGPASSWORD=kiln psql -h 127.0.0.1 -p "$port" -U kiln -d postgres -tAc 'SELECT 1' >/dev/null; then
    log "cannot log in as kiln over TCP on 127.0.0.1:$port"
    exit 1
fi

echo "postgres://kiln:kiln@127.0.0.1:${port}/postgres"
