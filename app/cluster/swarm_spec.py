"""Swarm service specs from the topology: kwargs for docker-py's ``client.services.create``.

Pure (Docker SDK types only, no engine): the Swarm backend creates its services from
:func:`service_specs` and :func:`registry_spec`. Every service is ``<project>_<service>``
on the overlay network ``<project>_mimir-network``, reachable by its topology aliases
(workers reach ``redis`` and ``backend`` by name), and hardened as the topology says:
a non-root ``user``, a read-only root filesystem with a tmpfs ``/tmp``, all capabilities
dropped, a pids limit (``Resources.Limits.Pids``: docker-py has no argument for it, API
1.41 takes it), CPU and memory limits and a healthcheck. ``no-new-privileges`` is not in
API 1.41's ContainerSpec: the images' ``ENTRYPOINT ["setpriv", "--no-new-privs", "--"]``
gives it, so a spec sets ``args``, never ``command`` (which would replace the entrypoint).

Secrets are Docker secrets mounted at :data:`~.topology.SECRETS_DIR` under their plain
names (``mimir_api_token``, ``mimir_redis_password``), readable by the service's user
only (mode 0400): the API token for the backend, the Redis password for Redis (uid 999)
and its clients (uid 10001). No token or password is in a spec's env or args.

Without IPVS (this machine's kernel) neither the routing mesh nor VIPs work, so the
default is ``endpoint_mode="dnsrr"`` with host-mode ports: a published port is open on
every address of the node that runs the task (moby#32299), whatever the topology's
host address says.
"""

from __future__ import annotations

from typing import Any

from docker.types import (
    EndpointSpec,
    Healthcheck,
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    UpdateConfig,
)

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.stack import initial_replicas
from mimir.app.cluster.topology import (
    IMAGES,
    LABEL_SERVICE,
    MIMIR_UID,
    PROMETHEUS,
    REDIS_GID,
    REDIS_UID,
    SECRETS_VOLUME,
    ServiceSpec,
    Topology,
    parse_memory,
    swarm_storage,
)

__all__ = [
    "REGISTRY_DATA",
    "REGISTRY_PORT",
    "REGISTRY_ROOT",
    "SECOND",
    "registry_spec",
    "secret_name",
    "service_specs",
    "swarm_worker_hostname",
]

#: The port the in-swarm registry listens on and publishes.
REGISTRY_PORT = 5000
#: The registry's volume (without the project prefix) and where the registry image
#: (``packaging/Dockerfile.registry``: its configuration's ``rootdirectory``) keeps blobs.
REGISTRY_DATA = "registry_data"
REGISTRY_ROOT = "/var/lib/registry"
#: Nanoseconds: the Swarm API's unit of durations.
SECOND = 1_000_000_000
#: How a task's health is checked (as the Docker backend's containers).
_HEALTH = {"interval": 2 * SECOND, "timeout": 5 * SECOND, "retries": 3}
_START_PERIOD = 30 * SECOND


def swarm_worker_hostname(pool: str) -> str:
    """A worker task's hostname template: ``<pool>-{{.Task.Slot}}-{{.Task.ID}}``.

    Unique per task (a task rescheduled by a drain gets a new ID while the old one may
    still be draining): the worker id is ``worker-<hostname>-<pid>`` and pid is 1 in
    every container. At most 31 (pool) + 1 + 2 (slot ≤ 64 workers) + 1 + 25 (task ID)
    = 60 characters."""
    return f"{pool}-{{{{.Task.Slot}}}}-{{{{.Task.ID}}}}"


def secret_name(topology: Topology, secret: str) -> str:
    """The Docker secret's name of ``secret`` (``mimir_api_token``):
    ``<project>_mimir_api_token``."""
    return f"{topology.project}_{secret}"


def _tmpfs_mount(target: str, options: str) -> Mount:
    """A tmpfs ``Mount`` from Docker's ``--tmpfs`` options (the API takes size and mode
    only; a tmpfs in a service is ``nosuid,nodev`` anyway)."""
    size: int | None = None
    mode: int | None = None
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "size":
            size = parse_memory(value)
        elif key == "mode":
            mode = int(value, 8)
    return Mount(target, None, type="tmpfs", tmpfs_size=size, tmpfs_mode=mode)


