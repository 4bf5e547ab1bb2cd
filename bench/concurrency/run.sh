#!/usr/bin/env bash
# Concurrency: 100 concurrent creates until all ready, (a) through the runtime alone and
# (b) over HTTP against a real `kiln serve` (POST /sessions + long-poll GET, by
# kiln-bench-load with no commands), alternating, ROUNDS times; then (c) execs across
# sessions (bench/load's 50 sessions × 200 commands) once per server. Prints every round
# and the medians, with the ratio HTTP / runtime alone from the same run. Needs root.
#
#   bench/concurrency/run.sh [ROUNDS]            (default 5)
#   KILN_BENCH_BASELINE_BIN=/path/to/old/kiln bench/concurrency/run.sh
#       also runs (b) and (c) against that binary, alternating with this tree's
#   KILN_BENCH_BURST=100  KILN_BENCH_LOAD=0 (skip (c))  KILN_BIN=…  KILN_BENCH_IMAGE_STORE=…
#   KILN_BENCH_WARM=0: skip the server with a warm pool of BURST sandboxes of the
#       image (runtime.warm_pools), whose rounds start once the pool is full again
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
BURST=${KILN_BENCH_BURST:-100}
export KILN_BENCH_BURST=$BURST
export KILN_BENCH_IMAGE_STORE="${KILN_BENCH_IMAGE_STORE:-/var/cache/kiln-test/images}"
source bench/lib/kiln-server.sh

export KILN_AGENT_BIN="${KILN_AGENT_BIN:-$(scripts/build-agent.sh | tail -n1)}"
kiln_bench_build
cargo build --quiet --release -p kiln-bench-load
cargo bench --quiet --no-run -p kiln-runtime --bench concurrency 2>/dev/null
LOAD_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/kiln-bench-load"
RESULTS="$KILN_BENCH_WORK/results"

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A URL KEY
SERVERS=(new)
# Admission would refuse a burst past the free disk × runtime.disk_overcommit (10 GiB per
# session; 100 need ~51 GB free at the default 20). The sandboxes write nothing here, so
# the benchmark lifts the ratio: it measures creating, not admission.
BENCH_ENV=(KILN_RUNTIME__DISK_OVERCOMMIT=1000)
kiln_server_start new "${BENCH_ENV[@]}"
URL[new]=$SERVER_URL KEY[new]=$SERVER_KEY_FILE
IMAGE="${KILN_BENCH_IMAGE:-kiln-demo/sample/kiln-demo__inifile-1:1}"
if [ "${KILN_BENCH_WARM:-1}" != 0 ]; then
    SERVERS+=(warm)
    printf '[runtime.warm_pools]\n"%s" = %d\n' "$IMAGE" "$BURST" >"$KILN_BENCH_WORK/warm.toml"
    kiln_server_start warm "${BENCH_ENV[@]}" KILN_CONFIG="$KILN_BENCH_WORK/warm.toml"
    URL[warm]=$SERVER_URL KEY[warm]=$SERVER_KEY_FILE
    # The image's first session fills the pool.
    load_summary_quiet=$("$LOAD_BIN" --base-url "$SERVER_URL" --api-key-file "$SERVER_KEY_FILE" \
        --sessions 1 --commands 0 2>&1) || { echo "$load_summary_quiet" >&2; exit 1; }
fi
# Waits until the warm server's pool holds BURST ready sandboxes (their state files are
# written last), so that no refill runs during another measurement.
warm_full() {
    local dir="$KILN_BENCH_WORK/warm/runtime/sandboxes" i n
    for i in $(seq 1 600); do
        n=$(find "$dir" -mindepth 2 -maxdepth 2 -path '*/warm-*/state.json' 2>/dev/null | wc -l)
        [ "$n" -ge "$BURST" ] && return 0
        sleep 0.1
    done
    echo "the warm pool holds $n of $BURST after 60 s" >&2
    return 1
}
if [ -n "${KILN_BENCH_BASELINE_BIN:-}" ]; then
    SERVERS+=(old)
    NEW_BIN=$KILN_BIN KILN_BIN=$KILN_BENCH_BASELINE_BIN
    kiln_server_start old "${BENCH_ENV[@]}"
    KILN_BIN=$NEW_BIN
    URL[old]=$SERVER_URL KEY[old]=$SERVER_KEY_FILE
fi

# Runs kiln-bench-load and prints its summary line; when there is none (creates refused,
# e.g. `node_full` on a host without disk for BURST sessions of runtime.disk_mib), prints
# what it said and fails, instead of the round ending silently.
load_summary() {
    local out
    out=$("$LOAD_BIN" "$@" 2>&1) || true
    if ! grep -q '^summary' <<<"$out"; then
        printf 'kiln-bench-load %s gave no summary:\n%s\n' "$*" "$out" >&2
        return 1
    fi
    # A refused create ends at once: a burst with errors would look faster than it is.
    if ! grep -q '^summary.* errors=0 ' <<<"$out"; then
        printf 'kiln-bench-load %s had errors (the round does not count):\n%s\n' "$*" "$out" >&2
        return 1
    fi
    grep '^summary' <<<"$out"
}

# Reads `key=value` fields of a summary line.
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

for round in $(seq 1 "$ROUNDS"); do
    line=$(cargo bench --quiet -p kiln-runtime --bench concurrency -- 1 2>/dev/null | grep '^runtime-alone')
    echo "round $round runtime-alone $line" | tee -a "$RESULTS"
    for s in "${SERVERS[@]}"; do
        if [ "$s" = warm ]; then warm_full; fi
        line=$(load_summary --base-url "${URL[$s]}" --api-key-file "${KEY[$s]}" \
            --sessions "$BURST" --commands 0 --deadline-secs 120)
        if [ "$s" = warm ]; then warm_full; fi
        echo "round $round http-$s $line" | tee -a "$RESULTS"
    done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "medians over $ROUNDS rounds ($BURST concurrent creates, all ready):"
rt_wall=$(grep ' runtime-alone ' "$RESULTS" | field all_ready_ms | median)
printf '  %-22s all ready %8.1f ms   p50 %7.1f ms   p99 %7.1f ms\n' "runtime alone" "$rt_wall" \
    "$(grep ' runtime-alone ' "$RESULTS" | field p50_ms | median)" \
    "$(grep ' runtime-alone ' "$RESULTS" | field p99_ms | median)"
for s in "${SERVERS[@]}"; do
    wall=$(grep " http-$s " "$RESULTS" | field create_all_ready_ms | median)
    printf '  %-22s all ready %8.1f ms   p50 %7.1f ms   p99 %7.1f ms   HTTP/runtime %.2f\n' \
        "HTTP ($s)" "$wall" \
        "$(grep " http-$s " "$RESULTS" | field create_p50_ms | median)" \
        "$(grep " http-$s " "$RESULTS" | field create_p99_ms | median)" \
        "$(echo "$wall $rt_wall" | awk '{print $1 / $2}')"
done

if [ "${KILN_BENCH_LOAD:-1}" != 0 ]; then
    echo
    echo "execs across sessions (bench/load: 50 sessions × 200 × \`true\`):"
    for s in "${SERVERS[@]}"; do
        # Its creates would refill the pool during the commands: not this measurement.
        [ "$s" = warm ] && continue
        line=$(load_summary --base-url "${URL[$s]}" --api-key-file "${KEY[$s]}" --deadline-secs 300)
        echo "  HTTP ($s): $(echo "$line" | field commands_per_s) commands/s"
    done
fi
echo "machine at the end: load average $(cut -d' ' -f1-3 /proc/loadavg)"
