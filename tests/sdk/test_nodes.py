"""Issue 12's proof with the official `codeset` SDK (0.9.1, unmodified): three `kiln serve`
on one PostgreSQL, each on its own loopback address (127.0.0.2, .3, .4) and data directory.
Every SDK call goes to a node picked at random; the whole agent loop (create, exec,
str_replace, upload, verify, close) gives the same results as on one node; sessions spread
over the three; a node drained under load takes no new session and fails none of its own.

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


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
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
        # Generous: nothing here is killed, and a loaded CI machine must not look dead.
        "KILN_CLUSTER__DOWN_AFTER_MS": "10000",
        "KILN_CLUSTER__SECRET": SECRET,
    }
    if os.environ.get("KILN_AGENT_BIN"):
        settings["KILN_AGENT_BIN"] = os.environ["KILN_AGENT_BIN"]
    # Started one after the other: the first creates the schema, the admin and the demo
    # dataset; the others find them.
    servers, running = [], []
    try:
        for i, host in enumerate(HOSTS):
            gen = _sdk.start_kiln(tmp_path_factory, images, name=f"node{i}", settings=settings, host=host)
            servers.append(next(gen))
            running.append(gen)
        key = servers[0]["api_key"]
        for server in servers:
            root = server["base_url"].removesuffix("/api/v1")
            server["root"] = root
            server["client"] = codeset.Codeset(api_key=key, base_url=server["base_url"], max_retries=0)
            server["node_id"] = (server["data_dir"] / "node-id").read_text().strip()
        yield {"servers": servers, "key": key}
    finally:
        for gen in running:
            next(gen, None)
        _psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
