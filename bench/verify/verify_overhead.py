"""Verification overhead: a job's wall time as the SDK sees it, minus the test command's
own time (`execution_duration_seconds`), on every demo sample with its gold patch applied.
Prints per-sample medians and the overall median and p99."""
import base64
import statistics
import sys
import time

import codeset

base_url, key, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = codeset.Codeset(api_key=key, base_url=base_url, max_retries=0)
samples = client.samples.list(dataset="kiln-demo").samples
overheads, rows = [], []
for sample in samples:
    session = client.sessions.create(dataset="kiln-demo", sample_id=sample.sample_id)
    sid = session.session_id
    try:
        client.post(f"/sessions/{sid}/upload", cast_to=object,
                    body={"file_path": "/tmp/gold.patch", "content_base64": base64.b64encode(sample.patch.encode()).decode()})
        assert client.sessions.execute_command(sid, command="git apply /tmp/gold.patch").exit_code == 0
        mine = []
        for _ in range(rounds):
            started = time.perf_counter()
            job = client.sessions.verify.start(sid)
            wall = time.perf_counter() - started
            assert job.status == "completed" and job.result.is_success, sample.sample_id
            mine.append((wall - job.result.execution_duration_seconds) * 1000)
        overheads += mine
        rows.append((sample.sample_id, statistics.median(mine), job.result.execution_duration_seconds * 1000))
    finally:
        client.sessions.close(sid)

print(f"{'sample':<32} {'overhead p50 ms':>16} {'tests ms':>10}")
for name, overhead, tests in rows:
    print(f"{name:<32} {overhead:>16.1f} {tests:>10.1f}")
overheads.sort()
p99 = overheads[min(len(overheads) - 1, int(round(0.99 * (len(overheads) - 1))))]
print(f"all samples: n={len(overheads)} overhead p50={statistics.median(overheads):.1f} ms p99={p99:.1f} ms (target p50 <= 50 ms)")
