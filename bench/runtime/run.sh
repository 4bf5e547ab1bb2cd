#!/usr/bin/env bash
# Runs the local-runtime benchmark (needs root, bubblewrap, busybox-static).
#   bench/runtime/run.sh        KILN_BENCH_SESSIONS=100 bench/runtime/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export KILN_AGENT_BIN="${KILN_AGENT_BIN:-$(scripts/build-agent.sh)}"
exec cargo bench -p kiln-runtime --bench runtime "$@"
