#!/usr/bin/env python3
"""Builds the kiln-demo dataset from the task sources under tasks/.

For every tasks/<instance_id>/ this script
  1. replays the task's history (task.json "history") from repo/ into a fresh
     git repository with fixed authors and dates, so commit hashes are the
     same on every machine, and writes repos/<name>.bundle;
  2. turns the fix/ overlay (non-test files) into the gold `patch` and the
     tests/ overlay (test files) into the `test_patch`;
  3. clones the bundle, applies test_patch, runs the task's test command and
     parses the log, then applies the gold patch and runs it again. The
     FAIL_TO_PASS list declared in task.json must be exactly the tests that
     fail before and pass after; PASS_TO_PASS is every test passing in both
     runs. Any test that fails with both patches applied is an error;
  4. writes samples.jsonl (one SWE-bench-style record per task).

Usage:
  build.py            rebuild bundles and samples.jsonl, verifying every task
  build.py --check    rebuild in a temporary directory and fail if the
                      committed bundles or samples.jsonl differ
  build.py --only NAME[,NAME]   limit to some tasks (by name or instance id);
                      samples.jsonl is then neither written nor checked

Only the Python standard library is used. Needs git, and the toolchains the
tasks use (python3 + pytest, node >= 18, cargo).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TASKS_DIR = ROOT / "tasks"
REPOS_DIR = ROOT / "repos"
SAMPLES = ROOT / "samples.jsonl"

DATASET = "kiln-demo"
VERSION = "1.0"
TEST_TIMEOUT_SECONDS = 600
MIN_PASS_TO_PASS = 3

LANGUAGES = {
    "python": {"image": "kiln-demo/python:1", "parsers": {"pytest", "unittest"}},
    "rust": {"image": "kiln-demo/rust:1", "parsers": {"cargo"}},
    "javascript": {"image": "kiln-demo/node:1", "parsers": {"tap"}},
}

# Files a local run may leave in the source trees; never part of a repository.
SKIP_NAMES = {"__pycache__", ".pytest_cache", "target", "node_modules", ".git"}
SKIP_SUFFIXES = (".pyc",)

RECORD_KEYS = (
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "hints_text",
    "created_at",
    "version",
    "environment_setup_commit",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "language",
    "image",
    "test_cmd",
    "log_parser",
    "test_files",
    "description",
)

PASSED, FAILED, SKIPPED, ERROR = "PASSED", "FAILED", "SKIPPED", "ERROR"


class BuildError(Exception):
    pass


# --------------------------------------------------------------------------
# Log parsers: test name -> status. A later line for the same name wins.


def parse_pytest(log):
    statuses = {}
    for line in log.splitlines():
        for status in (PASSED, FAILED, SKIPPED, ERROR, "XFAIL"):
            if line.startswith(status + " "):
                if line.startswith(FAILED):
                    line = line.replace(" - ", " ")
                parts = line.split()
                if len(parts) > 1:
                    statuses[parts[1]] = status
                break
    return statuses


_UNITTEST_RE = re.compile(
    r"^(?P<name>.+?) \.\.\. (?P<status>ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$"
)


def parse_unittest(log):
    mapping = {"ok": PASSED, "FAIL": FAILED, "ERROR": ERROR, "expected failure": "XFAIL"}
    statuses = {}
    for line in log.splitlines():
        m = _UNITTEST_RE.match(line)
        if not m:
            continue
        status = m.group("status")
        if status.startswith("skipped"):
            statuses[m.group("name")] = SKIPPED
        elif status in mapping:
            statuses[m.group("name")] = mapping[status]
    return statuses


_CARGO_RE = re.compile(r"^test (?P<name>\S+) \.\.\. (?P<status>ok|FAILED|ignored)\s*$")


def parse_cargo(log):
    mapping = {"ok": PASSED, "FAILED": FAILED, "ignored": SKIPPED}
    statuses = {}
    for line in log.splitlines():
        m = _CARGO_RE.match(line)
        if m:
            statuses[m.group("name")] = mapping[m.group("status")]
    return statuses


# SWE-bench's parse_log_tap, exactly: the name is everything after the test number,
# so node's "ok 1 - title" gives "- title" (and a "# SKIP" directive stays in the name).
_TAP_RE = re.compile(r"^(ok|not ok) (\d+) (.+)$")


def parse_tap(log):
    statuses = {}
    for line in log.split("\n"):
        m = _TAP_RE.match(line.strip())
        if m:
            statuses[m.group(3)] = PASSED if m.group(1) == "ok" else FAILED
    return statuses


PARSERS = {
    "pytest": parse_pytest,
    "unittest": parse_unittest,
    "cargo": parse_cargo,
    "tap": parse_tap,
}


# --------------------------------------------------------------------------
# git plumbing with a fixed, machine-independent environment.


def git_env(home, author=None, date=None):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }
    if author:
        for role in ("AUTHOR", "COMMITTER"):
            env[f"GIT_{role}_NAME"] = author["name"]
            env[f"GIT_{role}_EMAIL"] = author["email"]
            if date:
                env[f"GIT_{role}_DATE"] = date
    return env


def git(args, cwd, env, check=True, input_bytes=None):
    proc = subprocess.run(
        ["git", "-c", "core.autocrlf=false", "-c", "pack.threads=1", *args],
        cwd=cwd,
        env=env,
        input=input_bytes,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if check and proc.returncode != 0:
        raise BuildError(
            f"git {' '.join(args)} failed in {cwd}: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def source_files(root):
    """Relative POSIX paths of every file under root, sorted, cruft skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_NAMES)
        for name in sorted(filenames):
            if name.endswith(SKIP_SUFFIXES):
                continue
            found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def copy_files(src_root, dst_root, paths):
    for rel in paths:
        dst = Path(dst_root, rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(src_root, rel), dst)
        os.chmod(dst, 0o644)


