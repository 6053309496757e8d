"""The Docker Swarm backend: the topology of :mod:`.topology` as Swarm services on a manager.

A subclass of :class:`~.docker_backend.DockerBackend`: the engine connection (profile, TLS,
SSH tunnel), error translation and image builds are the Docker backend's; what differs is
that every service is a Swarm service (``<project>_<service>``, through the SDK's services
API) whose tasks the swarm places on its nodes. The service definitions come from
:func:`~.swarm_spec.service_specs` (the same pure function the stack file uses).

- **No IPVS here** (and on many kernels): every service uses ``endpoint_mode: dnsrr`` and
  host-mode ports unless ``routing_mesh`` (``--routing-mesh``: ``vip`` + ingress publishing).
- **The token rule**: Swarm publishes a port on every address of the node (moby#32299; no
  service can bind it to one address), so ``up`` refuses to start without an API token
  before it touches the engine, unless the API port is not published at all
  (``publish_api=False``).
- **Secrets**: ``<project>_mimir_api_token`` and ``<project>_mimir_redis_password`` are
  Docker secrets (made at ``up`` from the token and a generated password, labelled with
  their sha256; kept when they exist, as Docker cannot read them back, and ``up`` with
  another token is refused; ``down`` removes them). No token is ever in a
  service's environment.
- **Images reach every node** through a registry: the service ``<project>_registry``
  (Debian's docker-registry, ``mimir-aip:registry-latest``, run by image ID and pinned to
  the manager, published host-mode on 5000) unless ``registry`` (``--registry HOST:PORT``)
  names one. Images are pushed there (:meth:`push_images`) and services run the registry
  refs pinned to the pushed digest (``ref@sha256:…``), so no node tries docker.io and no
  later task runs another image pushed under the tag (the registry has no auth: 5000/tcp of
  the manager is for the swarm's nodes only). Every node's dockerd must trust that registry
  (``insecure-registries`` or TLS); a one-node swarm uses ``127.0.0.1:5000``, which dockerd
  trusts by default.
- **Placement**: Redis and the API server (their volumes) are pinned to the data node
  (``data_node``, default the manager); workers spread over the nodes.
- **Not on swarm yet**: ``--monitoring`` and autoscaled pools (refused with that message).
- **Stats**: tasks on the manager from the engine; worker tasks on other nodes from their
  heartbeats (``GET /api/v1/workers``: the worker's own CPU % and RSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue as queue_module
import re
import secrets as secrets_module
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import docker
import docker.errors
import docker.types

from mimir.app.cluster.base import (
    ClusterError,
    ClusterStatus,
    LogLine,
    Progress,
    ServiceKind,
    ServiceStats,
    ServiceStatus,
)
from mimir.app.cluster.docker_backend import DockerBackend
from mimir.app.cluster.docker_engine import cpu_percent, memory_used, parse_docker_time
from mimir.app.cluster.instances import Instance
from mimir.app.cluster.readiness import wait_until_ready
from mimir.app.cluster.swarm_spec import (
    REGISTRY_PORT,
    registry_spec,
    service_specs,
    swarm_worker_hostname,
)
from mimir.app.cluster.topology import (
    API_PORT,
    API_TOKEN_SECRET,
    IMAGES,
    LABEL_POOL,
    LABEL_PROJECT,
    LABEL_SERVICE,
    REDIS_PASSWORD_SECRET,
    SERVICE_KINDS,
    Topology,
    canonical_service,
    parse_worker_name,
    pool_service,
    unknown_pool,
)
from mimir.app.cluster.worker_pool import check_pool_count, check_worker_count, worker_health
from mimir.core.pools import (
    DEFAULT_POOL,
    POOLS_ENV,
    ClusterFile,
    ClusterFileError,
    default_cluster,
    pools_from_env,
    pools_to_env,
)

__all__ = [
    "STACK_NAMESPACE",
    "SwarmBackend",
    "render_hostname",
]

logger = logging.getLogger(__name__)

#: The label ``docker stack deploy`` puts on what it creates: the stack's name.
STACK_NAMESPACE = "com.docker.stack.namespace"
REGISTRY = "registry"
#: The label every container of a swarm task carries: its service's name.
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"
#: Task states that end a task for good (what ``up`` reports as a failure).
_FAILED = frozenset({"failed", "rejected"})
#: Task states on the way to running, or running (the others ended).
_ACTIVE = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting",
     "running"}
)  # fmt: skip
#: Seconds between looks for tasks while waiting for services to go.
_POLL = 0.5
_ANY = frozenset({"", "0.0.0.0", "::"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_KINDS: dict[str, ServiceKind] = dict(SERVICE_KINDS)
#: The label a secret made by ``up`` carries: the sha256 of its value (never the value),
#: so that ``up`` with another API token is told instead of running with the old one.
LABEL_SECRET_SHA256 = "io.mimir.secret-sha256"
#: Hint added when a node cannot pull from the registry.
_TRUST_HINT = (
    "every node's dockerd must trust the registry {registry}: add it to insecure-registries "
    "in /etc/docker/daemon.json (or serve it with TLS and pass --registry)"
)


def _no_progress(step: str, message: str) -> None:
    logger.info("%s: %s", step, message)


def render_hostname(template: str, slot: int | str, task_id: str) -> str:
    """A worker task's host name from :func:`~.swarm_spec.swarm_worker_hostname`'s template
    (``{{.Task.Slot}}``, ``{{.Task.ID}}``): the key its heartbeat carries."""
    text = re.sub(r"\{\{\s*\.Task\.Slot\s*\}\}", str(slot), template)
    return re.sub(r"\{\{\s*\.Task\.ID\s*\}\}", task_id, text)


@dataclass
class _SwarmCreated:
    """What one ``up`` created, removed again when it fails."""

    services: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    network: str | None = None


class SwarmBackend(DockerBackend):
    """:class:`~mimir.app.cluster.base.ClusterBackend` over a Docker Swarm manager."""

    backend: Literal["swarm"] = "swarm"  # type: ignore[assignment]

    def __init__(
        self,
        project: str = "mimir",
        settings: Any = None,
        *,
        registry: str | None = None,
        data_node: str | None = None,
        routing_mesh: bool | None = None,
        publish_api: bool = True,
        **options: Any,
    ) -> None:
        """``registry`` (``HOST:PORT``): push to it instead of running the in-swarm registry;
        ``data_node`` (a node's host name or id): where Redis and the API server (and their
        volumes) run, default the manager; ``routing_mesh``: ingress publishing and VIPs
        (kernels with IPVS); ``publish_api=False``: the API port is not published (then no
        token is required, and ``up`` waits for the tasks, not for the API)."""
        super().__init__(project, settings, **options)
        profile = self.profile
        self.registry: str | None = registry or getattr(profile, "registry", None) or None
        self.data_node: str | None = data_node or getattr(profile, "data_node", None) or None
        mesh = routing_mesh if routing_mesh is not None else getattr(profile, "routing_mesh", False)
        self.routing_mesh = bool(mesh)
        self.publish_api = publish_api
        self.endpoint_mode = "vip" if self.routing_mesh else "dnsrr"
        self.publish_mode = "ingress" if self.routing_mesh else "host"
        #: The address of the node running the API server's task (``api_url``).
        self._backend_addr: str | None = None
        #: The hostname template of the worker tasks (from :mod:`.swarm_spec`).
        self._hostname_template: Callable[[str], str] | None = None
        #: Failed tasks before this command acted (:meth:`_note_failures`): not its failures.
        self._seen_failures: frozenset[str] = frozenset()

    # ---------------------------------------------------------------- ownership

    def owns(self, labels: dict[str, str] | None) -> bool:
        """Ours (``io.mimir.project``), or a service of ``docker stack deploy -c
        packaging/docker-stack.yml <project>`` (its namespace label and our service label)."""
        labels = labels or {}
        if labels.get(LABEL_PROJECT) == self.project:
            return True
        return labels.get(STACK_NAMESPACE) == self.project and LABEL_SERVICE in labels

    def service_name(self, service: str) -> str:
        """The Swarm service of ``service`` (``backend``, ``worker-slow``, ``registry``)."""
        return f"{self.project}_{service}"

    def _owned_swarm(self, collection: Any) -> list[Any]:
        found: dict[str, Any] = {}
        for label in (f"{LABEL_PROJECT}={self.project}", f"{STACK_NAMESPACE}={self.project}"):
            for item in collection.list(filters={"label": label}):
                found[item.id] = item
        return [item for item in found.values() if self.owns(_spec_labels(item))]

    def _services(self) -> dict[str, Any]:
        """The project's services by short name (``redis``, ``backend``, ``worker-slow``)."""
        out = {}
        for service in self._owned_swarm(self._connect().services):
            out[_short_service(service, self.project)] = service
        return out

    def _tasks(self, service: Any, running_only: bool = False) -> list[dict[str, Any]]:
        filters: dict[str, Any] = {"service": service.id}
        if running_only:
            filters["desired-state"] = "running"
        tasks = self._connect().api.tasks(filters=filters)
        return sorted(tasks, key=lambda t: (int(t.get("Slot") or 0), t.get("CreatedAt", "")))

    def _nodes(self) -> dict[str, dict[str, str]]:
        """Node id → ``hostname`` and ``addr``."""
        out = {}
        for node in self._connect().nodes.list():
            attrs = node.attrs
            out[node.id] = {
                "hostname": str(attrs.get("Description", {}).get("Hostname") or node.id[:12]),
                "addr": str(attrs.get("Status", {}).get("Addr") or ""),
            }
        return out

    # ---------------------------------------------------------------- checks

    def _check_publish(self) -> None:
        """No token → refuse (Swarm publishes on every address of the node: moby#32299),
        unless the API is not published. Checked before any call to the engine."""
        if self.inside or not self.publish_api:
            return
        if not self.api_token:
            raise ClusterError(
                "a Swarm deployment publishes the API on every address of its node (Swarm "
                "cannot bind a published port to one address: moby#32299), so it needs an API "
                "token: set MIMIR_API_TOKEN (or the profile's api_token)"
            )

    def _manager(self) -> tuple[str, str]:
        """The engine's node id and address; :class:`ClusterError` unless it is a manager."""
        info = self._connect().info()
        swarm = info.get("Swarm") or {}
        where = self.docker_host or "the local engine"
        if swarm.get("LocalNodeState") != "active":
            raise ClusterError(
                f"{where} is not part of a swarm (state {swarm.get('LocalNodeState') or '?'}): "
                "run 'docker swarm init' there, or point --docker-host at a swarm manager"
            )
        if not swarm.get("ControlAvailable"):
            raise ClusterError(
                f"{where} is a swarm worker, not a manager: point --docker-host at a manager "
                "(docker node ls there lists them), or promote this node "
                "(docker node promote)"
            )
        return str(swarm.get("NodeID") or ""), str(swarm.get("NodeAddr") or "")

    def _refuse_unsupported(self, cluster: ClusterFile) -> None:
        if self.monitoring:
            raise ClusterError(
                "--monitoring is not on swarm yet: run Prometheus yourself against the API's "
                "/metrics, or use the Docker backend"
            )
        autoscaled = [pool.name for pool in cluster.pools.values() if pool.autoscaled]
        if autoscaled:
            raise ClusterError(
                f"autoscaled pools are not on swarm yet ({', '.join(autoscaled)}): switch "
                "their autoscale off in the cluster file and use 'mimir cluster scale'"
            )

    # ---------------------------------------------------------------- API address

    @property
    def api_url(self) -> str:
        """The API on the node running the server's task (host-mode port); a concrete
        ``api_bind`` wins; through the SSH tunnel when the engine is reached over ssh://."""
        if self.inside:
            return f"http://127.0.0.1:{API_PORT}"
        if self.api_bind not in _ANY | _LOOPBACK:
            return super().api_url
        addr = self._backend_addr or self.remote_host or "127.0.0.1"
        if self.tunneled:
            self._connect()
            assert self._tunnel is not None
            return f"http://127.0.0.1:{self._tunnel.forward(self.api_port, addr)}"
        return f"http://{addr}:{self.api_port}"

    @property
    def api_reach(self) -> str:
        if self.tunneled:
            return f"SSH tunnel to {self._backend_addr or '?'}:{self.api_port}"
        if not self.publish_api:
            return "not published"
        mode = "routing mesh" if self.routing_mesh else "host mode on the server's node"
        return f"published on every address, port {self.api_port} ({mode}), with a token"

    # ---------------------------------------------------------------- adopt

    def _adopt_running_backend(self) -> bool:
        """The pools, API port, registry and server node of a running backend service."""
        self.cluster = None
        service = self._services().get("backend")
        if service is None:
            return False
        spec = service.attrs.get("Spec", {})
        container = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
        env = _env_dict(container.get("Env"))
        try:
            self.cluster = pools_from_env(env) or default_cluster()
        except ClusterFileError as exc:
            raise ClusterError(f"the pools of {service.name} ({POOLS_ENV}): {exc}") from exc
        for port in service.attrs.get("Endpoint", {}).get("Ports") or []:
            if port.get("TargetPort") == API_PORT and port.get("PublishedPort"):
                self.api_port = int(port["PublishedPort"])
        image = str(container.get("Image") or "")
        if self.registry is None and "/" in image.split("@")[0]:
            self.registry = image.split("/")[0]
        running = [t for t in self._tasks(service, True)
                   if t.get("Status", {}).get("State") == "running"]  # fmt: skip
        if running:
            node = self._nodes().get(str(running[0].get("NodeID")), {})
            self._backend_addr = node.get("addr") or self._backend_addr
        return bool(running)

    # ---------------------------------------------------------------- resources

    def _ensure_network(self, topology: Topology, created: _SwarmCreated) -> str:
        client = self._connect()
        name = topology.network_name
        found = [n for n in client.networks.list(names=[name]) if n.name == name]
        if found:
            return str(found[0].id)
        network = client.networks.create(
            name, driver="overlay", attachable=False, labels=topology.network_labels()
        )
        created.network = name
        return str(network.id)

    def _ensure_secret(
        self, kind: str, value: Callable[[], str], created: _SwarmCreated, *, same: bool = False
    ) -> str:
        """The id of ``<project>_<kind>``, made from ``value()`` when missing (labelled with
        the sha256 of the value, :data:`LABEL_SECRET_SHA256`) and kept when it exists
        (Docker cannot read a secret back). ``same``: an existing secret must hold
        ``value()`` (its label says another value → :class:`ClusterError`: secrets are
        immutable and the running services read the old one)."""
        client = self._connect()
        name = f"{self.project}_{kind}"
        for secret in client.secrets.list(filters={"name": name}):
            if secret.name != name:
                continue
            label = _spec_labels(secret).get(LABEL_SECRET_SHA256)
            if same and label is not None and label != _sha256(value()):
                raise ClusterError(
                    "the API token differs from the one this cluster was started with: run "
                    "`mimir cluster down` then `up` (secrets are immutable)"
                )
            return str(secret.id)
        data = value()
        secret = client.secrets.create(
            name=name,
            data=data.encode(),
            labels={LABEL_PROJECT: self.project, LABEL_SECRET_SHA256: _sha256(data)},
        )
        created.secrets.append(name)
        return str(secret.id)

    def _data_constraint(self, manager_id: str) -> str:
        if not self.data_node:
            return f"node.id=={manager_id}"
        nodes = self._nodes()
        for node_id, node in nodes.items():
            if self.data_node in (node_id, node["hostname"]):
                return f"node.id=={node_id}"
        names = ", ".join(sorted(n["hostname"] for n in nodes.values()))
        raise ClusterError(f"no swarm node {self.data_node!r} (--data-node); nodes: {names}")

    def registry_address(self, manager_addr: str) -> str:
        """Where images are pushed and pulled: ``registry``, else the in-swarm registry on
        the manager (``127.0.0.1`` on a one-node swarm or with the routing mesh, which
        dockerd trusts by default; else the manager's address)."""
        if self.registry:
            return self.registry
        single = len(self._connect().nodes.list()) == 1
        host = "127.0.0.1" if self.routing_mesh or single or not manager_addr else manager_addr
        return f"{host}:{REGISTRY_PORT}"

    async def _ensure_registry(
        self, manager_id: str, registry: str, created: _SwarmCreated, report: Progress
    ) -> None:
        """The in-swarm registry service, running and answering, unless ``--registry``."""
        if self.registry:
            return
        name = self.service_name(REGISTRY)
        await self._call(self._note_failures)  # a running registry's old failures are not ours
        existing = (await self._call(self._services)).get(REGISTRY)
        if existing is None:
            image = IMAGES[REGISTRY]
            try:
                found = await self._call(lambda: self._connect().images.get(image))
            except ClusterError as exc:
                raise ClusterError(
                    f"the in-swarm registry needs {image} on the manager: build it there "
                    "('mimir cluster build --backend swarm'), or give --registry HOST:PORT"
                ) from exc
            report(REGISTRY, f"starting {name} ({image} by image id) on the manager, {registry}")
            topology = self._swarm_topology(0)
            await self._call(self._ensure_network, topology, created)
            kwargs = registry_spec(
                topology,
                image=str(found.id),  # by id: no node tries to pull it
                data_constraint=f"node.id=={manager_id}",
                endpoint_mode=self.endpoint_mode,
                publish_mode=self.publish_mode,
            )
            await self._call(lambda: self._connect().services.create(**kwargs))
            created.services.append(REGISTRY)
        await self._wait_tasks_running([REGISTRY], report)

    # ---------------------------------------------------------------- images

    async def push_images(self, progress: Progress | None = None) -> dict[str, str]:
        """The backend, worker and Redis images pushed to the registry (the in-swarm one,
        started when missing): local name → registry ref. Pushes only what the registry
        lacks (or holds in another version)."""
        report = progress or _no_progress
        manager_id, manager_addr = await self._call(self._manager)
        registry = await self._call(self.registry_address, manager_addr)
        created = _SwarmCreated()
        await self._ensure_registry(manager_id, registry, created, report)
        redis_image = await self._call(self.images.resolve_redis_image, report, False)
        local = [IMAGES["backend"], IMAGES["worker"], redis_image]
        return await self._call(self._push, registry, local, report)

    def _push(self, registry: str, local: list[str], report: Progress) -> dict[str, str]:
        """Push ``local`` to ``registry``: local name → ``<ref>@sha256:<digest>``, the
        manifest this engine pushed (see :meth:`_pin`)."""
        refs = self.images.push_images(registry, local, report)
        return {name: self._pin(name, ref) for name, ref in refs.items()}

    def _pin(self, local: str, ref: str) -> str:
        """``ref`` pinned to its digest (``ref@sha256:…``), so a task (a scale, a drain, a
        restart) only ever runs the image ``up`` pushed, not whatever the mutable tag names
        in the registry by then; docker-py's ``services.create`` does not pin as the CLI
        does. The registry's digest must be one this engine recorded for ``local`` when it
        pushed it (its ``RepoDigests``): else another image took the tag in between."""
        client = self._connect()
        target = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        try:
            found = client.api.inspect_distribution(ref)
            digest = str(found.get("Descriptor", {}).get("digest") or "")
            recorded = client.images.get(local).attrs.get("RepoDigests") or []
        except docker.errors.DockerException as exc:
            raise ClusterError(f"cannot read the digest of {ref} in the registry: {exc}") from exc
        if not digest.startswith("sha256:"):
            raise ClusterError(f"the registry gave no digest for {ref}")
        if f"{target}@{digest}" not in recorded:
            raise ClusterError(
                f"the registry's {ref} ({digest}) is not the image pushed from {local}: "
                "another image took its tag; the registry must be reachable by the swarm's "
                "nodes only"
            )
        return f"{ref}@{digest}"

    async def build(self, progress: Progress | None = None, push: bool = False) -> None:
        """The Docker backend's images and the registry's; ``push``: then push them."""
        report = progress or _no_progress
        if push:
            await self._call(self._manager)  # before building: the push needs a manager
        await super().build(report)
        if not self.registry:
            await self._call(self.images.build_registry_image, report)
        if push:
            await self.push_images(report)

    # ---------------------------------------------------------------- readiness

    def _expected_workers(self) -> set[str]:
        """The host names of the running worker tasks (what their heartbeats carry)."""
        template = self._worker_template()
        expected = set()
        for service in self._services().values():
            pool = _pool_of(service)
            if pool is None:
                continue
            for task in self._tasks(service, True):
                if task.get("Status", {}).get("State") == "running":
                    expected.add(self._task_hostname(template, pool, task))
        return expected

    def _worker_template(self) -> Callable[[str], str]:
        return self._hostname_template or swarm_worker_hostname

    @staticmethod
    def _task_hostname(template: Callable[[str], str], pool: str, task: dict[str, Any]) -> str:
        hostname = str(task.get("Spec", {}).get("ContainerSpec", {}).get("Hostname") or "")
        return render_hostname(hostname or template(pool), task.get("Slot") or 0, task["ID"])

    def _note_failures(self) -> None:
        """Remember the failed tasks there are before this command acts (creates, updates,
        scales a service): :meth:`_failed_task` leaves them out."""
        seen: set[str] = set()
        for service in self._services().values():
            seen.update(str(t.get("ID")) for t in self._tasks(service) if _state(t) in _FAILED)
        self._seen_failures = frozenset(seen)

    def _failed_task(self, names: list[str] | None = None) -> ClusterError | None:
        """A task of ours (of ``names``) that failed or was rejected since this command
        acted: not one :meth:`_note_failures` saw, and created after its service's last
        change (``UpdatedAt``). Only the manager's timestamps are compared, never this
        machine's clock (which may be off the swarm's)."""
        for name, service in self._services().items():
            if names is not None and name not in names:
                continue
            changed = _changed_at(service)
            for task in self._tasks(service):
                status = task.get("Status", {})
                if status.get("State") not in _FAILED or str(task.get("ID")) in self._seen_failures:
                    continue
                created = parse_docker_time(str(task.get("CreatedAt") or ""))
                if changed and created and created < changed:
                    continue
                err = str(status.get("Err") or status.get("Message") or "?")
                node = self._nodes().get(str(task.get("NodeID")), {}).get("hostname", "?")
                message = (
                    f"task {service.name}.{task.get('Slot')} on {node} {status['State']}: {err}"
                )
                if "No such image" in err or "HTTPS client" in err or "manifest" in err:
                    message += "; " + _TRUST_HINT.format(registry=self.registry or "(in-swarm)")
                return ClusterError(message, detail=self._service_tail(service))
        return None

    def _service_tail(self, service: Any, lines: int = 20) -> str:
        try:
            raw = self._connect().api.service_logs(
                service.id, stdout=True, stderr=True, tail=lines, is_tty=False
            )
            text = "".join(chunk.decode("utf-8", "replace") for chunk in raw)
        except docker.errors.DockerException:
            return ""
        return "\n".join(f"{service.name} | {line}" for line in text.splitlines())

    async def _wait_tasks_running(self, names: list[str], report: Progress) -> None:
        """Until each of ``names`` runs its replicas; a failed task is the error."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            failed = await self._call(self._failed_task, names)
            if failed is not None:
                raise failed
            services = await self._call(self._services)
            missing = []
            for name in names:
                service = services.get(name)
                if service is None:
                    missing.append(name)
                    continue
                wanted = _replicas(service)
                tasks = await self._call(self._tasks, service, True)
                running = [t for t in tasks if t.get("Status", {}).get("State") == "running"]
                if len(running) < wanted:
                    missing.append(name)
            if not missing:
                report("tasks", f"{', '.join(names)} running")
                return
            if time.monotonic() > deadline:
                tails = [
                    await asyncio.to_thread(self._service_tail, services[n])
                    for n in missing
                    if n in services
                ]
                raise ClusterError(
                    f"{', '.join(missing)} not running in {self.start_timeout:.0f}s",
                    detail="\n".join(t for t in tails if t),
                )
            await asyncio.sleep(_POLL)

    async def _wait_ready(self, report: Progress) -> None:
        """Until /ready answers and every running worker task has a heartbeat (without a
        published API: until every service runs its replicas); a failed task is the error,
        with its ``Status.Err`` and the service's last log lines."""
        if not self.publish_api:
            names = [n for n in await self._call(self._services) if n != REGISTRY]
            await self._wait_tasks_running(names, report)
            return
        # Every service runs all its replicas first (a worker task on another node may
        # still be pulling its image); and the probe's URL is fixed when it opens: the
        # node running the server's task must be known by then.
        names = [n for n in await self._call(self._services) if n != REGISTRY]
        await self._wait_tasks_running(names, report)
        await self._call(self._adopt_running_backend)

        async def check_alive() -> None:
            failed = await self._call(self._failed_task)
            if failed is not None:
                raise failed
            if self._backend_addr is None:
                await self._call(self._adopt_running_backend)

        async def expected() -> set[str]:
            return await self._call(self._expected_workers)

        async def not_ready() -> ClusterError:
            service = (await self._call(self._services)).get("backend")
            detail = await asyncio.to_thread(self._service_tail, service) if service else ""
            return ClusterError(
                f"the API was not ready at {self.api_url}/ready in {self.start_timeout:.0f}s",
                detail=detail,
            )

        async def not_registered(missing: set[str]) -> ClusterError:
            return ClusterError(
                f"worker task(s) {', '.join(sorted(missing))} did not register in "
                f"{self.start_timeout:.0f}s"
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

    # ---------------------------------------------------------------- up

    def _swarm_topology(self, workers: int, redis_image: str | None = None) -> Topology:
        topology = self.topology(workers, redis_image)
        backend = topology.services["backend"]
        env = {**backend.environment, "MIMIR_CLUSTER_BACKEND": "swarm"}
        env.pop("MIMIR_API_TOKEN", None)  # a Docker secret, never the environment
        topology.services["backend"] = replace(backend, environment=env)
        return topology

    async def up(
        self,
        workers: int | None = 2,
        progress: Progress | None = None,
        *,
        cluster: ClusterFile | None = None,
    ) -> ClusterStatus:
        """Network, secrets, registry (and pushes), then redis, backend and each pool's
        worker service; wait until ready. A failing ``up`` removes what it created."""
        report = progress or _no_progress
        if workers is not None:
            check_worker_count(workers, self.settings.limits)
        if cluster is not None:
            self._sizes(cluster, workers, None)
            self._refuse_unsupported(cluster)
        self._check_publish()  # before any call to the engine
        if self.monitoring:
            self._refuse_unsupported(cluster or default_cluster())
        if self.requested_bind and self.requested_bind not in _ANY:
            report(
                "publish",
                f"swarm cannot bind a published port to an address: --bind {self.requested_bind}"
                " is only where this machine reaches the API (moby#32299)",
            )
        manager_id, manager_addr = await self._call(self._manager)
        requested = self.requested_port
        adopted_service = await self._call(lambda: self._services().get("backend"))
        known: ClusterFile | None = None
        if adopted_service is not None:
            await self._call(self._adopt_running_backend)
            known = self.cluster
            if requested and requested != self.api_port:
                raise ClusterError(
                    f"cluster {self.project!r} already runs with its API on port {self.api_port}"
                    f", not {requested}: leave out --port, or 'mimir cluster down --project "
                    f"{self.project}' first to move it"
                )
        self.cluster = cluster or known or default_cluster()
        self._refuse_unsupported(self.cluster)
        existing = await self._call(self._services)
        same = known is not None and pools_to_env(known) == pools_to_env(self.cluster)
        sizes = self._swarm_sizes(self.cluster, workers, existing if same else None)
        created = _SwarmCreated()
        try:
            registry = await self._call(self.registry_address, manager_addr)
            topology = self._swarm_topology(sizes.get(DEFAULT_POOL, 0))
            report("network", f"overlay network {topology.network_name}")
            await self._call(self._ensure_network, topology, created)
            secret_ids = {
                REDIS_PASSWORD_SECRET: await self._call(
                    self._ensure_secret, REDIS_PASSWORD_SECRET,
                    lambda: secrets_module.token_hex(32), created,
                )
            }  # fmt: skip
            if self.api_token:
                token = self.api_token
                secret_ids[API_TOKEN_SECRET] = await self._call(
                    lambda: self._ensure_secret(API_TOKEN_SECRET, lambda: token, created, same=True)
                )
            await self._ensure_registry(manager_id, registry, created, report)
            redis_image = await self._call(self.images.resolve_redis_image, report, False)
            topology = self._swarm_topology(sizes.get(DEFAULT_POOL, 0), redis_image)
            local = list(dict.fromkeys(s.image for s in topology.services.values()))
            report("push", f"images to {registry}: {', '.join(local)}")
            refs = await self._call(self._push, registry, local, report)
            # By local image name (a pool may have its own image), and by kind.
            kinds = {k: refs[IMAGES[k]] for k in ("backend", "worker") if IMAGES[k] in refs}
            specs = service_specs(
                topology,
                images={**refs, **kinds, "redis": refs.get(redis_image, redis_image)},
                secrets=secret_ids,
                data_constraint=await self._call(self._data_constraint, manager_id),
                endpoint_mode=self.endpoint_mode,
                publish_mode=self.publish_mode,
                grace=self.grace,
            )
            await self._call(self._note_failures)
            await self._create_or_update(specs, existing, sizes, same, created, report)
            report("wait", "waiting for the tasks, /ready and worker heartbeats")
            await self._wait_ready(report)
        except BaseException:
            report("up", "failed: removing what this command created")
            await asyncio.shield(self._call(self._undo_swarm_up, created))
            raise
        counts = ", ".join(f"{count} in {pool}" for pool, count in sizes.items())
        report(
            "up", f"cluster {self.project!r} is up on swarm: API {self.api_url}, workers: {counts}"
        )
        return await self.status()

    def _swarm_sizes(
        self, cluster: ClusterFile, workers: int | None, existing: dict[str, Any] | None
    ) -> dict[str, int]:
        sizes = {}
        for name, pool in cluster.pools.items():
            service = (existing or {}).get(pool_service(name))
            if name == DEFAULT_POOL and workers is not None:
                count = workers
            elif service is not None:
                count = _replicas(service)
            else:
                count = pool.initial_replicas
            sizes[name] = check_pool_count(pool, count, self.settings.limits)
        return sizes

    async def _create_or_update(
        self,
        specs: dict[str, dict[str, Any]],
        existing: dict[str, Any],
        sizes: dict[str, int],
        same: bool,
        created: _SwarmCreated,
        report: Progress,
    ) -> None:
        """Create the missing services (redis, backend, the pools'); pools changed: the
        backend gets the new pools, services of pools no longer declared go; the default
        pool's ``--workers`` is applied to a running service."""
        client = self._connect()
        for key, kwargs in specs.items():
            short = _short_name(str(kwargs.get("name") or key), self.project)
            kwargs = _without_token_env(kwargs)
            service = existing.get(short)
            if service is None:
                report(short, f"creating {kwargs.get('name')} ({kwargs.get('image')})")
                await self._call(lambda kw=kwargs: client.services.create(**kw))
                created.services.append(short)
            elif short == "backend" and not same:
                report("backend", "the pools changed: updating the API server's service")
                await self._call(lambda s=service, kw=kwargs: _update(s, kw))
            elif short == pool_service(DEFAULT_POOL) and _replicas(service) != sizes.get(
                DEFAULT_POOL, _replicas(service)
            ):
                await self._call(service.scale, sizes[DEFAULT_POOL])
            else:
                report(short, f"{service.name} already runs")
        wanted = {_short_name(str(kw.get("name") or k), self.project) for k, kw in specs.items()}
        for short, service in existing.items():
            if _pool_of(service) is not None and short not in wanted:
                report("scale", f"removing {service.name}: its pool is no longer declared")
                await self._call(service.remove)

    def _undo_swarm_up(self, created: _SwarmCreated) -> None:
        """Remove what a failed ``up`` created: services, then network and secrets."""
        services = self._services()
        for short in reversed(created.services):
            if short in services:
                with contextlib.suppress(docker.errors.DockerException):
                    services[short].remove()
        self._remove_network_and_secrets(created.network, created.secrets, timeout=30.0)

    def _remove_network_and_secrets(
        self, network: str | None, secret_names: list[str], timeout: float
    ) -> None:
        """Removing a network (or a secret) fails while tasks still use it: retried until
        ``timeout``."""
        client = self._connect()
        deadline = time.monotonic() + timeout
        pending: list[tuple[str, str]] = [("secret", n) for n in secret_names]
        if network:
            pending.append(("network", network))
        while pending:
            left = []
            for kind, name in pending:
                try:
                    if kind == "network":
                        for found in client.networks.list(names=[name]):
                            if found.name == name:
                                found.remove()
                    else:
                        for found in client.secrets.list(filters={"name": name}):
                            if found.name == name:
                                found.remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    if time.monotonic() > deadline:
                        logger.warning("cannot remove the %s %s: %s", kind, name, exc)
                    else:
                        left.append((kind, name))
            pending = left
            if pending:
                time.sleep(_POLL)

    # ---------------------------------------------------------------- scale, down, clean

    async def scale(
        self,
        workers: int,
        progress: Progress | None = None,
        *,
        pool: str = DEFAULT_POOL,
        wait: bool = True,
    ) -> ClusterStatus:
        """Set the replicas of ``pool``'s service; Swarm stops extra tasks with SIGTERM,
        SIGKILL after the service's stop grace period."""
        report = progress or _no_progress
        check_worker_count(workers, self.settings.limits)
        self._check_publish()  # waiting for the workers asks the API: it needs the token
        await self._call(self._adopt_running_backend)
        services = await self._call(self._services)
        if "backend" not in services:
            raise ClusterError(
                f"no Swarm cluster {self.project!r} is running (start one: mimir cluster up "
                f"--backend swarm --project {self.project})"
            )
        cluster = self.cluster or default_cluster()
        if pool not in cluster.pools:
            raise unknown_pool(pool, cluster)
        check_pool_count(cluster.pools[pool], workers, self.settings.limits)
        service = services.get(pool_service(pool))
        if service is None:
            raise ClusterError(f"the pool {pool!r} has no service: run 'mimir cluster up' again")
        report("scale", f"{service.name}: {workers} replica(s)")
        await self._call(self._note_failures)
        await self._call(service.scale, workers)
        if wait:
            await self._wait_ready(report)
        report(
            "scale", f"{workers} worker(s) {'running' if wait else 'asked for'} in pool {pool!r}"
        )
        return await self.status()

    async def down(self, progress: Progress | None = None) -> None:
        """Remove the services (workers first), wait until their tasks are gone, then the
        network and the secrets; keep the volumes."""
        report = progress or _no_progress
        await self._down(report)
        report("down", f"cluster {self.project!r} removed (volumes kept)")

    async def _down(self, report: Progress) -> None:
        services = await self._call(self._services)
        if not services:
            report("down", f"no services of project {self.project!r}")
        order = sorted(services, key=lambda n: (0 if _pool_of(services[n]) else
                                                 {"backend": 1, "redis": 2}.get(n, 3)))  # fmt: skip
        for short in order:
            report("down", f"removing {services[short].name}")
            with contextlib.suppress(docker.errors.NotFound):
                await self._call(services[short].remove)
        await self._wait_containers_gone([s.name for s in services.values()])
        names = [f"{self.project}_{API_TOKEN_SECRET}", f"{self.project}_{REDIS_PASSWORD_SECRET}"]
        await self._call(
            self._remove_network_and_secrets,
            f"{self.project}_mimir-network",
            names,
            self.grace + 30,
        )

    async def _wait_containers_gone(self, service_names: list[str]) -> None:
        """Until the manager's engine runs no container of those services (the volumes on
        it can then go), at most the grace plus 30 s."""
        if not service_names:
            return
        deadline = time.monotonic() + self.grace + 30

        def left() -> int:
            # The plain list (no inspect of each): containers go while it is read.
            containers = self._connect().api.containers(
                all=True, filters={"label": SWARM_SERVICE_LABEL}
            )
            names = [(c.get("Labels") or {}).get(SWARM_SERVICE_LABEL) for c in containers]
            return len([n for n in names if n in service_names])

        while await self._call(left) and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)

    async def clean(self, progress: Progress | None = None) -> None:
        """Like :meth:`down`, then the project's volumes on the manager's engine (a data
        node elsewhere keeps its volumes: they are named)."""
        report = progress or _no_progress
        await self._down(report)
        volumes = await self._call(self._project_volumes)
        for volume in volumes:
            with contextlib.suppress(docker.errors.NotFound):
                await self._call(volume.remove, True)
        report(
            "clean",
            f"cluster {self.project!r} removed with its {len(volumes)} volume(s) on the manager"
            + (f": {', '.join(sorted(v.name for v in volumes))}" if volumes else ""),
        )
        manager_id, _ = await self._call(self._manager)
        data_id = (await self._call(self._data_constraint, manager_id)).removeprefix("node.id==")
        if data_id != manager_id:
            # The manager's engine removes only its own volumes; workers have none (tmpfs).
            nodes = await self._call(self._nodes)
            report(
                "clean",
                f"the volumes of redis and the API server stay on the data node "
                f"{nodes[data_id]['hostname']}: remove them there (docker volume rm, or "
                f"docker volume prune --all --filter label={LABEL_PROJECT}={self.project})",
            )

    async def restart(self, service: str, progress: Progress | None = None) -> ClusterStatus:
        """Restart a service's tasks (``docker service update --force``): ``redis``,
        ``backend``, ``worker``, ``worker-<pool>``. One task cannot be restarted."""
        report = progress or _no_progress
        name = canonical_service(service)
        target = parse_worker_name(name)
        if target is not None and target[1] is not None:
            service_of = pool_service(target[0] or DEFAULT_POOL)
            raise ClusterError(
                f"swarm restarts a service, not one task: restart {service_of} (all its tasks, "
                f"one at a time), or scale it"
            )
        self._check_publish()
        await self._call(self._adopt_running_backend)
        services = await self._call(self._services)
        if target is not None and target[0] is None:
            chosen = [s for s in services.values() if _pool_of(s) is not None]
        else:
            chosen = [services[name]] if name in services else []
        if not chosen:
            known = ", ".join(sorted(n for n in services if n != REGISTRY)) or "none"
            raise ClusterError(f"unknown service {service!r}; choose from {known}")
        await self._call(self._note_failures)
        for item in chosen:
            report("restart", f"{item.name} (docker service update --force)")
            await self._call(item.force_update)
        await self._wait_ready(report)
        return await self.status()

    # ---------------------------------------------------------------- status

    async def status(self) -> ClusterStatus:
        """One row per service: state from its tasks, replicas running and wanted, tasks
        per node (``nodes``), published ports, workers' health from their heartbeats."""
        await self._call(self._adopt_running_backend)
        services = await self._call(self._services)
        every = {n: await self._call(self._tasks, s) for n, s in services.items()}
        tasks = {
            n: [t for t in ts if t.get("DesiredState") == "running"] for n, ts in every.items()
        }
        ended = {n: [t for t in ts if _state(t) not in _ACTIVE] for n, ts in every.items()}
        latest = {n: max(ts, key=_created) for n, ts in ended.items() if ts}
        nodes = await self._call(self._nodes) if services else {}
        registered: set[str] | None = None
        running_workers = any(
            _pool_of(services[n]) is not None and _running(t) for n, t in tasks.items()
        )
        if running_workers and self.publish_api:
            async with await self._probe() as probe:
                registered = await probe.workers(self.worker_key)
        template = self._worker_template() if running_workers else None
        rows = self.status_rows(services, tasks, nodes, registered, template, latest)
        api = any(r.name == "backend" and r.state == "running" for r in rows)
        return ClusterStatus("swarm", self.project, rows, self.api_url if api else None)

    def status_rows(
        self,
        services: dict[str, Any],
        tasks: dict[str, list[dict[str, Any]]],
        nodes: dict[str, dict[str, str]],
        registered: set[str] | None,
        template: Callable[[str], str] | None,
        latest: dict[str, dict[str, Any]] | None = None,
    ) -> list[ServiceStatus]:
        """The rows of :meth:`status` from the services, their tasks (those the swarm
        wants running), the nodes and the newest task of each service that ended
        (``latest``): a service none of whose tasks runs and whose last ended task failed
        or was rejected (a crash loop, an image no node can pull: the swarm keeps making new
        tasks, each pending a while) is ``failed``, the task's error in its health column."""
        rows = []
        pools = list((self.cluster or default_cluster()).pools)
        pools += sorted({p for s in services.values() if (p := _pool_of(s))} - set(pools))
        order = ["redis", "backend", *[pool_service(p) for p in pools]]
        for name in order:
            kind: ServiceKind = "worker" if name.startswith("worker") else _KINDS[name]
            pool = pools[order.index(name) - 2] if kind == "worker" else None
            service = services.get(name)
            if service is None:
                state = "stopped" if kind == "worker" and services else "missing"
                wanted = 0 if state == "stopped" else None
                rows.append(ServiceStatus(name, kind, state, replicas=0, pool=pool, wanted=wanted))
                continue
            mine = tasks.get(name, [])
            running = [t for t in mine if _state(t) == "running"]
            per_node: dict[str, int] = {}
            for task in running:
                host = nodes.get(str(task.get("NodeID")), {}).get("hostname", "?")
                per_node[host] = per_node.get(host, 0) + 1
            wanted_n = _replicas(service)
            state = "running" if running else ("starting" if wanted_n else "stopped")
            health = ""
            newest = (latest or {}).get(name)
            if not running and wanted_n and newest is not None and _state(newest) in _FAILED:
                status = newest.get("Status", {})
                state = "failed"
                health = str(status.get("Err") or status.get("Message") or _state(newest))
            if kind == "worker" and running and template is not None and pool is not None:
                hosts = {self._task_hostname(template, pool, t) for t in running}
                health = worker_health(hosts, registered)
            ports = {
                f"{p.get('TargetPort')}/{p.get('Protocol', 'tcp')}": (
                    f"0.0.0.0:{p.get('PublishedPort')}"
                )
                for p in service.attrs.get("Endpoint", {}).get("Ports") or []
                if p.get("PublishedPort")
            }
            rows.append(
                ServiceStatus(
                    name, kind, state, health, len(running), ports,
                    pool=pool, wanted=wanted_n, nodes=per_node,
                )
            )  # fmt: skip
        return rows

    async def cluster_file(self) -> ClusterFile | None:
        if not await self._call(self._adopt_running_backend):
            return None
        return self.cluster or default_cluster()

    async def instances(self) -> list[Instance]:
        """One entry per task the swarm wants running (``worker.2``), on its node."""

        def read() -> list[Instance]:
            nodes = self._nodes()
            out = []
            for short, service in self._services().items():
                kind: ServiceKind = "worker" if _pool_of(service) else _KINDS.get(short, "server")
                for task in self._tasks(service, True):
                    status = task.get("Status", {})
                    node = nodes.get(str(task.get("NodeID")), {}).get("hostname", "?")
                    err = status.get("Err")
                    out.append(
                        Instance(
                            name=f"{short}.{task.get('Slot')}",
                            service=short,
                            kind=kind,
                            state=str(status.get("State") or "?"),
                            ident=str(task["ID"])[:12],
                            detail=f"node {node}" + (f", {err}" if err else ""),
                            started_at=parse_docker_time(str(status.get("Timestamp") or "")),
                        )
                    )
            return out

        return await self._call(read)

    # ---------------------------------------------------------------- logs, stats

    def _select_services(self, names: list[str] | None) -> list[Any]:
        services = self._services()
        if not services:
            raise ClusterError(
                f"no Swarm cluster {self.project!r}: no service of it exists (start one: "
                f"mimir cluster up --backend swarm --project {self.project})"
            )
        if not names:
            return list(services.values())
        chosen = []
        for name in names:
            name = canonical_service(name)
            if name == "worker":
                chosen += [s for s in services.values() if _pool_of(s) is not None]
            elif name in services:
                chosen.append(services[name])
            else:
                raise ClusterError(
                    f"no service {name!r}; choose from {', '.join(sorted(services))}"
                )
        return chosen

    async def logs(
        self, services: list[str] | None = None, follow: bool = False, tail: int = 100
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines of each service (every task's, as the swarm gathers
        them), merged by timestamp; then (``follow``) new lines until the services go."""
        chosen = await self._call(self._select_services, services)

        def history() -> list[LogLine]:
            lines: list[LogLine] = []
            for service in chosen:
                short = _short_service(service, self.project)
                for text in _service_lines(self._connect(), service.id, tail=tail):
                    stamp, _, line = text.partition(" ")
                    lines.append(LogLine(short, line, parse_docker_time(stamp)))
            return sorted(lines, key=lambda line: line.timestamp or 0.0)

        for line in await self._call(history):
            yield line
        if not follow:
            return
        lines: queue_module.SimpleQueue[LogLine] = queue_module.SimpleQueue()
        streams: list[Any] = []
        since = int(time.time())

        def pump(service: Any) -> None:
            short = _short_service(service, self.project)
            try:
                raw = self._connect().api.service_logs(
                    service.id, stdout=True, stderr=True, timestamps=True, follow=True,
                    since=since, is_tty=False,
                )  # fmt: skip
                streams.append(raw)
                for text in _split_chunks(raw):
                    stamp, _, line = text.partition(" ")
                    lines.put(LogLine(short, line, parse_docker_time(stamp)))
            except Exception as exc:  # the stream ends when the service goes
                logger.debug("log stream of %s ended: %s", service.name, exc)

        threads = [threading.Thread(target=pump, args=(s,), daemon=True) for s in chosen]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads) or not lines.empty():
                while not lines.empty():
                    yield lines.get()
                await asyncio.sleep(0.1)
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.close()

    async def stats(self) -> list[ServiceStats]:
        """Tasks on the manager: the engine's CPU %, memory and network. Worker tasks on
        other nodes: their own heartbeat's CPU % and RSS (named ``… (heartbeat)``)."""

        def manager_side() -> tuple[list[ServiceStats], set[str]]:
            services = self._services()
            names = {s.name: short for short, s in services.items()}
            containers = self._connect().containers.list(filters={"label": SWARM_SERVICE_LABEL})
            mine = [c for c in containers if c.labels.get(SWARM_SERVICE_LABEL) in names]

            def one(container: Any) -> ServiceStats:
                sample = container.stats(stream=False)
                used, limit = memory_used(sample)
                networks = sample.get("networks") or {}
                short = names[container.labels[SWARM_SERVICE_LABEL]]
                return ServiceStats(
                    name=container.name,
                    kind=_KINDS.get(short, "worker"),
                    cpu_percent=cpu_percent(sample),
                    memory_bytes=used,
                    memory_limit_bytes=limit,
                    net_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks.values()),
                    net_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks.values()),
                )

            local_hosts = {str(c.attrs.get("Config", {}).get("Hostname") or "") for c in mine}
            if not mine:
                return [], local_hosts
            with ThreadPoolExecutor(max_workers=min(8, len(mine))) as pool:
                return list(pool.map(one, mine)), local_hosts

        rows, local_hosts = await self._call(manager_side)
        if not self.publish_api:
            return rows
        expected = await self._call(self._expected_workers)
        remote = expected - local_hosts
        if remote:
            async with await self._probe() as probe:
                records = await probe.worker_records()
            for record in records or []:
                host = str(record.get("hostname") or "")
                if host in remote:
                    rows.append(
                        ServiceStats(
                            name=f"{host} (heartbeat)",
                            kind="worker",
                            cpu_percent=float(record.get("cpu_percent") or 0.0),
                            memory_bytes=int(record.get("memory_bytes") or 0),
                        )
                    )
        return rows


