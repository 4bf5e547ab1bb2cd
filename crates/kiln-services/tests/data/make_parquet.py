"""Writes the Parquet fixtures of `record_formats` tests (run with pyarrow installed):
`swebench-hf.parquet` as Hugging Face publishes SWE-bench (every column a string, test
lists JSON-encoded, snappy), and `swebench-lists.parquet` with real list<string> columns,
a numeric `version` and the 5.x fields `eval_script` and `image` (zstd)."""
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).parent
BASE = {
    "repo": "octo/hello",
    "base_commit": "0123456789abcdef0123456789abcdef01234567",
    "patch": "diff --git a/a.py b/a.py\n",
    "test_patch": "diff --git a/t.py b/t.py\n",
    "problem_statement": "Fix it (ünïcode kept)",
    "hints_text": "",
    "created_at": "2023-01-01T00:00:00Z",
    "environment_setup_commit": "89abcdef0123456789abcdef0123456789abcdef",
}

rows = []
for i in (1, 2):
    row = dict(BASE, instance_id=f"octo__hello-{i}", version="3.0")
    row["FAIL_TO_PASS"] = json.dumps([f"t.py::test_fix_{i}"])
    row["PASS_TO_PASS"] = json.dumps(["t.py::test_old", "t.py::test [a, b]"])
    rows.append(row)
pq.write_table(pa.Table.from_pylist(rows), HERE / "swebench-hf.parquet", compression="snappy")

rows = []
for i in (1, 2):
    row = dict(BASE, instance_id=f"octo__hello-{i}", version=2.2)
    row["FAIL_TO_PASS"] = [f"t.py::test_fix_{i}"]
    row["PASS_TO_PASS"] = [] if i == 2 else ["t.py::test_old"]
    row["eval_script"] = "#!/bin/bash\npytest t.py\n"
    row["image"] = "swebench/sweb.eval.x86_64.octo_1776_hello-1:latest"
    rows.append(row)
schema = pa.schema(
    [(k, pa.string()) for k in BASE]
    + [
        ("instance_id", pa.string()),
        ("version", pa.float64()),
        ("FAIL_TO_PASS", pa.list_(pa.string())),
        ("PASS_TO_PASS", pa.list_(pa.string())),
        ("eval_script", pa.string()),
        ("image", pa.string()),
    ]
)
pq.write_table(pa.Table.from_pylist(rows, schema=schema), HERE / "swebench-lists.parquet", compression="zstd")
