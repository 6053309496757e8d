"""The cluster's topology, defined once: services, images, ports, volumes, env, limits, labels.

The Docker backend creates containers from it, the local backend takes the service names
and environment from it, and the compose files in ``packaging/`` are generated from it
(:func:`compose_file`) and checked against it by the tests. Qt-free and Docker-free.

::

    network <project>_net
    redis    (redis:7-alpine, AOF on)            redis_data:/data
    backend  (API, 8080 published on 127.0.0.1)  backend_data, backend_logs,
                                                 backend_plugins, backend_pipelines
    worker x N (queue consumers)                   worker_data, worker_logs
    worker-<pool> x N per further pool             (the same two volumes)
    prometheus (up --monitoring: 9090 on 127.0.0.1) prometheus_data

Workers come in **pools** (:mod:`mimir.core.pools`): one scalable service per pool,
``worker`` for the pool ``default`` and ``worker-<pool>`` for the others, each running
``mimir worker --pool P --queues q1,q2 [--job-types a,b]`` with the pool's concurrency,
environment, image and limits. Its containers carry ``io.mimir.service=worker`` (what they
are) and ``io.mimir.pool=<pool>`` (which group); replica names are ``worker-3`` (default's
third) and ``worker-slow-2`` (slow's second): pool names have no ``-``, so a name parses
one way only (:func:`parse_worker_name`). The backend's environment carries the pools as
``MIMIR_POOLS`` (:func:`~mimir.core.pools.pools_to_env`), and, when a cluster backend
started it, ``MIMIR_CLUSTER_BACKEND`` and ``MIMIR_PROJECT`` (what its autoscaler acts by).

**Monitoring.** ``monitoring=True`` adds the service ``prometheus`` (Debian's Prometheus on
the base image, ``packaging/Dockerfile.prometheus``), published on 127.0.0.1 only (it has no
authentication of its own), its TSDB in the volume ``prometheus_data``; its scrape
configuration is generated from the topology by
:func:`mimir.app.cluster.monitoring.prometheus_config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mimir.app.cluster.base import ClusterError, ServiceKind
from mimir.core.pools import (
    DEFAULT_POOL,
    POOL_NAME_PATTERN,
    POOLS_ENV,
    ClusterFile,
    PoolSpec,
    default_cluster,
    pools_to_env,
)

__all__ = [
    "API_PORT",
    "API_TOKEN_FILE",
    "API_TOKEN_SECRET",
    "COMPOSE_LABEL_NUMBER",
    "COMPOSE_LABEL_PROJECT",
    "COMPOSE_REDIS_PASSWORD",
    "DEFAULT_REDIS_IMAGE",
    "FALLBACK_REDIS_IMAGE",
    "IMAGES",
    "LABEL_NETWORK",
    "LABEL_POOL",
    "LABEL_PROJECT",
    "LABEL_REPLICA",
    "LABEL_SERVICE",
    "LABEL_VOLUME",
    "MIMIR_UID",
    "OPTIONAL_SERVICE_KINDS",
    "PROMETHEUS",
    "PROMETHEUS_CONFIG_DIR",
    "PROMETHEUS_CONFIG_VOLUME",
    "PROMETHEUS_PORT",
    "REDIS_COMMAND",
    "REDIS_GID",
    "REDIS_HEALTHCHECK",
    "REDIS_PASSWORD_FILE",
    "REDIS_PASSWORD_SECRET",
    "REDIS_UID",
    "SECRETS_DIR",
    "SECRETS_VOLUME",
    "SERVICE_KINDS",
    "SWARM_WORKER_SCRATCH",
    "WORKER_HEALTHCHECK",
    "WORKER_HEALTH_FILE",
    "ServiceSpec",
    "Topology",
    "VolumeMount",
    "build_topology",
    "canonical_service",
    "compose_file",
    "parse_memory",
    "parse_scrape_interval",
    "parse_worker_name",
    "pool_service",
    "replica_name",
    "service_kind",
    "swarm_storage",
    "unknown_pool",
    "validate_project_name",
    "worker_command",
]

#: Label naming the cluster (project) a container, volume or network belongs to.
LABEL_PROJECT = "io.mimir.project"
#: Label naming the service (redis, backend, worker) of a container.
LABEL_SERVICE = "io.mimir.service"
#: Label naming the pool of a worker container (``default``, ``slow`` …).
LABEL_POOL = "io.mimir.pool"
#: Label numbering the replicas of a scaled service (1, 2, …).
LABEL_REPLICA = "io.mimir.replica"
#: Label naming a volume of the topology (``redis_data`` …), without the project prefix.
LABEL_VOLUME = "io.mimir.volume"
#: Label naming the cluster's network (``mimir-network``), without the project prefix.
LABEL_NETWORK = "io.mimir.network"
#: What docker-compose itself labels every object it creates with: the project it was
#: started as (``-p``), and a scaled service's replica number. Compose files cannot know
#: the ``-p`` name, so they carry no project label of ours: these tell whose an object is.
COMPOSE_LABEL_PROJECT = "com.docker.compose.project"
COMPOSE_LABEL_NUMBER = "com.docker.compose.container-number"

#: Port the API listens on inside the backend container.
API_PORT = 8080
REDIS_PORT = 6379
#: Port Prometheus listens on inside its container (and, by default, on the host's loopback).
PROMETHEUS_PORT = 9090
#: The monitoring service's name (``up --monitoring``).
PROMETHEUS = "prometheus"
#: Where the Prometheus container finds its generated configuration (copied in at start).
PROMETHEUS_CONFIG_DIR = "/etc/mimir-prometheus"

#: The images the project builds (``mimir cluster build`` / ``packaging/build-distributed.sh``).
IMAGES: dict[str, str] = {
    "backend": "mimir-aip:backend-latest",
    "worker": "mimir-aip:worker-latest",
    "unified": "mimir-aip:unified-latest",
    "prometheus": "mimir-aip:prometheus-latest",
    # Debian's docker-registry on the base image: the Swarm backend's in-swarm registry.
    "registry": "mimir-aip:registry-latest",
}
#: Redis image used when it can be had; otherwise :data:`FALLBACK_REDIS_IMAGE` is built.
DEFAULT_REDIS_IMAGE = "redis:7-alpine"
#: Built from the base image with Debian's redis-server (``packaging/Dockerfile.redis``).
FALLBACK_REDIS_IMAGE = "mimir-aip:redis-latest"

#: The user the backend, worker and Prometheus images run as (``mimir``).
MIMIR_UID = 10001
#: The user and group Redis runs as (as in the official redis:7-alpine; the fallback
#: Debian image is made to match).
REDIS_UID = 999
REDIS_GID = 1000
#: Where every container finds its secrets (a read-only volume, Docker secrets, a
#: Kubernetes Secret volume): the API token and the Redis password, one file each.
SECRETS_DIR = "/run/secrets"
API_TOKEN_SECRET = "mimir_api_token"
REDIS_PASSWORD_SECRET = "mimir_redis_password"
API_TOKEN_FILE = f"{SECRETS_DIR}/{API_TOKEN_SECRET}"
REDIS_PASSWORD_FILE = f"{SECRETS_DIR}/{REDIS_PASSWORD_SECRET}"
#: The file a worker touches after each successful heartbeat (``MIMIR_WORKER_HEALTH_FILE``);
#: its healthcheck is that file's age. /tmp is a tmpfs in every container.
WORKER_HEALTH_FILE = "/tmp/mimir-worker-heartbeat"

#: Service name → the protocol's kind. ``server`` is accepted as a name for ``backend``.
SERVICE_KINDS: dict[str, ServiceKind] = {"redis": "redis", "backend": "server", "worker": "worker"}
#: Services a cluster has only when asked for (``up --monitoring``): name → kind.
OPTIONAL_SERVICE_KINDS: dict[str, ServiceKind] = {PROMETHEUS: "prometheus"}

_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}")


def validate_project_name(project: str) -> str:
    """Return ``project`` if usable as a container/volume name prefix, else raise."""
    if not _PROJECT_RE.fullmatch(project):
        raise ClusterError(
            f"invalid project name {project!r}: use 1-41 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return project


def canonical_service(name: str) -> str:
    """A service name as the topology spells it: ``server`` is ``backend``."""
    return "backend" if name == "server" else name


def pool_service(pool: str) -> str:
    """The service of a pool's workers: ``worker`` for ``default``, else ``worker-<pool>``."""
    return "worker" if pool == DEFAULT_POOL else f"worker-{pool}"


