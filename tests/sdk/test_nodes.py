"""Issue 12's proof with the official `codeset` SDK (0.9.1, unmodified): three `kiln serve`
on one PostgreSQL, each on its own loopback address (127.0.0.2, .3, .4) and data directory.
Every SDK call goes to a node picked at random; the whole agent loop (create, exec,
str_replace, upload, verify, close) gives the same results as on one node; sessions spread
over the three; a node drained under load takes no new session and fails none of its own;
a node killed with SIGKILL in the middle of commands loses its sessions (`node_lost`, the
SDK's -1000 error, billed once) while the others serve on, and started again leaves
nothing of them running or mounted.

Needs KILN_TEST_POSTGRES_URL (scripts/start-postgres.sh) and the demo images
(KILN_TEST_IMAGES_DIR); skipped without them outside CI."""
import base64
import concurrent.futures
import importlib.util
import os
import pathlib
import random
import subprocess
import threading
import time
import uuid

import codeset
import httpx
import pytest

# This folder's conftest by path: several test folders each have a module named conftest.
_spec = importlib.util.spec_from_file_location("kiln_sdk_conftest", pathlib.Path(__file__).parent / "conftest.py")
_sdk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sdk)

DEMO = "kiln-demo"
SAMPLE = "kiln-demo__inifile-1"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SECRET = "a-cluster-secret-for-the-sdk-test"
SESSIONS = 9


def _psql(admin_url, sql):
    subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   capture_output=True)


def _cluster(tmp_path_factory, down_after_ms, prefix):
    """Three nodes on a fresh database; yields {"servers", "key", "settings", "images"}."""
    admin_url = os.environ.get("KILN_TEST_POSTGRES_URL")
    images = os.environ.get("KILN_TEST_IMAGES_DIR")
    if not admin_url or not images:
        if os.environ.get("CI"):
            pytest.fail("the three-node test needs KILN_TEST_POSTGRES_URL and KILN_TEST_IMAGES_DIR")
        pytest.skip("set KILN_TEST_POSTGRES_URL and KILN_TEST_IMAGES_DIR for the three-node test")
    name = f"kiln_sdk_nodes_{uuid.uuid4().hex[:12]}"
    _psql(admin_url, f"CREATE DATABASE {name}")
    db_url = admin_url.rsplit("/", 1)[0] + "/" + name
    settings = {
        "KILN_DATABASE_URL": db_url,
        "KILN_CLUSTER__HEARTBEAT_INTERVAL_MS": "100",
        "KILN_CLUSTER__DOWN_AFTER_MS": str(down_after_ms),
        "KILN_CLUSTER__SECRET": SECRET,
    }
    if os.environ.get("KILN_AGENT_BIN"):
        settings["KILN_AGENT_BIN"] = os.environ["KILN_AGENT_BIN"]
    # Started one after the other: the first creates the schema, the admin and the demo
    # dataset; the others find them.
    servers, running = [], []
    try:
        for i, host in enumerate(HOSTS):
            gen = _sdk.start_kiln(tmp_path_factory, images, name=f"{prefix}{i}", settings=settings, host=host)
            servers.append(next(gen))
            running.append(gen)
        key = servers[0]["api_key"]
        for server in servers:
            prepare(server, key)
        yield {"servers": servers, "key": key, "settings": settings, "images": images, "running": running}
    finally:
        for gen in running:
            next(gen, None)
        _psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def prepare(server, key):
    server["root"] = server["base_url"].removesuffix("/api/v1")
    server["client"] = codeset.Codeset(api_key=key, base_url=server["base_url"], max_retries=0)
    server["node_id"] = (server["data_dir"] / "node-id").read_text().strip()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    # Generous: nothing here is killed, and a loaded CI machine must not look dead.
    yield from _cluster(tmp_path_factory, 10000, "node")


def admin(nodes, method, path, **kw):
    server = random.choice(nodes["servers"])
    r = httpx.request(method, f"{server['root']}/v1/admin{path}", timeout=30,
                      headers={"Authorization": f"Bearer {nodes['key']}"}, **kw)
    assert r.status_code == 200, (method, path, r.status_code, r.text)
    return r.json()


