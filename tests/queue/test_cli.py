"""``mimir enqueue`` as a user runs it, against a real redis-server and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import RedisServer, WorkerProcess

PIPELINE = """\
name: greet
steps:
  - name: hello
    plugin: Debug.echo
    config: {value: "hello {{ who }}"}
    output: greeting
"""


def mimir(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "mimir.core.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_enqueue_count_priority_context_and_wait(
    redis_server: RedisServer, tmp_path: Path, data_dir: Path
) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(PIPELINE)
    worker = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir)},
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        done = mimir(
            "enqueue", str(path), "--count", "3", "--priority", "high",
            "--context", '{"who": "queue"}', "--wait", redis_url=redis_server.url,
        )  # fmt: skip
    finally:
        worker.kill()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ids, records = lines[:3], [json.loads(line) for line in lines[3:]]
    assert [r["job_id"] for r in records] == ids
    assert all(r["status"] == "succeeded" and r["priority"] == "high" for r in records)
    assert records[0]["result"]["context"]["greeting"] == "hello queue"
    assert "enqueued 3 job(s) of 'greet' (high)" in done.stderr


def test_enqueue_rejects_bad_input_clearly(redis_server: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(PIPELINE)
    bad_context = mimir("enqueue", str(path), "--context", "[1]", redis_url=redis_server.url)
    assert bad_context.returncode == 2 and "--context must be a JSON object" in bad_context.stderr
    bad_timeout = mimir("enqueue", str(path), "--timeout", "soon", redis_url=redis_server.url)
    assert bad_timeout.returncode == 2 and "invalid duration 'soon'" in bad_timeout.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsteps:\n  - name: a\n    plugin: Nope.nothing\n")
    invalid = mimir("enqueue", str(broken), redis_url=redis_server.url)
    assert invalid.returncode == 1 and "Nope.nothing" in invalid.stderr
    no_redis = mimir("enqueue", str(path), redis_url="redis://127.0.0.1:1/0")
    assert no_redis.returncode == 1 and "Redis is unavailable" in no_redis.stderr
