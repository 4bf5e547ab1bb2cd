#!/usr/bin/env bash
# kiln eval vs the SWE-bench harness (swebench 5.0.2 in Docker) on the fixture's ten
# instances, same predictions, same --max-workers, one after the other on the same cores:
# run wall times and per-instance overhead (instance wall minus pytest's own test time),
# medians and harness/kiln ratios. Also checks parity (tests/parity/harness_docker.sh).
#
#   bench/swebench/run.sh [INSTANCE_ID...]
#
# Needs root, the fixture's images (kiln images build-swebench, see datasets/swebench-fixture)
# and a dockerd (scripts/start-dockerd.sh). KILN_BIN=path/to/kiln skips the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${KILN_BIN:-}" ]; then
  cargo build --quiet --release -p kiln-cli
  export KILN_BIN="$PWD/target/release/kiln"
fi
exec tests/parity/harness_docker.sh "$@"
