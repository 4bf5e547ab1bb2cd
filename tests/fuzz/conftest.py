"""A real `kiln serve` for API fuzzing, started as tests/sdk starts its server. With
KILN_TEST_IMAGES_DIR (CI), sessions are real sandboxes, so the fuzzer's commands, edits,
uploads and verifications reach them; the limits below keep that small. Agent jobs stop
at the image check (a documented 409): a job would clone whatever URL the fuzzer made up,
and tests never reach outside this machine."""
import importlib.util
import os
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "kiln_sdk_conftest", pathlib.Path(__file__).parent.parent / "sdk" / "conftest.py"
)
_sdk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sdk)

SETTINGS = {
    "KILN_SESSIONS__MAX_LIVE_SESSIONS_PER_USER": "2",
    "KILN_SESSIONS__MAX_QUEUED_INTERACTIONS": "5",
    "KILN_SESSIONS__LONG_POLL_SECS": "2",
    "KILN_SESSIONS__MAX_COMMAND_TIMEOUT_SECS": "10",
    "KILN_SESSIONS__DEFAULT_COMMAND_TIMEOUT_SECS": "10",
    "KILN_AGENT_JOBS__AGENTS__SCRIPT__IMAGE": "kiln-fuzz/absent:1",
    "KILN_AGENT_JOBS__GIT_HOST": "http://127.0.0.1:9",
}


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory):
    images = os.environ.get("KILN_TEST_IMAGES_DIR")
    yield from _sdk.start_kiln(tmp_path_factory, images, name="kiln-fuzz", settings=SETTINGS)
