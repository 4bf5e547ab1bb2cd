#!/usr/bin/env python3
"""The SWE-bench harness (swebench 5.0.2) on Kiln's own environment images, for parity.

Subcommands (driven by harness_docker.sh):

  load IMAGES_DIR DATASET.jsonl      every instance's Kiln image -> `docker load` under the
                                     harness's name, plus a conda shim layer
  dataset DATASET.jsonl OUT.json     the records as a 5.x dataset (image, log_parser,
                                     eval_type, eval_script), for run_evaluation
  compare KILN_DIR KILN_REPORT HARNESS_DIR HARNESS_REPORT
                                     every report.json and the run reports' id lists must
                                     be identical; prints a diff and exits 1 otherwise
  timings KILN_DIR HARNESS_DIR KILN_WALL HARNESS_WALL
                                     per-instance wall, pytest time and overhead (the
                                     rest), medians and ratios

swebench 5.x has no environment specs, no `--namespace` and no `--cache_level`: the
dataset row names its image (`image`) and carries its `eval_script`. The rows written
here are what the 4.x harness generated for SWE-bench Lite (make_eval_script_list_py
with the repository's MAP_REPO_VERSION_TO_SPECS entry, which Kiln carries as data in
crates/kiln-envimage/specs/swebench-python.json), so the harness runs exactly the eval
script the published 5.x dataset embeds for these instances.
"""
import datetime as dt
import difflib
import hashlib
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "crates/kiln-envimage/specs/swebench-python.json"
HEREDOC = "EOF_114329324912"
START, END = ">>>>> Start Test Output", ">>>>> End Test Output"
# MAP_REPO_TO_PARSER (swebench 4.x / PARSER_REGISTRY keys in 5.x) for the fixture's repos.
PARSERS = {
    "pytest-dev/pytest": "parse_log_pytest",
    "pallets/flask": "parse_log_pytest",
    "pylint-dev/pylint": "parse_log_pytest_options",
    "mwaskom/seaborn": "parse_log_seaborn",
}
NON_TEST_EXTS = [".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml",
                 ".yaml", ".toml"]
# Bumped whenever what `load` adds to Kiln's images changes (the script reloads them).
PARITY_IMAGE = "2"
# Printed just before and after the test command, outside the markers grading reads: the
# test command's own time in the harness's container (Kiln times its test exec itself).
CLOCK = "date +'kiln-parity-clock %s.%N'"
SHIM = b"""# Kiln parity shim: the harness's eval script runs `source /opt/miniconda3/bin/activate`
# and `conda activate testbed`; Kiln's images activate their environment through PATH.
conda() { :; }
"""


