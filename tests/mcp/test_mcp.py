"""Kiln's MCP server driven by the official MCP Python SDK, as an agent would: over
streamable HTTP (`/mcp` on `kiln serve`, bearer API key) and over stdio (`kiln mcp`, relayed
to that server). A scripted agent reads a demo task, fixes it through the tools (the gold
patch, an edit), verifies it (graded like SWE-bench: resolved), checkpoints, forks, closes;
another key cannot touch its sessions; nothing is left running."""
import json
import os
import urllib.error
import urllib.request

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

DEMO = "kiln-demo"
TOOLS = {"list_datasets", "list_samples", "get_sample", "create_session", "list_sessions", "exec",
         "read_file", "write_file", "str_replace", "list_files", "git_diff", "snapshot", "rollback",
         "fork", "verify", "close_session", "exec_status", "kill_exec", "expose_port", "close_port"}


class Agent:
    """Tool calls that return the structured answer, or the tool error's {code, message}."""

    def __init__(self, session: ClientSession):
        self.session = session

    async def call(self, name, /, **arguments):
        result = await self.session.call_tool(name, arguments, read_timeout_seconds=900)
        text = "".join(getattr(c, "text", "") for c in result.content)
        body = result.structured_content if result.structured_content is not None else json.loads(text)
        return body, result.is_error

    async def ok(self, name, /, **arguments):
        body, is_error = await self.call(name, **arguments)
        assert not is_error, f"{name} failed: {body}"
        return body

    async def refused(self, name, /, **arguments):
        body, is_error = await self.call(name, **arguments)
        assert is_error, f"{name} should have failed: {body}"
        return body


def http_session(server, key):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                timeout=httpx2.Timeout(30, read=900))
    return client, streamable_http_client(server["mcp_url"], http_client=client)


async def with_agent(server, key, script):
    http, transport = http_session(server, key)
    async with http, transport as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await script(Agent(session))


