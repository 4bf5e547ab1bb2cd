"""Parity of Kiln's verifier (`kiln-grade`) with the reference harnesses.

For every fixture under crates/kiln-verify/tests/fixtures/ the reference parses and
grades the log, Kiln does the same, and the results must be identical:
- swebench==5.0.2: the parser's status map over the raw log (values and key order), the
  status map and validity of `get_logs_eval`, `get_eval_tests_report`,
  `get_resolution_status` and the `get_eval_report` entry;
- codeset_gym==0.2.1 (junitparser==3.2.0): `check_test_results` on JUnit XML fixtures.

Cases graded with Kiln's 4.x rules, or with an exit code the runtime observed instead of
the one recorded in the log (a Kiln-only hardening), are skipped here.
Run: KILN_GRADE_BIN=/path/to/kiln-grade pytest tests/parity
"""

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

SWEBENCH_VERSION = "5.0.2"
CODESET_GYM_VERSION = "0.2.1"

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "kiln-verify" / "tests" / "fixtures"

# Kiln parser name -> swebench PARSER_REGISTRY key (junit has no swebench parser).
SWEBENCH_PARSER = {
    "pytest": "parse_log_pytest",
    "pytest_options": "parse_log_pytest_options",
    "pytest_v2": "parse_log_pytest_v2",
    "matplotlib": "parse_log_matplotlib",
    "seaborn": "parse_log_seaborn",
    "django": "parse_log_django",
    "unittest": "parse_log_django",
    "sympy": "parse_log_sympy",
    "cargo": "parse_log_cargo",
    "go": "parse_log_gotest",
    "jest": "parse_log_jest",
    "vitest": "parse_log_vitest",
    "mocha": "parse_log_highlightjs",
    "tap": "parse_log_tap",
}


def _load_swebench():
    """Import swebench's grading without swebench/harness/__init__.py.

    That __init__ eagerly imports docker_utils, reporting and modal_eval (docker, modal,
    datasets, ...), none of which grading or the log parsers use. Registering the
    package object ourselves runs the real, unmodified grading modules.
    """
    spec = importlib.util.find_spec("swebench")
    if spec is None:
        pytest.skip("swebench is not installed (see tests/parity/README.md)")
    import swebench

    assert swebench.__version__ == SWEBENCH_VERSION, swebench.__version__
    harness_dir = Path(spec.origin).parent / "harness"
    if "swebench.harness" not in sys.modules:
        harness = types.ModuleType("swebench.harness")
        harness.__path__ = [str(harness_dir)]
        sys.modules["swebench.harness"] = harness
    return importlib.import_module("swebench.harness.grading")


def _load_codeset_check():
    """codeset_gym's `check_test_results`, without importing docker and datasets.

    codeset_gym/main.py imports both at module level; only two pure functions are
    needed, so they are compiled from the installed file's own source.
    """
    junitparser = pytest.importorskip("junitparser")
    assert junitparser.version == "3.2.0", junitparser.version
    spec = importlib.util.find_spec("codeset_gym")
    if spec is None:
        pytest.skip("codeset-gym is not installed (see tests/parity/README.md)")
    source = (Path(spec.origin).parent / "main.py").read_text()
    wanted = {"compute_test_name", "check_test_results"}
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"junitparser": junitparser, "json": json, "Dict": dict, "Any": object}
    exec(compile(tree, "codeset_gym/main.py", "exec"), namespace)
    return junitparser, namespace["check_test_results"]


