"""Issue 13's Kubernetes proof with the official `codeset` SDK: `kiln serve` on the
Kubernetes backend (`runtime.backend = "kubernetes"`), its cluster the in-repo test API
server and kubelet (`kiln-kube-test`, crates/kiln-kube-test) run as a process. The kubelet
runs each Pod's injected agent chrooted into an overlay of the Pod's image from Kiln's
image store (KILN_TEST_IMAGES_DIR), so the demo sample's /testbed, git and its tests are
there. The whole agent loop (create, exec, str_replace, upload, verify, close) must answer
what the same loop answers on the local backend, in pods mode (cold Pods) and in
agent-sandbox mode with a warm pool of the sample's image.

Skipped only when the kiln-kube-test binary is missing and not named (KILN_KUBE_TEST_BIN
fails instead; else it is looked for next to
KILN_BIN); needs KILN_AGENT_BIN and KILN_TEST_IMAGES_DIR. KILN_MEASURE_KUBE=1 also runs
the create → ready / exec measurement against the local backend."""
import datetime
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import time

import codeset
import httpx
import pytest


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).parent / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sdk = _load("kiln_sdk_conftest", "conftest.py")
# The loop test_nodes compares nodes with: the same calls, the same answers.
_nodes = _load("kiln_sdk_test_nodes", "test_nodes.py")

DEMO = "kiln-demo"
SAMPLE = "kiln-demo__inifile-1"
IMAGE = "kiln-demo/sample/kiln-demo__inifile-1:1"
NAMESPACE = "kiln-sandboxes"
ID_ANNOTATION = "kiln.dev/sandbox-id"
SANDBOXES = f"/apis/agents.x-k8s.io/v1beta1/namespaces/{NAMESPACE}/sandboxes"
CLAIMS = f"/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/{NAMESPACE}/sandboxclaims"


