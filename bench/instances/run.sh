#!/usr/bin/env bash
# Snapshots, restores and forks (N = 1, 10, 100 ready) over HTTP against the runtime alone,
# then forks on a server with a warm pool, in one run (bench/instances/main.rs).
# Needs root, bubblewrap and busybox-static.
#   bench/instances/run.sh                         release build, 20 rounds
#   KILN_BENCH_ROUNDS=12 KILN_BENCH_PROFILE=dev bench/instances/run.sh   (no release build)
#   KILN_BENCH_WARM=0 bench/instances/run.sh       without the warm-pool fork series
set -euo pipefail
cd "$(dirname "$0")/../.."
export KILN_AGENT_BIN="${KILN_AGENT_BIN:-$(scripts/build-agent.sh | tail -n1)}"
exec cargo bench -p kiln-api --bench instances --profile "${KILN_BENCH_PROFILE:-bench}"
