"""The Docker backend: the topology of :mod:`.topology` as containers, through the Docker SDK.

What belongs to a project: an object labelled ``io.mimir.project=<project>`` (what this
backend creates), or one that docker-compose created as project ``<project>`` (its own
``com.docker.compose.project`` label, which follows ``-p``) and that carries one of our
service, volume or network labels. An object whose compose project is another is never
the project's, whatever else it says: ``down`` and ``clean`` touch nothing another project
owns. So ``status``, ``scale`` and ``down`` find a cluster after the console restarts, find
what ``docker-compose -p x`` started as ``--project x``, and two projects coexist.

Every SDK call runs in a thread (``asyncio.to_thread``); SDK exceptions are translated into
:class:`~mimir.app.cluster.base.ClusterError` at this boundary, with messages an operator can
act on (no engine, socket permission, port taken, image missing, remote host unreachable).

**Pools.** Each pool of the cluster file is one scalable worker service (``worker`` for
``default``, ``worker-<pool>``); its containers carry ``io.mimir.pool=<pool>`` (a worker
without the label, from before pools, is ``default``'s). The cluster's pools are remembered
by the engine itself: they are ``MIMIR_POOLS`` in the backend container's environment, read
back by every command (a cluster started before pools has none: the default cluster). A
pool's wanted replicas are its containers (they restart ``unless-stopped``).

**Engine access for the autoscaler.** The server's autoscaler scales a pool by running
``mimir cluster scale --pool P N --project X --backend docker`` in the backend container,
which then has to reach the engine. It does only when the operator asked for it by declaring
an autoscaled pool (a pool with ``autoscale:`` enabled in the cluster file): then ``up``
mounts the engine's unix socket into the backend container (``/var/run/docker.sock`` of the
engine's host, or the local socket ``DOCKER_HOST`` names; this works for ``ssh://`` and
``tcp://`` engines too, since the container runs on the engine's host), adds the socket's
group (read by a short-lived helper container that stats it) to the image's non-root user,
and sets ``DOCKER_HOST=unix:///var/run/docker.sock`` and :data:`INSIDE_ENV`. **An API server
that controls the engine is root on that host**: a cluster without an autoscaled pool mounts
nothing, and a policy switched on later over the API cannot scale it (its command fails and
the decision records why) until ``up`` is run again with a cluster file that autoscales.

:data:`INSIDE_ENV` (``MIMIR_DOCKER_INSIDE``) marks a process as running inside the cluster's
backend container: it holds, as JSON, the project and the worker settings ``up`` used
(concurrency, grace, limits). A :class:`DockerBackend` of that project built where it is set
reaches the API at the container's own port (``127.0.0.1:8080``), not the published one, and
builds worker containers with those settings and the pools of ``MIMIR_POOLS``, as ``up`` did.

**Monitoring.** ``up`` with ``monitoring=True`` (``--monitoring``) also runs the topology's
``prometheus`` service (image ``mimir-aip:prometheus-latest``, built from the base image
when missing), published on 127.0.0.1 only. Its configuration is generated from the topology
(:mod:`.monitoring`) and copied into the container between create and start (a ``docker cp``:
this works for remote engines too, where a bind mount of a local file would not), with the
API token as a file readable by the container's user only. The engine remembers it: a
running Prometheus container is kept by a later ``up`` without the flag, shown by
``status``, stopped by ``down``; ``clean`` removes its TSDB volume with the others.

**Hardening and secrets.** Every container runs as the topology's non-root ``user`` with
``no-new-privileges``, all capabilities dropped (``cap_add`` none expected), a read-only root
filesystem with a tmpfs ``/tmp``, a pids limit, CPU and memory limits (Redis too) and a
healthcheck (the worker's: its heartbeat file). The API token and the Redis password are
files in ``/run/secrets``, a read-only volume holding exactly the secrets the service lists
(``spec.secrets``), one volume per set (:func:`_secrets_volume`):
``<project>_secrets_api_token_redis_password`` for the API server,
``<project>_secrets_redis_password`` for Redis and the workers (and a server without a
token), ``<project>_secrets_api_token`` for Prometheus. Workers, which run pipeline code,
never see the token; Prometheus never sees the password. ``up`` fills the volumes through a
created-but-never-started helper container of the backend image that mounts them read-write
(``put_archive``, so it works on remote engines too): the token owned by 10001 mode 0400,
the Redis password (generated at the first ``up``) owned by 10001 and group 1000 mode 0440
(the ``mimir`` user reads it as its owner, ``redis`` 999:1000 through its group). ``down``
keeps the volumes (Redis's AOF holds no password, but its clients must keep the same one),
``clean`` removes them. No token or password is in a container's environment, command or
image; a console reads the token back from the running server. A cluster from before
(one ``<project>_secrets`` volume in every container): ``up`` and ``scale`` ask for
``down`` first; after it ``up`` takes the password over and removes the old volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import queue as queue_module
import re
import secrets
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import docker
import docker.errors
import docker.tls
import docker.types
import requests.exceptions

from mimir.app.cluster.base import (
    ClusterError,
    ClusterStatus,
    LogLine,
    Progress,
    ServiceKind,
    ServiceStats,
    ServiceStatus,
)
from mimir.app.cluster.docker_engine import (
    DEFAULT_SOCKET,
    DockerProfile,
    connect_engine,
    cpu_percent,
    explain_engine_error,
    memory_used,
    parse_docker_time,
    resolve_profile,
)
from mimir.app.cluster.docker_images import PACKAGING_DIR, ImageBuilder
from mimir.app.cluster.instances import Instance
from mimir.app.cluster.monitoring import PROMETHEUS_GID, PROMETHEUS_UID, prometheus_files
from mimir.app.cluster.readiness import ClusterProbe, wait_until_ready
from mimir.app.cluster.remote import SshTarget, SshTunnel
from mimir.app.cluster.topology import (
    API_PORT,
    API_TOKEN_SECRET,
    COMPOSE_LABEL_NUMBER,
    COMPOSE_LABEL_PROJECT,
    DEFAULT_REDIS_IMAGE,
    IMAGES,
    LABEL_NETWORK,
    LABEL_POOL,
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    LABEL_VOLUME,
    MIMIR_UID,
    OPTIONAL_SERVICE_KINDS,
    PROMETHEUS,
    PROMETHEUS_CONFIG_DIR,
    PROMETHEUS_PORT,
    REDIS_GID,
    REDIS_PASSWORD_SECRET,
    SECRETS_DIR,
    SECRETS_VOLUME,
    SERVICE_KINDS,
    ServiceSpec,
    Topology,
    build_topology,
    canonical_service,
    parse_worker_name,
    pool_service,
    unknown_pool,
    validate_project_name,
)
from mimir.app.cluster.worker_pool import (
    StopBudget,
    check_pool_count,
    check_worker_count,
    plan_scale,
    worker_health,
)
from mimir.core.diagnostics import DiskState
from mimir.core.pools import (
    DEFAULT_POOL,
    POOLS_ENV,
    ClusterFile,
    ClusterFileError,
    default_cluster,
    pools_from_env,
    pools_to_env,
)
from mimir.core.settings import Settings

__all__ = [
    "ENGINE_SOCKET",
    "INSIDE_ENV",
    "PACKAGING_DIR",
    "DockerBackend",
    "DockerProfile",
    "run_once",
]

logger = logging.getLogger(__name__)


def run_once(client: Any, image: str, command: list[str], **options: Any) -> bytes:
    """Run a short-lived helper container to its end and return its stdout, as
    ``containers.run`` does; it is removed with its anonymous volumes whatever happens
    (docker-py's ``remove=True`` leaves those: an image's ``VOLUME``, Redis's ``/data``).
    A non-zero exit raises :class:`docker.errors.ContainerError` with its stderr."""
    container = client.containers.create(image, command, **options)
    try:
        container.start()
        status = int(container.wait()["StatusCode"])
        if status != 0:
            stderr = container.logs(stdout=False, stderr=True)
            raise docker.errors.ContainerError(container, status, command, image, stderr)
        return bytes(container.logs(stdout=True, stderr=False))
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True, v=True)


T = TypeVar("T")

#: Seconds between looks for new (or removed) containers while following logs.
_LOGS_RESCAN = 1.0

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: Every service's kind, those of ``up --monitoring`` too.
_KINDS = {**SERVICE_KINDS, **OPTIONAL_SERVICE_KINDS}
_ANY = frozenset({"", "0.0.0.0", "::"})

#: The engine's socket: where the backend container of an autoscaled cluster has it, and
#: where it is on the engine's host unless ``DOCKER_HOST`` names another local socket.
ENGINE_SOCKET = "/var/run/docker.sock"
#: Set in that container: the project and the worker settings ``up`` used, as JSON (module
#: doc, "Engine access for the autoscaler").
INSIDE_ENV = "MIMIR_DOCKER_INSIDE"
#: What the helper container runs to read the socket's group (and to check it is a socket).
_SOCKET_GID = (
    "import os, stat, sys; s = os.stat(sys.argv[1]); "
    "sys.exit(f'{sys.argv[1]} is no socket') if not stat.S_ISSOCK(s.st_mode) else print(s.st_gid)"
)


def _no_progress(step: str, message: str) -> None:
    logger.info("%s: %s", step, message)


@dataclass
class _Created:
    """What one ``up`` created, removed again when it fails."""

    network: str | None = None
    volumes: list[str] = field(default_factory=list)
    #: Ids of the project's containers before ``up`` started.
    containers_before: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _EngineMount:
    """The engine's socket as the backend container of an autoscaled cluster gets it."""

    #: The socket's path on the engine's host.
    socket: str
    #: Its group there, added to the container's user.
    gid: int
    #: :data:`INSIDE_ENV`'s value.
    inside: str


def _inside_settings(environ: Mapping[str, str], project: str) -> dict[str, Any] | None:
    """The worker settings of :data:`INSIDE_ENV` when this process runs inside ``project``'s
    backend container, else ``None``."""
    raw = environ.get(INSIDE_ENV)
    if not raw:
        return None
    try:
        inside = json.loads(raw)
    except ValueError:
        logger.warning("%s is not JSON: ignored", INSIDE_ENV)
        return None
    if not isinstance(inside, dict) or inside.get("project") != project:
        return None
    return inside


class DockerBackend:
    """:class:`~mimir.app.cluster.base.ClusterBackend` over a Docker engine."""

    backend: Literal["docker"] = "docker"

    def __init__(
        self,
        project: str = "mimir",
        settings: Settings | None = None,
        *,
        docker_host: str | None = None,
        profile: str | Path | DockerProfile | None = None,
        api_port: int | None = None,
        api_bind: str | None = None,
        api_token: str | None = None,
        worker_concurrency: int | None = None,
        redis_image: str | None = None,
        base_image: str | None = None,
        grace: float | None = None,
        start_timeout: float = 120.0,
        resources: dict[str, Any] | None = None,
        packaging_dir: Path = PACKAGING_DIR,
        monitoring: bool = False,
        prometheus_port: int | None = None,
        scrape_interval: str | None = None,
    ) -> None:
        """``resources`` overrides the limits, e.g. ``{"worker_cpus": 1.0,
        "worker_memory": "1g"}`` (keys of :func:`~.topology.build_topology`).

        Nothing is checked against the engine here, and the bind/token rule is left to what
        publishes the API (``up``, ``scale``, ``restart``): ``down``, ``status``, ``logs``
        need neither. Inside the project's backend container (:data:`INSIDE_ENV`), what is
        not given (``grace`` 30 s, concurrency, ``resources``) is what ``up`` used.
        ``monitoring`` makes ``up`` run Prometheus too, on ``127.0.0.1:prometheus_port``
        (default 9090), scraping every ``scrape_interval`` (default ``15s``)."""
        if isinstance(profile, (str, Path)):
            loaded = DockerProfile.load(profile)
        else:
            loaded = profile or DockerProfile()
        self.settings = settings or Settings.from_env()
        self.project = validate_project_name(project)
        # Explicit argument > profile > settings (DOCKER_HOST) > environment; TLS material
        # from the profile, else DOCKER_TLS_VERIFY/DOCKER_CERT_PATH.
        self.profile = resolve_profile(
            docker_host or loaded.docker_host or self.settings.docker_host, loaded
        )
        self.docker_host = self.profile.docker_host or ""
        self.api_access = self.profile.access
        if self.api_access == "tunnel" and not self.profile.is_ssh:
            raise ClusterError(
                f"api_access 'tunnel' needs an ssh:// engine, not "
                f"{self.docker_host or 'the local socket'}: use api_access 'published' with "
                "api_bind and api_token"
            )
        #: The port asked for (``up --port``, a profile), as opposed to the default.
        self.requested_port = api_port or self.profile.api_port
        self.api_port = self.requested_port or self.settings.port
        #: The bind address asked for (``up --bind``, a profile), as opposed to the default.
        self.requested_bind = api_bind or self.profile.api_bind
        self.api_bind = self.requested_bind or "127.0.0.1"
        self.api_token = api_token or self.profile.api_token or self.settings.api_token
        inside = _inside_settings(os.environ, self.project)
        #: True in the project's own backend container (the autoscaler's scale commands).
        self.inside = inside is not None
        inside = inside or {}
        self.worker_concurrency = (
            worker_concurrency
            or inside.get("worker_concurrency")
            or self.settings.worker_concurrency
        )
        self.redis_image = redis_image or self.settings.redis_image or DEFAULT_REDIS_IMAGE
        self.base_image = base_image or self.settings.base_image
        self.grace = float(grace if grace is not None else inside.get("grace", 30.0))
        self.start_timeout = start_timeout
        self.resources = resources or dict(inside.get("resources") or {})
        #: The cluster's pools: given to ``up``, else read back from the running backend
        #: container (``None``: not known yet, the default cluster).
        self.cluster: ClusterFile | None = None
        self.packaging_dir = packaging_dir
        #: Run Prometheus (asked for, or found running by ``up``/``status``).
        self.monitoring = monitoring
        #: The Prometheus port asked for, as opposed to the default.
        self.requested_prometheus_port = prometheus_port
        self.prometheus_port = prometheus_port or PROMETHEUS_PORT
        self.scrape_interval = scrape_interval or "15s"
        self.images = ImageBuilder(self._connect, packaging_dir, self.base_image, self.redis_image)
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._tunnel: SshTunnel | None = None
        #: The cluster's Redis password, once ``up`` has read or made it (a secrets volume).
        self.redis_password: str | None = None

    # ---------------------------------------------------------------- engine access

    def topology(self, workers: int, redis_image: str | None = None) -> Topology:
        return build_topology(
            self.project,
            workers=workers,
            api_host=self.api_bind,
            api_port=self.api_port,
            api_token=self.api_token,
            redis_image=redis_image or self.redis_image,
            worker_concurrency=self.worker_concurrency,
            worker_grace=max(1.0, self.grace - StopBudget.HAND_BACK),
            log_level=self.settings.log_level,
            fuseki_url=self.settings.fuseki_url,
            cluster=self.cluster,
            cluster_backend="docker",
            monitoring=self.monitoring,
            prometheus_port=self.prometheus_port,
            scrape_interval=self.scrape_interval,
            **self.resources,
        )

    @property
    def prometheus_url(self) -> str:
        """Where Prometheus answers on the engine's host (published on its loopback only)."""
        return f"http://127.0.0.1:{self.prometheus_port}"

    def _inside_value(self) -> str:
        """:data:`INSIDE_ENV`'s value: the project and this backend's worker settings."""
        return json.dumps(
            {
                "project": self.project,
                "worker_concurrency": self.worker_concurrency,
                "grace": self.grace,
                "resources": self.resources,
            },
            sort_keys=True,
        )

    def _engine_socket(self) -> str:
        """The engine's socket on the engine's host: the local one ``DOCKER_HOST`` names,
        else :data:`ENGINE_SOCKET` (also for ``ssh://`` and ``tcp://`` engines)."""
        parsed = urlparse(self.docker_host)
        if parsed.scheme == "unix" and parsed.path and not self.inside:
            return parsed.path
        return ENGINE_SOCKET

    def _engine_mount(self) -> _EngineMount | None:
        """The engine's socket for the backend container when a pool is autoscaled (the
        operator's choice: module doc), else ``None``. Its group on the engine's host is
        read by a short-lived helper container of the backend image."""
        if not _autoscaled(self.cluster or default_cluster()):
            return None
        socket = self._engine_socket()
        client = self._connect()
        name = f"{self.project}-engine-socket"
        with contextlib.suppress(docker.errors.NotFound):  # a leftover of a crashed run
            client.containers.get(name).remove(force=True, v=True)
        try:
            output = run_once(
                client,
                IMAGES["backend"],
                ["python3", "-c", _SOCKET_GID, ENGINE_SOCKET],
                name=name,
                # The project's, and no service: `down` removes one a crash left behind.
                labels={LABEL_PROJECT: self.project},
                mounts=[_socket_mount(socket)],
                network_mode="none",
            )
        except docker.errors.ContainerError as exc:
            raise ClusterError(
                f"cannot read the group of the engine's socket {socket} on the engine's host "
                "(an autoscaled pool needs the engine in the backend container)",
                detail=str(exc.stderr or exc),
            ) from exc
        except docker.errors.APIError as exc:
            raise ClusterError(
                f"cannot mount the engine's socket {socket} of the engine's host into a "
                f"container ({exc.explanation or exc}): an autoscaled pool needs it in the "
                "backend container"
            ) from exc
        return _EngineMount(socket, int(output.decode().strip()), self._inside_value())

    @property
    def remote_host(self) -> str | None:
        """The engine's host name when it is on another machine (not loopback), else None."""
        parsed = urlparse(self.docker_host)
        if parsed.scheme in ("tcp", "ssh", "http", "https") and parsed.hostname:
            return None if parsed.hostname in _LOOPBACK else parsed.hostname
        return None

    @property
    def tunneled(self) -> bool:
        """True when this machine reaches the API through the engine's SSH tunnel."""
        return self.profile.is_ssh and self.api_access == "tunnel"

    def _published_host(self) -> str:
        """Where the published API answers: a specific bind address, else the engine's host."""
        if self.api_bind not in _ANY | _LOOPBACK:
            return f"[{self.api_bind}]" if ":" in self.api_bind else self.api_bind
        return self.remote_host or "127.0.0.1"

    @property
    def api_url(self) -> str:
        """Where this machine reaches the API: through the SSH tunnel (a local port forwarded
        to the remote's loopback), else where it is published; inside the backend container
        (:data:`INSIDE_ENV`), at the container's own port."""
        if self.inside:
            return f"http://127.0.0.1:{API_PORT}"
        if self.tunneled:
            self._connect()  # opens the tunnel
            assert self._tunnel is not None
            remote = "127.0.0.1" if self.api_bind in _ANY else self.api_bind
            return f"http://127.0.0.1:{self._tunnel.forward(self.api_port, remote)}"
        return f"http://{self._published_host()}:{self.api_port}"

    @property
    def api_reach(self) -> str:
        """How the API is reached, for people: "SSH tunnel to host:8080", "published on
        10.0.0.5:8080 with a token"."""
        if self.tunneled:
            return f"SSH tunnel to {SshTarget.parse(self.docker_host).host}:{self.api_port}"
        token = "with a token" if self.api_token else "without a token"
        if self.remote_host and self.api_bind in _LOOPBACK:
            return (
                f"published on {self.remote_host}'s {self.api_bind}:{self.api_port}, "
                "unreachable from here"
            )
        return f"published on {self.api_bind}:{self.api_port} {token}"

    def _check_publish(self) -> None:
        """A remote engine's API must be reachable from here and not open: published on a
        non-loopback address with a token, unless it is reached through the SSH tunnel.
        Checked before anything is created; ``topology`` then applies the token rule."""
        if self.tunneled or self.inside or not self.remote_host:
            return
        if self.api_bind in _LOOPBACK or not self.api_token:
            where = "all addresses" if self.api_bind in _ANY else self.api_bind
            why = (
                "its loopback, unreachable from here"
                if self.api_bind in _LOOPBACK
                else "without a token, open to anyone"
            )
            raise ClusterError(
                f"the API would be published on {where} of the remote engine {self.remote_host} "
                f"({why}): set api_bind (--bind or the profile) to an address of that host and "
                "an api_token (MIMIR_API_TOKEN or the profile), or reach the engine over ssh:// "
                "to use an SSH tunnel"
            )

    async def _probe(self) -> ClusterProbe:
        return await ClusterProbe.open(self.api_url, self.api_token)

    def _connect(self) -> docker.DockerClient:
        with self._client_lock:
            if self._tunnel is not None and not self._tunnel.running:
                self._client = None  # the tunnel died: open a new one
            if self._client is None:
                profile = self.profile
                if profile.is_ssh:
                    if self._tunnel is not None:
                        self._tunnel.close()
                    self._tunnel = SshTunnel(
                        self.docker_host, profile.ssh_identity, profile.ssh_known_hosts
                    ).start()
                    profile = replace(profile, docker_host=self._tunnel.docker_url)
                self._client = connect_engine(profile.docker_host or "", profile)
            return self._client

    @property
    def tunnel_open(self) -> bool:
        """True while the SSH tunnel to the engine (and the API) is up."""
        return self._tunnel is not None and self._tunnel.running

    async def reach_api(self) -> str:
        """Connect, find the running server's port and return where this machine reaches
        its API (``mimir cluster tunnel`` keeps the tunnel open while it is used)."""
        await self._call(self._adopt_running_backend)
        return await asyncio.to_thread(lambda: self.api_url)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in a thread; translate its errors."""
        return await asyncio.to_thread(self._guarded, fn, *args, **kwargs)

    def _guarded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ClusterError:
            raise
        except docker.errors.ImageNotFound as exc:
            raise ClusterError(
                f"image missing: {exc.explanation or exc}. Build the images first: "
                "mimir cluster build"
            ) from exc
        except docker.errors.APIError as exc:
            message = str(exc.explanation or exc)
            if "port is already allocated" in message or "address already in use" in message:
                raise ClusterError(
                    f"port {self.api_port} on {self.api_bind} is already in use: stop what "
                    "listens there, or choose another port (mimir cluster up --port N)"
                ) from exc
            raise ClusterError(f"Docker engine refused: {message}") from exc
        except docker.errors.DockerException as exc:
            raise explain_engine_error(exc, self.docker_host or DEFAULT_SOCKET) from exc
        except OSError as exc:
            raise explain_engine_error(exc, self.docker_host or DEFAULT_SOCKET) from exc

    def close(self) -> None:
        """Close the engine client and the SSH tunnel (and so the API's forwarded port)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    # ---------------------------------------------------------------- ownership (sync)

    def owns(self, labels: dict[str, str] | None) -> bool:
        """True when an object with these labels belongs to this project (module doc)."""
        labels = labels or {}
        compose_project = labels.get(COMPOSE_LABEL_PROJECT)
        if compose_project is not None:
            return compose_project == self.project and any(
                key in labels for key in (LABEL_PROJECT, LABEL_SERVICE, LABEL_VOLUME, LABEL_NETWORK)
            )
        return labels.get(LABEL_PROJECT) == self.project

    def _owned(self, collection: Any, marker: str, **options: Any) -> list[Any]:
        """The project's objects of ``collection`` (containers, volumes or networks):
        ours by label, and compose's of the same project name with our ``marker`` label."""
        found: dict[str, Any] = {}
        for labels in ([f"{LABEL_PROJECT}={self.project}"],
                       [f"{COMPOSE_LABEL_PROJECT}={self.project}", marker]):  # fmt: skip
            for item in collection.list(filters={"label": labels}, **options):
                found[item.id] = item
        return [item for item in found.values() if self.owns(_labels(item))]

    def _containers(self, service: str | None = None) -> list[Any]:
        found = self._owned(self._connect().containers, LABEL_SERVICE, all=True)
        if service:
            found = [c for c in found if c.labels.get(LABEL_SERVICE) == service]
        return sorted(found, key=lambda c: (c.labels.get(LABEL_SERVICE, ""), _replica(c)))

    def _project_volumes(self) -> list[Any]:
        return self._owned(self._connect().volumes, LABEL_VOLUME)

    def _project_networks(self) -> list[Any]:
        return self._owned(self._connect().networks, LABEL_NETWORK)

    def _image_exists(self, image: str) -> bool:
        return self.images.image_exists(image)

    def _ensure_network_and_volumes(self, topology: Topology, created: _Created) -> None:
        client = self._connect()
        existing = client.networks.list(names=[topology.network_name])
        if not [n for n in existing if n.name == topology.network_name]:
            client.networks.create(
                topology.network_name, driver="bridge", labels=topology.network_labels()
            )
            created.network = topology.network_name
        for volume in _engine_volumes(topology):
            name = topology.volume_name(volume)
            try:
                found = client.volumes.get(name)
            except docker.errors.NotFound:
                client.volumes.create(name, labels=topology.volume_labels(volume))
                created.volumes.append(name)
                continue
            if not self.owns(found.attrs.get("Labels")):
                raise ClusterError(
                    f"volume {name} exists but belongs to another project "
                    f"({_owner(found.attrs.get('Labels'))}): choose another --project"
                )

    def _undo_up(self, created: _Created) -> None:
        """Remove what a failed ``up`` created: its containers, network and new volumes."""
        client = self._connect()
        new = [c for c in self._containers() if c.id not in created.containers_before]
        self._stop_and_remove(new, 1)
        if created.network:
            with contextlib.suppress(docker.errors.DockerException):
                client.networks.get(created.network).remove()
        for name in created.volumes:
            with contextlib.suppress(docker.errors.DockerException):
                client.volumes.get(name).remove(force=True)

    def _fill_secrets(self, topology: Topology) -> None:
        """Write the API token and the Redis password (the one a volume has, else a new
        one) into the project's secrets volumes, each only the files its services list
        (module doc), through a helper container that is created, never started, and
        removed. The old single ``secrets`` volume (a cluster from before): its password is
        taken over, then the volume removed."""
        sets = _secret_sets(topology)
        if not sets:
            return
        client = self._connect()
        legacy = topology.volume_name(SECRETS_VOLUME)
        try:
            old = client.volumes.get(legacy)
            old = old if self.owns(old.attrs.get("Labels")) else None
        except docker.errors.NotFound:
            old = None
        mounts = {
            topology.volume_name(volume): {"bind": f"{SECRETS_DIR}/{volume}", "mode": "rw"}
            for volume in sets
        }
        if old is not None:
            mounts[legacy] = {"bind": f"{SECRETS_DIR}/{SECRETS_VOLUME}", "mode": "ro"}
        name = f"{self.project}-secrets"
        with contextlib.suppress(docker.errors.NotFound):  # a leftover of a crashed run
            client.containers.get(name).remove(force=True, v=True)
        helper = client.containers.create(
            IMAGES["backend"],
            ["true"],
            name=name,
            # The project's, and no service: `down` removes one a crash left behind.
            labels={LABEL_PROJECT: self.project},
            network_mode="none",
            volumes=mounts,
        )
        try:
            # The password a volume has: one of this layout's, else the old volume's.
            holders = [v for v, names in sets.items() if REDIS_PASSWORD_SECRET in names]
            if old is not None:
                holders.append(SECRETS_VOLUME)
            password = None
            for volume in holders:
                path = f"{SECRETS_DIR}/{volume}/{REDIS_PASSWORD_SECRET}"
                password = password or _read_archive_file(helper, path)
            password = password or secrets.token_urlsafe(32)
            every = {REDIS_PASSWORD_SECRET: (password.encode(), 0o440, MIMIR_UID, REDIS_GID)}
            if topology.api_token:
                every[API_TOKEN_SECRET] = (topology.api_token.encode(), 0o400, MIMIR_UID, MIMIR_UID)
            for volume, names in sets.items():
                files = {n: every[n] for n in names if n in every}
                target = f"{SECRETS_DIR}/{volume}"
                if files and not helper.put_archive(target, _owned_archive(files)):
                    raise ClusterError(f"the engine did not take the secrets for {target}")
            self.redis_password = password
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                helper.remove(force=True, v=True)
        if old is not None:
            # Taken over: no container of this cluster mounts it any more (up checked).
            with contextlib.suppress(docker.errors.DockerException):
                old.remove()

    def _as_running(self, topology: Topology) -> Topology:
        """``topology`` as the running cluster's Redis wants its workers: a project without
        a secrets volume (docker-compose's: its file format has no secrets, the password is
        in ``REDIS_URL``) gets workers with the backend container's ``REDIS_URL`` and no
        password file. A cluster from before per-service secrets volumes: ``down`` first."""
        client = self._connect()
        try:
            client.volumes.get(topology.volume_name(_secrets_volume([REDIS_PASSWORD_SECRET])))
            return topology
        except docker.errors.NotFound:
            pass
        _check_secrets_layout(self._containers(), topology.volume_name(SECRETS_VOLUME))
        backend = next((c for c in self._containers("backend") if c.status == "running"), None)
        url = _environment(backend).get("REDIS_URL") if backend is not None else None
        services = dict(topology.services)
        for name, spec in topology.services.items():
            if spec.pool is None:
                continue
            env = {k: v for k, v in spec.environment.items() if k != "MIMIR_REDIS_PASSWORD_FILE"}
            if url:
                env["REDIS_URL"] = url
            mounts = [m for m in spec.volumes if m.volume != SECRETS_VOLUME]
            services[name] = replace(spec, environment=env, volumes=mounts, secrets=[])
        names = [v for v in topology.volumes if v != SECRETS_VOLUME]
        return replace(topology, services=services, volumes=names)

    def _run_container(
        self,
        topology: Topology,
        spec: ServiceSpec,
        replica: int = 1,
        engine: _EngineMount | None = None,
    ) -> Any:
        """Create and start one container of ``spec``; ``engine`` gives it the engine's
        socket (the backend of an autoscaled cluster). Prometheus gets its generated
        configuration (and the API token as a file) copied in before it starts."""
        client = self._connect()
        name = topology.container_name(spec.name, replica)
        with contextlib.suppress(docker.errors.NotFound):
            found = client.containers.get(name)
            if found.status == "running" and self.owns(found.labels):
                # Started meanwhile by another command (the autoscaler's `scale`, a
                # person's): it runs what was asked for, and stopping it would lose work.
                return found
            found.remove(force=True, v=True)  # a leftover of a crashed run
        environment = spec.environment
        access: dict[str, Any] = {}
        if engine is not None:
            environment = {
                **environment,
                "DOCKER_HOST": f"unix://{ENGINE_SOCKET}",
                INSIDE_ENV: engine.inside,
            }
            access = {"mounts": [_socket_mount(engine.socket)], "group_add": [str(engine.gid)]}
        endpoint = client.api.create_endpoint_config(aliases=[*spec.aliases, name])
        healthcheck = None
        if spec.healthcheck:
            second = 1_000_000_000
            healthcheck = {
                "test": spec.healthcheck,
                "interval": 2 * second,
                "timeout": 5 * second,
                "retries": 3,
                "start_period": 30 * second,
            }
        try:
            container = client.containers.create(
                spec.image,
                spec.command,
                name=name,
                hostname=name,
                labels=topology.labels(spec.name, replica if spec.scalable else None),
                environment=environment,
                volumes={
                    topology.volume_name(
                        _secrets_volume(spec.secrets) if m.volume == SECRETS_VOLUME else m.volume
                    ): {
                        "bind": m.target,
                        "mode": "ro" if m.read_only else "rw",
                    }
                    for m in spec.volumes
                },
                network=topology.network_name,
                networking_config={topology.network_name: endpoint},
                ports={f"{c}/tcp": hp for c, hp in spec.ports.items()},
                nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
                mem_limit=spec.memory,
                restart_policy={"Name": "unless-stopped"},
                healthcheck=healthcheck,
                stop_signal="SIGTERM",
                # Hardening (module doc): what the topology asks for, on every service.
                user=spec.user,
                security_opt=["no-new-privileges:true"],
                cap_drop=["ALL"],
                cap_add=list(spec.cap_add) or None,
                read_only=spec.read_only,
                tmpfs=dict(spec.tmpfs) or None,
                pids_limit=spec.pids,
                **access,
            )
            if spec.name == PROMETHEUS:
                container.put_archive(PROMETHEUS_CONFIG_DIR, _archive(prometheus_files(topology)))
            container.start()
            return container
        except docker.errors.APIError as exc:
            # Created but not started (a port taken …): do not leave it behind.
            with contextlib.suppress(docker.errors.DockerException):
                client.containers.get(name).remove(force=True, v=True)
            message = str(exc.explanation or exc)
            taken = "port is already allocated" in message or "address already in use" in message
            if taken and spec.name == PROMETHEUS:
                host, port = spec.ports[PROMETHEUS_PORT]
                raise ClusterError(
                    f"port {port} on {host} (Prometheus) is already in use: stop what listens "
                    "there, or choose another port (mimir cluster up --monitoring "
                    "--prometheus-port N)"
                ) from exc
            raise

    def _stop_and_remove(self, containers: list[Any], grace: float) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace``) and remove, in parallel.

        A running worker gets a second SIGTERM when only the hand-back part of ``grace`` is
        left (:class:`StopBudget`): it hands its jobs back then, whatever grace it was
        started with, instead of being killed with them.
        """
        budget = StopBudget.of(grace)

        def one(container: Any) -> None:
            worker = container.labels.get(LABEL_SERVICE) == "worker"
            if worker and container.status == "running" and budget.finish > 0:
                try:
                    container.kill(signal="SIGTERM")
                    container.wait(timeout=budget.finish)
                except (docker.errors.DockerException, requests.exceptions.RequestException):
                    pass  # still running: the stop below (a second SIGTERM) hurries it
            with contextlib.suppress(docker.errors.NotFound):
                timeout = budget.hand_back if worker else grace
                container.stop(timeout=math.ceil(timeout))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)

        if not containers:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
            list(pool.map(one, containers))

    def _last_logs(self, container: Any, lines: int = 20) -> str:
        try:
            text = container.logs(tail=lines).decode("utf-8", "replace")
        except docker.errors.DockerException:
            return ""
        return "\n".join(f"{container.name} | {line}" for line in text.splitlines())

    def _adopt_running_backend(self) -> bool:
        """Take the API port, bind address, token and pools from a running backend
        container, so that a new console finds a cluster an earlier one started. False if
        none runs (the pools are then those of a stopped backend container, else ``None``)."""
        self.cluster = None
        backends = self._containers("backend")
        for container in backends:
            if container.status != "running":
                continue
            bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(
                f"{API_PORT}/tcp"
            ) or []
            if bindings:
                self.api_port = int(bindings[0]["HostPort"])
                self.api_bind = bindings[0]["HostIp"] or "0.0.0.0"
            env = _environment(container)
            # Its token file in the secrets volume (a container from before: its Env).
            token = env.get("MIMIR_API_TOKEN")
            if not token and env.get("MIMIR_API_TOKEN_FILE"):
                token = _read_archive_file(container, env["MIMIR_API_TOKEN_FILE"])
            self.api_token = token or self.api_token
            self.cluster = _pools_of_backend(container)
            return True
        if backends:
            self.cluster = _pools_of_backend(backends[0])
        return False

    def _adopt_prometheus(self) -> list[Any]:
        """The project's Prometheus containers; one found means monitoring is on, and its
        published port is the one that counts."""
        found = self._containers(PROMETHEUS)
        for container in found:
            bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(
                f"{PROMETHEUS_PORT}/tcp"
            ) or []
            if container.status == "running" and bindings:
                self.prometheus_port = int(bindings[0]["HostPort"])
        if found:
            self.monitoring = True
        return found

    async def _start_prometheus(self, topology: Topology, report: Progress) -> None:
        """Run the topology's Prometheus unless it runs; wait for its health check."""
        running = [c for c in await self._call(self._containers, PROMETHEUS)
                   if c.status == "running"]  # fmt: skip
        if running:
            report(PROMETHEUS, f"{running[0].name} already runs: {self.prometheus_url}")
            return
        spec = topology.service(PROMETHEUS)
        if not await self._call(self._image_exists, spec.image):
            report(PROMETHEUS, f"{spec.image} is not here: building it")
            await self._call(self.images.build_image, PROMETHEUS, spec.image, report)
        report(
            PROMETHEUS,
            f"starting {topology.container_name(PROMETHEUS)} on {self.prometheus_url}, "
            f"scraping every {topology.scrape_interval}",
        )
        await self._call(self._run_container, topology, spec)
        deadline = time.monotonic() + self.start_timeout
        while True:
            container = (await self._call(self._containers, PROMETHEUS) or [None])[0]
            state = container.attrs["State"] if container is not None else {}
            if state.get("Health", {}).get("Status") == "healthy":
                return
            if container is None or container.status in ("exited", "dead", "restarting"):
                detail = await asyncio.to_thread(self._last_logs, container) if container else ""
                raise ClusterError("Prometheus stopped while starting", detail=detail)
            if time.monotonic() > deadline:
                detail = await asyncio.to_thread(self._last_logs, container)
                raise ClusterError(
                    f"Prometheus was not ready in {self.start_timeout:.0f}s", detail=detail
                )
            await asyncio.sleep(0.5)

    # ---------------------------------------------------------------- images

    async def build(self, progress: Progress | None = None) -> None:
        """Build the backend and worker images (and Redis's when it cannot be pulled)."""
        report = progress or _no_progress
        await self._call(self._connect)
        await asyncio.to_thread(self.images.build_wheelhouse, report)
        for which in ("backend", "worker"):
            await self._call(self.images.build_image, which, IMAGES[which], report)
        if self.monitoring:
            await self._call(self.images.build_image, PROMETHEUS, IMAGES[PROMETHEUS], report)
        await self._call(self.images.resolve_redis_image, report, True)
        report("build", "images built: " + ", ".join(IMAGES[w] for w in ("backend", "worker")))

    async def build_unified(self, progress: Progress | None = None) -> None:
        """Build the one-container image (Redis, server and workers under a supervisor)."""
        report = progress or _no_progress
        await asyncio.to_thread(self.images.build_wheelhouse, report)
        await self._call(self.images.build_image, "unified", IMAGES["unified"], report)

    # ---------------------------------------------------------------- readiness

    @staticmethod
    def worker_key(worker: dict[str, Any]) -> str | None:
        """A registered worker's host name: its container's (``Config.Hostname``)."""
        return str(worker.get("hostname") or "") or None

    async def _wait_ready(self, report: Progress) -> None:
        """Until /ready answers and every running worker container has a heartbeat."""
        containers: list[Any] = []

        async def check_alive() -> None:
            nonlocal containers
            containers = await self._call(self._containers)
            for container in containers:
                if container.status in ("exited", "dead", "restarting"):
                    detail = await asyncio.to_thread(self._last_logs, container)
                    raise ClusterError(
                        f"container {container.name} {container.status} while starting "
                        f"(exit code {container.attrs['State'].get('ExitCode')})",
                        detail=detail,
                    )

        async def expected() -> set[str]:
            return {_hostname(c) for c in containers if c.labels.get(LABEL_SERVICE) == "worker"}

        async def not_ready() -> ClusterError:
            backend = [c for c in containers if c.labels.get(LABEL_SERVICE) == "backend"]
            detail = await asyncio.to_thread(self._last_logs, backend[0]) if backend else ""
            return ClusterError(
                f"the API was not ready at {self.api_url}/ready in {self.start_timeout:.0f}s",
                detail=detail,
            )

        async def not_registered(missing: set[str]) -> ClusterError:
            late = [c for c in containers if _hostname(c) in missing]
            detail = await asyncio.to_thread(self._last_logs, late[0]) if late else ""
            return ClusterError(
                f"worker(s) {', '.join(c.name for c in late)} did not register in "
                f"{self.start_timeout:.0f}s",
                detail=detail,
            )

        async with await self._probe() as probe:
            await wait_until_ready(
                probe,
                timeout=self.start_timeout,
                report=report,
                check_alive=check_alive,
                expected_workers=expected,
                worker_key=self.worker_key,
                not_ready=not_ready,
                not_registered=not_registered,
            )

    # ---------------------------------------------------------------- protocol

    async def up(
        self,
        workers: int | None = 2,
        progress: Progress | None = None,
        *,
        cluster: ClusterFile | None = None,
    ) -> ClusterStatus:
        """Create network, volumes, redis, backend and each pool's workers; wait until ready.

        ``cluster`` declares the pools (default: the running cluster's, else one pool
        ``default``); ``workers`` sizes the pool ``default`` (``None``: its
        ``initial_replicas``); the other pools start their ``initial_replicas`` (a running
        cluster whose pools do not change keeps what they were scaled to). A running cluster
        is completed (what is missing is started); given other pools, it stops the workers
        of pools it no longer has and recreates its backend container, whose environment
        holds the pools. A failing ``up`` removes what it created (containers, network,
        volumes that did not exist) and raises."""
        report = progress or _no_progress
        if workers is not None:
            check_worker_count(workers, self.settings.limits)
        if cluster is not None:  # the counts and the bind/token rule, before anything runs
            self._sizes(cluster, workers, None)
        self._check_publish()
        self.topology(workers or 0)
        await self._call(self._connect)
        for which in ("backend", "worker"):
            if not await self._call(self._image_exists, IMAGES[which]):
                raise ClusterError(
                    f"image missing: {IMAGES[which]} is not on the engine: build it first "
                    "(mimir cluster build)"
                )
        requested = self.requested_port
        adopted = await self._call(self._adopt_running_backend)
        if adopted:
            if requested and requested != self.api_port:
                raise ClusterError(
                    f"cluster {self.project!r} already runs with its API on port {self.api_port}"
                    f", not {requested}: leave out --port, or 'mimir cluster down --project "
                    f"{self.project}' first to move it"
                )
            asked = self.requested_bind
            if asked and _same_bind(asked) != _same_bind(self.api_bind):
                raise ClusterError(
                    f"cluster {self.project!r} already runs with its API published on "
                    f"{self.api_bind}, not {asked}: leave out --bind, or 'mimir cluster down "
                    f"--project {self.project}' first to publish it elsewhere"
                )
            report("backend", f"cluster {self.project!r} already runs: API {self.api_url}")
        known = self.cluster  # the pools of the project's backend container, if it has one
        self.cluster = cluster or known or default_cluster()
        asked_port = self.requested_prometheus_port
        running_monitor = await self._call(self._adopt_prometheus)
        if running_monitor and asked_port and asked_port != self.prometheus_port:
            raise ClusterError(
                f"cluster {self.project!r} already runs Prometheus on port "
                f"{self.prometheus_port}, not {asked_port}: leave out --prometheus-port, "
                f"or 'mimir cluster down --project {self.project}' first to move it"
            )
        existing = await self._call(self._containers)
        _check_redis_has_password(existing, self.project)
        _check_secrets_layout(existing, f"{self.project}_{SECRETS_VOLUME}")
        same = known is not None and _same_pools(known, self.cluster)
        sizes = self._sizes(self.cluster, workers, existing if same else None)
        redis_image = await self._call(self.images.resolve_redis_image, report, False)
        topology = self.topology(sizes.get(DEFAULT_POOL, 0), redis_image)
        backends = [
            c
            for c in existing
            if c.labels.get(LABEL_SERVICE) == "backend" and c.status == "running"
        ]
        has_engine = any(INSIDE_ENV in _environment(c) for c in backends)
        recreate = bool(backends) and (not same or has_engine != _autoscaled(self.cluster))
        if recreate:
            existing = await self._replace_backend(existing, report)
        engine = await self._call(self._engine_mount) if recreate or not backends else None
        created = _Created(containers_before={c.id for c in existing})
        try:
            volumes = len(_engine_volumes(topology))
            report("network", f"network {topology.network_name}, {volumes} volumes")
            await self._call(self._ensure_network_and_volumes, topology, created)
            await self._call(self._fill_secrets, topology)
            for service in ("redis", "backend"):
                spec = topology.service(service)
                running = [
                    c
                    for c in existing
                    if c.labels.get(LABEL_SERVICE) == service and c.status == "running"
                ]
                if running:
                    report(service, f"{running[0].name} already runs")
                    continue
                report(service, f"starting {topology.container_name(service)} ({spec.image})")
                if service == "backend" and engine is not None:
                    report("backend", f"with the engine's socket {engine.socket} (autoscaling)")
                await self._call(
                    self._run_container, topology, spec, 1,
                    engine if service == "backend" else None,
                )  # fmt: skip
            for pool, count in sizes.items():
                await self._scale_to(topology, pool, count, report)
            report("wait", "waiting for /ready and worker heartbeats")
            await self._wait_ready(report)
            if topology.monitoring:
                await self._start_prometheus(topology, report)
        except BaseException:
            report("up", "failed: removing what this command created")
            await asyncio.shield(self._call(self._undo_up, created))
            raise
        counts = ", ".join(f"{count} in {pool}" for pool, count in sizes.items())
        report("up", f"cluster {self.project!r} is up: API {self.api_url}, workers: {counts}")
        if topology.monitoring:
            report("up", f"Prometheus: {self.prometheus_url}")
        return await self.status()

    def _sizes(
        self, cluster: ClusterFile, workers: int | None, existing: list[Any] | None
    ) -> dict[str, int]:
        """The workers ``up`` runs in each pool, each checked against the cluster's limit
        and the pool's max: ``workers`` for ``default`` when given, else what the pool has
        (``existing``: the containers of a running cluster whose pools stay), else its
        ``initial_replicas``."""
        sizes = {}
        for name, pool in cluster.pools.items():
            if name == DEFAULT_POOL and workers is not None:
                count = workers
            elif existing is not None:
                count = len([c for c in existing if _is_worker(c) and _pool(c) == name])
            else:
                count = pool.initial_replicas
            sizes[name] = check_pool_count(pool, count, self.settings.limits)
        return sizes

    async def _replace_backend(self, existing: list[Any], report: Progress) -> list[Any]:
        """The running cluster's pools change: stop the workers of pools it no longer has,
        and remove the backend container (``up`` starts it again with the new pools).
        Returns the containers left."""
        cluster = self.cluster or default_cluster()
        leaving = [c for c in existing if _is_worker(c) and _pool(c) not in cluster.pools]
        if leaving:
            names = ", ".join(c.name for c in leaving)
            report("scale", f"stopping {names}: their pools are no longer declared")
            await self._call(self._stop_and_remove, leaving, self.grace)
        backend = [c for c in existing if c.labels.get(LABEL_SERVICE) == "backend"]
        if backend:
            report("backend", "the pools changed: recreating the API server's container")
            await self._call(self._stop_and_remove, backend, 10)
        gone = {c.id for c in leaving + backend}
        return [c for c in existing if c.id not in gone]

    async def _scale_to(
        self, topology: Topology, pool: str, workers: int, report: Progress
    ) -> None:
        """Run exactly ``workers`` containers of ``pool``; the other pools' are left alone."""
        current = [c for c in await self._call(self._containers, "worker") if _pool(c) == pool]
        dead = [c for c in current if c.status != "running"]
        if dead:
            report("worker", f"removing {len(dead)} stopped worker container(s) of pool {pool}")
            await self._call(self._stop_and_remove, dead, 1)
        running = {_replica(c): c for c in current if c.status == "running"}
        plan = plan_scale(list(running), workers)
        if plan.stop:
            leaving = [running[n] for n in plan.stop]
            report(
                "scale",
                f"stopping {', '.join(c.name for c in leaving)} (SIGTERM, {self.grace:.0f}s grace)",
            )
            await self._call(self._stop_and_remove, leaving, self.grace)
        if plan.start:
            report("worker", f"starting {len(plan.start)} worker container(s) of pool {pool}")
            spec = topology.pool_spec(pool)

            def start_all() -> None:
                with ThreadPoolExecutor(max_workers=min(8, len(plan.start))) as executor:
                    list(executor.map(lambda n: self._run_container(topology, spec, n), plan.start))

            await self._call(start_all)

    async def scale(
        self,
        workers: int,
        progress: Progress | None = None,
        *,
        pool: str = DEFAULT_POOL,
        wait: bool = True,
    ) -> ClusterStatus:
        """Run exactly ``workers`` worker containers in ``pool`` (its service built from the
        running cluster's pools); extra ones stop with SIGTERM + grace; the other pools are
        left alone. ``wait=False`` returns once the new containers are started, without
        waiting for their heartbeats."""
        report = progress or _no_progress
        check_worker_count(workers, self.settings.limits)
        if not await self._call(self._adopt_running_backend):
            raise ClusterError(
                f"no Docker cluster {self.project!r} is running (start one: mimir cluster up "
                f"--project {self.project})"
            )
        cluster = self.cluster or default_cluster()
        if pool not in cluster.pools:
            raise unknown_pool(pool, cluster)
        check_pool_count(cluster.pools[pool], workers, self.settings.limits)
        self._check_publish()
        image = (await self._call(self._containers, "redis") or [None])[0]
        redis_image = image.attrs["Config"]["Image"] if image is not None else None
        topology = self.topology(workers if pool == DEFAULT_POOL else 0, redis_image)
        topology = await self._call(self._as_running, topology)
        await self._scale_to(topology, pool, workers, report)
        if wait:
            await self._wait_ready(report)
        report("scale", f"{workers} worker(s) {'running' if wait else 'started'} in pool {pool!r}")
        return await self.status()

    async def down(self, progress: Progress | None = None) -> None:
        """Remove the containers (workers first, gracefully) and the network; keep volumes."""
        report = progress or _no_progress
        await self._down(report)
        report("down", f"cluster {self.project!r} removed (volumes kept)")

    async def _down(self, report: Progress) -> None:
        containers = await self._call(self._containers)
        if not containers:
            report("down", f"no containers of project {self.project!r}")
        for service in (PROMETHEUS, "worker", "backend", "redis"):
            group = [c for c in containers if c.labels.get(LABEL_SERVICE) == service]
            if group:
                report("down", f"stopping {', '.join(c.name for c in group)}")
                grace = self.grace if service == "worker" else 10
                await self._call(self._stop_and_remove, group, grace)
        # Containers of the project that are no service: a restore's helpers
        # (io.mimir.role=helper, :mod:`.restore_docker`) that a crash left behind.
        others = [c for c in containers if c.labels.get(LABEL_SERVICE) not in _KINDS]
        await self._call(self._stop_and_remove, others, 10)
        await self._call(self._remove_networks)

    def _remove_networks(self) -> None:
        for network in self._project_networks():
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()

    async def clean(self, progress: Progress | None = None) -> None:
        """Remove the project's containers and network like :meth:`down`, then its volumes
        (the data). Objects of another project are never touched."""
        report = progress or _no_progress
        await self._down(report)
        volumes = await self._call(self._project_volumes)
        for volume in volumes:
            await self._call(volume.remove, True)
        report(
            "clean",
            f"cluster {self.project!r} removed with its {len(volumes)} volume(s)"
            + (f": {', '.join(sorted(v.name for v in volumes))}" if volumes else ""),
        )

    async def restart(self, service: str, progress: Progress | None = None) -> ClusterStatus:
        """Restart ``redis``, ``backend``/``server``, ``worker`` (every pool's workers),
        ``worker-<pool>`` (one pool's), or one worker: ``worker-N``, ``worker-<pool>-N``."""
        report = progress or _no_progress
        name = canonical_service(service)
        await self._call(self._adopt_running_backend)
        self._check_publish()
        containers = await self._call(self._containers)
        target = parse_worker_name(name)
        if target is not None and target[0] is not None and target[1] is None:
            cluster = self.cluster or default_cluster()
            if target[0] not in cluster.pools and target[0] not in _pools_of(containers):
                raise unknown_pool(target[0], cluster)
            targets = [c for c in containers if _is_worker(c) and _pool(c) == target[0]]
        else:
            targets = [
                c
                for c in containers
                if c.labels.get(LABEL_SERVICE) == name or c.name == f"{self.project}-{name}"
            ]
        if not targets:
            known = sorted(self._service_names(containers) | {c.name for c in containers})
            raise ClusterError(f"unknown service {service!r}; choose from {', '.join(known)}")
        report("restart", ", ".join(c.name for c in targets))
        grace = int(self.grace if name.startswith("worker") else 10)
        for container in targets:
            await self._call(container.restart, timeout=grace)
        await self._wait_ready(report)
        return await self.status()

    async def status(self) -> ClusterStatus:
        """Each service's state, health, replicas and published ports."""
        await self._call(self._adopt_running_backend)
        containers = await self._call(self._containers)
        services: list[ServiceStatus] = []
        registered: set[str] | None = None
        if any(_is_worker(c) and c.status == "running" for c in containers):
            # Workers have no container health check: their heartbeats are their health.
            async with await self._probe() as probe:
                registered = await probe.workers(self.worker_key)
        for service, kind in SERVICE_KINDS.items():
            if service == "worker":
                services += self._pool_rows(containers, registered)
                continue
            group = [c for c in containers if c.labels.get(LABEL_SERVICE) == service]
            if not group:
                services.append(ServiceStatus(service, kind, "missing", replicas=0))
                continue
            services.append(_service_row(service, kind, group))
        monitor = [c for c in containers if c.labels.get(LABEL_SERVICE) == PROMETHEUS]
        if monitor:  # a cluster started with --monitoring
            services.append(_service_row(PROMETHEUS, "prometheus", monitor))
        api_running = any(s.name == "backend" and s.state == "running" for s in services)
        return ClusterStatus(
            "docker", self.project, services, self.api_url if api_running else None
        )

    def _pool_rows(self, containers: list[Any], registered: set[str] | None) -> list[ServiceStatus]:
        """One status row per pool: the cluster's, then pools only containers still name."""
        pools = list((self.cluster or default_cluster()).pools)
        pools += sorted(_pools_of(containers) - set(pools))
        rows = []
        for pool in pools:
            name = pool_service(pool)
            group = [c for c in containers if _is_worker(c) and _pool(c) == pool]
            if not group:
                # A pool at 0 in a cluster that runs is "stopped", not missing.
                state = "stopped" if containers else "missing"
                wanted = 0 if containers else None
                rows.append(
                    ServiceStatus(name, "worker", state, replicas=0, pool=pool, wanted=wanted)
                )
                continue
            row = _service_row(name, "worker", group)
            running = {_hostname(c) for c in group if c.status == "running"}
            health = worker_health(running, registered) if running else row.health
            rows.append(replace(row, health=health, pool=pool, wanted=len(group)))
        return rows

    async def cluster_file(self) -> ClusterFile | None:
        """The running cluster's pools (``MIMIR_POOLS`` of its backend container; one
        started before pools: the default cluster); ``None`` when no backend runs."""
        if not await self._call(self._adopt_running_backend):
            return None
        return self.cluster or default_cluster()

    def _service_names(self, containers: list[Any]) -> set[str]:
        """The services one may name: redis, backend, worker, and each pool's."""
        pools = set((self.cluster or default_cluster()).pools) | _pools_of(containers)
        monitor = {PROMETHEUS} if any(c.labels.get(LABEL_SERVICE) == PROMETHEUS
                                      for c in containers) else set()  # fmt: skip
        return set(SERVICE_KINDS) | monitor | {pool_service(p) for p in pools}

    async def instances(self) -> list[Instance]:
        """Every container of the project."""
        out = []
        for c in await self._call(self._containers):
            service = c.labels.get(LABEL_SERVICE, "?")
            health = c.attrs["State"].get("Health", {}).get("Status", "")
            image = c.attrs["Config"]["Image"]
            out.append(
                Instance(
                    name=c.name,
                    service=service,
                    kind=_KINDS.get(service, "worker"),
                    state=c.status,
                    ident=c.short_id,
                    detail=f"{image}" + (f", {health}" if health else ""),
                    restarts=int(c.attrs.get("RestartCount") or 0),
                    oom_killed=bool(c.attrs["State"].get("OOMKilled")),
                    exit_code=c.attrs["State"].get("ExitCode"),
                    started_at=_engine_time(c.attrs["State"].get("StartedAt")),
                )
            )
        return out

    async def oom_events(self, within: float = 3600.0) -> dict[str, int]:
        """OOM kills the engine reported for the project's containers in the last
        ``within`` seconds, by container name (a restarted container's state forgets them)."""

        def read() -> dict[str, int]:
            names = {c.id: c.name for c in self._containers()}
            if not names:
                return {}
            now = time.time()
            counts: dict[str, int] = {}
            events = self._connect().events(
                since=int(now - within), until=int(now) + 1, decode=True,
                filters={"type": "container", "event": "oom"},
            )  # fmt: skip
            for event in events:
                name = names.get(str(event.get("id") or event.get("Actor", {}).get("ID")))
                if name:
                    counts[name] = counts.get(name, 0) + 1
            return counts

        return await self._call(read)

    async def disk_usage(self, service: str, path: str) -> DiskState | None:
        """Free space under ``path`` inside the first running container of ``service``
        (``df`` in the container: its volume is not on this host's file system)."""

        def read() -> DiskState | None:
            running = [c for c in self._containers(service) if c.status == "running"]
            if not running:
                return None
            code, output = running[0].exec_run(["df", "-Pk", path])
            lines = output.decode(errors="replace").strip().splitlines()
            if code != 0 or len(lines) < 2:
                return None
            fields = lines[-1].split()
            total, free = int(fields[1]) * 1024, int(fields[3]) * 1024
            return DiskState(path=f"{running[0].name}:{path}", free_bytes=free, total_bytes=total)

        return await self._call(read)

    def _select(self, services: list[str] | None) -> list[Any]:
        """The project's containers of ``services`` (all when empty); raise when the project
        has none, or none of those."""
        containers = self._containers()
        if not containers:
            raise ClusterError(
                f"no Docker cluster {self.project!r}: no container of it exists (start one: "
                f"mimir cluster up --project {self.project})"
            )
        if not services:
            return containers
        self._adopt_running_backend()  # the pools, for the names of their services
        wanted = _wanted(services)
        chosen = [c for c in containers if self._matches(c, wanted)]
        if not chosen:
            names = sorted(self._service_names(containers) | {c.name for c in containers})
            raise ClusterError(
                f"no container for {', '.join(sorted(wanted))}; choose from {', '.join(names)}"
            )
        return chosen

    def _matches(self, container: Any, wanted: set[str]) -> bool:
        """``container`` is one of the ``wanted`` services (``worker``: every pool's,
        ``worker-<pool>``: one pool's) or containers (``worker-slow-2``)."""
        return (
            container.labels.get(LABEL_SERVICE) in wanted
            or (_is_worker(container) and pool_service(_pool(container)) in wanted)
            or container.name in wanted
            or container.name.removeprefix(f"{self.project}-") in wanted
        )

    def _short(self, container: Any) -> str:
        return str(container.name).removeprefix(f"{self.project}-")

    async def logs(
        self, services: list[str] | None = None, follow: bool = False, tail: int = 100
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines of each container, merged by timestamp; then (``follow``)
        new lines as they come, from containers started meanwhile too, until the project
        has no container left (``down``)."""
        containers = await self._call(self._select, services)

        def history() -> list[LogLine]:
            lines: list[LogLine] = []
            for container in containers:
                raw = container.logs(tail=tail, timestamps=True).decode("utf-8", "replace")
                for text in raw.splitlines():
                    stamp, _, line = text.partition(" ")
                    lines.append(LogLine(self._short(container), line, parse_docker_time(stamp)))
            return sorted(lines, key=lambda line: line.timestamp or 0.0)

        since = time.time()
        for line in await self._call(history):
            yield line
        if not follow:
            return
        lines: queue_module.SimpleQueue[LogLine] = queue_module.SimpleQueue()
        pumps: dict[str, _LogPump] = {}
        first = {c.id for c in containers}
        wanted = _wanted(services or [])
        try:
            while True:
                current = [
                    c
                    for c in await self._call(self._containers)
                    if not wanted or self._matches(c, wanted)
                ]
                for container in current:
                    pump = pumps.get(container.id)
                    if container.status == "running" and (pump is None or not pump.alive):
                        start = pump.last if pump else (since if container.id in first else 0)
                        pumps[container.id] = _LogPump(container, self._short(container),
                                                       start, lines)  # fmt: skip
                deadline = time.monotonic() + _LOGS_RESCAN
                while time.monotonic() < deadline:
                    while not lines.empty():
                        yield lines.get()
                    await asyncio.sleep(0.1)
                if not current and not any(p.alive for p in pumps.values()):
                    while not lines.empty():
                        yield lines.get()
                    return
        finally:
            for pump in pumps.values():
                pump.close()

    async def stats(self) -> list[ServiceStats]:
        """CPU % (from the engine's two samples), memory and network of each running container."""

        def sample_all() -> list[ServiceStats]:
            running = [c for c in self._containers() if c.status == "running"]

            def one(container: Any) -> ServiceStats:
                sample = container.stats(stream=False)
                used, limit = memory_used(sample)
                networks = sample.get("networks") or {}
                service = container.labels.get(LABEL_SERVICE, "worker")
                return ServiceStats(
                    name=container.name,
                    kind=_KINDS.get(service, "worker"),
                    cpu_percent=cpu_percent(sample),
                    memory_bytes=used,
                    memory_limit_bytes=limit,
                    net_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks.values()),
                    net_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks.values()),
                )

            if not running:
                return []
            with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
                return list(pool.map(one, running))

        return await self._call(sample_all)


class _LogPump:
    """A thread streaming one container's new log lines into ``lines`` until it stops."""

    def __init__(
        self, container: Any, name: str, since: float, lines: queue_module.SimpleQueue[LogLine]
    ) -> None:
        self.name = name
        #: Timestamp of the last line passed on: a pump started again resumes after it.
        self.last = since
        self._lines = lines
        self._stream: Any = None
        self._thread = threading.Thread(
            target=self._run, args=(container,), daemon=True, name=f"logs-{container.name}"
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self, container: Any) -> None:
        try:
            self._stream = container.logs(
                stream=True, follow=True, since=int(self.last), timestamps=True
            )
            for raw in _split_lines(self._stream):
                stamp, _, line = raw.partition(" ")
                when = parse_docker_time(stamp)
                if when and when <= self.last:
                    continue  # `since` is whole seconds: lines already passed on
                self.last = when or self.last
                self._lines.put(LogLine(self.name, line, when))
        except Exception as exc:  # the stream ends when the container stops or goes away
            logger.debug("log stream of %s ended: %s", self.name, exc)

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()


def _service_row(name: str, kind: ServiceKind, group: list[Any]) -> ServiceStatus:
    """The status of a service's containers ``group``: state, health from the engine's
    health checks, running replicas and published ports."""
    running = [c for c in group if c.status == "running"]
    states = {c.status for c in group}
    state = "running" if running else sorted(states)[0]
    healths = {c.attrs["State"].get("Health", {}).get("Status", "") for c in running}
    health = (
        "unhealthy" if "unhealthy" in healths
        else "starting" if "starting" in healths
        else "healthy" if "healthy" in healths
        else ""
    )  # fmt: skip
    ports: dict[str, str] = {}
    for container in running:
        for port, bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).items():
            for binding in bindings or []:
                ports[port] = f"{binding['HostIp']}:{binding['HostPort']}"
    return ServiceStatus(name, kind, state, health, len(running), ports)


