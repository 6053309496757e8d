"""Alerts end to end: real server(s), worker, redis-server, SMTP server and webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.helpers import RedisServer, ServerProcess, WorkerProcess, free_port, wait_until

FAILING = {"name": "failing", "steps": [{"name": "boom", "plugin": "Debug.fail",
                                          "config": {"message": "disk on fire"}}]}  # fmt: skip
FIXED = {"name": "failing", "steps": [{"name": "ok", "plugin": "Debug.echo", "config": {}}]}
SLOW = {"name": "slow", "steps": [{"name": "nap", "plugin": "Debug.sleep",
                                    "config": {"seconds": 30}}]}  # fmt: skip


class Receiver:
    """A local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bodies: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def events(self, event: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("event") == event]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self, word: str) -> list[str]:
        return [str(m["Subject"]) for m in self.messages if word in str(m["Subject"])]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    yield hook
    hook.stop()


@pytest.fixture
def start_worker(
    redis_server: RedisServer, data_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess(
            {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir), **env},
            log_path=tmp_path / f"worker-{len(workers)}.log",
        ).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=30.0)


def _alerts(
    client: httpx.Client, state: str | None = None, rule_id: str | None = None
) -> list[dict[str, Any]]:
    params = {"state": state} if state else {}
    if rule_id:
        params["rule_id"] = rule_id
    answer = client.get("/api/v1/alerts", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def _quiet_for(seconds: float, *counts: Callable[[], int]) -> None:
    """Evaluator ticks go by (``seconds``) and none of ``counts`` grows: no extra message."""
    before = [count() for count in counts]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert [count() for count in counts] == before
        time.sleep(0.1)


def test_dead_lettered_job_sends_one_webhook_and_one_email_then_one_resolved(
    database_url: str,
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    smtp: tuple[Mailbox, int],
    receiver: Receiver,
) -> None:
    mailbox, smtp_port = smtp
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        MIMIR_SMTP_FROM="alerts@mimir.test",
        MIMIR_DATABASE_URL=database_url,
    ).start()
    start_worker()
    with _client(server) as client:
        rule = client.post(
            "/api/v1/alerts/rules",
            json={
                "name": "failing runs",
                "kind": "run_failed",
                "pipeline": "failing",
                "quiet_seconds": 0,
                "channels": [
                    {"type": "webhook", "url": receiver.url},
                    {"type": "email", "to": ["ops@example.com"]},
                ],
            },
        )
        assert rule.status_code == 201, rule.text
        assert client.get("/api/v1/alerts/rules").json()[0]["id"] == rule.json()["id"]

        started = time.monotonic()
        job_ids = []
        job_ids.append(
            client.post(
                "/api/v1/queue/pipelines/enqueue", json={"pipeline": FAILING, "max_retries": 0}
            ).json()["job_id"]
        )
        wait_until(lambda: receiver.events("firing"), timeout=20, message="firing webhook")
        wait_until(lambda: mailbox.subjects("FIRING"), timeout=20, message="firing e-mail")
        noticed = time.monotonic() - started
        firing = receiver.events("firing")[0]
        assert firing["text"].startswith("[Mimir FIRING] failing runs")
        assert "disk on fire" in firing["text"]
        assert firing["alert"]["details"]["jobs"][0]["job_id"] == job_ids[0]
        mail = mailbox.messages[0]
        assert mail["From"] == "alerts@mimir.test" and mail["To"] == "ops@example.com"
        assert job_ids[0] in mail.get_payload()

        # A second failure while firing: the same incident, no new notification.
        job_ids.append(
            client.post(
                "/api/v1/queue/pipelines/enqueue", json={"pipeline": FAILING, "max_retries": 0}
            ).json()["job_id"]
        )
        wait_until(
            lambda: (
                _alerts(client, "firing") and _alerts(client, "firing")[0]["details"]["count"] == 2
            ),
            timeout=20,
        )
        _quiet_for(2.5, lambda: len(receiver.bodies), lambda: len(mailbox.messages))
        (alert,) = _alerts(client, "firing")
        assert alert["notify"] == "sent"
        assert {(n["channel"], n["ok"]) for n in alert["notifications"]} == {
            ("webhook", True),
            ("email", True),
        }
        acked = client.post(f"/api/v1/alerts/{alert['id']}/ack")
        assert acked.status_code == 200 and acked.json()["acked_by"] == "local"

        # A later run of the same pipeline succeeds (it is in the run store): the incident
        # resolves, and says so once.
        fixed = client.post("/api/v1/queue/pipelines/enqueue", json={"pipeline": FIXED})
        assert fixed.status_code == 202, fixed.text
        wait_until(lambda: receiver.events("resolved"), timeout=20, message="resolved webhook")
        wait_until(lambda: mailbox.subjects("RESOLVED"), timeout=20, message="resolved e-mail")
        _quiet_for(2.5, lambda: len(receiver.bodies), lambda: len(mailbox.messages))
        assert len(receiver.events("firing")) == 1 and len(receiver.events("resolved")) == 1
        assert len(mailbox.subjects("FIRING")) == 1 and len(mailbox.subjects("RESOLVED")) == 1
        (resolved,) = _alerts(client, "resolved")
        assert resolved["resolved_at"] and "succeeded" in resolved["details"]["resolved_by"]
        assert _alerts(client, "firing") == []
    print(f"dead-lettered job noticed and notified in {noticed:.2f} s")


