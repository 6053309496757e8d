"""Cluster control timings: ``up`` → healthy (2 workers registered), scale 2 → 10 → 2.

``python -m benchmarks.cluster [--backend local|docker|all] [--max-workers 10]``

For each backend: the time from ``up`` to a healthy API with its workers' heartbeats,
then to run 10 registered workers, then back to 2 (scale-down waits for the stopped
workers to exit). The Docker backend runs when an engine answers; its images are built
first when missing (that time is printed apart). Each figure is one run: this machine is
shared and noisy, so read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

from mimir.app.cluster.base import ClusterBackend
from mimir.app.cluster.local import LocalBackend
from mimir.app.cluster.selection import docker_engine_answers
from mimir.core.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _measure(backend: ClusterBackend, top: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await backend.up(2)
        figures["up -> healthy, 2 workers registered"] = time.perf_counter() - started
        started = time.perf_counter()
        await backend.scale(top)
        figures[f"scale 2 -> {top} (all registered)"] = time.perf_counter() - started
        started = time.perf_counter()
        await backend.scale(2)
        figures[f"scale {top} -> 2 (stopped ones gone)"] = time.perf_counter() - started
        started = time.perf_counter()
        await backend.down()
        figures["down"] = time.perf_counter() - started
    finally:
        await backend.clean()
    return figures


def _local(top: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mimir-bench-") as root:
        env = {
            "MIMIR_DATA_DIR": str(Path(root) / "data"),
            "MIMIR_PIPELINES_DIR": str(Path(root) / "pipelines"),
            "MIMIR_STATE_DIR": str(Path(root) / "state"),
        }
        for path in env.values():
            Path(path).mkdir(parents=True)
        backend = LocalBackend(
            "bench", Settings.from_env(env), api_port=_free_port(), grace=15, start_timeout=120
        )
        return asyncio.run(_measure(backend, top))


def _docker(top: int) -> dict[str, float]:
    from mimir.app.cluster.docker_backend import DockerBackend
    from mimir.app.cluster.topology import IMAGES

    backend = DockerBackend("mimirbench", api_port=_free_port(), grace=15, start_timeout=180)
    figures: dict[str, float] = {}
    if not all(backend._image_exists(IMAGES[w]) for w in ("backend", "worker")):
        started = time.perf_counter()
        asyncio.run(backend.build())
        figures["build images (not cached)"] = time.perf_counter() - started
    figures.update(asyncio.run(_measure(backend, top)))
    backend.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--backend", choices=["local", "docker", "all"], default="all")
    parser.add_argument("--max-workers", type=int, default=10)
    args = parser.parse_args(argv)
    runs = []
    if args.backend in ("local", "all"):
        runs.append(("local", _local))
    if args.backend in ("docker", "all"):
        if docker_engine_answers():
            runs.append(("docker", _docker))
        else:
            print("docker: skipped (no engine answers)")
    for name, run in runs:
        figures = run(args.max_workers)
        for label, seconds in figures.items():
            print(f"{name:<7} {label:<40} {seconds:7.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