# ---------------------------------------------------------------- helpers


def _spec_labels(item: Any) -> dict[str, str]:
    attrs = getattr(item, "attrs", {}) or {}
    return dict(attrs.get("Spec", {}).get("Labels") or attrs.get("Labels") or {})


def _short_name(name: str, project: str) -> str:
    return name.removeprefix(f"{project}_")


def _short_service(service: Any, project: str) -> str:
    """``redis``, ``backend``, ``worker``, ``worker-<pool>``, ``registry``: from our labels
    (a stack's services too), else from the name."""
    labels = _spec_labels(service)
    kind = labels.get(LABEL_SERVICE)
    if kind == "worker":
        return pool_service(labels.get(LABEL_POOL) or DEFAULT_POOL)
    if kind:
        return kind
    return _short_name(str(service.name), project)


def _pool_of(service: Any) -> str | None:
    labels = _spec_labels(service)
    if labels.get(LABEL_SERVICE) != "worker":
        return None
    return labels.get(LABEL_POOL) or DEFAULT_POOL


def _replicas(service: Any) -> int:
    mode = service.attrs.get("Spec", {}).get("Mode", {})
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def _created(task: dict[str, Any]) -> float:
    return parse_docker_time(str(task.get("CreatedAt") or ""))


def _changed_at(service: Any) -> float:
    """When the manager last changed ``service`` (its ``UpdatedAt``, else ``CreatedAt``;
    0.0 when it says neither)."""
    attrs = service.attrs
    return parse_docker_time(str(attrs.get("UpdatedAt") or attrs.get("CreatedAt") or ""))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _state(task: dict[str, Any]) -> str:
    return str(task.get("Status", {}).get("State") or "")


