"""The whole agent loop through the official `codeset` SDK (0.9.1, unmodified), sync and
async, on the bundled demo dataset in real sandboxes."""
import asyncio
import os

import codeset
import pytest

DEMO = "kiln-demo"
PYTEST_SAMPLE = "kiln-demo__inifile-1"
UNITTEST_SAMPLE = "kiln-demo__lrukit-1"


@pytest.fixture()
def client(kiln_server):
    if not kiln_server["images"]:
        if os.environ.get("CI"):
            pytest.fail("KILN_TEST_IMAGES_DIR must name a store with the demo images (scripts/test.sh builds it)")
        pytest.skip("no demo images (set KILN_TEST_IMAGES_DIR; `kiln images build-demo` builds them)")
    return codeset.Codeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"], max_retries=0)


@pytest.fixture()
def org_client(kiln_server, client):
    """The SDK with an organization's API key (document 004: the key carries its org): a
    team org made by the admin over /v1, and a key of it."""
    import httpx

    root = kiln_server["base_url"].removesuffix("/api/v1")
    admin = {"Authorization": f"Bearer {kiln_server['api_key']}"}
    slug = f"sdk-{os.getpid()}"
    made = httpx.post(f"{root}/v1/orgs", json={"name": "SDK team", "slug": slug}, headers=admin, timeout=30)
    assert made.status_code == 201, made.text
    key = httpx.post(f"{root}/v1/orgs/{slug}/api-keys", json={"name": "sdk"}, headers=admin, timeout=30)
    assert key.status_code == 201, key.text
    return codeset.Codeset(api_key=key.json()["key"], base_url=kiln_server["base_url"], max_retries=0)


def test_the_whole_loop(client, sdk_poll_sleeps):
    whole_loop(client, sdk_poll_sleeps)


def test_the_whole_loop_with_an_org_key(org_client, client, sdk_poll_sleeps):
    """The same loop, unchanged, with an org's key; the session is the org's: the admin's
    personal key (their personal org) neither lists nor finds it."""
    checked = []

    def not_the_admins(session_id):
        assert session_id not in [s.session_id for s in client.sessions.list().sessions]
        with pytest.raises(codeset.NotFoundError):
            client.sessions.retrieve(session_id)
        checked.append(session_id)

    whole_loop(org_client, sdk_poll_sleeps, also=not_the_admins)
    assert checked, "the isolation check ran"


def whole_loop(client, sdk_poll_sleeps, also=None):
    session = client.sessions.create(dataset=DEMO, sample_id=PYTEST_SAMPLE)
    # With long-poll the SDK's "POST, GET, then every 3 s" loop ends on the first GET.
    assert sdk_poll_sleeps == [], "create waited for a 3 s poll"
    assert session.status == "ready"
    assert session.container_info is not None and session.container_info.location.startswith("local:")

    try:
        result = client.sessions.execute_command(session.session_id, command="git -C /testbed rev-parse HEAD")
        assert result.exit_code == 0
        sample = client.samples.list(search=PYTEST_SAMPLE).samples[0]
        assert result.stdout.strip() == sample.base_commit

        result = client.sessions.execute_command(session.session_id, command="python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -1")
        assert result.exit_code == 0 and "passed" in result.stdout, result.stdout

        fetched = client.sessions.get_interaction(session.session_id, result.interaction_id)
        assert fetched.exit_code == 0 and fetched.stdout == result.stdout

        result = client.sessions.execute_command(session.session_id, command="sleep 30", command_timeout=1)
        assert result.exit_code == 124 and "timed out" in (result.message or "")

        missing = client.sessions.str_replace(session.session_id, file_path="README.md", str_to_replace="no such text", str_to_insert="x")
        assert missing.success is False and "did not appear verbatim" in missing.message
        readme = client.sessions.execute_command(session.session_id, command="head -1 README.md").stdout.rstrip("\n")
        done = client.sessions.str_replace(session.session_id, file_path="README.md", str_to_replace=readme, str_to_insert="# edited")
        assert done.success is True, done.message
        assert client.sessions.execute_command(session.session_id, command="head -1 README.md").stdout == "# edited\n"

        listed = client.sessions.list()
        assert session.session_id in [s.session_id for s in listed.sessions]
        if also:
            also(session.session_id)
    finally:
        closed = client.sessions.close(session.session_id)
    assert closed.duration_seconds > 0
    assert client.sessions.retrieve(session.session_id).status == "closed"
    with pytest.raises(codeset.ConflictError):
        client.sessions.close(session.session_id)


def test_unknown_sample_and_bad_ttl(client):
    with pytest.raises(codeset.NotFoundError):
        client.sessions.create(dataset=DEMO, sample_id="nope")
    with pytest.raises(codeset.UnprocessableEntityError):
        client.sessions.create(dataset=DEMO, sample_id=PYTEST_SAMPLE, ttl_minutes=0)


def test_async_client(kiln_server, client):
    async def run():
        async with codeset.AsyncCodeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"]) as a:
            sessions = await asyncio.gather(
                a.sessions.create(dataset=DEMO, sample_id=UNITTEST_SAMPLE),
                a.sessions.create(dataset=DEMO, sample_id=PYTEST_SAMPLE),
            )
            try:
                results = await asyncio.gather(
                    a.sessions.execute_command(sessions[0].session_id, command="python3 -m unittest 2>&1 | tail -1"),
                    a.sessions.execute_command(sessions[1].session_id, command="echo $HOSTNAME; ls /testbed | head -1"),
                )
                assert results[0].exit_code == 0 and results[0].stdout.strip() == "OK", results[0]
                assert results[1].exit_code == 0
                again = await a.sessions.get_interaction(sessions[0].session_id, results[0].interaction_id)
                assert again.stdout == results[0].stdout
            finally:
                for s in sessions:
                    await a.sessions.close(s.session_id)
            listing = await a.sessions.list()
            statuses = {s.session_id: s.status for s in listing.sessions}
            assert all(statuses[s.session_id] == "closed" for s in sessions)

    asyncio.run(run())
