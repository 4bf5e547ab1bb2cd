#!/usr/bin/env bash
# Three `kiln serve` nodes on one PostgreSQL (127.0.0.2, .3, .4, own data dirs, one shared
# demo image store), measured with the official `codeset` SDK 0.9.1
# (bench/nodes/nodes_bench.py): placement spread of N sessions created through random
# nodes, and exec through the session's owner vs. through a non-owner (the forwarding hop),
# alternating, in the same run. Needs root and PostgreSQL (scripts/start-postgres.sh).
#   bench/nodes/run.sh                          # 50 sessions, 10 execs per session and side
#   KILN_BENCH_NODES_SESSIONS=200 bench/nodes/run.sh
#   KILN_BIN=target/debug/kiln bench/nodes/run.sh   # skip the release build
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/kiln-server.sh

kiln_bench_sdk_venv
kiln_bench_build
KILN_AGENT_BIN="${KILN_AGENT_BIN:-$(scripts/build-agent.sh | tail -n 1)}"
admin_url="${KILN_TEST_POSTGRES_URL:-$(scripts/start-postgres.sh | tail -n 1)}"
db="kiln_bench_nodes_$$"
psql "$admin_url" -qc "CREATE DATABASE $db"
trap 'kiln_bench_cleanup; psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT INT TERM

nodes=() dirs=()
for i in 2 3 4; do
    dir="$KILN_BENCH_WORK/node$i"
    mkdir -p "$dir"
    port=$(kiln_free_port)
    env KILN_DATABASE_URL="${admin_url%/*}/$db" KILN_IMAGES_DIR="$KILN_BENCH_IMAGE_STORE" \
        KILN_AGENT_BIN="$KILN_AGENT_BIN" KILN_BUILD_DEMO_IMAGES=false \
        KILN_CLUSTER__HEARTBEAT_INTERVAL_MS=200 KILN_CLUSTER__SECRET=a-cluster-secret-for-the-benchmark \
        KILN_SESSIONS__MAX_LIVE_SESSIONS_PER_USER=1000 \
        "$KILN_BIN" serve --data-dir "$dir" --listen "127.0.0.$i:$port" >"$dir/server.log" 2>&1 &
    KILN_BENCH_PIDS+=("$!")
    url="http://127.0.0.$i:$port/api/v1"
    # One after the other: the first creates the schema, the admin and the demo dataset.
    for t in $(seq 1 120); do
        curl -sf "$url/health" >/dev/null && break
        [ "$t" = 120 ] && { echo "node $i did not come up:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
        sleep 0.5
    done
    nodes+=(--node "$url") dirs+=(--data-dir "$dir")
done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); kiln: $KILN_BIN"
"$VENV/bin/python" bench/nodes/nodes_bench.py "${nodes[@]}" "${dirs[@]}" \
    --key-file "$KILN_BENCH_WORK/node2/admin.key" \
    --sessions "${KILN_BENCH_NODES_SESSIONS:-50}" --execs "${KILN_BENCH_NODES_EXECS:-10}"
