"""Bearer-token enforcement and the refusal to listen openly without a token."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.helpers import RedisServer, ServerProcess, wait_until

TOKEN = "s3cret-token-value"


def test_token_is_required_everywhere_but_health(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(
        redis_url=redis_server.url, MIMIR_API_TOKEN=TOKEN, MIMIR_LOG_LEVEL="DEBUG"
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            refused = client.get("/api/v1/plugins", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"].startswith("unauthorized")
            assert refused.headers["www-authenticate"].startswith("Bearer")
        docs = client.get("/openapi.json")
        assert docs.status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/plugins", headers=good).status_code == 200
        run = client.post(
            "/api/v1/pipelines/execute",
            json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}},
            headers=good,
        )
        assert run.status_code == 200 and run.json()["success"] is True
    # The access line is written once the answer is sent: wait for it.
    log = wait_until(
        lambda: (lambda text: "POST /api/v1/pipelines/execute 200" in text and text)(
            server.output(lines=1000)
        ),
        message="the execute call's access log line",
    )
    assert "GET /api/v1/plugins 401" in log
    assert TOKEN not in log


def test_refuses_to_listen_beyond_loopback_without_a_token(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(args=[])
    server.host = "0.0.0.0"
    server.launch()
    assert server.wait(timeout=30) == 2
    output = server.output()
    assert "refusing to listen on 0.0.0.0 without MIMIR_API_TOKEN" in output
    assert "--insecure" in output
