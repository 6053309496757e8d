"""Synchronous execute through a real ``mimir server`` process over HTTP.

``python -m benchmarks.server [--requests N] [--runs R]`` starts the server as a child
process (with a private Redis, so ``/health`` does its real PING), then measures
requests/s at concurrency 1 and 8 (httpx async clients, one keep-alive connection
each) for:

- ``GET /health`` (a Redis PING: the floor of what the stack costs per request);
- ``POST /api/v1/pipelines/execute`` with ``pipeline_file`` naming a one-step no-op
  pipeline (``Debug.echo``), and with the seed's ``test_pipeline.yaml`` (three steps).

Each figure is the median of R interleaved runs. Client and server share this machine's
cores, so the figures are a lower bound on what the server alone sustains; the last
column is the app's own time per request, called in-process through ASGI one after the
other (no HTTP, no client; ``/health`` still waits for its Redis PONG).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
NOOP_PIPELINE = """\
name: noop
steps:
  - name: echo
    plugin: Debug.echo
    config: {value: "{{ input }}"}
    output: echoed
"""
SEED_BODY = {"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}}
NOOP_BODY = {"pipeline_file": "noop.yaml", "context": {"input": "test data"}}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(workdir: Path, redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    pipelines = workdir / "pipelines"
    pipelines.mkdir()
    (pipelines / "noop.yaml").write_text(NOOP_PIPELINE)
    seed = ROOT / "resources" / "pipelines" / "test_pipeline.yaml"
    if seed.exists():
        shutil.copy(seed, pipelines / "test_pipeline.yaml")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_")}
    env.update(
        REDIS_URL=redis_url,
        MIMIR_DATA_DIR=str(workdir / "data"),
        MIMIR_PIPELINES_DIR=str(pipelines),
        MIMIR_STATE_DIR=str(workdir / "state"),
        MIMIR_LOG_LEVEL="WARNING",  # an access-log line per request would dominate
    )
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mimir.server", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n"
                f"{(workdir / 'server.log').read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not answer /health within 60 s")


async def _run(
    base_url: str, method: str, path: str, body: Any, requests: int, concurrency: int
) -> tuple[float, list[float]]:
    """Requests/s and per-request latencies (ms) for ``requests`` calls by ``concurrency``."""
    per_client = max(1, requests // concurrency)
    latencies: list[float] = []

    async def client_loop() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
            await client.request(method, path, json=body)  # connect outside the timing
            await barrier.wait()
            for _ in range(per_client):
                started = time.perf_counter()
                answer = await client.request(method, path, json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200 or (
                    method == "POST" and answer.json().get("success") is not True
                ):
                    raise RuntimeError(f"{method} {path} -> {answer.status_code}: {answer.text}")

    barrier = asyncio.Barrier(concurrency + 1)
    tasks = [asyncio.create_task(client_loop()) for _ in range(concurrency)]
    await barrier.wait()
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    return per_client * concurrency / elapsed, latencies


async def _asgi_cost(
    workdir: Path, redis_url: str, cases: list[tuple[str, str, str, Any]], requests: int
) -> dict[str, float]:
    """Microseconds per request spent in the app itself, by case (median of 5 batches)."""
    from mimir.core.settings import Settings
    from mimir.server.app import create_app

    settings = Settings(
        data_dir=workdir / "data", pipelines_dir=workdir / "pipelines", redis_url=redis_url
    )
    app = create_app(settings)

    async def call(method: str, path: str, data: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
        delivered = False
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # a client that never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"{method} {path} -> {statuses}")

    costs: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        for label, method, path, body in cases:
            data = json.dumps(body).encode() if body is not None else b""
            for _ in range(20):
                await call(method, path, data)
            batches = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(requests):
                    await call(method, path, data)
                batches.append((time.perf_counter() - started) / requests * 1e6)
            costs[label] = statistics.median(batches)
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="requests per run (400)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; median (5)")
    args = parser.parse_args(argv)

    from mimir.core.redis_embedded import EmbeddedRedisError, start_redis

    workdir = Path(tempfile.mkdtemp(prefix="mimir-bench-server-"))
    try:
        try:
            redis = start_redis(workdir / "redis")
        except EmbeddedRedisError as exc:
            print(f"benchmarks.server: no Redis to run against: {exc}")
            return 1
        process, base_url = _start_server(workdir, redis.url)
        try:
            cases = [
                ("GET /health (Redis PING)", "GET", "/health", None),
                ("POST execute, 1-step no-op", "POST", "/api/v1/pipelines/execute", NOOP_BODY),
            ]
            if (workdir / "pipelines" / "test_pipeline.yaml").exists():
                cases.append(
                    ("POST execute, seed call", "POST", "/api/v1/pipelines/execute", SEED_BODY)
                )
            print(
                f"sync execute over HTTP: {args.runs} runs x {args.requests} requests, "
                f"median; client and server on the same {os.cpu_count()} cores"
            )
            print(
                f"{'call':<30} {'c=1 req/s':>10} {'p50 ms':>8} {'c=8 req/s':>10} {'p50 ms':>8}"
                f" {'in-app µs':>10}"
            )
            # Interleaved: every run measures every case, so drift in the machine's
            # load hits all figures alike.
            rates: dict[tuple[str, int], list[float]] = {}
            latencies: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.runs):
                for label, method, path, body in cases:
                    for concurrency in (1, 8):
                        rate, lat = asyncio.run(
                            _run(base_url, method, path, body, args.requests, concurrency)
                        )
                        rates.setdefault((label, concurrency), []).append(rate)
                        latencies.setdefault((label, concurrency), []).extend(lat)
            costs = asyncio.run(_asgi_cost(workdir, redis.url, cases, args.requests))
            for label, *_ in cases:
                cells = [
                    f"{statistics.median(rates[label, c]):>10.0f} "
                    f"{statistics.median(latencies[label, c]):>8.2f}"
                    for c in (1, 8)
                ]
                print(f"{label:<30} {' '.join(cells)} {costs[label]:>10.0f}")
        finally:
            process.terminate()
            process.wait(timeout=30)
            redis.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