def replica_name(pool: str, replica: int) -> str:
    """A worker's name: ``worker-3`` (default's third), ``worker-slow-2`` (slow's second)."""
    return f"{pool_service(pool)}-{replica}"


_WORKER_NAME_RE = re.compile(rf"worker(?:-({POOL_NAME_PATTERN}))?(?:-([0-9]+))?")


def parse_worker_name(name: str) -> tuple[str | None, int | None] | None:
    """What a worker name designates, as ``(pool, replica)``: ``worker`` → ``(None, None)``
    (every worker of every pool), ``worker-3`` → ``("default", 3)``, ``worker-slow`` →
    ``("slow", None)`` (the pool's workers), ``worker-slow-2`` → ``("slow", 2)``,
    ``worker-default`` → ``("default", None)``; ``None`` when it names no worker."""
    match = _WORKER_NAME_RE.fullmatch(name)
    if match is None:
        return None
    pool, replica = match.group(1), match.group(2)
    if pool is None and replica is None:
        return None, None
    return pool or DEFAULT_POOL, None if replica is None else int(replica)


def service_kind(name: str) -> ServiceKind | None:
    """The kind of the service ``name`` (``worker-slow`` is a worker), ``None`` if unknown."""
    name = canonical_service(name)
    if name in SERVICE_KINDS:
        return SERVICE_KINDS[name]
    if name in OPTIONAL_SERVICE_KINDS:
        return OPTIONAL_SERVICE_KINDS[name]
    parsed = parse_worker_name(name)
    return "worker" if parsed is not None and parsed[1] is None else None


