"""Verification through the official SDK (0.9.1, unmodified) and `kiln datasets
validate`, on the demo dataset in real sandboxes."""
import base64
import json
import os
import pathlib
import subprocess

import codeset
import pytest

DEMO = "kiln-demo"
SAMPLE = "kiln-demo__inifile-1"


@pytest.fixture()
def client(kiln_server):
    if not kiln_server["images"]:
        if os.environ.get("CI"):
            pytest.fail("KILN_TEST_IMAGES_DIR must name a store with the demo images")
        pytest.skip("no demo images (set KILN_TEST_IMAGES_DIR)")
    return codeset.Codeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"], max_retries=0)


def run(client, sid, command):
    result = client.sessions.execute_command(sid, command=command)
    assert result.exit_code == 0, (command, result.stdout, result.stderr)
    return result.stdout


def upload(client, sid, path, text):
    client.post(f"/sessions/{sid}/upload", cast_to=object,
                body={"file_path": path, "content_base64": base64.b64encode(text.encode()).decode()})


def test_grades_the_fix_and_leaves_the_session_as_it_was(client, sdk_poll_sleeps):
    sample = client.samples.list(search=SAMPLE).samples[0]
    session = client.sessions.create(dataset=DEMO, sample_id=SAMPLE)
    sid = session.session_id
    try:
        # The agent has touched a test file the test patch also changes, and made a file.
        test_file = "tests/test_parser.py"
        run(client, sid, f"echo '# the agent was here' >> {test_file}; echo scratch > notes.txt")
        before = run(client, sid, f"git status --porcelain; sha256sum {test_file}")

        job = client.sessions.verify.start(sid)
        assert sdk_poll_sleeps == [], "verification waited for a 3 s poll"
        assert job.status == "completed"
        assert job.result.is_success is False
        failed = {f["name"] for f in job.result.failures}
        assert set(sample.fail_to_pass) <= failed, failed
        assert run(client, sid, f"git status --porcelain; sha256sum {test_file}") == before

        upload(client, sid, "/tmp/gold.patch", sample.patch)
        run(client, sid, "git apply /tmp/gold.patch")
        job = client.sessions.verify.start(sid)
        assert job.status == "completed" and job.result.is_success is True
        assert job.result.passed == job.result.total == len(sample.fail_to_pass) + len(sample.pass_to_pass)
        assert job.result.failed == 0
        again = client.sessions.verify.status(job.job_id, session_id=sid)
        assert again.result.is_success is True and again.completed_at is not None
    finally:
        client.sessions.close(sid)
    with pytest.raises(codeset.ConflictError):
        client.sessions.verify.start(sid)


def test_forged_passed_lines_do_not_pass(client):
    sample = client.samples.list(search=SAMPLE).samples[0]
    session = client.sessions.create(dataset=DEMO, sample_id=SAMPLE)
    sid = session.session_id
    try:
        # The agent's code prints, after pytest's own summary, lines the parser reads as
        # passing results (a later line for the same test wins). The reference's 5.x
        # validity rule catches it: the run failed (non-zero exit, observed by Kiln, not
        # read from the log) while the log shows no failure.
        forged = "".join(f"    print('\\nPASSED {name}')\n" for name in sample.fail_to_pass)
        upload(client, sid, "/testbed/conftest.py", "def pytest_unconfigure(config):\n" + forged)
        job = client.sessions.verify.start(sid)
        assert job.status == "completed"
        lines = job.result.stdout.splitlines()
        name = sample.fail_to_pass[0]
        assert f"PASSED {name}" in lines, "the forged line must reach the log"
        assert lines.index(f"PASSED {name}") > max(i for i, l in enumerate(lines) if l.startswith(f"FAILED {name}"))
        assert job.result.is_success is False, job.result.stdout[-2000:]
    finally:
        client.sessions.close(sid)


