"""Webhook triggers over HTTP: bearer and HMAC secrets, replays, rate limits, and the
``mimir schedules`` command against a real server (with an API token)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mimir.core.runstore.schedules import REDACTED_SECRET
from mimir.core.runstore.schedules_cli import main as schedules_main
from tests.helpers import RedisServer, ServerProcess

TOKEN = "api-token-for-tests"


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], redis_server: RedisServer) -> ServerProcess:
    return make_server(redis_url=redis_server.url, MIMIR_API_TOKEN=TOKEN).start()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def _jobs(raw: redis.Redis) -> int:
    return int(raw.zcard("mimir:jobs"))


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_trigger_bearer_hmac_wrong_secret_replay_and_bad_body(
    server: ServerProcess, client: httpx.Client, raw: redis.Redis
) -> None:
    created = client.post(
        "/api/v1/triggers",
        json={"name": "github", "pipeline_file": "test_pipeline.yaml", "context": {"a": 1}},
    )
    assert created.status_code == 201, created.text
    trigger = created.json()
    secret, hook = trigger["secret"], trigger["hook"]
    assert hook == f"/api/v1/hooks/{trigger['id']}"
    # The secret is shown once: never by GET.
    for answer in (client.get("/api/v1/triggers"), client.get(f"/api/v1/triggers/{trigger['id']}")):
        assert answer.status_code == 200
        assert secret not in answer.text and "secret" not in answer.text

    # Hooks take no API token, only the trigger's secret.
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        body = json.dumps({"ref": "main", "n": 1}).encode()
        bearer = anonymous.post(
            hook,
            content=body,
            headers={"Authorization": f"Bearer {secret}", "X-Mimir-Delivery": "d-1"},
        )
        assert bearer.status_code == 202, bearer.text
        job_id = bearer.json()["job_id"]
        payload = json.loads(raw.hget(f"mimir:job:{job_id}", "payload") or "{}")
        assert payload["context"] == {"a": 1, "payload": {"ref": "main", "n": 1}}
        record = anonymous.get(
            f"/api/v1/queue/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert record["pipeline"] == "test-pipeline"
        assert _jobs(raw) == 1

        signed = anonymous.post(
            hook,
            content=body,
            headers={"X-Mimir-Signature": _sign(secret, body), "X-GitHub-Delivery": "d-2"},
        )
        assert signed.status_code == 202, signed.text
        assert _jobs(raw) == 2

        # A replayed delivery: 200 with the first job, nothing enqueued.
        replay = anonymous.post(
            hook,
            content=body,
            headers={"X-Mimir-Signature": _sign(secret, body), "X-Mimir-Delivery": "d-1"},
        )
        assert replay.status_code == 200, replay.text
        assert replay.json()["job_id"] == job_id and replay.json()["replayed"] is True
        assert _jobs(raw) == 2

        wrong = [
            {"Authorization": "Bearer not-the-secret"},
            {"X-Mimir-Signature": _sign("not-the-secret", body)},
            {"X-Mimir-Signature": "sha256=" + "0" * 64},
            {"X-Mimir-Signature": _sign(secret, body + b" ")},  # signed another body
            {"Authorization": f"Bearer {TOKEN}"},  # the API token is not the secret
            {},
        ]
        for headers in wrong:
            answer = anonymous.post(hook, content=body, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert "secret" in answer.json()["error"]
        unknown = anonymous.post(
            "/api/v1/hooks/0123456789abcdef", content=body, headers={"Authorization": "Bearer x"}
        )
        assert unknown.status_code == 401
        assert _jobs(raw) == 2

        not_json = anonymous.post(
            hook, content=b"{not json", headers={"Authorization": f"Bearer {secret}"}
        )
        assert not_json.status_code == 422, not_json.text
        assert not_json.json()["detail"][0]["field"] == "body"
        assert _jobs(raw) == 2

    assert client.delete(f"/api/v1/triggers/{trigger['id']}").status_code == 204
    assert client.get(f"/api/v1/triggers/{trigger['id']}").status_code == 404
    gone = httpx.post(
        f"{server.base_url}{hook}", content=b"{}", headers={"Authorization": f"Bearer {secret}"}
    )
    assert gone.status_code == 401


def test_trigger_rate_limit_is_429_with_retry_after(
    server: ServerProcess, client: httpx.Client, raw: redis.Redis
) -> None:
    trigger = client.post(
        "/api/v1/triggers",
        json={"name": "limited", "pipeline_file": "test_pipeline.yaml", "rate_limit": 3},
    ).json()
    url = f"{server.base_url}{trigger['hook']}"
    headers = {"Authorization": f"Bearer {trigger['secret']}"}
    answers = [httpx.post(url, json={"i": i}, headers=headers) for i in range(5)]
    codes = [answer.status_code for answer in answers]
    # All five inside one minute, unless the minute turned over during the test.
    assert codes[:3] == [202, 202, 202] or codes.count(202) >= 3, codes
    limited = [answer for answer in answers if answer.status_code == 429]
    assert limited, codes
    retry_after = int(limited[0].headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert _jobs(raw) == codes.count(202)
    # Bad trigger input is a 422 naming the field.
    bad = client.post(
        "/api/v1/triggers",
        json={"name": "x", "pipeline_file": "test_pipeline.yaml", "rate_limit": 0},
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "rate_limit"


def test_schedules_cli_against_a_real_server(
    server: ServerProcess, client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    api = ["--api-url", server.base_url, "--token", TOKEN]

    def run(*args: str) -> tuple[int, str, str]:
        code = schedules_main([*api, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run(
        "add", "nightly", "--pipeline-file", "test_pipeline.yaml", "--cron", "30 2 * * *",
        "--timezone", "Europe/Berlin", "--context", '{"x": 1}', "--overlap", "skip",
    )  # fmt: skip
    assert code == 0, err
    schedule_id = out.strip()
    assert "next runs" in err
    code, out, _ = run("list")
    assert code == 0 and "nightly" in out and "active" in out and "Europe/Berlin" in out
    code, _, err = run("pause", "nightly")
    assert code == 0 and "paused" in err
    assert client.get(f"/api/v1/schedules/{schedule_id}").json()["state"] == "paused"
    code, _, err = run("resume", schedule_id)
    assert code == 0 and "active" in err
    code, out, _ = run("run-now", "nightly")
    assert code == 0
    job: dict[str, Any] = client.get(f"/api/v1/queue/jobs/{out.strip()}").json()
    assert job["pipeline"] == "test-pipeline"
    code, out, _ = run("list", "--json")
    assert json.loads(out)[0]["last_job_id"] == job["job_id"]
    code, _, err = run(
        "add", "bad", "--pipeline-file", "test_pipeline.yaml", "--cron", "99 * * * *"
    )
    assert code == 1 and "422" in err and "cron" in err
    code, _, err = run("rm", "nightly")
    assert code == 0 and "deleted" in err
    code, _, err = run("pause", "nightly")
    assert code == 1 and "no schedule" in err
    assert client.get("/api/v1/schedules").json() == []
    # Without the token the API refuses, and the command says so.
    assert schedules_main(["--api-url", server.base_url, "--token", "wrong", "list"]) == 1


def test_a_trigger_restored_without_its_secret_authenticates_nothing_until_rotated(
    server: ServerProcess, client: httpx.Client, raw: redis.Redis
) -> None:
    trigger = client.post(
        "/api/v1/triggers", json={"name": "restored", "pipeline_file": "test_pipeline.yaml"}
    ).json()
    old, hook = trigger["secret"], trigger["hook"]
    # What a restore from a backup taken without secrets leaves in the run store.
    database = Path(server.env["MIMIR_DATA_DIR"]) / "mimir.db"
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE triggers SET secret = ? WHERE id = ?", (REDACTED_SECRET, trigger["id"])
        )
    body = b'{"n": 1}'
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        for headers in (
            {"Authorization": f"Bearer {REDACTED_SECRET}"},
            {"X-Mimir-Signature": _sign(REDACTED_SECRET, body)},
            {"Authorization": f"Bearer {old}"},
        ):
            refused = anonymous.post(hook, content=body, headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
        rotated = client.post(f"/api/v1/triggers/{trigger['id']}/secret")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new not in (old, REDACTED_SECRET) and len(new) >= 32
        accepted = anonymous.post(hook, content=body, headers={"Authorization": f"Bearer {new}"})
        assert accepted.status_code == 202, accepted.text
        listed = client.get(f"/api/v1/triggers/{trigger['id']}")
        assert new not in listed.text  # shown once, by the rotation's answer
    assert client.post("/api/v1/triggers/nope/secret").status_code == 404