def _running(tasks: list[dict[str, Any]]) -> bool:
    return any(_state(t) == "running" for t in tasks)


def _env_dict(env: Any) -> dict[str, str]:
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items()}
    return dict(str(item).split("=", 1) for item in env or [] if "=" in str(item))


def _without_token_env(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A service's kwargs without ``MIMIR_API_TOKEN`` in its environment (a secret)."""
    env = kwargs.get("env")
    if env is None:
        return kwargs
    if isinstance(env, dict):
        kept: Any = {k: v for k, v in env.items() if k != "MIMIR_API_TOKEN"}
    else:
        kept = [e for e in env if not str(e).startswith("MIMIR_API_TOKEN=")]
    return {**kwargs, "env": kept}


def _update(service: Any, kwargs: dict[str, Any]) -> None:
    """Update a service to ``kwargs`` (the backend's new pools), keeping its name."""
    service.update(**{k: v for k, v in kwargs.items() if k != "name"})


def _split_chunks(stream: Any) -> Any:
    buffer = b""
    for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")


def _service_lines(client: Any, service_id: str, tail: int) -> list[str]:
    raw = client.api.service_logs(
        service_id, stdout=True, stderr=True, timestamps=True, tail=tail, is_tty=False
    )
    return list(_split_chunks(raw))