def test_backlog_fires_and_resolves_and_a_down_receiver_is_retried(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    late = Receiver()  # not listening yet: the first attempts fail
    server = make_server(redis_url=redis_server.url).start()
    with _client(server) as client:
        rule = client.post(
            "/api/v1/alerts/rules",
            json={
                "name": "backlog",
                "kind": "backlog",
                "max_length": 2,
                "channels": [{"type": "webhook", "url": late.url}],
            },
        )
        assert rule.status_code == 201, rule.text
        rid = rule.json()["id"]
        aged = client.post(
            "/api/v1/alerts/rules",
            json={"name": "old jobs", "kind": "backlog", "max_age_seconds": 2},
        )
        assert aged.status_code == 201, aged.text
        for _ in range(3):
            answer = client.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "x"}},
            )
            assert answer.status_code == 202
        (alert,) = wait_until(lambda: _alerts(client, "firing", rid), timeout=20)
        assert "3 jobs waiting" in alert["summary"]
        (old,) = wait_until(lambda: _alerts(client, "firing", aged.json()["id"]), timeout=20)
        assert "oldest waiting" in old["summary"] and old["details"]["oldest_waiting_s"] > 2
        assert old["notify"] == "none"
        # The receiver is down: a failed attempt is recorded, then it comes up.
        wait_until(
            lambda: any(not n["ok"] for n in _alerts(client, "firing", rid)[0]["notifications"]),
            timeout=20,
        )
        late.start()
        try:
            wait_until(lambda: late.events("firing"), timeout=30, message="retried delivery")
            attempts = wait_until(
                lambda: [n for n in _alerts(client, None, rid)[0]["notifications"] if n["ok"]],
                timeout=10,
            )
            assert attempts[0]["attempt"] >= 2
            # Jobs drain: the backlog clears, one resolved notification.
            start_worker()
            wait_until(lambda: late.events("resolved"), timeout=30, message="resolved")
            _quiet_for(2.0, lambda: len(late.bodies))
            assert len(late.events("firing")) == 1 and len(late.events("resolved")) == 1
            wait_until(lambda: not _alerts(client, "firing"), timeout=10)
        finally:
            late.stop()


def test_two_servers_send_one_notification(
    database_url: str,
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
) -> None:
    first = make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=database_url).start()
    second = make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=database_url).start()
    with _client(first) as one, _client(second) as two:
        rule = one.post(
            "/api/v1/alerts/rules",
            json={
                "name": "any backlog",
                "kind": "backlog",
                "max_length": 0,
                "channels": [{"type": "webhook", "url": receiver.url}],
            },
        )
        assert rule.status_code == 201, rule.text
        assert two.get(f"/api/v1/alerts/rules/{rule.json()['id']}").status_code == 200
        two.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "x"}},
        )
        wait_until(lambda: receiver.events("firing"), timeout=20)
        _quiet_for(3.0, lambda: len(receiver.bodies))
        # The evaluating server goes away; the other takes over and resolves, once.
        first.stop()
        start_worker()
        wait_until(lambda: receiver.events("resolved"), timeout=30)
        _quiet_for(3.0, lambda: len(receiver.bodies))
        assert len(receiver.events("firing")) == 1 and len(receiver.events("resolved")) == 1
        assert [a["state"] for a in _alerts(two)] == ["resolved"]