def owner(nodes, sid):
    """The node whose data directory holds the session's sandbox."""
    held = [s for s in nodes["servers"] if (s["data_dir"] / "runtime" / "sandboxes" / sid).exists()]
    assert len(held) == 1, f"{sid} is on {len(held)} nodes"
    return held[0]


def create_settled(nodes, rng, expected_live):
    """Creates a session through a random node, then waits until every node's heartbeat
    counts the sessions live (placement compares those counts)."""
    client = rng.choice(nodes["servers"])["client"]
    session = client.sessions.create(dataset=DEMO, sample_id=SAMPLE)
    assert session.status == "ready"
    deadline = time.monotonic() + 20
    while sum(n["live_sessions"] for n in admin(nodes, "GET", "/servers")["servers"]) != expected_live:
        assert time.monotonic() < deadline, "the heartbeats never counted the new session"
        time.sleep(0.05)
    return session.session_id


def series(nodes, name):
    """`{(node's own id, labels): value}` of one Prometheus series over every node's /metrics."""
    found = {}
    for server in nodes["servers"]:
        text = httpx.get(f"{server['root']}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels, value = line[len(name):].rsplit(" ", 1)
                found[(server["node_id"], labels)] = float(value)
    return found


def agent_loop(pick, sid, sample):
    """The agent loop after create; `pick()` is the client for the next call. Returns what
    any node (and a single server) must answer alike: no ids, no times."""
    seen = []
    head = pick().sessions.execute_command(sid, command="git -C /testbed rev-parse HEAD")
    seen.append(("rev-parse", head.exit_code, head.stdout.strip() == sample.base_commit))
    again = pick().sessions.get_interaction(sid, head.interaction_id)
    seen.append(("interaction", again.exit_code, again.stdout == head.stdout))
    missing = pick().sessions.str_replace(sid, file_path="README.md", str_to_replace="no such text", str_to_insert="x")
    seen.append(("str_replace missing", missing.success, "did not appear verbatim" in missing.message))
    readme = pick().sessions.execute_command(sid, command="head -1 README.md").stdout.rstrip("\n")
    done = pick().sessions.str_replace(sid, file_path="README.md", str_to_replace=readme, str_to_insert="# edited")
    seen.append(("str_replace", done.success))
    seen.append(("head", pick().sessions.execute_command(sid, command="head -1 README.md").stdout))
    job = pick().sessions.verify.start(sid)
    seen.append(("verify before", job.status, job.result.is_success,
                 sorted(f["name"] for f in job.result.failures)))
    pick().post(f"/sessions/{sid}/upload", cast_to=object,
                body={"file_path": "/tmp/gold.patch", "content_base64": base64.b64encode(sample.patch.encode()).decode()})
    applied = pick().sessions.execute_command(sid, command="git apply /tmp/gold.patch")
    seen.append(("apply", applied.exit_code, applied.stdout, applied.stderr))
    job = pick().sessions.verify.start(sid)
    seen.append(("verify after", job.status, job.result.is_success, job.result.passed,
                 job.result.failed, job.result.total))
    status = pick().sessions.verify.status(job.job_id, session_id=sid)
    seen.append(("verify status", status.result.is_success))
    closed = pick().sessions.close(sid)
    seen.append(("closed", closed.duration_seconds > 0, pick().sessions.retrieve(sid).status))
    with pytest.raises(codeset.ConflictError):
        pick().sessions.close(sid)
    return seen


def test_the_agent_loop_through_random_nodes_matches_one_node(nodes, kiln_server):
    seed = int(os.environ.get("KILN_NODES_SEED", random.randrange(1 << 30)))
    print(f"KILN_NODES_SEED={seed}")
    rng = random.Random(seed)
    servers = nodes["servers"]
    sample = servers[0]["client"].samples.list(search=SAMPLE).samples[0]

    # The same loop on one server (SQLite, no cluster): what every node must answer.
    single = codeset.Codeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"], max_retries=0)
    sid = single.sessions.create(dataset=DEMO, sample_id=SAMPLE).session_id
    want = agent_loop(lambda: single, sid, sample)
    assert ("verify after", "completed", True) == want[-3][:3], want

    sids = [create_settled(nodes, rng, i + 1) for i in range(SESSIONS)]
    placed = {s["node_id"]: 0 for s in servers}
    for sid in sids:
        placed[owner(nodes, sid)["node_id"]] += 1
    listed = {n["id"]: n["live_sessions"] for n in admin(nodes, "GET", "/servers")["servers"]}
    assert listed == placed, (listed, placed)
    # Best-of-two over the heartbeats' counts: with 9 sessions a node holds none only if
    # it was left out of the sample pair 7 times running ((1/3)^7).
    assert all(placed.values()), f"sessions did not spread: {placed} (seed {seed})"
    print(f"placement of {SESSIONS} sessions over 3 nodes: {sorted(placed.values())}")

    lock = threading.Lock()

    def pick():
        with lock:
            return rng.choice(servers)["client"]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda sid: agent_loop(pick, sid, sample), sids))
    for sid, seen in zip(sids, got):
        assert seen == want, f"{sid}: {seen} != {want}"

    # /metrics: every create was a placement decision of the node it was sent to, and the
    # remote ones and the other nodes' sessions' requests were relayed.
    placements = series(nodes, "kiln_placements_total")
    assert sum(placements.values()) == SESSIONS, placements
    local = sum(v for (_, labels), v in placements.items() if 'outcome="local"' in labels)
    remote = sum(v for (_, labels), v in placements.items() if 'outcome="remote"' in labels)
    assert local + remote == SESSIONS, placements
    forwarded = series(nodes, "kiln_forwarded_requests_total")
    relayed = sum(v for (_, labels), v in forwarded.items() if 'outcome="relayed"' in labels)
    assert relayed >= remote and relayed > SESSIONS, forwarded
    assert not any('outcome="failed"' in labels for (_, labels) in forwarded), forwarded
    ages = series(nodes, "kiln_node_heartbeat_age_seconds")
    ids = {s["node_id"] for s in servers}
    for server in servers:
        seen_ages = {labels: v for (node, labels), v in ages.items() if node == server["node_id"]}
        assert {f'{{node="{i}"}}' for i in ids} == set(seen_ages), ages
        assert all(0 <= v < 10 for v in seen_ages.values()), ages


