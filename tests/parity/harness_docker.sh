#!/usr/bin/env bash
# Parity with the real SWE-bench harness on the same machine: the fixture's Kiln images are
# loaded into a private Docker engine under the harness's image names, the same predictions
# (gold, one empty, one that does not apply, one wrong) go through `kiln eval` and through
# `python -m swebench.harness.run_evaluation` (swebench 5.0.2), and every report.json
# (resolved, tests_status) and the run reports' id lists must be identical. Prints both
# tools' wall times and per-instance overhead (tests/parity/harness_docker.py timings).
#
#   tests/parity/harness_docker.sh [INSTANCE_ID...]     (default: all ten)
#
# Exit 0: identical; 1: a mismatch (diff on stderr) or a failure; 77: skipped (dockerd
# cannot start, or the fixture images are not built), said on stderr.
#
# Environment:
#   KILN_BIN                       kiln binary [target/debug/kiln]
#   KILN_TEST_SWEBENCH_IMAGES_DIR  the fixture's image store [/var/cache/kiln-test/swebench-images]
#   KILN_SWEBENCH_VENV             virtualenv with swebench 5.0.2 [target/swebench-venv]
#   KILN_PARITY_WORK               where both runs' logs go [a new temporary directory,
#                                  removed after a passing run unless KILN_PARITY_KEEP=1]
#   KILN_PARITY_WORKERS            --max-workers of both tools [2]
#   KILN_PARITY_DOCKERD_DIR        the engine's directory [/tmp/kiln-parity-dockerd]; the
#                                  engine keeps running with its images for the next run
#                                  (KILN_DOCKERD_DIR=<that dir> scripts/start-dockerd.sh stop)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
kiln="$(realpath "${KILN_BIN:-target/debug/kiln}")"
images="${KILN_TEST_SWEBENCH_IMAGES_DIR:-/var/cache/kiln-test/swebench-images}"
venv="${KILN_SWEBENCH_VENV:-target/swebench-venv}"
own_work=0
if [ -z "${KILN_PARITY_WORK:-}" ]; then own_work=1; fi
work="${KILN_PARITY_WORK:-$(mktemp -d /tmp/kiln-parity.XXXXXX)}"
workers="${KILN_PARITY_WORKERS:-2}"
samples="$root/datasets/swebench-fixture/samples.jsonl"
helper="$root/tests/parity/harness_docker.py"
mkdir -p "$work"
trap 'rc=$?; if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then echo "logs: $work" >&2; fi' EXIT

if [ ! -f "$images/images.json" ]; then
  echo "SKIPPED: no fixture images in $images (kiln images build-swebench)" >&2; exit 77
fi
# An engine of its own (its images stay loaded between runs): containers get cpu.shares of
# 1024 x cores through tests/parity/runc-cpu-shares (why: see that file).
if ! docker_host="$(KILN_DOCKERD_DIR="${KILN_PARITY_DOCKERD_DIR:-/tmp/kiln-parity-dockerd}" \
  KILN_DOCKERD_ARGS="--add-runtime parity-runc=$root/tests/parity/runc-cpu-shares --default-runtime parity-runc" \
  scripts/start-dockerd.sh | tail -n 1)"; then
  echo "SKIPPED: dockerd cannot start here" >&2; exit 77
fi
export DOCKER_HOST="$docker_host"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import swebench.harness.run_evaluation' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'swebench==5.0.2'
fi
venv="$(realpath "$venv")"

now() { date +%s.%N; }
t0=$(now)
# Loaded once per engine: an image whose Kiln inputs hash is already there is kept.
stale=0
while read -r iid; do
  name="swebench/sweb.eval.x86_64.${iid//__/_1776_}:latest"
  want="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][sys.argv[2]]["config"]["labels"]["org.kiln.swebench.inputs"])' \
    "$images/images.json" "swebench-fixture/sample/$iid:1" 2>/dev/null || echo missing)"
  want="$want $(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import harness_docker as h; print(h.PARITY_IMAGE)' "$root/tests/parity")"
  have="$(docker image inspect -f '{{index .Config.Labels "org.kiln.swebench.inputs"}} {{index .Config.Labels "org.kiln.parity"}}' "$name" 2>/dev/null || true)"
  [ "$want" = "$have" ] || stale=1