def test_another_users_job_is_not_found(kiln_server, client):
    session = client.sessions.create(dataset=DEMO, sample_id=SAMPLE)
    try:
        job = client.sessions.verify.start(session.session_id, wait_for_completion=False)
        key = subprocess.run([os.environ["KILN_BIN"], "users", "create", "--name", "eve", "--email", "eve@example.com",
                              "--data-dir", str(kiln_server["data_dir"])], capture_output=True, text=True, check=True).stdout.strip()
        other_key = subprocess.run([os.environ["KILN_BIN"], "keys", "create", "--user", key, "--data-dir", str(kiln_server["data_dir"])],
                                   capture_output=True, text=True, check=True).stdout.strip()
        eve = codeset.Codeset(api_key=other_key, base_url=kiln_server["base_url"], max_retries=0)
        with pytest.raises(codeset.NotFoundError):
            eve.sessions.verify.status(job.job_id, session_id=session.session_id)
        with pytest.raises(codeset.NotFoundError):
            eve.sessions.verify.start(session.session_id)
    finally:
        client.sessions.close(session.session_id)


def test_validate_finds_a_dataset_that_disagrees(client, tmp_path):
    """`kiln datasets validate` must fail on a record whose FAIL_TO_PASS lists a test that
    does not exist (with the gold patch it is missing, so the sample cannot pass)."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    records = [json.loads(line) for line in (repo / "datasets/kiln-demo/samples.jsonl").read_text().splitlines() if line]
    record = next(r for r in records if r["instance_id"] == SAMPLE)
    f2p = json.loads(record["FAIL_TO_PASS"]) if isinstance(record["FAIL_TO_PASS"], str) else record["FAIL_TO_PASS"]
    record["FAIL_TO_PASS"] = f2p + ["tests/test_parser.py::test_that_does_not_exist"]
    (tmp_path / "broken.jsonl").write_text(json.dumps(record) + "\n")
    data = tmp_path / "data"
    env = {**os.environ, "KILN_IMAGES_DIR": os.environ["KILN_TEST_IMAGES_DIR"], "KILN_LOAD_DEMO_DATASET": "false"}
    subprocess.run([os.environ["KILN_BIN"], "datasets", "import", str(tmp_path / "broken.jsonl"), "--name", "kiln-demo",
                    "--repos", str(repo / "datasets/kiln-demo/repos"), "--data-dir", str(data)], env=env, check=True)
    out = subprocess.run([os.environ["KILN_BIN"], "datasets", "validate", "kiln-demo", "--data-dir", str(data)],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DISAGREES" in out.stdout and "1 disagree" in out.stdout, out.stdout


def test_a_test_file_the_agent_also_created(kiln_server, client, tmp_path):
    """The test patch adds a file the agent has created too: verification grades the
    patch's version (git apply would refuse to create an existing file) and gives the
    agent's own version back afterwards."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    records = [json.loads(line) for line in (repo / "datasets/kiln-demo/samples.jsonl").read_text().splitlines() if line]
    record = next(r for r in records if r["instance_id"] == SAMPLE)
    f2p = json.loads(record["FAIL_TO_PASS"]) if isinstance(record["FAIL_TO_PASS"], str) else record["FAIL_TO_PASS"]
    record["instance_id"] = "trap-1"
    record["sample_image"] = f"kiln-demo/sample/{SAMPLE}:1"
    record["test_patch"] += (
        "diff --git a/tests/test_extra.py b/tests/test_extra.py\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/tests/test_extra.py\n@@ -0,0 +1,2 @@\n+def test_extra_passes():\n+    assert True\n"
    )
    record["FAIL_TO_PASS"] = f2p + ["tests/test_extra.py::test_extra_passes"]
    record["test_cmd"] += " tests/test_extra.py"
    (tmp_path / "trap.jsonl").write_text(json.dumps(record) + "\n")
    subprocess.run([os.environ["KILN_BIN"], "datasets", "import", str(tmp_path / "trap.jsonl"), "--name", "trap",
                    "--repos", str(repo / "datasets/kiln-demo/repos"), "--data-dir", str(kiln_server["data_dir"])],
                   env={**os.environ, "KILN_LOAD_DEMO_DATASET": "false"}, check=True)

    session = client.sessions.create(dataset="trap", sample_id="trap-1")
    sid = session.session_id
    try:
        mine = "def test_extra_passes():\n    assert False, 'the agent wrote this one'\n"
        upload(client, sid, "/testbed/tests/test_extra.py", mine)
        upload(client, sid, "/tmp/gold.patch", record["patch"])
        run(client, sid, "git apply /tmp/gold.patch")
        job = client.sessions.verify.start(sid)
        assert job.status == "completed"
        assert job.result.is_success is True, job.result.stdout[-2000:]
        assert run(client, sid, "cat tests/test_extra.py") == mine
    finally:
        client.sessions.close(sid)