def unknown_pool(pool: str, cluster: ClusterFile) -> ClusterError:
    """The error for a pool ``cluster`` does not have, naming those it has."""
    return ClusterError(f"unknown pool {pool!r}; this cluster has {', '.join(cluster.pools)}")


def worker_command(pool: PoolSpec, program: list[str] | None = None) -> list[str]:
    """``mimir worker --pool P --queues q1,q2 [--job-types a,b]`` for ``pool`` (``program``
    replaces ``mimir worker``, e.g. ``python -m mimir.worker``)."""
    command = [*(program or ["mimir", "worker"]), "--pool", pool.name]
    command += ["--queues", ",".join(pool.queues)]
    if pool.job_types is not None:
        command += ["--job-types", ",".join(pool.job_types)]
    return command


_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h)")


def parse_scrape_interval(value: str) -> float:
    """Seconds of a Prometheus duration as ``--scrape-interval`` takes it: ``15s``, ``500ms``,
    ``1m``, ``1h`` (one number and one unit); :class:`ClusterError` otherwise."""
    match = _DURATION_RE.fullmatch(value.strip())
    if not match or int(match.group(1)) == 0:
        raise ClusterError(
            f"invalid scrape interval {value!r}: use a Prometheus duration such as 15s, 500ms or 1m"
        )
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return int(match.group(1)) * unit


def parse_memory(value: str | int) -> int:
    """``"512m"``/``"1g"``/``"1G"``/bytes → bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)[bB]?\s*", value)
    if not match:
        raise ClusterError(f"invalid memory size {value!r}; use e.g. 512m or 1g")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])


@dataclass(frozen=True)
class VolumeMount:
    """A named volume (without the project prefix) mounted at ``target``."""

    volume: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the cluster, as a container (or process group) definition."""

    name: str
    kind: ServiceKind
    image: str
    command: list[str]
    environment: dict[str, str]
    volumes: list[VolumeMount] = field(default_factory=list)
    #: Container port → (host address, host port), published on the host.
    ports: dict[int, tuple[str, int]] = field(default_factory=dict)
    #: CPU limit in cores (``None``: unlimited).
    cpus: float | None = None
    #: Memory limit, e.g. ``"512m"`` (``None``: unlimited).
    memory: str | None = None
    #: Health check command run inside the container.
    healthcheck: list[str] | None = None
    #: Network aliases other services reach this one by.
    aliases: list[str] = field(default_factory=list)
    #: Scaled service (workers): several replicas, no fixed container name.
    scalable: bool = False
    #: The pool of a worker service (``None`` for redis and backend).
    pool: str | None = None
    #: The user it runs as (``"10001:10001"``; ``None``: the image's).
    user: str | None = None
    #: A read-only root filesystem (writable: its volumes and :attr:`tmpfs`).
    read_only: bool = True
    #: tmpfs mounts: target → mount options (``"size=64m,mode=1777"``).
    tmpfs: dict[str, str] = field(default_factory=dict)
    #: Capabilities added back after dropping all of them (none is expected).
    cap_add: list[str] = field(default_factory=list)
    #: Process limit (``None``: unlimited).
    pids: int | None = None
    #: The secrets it reads (:data:`API_TOKEN_SECRET`, :data:`REDIS_PASSWORD_SECRET`),
    #: as files in :data:`SECRETS_DIR`.
    secrets: list[str] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)