done < <(python3 -c 'import json,sys; [print(json.loads(l)["instance_id"]) for l in open(sys.argv[1])]' "$samples")
if [ "$stale" = 1 ]; then
  python3 "$helper" load "$images" "$samples"
fi
echo "images in the engine: $(printf '%.1f' "$(echo "$(now) - $t0" | bc)") s"

python3 "$helper" dataset "$samples" "$work/dataset.json"
python3 - "$samples" "$work/predictions.jsonl" "$@" <<'PY'
import json, sys
samples, out, only = sys.argv[1], sys.argv[2], set(sys.argv[3:])
# One empty, one that does not apply, one that applies and fixes nothing (unresolved).
odd = {"pytest-dev__pytest-5227": "",
       "pallets__flask-4992": "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n",
       "pytest-dev__pytest-9359": "diff --git a/kiln_wrong.py b/kiln_wrong.py\nnew file mode 100644\n--- /dev/null\n+++ b/kiln_wrong.py\n@@ -0,0 +1 @@\n+x = 1\n"}
with open(out, "w") as f:
    for line in open(samples):
        r = json.loads(line)
        if only and r["instance_id"] not in only:
            continue
        f.write(json.dumps({"instance_id": r["instance_id"], "model_name_or_path": "gold",
                            "model_patch": odd.get(r["instance_id"], r["patch"])}) + "\n")
PY
ids=()
if [ $# -gt 0 ]; then ids=(--instance-ids "$@"); fi

# kiln eval, standalone, on its own data directory.
data="$work/kiln-data"
mkdir -p "$data"
KILN_IMAGES_DIR="$images" "$kiln" datasets import "$samples" --name swebench-fixture \
  --repos "$root/datasets/swebench-fixture/repos" --data-dir "$data" >/dev/null
t0=$(now)
KILN_IMAGES_DIR="$images" "$kiln" eval --dataset swebench-fixture \
  --predictions "$work/predictions.jsonl" --run-id parity --max-workers "$workers" \
  --output-dir "$work/kiln" --data-dir "$data" "${ids[@]}" >"$work/kiln-eval.out"
kiln_wall=$(echo "$(now) - $t0" | bc)

# The harness, on the same predictions and cores (its logs go under the current directory).
mkdir -p "$work/harness"
hids=()
if [ $# -gt 0 ]; then hids=(--instance_ids "$@"); fi
t0=$(now)
(cd "$work/harness" && "$venv/bin/python" -m swebench.harness.run_evaluation \
  --dataset_name "$work/dataset.json" --predictions_path "$work/predictions.jsonl" \
  --run_id parity --max_workers "$workers" --timeout 900 "${hids[@]}" \
  >"$work/harness.out" 2>&1) || { tail -n 30 "$work/harness.out" >&2; exit 1; }
harness_wall=$(echo "$(now) - $t0" | bc)

"$venv/bin/python" "$helper" compare "$work/kiln/logs/run_evaluation/parity/gold" \
  "$work/kiln/gold.parity.json" "$work/harness/logs/run_evaluation/parity/gold" \
  "$work/harness/gold.parity.json"
python3 "$helper" timings "$work/kiln/logs/run_evaluation/parity/gold" \
  "$work/harness/logs/run_evaluation/parity/gold" "$kiln_wall" "$harness_wall"
if [ "$own_work" = 1 ] && [ "${KILN_PARITY_KEEP:-}" != 1 ] \
  && ! cut -d' ' -f5 /proc/self/mountinfo | grep -q "^$work/"; then
  # Both runs' data (≈ 20 MB): kept where asked for, after a failure (the trap prints its
  # path), or while anything is still mounted under it (never removed through a mount).
  rm -rf "$work"
  echo "logs removed (KILN_PARITY_KEEP=1 keeps them)"
else
  echo "logs: $work"
fi
