"""Converts the public markdown renderings of SWE-bench Lite records back to JSON lines."""
import json, re, sys, pathlib

def section(text, title, nxt):
    m = re.search(r"\n## " + re.escape(title) + r"\n\n(.*?)\n## " + re.escape(nxt) + r"\n", text, re.S)
    return m.group(1) if m else ""

def diff_block(body):
    m = re.search(r"```diff\n(.*?)\n```", body, re.S)
    d = m.group(1).strip("\n")
    return d + "\n"

def convert(text):
    head = lambda k: re.search(r"\*\*" + k + r"\*\*: (.*)", text).group(1).strip()
    iid = re.match(r"# (\S+)", text).group(1)
    has_hints = "\n## Hints\n" in text
    problem = section(text, "Problem Statement", "Hints" if has_hints else "Patch")
    hints = section(text, "Hints", "Patch") if has_hints else ""
    patch = diff_block(section(text, "Patch", "Test Patch"))
    test_patch = diff_block(section(text, "Test Patch", "Test Information"))
    f2p = json.loads(re.search(r"FAIL\u2192PASS\*\*: (\[.*\])", text).group(1))
    p2p = json.loads(re.search(r"PASS\u2192PASS\*\*: (\[.*\])", text).group(1))
    return {
        "repo": head("Repository"), "instance_id": iid, "base_commit": head("Base Commit"),
        "patch": patch, "test_patch": test_patch, "problem_statement": problem,
        "hints_text": hints.rstrip("\n"), "created_at": head("Created"), "version": head("Version"),
        "FAIL_TO_PASS": json.dumps(f2p), "PASS_TO_PASS": json.dumps(p2p),
        "environment_setup_commit": head("Environment Setup Commit"),
    }

for p in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonstr")):
    print(json.dumps(convert(json.loads(p.read_text()))))
