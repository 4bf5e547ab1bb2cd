"""A real `kiln serve` for API fuzzing, started as tests/sdk starts its server, but with
no environment images: session and agent-job creation are fuzzed up to the image check
(a documented 409) and never start a sandbox."""
import importlib.util
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "kiln_sdk_conftest", pathlib.Path(__file__).parent.parent / "sdk" / "conftest.py"
)
_sdk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sdk)


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory):
    yield from _sdk.start_kiln(tmp_path_factory, None, name="kiln-fuzz")