def test_a_node_drained_under_load_takes_nothing_new_and_fails_nothing(nodes):
    rng = random.Random(int(os.environ.get("KILN_NODES_SEED", random.randrange(1 << 30))))
    servers = nodes["servers"]
    # Let the previous test's closes reach the heartbeats first.
    deadline = time.monotonic() + 20
    while sum(n["live_sessions"] for n in admin(nodes, "GET", "/servers")["servers"]):
        assert time.monotonic() < deadline, "live sessions left over"
        time.sleep(0.05)
    load = [create_settled(nodes, rng, i + 1) for i in range(6)]
    by_node = {}
    for sid in load:
        by_node.setdefault(owner(nodes, sid)["node_id"], []).append(sid)
    drained = max(by_node, key=lambda n: len(by_node[n]))
    drained_server = next(s for s in servers if s["node_id"] == drained)

    stop = threading.Event()
    failures, runs = [], []

    def work(sid):
        n = 0
        while not stop.is_set():
            n += 1
            client = rng.choice(servers)["client"]
            try:
                r = client.sessions.execute_command(sid, command=f"echo {n}; sleep 0.05")
                if r.exit_code != 0 or r.stdout != f"{n}\n":
                    failures.append((sid, n, r.exit_code, r.stdout, r.message))
            except Exception as e:  # noqa: BLE001: every failure is the finding
                failures.append((sid, n, repr(e)))
        runs.append(n)

    threads = [threading.Thread(target=work, args=(sid,)) for sid in load]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        assert admin(nodes, "POST", f"/servers/{drained}/drain")["status"] == "draining"
        # New sessions, half of them sent to the draining node itself.
        fresh = []
        for i in range(6):
            via = drained_server if i % 2 == 0 else rng.choice(servers)
            fresh.append(via["client"].sessions.create(dataset=DEMO, sample_id=SAMPLE).session_id)
        landed = [owner(nodes, sid)["node_id"] for sid in fresh]
        assert drained not in landed, f"a session landed on the draining node: {landed}"
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == [], failures
    assert min(runs) > 1, runs
    for sid in by_node[drained]:
        assert rng.choice(servers)["client"].sessions.retrieve(sid).status == "ready"
    for sid in load + fresh:
        rng.choice(servers)["client"].sessions.close(sid)
    back = admin(nodes, "PATCH", f"/servers/{drained}/status", json={"status": "active"})
    assert back["status"] == "active"


