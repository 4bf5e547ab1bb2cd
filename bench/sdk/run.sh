#!/usr/bin/env bash
# SDK-observed latency of sessions.create and execute_command("true") with the official
# `codeset` SDK 0.9.1, against a real server (long-poll on, the default) and, as the
# baseline in the same run, against a server with long-poll off (KILN_SESSIONS__LONG_POLL_SECS=0),
# where the SDK falls back to its 3 s polling. Prints one table; needs root.
#   bench/sdk/run.sh
#   KILN_BENCH_SDK_CREATES=30 KILN_BENCH_SDK_EXECS=200 bench/sdk/run.sh
#   KILN_BENCH_SDK_BASELINE_CREATES=10 KILN_BENCH_SDK_BASELINE_EXECS=20   (3 s each at worst)
# Also times execute_command("sleep 0.05") (KILN_BENCH_SDK_SLEEP_EXECS=20 on each server): a
# command that cannot finish before the SDK's first GET, so the baseline always polls.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/kiln-server.sh

kiln_bench_sdk_venv

kiln_bench_build
OUT="$KILN_BENCH_WORK/results"
mkdir -p "$OUT"
measure() {
    "$VENV/bin/python" bench/sdk/sdk_latency.py measure --base-url "$SERVER_URL" \
        --key-file "$SERVER_KEY_FILE" --budget-secs 150 "$@"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
kiln_server_start long-poll
measure --label long-poll --out "$OUT/long-poll.json" \
    --creates "${KILN_BENCH_SDK_CREATES:-30}" --execs "${KILN_BENCH_SDK_EXECS:-200}" \
    --sleep-execs "${KILN_BENCH_SDK_SLEEP_EXECS:-20}"
kiln_server_stop "$SERVER_PID"

kiln_server_start no-long-poll KILN_SESSIONS__LONG_POLL_SECS=0
measure --label no-long-poll --out "$OUT/no-long-poll.json" \
    --creates "${KILN_BENCH_SDK_BASELINE_CREATES:-10}" --execs "${KILN_BENCH_SDK_BASELINE_EXECS:-20}" \
    --sleep-execs "${KILN_BENCH_SDK_SLEEP_EXECS:-20}"
kiln_server_stop "$SERVER_PID"

"$VENV/bin/python" bench/sdk/sdk_latency.py table "$OUT/long-poll.json" "$OUT/no-long-poll.json"