@dataclass(frozen=True)
class Topology:
    """The whole cluster of one project."""

    project: str
    services: dict[str, ServiceSpec]
    #: Volume names without the project prefix.
    volumes: list[str]
    network: str = "mimir-network"
    #: Replicas of the default pool the topology was built for.
    workers: int = 2
    #: The pools its worker services run (one service per pool, in the cluster's order).
    cluster: ClusterFile = field(default_factory=default_cluster)
    #: How often Prometheus scrapes (a Prometheus duration), when the topology has it.
    scrape_interval: str = "15s"
    #: The API server's token (``None``: an open API on loopback).
    api_token: str | None = None

    @property
    def monitoring(self) -> bool:
        """True when the cluster has its Prometheus service (``up --monitoring``)."""
        return PROMETHEUS in self.services

    def worker_services(self) -> list[ServiceSpec]:
        """The pools' worker services, in the cluster's order."""
        return [spec for spec in self.services.values() if spec.pool is not None]

    def pool_spec(self, pool: str) -> ServiceSpec:
        """The worker service of ``pool``; :class:`ClusterError` naming the known pools."""
        if pool not in self.cluster.pools:
            raise unknown_pool(pool, self.cluster)
        return self.services[pool_service(pool)]

    def service(self, name: str) -> ServiceSpec:
        """The service called ``name`` (``server`` means ``backend``)."""
        name = canonical_service(name)
        try:
            return self.services[name]
        except KeyError:
            raise ClusterError(
                f"unknown service {name!r}; choose from {', '.join(self.services)}"
            ) from None

    def volume_name(self, volume: str) -> str:
        """The engine-side name of a volume: ``<project>_<volume>`` as compose names it."""
        return f"{self.project}_{volume}"

    @property
    def network_name(self) -> str:
        return f"{self.project}_{self.network}"

    def container_name(self, service: str, replica: int = 1) -> str:
        """``<project>-<service>`` or ``<project>-worker-<n>`` for a scaled service."""
        spec = self.service(service)
        if spec.scalable:
            return f"{self.project}-{spec.name}-{replica}"
        return f"{self.project}-{spec.name}"

    def labels(self, service: str | None = None, replica: int | None = None) -> dict[str, str]:
        """Labels that tie a container to this project (and service, replica)."""
        labels = {LABEL_PROJECT: self.project}
        if service is not None:
            spec = self.service(service)
            # Every pool's workers are of the service "worker"; their pool says which.
            labels[LABEL_SERVICE] = "worker" if spec.pool is not None else spec.name
            if spec.pool is not None:
                labels[LABEL_POOL] = spec.pool
        if replica is not None:
            labels[LABEL_REPLICA] = str(replica)
        return labels

    def volume_labels(self, volume: str) -> dict[str, str]:
        return {LABEL_PROJECT: self.project, LABEL_VOLUME: volume}

    def network_labels(self) -> dict[str, str]:
        return {LABEL_PROJECT: self.project, LABEL_NETWORK: self.network}


def _python_http_check(port: int, path: str = "/ready") -> list[str]:
    # The images have no curl; Python is always there. /ready fails while Redis is away
    # (/health would stay 200), so a backend that cannot queue anything shows as unhealthy.
    return [
        "CMD",
        "python3",
        "-c",
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}', "
        "timeout=4)",
    ]


#: A worker is healthy while its heartbeat file is younger than 3 heartbeats
#: (``MIMIR_WORKER_HEARTBEAT``, seconds, default 2, read from the container's environment).
WORKER_HEALTHCHECK = [
    "CMD",
    "python3",
    "-c",
    "import os, sys, time; "
    "beat = float(os.environ.get('MIMIR_WORKER_HEARTBEAT') or 2); "
    f"path = os.environ.get('MIMIR_WORKER_HEALTH_FILE') or '{WORKER_HEALTH_FILE}'; "
    "sys.exit(time.time() - os.stat(path).st_mtime > 3 * beat)",
]

#: Redis's start: its configuration (the password from the secret file, ``maxmemory`` from
#: ``MIMIR_REDIS_MAXMEMORY``, never evicting) written to a tmpfs only its user can read,
#: so the password is in no argv, environment or image.
REDIS_COMMAND = [
    "sh",
    "-c",
    f'test -s {REDIS_PASSWORD_FILE} || {{ echo "no Redis password in {REDIS_PASSWORD_FILE}" >&2; '
    "exit 1; } && umask 077 && "
    "printf 'requirepass %s\\nmaxmemory %s\\nmaxmemory-policy noeviction\\n' "
    f'"$(cat {REDIS_PASSWORD_FILE})" "${{MIMIR_REDIS_MAXMEMORY:-768mb}}" > /tmp/redis.conf && '
    "exec redis-server /tmp/redis.conf --appendonly yes --dir /data --protected-mode yes",
]
REDIS_HEALTHCHECK = [
    "CMD-SHELL",
    f'REDISCLI_AUTH="$(cat {REDIS_PASSWORD_FILE})" redis-cli ping | grep -q PONG',
]

#: The service's secrets volume (read-only in the containers): the Docker backend makes one
#: per set of secrets (``secrets_<names>``: each container sees only the secrets its
#: service lists) and fills it; Swarm, a stack and Kubernetes use their own secrets.
SECRETS_VOLUME = "secrets"
#: Where the Prometheus configuration is copied in before its container starts (a volume:
#: the container's root filesystem is read-only, and a tmpfs is not there before start).
PROMETHEUS_CONFIG_VOLUME = "prometheus_config"
#: On a swarm a worker's volumes are tmpfs of its task (this size each): workers keep
#: nothing that must outlive a job, and a named volume would be made on every node a task
#: ever ran on, where ``cluster clean`` (it talks to the manager) cannot remove it.
SWARM_WORKER_SCRATCH = "size=256m,mode=1777"