def _kiln(request: dict) -> dict:
    binary = os.environ.get("KILN_GRADE_BIN")
    if not binary:
        pytest.skip("KILN_GRADE_BIN is not set")
    done = subprocess.run(
        [binary], input=json.dumps(request), capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def _cases(suffix: str):
    for path in sorted(FIXTURES.glob(f"*/*{suffix}")):
        cases_path = path.with_name(path.name[: -len(suffix)] + ".cases.json")
        for case in json.loads(cases_path.read_text()):
            yield pytest.param(path, case, id=f"{path.parent.name}/{path.stem}:{case['label']}")


LOG_CASES = list(_cases(".log"))
XML_CASES = list(_cases(".xml"))


def test_fixtures_exist():
    assert len(LOG_CASES) >= 25 and len(XML_CASES) >= 2


@pytest.mark.parametrize("path,case", LOG_CASES)
def test_swebench_parity(path: Path, case: dict):
    if case.get("rules", "swebench5") != "swebench5":
        pytest.skip("graded with swebench 4.x rules")
    if "exit_code" in case:
        pytest.skip("Kiln-only: exit code observed by the runtime, not read from the log")
    grading = _load_swebench()
    from swebench.harness.constants import EvalType
    from swebench.harness.log_parsers import PARSER_REGISTRY
    from swebench.types import TestSpec

    eval_type = case.get("eval_type", "pass_and_fail")
    spec = TestSpec(
        instance_id="instance",
        image="",
        eval_script_list=[],
        repo="",
        version="",
        FAIL_TO_PASS=case["fail_to_pass"],
        PASS_TO_PASS=case["pass_to_pass"],
        log_parser=SWEBENCH_PARSER[case["parser"]],
        eval_type=eval_type,
    )
    raw = path.read_bytes().decode("utf-8")  # exact text, \r kept
    kiln = _kiln(
        {
            "parser": case["parser"],
            "log": raw,
            "fail_to_pass": case["fail_to_pass"],
            "pass_to_pass": case["pass_to_pass"],
            "eval_type": eval_type,
            "rules": "swebench5",
        }
    )

    # 1. The parser alone, over the raw text.
    try:
        reference_parsed = PARSER_REGISTRY[spec.log_parser](raw, spec)
    except Exception as error:  # the reference raises: Kiln must report a parse error
        assert "parse_error" in kiln, (error, kiln.get("parsed"))
    else:
        assert kiln["parsed"] == reference_parsed
        assert kiln["parsed_keys"] == list(reference_parsed)

    # 2. get_logs_eval over the file (universal newlines, markers, validity).
    try:
        status_map, found = grading.get_logs_eval(spec, str(path))
    except Exception:
        assert not kiln["grade"]["log"]["valid"]
        assert kiln["grade"]["log"]["invalid"]["kind"] == "parser_failed"
        return
    log = kiln["grade"]["log"]
    assert log["valid"] == found
    assert log["status_map"] == status_map
    assert kiln["status_map_keys"] == list(status_map)

    # 3. Grading.
    reference_report = grading.get_eval_tests_report(
        status_map,
        {"FAIL_TO_PASS": spec.FAIL_TO_PASS, "PASS_TO_PASS": spec.PASS_TO_PASS},
        eval_type=EvalType(eval_type),
    )
    assert kiln["grade"]["tests_status"] == reference_report
    assert kiln["grade"]["resolution"] == grading.get_resolution_status(reference_report)
    assert kiln["grade"]["fail_to_pass_score"] == grading.compute_fail_to_pass(reference_report)
    assert kiln["grade"]["pass_to_pass_score"] == grading.compute_pass_to_pass(reference_report)

    # 4. The report.json entry.
    reference_entry = grading.get_eval_report(
        spec, {"instance_id": "instance", "model_patch": "diff"}, str(path), True
    )["instance"]
    # The advisory classifier of unfound logs (`infra_failure`, `infra_failure_reason`)
    # included: Kiln ports it (`kiln_verify::infra`).
    assert kiln["report"]["instance"] == reference_entry
    assert kiln["grade"]["is_success"] == reference_entry["resolved"]


@pytest.mark.parametrize("path,case", XML_CASES)
def test_codeset_gym_parity(path: Path, case: dict):
    junitparser, check_test_results = _load_codeset_check()
    sample = {
        "FAIL_TO_PASS": json.dumps(case["fail_to_pass"]),
        "PASS_TO_PASS": json.dumps(case["pass_to_pass"]),
        "FAIL_TO_FAIL": json.dumps(case["fail_to_fail"]),
    }
    reference = check_test_results(sample, junitparser.JUnitXml.fromfile(str(path)))
    kiln = _kiln(
        {
            "mode": "codeset",
            "xml": path.read_text(),
            "fail_to_pass": case["fail_to_pass"],
            "pass_to_pass": case["pass_to_pass"],
            "fail_to_fail": case["fail_to_fail"],
        }
    )["codeset"]
    for key in ("correct", "expected_passes_correct", "expected_failures_correct"):
        assert kiln[key] == reference[key], key
    for key in ("expected_passes", "expected_failures", "actual_passes", "actual_failures", "actual_skipped"):
        assert sorted(kiln[key]) == sorted(reference[key]), key
