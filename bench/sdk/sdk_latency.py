"""SDK-observed latency of the sessions API, measured with the official `codeset` SDK.

    python sdk_latency.py measure --base-url URL --key-file KEY --label NAME --out FILE.json
    python sdk_latency.py table LONGPOLL.json BASELINE.json

`measure` times `client.sessions.create(...)` (which waits until the session is ready)
and `client.sessions.execute_command(sid, command="true")` (which waits for the result),
each loop bounded in count and in time; `table` prints p50/p99 of two runs and their
ratio. bench/sdk/run.sh drives both.
"""

import argparse
import json
import math
import sys
import time

import codeset


def quantile(samples, p):
    """Nearest-rank quantile, the definition the Rust benchmarks use."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(p * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def timed_loop(count, budget_secs, body):
    """Runs body() up to `count` times, stopping early once `budget_secs` are spent."""
    samples = []
    started = time.monotonic()
    for _ in range(count):
        if time.monotonic() - started > budget_secs:
            break
        t = time.perf_counter()
        body()
        samples.append(time.perf_counter() - t)
    return samples


def measure(args):
    key = open(args.key_file).read().strip()
    client = codeset.Codeset(api_key=key, base_url=args.base_url, timeout=120.0, max_retries=0)
    client.datasets.list()  # connection and auth warm-up

    def create_ready():
        session = client.sessions.create(dataset=args.dataset, sample_id=args.sample)
        if session.status != "ready":
            raise RuntimeError(f"session {session.session_id} is {session.status}, not ready")
        return session

    # Each session is closed outside the timing, so the per-user live-session limit
    # never interferes however many iterations run.
    creates = []
    started = time.monotonic()
    for _ in range(args.creates):
        if time.monotonic() - started > args.budget_secs:
            break
        t = time.perf_counter()
        session = create_ready()
        creates.append(time.perf_counter() - t)
        client.sessions.close(session.session_id)

    session = create_ready()

    def run_true():
        interaction = client.sessions.execute_command(session.session_id, command="true")
        if interaction.exit_code != 0:
            raise RuntimeError(f"`true` exited with {interaction.exit_code}")

    def run_sleep():
        interaction = client.sessions.execute_command(session.session_id, command="sleep 0.05")
        if interaction.exit_code != 0:
            raise RuntimeError(f"`sleep 0.05` exited with {interaction.exit_code}")

    run_true()  # warm-up: the first command of a session
    execs = timed_loop(args.execs, args.budget_secs, run_true)
    sleeps = timed_loop(args.sleep_execs, args.budget_secs, run_sleep)
    client.sessions.close(session.session_id)

    result = {"label": args.label, "create": creates, "exec": execs, "exec_sleep": sleeps}
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(
        f"{args.label}: {len(creates)} creates, {len(execs)} + {len(sleeps)} execs measured",
        file=sys.stderr,
    )


def fmt_ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def table(args):
    runs = [json.load(open(path)) for path in args.results]
    # "polled": calls that slept at least once in the SDK's 3 s poll loop. Without
    # long-poll a call only escapes it when the work is done before the SDK's first GET.
    print(f"{'operation':<34}{'run':<22}{'n':>5}{'p50':>12}{'p99':>12}{'max':>12}{'polled':>8}")
    for op, name in [("create", "sessions.create (until ready)"),
                     ("exec", 'execute_command("true")'),
                     ("exec_sleep", 'execute_command("sleep 0.05")')]:
        for run in runs:
            s = run.get(op, [])
            polled = sum(1 for x in s if x >= 1.0)
            print(f"{name:<34}{run['label']:<22}{len(s):>5}{fmt_ms(quantile(s, 0.5)):>12}"
                  f"{fmt_ms(quantile(s, 0.99)):>12}{fmt_ms(max(s) if s else None):>12}{polled:>8}")
        if len(runs) == 2 and runs[0].get(op) and runs[1].get(op):
            a, b = runs[0][op], runs[1][op]
            print(f"{'':<34}{'ratio ' + runs[1]['label'] + '/' + runs[0]['label']:<27}"
                  f"{quantile(b, 0.5) / quantile(a, 0.5):>12.1f}"
                  f"{quantile(b, 0.99) / quantile(a, 0.99):>12.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--base-url", required=True)
    m.add_argument("--key-file", required=True)
    m.add_argument("--label", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--dataset", default="kiln-demo")
    m.add_argument("--sample", default="kiln-demo__inifile-1")
    m.add_argument("--creates", type=int, default=30)
    m.add_argument("--execs", type=int, default=200)
    m.add_argument("--sleep-execs", type=int, default=20,
                   help='iterations of execute_command("sleep 0.05")')
    m.add_argument("--budget-secs", type=float, default=120.0,
                   help="each loop stops early after this many seconds")
    m.set_defaults(func=measure)
    t = sub.add_parser("table")
    t.add_argument("results", nargs="+")
    t.set_defaults(func=table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