def is_test_path(path):
    parts = path.split("/")
    name = parts[-1]
    return (
        any(p in ("tests", "test") for p in parts[:-1])
        or name.startswith("test_")
        or name.endswith(("_test.py", ".test.js", ".test.mjs", ".test.cjs"))
    )


def diff_paths(patch):
    return sorted(set(re.findall(r"^diff --git a/(\S+) b/", patch, flags=re.M)))


# --------------------------------------------------------------------------
# Tasks.


class Task:
    def __init__(self, path):
        self.dir = path
        self.instance_id = path.name
        self.spec = json.loads((path / "task.json").read_text(encoding="utf-8"))
        self.name = self.spec["name"]
        self.language = self.spec["language"]
        self.parser = self.spec["log_parser"]
        self.validate()

    def validate(self):
        expected_id = f"{DATASET}__{self.name}-1"
        if self.instance_id != expected_id:
            raise BuildError(f"{self.dir}: directory should be named {expected_id}")
        lang = LANGUAGES.get(self.language)
        if lang is None:
            raise BuildError(f"{self.instance_id}: unknown language {self.language!r}")
        if self.parser not in lang["parsers"]:
            raise BuildError(f"{self.instance_id}: parser {self.parser!r} does not fit {self.language}")
        if self.spec["image"] != lang["image"]:
            raise BuildError(f"{self.instance_id}: image should be {lang['image']}")
        if not self.spec["FAIL_TO_PASS"]:
            raise BuildError(f"{self.instance_id}: FAIL_TO_PASS is empty")
        for sub in ("repo", "fix", "tests"):
            if not (self.dir / sub).is_dir():
                raise BuildError(f"{self.instance_id}: missing {sub}/")
        for rel in source_files(self.dir / "fix"):
            if is_test_path(rel):
                raise BuildError(f"{self.instance_id}: fix/{rel} is a test file")
        for rel in source_files(self.dir / "tests"):
            if not is_test_path(rel):
                raise BuildError(f"{self.instance_id}: tests/{rel} is not a test file")

    def problem_statement(self):
        text = (self.dir / "problem.md").read_text(encoding="utf-8")
        first, _, body = text.partition("\n")
        if not first.startswith("# "):
            raise BuildError(f"{self.instance_id}: problem.md must start with '# <title>'")
        return first[2:].strip() + "\n" + body.lstrip("\n").rstrip("\n") + "\n"


