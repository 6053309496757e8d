"""Supervisor of the unified image: redis-server, ``mimir server`` and $WORKERS workers.

Stdlib only. Children write to this process's stdout (``docker logs``) with a prefix.
A child that exits is restarted after a back-off (1 s doubling to 30 s). On SIGTERM or
SIGINT: workers first (SIGTERM, $GRACE seconds to hand back their jobs), then the server,
then Redis; exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

GRACE = float(os.environ.get("GRACE", "30"))


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    backoff: float = 1.0
    restart_at: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started = time.monotonic()
        threading.Thread(target=self._pump, daemon=True).start()
        print(f"supervise: started {self.name} (pid {self.process.pid})", flush=True)

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            sys.stdout.write(f"{self.name} | {raw.decode('utf-8', 'replace')}")
            sys.stdout.flush()


def children() -> list[Child]:
    port = os.environ.get("MIMIR_PORT", "8080")
    workers = int(os.environ.get("WORKERS", "2"))
    server = ["mimir", "server", "--host", "0.0.0.0", "--port", port]
    if not (os.environ.get("MIMIR_API_TOKEN") or os.environ.get("MIMIR_API_TOKEN_FILE")):
        server.append("--insecure")
    redis = [
        "redis-server", "--bind", "127.0.0.1", "--port", "6379", "--dir", "/app/redis",
        "--appendonly", "yes", "--save", "",
    ]  # fmt: skip
    out = [Child("redis", redis), Child("backend", server)]
    out += [Child(f"worker-{n}", ["mimir", "worker"]) for n in range(1, workers + 1)]
    return out


def stop(group: list[Child], grace: float) -> None:
    for child in group:
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in group:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def main() -> int:
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    group = children()
    for child in group:
        child.start()
    while not stopping.wait(0.5):
        for child in group:
            if child.process is None or child.process.poll() is None:
                continue
            now = time.monotonic()
            if child.restart_at == 0.0:
                if now - child.started > 60:
                    child.backoff = 1.0
                child.restart_at = now + child.backoff
                print(
                    f"supervise: {child.name} exited ({child.process.returncode}); "
                    f"restarting in {child.backoff:.0f}s",
                    flush=True,
                )
                child.backoff = min(child.backoff * 2, 30.0)
            elif now >= child.restart_at:
                child.restart_at = 0.0
                child.start()
    print("supervise: stopping workers, server, redis", flush=True)
    stop([c for c in group if c.name.startswith("worker-")], GRACE)
    stop([c for c in group if c.name == "backend"], 15)
    stop([c for c in group if c.name == "redis"], 15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
