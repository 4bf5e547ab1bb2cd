#!/usr/bin/env bash
# SSE first-byte latency of /v1 exec streams vs. the runtime's exec_streaming, same run.
# Needs root, bubblewrap and busybox-static (the test image of crates/kiln-api/tests).
#   bench/exec/run.sh            # 200 iterations each
#   KILN_BENCH_ITERATIONS=50 bench/exec/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN_AGENT_BIN="${KILN_AGENT_BIN:-$(scripts/build-agent.sh | tail -n 1)}"
export KILN_AGENT_BIN
cargo bench -p kiln-api --bench exec_sse_first_byte
