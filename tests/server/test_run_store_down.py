"""A run store that stops answering: every route that needs it is a 503 with a plain
message (no SQL, no host, no traceback), the server itself stays up, and it serves again
once the database is back, without a restart.

A real server on a real PostgreSQL database whose connections are refused for a while
(``ALLOW_CONNECTIONS false`` and its sessions ended), as when the database restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import RedisServer, ServerProcess, wait_until
from tests.pg import create_database, drop_database

MESSAGE = "the run store's database is unavailable"
SCHEDULE = {"name": "s", "pipeline_name": "test_pipeline", "interval": "1h"}
#: One call per route family that reads or writes the store.
CALLS: list[tuple[str, str, dict[str, object] | None]] = [
    ("GET", "/api/v1/runs", None),
    ("GET", "/api/v1/runs/stats", None),
    ("GET", "/api/v1/runs/nope", None),
    ("GET", "/api/v1/schedules", None),
    (
        "POST",
        "/api/v1/schedules",
        {"name": "s", "pipeline_name": "test_pipeline", "interval": "1h"},
    ),
    ("GET", "/api/v1/triggers", None),
    ("GET", "/api/v1/alerts", None),
    ("GET", "/api/v1/alerts/rules", None),
    ("GET", "/api/v1/audit", None),
]


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    url = create_database(postgres_url)
    try:
        yield url
    finally:
        _allow_connections(url, True)
        drop_database(url)


def _allow_connections(database_url: str, allow: bool) -> None:
    url = make_url(database_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(
            f'ALTER DATABASE "{url.database}" WITH ALLOW_CONNECTIONS {str(allow).lower()}'
        )
        if not allow:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (url.database,),
            )


def test_a_database_that_stops_answering_is_a_503_then_serves_again(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, pg_database: str
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=pg_database).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for method, path, body in CALLS:
            answer = client.request(method, path, json=body)
            assert answer.status_code in (200, 201, 404), (path, answer.text)

        _allow_connections(pg_database, False)
        for method, path, body in CALLS:
            answer = client.request(method, path, json=body)
            assert answer.status_code == 503, (method, path, answer.text)
            assert answer.json() == {"error": MESSAGE, "detail": None}, (path, answer.text)
        assert client.get("/health").status_code == 200
        log = server.output(400)
        assert "Traceback" not in log, log[-4000:]
        assert "run store unavailable" in log
        assert "ALLOW_CONNECTIONS" not in log

        _allow_connections(pg_database, True)

        def serving() -> bool:
            return client.get("/api/v1/runs").status_code == 200

        wait_until(serving, timeout=30, interval=0.2, message="the store serving again")
        for method, path, _body in CALLS:
            if method == "GET":
                answer = client.get(path)
                assert answer.status_code in (200, 404), (path, answer.text)
    assert server.process.poll() is None