def test_unauthenticated_requests_are_refused(kiln_server):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"}}}).encode()
    for headers in ({}, {"Authorization": "Bearer kiln_not_a_key"}):
        request = urllib.request.Request(kiln_server["mcp_url"], data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("an unauthenticated MCP request was answered")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code
            assert e.headers.get("WWW-Authenticate", "").startswith("Bearer")
            assert json.loads(e.read())["detail"]["code"] == "unauthorized"


def test_an_agent_solves_a_demo_task_over_http(kiln_server, demo_sample):
    sample_id = demo_sample["instance_id"]

    async def script(agent: Agent):
        tools = await agent.session.list_tools()
        assert TOOLS <= {t.name for t in tools.tools}
        assert all(t.input_schema.get("type") == "object" for t in tools.tools)

        datasets = await agent.ok("list_datasets")
        assert DEMO in {d["name"] for d in datasets["datasets"]}
        found = await agent.ok("list_samples", dataset=DEMO, search="inifile")
        assert [s["sample_id"] for s in found["samples"]] == [sample_id]
        task = await agent.ok("get_sample", dataset=DEMO, sample_id=sample_id)
        assert task["problem_statement"] and "patch" not in task
        uri = f"kiln://samples/{DEMO}/{sample_id}"
        assert uri in {str(r.uri) for r in (await agent.session.list_resources()).resources}
        statement = await agent.session.read_resource(uri)
        assert statement.contents[0].text == task["problem_statement"]

        session = await agent.ok("create_session", dataset=DEMO, sample_id=sample_id)
        sid = session["session_id"]
        assert session["status"] == "ready"
        try:
            ran = await agent.ok("exec", session_id=sid, command="git rev-parse HEAD && pwd")
            assert ran["exit_code"] == 0 and ran["stdout"].split() == [demo_sample["base_commit"], "/testbed"]
            seen = []

            async def on_progress(progress, total, message):
                seen.append(message or "")

            streamed = await agent.session.call_tool(
                "exec", {"session_id": sid, "command": "for i in 1 2 3; do echo line$i; sleep 0.2; done"},
                read_timeout_seconds=60, progress_callback=on_progress)
            assert streamed.structured_content["stdout"] == "line1\nline2\nline3\n"
            assert "".join(seen) == "line1\nline2\nline3\n", seen
            slow = await agent.ok("exec", session_id=sid, command="sleep 30", timeout_secs=1)
            assert slow["exit_code"] == 124, slow

            before = await agent.ok("verify", session_id=sid)
            assert before["resolved"] is False, before

            # The agent's fix: the gold patch through write_file + exec, and an edit.
            await agent.ok("write_file", session_id=sid, path="/tmp/fix.patch", content=demo_sample["patch"])
            applied = await agent.ok("exec", session_id=sid, command="git apply /tmp/fix.patch")
            assert applied["exit_code"] == 0, applied
            await agent.ok("write_file", session_id=sid, path="NOTES.md", content="status: broken\n")
            edited = await agent.ok("str_replace", session_id=sid, path="NOTES.md",
                                    old_str="broken", new_str="fixed")
            assert edited["line"] == 1
            missing = await agent.refused("str_replace", session_id=sid, path="NOTES.md",
                                          old_str="no such text", new_str="x")
            assert missing["code"] == "no_unique_match"
            read = await agent.ok("read_file", session_id=sid, path="NOTES.md")
            assert read["content"] == "status: fixed\n"
            listed = await agent.ok("list_files", session_id=sid, path=".")
            assert "/testbed/NOTES.md" in {e["path"] for e in listed["entries"]}
            diff = await agent.ok("git_diff", session_id=sid)
            assert "NOTES.md" in diff["diff"] and demo_sample["patch"].split("\n")[0] in diff["diff"]

            await agent.ok("snapshot", session_id=sid, name="fixed")
            forks = await agent.ok("fork", session_id=sid, count=1)
            assert [f["status"] for f in forks["sessions"]] == ["ready"]
            fork_id = forks["sessions"][0]["session_id"]
            too_many = await agent.refused("fork", session_id=sid, count=1000)
            assert too_many["code"] == "validation_error"

            after = await agent.ok("verify", session_id=sid)
            assert after["resolved"] is True, after
            f2p = after["tests_status"]["FAIL_TO_PASS"]
            assert sorted(f2p["success"]) == sorted(demo_sample["FAIL_TO_PASS"]) and f2p["failure"] == []
            assert after["tests_status"]["PASS_TO_PASS"]["failure"] == []
            forked = await agent.ok("verify", session_id=fork_id)
            assert forked["resolved"] is True, forked
            await agent.ok("close_session", session_id=fork_id)

            # Break it, roll back to the checkpoint: fixed again.
            await agent.ok("exec", session_id=sid, command="git checkout -- . && rm NOTES.md")
            await agent.ok("rollback", session_id=sid, name="fixed")
            back = await agent.ok("read_file", session_id=sid, path="NOTES.md")
            assert back["content"] == "status: fixed\n"
            return sid
        finally:
            await agent.call("close_session", session_id=sid)

    sid = anyio.run(with_agent, kiln_server, kiln_server["api_key"], script)

    async def after_close(agent: Agent):
        gone = await agent.refused("exec", session_id=sid, command="true")
        assert gone["code"] == "conflict", gone
        live = await agent.ok("list_sessions")
        assert live["sessions"] == [], live

    anyio.run(with_agent, kiln_server, kiln_server["api_key"], after_close)


def http_get(url, key=None, timeout=10):
    """(status, body) of a GET; an HTTP error's status too."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_an_agent_runs_a_server_and_exposes_its_port(kiln_server):
    """A real server in a real sandbox, started in the background through the tools, reached
    under the API (bearer key) and on a host port; closed, killed, and out of another key's
    reach."""
    key = kiln_server["api_key"]

    async def script(agent: Agent):
        sid = (await agent.ok("create_session", image=f"{DEMO}/python:1", ttl_minutes=5))["session_id"]
        try:
            await agent.ok("write_file", session_id=sid, path="/srv/www/hello.txt", content="hello from inside\n")
            started = await agent.ok("exec", session_id=sid, background=True,
                                     command="exec python3 -u -m http.server 8765 --bind 127.0.0.1 -d /srv/www")
            assert started["status"] == "running", started
            exec_id = started["exec_id"]
            # Wait until it listens: its own log line says so.
            for _ in range(100):
                status = await agent.ok("exec_status", session_id=sid, exec_id=exec_id)
                assert status["status"] == "running", status
                if "Serving HTTP" in status["stdout"] + status["stderr"]:
                    break
                await anyio.sleep(0.1)
            else:
                raise AssertionError(f"the server never said it listens: {status}")

            path = await agent.ok("expose_port", session_id=sid, port=8765)
            assert path["mode"] == "path" and path["url"] == f"{kiln_server['root']}/v1/instances/{sid}/ports/8765/", path
            assert await anyio.to_thread.run_sync(http_get, path["url"] + "hello.txt", key) == (200, b"hello from inside\n")
            assert (await anyio.to_thread.run_sync(http_get, path["url"] + "hello.txt"))[0] == 401
            other = (await anyio.to_thread.run_sync(http_get, path["url"] + "hello.txt", kiln_server["other_key"]))[0]
            assert other == 404, other

            host = await agent.ok("expose_port", session_id=sid, port=8765, mode="host_port")
            assert host["host_address"].startswith("127.0.0.1:"), host
            assert await anyio.to_thread.run_sync(http_get, f"http://{host['host_address']}/hello.txt") == (200, b"hello from inside\n")
            await agent.ok("close_port", session_id=sid, forward_id=host["forward_id"])
            assert (await anyio.to_thread.run_sync(http_get, path["url"] + "hello.txt", key))[0] == 200

            refused = await agent.refused("expose_port", session_id=sid, port=70000)
            assert refused["code"] == "validation_error", refused
            await agent.ok("kill_exec", session_id=sid, exec_id=exec_id)
            for _ in range(100):
                status = await agent.ok("exec_status", session_id=sid, exec_id=exec_id)
                if status["status"] != "running":
                    break
                await anyio.sleep(0.1)
            assert status["status"] != "running", status
            # Nothing listens now: the forward answers a bad gateway, not a hang.
            gone = (await anyio.to_thread.run_sync(http_get, path["url"] + "hello.txt", key))[0]
            assert gone == 502, gone
            return sid
        except BaseException:
            await agent.call("close_session", session_id=sid)
            raise

    sid = anyio.run(with_agent, kiln_server, key, script)

    async def intruder(agent: Agent):
        body = await agent.refused("expose_port", session_id=sid, port=8765)
        assert body["code"] == "not_found", body

    anyio.run(with_agent, kiln_server, kiln_server["other_key"], intruder)

    async def close(agent: Agent):
        await agent.ok("close_session", session_id=sid)

    anyio.run(with_agent, kiln_server, key, close)


def test_another_key_cannot_touch_a_session(kiln_server):
    async def owner(agent: Agent):
        return (await agent.ok("create_session", image=f"{DEMO}/python:1", ttl_minutes=5))["session_id"]

    sid = anyio.run(with_agent, kiln_server, kiln_server["api_key"], owner)
    try:
        async def intruder(agent: Agent):
            for tool, args in [("exec", {"command": "id"}), ("read_file", {"path": "/etc/hostname"}),
                               ("write_file", {"path": "x", "content": "x"}), ("verify", {}),
                               ("fork", {"count": 1}), ("snapshot", {}), ("close_session", {})]:
                body = await agent.refused(tool, session_id=sid, **args)
                assert body["code"] == "not_found", (tool, body)
            assert (await agent.ok("list_sessions"))["sessions"] == []

        anyio.run(with_agent, kiln_server, kiln_server["other_key"], intruder)
    finally:
        async def close(agent: Agent):
            await agent.ok("close_session", session_id=sid)

        anyio.run(with_agent, kiln_server, kiln_server["api_key"], close)


def test_kiln_mcp_over_stdio(kiln_server):
    params = StdioServerParameters(
        command=os.environ["KILN_BIN"],
        args=["mcp", "--url", f"{kiln_server['root']}/api/v1"],
        env={"KILN_API_KEY": kiln_server["api_key"], "RUST_LOG": "warn"},
    )

    async def main():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            agent = Agent(session)
            assert TOOLS <= {t.name for t in (await session.list_tools()).tools}
            sid = (await agent.ok("create_session", image=f"{DEMO}/python:1", ttl_minutes=5))["session_id"]
            try:
                ran = await agent.ok("exec", session_id=sid, command="echo over stdio")
                assert ran["stdout"] == "over stdio\n"
            finally:
                await agent.ok("close_session", session_id=sid)

    anyio.run(main)