def swarm_storage(spec: ServiceSpec) -> tuple[dict[str, str], list[VolumeMount]]:
    """``spec``'s (tmpfs, volumes) on a swarm: a worker's volumes become tmpfs
    (:data:`SWARM_WORKER_SCRATCH`); the secrets volume stays for the caller to leave out
    (Docker secrets stand for it); redis and the backend keep theirs (pinned to a node)."""
    if spec.pool is None:
        return dict(spec.tmpfs), list(spec.volumes)
    tmpfs = dict(spec.tmpfs)
    volumes = []
    for mount in spec.volumes:
        if mount.volume == SECRETS_VOLUME:
            volumes.append(mount)
        else:
            tmpfs[mount.target] = SWARM_WORKER_SCRATCH
    return tmpfs, volumes


#: Process limits (``pids``): the server runs more threads than a worker.
PIDS = {"redis": 256, "server": 512, "worker": 256, "prometheus": 256}
_MIMIR_USER = f"{MIMIR_UID}:{MIMIR_UID}"
_REDIS_USER = f"{REDIS_UID}:{REDIS_GID}"
#: /tmp of every container: a tmpfs (it counts against the container's memory limit).
_TMP_SMALL = {"/tmp": "rw,noexec,nosuid,nodev,size=64m,mode=1777"}
_TMP_APP = {"/tmp": "rw,noexec,nosuid,nodev,size=256m,mode=1777"}
#: What the Mimir images' processes need with a read-only root: HOME on the tmpfs (caches,
#: libraries' config dirs), no bytecode written next to the installed modules.
_READ_ONLY_ENV = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}


def _secret_mounts(secrets: list[str]) -> list[VolumeMount]:
    return [VolumeMount(SECRETS_VOLUME, SECRETS_DIR, read_only=True)] if secrets else []


