"""Hostile input against a real server process: YAML alias bombs, deep nesting, too many
steps, a never-ending execute, and plugins' outbound calls (issue: one request must never
take the server down, reach out of it, or leave half-written state)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import redis

from tests.helpers import RedisServer, ServerProcess, free_port, wait_until

#: Address-space cap of the server child: a bomb that expands would die under it.
MEMORY_CAP = 1536 * 1024 * 1024
#: A refusal must come at once, not after the expansion the limits exist to prevent.
QUICK = 1.0


def alias_bomb(level: int) -> str:
    """The classic "billion laughs" in YAML: each level aliases the previous one 9 times;
    level 9 is about 470 bytes and expands to 9**10 scalars."""
    lines = ['x-a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, level + 1):
        lines.append(f"x-a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]")
    anchors = "\n".join(f"  {line}" for line in lines)
    return (
        f"metadata:\n{anchors}\nname: bomb\nsteps:\n"
        f"  - name: s\n    plugin: Debug.echo\n    config: {{value: *a{level}}}\n"
    )


def deep_yaml(depth: int) -> str:
    return (
        "name: deep\nsteps:\n  - name: s\n    plugin: Debug.echo\n"
        f"    config: {{value: {'[' * depth}{']' * depth}}}\n"
    )


def deep_value(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


ECHO = "name: echo\nsteps:\n  - name: s\n    plugin: Debug.echo\n    config: {value: 1}\n"


@pytest.fixture
def capped_server(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> ServerProcess:
    return make_server(redis_url=redis_server.url, memory_limit=MEMORY_CAP).start()


@pytest.fixture
def client(capped_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=capped_server.base_url, timeout=30.0) as http:
        yield http


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def queued_jobs(redis_server: RedisServer) -> int:
    client = redis.Redis.from_url(redis_server.url)
    try:
        return sum(1 for _ in client.scan_iter("mimir:job:*"))
    finally:
        client.close()


def test_yaml_alias_bombs_are_refused_on_every_path_quickly_and_leave_nothing(
    capped_server: ServerProcess,
    client: httpx.Client,
    pipelines_dir: Path,
    redis_server: RedisServer,
) -> None:
    before = sorted(p.name for p in pipelines_dir.iterdir())
    for level in (5, 7, 9):
        bomb = alias_bomb(level)
        assert len(bomb) < 700
        calls = {
            "create": lambda b=bomb: client.post("/api/v1/pipelines", json={"yaml": b}),
            "create named": lambda b=bomb: client.post(
                "/api/v1/pipelines", json={"yaml": b, "name": "bomb"}
            ),
            "replace": lambda b=bomb: client.put("/api/v1/pipelines/bomb", json={"yaml": b}),
            "execute": lambda b=bomb: client.post(
                "/api/v1/pipelines/execute", json={"pipeline": b}
            ),
            "enqueue": lambda b=bomb: client.post(
                "/api/v1/queue/pipelines/enqueue", json={"pipeline": b}
            ),
        }
        for what, call in calls.items():
            answer, took = timed(call)
            assert answer.status_code == 422, (level, what, answer.text[:300])
            assert "MIMIR_MAX_YAML_NODES" in answer.json()["error"], (what, answer.text[:300])
            assert took < QUICK, (level, what, took)
        report, took = timed(
            lambda b=bomb: client.post("/api/v1/pipelines/validate", json={"yaml": b})
        )
        assert report.status_code == 200 and report.json()["valid"] is False
        assert "MIMIR_MAX_YAML_NODES" in report.json()["errors"][0]["message"]
        assert took < QUICK
    assert sorted(p.name for p in pipelines_dir.iterdir()) == before
    assert queued_jobs(redis_server) == 0
    assert capped_server.process is not None and capped_server.process.poll() is None


def test_a_bomb_already_on_disk_is_listed_as_invalid_not_expanded(
    capped_server: ServerProcess, client: httpx.Client, pipelines_dir: Path
) -> None:
    (pipelines_dir / "planted.yaml").write_text(alias_bomb(9))
    listing, took = timed(lambda: client.get("/api/v1/pipelines"))
    assert listing.status_code == 200 and took < QUICK
    planted = next(p for p in listing.json()["pipelines"] if p["name"] == "planted")
    assert planted["valid"] is False
    detail, took = timed(lambda: client.get("/api/v1/pipelines/planted"))
    assert detail.status_code == 200 and detail.json()["valid"] is False and took < QUICK
    enqueue, took = timed(
        lambda: client.post("/api/v1/queue/pipelines/enqueue", json={"pipeline_name": "planted"})
    )
    assert enqueue.status_code == 422 and took < QUICK, enqueue.text


def test_recursive_alias_and_too_many_aliases_are_refused(client: httpx.Client) -> None:
    recursive = client.post("/api/v1/pipelines", json={"yaml": "x: &a [*a]\n" + ECHO})
    assert recursive.status_code == 422 and "recursive alias" in recursive.json()["error"]
    many = "x: &a 1\ny: [" + ",".join(["*a"] * 1001) + "]\n" + ECHO
    answer = client.post("/api/v1/pipelines/execute", json={"pipeline": many})
    assert answer.status_code == 422 and "MIMIR_MAX_YAML_ALIASES" in answer.json()["error"]


def test_deep_nesting_is_a_422_before_anything_is_written_or_queued(
    client: httpx.Client, pipelines_dir: Path, redis_server: RedisServer
) -> None:
    before = sorted(p.name for p in pipelines_dir.iterdir())
    deep = deep_yaml(300)
    for call in (
        lambda: client.post("/api/v1/pipelines", json={"yaml": deep, "name": "deep"}),
        lambda: client.put("/api/v1/pipelines/deep", json={"yaml": deep}),
        lambda: client.post("/api/v1/pipelines/execute", json={"pipeline": deep}),
        lambda: client.post("/api/v1/queue/pipelines/enqueue", json={"pipeline": deep}),
    ):
        answer, took = timed(call)
        assert answer.status_code == 422, answer.text[:300]
        assert "MIMIR_MAX_DEPTH" in answer.json()["error"] and took < QUICK
    assert client.get("/api/v1/pipelines/deep").status_code == 404
    # The same depth as a JSON mapping, in the pipeline and in the context.
    inline = {
        "name": "deep",
        "steps": [{"name": "s", "plugin": "Debug.echo", "config": {"v": deep_value(300)}}],
    }
    stored = client.post("/api/v1/pipelines", json={"yaml": ECHO, "name": "echo"})
    assert stored.status_code == 201
    for body in (
        {"pipeline": inline},
        {"pipeline_name": "echo", "context": {"x": deep_value(300)}},
    ):
        for path in ("/api/v1/pipelines/execute", "/api/v1/queue/pipelines/enqueue"):
            answer, took = timed(lambda p=path, b=body: client.post(p, json=b))
            assert answer.status_code == 422, (path, answer.text[:300])
            assert "MIMIR_MAX_DEPTH" in answer.json()["error"] and took < QUICK
    # Deeper than the JSON parser's own recursion: still a 4xx with a message.
    raw = '{"pipeline_name": "echo", "context": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    answer = client.post(
        "/api/v1/queue/pipelines/enqueue",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert 400 <= answer.status_code < 500 and answer.json()["error"], answer.text[:300]
    assert sorted(p.name for p in pipelines_dir.iterdir()) == sorted([*before, "echo.yaml"])
    assert queued_jobs(redis_server) == 0
    # Depth within the limit still works.
    ok = client.post(
        "/api/v1/pipelines/execute",
        json={"pipeline_name": "echo", "context": {"x": deep_value(60)}},
    )
    assert ok.status_code == 200 and ok.json()["success"] is True


def test_steps_per_pipeline_are_limited(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_MAX_STEPS="5").start()
    steps = [{"name": f"s{i}", "plugin": "Debug.echo", "config": {"value": i}} for i in range(6)]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        answer = http.post(
            "/api/v1/pipelines/execute", json={"pipeline": {"name": "long", "steps": steps}}
        )
        assert answer.status_code == 422
        assert "6 steps; a pipeline may have at most 5 (MIMIR_MAX_STEPS)" in answer.json()["error"]
        fits = http.post(
            "/api/v1/pipelines/execute", json={"pipeline": {"name": "ok", "steps": steps[:5]}}
        )
        assert fits.status_code == 200 and fits.json()["success"] is True


SLEEPER = {
    "name": "sleeper",
    "steps": [{"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": 60}}],
}


def test_a_synchronous_execute_is_cut_off_at_its_time_limit(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_EXECUTE_TIMEOUT="1").start()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        answer, took = timed(
            lambda: http.post("/api/v1/pipelines/execute", json={"pipeline": SLEEPER})
        )
    assert answer.status_code == 504, answer.text
    assert "MIMIR_EXECUTE_TIMEOUT" in answer.json()["error"]
    assert 1.0 <= took < 10.0


def test_an_execute_is_cancelled_when_the_client_goes_away(capped_server: ServerProcess) -> None:
    with (
        httpx.Client(base_url=capped_server.base_url, timeout=0.5) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post("/api/v1/pipelines/execute", json={"pipeline": SLEEPER})
    wait_until(
        lambda: "the client disconnected" in capped_server.output(200),
        timeout=10,
        message="the server to cancel the abandoned execute",
    )


# --------------------------------------------------------------------------- outbound calls


class _StandIn(BaseHTTPRequestHandler):
    """Answers JSON, or redirects to ``?to=URL``."""

    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", unquote(self.path.split("=", 1)[1]))
            self.end_headers()
            return
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[ThreadingHTTPServer]:
    _StandIn.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fetch(http: httpx.Client, url: str) -> dict[str, object]:
    pipeline = {
        "name": "fetch",
        "steps": [{"name": "get", "plugin": "Input.api", "config": {"url": url}, "output": "r"}],
    }
    answer = http.post("/api/v1/pipelines/execute", json={"pipeline": pipeline})
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()
    return result


def test_input_api_cannot_reach_the_api_itself_redis_or_metadata(
    capped_server: ServerProcess,
    client: httpx.Client,
    redis_server: RedisServer,
    stand_in: ThreadingHTTPServer,
) -> None:
    own = capped_server.port
    stand_in_url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    for url in (
        f"http://127.0.0.1:{own}/api/v1/pipelines",
        f"http://localhost:{own}/health",
        f"http://[::ffff:127.0.0.1]:{own}/health",
        f"http://127.0.0.1:{redis_server.port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        f"{stand_in_url}/redirect?to=http://127.0.0.1:{own}/health",
        f"{stand_in_url}/redirect?to=https://127.0.0.1:{stand_in.server_address[1]}/x",
    ):
        started = time.monotonic()
        result = fetch(client, url)
        assert result["success"] is False, url
        assert "refused" in str(result["error"]), (url, result["error"])
        assert time.monotonic() - started < QUICK
    # What is not denied still works.
    result = fetch(client, f"{stand_in_url}/data")
    assert result["success"] is True, result["error"]
    assert result["context"]["r"]["json"] == {"ok": True}  # type: ignore[index]


def test_http_allow_and_deny_lists(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    stand_in: ThreadingHTTPServer,
) -> None:
    port = stand_in.server_address[1]
    other = free_port()
    allowed = make_server(redis_url=redis_server.url, MIMIR_HTTP_ALLOW=f"127.0.0.1:{port}").start()
    denied = make_server(redis_url=redis_server.url, MIMIR_HTTP_DENY=f"127.0.0.0/8:{port}").start()
    with httpx.Client(base_url=allowed.base_url, timeout=30) as http:
        assert fetch(http, f"http://127.0.0.1:{port}/data")["success"] is True
        result = fetch(http, f"http://127.0.0.1:{other}/data")
        assert result["success"] is False and "not in MIMIR_HTTP_ALLOW" in str(result["error"])
    hits = len(_StandIn.hits)
    with httpx.Client(base_url=denied.base_url, timeout=30) as http:
        result = fetch(http, f"http://127.0.0.1:{port}/data")
        assert result["success"] is False and "MIMIR_HTTP_DENY" in str(result["error"])
    assert len(_StandIn.hits) == hits  # refused before any connection


# --------------------------------------------------------------------------- command line


def test_cli_validate_and_run_refuse_a_bomb_quickly(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(9))
    for command in ("validate", "run"):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "mimir.core.cli", command, str(bomb)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert "MIMIR_MAX_YAML_NODES" in done.stdout + done.stderr, done.stdout + done.stderr
        assert time.monotonic() - started < 30  # interpreter start-up included


def test_names_with_a_trailing_newline_or_reserved_are_refused(
    client: httpx.Client, pipelines_dir: Path
) -> None:
    before = sorted(p.name for p in pipelines_dir.iterdir())
    for name in ("abc\n", "execute", "Validate"):
        answer = client.post("/api/v1/pipelines", json={"yaml": ECHO, "name": name})
        assert 400 <= answer.status_code < 500, (name, answer.text)
        assert "name" in answer.json()["error"], answer.text
    assert sorted(p.name for p in pipelines_dir.iterdir()) == before
    ontology = client.post(
        "/api/v1/ontologies",
        json={"name": "onto\n", "content": "<urn:a> <urn:b> <urn:c> .", "format": "nt"},
    )
    assert 400 <= ontology.status_code < 500, ontology.text


def test_the_body_size_limit_is_a_setting(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_MAX_BODY_BYTES="1000").start()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        big = http.post("/api/v1/pipelines/validate", json={"yaml": "x" * 2000})
        assert big.status_code == 413 and "MIMIR_MAX_BODY_BYTES" in big.json()["error"]
        small = http.post("/api/v1/pipelines/validate", json={"yaml": ECHO})
        assert small.status_code == 200 and small.json()["valid"] is True