def _mounts(spec: ServiceSpec, topology: Topology) -> list[Mount]:
    tmpfs, volumes = swarm_storage(spec)
    mounts = [_tmpfs_mount(target, options) for target, options in tmpfs.items()]
    mounts += [
        Mount(
            m.target,
            topology.volume_name(m.volume),
            type="volume",
            read_only=m.read_only,
            labels=topology.volume_labels(m.volume),
        )
        for m in volumes
        if m.volume != SECRETS_VOLUME  # Docker secrets instead
    ]
    return mounts


def _secret_refs(
    spec: ServiceSpec, topology: Topology, secrets: dict[str, str]
) -> list[SecretReference]:
    """A reference per secret the service reads, owned by its user, mode 0400."""
    uid, gid = (REDIS_UID, REDIS_GID) if spec.kind == "redis" else (MIMIR_UID, MIMIR_UID)
    refs = []
    for secret in spec.secrets:
        name = secret_name(topology, secret)
        secret_id = secrets.get(secret) or secrets.get(name)
        if not secret_id:
            raise ClusterError(f"the Docker secret {name} is missing ({spec.name} reads it)")
        refs.append(
            SecretReference(
                secret_id, name, filename=secret, uid=str(uid), gid=str(gid), mode=0o400
            )
        )
    return refs


def _resources(spec: ServiceSpec) -> Resources:
    resources = Resources(
        cpu_limit=None if spec.cpus is None else int(spec.cpus * 1e9),
        mem_limit=spec.memory_bytes,
    )
    if spec.pids is not None:
        resources.setdefault("Limits", {})["Pids"] = spec.pids
    return resources


def _image(spec: ServiceSpec, images: dict[str, str]) -> str:
    return images.get(spec.name) or images.get(spec.image) or spec.image


def _service(
    spec: ServiceSpec,
    topology: Topology,
    *,
    image: str,
    secrets: list[SecretReference],
    data_constraint: str,
    endpoint_mode: str,
    publish_mode: str,
    grace: float,
    replicas: int,
) -> dict[str, Any]:
    labels = topology.labels(spec.name)
    kwargs: dict[str, Any] = {
        "name": f"{topology.project}_{spec.name}",
        "image": image,
        "args": list(spec.command),
        "env": [f"{key}={value}" for key, value in spec.environment.items()],
        "labels": labels,
        "container_labels": dict(labels),
        "networks": [
            NetworkAttachmentConfig(topology.network_name, aliases=list(spec.aliases) or None)
        ],
        "mode": ServiceMode("replicated", replicas=replicas),
        "resources": _resources(spec),
        "restart_policy": RestartPolicy(condition="any", delay=2 * SECOND),
        "update_config": UpdateConfig(parallelism=1, order="stop-first", failure_action="pause"),
        "stop_grace_period": int(grace * SECOND),
        "stop_signal": "SIGTERM",
        "user": spec.user,
        "read_only": spec.read_only,
        "cap_drop": ["ALL"],
        "cap_add": list(spec.cap_add) or None,
        "mounts": _mounts(spec, topology),
        "secrets": secrets,
    }
    # Ports: the backend's API only (Prometheus is not deployed on a swarm).
    ports = {
        published: (target, "tcp", publish_mode) for target, (_, published) in spec.ports.items()
    }
    kwargs["endpoint_spec"] = EndpointSpec(mode=endpoint_mode, ports=ports or None)
    if spec.healthcheck:
        kwargs["healthcheck"] = Healthcheck(
            test=list(spec.healthcheck), start_period=_START_PERIOD, **_HEALTH
        )
    if spec.pool is not None:
        kwargs["hostname"] = swarm_worker_hostname(spec.pool)
        kwargs["preferences"] = [("spread", "node.id")]
    else:
        kwargs["constraints"] = [data_constraint]
    return kwargs