def build_topology(
    project: str = "mimir",
    *,
    workers: int = 2,
    api_host: str = "127.0.0.1",
    api_port: int = API_PORT,
    api_token: str | None = None,
    redis_image: str = DEFAULT_REDIS_IMAGE,
    backend_image: str = IMAGES["backend"],
    worker_image: str = IMAGES["worker"],
    worker_concurrency: int = 5,
    worker_grace: float | None = None,
    log_level: str = "INFO",
    backend_cpus: float | None = 1.0,
    backend_memory: str | None = "1g",
    worker_cpus: float | None = 0.5,
    worker_memory: str | None = "512m",
    redis_cpus: float | None = 1.0,
    redis_memory: str | None = "1g",
    redis_maxmemory: str = "768mb",
    fuseki_url: str | None = None,
    cluster: ClusterFile | None = None,
    cluster_backend: str | None = None,
    monitoring: bool = False,
    prometheus_port: int = PROMETHEUS_PORT,
    prometheus_image: str = IMAGES["prometheus"],
    scrape_interval: str = "15s",
) -> Topology:
    """The seed's distributed topology for ``project``, with one worker service per pool of
    ``cluster`` (default: :func:`~mimir.core.pools.default_cluster`, one pool ``default``).

    The API is published on ``api_host:api_port``; anything but loopback needs ``api_token``
    (an API reachable from the network must not be open). A pool's own concurrency, image,
    CPU and memory win over ``worker_concurrency``, ``worker_image``, ``worker_cpus`` and
    ``worker_memory`` (which a pool that leaves them at their defaults gets).
    ``cluster_backend`` (``docker``, ``local``) goes to the backend as
    ``MIMIR_CLUSTER_BACKEND``: the backend its autoscaler scales the pools through.
    ``monitoring`` adds the service ``prometheus`` (module doc), published on
    ``127.0.0.1:prometheus_port`` whatever ``api_host`` is, scraping every ``scrape_interval``.

    Every service is hardened: a non-root ``user``, a read-only root filesystem with a
    tmpfs ``/tmp``, all capabilities dropped, a pids limit, CPU and memory limits and a
    healthcheck. Secrets are files in :data:`SECRETS_DIR` (``secrets``: the API token for
    the backend, the Redis password for Redis, the backend and the workers), never in an
    environment: the backend gets ``MIMIR_API_TOKEN_FILE``, the Redis clients
    ``MIMIR_REDIS_PASSWORD_FILE`` (:attr:`Topology.api_token` keeps the token itself).
    Redis runs with ``maxmemory redis_maxmemory`` and ``noeviction``.
    """
    cluster = cluster or default_cluster()
    validate_project_name(project)
    if workers < 0:
        raise ClusterError(f"workers must be 0 or more, got {workers}")
    parse_scrape_interval(scrape_interval)
    if not 0 < prometheus_port < 65536:
        raise ClusterError(f"invalid Prometheus port {prometheus_port}: use 1-65535")
    if api_host not in {"127.0.0.1", "localhost", "::1"} and not api_token:
        raise ClusterError(
            f"the API would be published on {api_host}, beyond this machine: set an API token "
            "(MIMIR_API_TOKEN or the profile's api_token) first"
        )
    redis_url = f"redis://redis:{REDIS_PORT}/0"
    common = {
        "MIMIR_LOG_LEVEL": log_level,
        "REDIS_URL": redis_url,
        "MIMIR_REDIS_PASSWORD_FILE": REDIS_PASSWORD_FILE,
        "MIMIR_PROJECT": project,
        **_READ_ONLY_ENV,
    }
    if fuseki_url:
        common["FUSEKI_URL"] = fuseki_url
    backend_env = {
        **common,
        "MIMIR_PORT": str(API_PORT),
        "MIMIR_DATA_DIR": "/app/data",
        "MIMIR_LOG_DIR": "/app/logs",
        "MIMIR_PLUGIN_DIR": "/app/plugins",
        "MIMIR_PIPELINES_DIR": "/app/pipelines",
        POOLS_ENV: pools_to_env(cluster),
    }
    if cluster_backend:
        backend_env["MIMIR_CLUSTER_BACKEND"] = cluster_backend
    backend_command = ["mimir", "server", "--host", "0.0.0.0", "--port", str(API_PORT)]
    backend_secrets = [REDIS_PASSWORD_SECRET]
    if api_token:
        backend_env["MIMIR_API_TOKEN_FILE"] = API_TOKEN_FILE
        backend_secrets.insert(0, API_TOKEN_SECRET)
    else:
        # Bound to 0.0.0.0 inside its network namespace, published on loopback only.
        backend_command.append("--insecure")
    worker_env = {
        **common,
        "MIMIR_DATA_DIR": "/app/data",
        "MIMIR_LOG_DIR": "/app/logs",
        "MIMIR_WORKER_HEALTH_FILE": WORKER_HEALTH_FILE,
    }
    if worker_grace is not None:
        # Seconds a stopping worker lets its jobs finish before handing them back.
        worker_env["MIMIR_WORKER_GRACE"] = f"{worker_grace:g}"
    redis_secrets = [REDIS_PASSWORD_SECRET]
    services = {
        "redis": ServiceSpec(
            name="redis",
            kind="redis",
            image=redis_image,
            # Protected mode stays on: with a password it does not refuse remote clients.
            command=list(REDIS_COMMAND),
            environment={"MIMIR_REDIS_MAXMEMORY": redis_maxmemory},
            volumes=[VolumeMount("redis_data", "/data"), *_secret_mounts(redis_secrets)],
            cpus=redis_cpus,
            memory=redis_memory,
            healthcheck=list(REDIS_HEALTHCHECK),
            aliases=["redis"],
            user=_REDIS_USER,
            tmpfs=dict(_TMP_SMALL),
            pids=PIDS["redis"],
            secrets=redis_secrets,
        ),
        "backend": ServiceSpec(
            name="backend",
            kind="server",
            image=backend_image,
            command=backend_command,
            environment=backend_env,
            volumes=[
                VolumeMount("backend_data", "/app/data"),
                VolumeMount("backend_logs", "/app/logs"),
                VolumeMount("backend_plugins", "/app/plugins"),
                VolumeMount("backend_pipelines", "/app/pipelines"),
                *_secret_mounts(backend_secrets),
            ],
            ports={API_PORT: (api_host, api_port)},
            cpus=backend_cpus,
            memory=backend_memory,
            healthcheck=_python_http_check(API_PORT),
            aliases=["backend"],
            user=_MIMIR_USER,
            tmpfs=dict(_TMP_APP),
            pids=PIDS["server"],
            secrets=backend_secrets,
        ),
    }
    for pool in cluster.pools.values():
        services[pool_service(pool.name)] = _pool_service(
            pool,
            worker_env,
            image=worker_image,
            concurrency=worker_concurrency,
            cpus=worker_cpus,
            memory=worker_memory,
        )
    if monitoring:
        services[PROMETHEUS] = _prometheus_service(
            prometheus_image, prometheus_port, token=bool(api_token)
        )
    # Every pool's workers share the two worker volumes; the secrets' volume comes last.
    volumes = list(dict.fromkeys(m.volume for spec in services.values() for m in spec.volumes))
    volumes.sort(key=lambda volume: volume == SECRETS_VOLUME)
    return Topology(
        project=project,
        services=services,
        volumes=volumes,
        workers=workers,
        cluster=cluster,
        scrape_interval=scrape_interval,
        api_token=api_token or None,
    )


def _prometheus_service(image: str, port: int, *, token: bool) -> ServiceSpec:
    """Prometheus, loopback-published (it has no authentication), its TSDB in a volume; it
    scrapes the API with the token's secret file when the API has one."""
    secrets = [API_TOKEN_SECRET] if token else []
    return ServiceSpec(
        name=PROMETHEUS,
        kind="prometheus",
        image=image,
        command=[
            "prometheus",
            f"--config.file={PROMETHEUS_CONFIG_DIR}/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
        ],
        environment={"HOME": "/tmp"},
        volumes=[
            VolumeMount("prometheus_data", "/prometheus"),
            VolumeMount(PROMETHEUS_CONFIG_VOLUME, PROMETHEUS_CONFIG_DIR),
            *_secret_mounts(secrets),
        ],
        ports={PROMETHEUS_PORT: ("127.0.0.1", port)},
        cpus=0.5,
        memory="512m",
        healthcheck=_python_http_check(PROMETHEUS_PORT, "/-/ready"),
        aliases=[PROMETHEUS],
        user=_MIMIR_USER,
        tmpfs=dict(_TMP_SMALL),
        pids=PIDS["prometheus"],
        secrets=secrets,
    )