def build_repository(task, work, home):
    """Replay the history into work/; return the head commit."""
    env = git_env(home)
    git(["init", "-q", "--template=", "-b", "main", "."], work, env)
    remaining = source_files(task.dir / "repo")
    if ".gitignore" not in remaining:
        raise BuildError(f"{task.instance_id}: repo/.gitignore is missing")
    history = task.spec["history"]
    if not 2 <= len(history) <= 3:
        raise BuildError(f"{task.instance_id}: history must have 2 or 3 commits")
    for index, commit in enumerate(history):
        paths = commit["paths"]
        if paths is None:
            if index != len(history) - 1:
                raise BuildError(f"{task.instance_id}: only the last commit may take the rest")
            paths = list(remaining)
        missing = [p for p in paths if p not in remaining]
        if missing:
            raise BuildError(f"{task.instance_id}: history names unknown or repeated paths {missing}")
        remaining = [p for p in remaining if p not in paths]
        copy_files(task.dir / "repo", work, paths)
        git(["add", "-A", "."], work, env)
        cenv = git_env(home, task.spec["author"], commit["date"])
        git(["commit", "-q", "--no-verify", "-m", commit["message"]], work, cenv)
    if remaining:
        raise BuildError(f"{task.instance_id}: files never committed: {remaining}")
    status = git(["status", "--porcelain", "--ignored"], work, env).stdout.decode()
    if status.strip():
        raise BuildError(f"{task.instance_id}: work tree not clean after replay:\n{status}")
    return git(["rev-parse", "HEAD"], work, env).stdout.decode().strip()


def overlay_diff(task, work, home, overlay):
    env = git_env(home)
    files = source_files(task.dir / overlay)
    if not files:
        raise BuildError(f"{task.instance_id}: {overlay}/ is empty")
    copy_files(task.dir / overlay, work, files)
    git(["add", "-A", "."], work, env)
    diff = git(
        ["diff", "--cached", "--no-color", "--no-ext-diff", "--no-renames", "--abbrev=10", "HEAD"],
        work,
        env,
    ).stdout.decode("utf-8")
    git(["reset", "-q", "--hard", "HEAD"], work, env)
    git(["clean", "-q", "-fdx"], work, env)
    if not diff.strip():
        raise BuildError(f"{task.instance_id}: {overlay}/ does not change anything")
    if not diff.endswith("\n"):
        raise BuildError(f"{task.instance_id}: {overlay} diff lacks a final newline")
    return diff


def write_bundle(work, home, dest):
    env = git_env(home)
    tmp = dest.with_suffix(".bundle.tmp")
    git(["bundle", "create", "-q", str(tmp), "--all"], work, env)
    os.replace(tmp, dest)


def bundle_heads(bundle, home):
    """The refs a bundle carries, or None when it is absent or unreadable."""
    if not bundle.exists():
        return None
    proc = git(["bundle", "list-heads", str(bundle)], bundle.parent, git_env(home), check=False)
    if proc.returncode != 0:
        return None
    return sorted(proc.stdout.decode().split("\n"))


# --------------------------------------------------------------------------
# Verification by running the tests.


