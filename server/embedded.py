"""Worker child processes for ``mimir server --embedded``.

The server never imports the worker package (the layers are independent): it runs
``python -m mimir.worker`` as child processes with the embedded Redis's URL, restarts
one that dies unexpectedly (a few times, with backoff), and stops them all with SIGTERM
(the worker's graceful drain) before the embedded Redis goes down.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

__all__ = ["WorkerProcesses", "worker_env"]

logger = logging.getLogger(__name__)

#: Restarts allowed per worker slot within :data:`RESTART_WINDOW` seconds.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerProcesses:
    """``count`` ``python -m mimir.worker`` children sharing one environment."""

    def __init__(self, count: int, env: Mapping[str, str]) -> None:
        self.count = count
        self.env = dict(env)
        self.command = [sys.executable, "-m", "mimir.worker"]
        self._processes: list[subprocess.Popen[bytes]] = []
        self._restarts: list[list[float]] = []
        self._given_up: set[int] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the current children."""
        with self._lock:
            return [process.pid for process in self._processes]

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Own process group: a terminal's Ctrl-C reaches the server only, which then
        # stops the workers in order. die-with-parent: no orphans if the server is killed.
        return subprocess.Popen(
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=_die_with_parent,
        )

    def start(self) -> WorkerProcesses:
        """Start the workers and a thread that restarts any that die."""
        with self._lock:
            for _ in range(self.count):
                self._processes.append(self._spawn())
                self._restarts.append([])
        logger.info("started %d worker(s): pids %s", self.count, self.pids)
        self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
        self._monitor.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for slot, process in enumerate(self._processes):
                    code = process.poll()
                    if code is None or self._stopping.is_set():
                        continue
                    now = time.monotonic()
                    recent = [t for t in self._restarts[slot] if now - t < RESTART_WINDOW]
                    self._restarts[slot] = recent
                    if len(recent) >= MAX_RESTARTS:
                        if slot not in self._given_up:
                            self._given_up.add(slot)
                            logger.error(
                                "worker pid %d exited with code %s after %d restarts in %gs; "
                                "not restarting it again",
                                process.pid,
                                code,
                                MAX_RESTARTS,
                                RESTART_WINDOW,
                            )
                        continue
                    if recent and now - recent[-1] < 2 ** len(recent) * 0.5:
                        continue  # back off: 1 s, 2 s, 4 s, ...
                    recent.append(now)
                    self._processes[slot] = self._spawn()
                    logger.warning(
                        "worker pid %d exited with code %s; restarted as pid %d (%d left)",
                        process.pid,
                        code,
                        self._processes[slot].pid,
                        MAX_RESTARTS - len(recent),
                    )

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every worker, wait up to ``grace`` s for them to drain, then SIGKILL."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker pid %d still running after %gs; killing", process.pid, grace)
                process.kill()
                process.wait(timeout=5)
        if processes:
            codes = {process.pid: process.returncode for process in processes}
            logger.info("workers stopped: %s", codes)


def worker_env(redis_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of embedded workers: this process's, pointed at ``redis_url``."""
    env = dict(os.environ if base is None else base)
    env["REDIS_URL"] = redis_url
    return env
