#!/usr/bin/env bash
# Kiln's whole test suite, as CI runs it: the Rust workspace (against a real SQLite
# file, a real PostgreSQL server and a real registry), then the official Python SDK
# and the SWE-bench parity tests against the real binaries. Run it as root: sandboxes,
# overlayfs and cgroups need it. It starts what it needs (PostgreSQL, docker-registry)
# and installs them from Debian's packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it began (seconds since the start), so a CI log shows where time goes.
step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }
# Free disk at the start and what the build took at the end: a full disk shows up as a
# linker killed by SIGBUS, far from its cause.
disk() { df -h --output=avail,target . /var/cache 2>/dev/null | sed 's/^/    /' || true; }

step "Disk space here"
disk

step "Debian packages the tests need"
need=()
for pair in bwrap:bubblewrap busybox:busybox-static debootstrap:debootstrap git:git curl:curl \
  qemu-system-x86_64:qemu-system-x86 cpio:cpio mkfs.xfs:xfsprogs dockerd:docker.io \
  skopeo:skopeo openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "Headless Chromium for the dashboard's browser test (tests/dashboard_browser.rs)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

step "PostgreSQL"
KILN_TEST_POSTGRES_URL="$(scripts/start-postgres.sh | tail -n 1)"
export KILN_TEST_POSTGRES_URL

step "OCI registry"
registry_url="$(scripts/start-registry.sh | tail -n 1)"
export KILN_TEST_REGISTRY="${registry_url#http://}"

step "kiln-agent (static)"
KILN_AGENT_BIN="$(scripts/build-agent.sh | tail -n 1)"
export KILN_AGENT_BIN

step "Layering: services and the API name no sandbox backend; no import circles"
scripts/check-runtime-neutral.sh
python3 scripts/module-cycles.py

step "Rust workspace tests"
cargo test --workspace --all-targets
cargo test --workspace --doc

# --workspace keeps the features of the build above: `-p kiln-api` alone would rebuild
# dependencies with a narrower feature set. The filters are substrings of test names,
# so `billing::` and `sessions::` would also take the two modules skipped here.
step "The API tests that start one server each, again on PostgreSQL"
KILN_TEST_DATABASE_URL="$KILN_TEST_POSTGRES_URL" \
  cargo test --workspace --test integration -- \
    api:: sessions:: billing:: billing_sessions:: session_integrity:: \
    v1_instances:: v1_files:: v1_files_escape:: \
    v1_webhooks:: v1_ports:: v1_snapshots:: v1_exec:: v1_network:: \
    v1_base_images:: v1_auth:: v1_orgs:: v1_org_security:: \
    --skip agent_job_billing:: --skip docker_sessions::

step "kiln-runtime on a pure cgroup v2 kernel (Debian's kernel under QEMU; ~3 min)"
scripts/cgroup2-vm.sh

step "Demo environment images (debootstrap; cached after the first build)"
# Every binary (kiln, kiln-grade, kiln-kube-test for the Kubernetes SDK test), with the
# workspace's feature set: `cargo test` builds a binary only for its own package's tests.
cargo build --quiet --workspace --bins
export KILN_TEST_IMAGES_DIR="${KILN_TEST_IMAGES_DIR:-/var/cache/kiln-test/images}"
KILN_IMAGES_DIR="$KILN_TEST_IMAGES_DIR" target/debug/kiln images build-demo --data-dir "$(mktemp -d)"

step "Security tests from inside the demo images (Python, Rust, Node)"
KILN_TEST_IMAGES_DIR="$KILN_TEST_IMAGES_DIR" KILN_TEST_DEMO_IMAGES=required \
  cargo test --workspace --test security demo_images

step "The demo dataset validates: every sample fails without its fix and passes with it"
KILN_IMAGES_DIR="$KILN_TEST_IMAGES_DIR" target/debug/kiln datasets validate kiln-demo --data-dir "$(mktemp -d)"