def _archive(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of ``files`` (name → content, mode), owned by the Prometheus image's user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            info.uid, info.gid = PROMETHEUS_UID, PROMETHEUS_GID
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _check_redis_has_password(containers: list[Any], project: str) -> None:
    """A Redis container started before Redis passwords (its command reads no
    configuration file) cannot serve workers started now, which authenticate: say what
    to do instead of starting workers that fail."""
    for container in containers:
        if container.labels.get(LABEL_SERVICE) != "redis" or container.status != "running":
            continue
        command = " ".join(container.attrs.get("Config", {}).get("Cmd") or [])
        if "redis.conf" not in command and "requirepass" not in command:
            raise ClusterError(
                f"cluster {project!r} runs a Redis started before Redis passwords: run "
                f"'mimir cluster down --project {project}' (volumes are kept), then 'up' again"
            )


def _secrets_volume(names: list[str]) -> str:
    """The volume (topology name) holding exactly the secret files ``names``: one per set
    of secrets, so that a container sees only those its service lists (module doc)."""
    return "_".join([SECRETS_VOLUME, *(n.removeprefix("mimir_") for n in sorted(set(names)))])


def _secret_sets(topology: Topology) -> dict[str, list[str]]:
    """The secrets volumes the services mount (topology name → the secrets it holds)."""
    return {
        _secrets_volume(spec.secrets): sorted(set(spec.secrets))
        for spec in topology.services.values()
        if any(m.volume == SECRETS_VOLUME for m in spec.volumes)
    }


def _engine_volumes(topology: Topology) -> list[str]:
    """The topology's volumes as this backend makes them: its ``secrets`` volume stands
    for one volume per set of secrets (:func:`_secrets_volume`)."""
    names = [v for v in topology.volumes if v != SECRETS_VOLUME]
    return names + sorted(_secret_sets(topology))


def _check_secrets_layout(containers: list[Any], legacy: str) -> None:
    """Containers started before per-service secrets volumes mount the one ``secrets``
    volume (every secret in every container): such a cluster must be stopped before new
    containers join it (``down`` keeps the data; the next ``up`` takes the password over)."""
    for container in containers:
        if container.status != "running":
            continue
        mounts = container.attrs.get("Mounts") or []
        if any(m.get("Name") == legacy for m in mounts):
            project = container.labels.get(LABEL_PROJECT, legacy.rsplit("_", 1)[0])
            raise ClusterError(
                f"cluster {project!r} runs containers that mount every secret (the volume "
                f"{legacy}, from before per-service secrets): run 'mimir cluster down "
                f"--project {project}' (volumes are kept), then 'up' again"
            )


def _owned_archive(files: dict[str, tuple[bytes, int, int, int]]) -> bytes:
    """A tar of ``files`` (name → content, mode, uid, gid)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode, uid, gid) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            info.uid, info.gid = uid, gid
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _read_archive_file(container: Any, path: str) -> str | None:
    """The text of the file ``path`` in ``container`` (its volumes included; the container
    need not run), stripped; ``None`` when it is not there or empty."""
    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        handle = tar.extractfile(member) if member is not None else None
        text = handle.read().decode("utf-8", "replace").strip() if handle is not None else ""
    return text or None


def _is_worker(container: Any) -> bool:
    return bool(container.labels.get(LABEL_SERVICE) == "worker")


def _pool(container: Any) -> str:
    """A worker container's pool (one without the label, from before pools: ``default``)."""
    return str(container.labels.get(LABEL_POOL) or DEFAULT_POOL)


def _pools_of(containers: list[Any]) -> set[str]:
    return {_pool(c) for c in containers if _is_worker(c)}


def _pools_of_backend(container: Any) -> ClusterFile:
    """The pools a backend container was started with (``MIMIR_POOLS``; a container from
    before pools has none: the default cluster)."""
    try:
        return pools_from_env(_environment(container)) or default_cluster()
    except ClusterFileError as exc:
        raise ClusterError(
            f"the pools of {container.name} ({POOLS_ENV}) cannot be read: {exc}"
        ) from exc


def _environment(container: Any) -> dict[str, str]:
    """A container's environment as its engine reports it."""
    items = container.attrs.get("Config", {}).get("Env") or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def _same_pools(a: ClusterFile, b: ClusterFile) -> bool:
    return pools_to_env(a) == pools_to_env(b)


def _autoscaled(cluster: ClusterFile) -> bool:
    return any(pool.autoscaled for pool in cluster.pools.values())


def _socket_mount(socket: str) -> docker.types.Mount:
    """The engine's socket ``socket`` (on the engine's host) at :data:`ENGINE_SOCKET`; a bind
    mount of a missing source fails instead of creating a directory there."""
    return docker.types.Mount(ENGINE_SOCKET, socket, type="bind")


def _wanted(services: list[str]) -> set[str]:
    """Service names as :meth:`DockerBackend._matches` compares them (``server`` is
    ``backend``, ``worker-default`` is ``worker``)."""
    wanted = set()
    for service in services:
        name = canonical_service(service)
        parsed = parse_worker_name(name)
        if parsed is not None and parsed[0] is not None and parsed[1] is None:
            name = pool_service(parsed[0])
        wanted.add(name)
    return wanted


def _same_bind(address: str) -> str:
    """A bind address compared by meaning: every "all addresses" and loopback spelling."""
    return "0.0.0.0" if address in _ANY else "127.0.0.1" if address in _LOOPBACK else address


def _labels(item: Any) -> dict[str, str]:
    return dict(item.attrs.get("Labels") or item.attrs.get("Config", {}).get("Labels") or {})


def _owner(labels: dict[str, str] | None) -> str:
    labels = labels or {}
    return labels.get(COMPOSE_LABEL_PROJECT) or labels.get(LABEL_PROJECT) or "not Mimir's"


def _replica(container: Any) -> int:
    """A worker's number: ours, or compose's container number."""
    labels = container.labels
    try:
        return int(labels.get(LABEL_REPLICA) or labels.get(COMPOSE_LABEL_NUMBER) or "0")
    except ValueError:
        return 0


def _engine_time(value: Any) -> float | None:
    """Seconds since the epoch of the engine's ``2026-11-30T14:00:00.123456789Z`` (``None``
    for a container never started: ``0001-01-01T00:00:00Z``)."""
    text = str(value or "")
    if not text or text.startswith("0001-"):
        return None
    # Python reads at most microseconds: cut the nanoseconds.
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _hostname(container: Any) -> str:
    """The host name the container's worker registers with."""
    return str(container.attrs.get("Config", {}).get("Hostname") or container.name)


def _split_lines(stream: Iterator[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")
