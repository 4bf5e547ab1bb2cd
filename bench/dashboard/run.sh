#!/usr/bin/env bash
# The dashboard's pages with 1,000 sessions in the store, against GET /api/v1/health in the
# same run (bench/dashboard/main.rs). No root needed (no sandboxes).
#   bench/dashboard/run.sh                                   release build, 200 rounds
#   KILN_BENCH_ROUNDS=50 KILN_BENCH_PROFILE=dev bench/dashboard/run.sh   (no release build)
#   KILN_TEST_DATABASE_URL=postgres://… bench/dashboard/run.sh           (on PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p kiln-api --bench dashboard --profile "${KILN_BENCH_PROFILE:-bench}"
