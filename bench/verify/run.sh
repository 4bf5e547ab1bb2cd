#!/usr/bin/env bash
# Verification overhead on the demo dataset: bench/verify/run.sh [ROUNDS]
# Needs root and the demo images (KILN_IMAGES_DIR, default: built into a temp store).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-5}"
cargo build --quiet --release -p kiln-cli
venv=/tmp/kiln-bench-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet codeset==0.9.1; }
data="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export KILN_IMAGES_DIR="${KILN_IMAGES_DIR:-$data/images}" KILN_BUILD_DEMO_IMAGES=false
target/release/kiln images build-demo --data-dir "$data" >/dev/null 2>&1
target/release/kiln serve --data-dir "$data" --listen "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null && break; sleep 0.1; done
"$venv/bin/python" bench/verify/verify_overhead.py "http://127.0.0.1:$port/api/v1" "$(cat "$data/admin.key")" "$rounds"