def cluster_get(cluster, path):
    r = httpx.get(cluster["url"] + path, headers={"Authorization": "Bearer test-token"}, timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def of_session(items, sid):
    found = [o for o in items if o["metadata"].get("annotations", {}).get(ID_ANNOTATION) == sid]
    assert len(found) == 1, f"{len(found)} objects of {sid}"
    return found[0]


def sandbox_of(cluster, mode, sid):
    """The cluster's object that is the session's sandbox: its Pod (pods mode), or the
    Sandbox its claim got (agent-sandbox mode)."""
    if mode == "pods":
        return of_session(cluster_get(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods")["items"], sid)
    claim = of_session(cluster_get(cluster, CLAIMS)["items"], sid)
    return cluster_get(cluster, f"{SANDBOXES}/{claim['status']['sandbox']['name']}")


def wait_for_a_warm_sandbox(cluster):
    """The pool fills on the first create of its image (nothing asks before): waits
    until a pool Sandbox is Ready."""
    deadline = time.monotonic() + 20
    while True:
        for s in cluster_get(cluster, SANDBOXES)["items"]:
            ready = [c for c in s.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            if "agents.x-k8s.io/warm-pool-sandbox" in s["metadata"].get("labels", {}) \
                    and ready and ready[0]["status"] == "True":
                return
        assert time.monotonic() < deadline, "the warm pool never held a ready Sandbox"
        time.sleep(0.05)


def _kube_test_bin():
    given = os.environ.get("KILN_KUBE_TEST_BIN")
    if given:
        return pathlib.Path(given)
    return pathlib.Path(os.environ.get("KILN_BIN", "target/debug/kiln")).parent / "kiln-kube-test"


def _needs():
    binary = _kube_test_bin()
    if not binary.is_file():
        # Named explicitly (scripts/test.sh does): missing is a failure, never a skip.
        if os.environ.get("KILN_KUBE_TEST_BIN"):
            pytest.fail(f"KILN_KUBE_TEST_BIN={binary} does not exist (cargo build --workspace --bins)")
        pytest.skip(f"the test API server is not built ({binary}; cargo build -p kiln-kube-test)")
    agent, images = os.environ.get("KILN_AGENT_BIN"), os.environ.get("KILN_TEST_IMAGES_DIR")
    if not agent or not images:
        pytest.fail("the Kubernetes SDK test needs KILN_AGENT_BIN and KILN_TEST_IMAGES_DIR")
    return binary, agent, images


def start_cluster(tmp_path_factory, name, agent_sandbox):
    """Starts kiln-kube-test; yields its `{"kubeconfig", "url"}` line; stops it."""
    binary, agent, images = _needs()
    log = open(tmp_path_factory.mktemp(name) / "kiln-kube-test.log", "w")
    args = [str(binary), "--agent-binary", agent, "--images-dir", images]
    if agent_sandbox:
        args.append("--agent-sandbox")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"kiln-kube-test exited with {proc.wait()}; see {log.name}")
        yield json.loads(line)
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=15) == 0, "kiln-kube-test did not stop cleanly on SIGTERM"
        finally:
            if proc.poll() is None:
                proc.kill()


def start_kube_kiln(tmp_path_factory, name, cluster, mode, warm=0):
    """`kiln serve` on the Kubernetes backend against `cluster` (a TOML file: warm_pools'
    keys are image names, which no environment variable can spell)."""
    config = tmp_path_factory.mktemp(f"{name}-config") / "kiln.toml"
    config.write_text(
        "[runtime]\nbackend = \"kubernetes\"\n[runtime.kubernetes]\n"
        f"kubeconfig = {json.dumps(cluster['kubeconfig'])}\nmode = {json.dumps(mode)}\n"
        "ready_timeout_secs = 60\n"
        + (f"warm_pools = {{ {json.dumps(IMAGE)} = {warm} }}\n" if warm else "")
    )
    settings = {"KILN_CONFIG": str(config)}
    # The demo dataset's sample rows; its images are the cluster's, not this server's.
    yield from _sdk.start_kiln(tmp_path_factory, os.environ.get("KILN_TEST_IMAGES_DIR"),
                               name=name, settings=settings)


@pytest.fixture(scope="module", params=["pods", "agent-sandbox"])
def kube_server(request, tmp_path_factory):
    mode = request.param
    clusters = start_cluster(tmp_path_factory, f"cluster-{mode}", mode == "agent-sandbox")
    cluster = next(clusters)
    try:
        servers = start_kube_kiln(tmp_path_factory, f"kiln-kube-{mode}", cluster, mode,
                                  warm=1 if mode == "agent-sandbox" else 0)
        server = next(servers)
        try:
            yield {**server, "mode": mode, "cluster": cluster}
        finally:
            next(servers, None)
    finally:
        next(clusters, None)


def test_the_agent_loop_on_kubernetes_matches_the_local_backend(kube_server, kiln_server):
    local = codeset.Codeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"], max_retries=0)
    kube = codeset.Codeset(api_key=kube_server["api_key"], base_url=kube_server["base_url"], max_retries=0)
    sample = local.samples.list(search=SAMPLE).samples[0]

    sid = local.sessions.create(dataset=DEMO, sample_id=SAMPLE).session_id
    want = _nodes.agent_loop(lambda: local, sid, sample)
    assert ("verify after", "completed", True) == want[-3][:3], want

    cluster, mode = kube_server["cluster"], kube_server["mode"]
    if mode == "agent-sandbox":
        # The first session of the image fills its pool; the loop's session takes a warm one.
        warm_up = kube.sessions.create(dataset=DEMO, sample_id=SAMPLE).session_id
        kube.sessions.close(warm_up)
        wait_for_a_warm_sandbox(cluster)
    session = kube.sessions.create(dataset=DEMO, sample_id=SAMPLE)
    assert session.status == "ready", session
    # The sandbox is the cluster's, of the sample's image: no local sandbox.
    sandbox = sandbox_of(cluster, mode, session.session_id)
    if mode == "pods":
        assert sandbox["spec"]["containers"][0]["image"] == IMAGE, sandbox
    else:
        assert sandbox["metadata"]["labels"]["agents.x-k8s.io/launch-type"] == "warm", sandbox
        # The cluster ends the sandbox with its session (not at the 24 h backstop).
        claim = of_session(cluster_get(cluster, CLAIMS)["items"], session.session_id)
        shutdown = datetime.datetime.fromisoformat(claim["spec"]["lifecycle"]["shutdownTime"].replace("Z", "+00:00"))
        assert abs((shutdown - session.expires_at).total_seconds()) < 1, (shutdown, session.expires_at)
    assert not (kube_server["data_dir"] / "runtime" / "sandboxes" / session.session_id).exists()
    got = _nodes.agent_loop(lambda: kube, session.session_id, sample)
    assert got == want, f"{kube_server['mode']}: {got} != {want}"


def _median_ms(samples):
    return round(statistics.median(samples) * 1000, 1)


def _measure(client, runs):
    """create → ready (the SDK's create returns ready) and an exec round trip, `runs` times."""
    create, execs = [], []
    for _ in range(runs):
        start = time.perf_counter()
        sid = client.sessions.create(dataset=DEMO, sample_id=SAMPLE).session_id
        create.append(time.perf_counter() - start)
        for _ in range(3):
            start = time.perf_counter()
            assert client.sessions.execute_command(sid, command="true").exit_code == 0
            execs.append(time.perf_counter() - start)
        client.sessions.close(sid)
    return _median_ms(create), _median_ms(execs)


@pytest.mark.skipif(os.environ.get("KILN_MEASURE_KUBE") != "1", reason="a measurement: KILN_MEASURE_KUBE=1")
def test_measure_create_and_exec_against_the_local_backend(kube_server, kiln_server):
    runs = int(os.environ.get("KILN_MEASURE_RUNS", "20"))
    local = codeset.Codeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"], max_retries=0)
    kube = codeset.Codeset(api_key=kube_server["api_key"], base_url=kube_server["base_url"], max_retries=0)
    rows = {"local": _measure(local, runs), f"kubernetes {kube_server['mode']}": _measure(kube, runs)}
    print(f"\nmedian of {runs} (exec: of {3 * runs}), ms: create → ready, exec round trip")
    for name, (create, exec_) in rows.items():
        print(f"{name:28} {create:8} {exec_:8}")
