#!/usr/bin/env bash
# API-level load: 50 concurrent sessions, each running 200 short commands through the HTTP
# API (POST exec, then GET the interaction, which long-polls), against a real server
# started here. Prints throughput, per-command and session-create p50/p99, and the error
# count (the run fails if it is not 0). Needs root. Arguments go to kiln-bench-load:
#   bench/load/run.sh
#   bench/load/run.sh --sessions 10 --commands 50 --command 'echo x'
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/kiln-server.sh

kiln_bench_build
cargo build --quiet --release -p kiln-bench-load
LOAD_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/kiln-bench-load"

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
# 50 sessions of 10 GiB pass admission only with ~25 GB free at the default disk
# overcommit (20); they write nothing, so the ratio is lifted (see bench/concurrency).
kiln_server_start load KILN_RUNTIME__DISK_OVERCOMMIT=1000
status=0
"$LOAD_BIN" --base-url "$SERVER_URL" --api-key-file "$SERVER_KEY_FILE" "$@" || status=$?
kiln_server_stop "$SERVER_PID"
exit "$status"
