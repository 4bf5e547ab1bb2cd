#!/usr/bin/env bash
# Starts a private Docker engine (Debian's docker.io) for Kiln's Docker-backend tests and
# benchmarks, apart from any engine the machine already runs: its own data root, exec
# root, pidfile and unix socket, no default bridge and no iptables rules.
#
#   scripts/start-dockerd.sh         start (idempotent), print the socket as unix://PATH
#   scripts/start-dockerd.sh stop    stop it (and the containerd it started)
#   scripts/start-dockerd.sh status  exit 0 if it answers
#
# Environment:
#   KILN_DOCKERD_DIR  data root, exec root, socket, pidfile and log (default /tmp/kiln-dockerd)
#   KILN_DOCKERD_XFS  set to 1: the data root is a loop-mounted XFS (4 GiB sparse image in
#                     KILN_DOCKERD_DIR) with prjquota, so the engine can limit a container's
#                     disk (storage_opt size). Where the kernel has no XFS quotas the mount
#                     fails and the data root stays a plain directory (said on stderr).
#   KILN_DOCKERD_ARGS extra dockerd flags, word-split (e.g. the parity test's runtime); use
#                     with a KILN_DOCKERD_DIR of their own: a running engine is reused as is
#
# Exits non-zero (with the reason on stderr and the log's tail) when dockerd is missing or
# cannot start here (no cgroups, no overlay support...): callers skip their Docker tests then.
set -euo pipefail

DIR="${KILN_DOCKERD_DIR:-/tmp/kiln-dockerd}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
HOST="unix://$SOCK"

answers() {
    [[ -S "$SOCK" ]] && curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null | grep -q OK
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
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$PIDFILE"
    # An XFS data root (KILN_DOCKERD_XFS) goes with its engine; its image stays.
    if mountpoint -q "$DIR/data" 2>/dev/null; then umount "$DIR/data" || true; fi
}

case "${1:-start}" in
    stop) stop; exit 0 ;;
    status) answers; exit $? ;;
    start) ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

if running_pid >/dev/null && answers; then
    echo "$HOST"
    exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd not found (apt-get install docker.io)" >&2; exit 1; }
stop
mkdir -p "$DIR/data" "$DIR/exec"
if [[ "${KILN_DOCKERD_XFS:-}" == 1 ]] && ! mountpoint -q "$DIR/data"; then
    if [[ ! -f "$DIR/data.xfs" ]]; then
        truncate -s 4G "$DIR/data.xfs"
        mkfs.xfs -q -f "$DIR/data.xfs"
    fi
    if ! mount -o loop,prjquota "$DIR/data.xfs" "$DIR/data" 2>"$DIR/xfs.err"; then
        echo "cannot mount an XFS data root with prjquota (kernel without XFS quotas?): \
$(cat "$DIR/xfs.err"); the data root stays a plain directory" >&2
    fi
fi
# setsid: the engine outlives the shell that started it (tests start it once per run).
setsid dockerd \
    --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$PIDFILE" \
    --host "$HOST" --bridge=none --iptables=false --ip-masq=false \
    --containerd-namespace kiln-test --containerd-plugins-namespace kiln-test-plugins \
    ${KILN_DOCKERD_ARGS:-} \
    >"$LOG" 2>&1 </dev/null &
for _ in $(seq 300); do
    if answers; then
        echo "$HOST"
        exit 0
    fi
    if ! kill -0 $! 2>/dev/null; then break; fi
    sleep 0.1
done
echo "dockerd did not start; the end of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