def image_name(instance_id):
    """The harness's instance image name (docker hub namespace `swebench`)."""
    return f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_')}:latest".lower()


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cmd_load(images_dir, dataset):
    """Writes one `docker save`-format archive holding every instance image (layers shared,
    decompressed from Kiln's zstd blobs) and loads it."""
    images_dir = Path(images_dir)
    index = json.loads((images_dir / "images.json").read_text())["images"]
    shim = _tar_bytes([("opt", None, 0o755), ("opt/miniconda3", None, 0o755),
                       ("opt/miniconda3/bin", None, 0o755),
                       ("opt/miniconda3/bin/activate", SHIM, 0o755)])
    shim_id = "sha256:" + hashlib.sha256(shim).hexdigest()
    work = Path(tempfile.mkdtemp(prefix="kiln-harness-load-"))
    try:
        manifest, written = [], set()
        for rec in records(dataset):
            iid = rec["instance_id"]
            ref = f"swebench-fixture/sample/{iid}:1"
            if ref not in index:
                sys.exit(f"{ref} is not in {images_dir}/images.json (kiln images build-swebench)")
            image = index[ref]
            layers = []
            for layer in image["layers"]:
                hexid = layer["diff_id"].split(":", 1)[1]
                if hexid not in written:
                    (work / hexid).mkdir()
                    blob = images_dir / "blobs" / layer["digest"].replace(":", "/")
                    with open(work / hexid / "layer.tar", "wb") as out:
                        subprocess.run(["zstd", "-dcq", str(blob)], stdout=out, check=True)
                    written.add(hexid)
                layers.append(f"{hexid}/layer.tar")
            shim_hex = shim_id.split(":", 1)[1]
            if shim_hex not in written:
                (work / shim_hex).mkdir()
                (work / shim_hex / "layer.tar").write_bytes(shim)
                written.add(shim_hex)
            layers.append(f"{shim_hex}/layer.tar")
            config = json.loads(
                (images_dir / "blobs" / image["config_digest"].replace(":", "/")).read_bytes())
            config["rootfs"]["diff_ids"].append(shim_id)
            # The engine has no network: pip is told so, rather than retrying for seconds
            # and logging "Temporary failure in name resolution", which swebench's run
            # report would take for an infrastructure failure (network_unreachable).
            config["config"]["Env"].append("PIP_NO_INDEX=1")
            config["config"].setdefault("Labels", {})["org.kiln.parity"] = PARITY_IMAGE
            config.setdefault("history", []).append(
                {"created_by": "kiln parity: /opt/miniconda3/bin/activate (no-op conda)"})
            data = json.dumps(config).encode()
            config_name = hashlib.sha256(data).hexdigest() + ".json"
            (work / config_name).write_bytes(data)
            manifest.append({"Config": config_name, "RepoTags": [image_name(iid)],
                             "Layers": layers})
        (work / "manifest.json").write_text(json.dumps(manifest))
        tar = subprocess.Popen(["tar", "-C", str(work), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "load", "-q"], stdin=tar.stdout, check=True)
        tar.stdout.close()
        if tar.wait() != 0:
            sys.exit("tar of the image archive failed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_files(test_patch):
    return re.findall(r"diff --git a/.* b/(.*)", test_patch)


def eval_script(rec, spec):
    """swebench 4.x make_eval_script_list_py + make_test_spec's script framing."""
    files = test_files(rec["test_patch"])
    directives = [f for f in files if not any(f.endswith(e) for e in NON_TEST_EXTS)]
    reset = f"git checkout {rec['base_commit']} {' '.join(files)}"
    lines = ["source /opt/miniconda3/bin/activate", "conda activate testbed", "cd /testbed"]
    lines += spec.get("eval_commands", [])
    lines += ["git config --global --add safe.directory /testbed", "cd /testbed",
              "git status", "git show", f"git -c core.fileMode=false diff {rec['base_commit']}",
              "source /opt/miniconda3/bin/activate", "conda activate testbed"]
    if "install" in spec:
        lines.append(spec["install"])
    lines += [reset, f"git apply -v - <<'{HEREDOC}'\n{rec['test_patch']}\n{HEREDOC}",
              CLOCK, f": '{START}'", " ".join([spec["test_cmd"], *directives]), f": '{END}'",
              CLOCK, reset]
    return "\n".join(["#!/bin/bash", "set -uxo pipefail", *lines]) + "\n"


def cmd_dataset(dataset, out):
    specs = json.loads(SPECS.read_text())["repos"]
    rows = []
    for rec in records(dataset):
        spec = specs[rec["repo"]]["versions"][rec["version"]]
        rows.append({**rec, "image": image_name(rec["instance_id"]),
                     "log_parser": PARSERS[rec["repo"]], "eval_type": "pass_and_fail",
                     "eval_script": eval_script(rec, spec)})
    Path(out).write_text(json.dumps(rows, indent=1))


def _reports(run_dir):
    """{instance_id: report.json entry} of a run's instances."""
    out = {}
    for path in sorted(Path(run_dir).glob("*/report.json")):
        out.update(json.loads(path.read_text()))
    return out


CLASSIFIED = ("infra_failure_ids", "ambiguous_failure_ids", "failure_reasons")


def _explain_classification(hr, kr, harness_dir):
    """swebench 5.x classifies a failed instance over its whole test_output.txt, which
    starts with the eval script's `git status`, `git show` of the base commit (the whole
    tree for the fixture's rewritten history) and the reinstall; Kiln's test_output.txt
    holds the test command's output only. Where the lists differ, the harness's own
    classify_text is run again on what Kiln classifies (the output from the start marker
    on, and run_instance.log): if that gives Kiln's lists, the difference is the preamble,
    said and replaced in `hr`; otherwise it stays and fails the comparison."""
    if not all(k in kr for k in CLASSIFIED) or all(kr[k] == hr.get(k) for k in CLASSIFIED):
        return []
    from swebench.harness.infra_failure import TIER_ENVIRONMENT, classify_text
    redo = {"infra_failure_ids": [], "ambiguous_failure_ids": [], "failure_reasons": {}}
    for iid in sorted(set(hr.get("unresolved_ids", [])) | set(hr.get("error_ids", []))):
        out, log = harness_dir / iid / "test_output.txt", harness_dir / iid / "run_instance.log"
        text = out.read_text(errors="replace") if out.exists() else ""
        text = text[text.find(START):] if START in text else text
        chunks = [c for c in (text, log.read_text(errors="replace") if log.exists() else "") if c]
        found = classify_text("\n".join(chunks))
        if found:
            reason, tier = found
            redo["failure_reasons"][iid] = reason
            key = "infra_failure_ids" if tier == TIER_ENVIRONMENT else "ambiguous_failure_ids"
            redo[key].append(iid)
    if any(sorted(kr[k]) != sorted(redo[k]) for k in CLASSIFIED[:2]) or \
            kr["failure_reasons"] != redo["failure_reasons"]:
        return []
    lines = [f"explained: the harness's {k} {hr.get(k)} come from its eval script's output "
             f"before the tests (git show of the base commit...); on the tests' output and "
             f"run_instance.log its classify_text gives Kiln's {kr[k]}"
             for k in CLASSIFIED if kr[k] != hr.get(k)]
    for k in CLASSIFIED:
        hr[k] = redo[k]
    return lines


def cmd_compare(kiln_dir, kiln_report, harness_dir, harness_report):
    """Every report.json entry whole (resolved, tests_status and the flags) and every id
    list both run reports have must be equal."""
    kiln, harness = _reports(kiln_dir), _reports(harness_dir)
    problems = []
    for iid in sorted(set(kiln) | set(harness)):
        a, b = kiln.get(iid), harness.get(iid)
        if a != b:
            diff = "\n".join(difflib.unified_diff(
                json.dumps(b, indent=1, sort_keys=True).splitlines(),
                json.dumps(a, indent=1, sort_keys=True).splitlines(),
                "harness", "kiln", lineterm=""))
            problems.append(f"{iid}: report.json differs\n{diff}")
    kr, hr = json.loads(Path(kiln_report).read_text()), json.loads(Path(harness_report).read_text())
    explained = _explain_classification(hr, kr, Path(harness_dir))
    lists = sorted(k for k in hr if k.endswith("_ids") and k in kr)
    for key in lists:
        if sorted(kr[key]) != sorted(hr[key]):
            problems.append(f"run report {key}: harness {sorted(hr[key])} kiln {sorted(kr[key])}")
    if "failure_reasons" in kr and kr["failure_reasons"] != hr.get("failure_reasons"):
        problems.append(f"run report failure_reasons: harness {hr.get('failure_reasons')} "
                        f"kiln {kr['failure_reasons']}")
    if problems:
        print("PARITY MISMATCH (kiln eval vs swebench 5.0.2 run_evaluation):", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    for line in explained:
        print(line)
    print(f"parity: {len(kiln)} report.json identical; run report id lists identical "
          f"({', '.join(f'{k}={len(hr[k])}' for k in lists)})")
    # Lists a Kiln build without them cannot match: said, not compared.
    for key in sorted(k for k in hr if k.endswith("_ids") and k not in kr):
        print(f"not compared (Kiln's run report has no {key}): harness {sorted(hr[key])}")


STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - ", re.M)
KILN_TIMING = re.compile(r"^Timing \(s\):.* tests ([\d.]+),.* total ([\d.]+)", re.M)
HARNESS_CLOCK = re.compile(r"^kiln-parity-clock (\d+\.\d+)$", re.M)


def _instance_walls(run_dir, kind):
    """{instance_id: (wall, tests)}. The harness: run_instance.log's first to last
    timestamp (container create to its removal), the test command between the two clock
    lines of test_output.txt. Kiln: the total and the test exec its log ends with."""
    out = {}
    for log in Path(run_dir).glob("*/run_instance.log"):
        text = log.read_text(errors="replace")
        if kind == "harness":
            stamps = [dt.datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f")
                      for m in STAMP.findall(text)]
            output = log.parent / "test_output.txt"
            clock = HARNESS_CLOCK.findall(output.read_text(errors="replace")) \
                if output.exists() else []
            if len(stamps) < 2:
                continue
            tests = float(clock[1]) - float(clock[0]) if len(clock) >= 2 else 0.0
            out[log.parent.name] = ((stamps[-1] - stamps[0]).total_seconds(), tests)
        else:
            m = KILN_TIMING.search(text)
            if m:
                out[log.parent.name] = (float(m.group(2)), float(m.group(1)))
    return out


def cmd_timings(kiln_dir, harness_dir, kiln_wall, harness_wall):
    """Per instance: wall, the test command's time, overhead (wall - tests); medians and
    ratios."""
    kiln, harness = _instance_walls(kiln_dir, "kiln"), _instance_walls(harness_dir, "harness")
    ids = sorted(set(kiln) & set(harness))
    print(f"{'instance':<28} {'kiln wall':>9} {'harness':>8} {'tests k/h':>11} "
          f"{'overhead kiln':>13} {'harness':>8}")
    for iid in ids:
        (kw, kt), (hw, ht) = kiln[iid], harness[iid]
        print(f"{iid:<28} {kw:>9.2f} {hw:>8.2f} {kt:>5.2f}/{ht:<5.2f} {kw - kt:>13.2f} "
              f"{hw - ht:>8.2f}")
    if not ids:
        sys.exit("no instance ran under both tools")
    k_over = statistics.median(kiln[i][0] - kiln[i][1] for i in ids)
    h_over = statistics.median(harness[i][0] - harness[i][1] for i in ids)
    k_wall, h_wall = float(kiln_wall), float(harness_wall)
    print(f"median per-instance overhead (wall - test command): kiln {k_over:.2f} s, "
          f"harness {h_over:.2f} s, ratio {h_over / max(k_over, 1e-9):.1f}x")
    print(f"run wall time ({len(ids)} instances run by both): kiln eval {k_wall:.1f} s, "
          f"harness {h_wall:.1f} s, ratio {h_wall / max(k_wall, 1e-9):.1f}x")


if __name__ == "__main__":
    commands = {"load": cmd_load, "dataset": cmd_dataset, "compare": cmd_compare,
                "timings": cmd_timings}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
