#!/usr/bin/env bash
# The runtime benchmark with its Docker baseline in the same run: starts a private dockerd
# (own data root under /tmp, own socket, no iptables, no bridge), imports the benchmark's
# busybox rootfs as an image, runs bench/runtime/run.sh with KILN_BENCH_DOCKER_HOST set,
# then removes every container, stops dockerd and deletes its data root, whatever happens.
#   bench/runtime/docker-baseline.sh      (root; installs docker.io from Debian if missing)
#   KILN_BENCH_SESSIONS=100 KILN_BENCH_DOCKER_IDLE=100 bench/runtime/docker-baseline.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOTFS=/var/cache/kiln-test/busybox-rootfs
SOCK=/tmp/kiln-bench-docker.sock
IMAGE=kiln-bench-busybox:1

if ! command -v dockerd >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
# Debian's client, matched to its daemon (another `docker` may come first on PATH).
DOCKER_CLI=/usr/bin/docker
[ -x "$DOCKER_CLI" ] || DOCKER_CLI=$(command -v docker)
docker_() { "$DOCKER_CLI" -H "unix://$SOCK" "$@"; }

if [ -S "$SOCK" ] && docker_ version >/dev/null 2>&1; then
    echo "error: a dockerd already answers on $SOCK; stop it first" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/kiln-bench-docker.XXXXXX)
DOCKERD_PID=
cleanup() {
    set +e
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        ids=$(docker_ ps -aq 2>/dev/null)
        [ -n "$ids" ] && docker_ rm -f $ids >/dev/null 2>&1
        kill -TERM "$DOCKERD_PID"
        # A watchdog rather than kill -0 polling: an exited child stays a zombie until waited for.
        (sleep 30 && kill -KILL "$DOCKERD_PID" 2>/dev/null) &
        watchdog=$!
        wait "$DOCKERD_PID" 2>/dev/null
        kill "$watchdog" 2>/dev/null
        wait "$watchdog" 2>/dev/null
    fi
    # Overlay and shm mounts left by a daemon that died hard would pin the data root.
    grep -o " $WORK[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK" "$SOCK"
}
trap cleanup EXIT INT TERM

if [ ! -x "$ROOTFS/bin/sh" ]; then
    # The same layout as ensure_rootfs() in main.rs: busybox-static and its applets.
    tmp="$ROOTFS.docker-bench"
    rm -rf "$tmp"
    mkdir -p "$tmp"/{bin,etc,tmp,root,proc,dev,sys,testbed}
    cp /bin/busybox "$tmp/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$tmp/bin/$applet"
    done
    echo "hello from the image" > "$tmp/testbed/hello.txt"
    mv "$tmp" "$ROOTFS"
fi

dockerd --data-root "$WORK/root" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    --host "unix://$SOCK" --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for i in $(seq 1 60); do
    docker_ version >/dev/null 2>&1 && break
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null || [ "$i" = 60 ]; then
        echo "error: dockerd did not come up; its log:" >&2
        tail -20 "$WORK/dockerd.log" >&2
        exit 1
    fi
    sleep 0.5
done
tar -C "$ROOTFS" -c . | docker_ import - "$IMAGE" >/dev/null
echo "dockerd $(docker_ version --format '{{.Server.Version}}') on $SOCK, image $IMAGE imported from $ROOTFS"

KILN_BENCH_DOCKER_HOST="unix://$SOCK" KILN_BENCH_DOCKER_IMAGE="$IMAGE" bench/runtime/run.sh "$@"
