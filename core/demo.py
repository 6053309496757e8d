"""The README's first command: run Mimir on the embedded default, no Docker, no Redis to install.

``python -m mimir.core.demo`` (what ``make demo`` runs):

1. seeds the data and pipelines directories with the shipped examples (never overwriting
   a file that is already there);
2. runs the sample pipelines in-process and prints each step;
3. starts ``mimir server --embedded`` (a private Redis with AOF on, plus workers) and
   drives it over HTTP as a client would: the seed's synchronous execute call, then a
   batch of queued jobs drained by the workers;
4. keeps serving until Ctrl-C (``--once`` stops after step 3).

It lives in ``core`` and starts the server as a child process, so it needs neither the
server's nor the worker's code in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mimir.core.resources import example_data_dir, pipelines_dir
from mimir.core.settings import Settings

__all__ = ["main"]

_SEED_BODY = '{"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}}'


def _say(message: str) -> None:
    print(message, flush=True)


def _seed(source: Path, target: Path, pattern: str) -> list[str]:
    """Copy files matching ``pattern`` from ``source`` into ``target`` unless already there."""
    copied: list[str] = []
    if not source.is_dir():
        return copied
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob(pattern)):
        if not path.is_file():
            continue
        destination = target / path.relative_to(source)
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        copied.append(str(path.relative_to(source)))
    return copied


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run_examples(settings: Settings) -> bool:
    from mimir.core.engine import execute_pipeline
    from mimir.core.errors import MimirError
    from mimir.core.pipeline import load_pipeline

    ok = True
    examples = [
        ("test_pipeline.yaml", {"input": "test data"}),
        ("sales_report.yaml", {}),
        ("ai_summary.yaml", {}),
    ]
    for file_name, context in examples:
        path = settings.pipelines_dir / file_name
        if not path.exists():
            continue
        try:
            pipeline = load_pipeline(path)
        except MimirError as exc:
            _say(f"  {file_name}: {exc}")
            ok = False
            continue
        result = await execute_pipeline(pipeline, context, data_dir=settings.data_dir)
        mark = "ok" if result.success else "FAILED"
        _say(f"  {pipeline.name} ({file_name}): {mark} in {result.duration_ms:.1f} ms")
        for step in result.steps:
            line = (
                f"    - {step.name:<18} {step.plugin:<26} {step.status:<9}"
                f" {step.duration_ms:7.2f} ms"
            )
            _say(line + (f"  {step.error}" if step.error else ""))
        ok = ok and result.success
    return ok


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}; see its output")
        try:
            answer = httpx.get(f"{base_url}/health", timeout=1.0)
            if answer.status_code == 200 and answer.json().get("redis") == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {base_url} did not become healthy in time")


def _drive(base_url: str, jobs: int) -> bool:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        body = {"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}}
        answer = client.post("/api/v1/pipelines/execute", json=body)
        result = answer.json()
        _say(
            f"  POST /api/v1/pipelines/execute → {answer.status_code},"
            f" success={result.get('success')}"
        )
        started = time.perf_counter()
        job_ids: list[str] = []
        for index in range(jobs):
            body = {"pipeline_file": "test_pipeline.yaml", "context": {"input": f"job {index}"}}
            answer = client.post("/api/v1/queue/pipelines/enqueue", json=body)
            answer.raise_for_status()
            job_ids.append(answer.json()["job_id"])
        _say(f"  POST /api/v1/queue/pipelines/enqueue, {jobs} times → queued")
        statuses: dict[str, int] = {}
        workers: set[str] = set()
        for job_id in job_ids:
            record: dict[str, Any] = client.get(
                f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "60s"}
            ).json()
            statuses[record.get("status", "?")] = statuses.get(record.get("status", "?"), 0) + 1
            if record.get("worker_id"):
                workers.add(record["worker_id"])
        elapsed = time.perf_counter() - started
        summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        _say(f"  {jobs} jobs drained in {elapsed:.2f} s by {len(workers)} worker(s): {summary}")
        status = client.get("/api/v1/queue/status").json()
        _say(
            f"  GET /api/v1/queue/status → queue_length={status.get('queue_length')}, "
            f"workers={status.get('workers')}"
        )
        return statuses.get("succeeded", 0) == jobs and bool(result.get("success"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimir.core.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--once", action="store_true", help="stop after the demo instead of serving"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--jobs", type=int, default=20, help="queued jobs to run (default 20)")
    parser.add_argument(
        "--port", type=int, default=None, help="API port (default $MIMIR_PORT or 8080)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()

    _say(
        f"Mimir AIP demo\n  data dir:      {settings.data_dir}\n"
        f"  pipelines dir: {settings.pipelines_dir}"
    )
    seeded = _seed(example_data_dir(), settings.data_dir, "*")
    seeded += _seed(pipelines_dir(), settings.pipelines_dir, "*.yaml")
    if seeded:
        _say(f"  copied the examples: {', '.join(seeded)}")

    _say("\n1. The sample pipelines, run in-process:")
    examples_ok = asyncio.run(_run_examples(settings))

    port = args.port or settings.port
    if not _port_free(port):
        other = _free_port()
        _say(f"\n(port {port} is taken; using {other} instead)")
        port = other
    base_url = f"http://127.0.0.1:{port}"
    _say(
        f"\n2. Starting the server on {base_url} with an embedded Redis"
        f" and {args.workers} workers …"
    )
    command = [
        sys.executable,
        "-m",
        "mimir.server",
        "--embedded",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
    ]
    env = dict(os.environ)
    env.pop("REDIS_URL", None)  # the embedded default: a private Redis
    env.setdefault("MIMIR_LOG_LEVEL", "WARNING")  # keep the walkthrough readable
    process = subprocess.Popen(command, env=env)
    try:
        _wait_healthy(base_url, process, time.monotonic() + 60)
        _say("   server healthy")
        _say("\n3. Driving it over HTTP:")
        driven_ok = _drive(base_url, args.jobs)
        if args.once:
            return 0 if (examples_ok and driven_ok) else 1
        _say(
            f"\nThe server keeps running at {base_url} (Ctrl-C stops it). Try:\n"
            f"  curl -s {base_url}/api/v1/queue/status\n"
            f"  curl -s -X POST {base_url}/api/v1/pipelines/execute \\\n"
            f"       -H 'Content-Type: application/json' \\\n"
            f"       -d '{_SEED_BODY}'\n"
            f"  .venv/bin/mimir console   # the desktop console (needs a display)"
        )
        try:
            return process.wait()
        except KeyboardInterrupt:
            return 0
    except httpx.HTTPStatusError as exc:
        _say(
            f"demo failed: {exc.request.method} {exc.request.url.path} answered "
            f"{exc.response.status_code}: {exc.response.text[:300]}"
        )
        return 1
    except (RuntimeError, httpx.HTTPError) as exc:
        _say(f"demo failed: {exc}")
        return 1
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    sys.exit(main())
