"""The local backend's record of a cluster: ``<state_dir>/<project>/state.json`` and its lock.

The file is written atomically (temporary file, then rename) after every change, so a
command that dies half-way leaves a record of what it had started; ``.lock`` (``flock``)
serialises the commands that change one project (waited for on the event loop, never by
blocking it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from mimir.app.cluster.base import ClusterError
from mimir.core.pools import DEFAULT_POOL, ClusterFile, default_cluster

__all__ = ["LocalState", "ProcessEntry", "project_lock", "read_state", "write_state"]

STATE_VERSION = 1


@dataclass
class ProcessEntry:
    """One process of the cluster as recorded in the state file."""

    name: str
    service: Literal["redis", "backend", "worker", "prometheus"]
    pid: int
    create_time: float
    log: str
    #: Size of the log file when the process started (its own lines start there).
    log_offset: int = 0
    #: The pool of a worker (a state written before pools has none: ``default``).
    pool: str = DEFAULT_POOL


@dataclass
class LocalState:
    """The state file's content."""

    project: str
    api_port: int
    redis_port: int | None
    redis_url: str
    #: Redis started by the cluster (False: an external REDIS_URL was given).
    own_redis: bool = True
    processes: list[ProcessEntry] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    version: int = STATE_VERSION
    #: The cluster file it runs (:class:`ClusterFile` as JSON); ``None`` in a state written
    #: before pools: the default cluster.
    cluster: dict[str, Any] | None = None
    #: Replicas each pool should run, as the last ``up``/``scale`` set them.
    wanted: dict[str, int] = field(default_factory=dict)
    #: Prometheus's port on 127.0.0.1 when the cluster runs it (``up --monitoring``).
    prometheus_port: int | None = None
    #: How often it scrapes (a Prometheus duration).
    scrape_interval: str | None = None
    #: The cluster's own Redis requires the password of ``<project dir>/secrets`` (a state
    #: written before passwords: ``False``, its Redis runs without one until ``down``).
    redis_auth: bool = False

    def entries(self, service: str) -> list[ProcessEntry]:
        return [entry for entry in self.processes if entry.service == service]

    def pool_entries(self, pool: str) -> list[ProcessEntry]:
        """The workers of ``pool``."""
        return [e for e in self.processes if e.service == "worker" and e.pool == pool]

    @property
    def cluster_file(self) -> ClusterFile:
        """The pools the cluster runs."""
        if self.cluster is None:
            return default_cluster()
        try:
            return ClusterFile.model_validate(self.cluster)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise ClusterError(f"the cluster state's pools are malformed: {exc}") from exc

    @cluster_file.setter
    def cluster_file(self, cluster: ClusterFile) -> None:
        self.cluster = cluster.model_dump(mode="json", exclude_none=True)

    def entry(self, name: str) -> ProcessEntry | None:
        return next((entry for entry in self.processes if entry.name == name), None)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalState:
        processes = [ProcessEntry(**entry) for entry in data.pop("processes", [])]
        return cls(processes=processes, **data)


def read_state(path: Path) -> LocalState | None:
    """The state recorded in ``path``, or ``None`` when there is none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read the cluster state file {path}: {exc}") from exc
    try:
        return LocalState.from_json(data)
    except (TypeError, AttributeError) as exc:
        raise ClusterError(f"the cluster state file {path} is malformed: {exc}") from exc


def write_state(path: Path, state: LocalState) -> None:
    """Write ``state`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def _open_lock(directory: Path) -> IO[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return (directory / ".lock").open("w")


def _try_flock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False


@contextlib.asynccontextmanager
async def project_lock(directory: Path, project: str, timeout: float = 60.0) -> AsyncIterator[None]:
    """Hold ``directory/.lock``; raise :class:`ClusterError` after ``timeout`` seconds.

    Waiting never blocks the caller's event loop (the console's): the file is opened in a
    thread, ``flock`` is only tried without blocking, and the retries sleep on the loop.
    """
    handle = await asyncio.to_thread(_open_lock, directory)
    try:
        deadline = time.monotonic() + timeout
        while not _try_flock(handle):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"another 'mimir cluster' command is changing project {project!r}; "
                    "try again when it has finished"
                )
            await asyncio.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
