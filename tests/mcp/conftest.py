"""A real `kiln serve` for the MCP tests (the binary named by KILN_BIN, a fresh data
directory, a free port, the demo dataset, images from KILN_TEST_IMAGES_DIR), and a second
user's key to show one key cannot reach another's sessions."""
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kiln(*args):
    return subprocess.run([os.environ["KILN_BIN"], *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="session")
def kiln_server(tmp_path_factory):
    binary = os.environ.get("KILN_BIN")
    if not binary or not pathlib.Path(binary).is_file():
        pytest.fail("set KILN_BIN to the path of the built `kiln` binary (e.g. target/debug/kiln)")
    images = os.environ.get("KILN_TEST_IMAGES_DIR")
    if not images or not pathlib.Path(images, "images.json").is_file():
        pytest.fail("set KILN_TEST_IMAGES_DIR to the demo images (scripts/test.sh builds them)")
    data_dir = tmp_path_factory.mktemp("kiln-mcp-data")
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(KILN_BUILD_DEMO_IMAGES="false", KILN_IMAGES_DIR=images)
    log = open(data_dir.parent / "kiln-mcp-server.log", "w")
    proc = subprocess.Popen([binary, "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kiln serve exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"{root}/api/v1/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("kiln serve did not answer /health within 60 s")
        time.sleep(0.05)
    key = (data_dir / "admin.key").read_text().strip()
    eve = _kiln("users", "create", "--name", "eve", "--email", "eve@example.com", "--data-dir", str(data_dir))
    eve_key = _kiln("keys", "create", "--user", eve, "--data-dir", str(data_dir))
    yield {"root": root, "mcp_url": f"{root}/mcp", "api_key": key, "other_key": eve_key,
           "data_dir": data_dir}
    proc.terminate()
    try:
        assert proc.wait(timeout=15) == 0, "kiln serve did not shut down cleanly on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="session")
def demo_sample():
    """The demo sample the scripted agent solves, with its gold patch (read from the
    dataset file, as the agent is not given it)."""
    for line in (REPO / "datasets/kiln-demo/samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["instance_id"] == "kiln-demo__inifile-1":
            # SWE-bench files keep the test lists as JSON text.
            for key in ("FAIL_TO_PASS", "PASS_TO_PASS"):
                if isinstance(record[key], str):
                    record[key] = json.loads(record[key])
            return record
    pytest.fail("kiln-demo__inifile-1 is not in datasets/kiln-demo/samples.jsonl")
