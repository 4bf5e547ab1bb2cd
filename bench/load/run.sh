#!/usr/bin/env bash
# API-level load: 50 concurrent sessions, each running 200 short commands through the HTTP
# API (POST exec, then GET the interaction, which long-polls), against a real server
# started here. Prints throughput, per-command and session-create p50/p99, and the error
# count (the run fails if it is not 0). Then, in the same run, the same load through the
# runtime alone (no HTTP, no store: `bench/concurrency/runtime_burst.rs` with
# KILN_BENCH_EXECS), the ceiling of what the server can reach on this machine, and the
# ratio. Needs root. Arguments go to kiln-bench-load (the baseline then runs only if
# KILN_BENCH_EXECS=SESSIONSxCOMMANDS says its shape):
#   bench/load/run.sh
#   bench/load/run.sh --sessions 10 --commands 50 --command 'echo x'
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/kiln-server.sh

kiln_bench_build
cargo build --quiet --release -p kiln-bench-load
LOAD_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/kiln-bench-load"
BASELINE="${KILN_BENCH_EXECS:-}"
[ $# = 0 ] && BASELINE="${BASELINE:-50x200}"
if [ -n "$BASELINE" ]; then
    export KILN_AGENT_BIN="${KILN_AGENT_BIN:-$(scripts/build-agent.sh | tail -n1)}"
    export KILN_BENCH_IMAGE_STORE
    cargo bench --quiet --no-run -p kiln-runtime --bench concurrency 2>/dev/null
fi

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
# 50 sessions of 10 GiB pass admission only with ~25 GB free at the default disk
# overcommit (20); they write nothing, so the ratio is lifted (see bench/concurrency).
kiln_server_start load KILN_RUNTIME__DISK_OVERCOMMIT=1000
status=0
out=$("$LOAD_BIN" --base-url "$SERVER_URL" --api-key-file "$SERVER_KEY_FILE" "$@") || status=$?
echo "$out"
kiln_server_stop "$SERVER_PID"
if [ "$status" = 0 ] && [ -n "$BASELINE" ]; then
    line=$(KILN_BENCH_EXECS=$BASELINE cargo bench --quiet -p kiln-runtime --bench concurrency 2>/dev/null |
        grep '^runtime-execs')
    echo "$line"
    http=$(grep '^summary' <<<"$out" | tr ' ' '\n' | sed -n 's/^commands_per_s=//p')
    alone=$(tr ' ' '\n' <<<"$line" | sed -n 's/^commands_per_s=//p')
    echo "commands/s: HTTP $http, runtime alone $alone, HTTP / runtime alone $(echo "$http $alone" | awk '{printf "%.2f", $1 / $2}')"
fi
exit "$status"
