"""schemathesis against a real `kiln serve`: every response of every operation must be
documented in `/api/v1/openapi.json` (status, content type, headers, body schema), and
nothing may be a 5xx (schemathesis.toml lists the few documented 503s of features the
fuzz server has not configured). The CLI lives in its own virtualenv, named by
KILN_SCHEMATHESIS (scripts/test.sh installs tests/fuzz/requirements.txt there).

Bounded for CI: KILN_FUZZ_MAX_EXAMPLES cases per operation and phase (default 60; about a minute).
The seed is random and printed; KILN_FUZZ_SEED replays a run."""
import os
import pathlib
import random
import subprocess

import httpx
import pytest

HERE = pathlib.Path(__file__).parent
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
])
# Revoking keys would revoke the fuzzer's own; it gets its own run, with its own key, last.
REVOKE = "DELETE /users/me/api-keys"


def _schemathesis() -> str:
    path = os.environ.get("KILN_SCHEMATHESIS")
    if not path or not pathlib.Path(path).is_file():
        pytest.fail("set KILN_SCHEMATHESIS to the schemathesis CLI "
                    "(scripts/test.sh installs tests/fuzz/requirements.txt in its own venv)")
    return path


def _mint_key(server, name: str) -> str:
    response = httpx.post(f"{server['base_url']}/users/me/api-keys", json={"name": name},
                          headers={"Authorization": f"Bearer {server['api_key']}"}, timeout=10)
    response.raise_for_status()
    return response.json()["api_key"]["key"]


def _key_works(server, key: str) -> bool:
    response = httpx.get(f"{server['base_url']}/users/me",
                         headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return response.status_code == 200


@pytest.fixture(scope="module")
def keys(fuzz_server):
    # All minted first: the fuzzer creates keys too, up to the per-user limit.
    return {name: _mint_key(fuzz_server, f"fuzz-{name}") for name in ("all", "revoke", "v1")}


INTERPRETER_BUG = "AST constructor recursion depth mismatch"


def _fuzz(server, key, tmp_path, name: str, *selection: str, revokes_its_key=False,
          document=None, config=HERE / "schemathesis.toml"):
    seed = os.environ.get("KILN_FUZZ_SEED") or str(random.randrange(1 << 32))
    examples = os.environ.get("KILN_FUZZ_MAX_EXAMPLES", "60")
    assert _key_works(server, key)
    env = {**os.environ, "KILN_FUZZ_API_KEY": key}
    command = [
        _schemathesis(), "--no-color", "--config-file", str(config),
        "run", document or f"{server['base_url']}/openapi.json",
        "--checks", CHECKS, "--max-examples", examples, "--seed", seed,
        "--workers", "2", "--request-timeout", "30", "--continue-on-failure",
        "--report", "junit", "--report-junit-path", str(tmp_path / f"{name}.xml"),
        *selection,
    ]
    # cwd: schemathesis keeps replay files in the working directory.
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if INTERPRETER_BUG in run.stdout + run.stderr:
        # CPython's AST recursion-depth check can misfire when threads compile code at
        # once, crashing the fuzzer itself (not a finding about Kiln). Same seed, once
        # more, with one worker.
        one_worker = [("1" if part == "2" and command[i - 1] == "--workers" else part)
                      for i, part in enumerate(command)]
        run = subprocess.run(one_worker, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
    summary = run.stdout[-20000:]
    assert run.returncode == 0, (
        f"schemathesis ({name}, seed {seed}; replay with KILN_FUZZ_SEED={seed}) found "
        f"responses that break the OpenAPI document:\n{summary}\n{run.stderr[-4000:]}"
    )
    assert " passed" in summary, summary
    # A key refused part-way would have turned the rest of the run into documented 401s.
    assert revokes_its_key or _key_works(server, key), "the fuzzer's key stopped working"


def test_every_response_matches_the_openapi_document(fuzz_server, keys, tmp_path):
    _fuzz(fuzz_server, keys["all"], tmp_path, "all", "--exclude-name", REVOKE)


def test_key_revocation_matches_the_openapi_document(fuzz_server, keys, tmp_path):
    _fuzz(fuzz_server, keys["revoke"], tmp_path, "revoke", "--include-name", REVOKE,
          revokes_its_key=True)


def _instance_config(root: str, key: str, tmp_path) -> tuple[pathlib.Path, str | None]:
    """The fuzz configuration with most `{id}`s naming a live instance of the fuzzer's
    (made here, from a demo sample when the images are there, else from nothing that
    runs): exec, files, snapshots, forks and ports then reach a real sandbox instead of
    answering 404."""
    auth = {"Authorization": f"Bearer {key}"}
    # The earlier runs' sessions (the fuzz server allows two live ones per user) go first.
    live = httpx.get(f"{root}/v1/instances", params={"status": ["creating", "ready"], "limit": 100},
                     headers=auth, timeout=30)
    assert live.status_code == 200, live.text
    for left in live.json()["instances"]:
        gone = httpx.delete(f"{root}/v1/instances/{left['id']}", headers=auth, timeout=60)
        assert gone.status_code in (200, 204, 409), gone.text
    created = httpx.post(f"{root}/v1/instances",
                         json={"dataset": "kiln-demo", "sample_id": "kiln-demo__inifile-1"},
                         headers=auth, timeout=60)
    assert created.status_code in (201, 202, 409, 503), created.text
    config = (HERE / "schemathesis.toml").read_text()
    instance = None
    if created.status_code in (201, 202):
        instance = created.json()["id"]
        config = config.replace(
            "[parameters]\n",
            f'[dictionaries.instance]\nvalues = ["{instance}"]\n\n[parameters]\n'
            '"path.id" = { dictionary = "instance", probability = 0.8 }\n',
            1,
        )
        # Deleting it (or a one-minute TTL) would turn every later operation into a 409,
        # and a new default org (the fuzzer's key acts in its user's default) would hide
        # it: those get names of their own (so they are fuzzed as before).
        config += ('\n[[operations]]\n'
                   'include-operation-id = ["delete_instance", "update_instance"]\n'
                   'parameters = { "path.id" = "ins_fuzz_absent" }\n'
                   '\n[[operations]]\ninclude-operation-id = ["set_default_org"]\n'
                   'parameters = { "path.org" = "fuzz-absent-org" }\n')
        assert instance in config
    path = tmp_path / "schemathesis-v1.toml"
    path.write_text(config)
    return path, instance


def test_the_instance_api_matches_its_openapi_document(fuzz_server, keys, tmp_path):
    # `/v1` has its own document (`/v1/openapi.json`), beside `/api/v1`'s.
    root = fuzz_server["base_url"].removesuffix("/api/v1")
    config, instance = _instance_config(root, keys["v1"], tmp_path)
    _fuzz(fuzz_server, keys["v1"], tmp_path, "v1", document=f"{root}/v1/openapi.json",
          config=config)
    if instance:
        # The fuzzer reached the sandbox: it took snapshots of it. (Its plain execs mostly
        # fail validation, `command` xor `argv` and friends, so they are not counted on.)
        auth = {"Authorization": f"Bearer {keys['v1']}"}
        snapshots = httpx.get(f"{root}/v1/instances/{instance}/snapshots", headers=auth,
                              timeout=10)
        assert snapshots.status_code == 200, snapshots.text
        assert snapshots.json()["snapshots"], "no snapshot of the fuzzer's instance"