def test_a_delivery_left_unfinished_by_a_stopped_leader_is_resumed_by_the_next(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    late = Receiver()  # down while the first leader tries
    servers = [make_server(redis_url=redis_server.url).start() for _ in range(2)]
    with _client(servers[1]) as client:
        rule = client.post(
            "/api/v1/alerts/rules",
            json={
                "name": "backlog",
                "kind": "backlog",
                "max_length": 0,
                "channels": [{"type": "webhook", "url": late.url}],
            },
        )
        assert rule.status_code == 201, rule.text
        client.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "x"}},
        )

        def failed_once() -> bool:
            firing = _alerts(client, "firing")
            return bool(firing) and any(not n["ok"] for n in firing[0]["notifications"])

        wait_until(failed_once, timeout=20)
        leader = next(s for s in servers if "evaluates the alert rules" in s.output(400))
        follower = servers[1 - servers.index(leader)]
        leader.stop()  # stops while waiting to retry
        late.start()
        try:
            with _client(follower) as other:
                wait_until(lambda: late.events("firing"), timeout=30, message="resumed delivery")
                _quiet_for(3.0, lambda: len(late.bodies))
                assert len(late.events("firing")) == 1
                (alert,) = _alerts(other, "firing")
                made = [n["attempt"] for n in alert["notifications"]]
                assert made[-1] == len(made) and alert["notifications"][-1]["ok"]
                assert "resuming the firing notification" in follower.output(400)
        finally:
            late.stop()