step "The demo dataset validates on the Docker backend too (its images loaded into a private dockerd)"
if docker_host="$(scripts/start-dockerd.sh | tail -n 1)"; then
  KILN_IMAGES_DIR="$KILN_TEST_IMAGES_DIR" KILN_RUNTIME__BACKEND=docker \
    KILN_RUNTIME__DOCKER__HOST="$docker_host" KILN_RUNTIME__DOCKER__LABEL_PREFIX=kiln-ci-validate \
    target/debug/kiln datasets validate kiln-demo --data-dir "$(mktemp -d)"
elif [ "${KILN_REQUIRE_DOCKER:-}" = 1 ]; then
  echo "KILN_REQUIRE_DOCKER=1 but dockerd cannot start here" >&2; exit 1
else
  echo "SKIPPED: dockerd cannot start here"
fi

step "kiln eval on the demo dataset: gold, empty, wrong and non-applying predictions; resume after a kill; a parallel run over /v1 (~30 s)"
# --workspace, as above: with `-p` each of the two rebuilt its package's dependencies
# (≈ 2.5 min of a CI run, and their disk).
KILN_TEST_IMAGES_DIR="$KILN_TEST_IMAGES_DIR" KILN_TEST_DEMO_IMAGES=required \
  cargo test --workspace --test eval
KILN_TEST_IMAGES_DIR="$KILN_TEST_IMAGES_DIR" KILN_TEST_DEMO_IMAGES=required \
  cargo test --workspace --test integration v1_parallel::
step "SWE-bench fixture: images from the harness's specs, import, validate (cached after the first build)"
# Cold: two debootstraps and ~5 pip environments (network: deb.debian.org, PyPI); cached:
# every image is kept by the hash of its inputs, so only import and validate run.
swe_images="${KILN_TEST_SWEBENCH_IMAGES_DIR:-/var/cache/kiln-test/swebench-images}"
if ! mkdir -p "$swe_images" 2>/dev/null || [ ! -w "$swe_images" ]; then
  echo "SKIPPED: $swe_images is not writable (set KILN_TEST_SWEBENCH_IMAGES_DIR)"
elif ! curl -fsS -m 10 -o /dev/null https://pypi.org/simple/pip/ \
  || ! curl -fsS -m 10 -o /dev/null http://deb.debian.org/debian/dists/bookworm/Release; then
  echo "SKIPPED: PyPI or deb.debian.org is unreachable (the fixture's environments come from them)"
else
  swe_data="$(mktemp -d)"
  KILN_IMAGES_DIR="$swe_images" target/debug/kiln images build-swebench \
    datasets/swebench-fixture/samples.jsonl --data-dir "$swe_data"
  KILN_IMAGES_DIR="$swe_images" target/debug/kiln datasets import \
    datasets/swebench-fixture/samples.jsonl --name swebench-fixture \
    --repos "$PWD/datasets/swebench-fixture/repos" --data-dir "$swe_data"
  KILN_IMAGES_DIR="$swe_images" target/debug/kiln datasets validate swebench-fixture \
    --data-dir "$swe_data"
  # kiln eval as a user runs it: gold predictions resolve; an empty and a non-applying one
  # do not (listed as empty and as an error in the harness's run report).
  python3 - "$swe_data/predictions.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for line in open("datasets/swebench-fixture/samples.jsonl"):
        r = json.loads(line)
        patch = {"pytest-dev__pytest-5227": "",
                 "pallets__flask-4992": "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"}.get(r["instance_id"], r["patch"])
        out.write(json.dumps({"instance_id": r["instance_id"], "model_name_or_path": "gold",
                              "model_patch": patch}) + "\n")
PY
  KILN_IMAGES_DIR="$swe_images" target/debug/kiln eval --dataset swebench-fixture \
    --predictions "$swe_data/predictions.jsonl" --run-id ci --max-workers 2 \
    --output-dir "$swe_data/eval" --data-dir "$swe_data"
  python3 - "$swe_data/eval/gold.ci.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ids = [json.loads(l)["instance_id"] for l in open("datasets/swebench-fixture/samples.jsonl")]
