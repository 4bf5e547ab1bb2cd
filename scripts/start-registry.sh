#!/usr/bin/env bash
# Starts a local OCI registry (Debian's docker-registry) for Kiln's image tests.
#
#   scripts/start-registry.sh         start (idempotent), print the URL
#   scripts/start-registry.sh stop    stop it
#   scripts/start-registry.sh status  exit 0 if it answers
#
# Environment:
#   KILN_REGISTRY_ADDR  listen address (default 127.0.0.1:5000)
#   KILN_REGISTRY_DIR   config, storage, pidfile and log (default /tmp/kiln-registry)
#
# Runs the binary directly in the background with a pidfile (no systemd), with its storage in
# KILN_REGISTRY_DIR, so it works in containers and CI.
set -euo pipefail

ADDR="${KILN_REGISTRY_ADDR:-127.0.0.1:5000}"
DIR="${KILN_REGISTRY_DIR:-/tmp/kiln-registry}"
PIDFILE="$DIR/registry.pid"
URL="http://$ADDR"

answers() {
    # /v2/ answers 200 (or 401 when auth is on) once the registry is up.
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/v2/" || true)
    [[ "$code" == 200 || "$code" == 401 ]]
}

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop() {
    local pid
    if pid=$(running_pid); then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "registry stopped (pid $pid)"
    else
        echo "registry not running"
    fi
    rm -f "$PIDFILE"
}

install_if_missing() {
    command -v docker-registry >/dev/null && command -v curl >/dev/null && return
    if [[ $(id -u) -ne 0 ]]; then
        echo "docker-registry is not installed and we are not root: apt-get install docker-registry curl" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker-registry curl >/dev/null
}

start() {
    install_if_missing
    if running_pid >/dev/null && answers; then
        echo "$URL"
        return
    fi
    if answers; then
        # Someone else's registry already serves this address; use it.
        echo "$URL"
        return
    fi
    rm -f "$PIDFILE"
    mkdir -p "$DIR/storage"
    cat >"$DIR/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: $ADDR
YAML
    # setsid: the registry must not die with the shell (or CI step) that started it.
    setsid docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do
        if answers; then
            echo "$URL"
            return
        fi
        if ! running_pid >/dev/null; then
            echo "registry exited; log:" >&2
            cat "$DIR/registry.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "registry did not answer on $URL/v2/ within 10 s; log in $DIR/registry.log" >&2
    exit 1
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) answers && echo "$URL" ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
