# Sourced by the benchmark scripts: builds `kiln` in release mode and runs real servers on
# free 127.0.0.1 ports, each with a temporary data dir holding a hard-linked copy of a ready
# demo image store. Everything started here is stopped and deleted on exit.
#
#   KILN_BENCH_IMAGE_STORE   a ready image store (default /tmp/envimage-demo2/store; built
#                            with images/build-demo.sh, ≈ 5 min, when missing)
#   KILN_BIN                 a `kiln` binary to use instead of building one

KILN_BENCH_IMAGE_STORE="${KILN_BENCH_IMAGE_STORE:-/tmp/envimage-demo2/store}"
KILN_BENCH_WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
KILN_BENCH_PIDS=()

kiln_bench_cleanup() {
    set +e
    for pid in "${KILN_BENCH_PIDS[@]}"; do
        kiln_server_stop "$pid"
    done
    # Sandbox mounts left by a server that died hard would pin the data dirs.
    grep -o " $KILN_BENCH_WORK[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$KILN_BENCH_WORK"
}
trap kiln_bench_cleanup EXIT INT TERM

# Sets KILN_BIN: a release build of this tree, unless KILN_BIN names a binary already.
kiln_bench_build() {
    if [ -z "${KILN_BIN:-}" ]; then
        cargo build --quiet --release -p kiln-cli
        KILN_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/kiln"
    fi
    if [ ! -d "$KILN_BENCH_IMAGE_STORE/blobs" ]; then
        KILN_BENCH_IMAGE_STORE="$KILN_BENCH_WORK/image-store"
        echo "building the demo images into $KILN_BENCH_IMAGE_STORE (≈ 5 min)" >&2
        images/build-demo.sh --store "$KILN_BENCH_IMAGE_STORE" >&2
    fi
}

# Sets VENV: a virtualenv with the official `codeset` SDK 0.9.1 (KILN_BENCH_VENV, made
# once).
kiln_bench_sdk_venv() {
    VENV="${KILN_BENCH_VENV:-/tmp/kiln-bench-sdk-venv}"
    if ! "$VENV/bin/python" -c 'import codeset, sys; sys.exit(codeset.__version__ != "0.9.1")' 2>/dev/null; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet codeset==0.9.1
    fi
}

kiln_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# kiln_server_start NAME [VAR=VALUE…]: starts a server with that extra environment; sets
# SERVER_PID, SERVER_URL (the API root) and SERVER_KEY_FILE (the admin key).
kiln_server_start() {
    local name=$1
    shift
    local dir="$KILN_BENCH_WORK/$name" port
    mkdir -p "$dir"
    cp -al "$KILN_BENCH_IMAGE_STORE" "$dir/images"
    port=$(kiln_free_port)
    env "$@" "$KILN_BIN" serve --data-dir "$dir" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    KILN_BENCH_PIDS+=("$SERVER_PID")
    SERVER_URL="http://127.0.0.1:$port/api/v1"
    SERVER_KEY_FILE="$dir/admin.key"
    for i in $(seq 1 120); do
        if [ -s "$SERVER_KEY_FILE" ] && curl -sf "$SERVER_URL/health" >/dev/null; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$i" = 120 ]; then
            echo "error: the $name server did not come up; its log:" >&2
            tail -20 "$dir/server.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

# kiln_server_stop PID: SIGTERM (graceful: sandboxes are torn down), SIGKILL after 30 s.
kiln_server_stop() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid"
    # A watchdog rather than polling: an exited child stays a zombie (and answers
    # kill -0) until it is waited for.
    (sleep 30 && kill -KILL "$pid" 2>/dev/null) &
    local watchdog=$!
    wait "$pid" 2>/dev/null || true
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    return 0
}