want = sorted(set(ids) - {"pytest-dev__pytest-5227", "pallets__flask-4992"})
assert sorted(report["resolved_ids"]) == want, report
assert report["empty_patch_ids"] == ["pytest-dev__pytest-5227"], report
assert report["error_ids"] == ["pallets__flask-4992"], report
print(f"kiln eval: {len(want)} gold resolved, the empty and the non-applying prediction did not")
PY
fi

step "SWE-bench harness parity: swebench 5.0.2's run_evaluation in Docker on the fixture's images, reports identical to kiln eval's"
# A subset in CI (CI_PARITY_IDS; all ten: tests/parity/harness_docker.sh with no ids, or
# bench/swebench/run.sh): quick gold ones of three repositories, the empty, the
# non-applying and the wrong (unresolved) prediction.
swe_images="${KILN_TEST_SWEBENCH_IMAGES_DIR:-/var/cache/kiln-test/swebench-images}"
parity_ids="${CI_PARITY_IDS:-pytest-dev__pytest-5227 pallets__flask-4992 pallets__flask-5063 pytest-dev__pytest-8906 pylint-dev__pylint-7993 pytest-dev__pytest-9359}"
if [ ! -f "$swe_images/images.json" ]; then
  echo "SKIPPED: the fixture's images are not built ($swe_images)"
else
  # shellcheck disable=SC2086
  KILN_TEST_SWEBENCH_IMAGES_DIR="$swe_images" tests/parity/harness_docker.sh $parity_ids \
    || parity_rc=$?
  if [ "${parity_rc:-0}" = 77 ] && [ "${KILN_REQUIRE_DOCKER:-}" = 1 ]; then
    echo "KILN_REQUIRE_DOCKER=1 but dockerd cannot start here" >&2; exit 1
  elif [ "${parity_rc:-0}" != 0 ] && [ "${parity_rc:-0}" != 77 ]; then
    exit 1
  fi
fi

step "Python: the official codeset SDK and the SWE-bench parity tests"
venv="${KILN_TEST_VENV:-target/py-venv}"
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r tests/parity/requirements.txt
fi
# API fuzzing (tests/fuzz): schemathesis needs a newer pytest than the SDK pins, so its
# CLI gets a virtualenv of its own.
fuzz_venv="${KILN_FUZZ_VENV:-target/fuzz-venv}"
if [ ! -x "$fuzz_venv/bin/schemathesis" ]; then
  python3 -m venv "$fuzz_venv"
  "$fuzz_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt
fi
KILN_SCHEMATHESIS="$(realpath "$fuzz_venv")/bin/schemathesis"
export KILN_SCHEMATHESIS
export KILN_BIN="$PWD/target/debug/kiln" KILN_GRADE_BIN="$PWD/target/debug/kiln-grade"
# tests/sdk/test_kubernetes.py: `kiln serve` on the Kubernetes backend against the test API
# server (built with the workspace's targets above).
export KILN_KUBE_TEST_BIN="$PWD/target/debug/kiln-kube-test"
"$venv/bin/pytest" -q -p no:cacheprovider tests/sdk tests/parity tests/fuzz

# The MCP server through the official MCP Python SDK (its own virtualenv: its dependencies
# are newer than the codeset SDK's pins), over HTTP and over `kiln mcp` (stdio).
step "MCP: the official MCP Python SDK against /mcp and kiln mcp"
mcp_venv="${KILN_MCP_VENV:-target/mcp-venv}"
if [ ! -x "$mcp_venv/bin/pytest" ]; then
  python3 -m venv "$mcp_venv"
  "$mcp_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/mcp/requirements.txt
fi
"$mcp_venv/bin/pytest" -q -p no:cacheprovider tests/mcp

step "All of Kiln's tests passed"
echo "    target/: $(du -sh target 2>/dev/null | cut -f1)"
disk