# The kill test's window: heartbeats every 100 ms, down after 1.5 s of silence (a loaded CI
# machine stalls for less than that).
DOWN_AFTER_MS = 1500


def sandbox_processes(sid):
    """`{(pid, start time)}` of the processes in the session's sandbox cgroup, and the
    cgroup directories they are in."""
    found, cgroups = set(), set()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (entry / "cgroup").read_text().splitlines()
            start = (entry / "stat").read_text().rsplit(")", 1)[1].split()[19]
        except OSError:
            continue
        for line in lines:
            path = line.split(":", 2)[2]
            if path.endswith(f"/{sid}"):
                found.add((int(entry.name), start))
                cgroups.add(pathlib.Path("/sys/fs/cgroup") / path.lstrip("/"))
    return found, cgroups


def alive(processes):
    still = []
    for pid, start in processes:
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and stat[19] == start:
            still.append(pid)
    return still


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f if line.split(" ")[4].startswith(str(path))]


def sleeping(sid):
    for pid, _ in sandbox_processes(sid)[0]:
        try:
            if pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                return True
        except OSError:
            pass
    return False


def test_a_node_killed_mid_command_loses_its_sessions_and_nothing_else(tmp_path_factory):
    cluster = _cluster(tmp_path_factory, DOWN_AFTER_MS, "kill")
    nodes = next(cluster)
    try:
        victim_dir = killed_node_test(tmp_path_factory, nodes)
    finally:
        next(cluster, None)
    # Every node stopped (the restarted one with SIGTERM): nothing mounted is left.
    assert mounts_under(victim_dir) == []


