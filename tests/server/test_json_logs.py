"""``MIMIR_LOG_FORMAT=json`` on a real server and real workers (issue 15).

One JSON object per line with the contract's keys in order; a worker's job lines carry
``job_id``, ``pipeline``, ``step`` and ``worker_id``; the API token never reaches a log
(stderr or ``MIMIR_LOG_DIR`` files), whether it came in the header, a query string, a
refused call or the query string of a plugin's HTTP call; the console's polling is logged
at DEBUG, other calls at INFO; a job's final failure is a WARNING and a dead job an ERROR.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

TOKEN = "s3cret-json-logs-token-7f3a9c"
HEAD = ["time", "level", "logger", "message"]
OPTIONAL = ["job_id", "run_id", "pipeline", "step", "worker_id", "trace_id", "span_id", "exc"]
FAILING = {"name": "failing", "steps": [{"name": "boom", "plugin": "Debug.fail",
                                          "config": {"message": "disk on fire"}}]}  # fmt: skip
SLOW = {"name": "doomed", "steps": [{"name": "nap", "plugin": "Debug.sleep",
                                      "config": {"seconds": 60}}]}  # fmt: skip


@pytest.fixture
def stub() -> Iterator[str]:
    """A local HTTP service for ``Input.api`` (its request is logged inside the step)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data"
    server.shutdown()
    server.server_close()


def _records(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as a JSON object with the contract's keys in order."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)  # anything but JSON fails here
        keys = list(record)
        assert keys[:4] == HEAD, line
        assert all(key in OPTIONAL for key in keys[4:]), line
        assert keys[4:] == [key for key in OPTIONAL if key in record], line  # the order
        assert all(isinstance(record[k], str) and record[k] for k in keys), line  # no nulls
        assert record["time"].endswith("Z") and len(record["time"]) == 24, line
        records.append(record)
    return records


def test_json_lines_carry_the_job_and_never_the_token(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    data_dir: Path,
    tmp_path: Path,
    stub: str,
) -> None:
    log_dir = tmp_path / "logs"
    env = {
        "MIMIR_API_TOKEN": TOKEN,
        "MIMIR_LOG_FORMAT": "json",
        "MIMIR_LOG_LEVEL": "DEBUG",
        "MIMIR_LOG_DIR": str(log_dir),
    }
    server = make_server(redis_url=redis_server.url, **env).start(wait_for_redis=True)
    worker_env = {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir), **env}
    # A worker that dies running a job of no retries: the next delivery makes it dead.
    doomed = WorkerProcess(worker_env, queues="doomed", log_path=tmp_path / "doomed.log").start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    workers: list[WorkerProcess] = [doomed]
    try:
        with httpx.Client(base_url=server.base_url, timeout=30, headers=auth) as client:
            dead_id = client.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline": SLOW, "queue": "doomed", "max_retries": 0},
            ).json()["job_id"]
            wait_until(
                lambda: client.get(f"/api/v1/queue/jobs/{dead_id}").json()["status"] == "running",
                timeout=15,
                message="the doomed job running",
            )
            doomed.kill()
            worker = WorkerProcess(
                worker_env, queues="default,doomed", log_path=tmp_path / "worker.log"
            ).start()
            workers.append(worker)

            fetching = {
                "name": "fetching",
                # A key in the URL's query string (httpx logs whole URLs at INFO).
                "steps": [
                    {
                        "name": "fetch",
                        "plugin": "Input.api",
                        "config": {"url": f"{stub}?key={TOKEN}"},
                    }
                ],
            }
            ok_id = client.post(
                "/api/v1/queue/pipelines/enqueue", json={"pipeline": fetching}
            ).json()["job_id"]
            failed_id = client.post(
                "/api/v1/queue/pipelines/enqueue", json={"pipeline": FAILING, "max_retries": 0}
            ).json()["job_id"]
            for job_id, status in ((ok_id, "succeeded"), (failed_id, "failed")):
                done = client.get(f"/api/v1/queue/jobs/{job_id}/wait?timeout=30s").json()
                assert done["status"] == status, done
            done = client.get(f"/api/v1/queue/jobs/{dead_id}/wait?timeout=30s").json()
            assert done["status"] == "dead", done

            # The console's polling (marked) and an operator's call (not marked).
            assert client.get("/api/v1/queue/status", headers={"X-Mimir-Poll": "1"}).is_success
            assert client.get("/api/v1/workers").is_success
            # The token in a query string (the API reads only the header), and refusals.
            assert client.get(f"/api/v1/queue/status?token={TOKEN}").is_success
            bare = httpx.Client(base_url=server.base_url, timeout=30)
            with bare:
                assert bare.get(f"/api/v1/workers?access_token={TOKEN}").status_code == 401
                wrong = {"Authorization": f"Bearer {TOKEN}-stale"}
                assert bare.get("/api/v1/queue/status", headers=wrong).status_code == 401

        def server_saw(text: str) -> bool:
            return text in server.log_path.read_text(encoding="utf-8")

        wait_until(
            lambda: server_saw("invalid bearer token") and server_saw("is dead"),
            timeout=15,
            message="the refusal and the dead job in the server log",
        )
    finally:
        for process in workers:
            process.stop()

    # No secret anywhere: the server's and workers' stderr and their MIMIR_LOG_DIR files.
    files = [server.log_path, doomed.log_path, worker.log_path, *sorted(log_dir.iterdir())]
    assert len(files) >= 5, files  # the server's file and one per worker
    for path in files:
        assert TOKEN not in path.read_text(encoding="utf-8"), path

    served = _records(server.log_path)
    access = [r for r in served if r["logger"] == "mimir.server.access"]
    polled = [r for r in access if "GET /api/v1/queue/status 200" in r["message"]]
    assert [r["level"] for r in polled] == ["DEBUG", "INFO"], polled  # marked, then not
    assert any(r["level"] == "INFO" and "GET /api/v1/workers 200" in r["message"] for r in access)
    [dead] = [r for r in served if "is dead" in r["message"]]
    assert dead["level"] == "ERROR" and dead["job_id"] == dead_id, dead
    assert dead["pipeline"] == "doomed", dead

    lines = _records(worker.log_path)
    # Every line once the worker is up (before: asyncio's selector line at DEBUG).
    ours = [r for r in lines if r["logger"].startswith("mimir.") or "job_id" in r]
    assert ours and all(r.get("worker_id") == worker.worker_id for r in ours), ours[:3]
    [fetched] = [r for r in lines if r["logger"] == "mimir.core.plugins.builtin.inputs"]
    assert fetched["job_id"] == ok_id and fetched["pipeline"] == "fetching", fetched
    assert fetched["step"] == "fetch" and fetched["level"] == "DEBUG", fetched
    [final] = [r for r in lines if "attempt 1 failed (final)" in r["message"]]
    assert final["level"] == "WARNING" and final["job_id"] == failed_id, final
    assert final["pipeline"] == "failing", final
    for path in sorted(log_dir.iterdir()):
        assert _records(path), path  # the files hold the same JSON lines


@pytest.mark.parametrize("module", ["mimir.server", "mimir.worker"])
def test_an_unknown_log_format_stops_at_start(module: str, tmp_path: Path) -> None:
    env = {"MIMIR_LOG_FORMAT": "xml", "REDIS_URL": "redis://127.0.0.1:1/0", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    assert "MIMIR_LOG_FORMAT must be 'text' or 'json', got 'xml'" in done.stderr, done.stderr
