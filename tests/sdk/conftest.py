"""A real `kiln serve` for the SDK tests: the binary named by KILN_BIN, a fresh data
directory, a free port on 127.0.0.1, the bundled demo dataset."""
import os
import pathlib
import socket
import subprocess
import time

import httpx
import pytest


def _free_port(host="127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kiln_server(tmp_path_factory):
    # Environment images are slow to build: CI builds them once and every server shares them.
    yield from start_kiln(tmp_path_factory, os.environ.get("KILN_TEST_IMAGES_DIR"))


def start_kiln(tmp_path_factory, images_dir, name="kiln", settings=None, host="127.0.0.1", data_dir=None):
    """Starts `kiln serve` on `host` (images from `images_dir`, none when it is None;
    `settings`: more KILN_* variables; `data_dir`: an existing one to start on again),
    yields what the tests need, and stops it (unless a test killed it and set `killed` in
    what was yielded). Also used by tests/fuzz and by test_nodes (three servers on one
    PostgreSQL)."""
    binary = os.environ.get("KILN_BIN")
    if not binary or not pathlib.Path(binary).is_file():
        pytest.fail("set KILN_BIN to the path of the built `kiln` binary (e.g. target/debug/kiln)")
    data_dir = data_dir or tmp_path_factory.mktemp(f"{name}-data")
    port = _free_port(host)
    base = f"http://{host}:{port}/api/v1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_BUILD_DEMO_IMAGES"] = "false"
    if images_dir:
        env["KILN_IMAGES_DIR"] = images_dir
    env.update(settings or {})
    log = open(data_dir.parent / f"{name}-server.log", "a")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", str(data_dir), "--listen", f"{host}:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kiln serve exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("kiln serve did not answer /health within 60 s")
        time.sleep(0.05)
    # Only the first server on a database creates the admin (and writes its key).
    key_file = data_dir / "admin.key"
    key = key_file.read_text().strip() if key_file.exists() else None
    server = {"base_url": base, "api_key": key, "data_dir": data_dir, "images": bool(images_dir), "proc": proc}
    yield server
    if server.get("killed"):
        return
    proc.terminate()
    try:
        assert proc.wait(timeout=15) == 0, "kiln serve did not shut down cleanly on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture()
def sdk_poll_sleeps(monkeypatch):
    """The poll sleeps the SDK takes (it still sleeps them). Long-poll means none: a
    count, unlike a wall-clock bound, does not depend on the machine's load."""
    from codeset._resource import SyncAPIResource

    slept = []
    original = SyncAPIResource._sleep

    def recording(self, seconds):
        slept.append(seconds)
        original(self, seconds)

    monkeypatch.setattr(SyncAPIResource, "_sleep", recording)
    return slept
