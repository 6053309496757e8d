"""The audit log of a real server: what is recorded, by whom, and what never is."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx

from mimir.core.runstore.audit import AuditLog
from mimir.server.runs.audit import QUEUE_SIZE, AuditWriter, action_name
from tests.helpers import RedisServer, ServerProcess, wait_until

TOKEN = "s3cret-api-token-for-audit-0123456789"
TRIGGER_SECRET = "trigger-secret-never-stored-in-audit-9876"
#: In a job's context: the run store keeps the context (it is the run's input), the audit
#: log never does.
BODY_SECRET = "body-secret-kept-out-of-the-audit-5555"
PIPELINE = "name: audited\nsteps:\n  - name: s\n    plugin: Debug.echo\n    config: {}\n"


def _entries(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/audit", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["entries"])


def test_mutating_calls_are_audited_reads_and_refusals_are_not_and_no_secret_enters(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_API_TOKEN=TOKEN).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.base_url, timeout=30.0, headers=auth) as client:
        created = client.post("/api/v1/pipelines", json={"yaml": PIPELINE, "name": "audited"})
        assert created.status_code == 201, created.text
        assert client.get("/api/v1/pipelines/audited").status_code == 200  # a read
        assert client.get("/api/v1/pipelines").status_code == 200  # a read
        assert client.put("/api/v1/pipelines/audited", json={"yaml": PIPELINE}).status_code == 200
        job = client.post(
            f"/api/v1/queue/pipelines/enqueue?token={TOKEN}",  # a secret in a query string
            json={"pipeline_name": "audited", "context": {"password": BODY_SECRET}},
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        assert client.post(f"/api/v1/queue/jobs/{job_id}/cancel").status_code == 200
        assert client.delete("/api/v1/pipelines/audited").status_code == 204
        assert client.delete("/api/v1/pipelines/audited").status_code == 404  # a failed call
        rule = client.post(
            "/api/v1/alerts/rules",
            json={"name": "r", "kind": "backlog", "max_length": 5},
        )
        assert rule.status_code == 201
        # A refused call never reaches the application: not audited.
        refused = httpx.delete(f"{server.base_url}/api/v1/alerts/rules/{rule.json()['id']}")
        assert refused.status_code == 401
        # A webhook delivery carries the trigger's secret: bearer and HMAC header.
        hook = httpx.post(
            f"{server.base_url}/api/v1/hooks/trig123",
            content=b'{"x": 1}',
            headers={
                "Authorization": f"Bearer {TRIGGER_SECRET}",
                "X-Mimir-Signature": f"sha256={TRIGGER_SECRET}",
                "X-Hub-Signature-256": f"sha256={TRIGGER_SECRET}",
                "X-Request-ID": "hook-request-1",
            },
        )
        # (an unknown trigger: refused by the route itself, so audited with its outcome)
        assert hook.status_code in {401, 404}

        expected = [
            ("hooks.deliver", {"trigger_id": "trig123"}),
            ("alerts.rules.create", {}),
            ("pipelines.delete", {"name": "audited"}),
            ("pipelines.delete", {"name": "audited"}),
            ("queue.jobs.cancel", {"job_id": job_id}),
            ("queue.pipelines.enqueue", {}),
            ("pipelines.update", {"name": "audited"}),
            ("pipelines.create", {}),
        ]
        wait_until(lambda: len(_entries(client)) >= len(expected), timeout=20)
        entries = _entries(client)
        assert [(e["action"], e["target"]) for e in entries] == expected, entries
        assert [e["outcome"] for e in entries] == [
            hook.status_code, 201, 404, 204, 200, 202, 200, 201
        ]  # fmt: skip
        assert entries[0]["actor"] == "trigger:trig123"
        assert entries[0]["request_id"] == "hook-request-1"
        assert {e["actor"] for e in entries[1:]} == {"token"}
        assert all(e["request_id"] for e in entries)
        assert entries[-1]["route"] == "/api/v1/pipelines" and entries[-1]["method"] == "POST"
        assert entries[2]["route"] == "/api/v1/pipelines/{name}"

        # Filters and pages.
        deletes = _entries(client, action="pipelines.delete")
        assert [e["outcome"] for e in deletes] == [404, 204]
        assert _entries(client, actor="local") == []
        page = client.get("/api/v1/audit", params={"limit": 3}).json()
        assert len(page["entries"]) == 3 and page["next_cursor"]
        rest = client.get(
            "/api/v1/audit", params={"limit": 100, "cursor": page["next_cursor"]}
        ).json()
        assert [e["id"] for e in page["entries"] + rest["entries"]] == [e["id"] for e in entries]
        assert rest["next_cursor"] is None
        future = datetime.now(UTC).replace(year=2100).isoformat()
        assert _entries(client, since=future) == []
        assert len(_entries(client, until=future)) == len(expected)
        assert client.get("/api/v1/audit", params={"cursor": "garbage"}).status_code == 422

    # Secrets never enter the audit table: neither the token (in a header and a query
    # string: nowhere in the database file) nor a body's secret nor the trigger's secret
    # (bearer and signature headers).
    server.stop()
    database = data_dir / "mimir.db"
    for path in database.parent.glob("mimir.db*"):
        raw = path.read_bytes()
        assert TOKEN.encode() not in raw, path
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT * FROM audit").fetchall()
    text = repr(rows)
    assert len(rows) == len(expected)
    assert TOKEN not in text and TRIGGER_SECRET not in text
    assert BODY_SECRET not in text and "password" not in text


def test_loopback_without_a_token_is_local(api_client: httpx.Client) -> None:
    assert api_client.post("/api/v1/alerts/rules", json={"name": "x"}).status_code == 422
    (entry,) = wait_until(lambda: _entries(api_client), timeout=20)
    assert entry["actor"] == "local" and entry["outcome"] == 422
    assert entry["action"] == "alerts.rules.create"


def test_a_burst_keeps_the_queue_bounded_and_counts_drops() -> None:
    written: list[int] = []

    class SlowLog:
        def write(self, entries: list[dict[str, Any]]) -> int:
            written.append(len(entries))
            return len(entries)

    async def burst() -> AuditWriter:
        writer = AuditWriter(cast(AuditLog, SlowLog()))
        for i in range(QUEUE_SIZE + 5_000):  # the writer has not run yet: the queue fills
            writer.put({"i": i})
        assert writer.queue.qsize() == QUEUE_SIZE and writer.dropped == 5_000
        task = asyncio.create_task(writer.run())
        # Until every entry is written and counted (an empty queue is not enough: the last
        # batch may still be in the writer's thread, and a cancel then drops its count).
        deadline = time.monotonic() + 30
        while writer.written < QUEUE_SIZE and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return writer

    writer = asyncio.run(burst())
    assert sum(written) == QUEUE_SIZE == writer.written and max(written) <= 500


def test_action_names() -> None:
    cases = {
        ("POST", "/api/v1/pipelines"): "pipelines.create",
        ("PUT", "/api/v1/pipelines/{name}"): "pipelines.update",
        ("DELETE", "/api/v1/pipelines/{name}"): "pipelines.delete",
        ("POST", "/api/v1/pipelines/execute"): "pipelines.execute",
        ("POST", "/api/v1/queue/jobs/{job_id}/cancel"): "queue.jobs.cancel",
        ("POST", "/api/v1/queue/dead-letter/{job_id}/retry"): "queue.dead-letter.retry",
        ("POST", "/api/v1/schedules/{schedule_id}/run-now"): "schedules.run-now",
        ("POST", "/api/v1/twins/{twin_id}/runs"): "twins.runs.create",
        ("POST", "/api/v1/alerts/{alert_id}/ack"): "alerts.ack",
        ("POST", "/api/v1/hooks/{trigger_id}"): "hooks.deliver",
    }
    assert {key: action_name(*key) for key in cases} == cases
