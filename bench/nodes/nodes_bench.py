"""Three Kiln nodes on one PostgreSQL, measured with the official `codeset` SDK 0.9.1.

    python nodes_bench.py --node URL --node URL --node URL --key-file KEY --data-dir D0 ...

1. Placement spread: N sessions created concurrently (4 at a time), each through a node
   picked at random; where each landed (its sandbox is under that node's data dir).
2. Forwarding overhead: on every session, `execute_command("true")` and a session GET,
   each sent to its owner and to a non-owner, alternating, the same number of times, in
   the same run; p50/p99 of each and the p50 difference (target <= 1 ms). The exec is
   relayed over the internal hop; the GET (a long-poll read) is answered by the non-owner
   itself since long-polls wake across nodes, so its difference is no hop at all.
3. Long-poll wake-up across nodes: a command (`sleep 0.2`) started on the owner is waited
   for (`GET .../interactions/{id}`, a long-poll) at the same time through the owner and
   through a non-owner, which answers it itself, woken through PostgreSQL LISTEN/NOTIFY;
   p50/p90 of how much later the non-owner's answer arrives than the owner's.
bench/nodes/run.sh starts the nodes and drives this.
"""
import argparse
import concurrent.futures
import math
import os
import random
import threading
import time

import codeset


def quantile(samples, p):
    """Nearest-rank quantile, the definition the other benchmarks use."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", action="append", required=True, help="API root of a node")
    ap.add_argument("--data-dir", action="append", required=True, help="its data dir, same order")
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--execs", type=int, default=10, help="per session and side")
    ap.add_argument("--wakes", type=int, default=40, help="long-polls woken across nodes")
    ap.add_argument("--budget-secs", type=float, default=300)
    ap.add_argument("--dataset", default="kiln-demo")
    ap.add_argument("--sample", default="kiln-demo__inifile-1")
    args = ap.parse_args()
    key = open(args.key_file).read().strip()
    clients = [codeset.Codeset(api_key=key, base_url=u, timeout=120.0, max_retries=0) for u in args.node]
    for c in clients:
        c.datasets.list()  # connection and auth warm-up
    rng = random.Random(int(os.environ.get("KILN_BENCH_SEED", "12")))

    def create(_):
        t = time.perf_counter()
        sid = rng.choice(clients).sessions.create(dataset=args.dataset, sample_id=args.sample).session_id
        return sid, time.perf_counter() - t

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(create, range(args.sessions)))
    took = time.perf_counter() - started
    owners = {}
    for sid, _ in created:
        held = [i for i, d in enumerate(args.data_dir) if os.path.exists(os.path.join(d, "runtime", "sandboxes", sid))]
        assert len(held) == 1, (sid, held)
        owners[sid] = held[0]
    spread = [sum(1 for o in owners.values() if o == i) for i in range(len(clients))]
    creates = [t for _, t in created]
    print(f"placement: {args.sessions} sessions over {len(clients)} nodes in {took:.1f} s: {spread} "
          f"(max/mean {max(spread) / (args.sessions / len(clients)):.2f}); "
          f"create p50 {quantile(creates, 0.5) * 1e3:.1f} ms p99 {quantile(creates, 0.99) * 1e3:.1f} ms")

    # Each call through the owner and through a non-owner, alternating which goes first:
    # exec "true" (what an agent does most) and a session GET (the hop with least else).
    calls = {
        "exec 'true'": lambda c, sid: c.sessions.execute_command(sid, command="true").exit_code == 0,
        "GET session": lambda c, sid: c.sessions.retrieve(sid).status == "ready",
    }
    samples = {(name, side): [] for name in calls for side in ("owner", "non-owner")}
    deadline = time.monotonic() + args.budget_secs
    for sid, owner in owners.items():
        others = [i for i in range(len(clients)) if i != owner]
        clients[owner].sessions.execute_command(sid, command="true")  # warm-up
        for k in range(args.execs):
            if time.monotonic() > deadline:
                break
            sides = [("owner", clients[owner]), ("non-owner", clients[others[k % len(others)]])]
            if k % 2:
                sides.reverse()
            for name, call in calls.items():
                for side, client in sides:
                    t = time.perf_counter()
                    ok = call(client, sid)
                    samples[(name, side)].append(time.perf_counter() - t)
                    assert ok, (name, side, sid)
    wakes = []
    for k, (sid, owner) in enumerate(list(owners.items()) * (1 + args.wakes // max(1, len(owners)))):
        if k >= args.wakes:
            break
        other = clients[[i for i in range(len(clients)) if i != owner][k % (len(clients) - 1)]]
        wakes.append(wake_lag(clients[owner], other, sid))
    for sid in owners:
        clients[owners[sid]].sessions.close(sid)
    for name in calls:
        p50 = {}
        for side in ("owner", "non-owner"):
            got = samples[(name, side)]
            p50[side] = quantile(got, 0.5) * 1e3
            print(f"{name} through the {side + ':':11} n={len(got)} p50 {p50[side]:.2f} ms "
                  f"p99 {quantile(got, 0.99) * 1e3:.2f} ms")
        print(f"{name}: forwarding overhead (p50 difference) {p50['non-owner'] - p50['owner']:.2f} ms "
              f"(target <= 1 ms)")
    if wakes:
        print(f"long-poll wake-up on a non-owner (LISTEN/NOTIFY) after the owner's: n={len(wakes)} "
              f"p50 {quantile(wakes, 0.5) * 1e3:.2f} ms p90 {quantile(wakes, 0.9) * 1e3:.2f} ms "
              f"max {max(wakes) * 1e3:.2f} ms")


def wake_lag(owner, other, sid):
    """Starts `sleep 0.2` on the owner and long-polls its interaction through both nodes at
    once: how much later the non-owner's answer came."""
    started = owner.post(f"/sessions/{sid}/exec", cast_to=object, body={"command": "sleep 0.2"})
    iid = started["interaction_id"]
    done = {}

    def poll(side, client):
        got = client.sessions.get_interaction(sid, iid)
        done[side] = (time.perf_counter(), got.exit_code)

    threads = [threading.Thread(target=poll, args=a) for a in (("owner", owner), ("non-owner", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done["owner"][1] == 0 and done["non-owner"][1] == 0, done
    return done["non-owner"][0] - done["owner"][0]


if __name__ == "__main__":
    main()