def killed_node_test(tmp_path_factory, nodes):
    rng = random.Random(int(os.environ.get("KILN_NODES_SEED", random.randrange(1 << 30))))
    servers = nodes["servers"]
    sids = [create_settled(nodes, rng, i + 1) for i in range(6)]
    by_node = {}
    for sid in sids:
        by_node.setdefault(owner(nodes, sid)["node_id"], []).append(sid)
    victim_id = max(by_node, key=lambda n: len(by_node[n]))
    victim = next(s for s in servers if s["node_id"] == victim_id)
    survivors = [s for s in servers if s is not victim]
    lost = by_node[victim_id]
    kept = [sid for sid in sids if sid not in lost]
    assert kept, f"every session landed on one node: {by_node}"

    def via_survivor():
        return rng.choice(survivors)["client"]

    # The victim's sessions each run `sleep 30`, sent through a surviving node (the
    # command is relayed to the owner; the SDK's long-poll for it is answered where it
    # was sent, woken through NOTIFY).
    cut = {}

    def cut_off(sid):
        started = time.monotonic()
        try:
            via_survivor().sessions.execute_command(sid, command="sleep 30")
            cut[sid] = ("finished", time.monotonic())
        except Exception as e:  # noqa: BLE001: what the SDK raised is the finding
            cut[sid] = (e, time.monotonic(), time.monotonic() - started)

    cutters = [threading.Thread(target=cut_off, args=(sid,)) for sid in lost]
    for t in cutters:
        t.start()
    deadline = time.monotonic() + 30
    while not all(sleeping(sid) for sid in lost):
        assert time.monotonic() < deadline, "sleep 30 never ran in every lost session"
        time.sleep(0.05)
    before = {sid: sandbox_processes(sid) for sid in lost}

    # The other nodes' sessions are worked on throughout, through the surviving nodes.
    stop = threading.Event()
    failures, runs = [], []

    def work(sid):
        n = 0
        while not stop.is_set():
            n += 1
            try:
                r = via_survivor().sessions.execute_command(sid, command=f"echo {n}")
                if r.exit_code != 0 or r.stdout != f"{n}\n":
                    failures.append((sid, n, r.exit_code, r.stdout, r.message))
            except Exception as e:  # noqa: BLE001: every failure is the finding
                failures.append((sid, n, repr(e)))
        runs.append(n)

    workers = [threading.Thread(target=work, args=(sid,)) for sid in kept]
    for t in workers:
        t.start()
    try:
        time.sleep(0.3)
        victim["proc"].kill()
        victim["proc"].wait()
        victim["killed"] = True
        killed = time.monotonic()
        for t in cutters:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in cutters), "a cut-off command hangs in the SDK"
        time.sleep(0.3)
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=60)
    assert failures == [], failures
    assert min(runs) > 1, runs

    # Each cut-off command: the SDK raised its -1000 error (not an HTTP error, not a
    # hang) within the heartbeat window plus a few beats.
    took = []
    for sid in lost:
        error, at, _ = cut[sid]
        assert type(error) is codeset.CodesetError, (sid, repr(error))
        took.append(at - killed)
        assert at - killed < DOWN_AFTER_MS / 1000 + 5, (sid, at - killed)
    print(f"cut-off commands answered -1000 {sorted(round(t, 2) for t in took)} s after the kill")
    for sid in lost:
        client = via_survivor()
        session = httpx.get(f"{rng.choice(survivors)['base_url']}/sessions/{sid}", timeout=30,
                            headers={"Authorization": f"Bearer {nodes['key']}"}).json()
        assert session["status"] == "terminated" and "node_lost" in str(session), session
        assert client.sessions.retrieve(sid).status == "terminated"
    row = admin(dict(nodes, servers=survivors), "GET", f"/servers/{victim_id}")
    assert row["status"] == "down", row

    # The ledger: every session charged once, the balance the sum of the transactions.
    for sid in kept:
        via_survivor().sessions.close(sid)
    usage = httpx.get(f"{survivors[0]['base_url']}/billing/usage", params={"limit": 100}, timeout=30,
                      headers={"Authorization": f"Bearer {nodes['key']}"}).json()
    transactions = usage["transactions"]
    for sid in sids:
        charges = [t for t in transactions if t["type"] == "session_usage" and t.get("session_id") == sid]
        assert len(charges) == 1, (sid, usage)
    assert usage["current_balance_cents"] == sum(t["amount_cents"] for t in transactions), usage

    # The killed node starts again on its data directory: registered again, and nothing
    # of its lost sessions is left running, in a cgroup, or mounted.
    again = _sdk.start_kiln(tmp_path_factory, nodes["images"], name="kill-again",
                            settings=nodes["settings"], host=victim["base_url"].split("//")[1].split(":")[0],
                            data_dir=victim["data_dir"])
    restarted = next(again)
    nodes["running"].append(again)
    prepare(restarted, nodes["key"])
    assert restarted["node_id"] == victim_id
    assert admin(nodes_with(nodes, restarted, victim), "GET", f"/servers/{victim_id}")["status"] == "active"
    for sid in lost:
        processes, cgroups = before[sid]
        assert alive(processes) == [], (sid, processes)
        assert sandbox_processes(sid) == (set(), set()), sid
        assert [c for c in cgroups if c.exists()] == [], cgroups
        assert mounts_under(victim["data_dir"] / "runtime" / "sandboxes" / sid) == [], sid
        assert restarted["client"].sessions.retrieve(sid).status == "terminated"
    return victim["data_dir"]


def nodes_with(nodes, new, old):
    return dict(nodes, servers=[new if s is old else s for s in nodes["servers"]])
