"""What the panels share: the API client, the live feed, the profile and its cluster backend.

The Qt-free services push plain callbacks; this object turns them into Qt signals so
panels subscribe the Qt way. Everything runs on the one qasync loop (the GUI thread),
except the cluster backends' progress callbacks, which may come from worker threads and
are therefore delivered through a queued signal.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from mimir.app.cluster.base import ClusterBackend, ClusterError, ClusterStatus
from mimir.app.cluster.instances import Instance
from mimir.app.services.api import ApiClient
from mimir.app.services.events import LiveFeed
from mimir.app.services.profiles import ConnectionProfile, ProfileStore
from mimir.app.services.timeseries import DashboardRecorder
from mimir.app.services.worker_names import worker_labels

__all__ = ["OPEN_BACKENDS", "ConsoleSession"]

logger = logging.getLogger(__name__)

#: The backends sessions built and have not closed yet. A remote one may hold an SSH
#: tunnel, an ssh process of its own that would outlive the console.
OPEN_BACKENDS: set[Any] = set()


@atexit.register
def _close_open_backends() -> None:
    """The safety net when the console exits without :meth:`ConsoleSession.close`."""
    for backend in list(OPEN_BACKENDS):
        _close_now(backend)


def _close_now(backend: Any) -> None:
    OPEN_BACKENDS.discard(backend)
    close = getattr(backend, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


class ConsoleSession(QObject):
    """Shared state of one console window."""

    #: queue status dict, each second
    stats = Signal(object)
    #: a job record (subset) on each state change
    job = Signal(object)
    #: the workers list
    workers = Signal(object)
    #: feed mode ("events", "polling", "offline", "stopped") and a message
    connection = Signal(str, str)
    #: the cluster's status after a refresh or an action
    cluster_status = Signal(object)
    #: the profile (and so the API and backend) changed
    profile_changed = Signal(object)
    #: the event stream (re)connected: job changes may have been missed meanwhile
    resync = Signal()
    #: the cluster's containers or processes (``Instance`` list), when they changed
    instances_changed = Signal(object)
    #: ``GET /api/v1/pools`` (pool → figures), with each workers poll
    pools = Signal(object)
    #: one autoscaler decision (a ``scale`` event)
    scale = Signal(object)
    #: ``GET /api/v1/autoscaler``: policies, state, last decisions
    autoscaler = Signal(object)

    def __init__(self, settings: QSettings, profiles: ProfileStore | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.profiles = profiles or ProfileStore(settings)
        self.profile: ConnectionProfile = self.profiles.current()
        self.api = ApiClient(
            self.profile.api_url,
            self.profiles.token(self.profile.name),
            ca_file=self.profile.api_ca or None,
        )
        self.feed = LiveFeed(self.api)
        self.feed.subscribe("stats", self.stats.emit)
        self.feed.subscribe("job", self.job.emit)
        self.feed.subscribe("workers", self.workers.emit)
        self.feed.subscribe("mode", lambda mode: self.connection.emit(mode[0], mode[1]))
        self.feed.subscribe("resync", lambda _none: self.resync.emit())
        self.feed.subscribe("pools", self.pools.emit)
        self.feed.subscribe("scale", self.scale.emit)
        self.feed.subscribe("autoscaler", self.autoscaler.emit)
        #: The dashboard's history, recorded from start-up (the panel is built on demand).
        self.recorder = DashboardRecorder()
        self.feed.subscribe("stats", lambda s: self.recorder.add_stats(s, time.time()))
        self.feed.subscribe("workers", lambda w: self.recorder.add_workers(w, time.time()))
        self.feed.subscribe("pools", lambda p: self.recorder.add_pools(p, time.time()))
        self.feed.subscribe("scale", self.recorder.add_decision)
        self.feed.subscribe("autoscaler", self.recorder.add_autoscaler)
        self.backend: ClusterBackend | None = None
        #: Why the profile's backend could not be made (e.g. no Docker SDK), or "".
        self.backend_error = ""
        self.last_cluster_status: ClusterStatus | None = None
        #: The cluster's instances (``mimir cluster ps``), for names of workers and logs.
        self.instances: list[Instance] = []
        self._backend_override: ClusterBackend | None = None

    # ---------------------------------------------------------------- profile and backend

    def use_backend(self, backend: ClusterBackend | None) -> None:
        """Drive this backend instead of the one the profile names (``--smoke``, tests)."""
        self._backend_override = backend
        self.backend = backend

    def apply_profile(self, profile: ConnectionProfile) -> None:
        """Switch API and backend to ``profile`` and remember it as current."""
        self.profile = profile
        self.profiles.set_current(profile.name)
        self.api.configure(
            profile.api_url, self.profiles.token(profile.name), ca_file=profile.api_ca or None
        )
        self.feed.forget_endpoints()
        previous = self.backend
        self.backend = self._backend_override or self._make_backend(profile)
        if previous is not None and previous is not self.backend and previous in OPEN_BACKENDS:
            # Its SSH tunnel goes with the profile; ssh's exit is not awaited on the GUI thread.
            OPEN_BACKENDS.discard(previous)
            threading.Thread(
                target=_close_now, args=(previous,), name="close-backend", daemon=True
            ).start()
        # What was read of the last profile's cluster says nothing about this one.
        self.last_cluster_status = None
        self.set_instances([])
        self.profile_changed.emit(profile)

    def _make_backend(self, profile: ConnectionProfile) -> ClusterBackend | None:
        self.backend_error = ""
        if profile.backend is None:
            return None
        from mimir.app.cluster.selection import create_backend

        # The cluster publishes its API on the port of the profile's API URL.
        options: dict[str, Any] = {"api_port": profile.api_port}
        token = (
            self.profiles.token(profile.name) if profile.backend in ("docker", "swarm") else None
        )
        if profile.kind == "remote_docker":
            # The whole engine profile: TLS material, SSH identity and known hosts, how the
            # API is reached, its bind and token. Nothing connects here (on use only).
            options["profile"] = profile.docker_profile(token)
        else:
            options["api_token"] = token
        try:
            backend = create_backend(profile.backend, profile.project, **options)
        except ClusterError as exc:
            logger.warning("profile %s: %s", profile.name, exc)
            self.backend_error = str(exc)
            return None
        OPEN_BACKENDS.add(backend)
        return backend

    def set_instances(self, instances: list[Instance]) -> None:
        if instances != self.instances:
            self.instances = list(instances)
            self.instances_changed.emit(self.instances)

    def worker_names(self, workers: list[dict[str, Any]] | None = None) -> dict[str, str]:
        """Worker id → the name the console shows (``worker-1``), for ``workers`` or the
        feed's last list: one rule for the Jobs, Workers, Dashboard and Logs views."""
        project = self.backend.project if self.backend is not None else ""
        listed = self.feed.last_workers if workers is None else workers
        return worker_labels(listed, self.instances, project)

    def follow_cluster(self, status: ClusterStatus) -> None:
        """A running cluster says where its API is; point the client there."""
        self.last_cluster_status = status
        if status.api_url and status.api_url.rstrip("/") != self.api.base_url:
            self.api.configure(
                status.api_url,
                self.profiles.token(self.profile.name),
                ca_file=self.profile.api_ca or None,
            )
        self.cluster_status.emit(status)

    def start(self) -> None:
        self.feed.start()

    async def close(self) -> None:
        await self.feed.stop()
        await self.api.aclose()
        if self.backend in OPEN_BACKENDS:
            await asyncio.to_thread(_close_now, self.backend)