#: A pool's limits when its file sets none.
_POOL_CPUS = PoolSpec.model_fields["cpus"].default
_POOL_MEMORY = PoolSpec.model_fields["memory"].default


def _pool_service(
    pool: PoolSpec,
    common: dict[str, str],
    *,
    image: str,
    concurrency: int,
    cpus: float | None,
    memory: str | None,
) -> ServiceSpec:
    """The scalable worker service of ``pool``; its own settings win over the backend's."""
    environment = {
        **common,
        "WORKER_CONCURRENCY": str(pool.concurrency or concurrency),
        **pool.environment,
    }
    secrets = [REDIS_PASSWORD_SECRET]
    return ServiceSpec(
        name=pool_service(pool.name),
        kind="worker",
        image=pool.image or image,
        command=worker_command(pool),
        environment=environment,
        volumes=[
            VolumeMount("worker_data", "/app/data"),
            VolumeMount("worker_logs", "/app/logs"),
            *_secret_mounts(secrets),
        ],
        # A pool that leaves its limits at the defaults gets the backend's (``resources``).
        cpus=cpus if pool.cpus == _POOL_CPUS else pool.cpus,
        memory=memory if pool.memory == _POOL_MEMORY else pool.memory,
        healthcheck=list(WORKER_HEALTHCHECK),
        scalable=True,
        pool=pool.name,
        user=_MIMIR_USER,
        tmpfs=dict(_TMP_APP),
        pids=PIDS["worker"],
        secrets=secrets,
    )


#: The compose profile of the monitoring service: ``docker-compose --profile monitoring up``.
COMPOSE_MONITORING_PROFILE = "monitoring"
#: Where compose finds Prometheus's configuration, relative to the compose file.
COMPOSE_PROMETHEUS_CONFIG = "./prometheus/prometheus.yml"


#: The compose files' Redis password: compose substitutes the operator's
#: ``MIMIR_REDIS_PASSWORD`` and refuses to start without one. File format 2.4 has no
#: secrets, so with compose the password is in the containers' environment (Redis's
#: ``REDIS_PASSWORD``, the clients' ``REDIS_URL``): ``docker inspect`` shows it. The stack
#: file (``packaging/docker-stack.yml``) and the backends use secret files instead.
COMPOSE_REDIS_PASSWORD = (
    "${MIMIR_REDIS_PASSWORD:?set MIMIR_REDIS_PASSWORD to a long random secret, "
    "e.g. the output of openssl rand -hex 32}"
)
COMPOSE_REDIS_URL = f"redis://:${{MIMIR_REDIS_PASSWORD}}@redis:{REDIS_PORT}/0"
#: Redis under compose: the same configuration as :data:`REDIS_COMMAND`, the password from
#: the environment (``$$``: compose's escape of a ``$`` for the container's shell).
COMPOSE_REDIS_COMMAND = [
    "sh",
    "-c",
    "umask 077 && printf 'requirepass %s\\nmaxmemory %s\\nmaxmemory-policy noeviction\\n' "
    '"$$REDIS_PASSWORD" "$${MIMIR_REDIS_MAXMEMORY:-768mb}" > /tmp/redis.conf && '
    "exec redis-server /tmp/redis.conf --appendonly yes --dir /data --protected-mode yes",
]
COMPOSE_REDIS_HEALTHCHECK = [
    "CMD-SHELL",
    'REDISCLI_AUTH="$$REDIS_PASSWORD" redis-cli ping | grep -q PONG',
]
#: Volumes the compose files do without: secrets come from the environment there, and
#: Prometheus's configuration is a file beside the compose file.
_NOT_IN_COMPOSE = {SECRETS_VOLUME, PROMETHEUS_CONFIG_VOLUME}
_SECRET_FILE_ENV = {"MIMIR_API_TOKEN_FILE", "MIMIR_REDIS_PASSWORD_FILE"}


def _compose_environment(spec: ServiceSpec, topology: Topology) -> dict[str, str]:
    """The service's environment under compose: secrets from the operator's environment
    (compose 2.4 has no secret files)."""
    env = {k: v for k, v in spec.environment.items() if k not in _SECRET_FILE_ENV}
    if spec.kind == "redis":
        env["REDIS_PASSWORD"] = COMPOSE_REDIS_PASSWORD
        env["MIMIR_REDIS_MAXMEMORY"] = (
            "${MIMIR_REDIS_MAXMEMORY:-" + env.get("MIMIR_REDIS_MAXMEMORY", "768mb") + "}"
        )
    elif REDIS_PASSWORD_SECRET in spec.secrets:
        env["REDIS_URL"] = COMPOSE_REDIS_URL
    if spec.kind == "server" and API_TOKEN_SECRET in spec.secrets and topology.api_token:
        env["MIMIR_API_TOKEN"] = topology.api_token
    return env