def run_tests(task, clone, scratch):
    env = dict(os.environ)
    env.update(
        {
            "TZ": "UTC",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "NO_COLOR": "1",
            "CARGO_TERM_COLOR": "never",
            "CARGO_TARGET_DIR": str(scratch / f"target-{task.name}"),
            "CARGO_NET_OFFLINE": "true",
        }
    )
    for var in ("NODE_OPTIONS", "PYTEST_ADDOPTS", "PYTHONPATH", "RUSTFLAGS"):
        env.pop(var, None)
    try:
        proc = subprocess.run(
            ["bash", "-c", task.spec["test_cmd"]],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=TEST_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{task.instance_id}: tests timed out after {TEST_TIMEOUT_SECONDS}s") from None
    log = proc.stdout.decode("utf-8", errors="replace")
    return proc.returncode, log, PARSERS[task.parser](log)


def apply_patch(task, clone, home, patch, label):
    env = git_env(home)
    proc = git(["apply", "--whitespace=nowarn", "-"], clone, env, check=False, input_bytes=patch.encode())
    if proc.returncode != 0:
        raise BuildError(f"{task.instance_id}: {label} does not apply: {proc.stderr.decode().strip()}")


def verify(task, bundle, base_commit, patch, test_patch, scratch, home):
    clone = scratch / f"verify-{task.name}"
    env = git_env(home)
    git(["clone", "-q", "--no-checkout", str(bundle), str(clone)], scratch, env)
    git(["checkout", "-q", "--detach", base_commit], clone, env)

    apply_patch(task, clone, home, test_patch, "test_patch")
    code_before, log_before, before = run_tests(task, clone, scratch)
    apply_patch(task, clone, home, patch, "patch")
    code_after, log_after, after = run_tests(task, clone, scratch)

    def fail(message):
        logs = f"--- log with test_patch ---\n{log_before}\n--- log with both patches ---\n{log_after}"
        raise BuildError(f"{task.instance_id}: {message}\n{logs}")

    if not after:
        fail("no test results parsed from the run with both patches")
    not_passing = sorted(name for name, status in after.items() if status != PASSED)
    if not_passing or code_after != 0:
        fail(f"with both patches, tests still fail (exit {code_after}): {not_passing}")
    regressed = sorted(n for n, s in before.items() if s == PASSED and after.get(n) != PASSED)
    if regressed:
        fail(f"tests pass before the fix but not after: {regressed}")

    f2p = sorted(n for n in after if before.get(n) != PASSED)
    p2p = sorted(n for n in after if before.get(n) == PASSED)
    declared = sorted(task.spec["FAIL_TO_PASS"])
    if f2p != declared:
        fail(f"derived FAIL_TO_PASS {f2p} differs from the declared {declared}")
    unexpected = [n for n in f2p if before.get(n) not in (FAILED, ERROR)]
    if unexpected:
        fail(f"FAIL_TO_PASS tests that did not run and fail with test_patch alone: {unexpected}")
    if code_before == 0:
        fail("the run with test_patch alone exited 0")
    if len(p2p) < MIN_PASS_TO_PASS:
        fail(f"only {len(p2p)} PASS_TO_PASS tests (need {MIN_PASS_TO_PASS})")
    for name in f2p + p2p:
        if " ... " in name or "#" in name:
            fail(f"test name {name!r} contains ' ... ' or '#'")
    shutil.rmtree(clone, ignore_errors=True)
    return f2p, p2p


# --------------------------------------------------------------------------


def build_task(task, scratch, home, bundle_dir):
    work = scratch / f"repo-{task.name}"
    work.mkdir()
    base_commit = build_repository(task, work, home)
    patch = overlay_diff(task, work, home, "fix")
    test_patch = overlay_diff(task, work, home, "tests")

    patch_files = diff_paths(patch)
    test_files = diff_paths(test_patch)
    if any(is_test_path(p) for p in patch_files):
        raise BuildError(f"{task.instance_id}: patch touches test files {patch_files}")
    if not all(is_test_path(p) for p in test_files):
        raise BuildError(f"{task.instance_id}: test_patch touches non-test files {test_files}")

    bundle = bundle_dir / f"{task.name}.bundle"
    write_bundle(work, home, bundle)
    shutil.rmtree(work, ignore_errors=True)

    started = time.monotonic()
    f2p, p2p = verify(task, bundle, base_commit, patch, test_patch, scratch, home)
    elapsed = time.monotonic() - started

    record = {
        "instance_id": task.instance_id,
        "repo": f"{DATASET}/{task.name}",
        "base_commit": base_commit,
        "patch": patch,
        "test_patch": test_patch,
        "problem_statement": task.problem_statement(),
        "hints_text": task.spec.get("hints_text", ""),
        "created_at": task.spec["created_at"],
        "version": VERSION,
        "environment_setup_commit": base_commit,
        "FAIL_TO_PASS": f2p,
        "PASS_TO_PASS": p2p,
        "language": task.language,
        "image": task.spec["image"],
        "test_cmd": task.spec["test_cmd"],
        "log_parser": task.parser,
        "test_files": test_files,
        "description": task.spec["description"],
    }
    assert tuple(record) == RECORD_KEYS
    return record, bundle, elapsed


def render_samples(records):
    lines = []
    seen_per_language = {}
    for record in sorted(records, key=lambda r: r["instance_id"]):
        record = dict(record)
        # Public SWE-bench dumps store these lists as JSON-encoded strings;
        # every other record of each language does so here, so consumers
        # must accept both forms.
        index = seen_per_language.get(record["language"], 0)
        seen_per_language[record["language"]] = index + 1
        if index % 2 == 0:
            record["FAIL_TO_PASS"] = json.dumps(record["FAIL_TO_PASS"])
            record["PASS_TO_PASS"] = json.dumps(record["PASS_TO_PASS"])
        lines.append(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")))
    return "\n".join(lines) + "\n"


def load_tasks(only):
    tasks = [Task(p) for p in sorted(TASKS_DIR.iterdir()) if p.is_dir()]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise BuildError("two tasks share a name")
    if only:
        wanted = set(only)
        tasks = [t for t in tasks if t.name in wanted or t.instance_id in wanted]
        unknown = wanted - {t.name for t in tasks} - {t.instance_id for t in tasks}
        if unknown:
            raise BuildError(f"unknown tasks: {sorted(unknown)}")
    return tasks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if committed artifacts are stale")
    ap.add_argument("--only", help="comma-separated task names or instance ids")
    args = ap.parse_args()
    only = [s for s in (args.only or "").split(",") if s]

    started = time.monotonic()
    tasks = load_tasks(only)
    problems = []
    records = []
    with tempfile.TemporaryDirectory(prefix="kiln-demo-build-") as tmp:
        scratch = Path(tmp)
        home = scratch / "home"
        home.mkdir()
        bundle_dir = scratch / "bundles"
        bundle_dir.mkdir()
        for task in tasks:
            record, bundle, elapsed = build_task(task, scratch, home, bundle_dir)
            records.append(record)
            committed = REPOS_DIR / bundle.name
            fresh_heads = bundle_heads(bundle, home)
            same = bundle_heads(committed, home) == fresh_heads
            if args.check:
                if not same:
                    problems.append(f"repos/{bundle.name} is missing or stale")
            elif not same:
                # Equal heads mean equal content (hashes cover the whole
                # history), so an existing bundle is kept byte for byte.
                REPOS_DIR.mkdir(exist_ok=True)
                shutil.copyfile(bundle, committed)
            print(
                f"{task.instance_id:32} {task.language:10} F2P={len(record['FAIL_TO_PASS']):<3} "
                f"P2P={len(record['PASS_TO_PASS']):<3} verified in {elapsed:5.1f}s",
                flush=True,
            )

        if not only:
            samples = render_samples(records)
            current = SAMPLES.read_bytes() if SAMPLES.exists() else None
            if args.check:
                if current != samples.encode("utf-8"):
                    problems.append("samples.jsonl is missing or stale")
                expected = {f"{t.name}.bundle" for t in tasks}
                extra = sorted(p.name for p in REPOS_DIR.glob("*.bundle") if p.name not in expected)
                if extra:
                    problems.append(f"bundles without a task: {extra}")
            elif current != samples.encode("utf-8"):
                SAMPLES.write_bytes(samples.encode("utf-8"))

    total = time.monotonic() - started
    if problems:
        for p in problems:
            print(f"STALE: {p}", file=sys.stderr)
        print("run datasets/kiln-demo/build.py to regenerate", file=sys.stderr)
        return 1
    print(f"{len(tasks)} tasks {'checked' if args.check else 'built'} in {total:.1f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