def test_a_killed_worker_holding_a_job_is_a_lost_worker(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    worker = start_worker()
    with _client(server) as client:
        assert (
            client.post(
                "/api/v1/alerts/rules",
                json={
                    "name": "workers",
                    "kind": "worker_lost",
                    "channels": [{"type": "webhook", "url": receiver.url}],
                },
            ).status_code
            == 201
        )
        job_id = client.post("/api/v1/queue/pipelines/enqueue", json={"pipeline": SLOW}).json()[
            "job_id"
        ]
        wait_until(
            lambda: client.get(f"/api/v1/queue/jobs/{job_id}").json()["status"] == "running",
            timeout=20,
        )
        wait_until(
            lambda: any(
                job_id in w["current_jobs"] for w in client.get("/api/v1/workers").json()["workers"]
            ),
            timeout=10,
        )
        time.sleep(1.5)  # one evaluator tick (1 s) sees the heartbeat holding the job
        worker.kill()
        (firing,) = wait_until(lambda: receiver.events("firing"), timeout=20)
        assert worker.worker_id in firing["text"]
        assert firing["alert"]["details"]["workers"][worker.worker_id]["jobs"] == [job_id]
        # Another worker takes the job over (after the lease): resolved.
        start_worker()
        wait_until(lambda: receiver.events("resolved"), timeout=30)
        assert len(receiver.events("firing")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "nope"}, "kind"),
        ({"kind": "run_failed"}, "name"),
        ({"name": "x", "kind": "failure_rate", "threshold": 2}, "threshold"),
        ({"name": "x", "kind": "failure_rate"}, "threshold"),
        ({"name": "x", "kind": "failure_rate", "threshold": 0.5, "min_runs": 0}, "min_runs"),
        ({"name": "x", "kind": "backlog"}, "max_length or max_age_seconds"),
        ({"name": "x", "kind": "backlog", "max_length": -1}, "max_length"),
        ({"name": "x", "kind": "run_failed", "cooldown_seconds": -5}, "cooldown_seconds"),
        ({"name": "x", "kind": "run_failed", "bogus": 1}, "bogus"),
        (
            {
                "name": "x",
                "kind": "run_failed",
                "channels": [{"type": "webhook", "url": "ftp://h"}],
            },
            "url",
        ),
        ({"name": "x", "kind": "run_failed", "channels": [{"type": "email", "to": []}]}, "to"),
        (
            {"name": "x", "kind": "run_failed", "channels": [{"type": "email", "to": ["nobody"]}]},
            "to",
        ),
        ({"name": "x", "kind": "run_failed", "channels": [{"type": "pager"}]}, "type"),
    ],
)
def test_bad_rules_are_422_naming_the_field(
    api_client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    answer = api_client.post("/api/v1/alerts/rules", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert api_client.get("/api/v1/alerts/rules").json() == []


def test_rule_crud_and_unknown_ids(api_client: httpx.Client) -> None:
    body = {"name": "rate", "kind": "failure_rate", "threshold": 0.2, "window_seconds": 60}
    created = api_client.post("/api/v1/alerts/rules", json=body)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["spec"]["min_runs"] == 10 and rule["enabled"] is True
    changed = api_client.put(
        f"/api/v1/alerts/rules/{rule['id']}", json={**body, "threshold": 0.5, "enabled": False}
    )
    assert changed.status_code == 200 and changed.json()["spec"]["threshold"] == 0.5
    assert changed.json()["enabled"] is False
    bad = api_client.put(f"/api/v1/alerts/rules/{rule['id']}", json={**body, "threshold": "x"})
    assert bad.status_code == 422 and "threshold" in bad.text
    assert api_client.delete(f"/api/v1/alerts/rules/{rule['id']}").status_code == 204
    for method, path in (
        ("GET", f"/api/v1/alerts/rules/{rule['id']}"),
        ("DELETE", f"/api/v1/alerts/rules/{rule['id']}"),
        ("PUT", f"/api/v1/alerts/rules/{rule['id']}"),
        ("GET", "/api/v1/alerts/nope"),
        ("POST", "/api/v1/alerts/nope/ack"),
    ):
        answer = api_client.request(method, path, json=body if method == "PUT" else None)
        assert answer.status_code == 404, (method, path, answer.text)
    assert api_client.get("/api/v1/alerts", params={"state": "bogus"}).status_code == 422


def test_a_worker_that_stops_cleanly_is_not_lost(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    worker = start_worker(MIMIR_WORKER_GRACE="1")
    with _client(server) as client:
        rule = client.post(
            "/api/v1/alerts/rules",
            json={
                "name": "workers",
                "kind": "worker_lost",
                "channels": [{"type": "webhook", "url": receiver.url}],
            },
        )
        assert rule.status_code == 201
        job_id = client.post("/api/v1/queue/pipelines/enqueue", json={"pipeline": SLOW}).json()[
            "job_id"
        ]
        wait_until(
            lambda: any(
                job_id in w["current_jobs"] for w in client.get("/api/v1/workers").json()["workers"]
            ),
            timeout=20,
        )
        time.sleep(1.5)  # one evaluator tick (1 s) sees the heartbeat holding the job
        assert worker.stop() == 0  # SIGTERM: grace, then the job is handed back
        wait_until(
            lambda: client.get(f"/api/v1/queue/jobs/{job_id}").json()["status"] == "queued",
            timeout=20,
        )
        _quiet_for(3.0, lambda: len(receiver.bodies))
        assert receiver.bodies == [] and _alerts(client) == []


def test_run_failed_resolves_when_its_jobs_leave_the_dead_letter(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    start_worker()
    with _client(server) as client:
        rule = client.post(
            "/api/v1/alerts/rules",
            json={
                "name": "any failure",
                "kind": "run_failed",
                "channels": [{"type": "webhook", "url": receiver.url}],
            },
        )
        assert rule.status_code == 201, rule.text
        job_id = client.post(
            "/api/v1/queue/pipelines/enqueue", json={"pipeline": FAILING, "max_retries": 0}
        ).json()["job_id"]
        (firing,) = wait_until(lambda: receiver.events("firing"), timeout=20)
        assert firing["alert"]["details"]["pipelines"] == {"failing": firing["alert"]["details"][
            "last_failure_ms"]}  # fmt: skip
        assert client.delete(f"/api/v1/queue/dead-letter/{job_id}").status_code == 204
        (resolved,) = wait_until(lambda: receiver.events("resolved"), timeout=20)
        assert "left the dead letter" in resolved["alert"]["details"]["resolved_by"]
        _quiet_for(2.0, lambda: len(receiver.bodies))
        assert len(receiver.bodies) == 2