def _compose_service(spec: ServiceSpec, topology: Topology) -> dict[str, Any]:
    out: dict[str, Any] = {}
    built = {image: which for which, image in IMAGES.items()}
    if spec.kind == "prometheus":
        # Only with `--profile monitoring`; its configuration is a file beside the compose
        # file (generated like it), mounted read-only.
        out["profiles"] = [COMPOSE_MONITORING_PROFILE]
    if spec.kind in ("server", "worker", "prometheus"):
        if spec.image in built:  # a pool's own image is pulled, not built here
            out["build"] = {
                "context": ".",
                "dockerfile": f"Dockerfile.{built[spec.image]}",
                "args": {"BASE_IMAGE": "${BASE_IMAGE:-python:3.11-slim}"},
            }
        out["image"] = spec.image
    else:
        out["image"] = "${REDIS_IMAGE:-" + spec.image + "}"
    out["restart"] = "unless-stopped"
    out["command"] = list(COMPOSE_REDIS_COMMAND if spec.kind == "redis" else spec.command)
    env = _compose_environment(spec, topology)
    if env:
        if spec.name == "worker":
            env["WORKER_CONCURRENCY"] = "${WORKER_CONCURRENCY:-" + env["WORKER_CONCURRENCY"] + "}"
        out["environment"] = env
    if spec.ports and spec.kind == "prometheus":
        # Loopback only, whatever MIMIR_BIND says: Prometheus has no authentication.
        out["ports"] = [
            f"{host}:${{PROMETHEUS_PORT:-{port}}}:{container}"
            for container, (host, port) in spec.ports.items()
        ]
    elif spec.ports:
        out["ports"] = [
            f"${{MIMIR_BIND:-{host}}}:${{MIMIR_PORT:-{port}}}:{container}"
            for container, (host, port) in spec.ports.items()
        ]
    volumes = [
        f"{m.volume}:{m.target}" + (":ro" if m.read_only else "")
        for m in spec.volumes
        if m.volume not in _NOT_IN_COMPOSE
    ]
    if spec.kind == "prometheus":
        volumes.append(f"{COMPOSE_PROMETHEUS_CONFIG}:{PROMETHEUS_CONFIG_DIR}/prometheus.yml:ro")
    if volumes:
        out["volumes"] = volumes
    healthcheck = COMPOSE_REDIS_HEALTHCHECK if spec.kind == "redis" else spec.healthcheck
    if healthcheck:
        out["healthcheck"] = {
            "test": list(healthcheck),
            "interval": "5s",
            "timeout": "5s",
            "retries": 10,
        }
    if spec.kind in ("server", "worker"):
        out["depends_on"] = {"redis": {"condition": "service_healthy"}}
    if spec.kind == "prometheus":
        out["depends_on"] = {"backend": {"condition": "service_started"}}
    # Hardening (module doc of build_topology): compose 2.4 has every key of it.
    if spec.user is not None:
        out["user"] = spec.user
    out["read_only"] = spec.read_only
    if spec.tmpfs:
        out["tmpfs"] = [f"{target}:{options}" for target, options in spec.tmpfs.items()]
    out["security_opt"] = ["no-new-privileges:true"]
    out["cap_drop"] = ["ALL"]
    if spec.cap_add:
        out["cap_add"] = list(spec.cap_add)
    if spec.pids is not None:
        out["pids_limit"] = spec.pids
    if spec.cpus is not None:
        out["cpus"] = spec.cpus
    if spec.memory is not None:
        out["mem_limit"] = spec.memory
    # The service label as the Docker backend sets it; the project is compose's own label
    # (com.docker.compose.project, whatever -p says), so `mimir cluster status --project x`
    # sees `docker-compose -p x`'s containers, and no other project's.
    out["labels"] = {LABEL_SERVICE: spec.name}
    if spec.pool is not None:
        out["labels"] = {LABEL_SERVICE: "worker", LABEL_POOL: spec.pool}
    out["networks"] = [topology.network]
    return out


def compose_file(topology: Topology) -> dict[str, Any]:
    """The docker-compose (file format 2.4) document describing ``topology``.

    Format 2.4 because docker-compose 1.x applies its ``cpus``/``mem_limit`` without swarm
    and with ``--scale`` (3.x's ``deploy.resources`` needs ``--compatibility``).
    """
    services = {name: _compose_service(spec, topology) for name, spec in topology.services.items()}
    volumes = [name for name in topology.volumes if name not in _NOT_IN_COMPOSE]
    return {
        "version": "2.4",
        "services": services,
        "volumes": {name: {"labels": {LABEL_VOLUME: name}} for name in volumes},
        "networks": {
            topology.network: {"driver": "bridge", "labels": {LABEL_NETWORK: topology.network}}
        },
    }