def service_specs(
    topology: Topology,
    *,
    images: dict[str, str],
    secrets: dict[str, str],
    data_constraint: str,
    endpoint_mode: str = "dnsrr",
    publish_mode: str = "host",
    grace: float,
    replicas: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Service name → kwargs for ``client.services.create(**kwargs)`` of ``topology``'s
    Redis, backend and one service per worker pool (Prometheus, ``up --monitoring``, is
    left out: its configuration is not deployed on a swarm).

    ``images``: the reference each service's nodes pull, by the topology's image (what
    ``push_images`` answers: local → pushed) or by service name; an image not in it is
    used as it is. ``secrets``: secret → the Docker secret's ID, keyed by the plain name
    (``mimir_api_token``) or the project's (``<project>_mimir_api_token``); one a service
    reads and that is missing is a :class:`ClusterError`. ``data_constraint`` (e.g.
    ``node.labels.io.mimir.data==true``) pins Redis and the backend, whose volumes are on
    that node; the workers spread over the nodes. ``grace``: seconds a stopping task gets
    before SIGKILL. ``replicas``: service name → replicas, overriding the topology's
    (``worker``: ``topology.workers``; another pool: its ``initial_replicas``; else 1).
    """
    if endpoint_mode not in ("dnsrr", "vip"):
        raise ClusterError(f"endpoint mode {endpoint_mode!r}: use dnsrr or vip")
    if publish_mode not in ("host", "ingress"):
        raise ClusterError(f"publish mode {publish_mode!r}: use host or ingress")
    if endpoint_mode == "dnsrr" and publish_mode == "ingress":
        raise ClusterError("a dnsrr service publishes in host mode only (ingress needs vip)")
    specs: dict[str, dict[str, Any]] = {}
    for name, spec in topology.services.items():
        if name == PROMETHEUS:
            continue
        specs[name] = _service(
            spec,
            topology,
            image=_image(spec, images),
            secrets=_secret_refs(spec, topology, secrets),
            data_constraint=data_constraint,
            endpoint_mode=endpoint_mode,
            publish_mode=publish_mode,
            grace=grace,
            replicas=(replicas or {}).get(name, initial_replicas(spec, topology)),
        )
    return specs


def registry_spec(
    topology: Topology,
    *,
    image: str = IMAGES["registry"],
    data_constraint: str,
    endpoint_mode: str = "dnsrr",
    publish_mode: str = "host",
    port: int = REGISTRY_PORT,
    user: str | None = None,
) -> dict[str, Any]:
    """Kwargs for ``client.services.create(**kwargs)`` of ``<project>_registry``: Debian's
    docker-registry (``image``, run with its own command), its blobs in the volume
    :data:`REGISTRY_DATA` at :data:`REGISTRY_ROOT`, pinned by ``data_constraint`` to the
    node that has that volume, ``port`` published (host mode by default: on that node's
    addresses), hardened as the other services. ``user``: ``None`` keeps the image's
    (``docker-registry``, uid 10002, owning :data:`REGISTRY_ROOT`)."""
    labels = {**topology.labels(), LABEL_SERVICE: "registry"}
    resources = Resources(cpu_limit=SECOND // 2, mem_limit=parse_memory("256m"))
    resources["Limits"]["Pids"] = 256
    return {
        "name": f"{topology.project}_registry",
        "image": image,
        "env": ["HOME=/tmp", f"REGISTRY_HTTP_ADDR=0.0.0.0:{REGISTRY_PORT}"],
        "labels": labels,
        "container_labels": dict(labels),
        "networks": [NetworkAttachmentConfig(topology.network_name, aliases=["registry"])],
        "mode": ServiceMode("replicated", replicas=1),
        "resources": resources,
        "restart_policy": RestartPolicy(condition="any", delay=2 * SECOND),
        "stop_signal": "SIGTERM",
        "user": user,
        "read_only": True,
        "cap_drop": ["ALL"],
        "mounts": [
            _tmpfs_mount("/tmp", "size=64m,mode=1777"),
            Mount(
                REGISTRY_ROOT,
                topology.volume_name(REGISTRY_DATA),
                type="volume",
                labels=topology.volume_labels(REGISTRY_DATA),
            ),
        ],
        "constraints": [data_constraint],
        "endpoint_spec": EndpointSpec(
            mode=endpoint_mode, ports={port: (REGISTRY_PORT, "tcp", publish_mode)}
        ),
        "healthcheck": Healthcheck(
            test=[
                "CMD",
                "python3",
                "-c",
                "import urllib.request; "
                f"urllib.request.urlopen('http://127.0.0.1:{REGISTRY_PORT}/v2/', timeout=4)",
            ],
            start_period=_START_PERIOD,
            **_HEALTH,
        ),
    }
