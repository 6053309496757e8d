"""The Docker backend: the topology of :mod:`.topology` as containers, through the Docker SDK.

Everything it creates carries the labels ``io.mimir.project`` and ``io.mimir.service``, so
``status``, ``scale`` and ``down`` find a cluster after the console restarts, and two
projects coexist. Every SDK call runs in a thread (``asyncio.to_thread``); SDK exceptions
are translated into :class:`~mimir.app.cluster.base.ClusterError` at this boundary, with
messages an operator can act on (no engine, socket permission, port taken, image missing,
remote host unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import docker
import docker.errors
import docker.tls
import httpx

from mimir.app.cluster.base import (
    ClusterError,
    ClusterStatus,
    LogLine,
    Progress,
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
)
from mimir.app.cluster.docker_images import PACKAGING_DIR, ImageBuilder
from mimir.app.cluster.instances import Instance
from mimir.app.cluster.topology import (
    API_PORT,
    DEFAULT_REDIS_IMAGE,
    IMAGES,
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    SERVICE_KINDS,
    ServiceSpec,
    Topology,
    build_topology,
)
from mimir.core.settings import Settings

__all__ = ["PACKAGING_DIR", "DockerBackend", "DockerProfile"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _no_progress(step: str, message: str) -> None:
    logger.info("%s: %s", step, message)


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
        grace: float = 30.0,
        start_timeout: float = 120.0,
        resources: dict[str, Any] | None = None,
        packaging_dir: Path = PACKAGING_DIR,
    ) -> None:
        """``resources`` overrides the limits, e.g. ``{"worker_cpus": 1.0,
        "worker_memory": "1g"}`` (keys of :func:`~.topology.build_topology`)."""
        if isinstance(profile, (str, Path)):
            self.profile = DockerProfile.load(profile)
        else:
            self.profile = profile or DockerProfile()
        self.settings = settings or Settings.from_env()
        self.project = project
        self.docker_host = (
            docker_host or self.profile.docker_host or os.environ.get("DOCKER_HOST") or ""
        )
        self.api_port = api_port or self.profile.api_port or self.settings.port
        self.api_bind = api_bind or self.profile.api_bind or "127.0.0.1"
        self.api_token = api_token or self.profile.api_token or self.settings.api_token
        self.worker_concurrency = worker_concurrency or self.settings.worker_concurrency
        self.redis_image = redis_image or os.environ.get("MIMIR_REDIS_IMAGE") or DEFAULT_REDIS_IMAGE
        self.base_image = base_image or os.environ.get("MIMIR_BASE_IMAGE")
        self.grace = grace
        self.start_timeout = start_timeout
        self.resources = resources or {}
        self.packaging_dir = packaging_dir
        self.images = ImageBuilder(self._connect, packaging_dir, self.base_image, self.redis_image)
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        # Validates the project name and the bind/token rule before anything runs.
        self.topology(workers=0)

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
            worker_grace=max(1.0, self.grace - 5),
            log_level=self.settings.log_level,
            fuseki_url=self.settings.fuseki_url,
            **self.resources,
        )

    @property
    def api_url(self) -> str:
        """Where this machine reaches the API: the engine's host for a remote engine."""
        host = "127.0.0.1"
        parsed = urlparse(self.docker_host)
        if parsed.scheme in ("tcp", "ssh", "http", "https") and parsed.hostname:
            host = parsed.hostname
        return f"http://{host}:{self.api_port}"

    def _connect(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                self._client = connect_engine(self.docker_host, self.profile)
            return self._client

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
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---------------------------------------------------------------- lookups (sync)

    def _containers(self, service: str | None = None) -> list[Any]:
        filters = [f"{LABEL_PROJECT}={self.project}"]
        if service:
            filters.append(f"{LABEL_SERVICE}={service}")
        found = self._connect().containers.list(all=True, filters={"label": filters})
        return sorted(found, key=lambda c: (c.labels.get(LABEL_SERVICE, ""), _replica(c)))

    def _image_exists(self, image: str) -> bool:
        return self.images.image_exists(image)

    def _ensure_network_and_volumes(self, topology: Topology) -> None:
        client = self._connect()
        labels = topology.labels()
        existing = client.networks.list(names=[topology.network_name])
        if not [n for n in existing if n.name == topology.network_name]:
            client.networks.create(topology.network_name, driver="bridge", labels=labels)
        for volume in topology.volumes:
            name = topology.volume_name(volume)
            try:
                client.volumes.get(name)
            except docker.errors.NotFound:
                client.volumes.create(name, labels=labels)

    def _run_container(self, topology: Topology, spec: ServiceSpec, replica: int = 1) -> Any:
        client = self._connect()
        name = topology.container_name(spec.name, replica)
        with contextlib.suppress(docker.errors.NotFound):  # a leftover of a crashed run
            client.containers.get(name).remove(force=True)
        endpoint = client.api.create_endpoint_config(aliases=[*spec.aliases, name])
        healthcheck = None
        if spec.healthcheck:
            second = 1_000_000_000
            healthcheck = {
                "test": spec.healthcheck,
                "interval": 2 * second,
                "timeout": 5 * second,
                "retries": 30,
                "start_period": 2 * second,
            }
        return client.containers.run(
            spec.image,
            spec.command,
            name=name,
            hostname=name,
            detach=True,
            labels=topology.labels(spec.name, replica if spec.scalable else None),
            environment=spec.environment,
            volumes={
                topology.volume_name(m.volume): {
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
        )

    def _stop_and_remove(self, containers: list[Any], grace: float) -> None:
        """``docker stop`` (SIGTERM, then SIGKILL after ``grace``) and remove, in parallel."""

        def one(container: Any) -> None:
            with contextlib.suppress(docker.errors.NotFound):
                container.stop(timeout=int(grace))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

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
        """Take the API port, bind address and token from a running backend container, so
        that a new console finds a cluster an earlier one started. False if none runs."""
        for container in self._containers("backend"):
            if container.status != "running":
                continue
            bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(
                f"{API_PORT}/tcp"
            ) or []
            if bindings:
                self.api_port = int(bindings[0]["HostPort"])
                self.api_bind = bindings[0]["HostIp"] or "0.0.0.0"
            for item in container.attrs["Config"].get("Env") or []:
                if item.startswith("MIMIR_API_TOKEN="):
                    self.api_token = item.split("=", 1)[1] or self.api_token
            return True
        return False

    # ---------------------------------------------------------------- images

    async def build(self, progress: Progress | None = None) -> None:
        """Build the backend and worker images (and Redis's when it cannot be pulled)."""
        report = progress or _no_progress
        await self._call(self._connect)
        await asyncio.to_thread(self.images.build_wheelhouse, report)
        for which in ("backend", "worker"):
            await self._call(self.images.build_image, which, IMAGES[which], report)
        await self._call(self.images.resolve_redis_image, report, True)
        report("build", "images built: " + ", ".join(IMAGES[w] for w in ("backend", "worker")))

    async def build_unified(self, progress: Progress | None = None) -> None:
        """Build the one-container image (Redis, server and workers under a supervisor)."""
        report = progress or _no_progress
        await asyncio.to_thread(self.images.build_wheelhouse, report)
        await self._call(self.images.build_image, "unified", IMAGES["unified"], report)

    # ---------------------------------------------------------------- readiness

    async def _wait_ready(self, workers: int, report: Progress) -> None:
        """Until /health answers and ``workers`` worker containers have heartbeats."""
        deadline = time.monotonic() + self.start_timeout
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        healthy = False
        registered: set[str] = set()
        async with httpx.AsyncClient(base_url=self.api_url, timeout=3.0, headers=headers) as http:
            while True:
                containers = await self._call(self._containers)
                for container in containers:
                    if container.status in ("exited", "dead") or (container.status == "restarting"):
                        detail = await asyncio.to_thread(self._last_logs, container)
                        raise ClusterError(
                            f"container {container.name} {container.status} while starting "
                            f"(exit code {container.attrs['State'].get('ExitCode')})",
                            detail=detail,
                        )
                names = {c.name for c in containers if c.labels.get(LABEL_SERVICE) == "worker"}
                if not healthy:
                    with contextlib.suppress(httpx.HTTPError):
                        healthy = (await http.get("/health")).status_code == 200
                    if healthy:
                        report("health", f"API answers at {self.api_url}")
                if healthy:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        answer = (await http.get("/api/v1/workers")).json()
                        registered = {
                            w.get("hostname", "") for w in answer["workers"] if isinstance(w, dict)
                        }
                    if len(names) == workers and names <= registered:
                        report("workers", f"{workers} worker(s) registered")
                        return
                if time.monotonic() > deadline:
                    backend = [c for c in containers if c.labels.get(LABEL_SERVICE) == "backend"]
                    if not healthy:
                        detail = (
                            await asyncio.to_thread(self._last_logs, backend[0]) if backend else ""
                        )
                        raise ClusterError(
                            f"the API did not answer {self.api_url}/health in "
                            f"{self.start_timeout:.0f}s",
                            detail=detail,
                        )
                    missing = sorted(names - registered)
                    late = [c for c in containers if c.name in missing]
                    detail = await asyncio.to_thread(self._last_logs, late[0]) if late else ""
                    raise ClusterError(
                        f"worker(s) {', '.join(missing)} did not register in "
                        f"{self.start_timeout:.0f}s",
                        detail=detail,
                    )
                await asyncio.sleep(0.25)

    # ---------------------------------------------------------------- protocol

    async def up(self, workers: int = 2, progress: Progress | None = None) -> ClusterStatus:
        """Create network, volumes, redis, backend and ``workers`` workers; wait until ready."""
        report = progress or _no_progress
        if workers < 0:
            raise ClusterError(f"workers must be 0 or more, got {workers}")
        await self._call(self._connect)
        for which in ("backend", "worker"):
            if not await self._call(self._image_exists, IMAGES[which]):
                raise ClusterError(
                    f"image missing: {IMAGES[which]} is not on the engine: build it first "
                    "(mimir cluster build)"
                )
        redis_image = await self._call(self.images.resolve_redis_image, report, False)
        topology = self.topology(workers, redis_image)
        report("network", f"network {topology.network_name} and {len(topology.volumes)} volumes")
        await self._call(self._ensure_network_and_volumes, topology)
        existing = {c.name: c for c in await self._call(self._containers)}
        if await self._call(self._adopt_running_backend):
            report("backend", f"cluster {self.project!r} already runs: API {self.api_url}")
        for service in ("redis", "backend"):
            spec = topology.service(service)
            name = topology.container_name(service)
            current = existing.get(name)
            if current is not None and current.status == "running":
                report(service, f"{name} already runs")
                continue
            report(service, f"starting {name} ({spec.image})")
            await self._call(self._run_container, topology, spec)
        await self._scale_to(topology, workers, report)
        report("wait", "waiting for /health and worker heartbeats")
        await self._wait_ready(workers, report)
        report("up", f"cluster {self.project!r} is up: API {self.api_url}, {workers} worker(s)")
        return await self.status()

    async def _scale_to(self, topology: Topology, workers: int, report: Progress) -> None:
        current = [c for c in await self._call(self._containers, "worker")]
        dead = [c for c in current if c.status != "running"]
        if dead:
            report("worker", f"removing {len(dead)} stopped worker container(s)")
            await self._call(self._stop_and_remove, dead, 1)
        running = sorted((c for c in current if c.status == "running"), key=_replica)
        if len(running) > workers:
            leaving = running[workers:]
            report(
                "scale",
                f"stopping {', '.join(c.name for c in leaving)} (SIGTERM, {self.grace:.0f}s grace)",
            )
            await self._call(self._stop_and_remove, leaving, self.grace)
        used = {_replica(c) for c in running[:workers]}
        spec = topology.service("worker")
        numbers: list[int] = []
        number = 0
        while len(used) + len(numbers) < workers:
            number += 1
            if number not in used:
                numbers.append(number)
        if numbers:
            report("worker", f"starting {len(numbers)} worker container(s)")

            def start_all() -> None:
                with ThreadPoolExecutor(max_workers=min(8, len(numbers))) as pool:
                    list(pool.map(lambda n: self._run_container(topology, spec, n), numbers))

            await self._call(start_all)

    async def scale(self, workers: int, progress: Progress | None = None) -> ClusterStatus:
        """Run exactly ``workers`` worker containers; extra ones stop with SIGTERM + grace."""
        report = progress or _no_progress
        if workers < 0:
            raise ClusterError(f"workers must be 0 or more, got {workers}")
        if not await self._call(self._adopt_running_backend):
            raise ClusterError(
                f"no Docker cluster {self.project!r} is running (start one: mimir cluster up "
                f"--project {self.project})"
            )
        image = (await self._call(self._containers, "redis") or [None])[0]
        redis_image = image.attrs["Config"]["Image"] if image is not None else None
        topology = self.topology(workers, redis_image)
        await self._scale_to(topology, workers, report)
        await self._wait_ready(workers, report)
        report("scale", f"{workers} worker(s) running")
        return await self.status()

    async def down(self, progress: Progress | None = None) -> None:
        """Remove the containers (workers first, gracefully) and the network; keep volumes."""
        report = progress or _no_progress
        containers = await self._call(self._containers)
        if not containers:
            report("down", f"no containers of project {self.project!r}")
        for service in ("worker", "backend", "redis"):
            group = [c for c in containers if c.labels.get(LABEL_SERVICE) == service]
            if group:
                report("down", f"stopping {', '.join(c.name for c in group)}")
                grace = self.grace if service == "worker" else 10
                await self._call(self._stop_and_remove, group, grace)
        await self._call(self._remove_networks)
        report("down", f"cluster {self.project!r} removed (volumes kept)")

    def _remove_networks(self) -> None:
        client = self._connect()
        for network in client.networks.list(filters={"label": f"{LABEL_PROJECT}={self.project}"}):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()

    def _project_volumes(self) -> list[Any]:
        client = self._connect()
        return list(client.volumes.list(filters={"label": f"{LABEL_PROJECT}={self.project}"}))

    async def clean(self, progress: Progress | None = None) -> None:
        """:meth:`down`, then remove the project's volumes."""
        report = progress or _no_progress
        await self.down(progress)
        volumes = await self._call(self._project_volumes)
        for volume in volumes:
            await self._call(volume.remove, True)
        report("clean", f"removed {len(volumes)} volume(s)")

    async def restart(self, service: str, progress: Progress | None = None) -> ClusterStatus:
        """Restart ``redis``, ``backend``/``server``, ``worker`` (all) or ``worker-N``."""
        report = progress or _no_progress
        name = "backend" if service == "server" else service
        await self._call(self._adopt_running_backend)
        containers = await self._call(self._containers)
        targets = [
            c
            for c in containers
            if c.labels.get(LABEL_SERVICE) == name or c.name == f"{self.project}-{name}"
        ]
        if not targets:
            known = sorted({"redis", "backend", "worker"} | {c.name for c in containers})
            raise ClusterError(f"unknown service {service!r}; choose from {', '.join(known)}")
        report("restart", ", ".join(c.name for c in targets))
        grace = int(self.grace if name.startswith("worker") else 10)
        for container in targets:
            await self._call(container.restart, timeout=grace)
        workers = len([c for c in containers if c.labels.get(LABEL_SERVICE) == "worker"])
        await self._wait_ready(workers, report)
        return await self.status()

    async def status(self) -> ClusterStatus:
        """Each service's state, health, replicas and published ports."""
        await self._call(self._adopt_running_backend)
        containers = await self._call(self._containers)
        services = []
        for service, kind in SERVICE_KINDS.items():
            group = [c for c in containers if c.labels.get(LABEL_SERVICE) == service]
            if not group:
                services.append(ServiceStatus(service, kind, "missing", replicas=0))
                continue
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
                for port, bindings in (
                    container.attrs["NetworkSettings"].get("Ports") or {}
                ).items():
                    for binding in bindings or []:
                        ports[port] = f"{binding['HostIp']}:{binding['HostPort']}"
            if service == "worker" and running:
                # Workers have no container health check: their heartbeats are their health.
                registered = await self._registered_hosts()
                names = {c.name for c in running}
                health = (
                    "unhealthy" if registered is None
                    else "healthy" if names <= registered
                    else "starting"
                )  # fmt: skip
            services.append(ServiceStatus(service, kind, state, health, len(running), ports))
        api_running = any(s.name == "backend" and s.state == "running" for s in services)
        return ClusterStatus(
            "docker", self.project, services, self.api_url if api_running else None
        )

    async def _registered_hosts(self) -> set[str] | None:
        """Host names of the workers with a live heartbeat, or ``None`` if the API is away."""
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        async with httpx.AsyncClient(base_url=self.api_url, timeout=3.0, headers=headers) as http:
            try:
                answer = (await http.get("/api/v1/workers")).json()
                return {w.get("hostname", "") for w in answer["workers"] if isinstance(w, dict)}
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return None

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
                    kind=SERVICE_KINDS.get(service, "worker"),
                    state=c.status,
                    ident=c.short_id,
                    detail=f"{image}" + (f", {health}" if health else ""),
                )
            )
        return out

    def _select(self, services: list[str] | None) -> list[Any]:
        containers = self._containers()
        if not services:
            return containers
        wanted = {"backend" if s == "server" else s for s in services}
        chosen = [
            c
            for c in containers
            if c.labels.get(LABEL_SERVICE) in wanted
            or c.name in wanted
            or c.name.removeprefix(f"{self.project}-") in wanted
        ]
        if not chosen:
            names = sorted({"redis", "backend", "worker"} | {c.name for c in containers})
            raise ClusterError(
                f"no container for {', '.join(sorted(wanted))}; choose from {', '.join(names)}"
            )
        return chosen

    async def logs(
        self, services: list[str] | None = None, follow: bool = False, tail: int = 100
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines of each container, merged by timestamp; then (``follow``)
        new lines as they come."""
        containers = await self._call(self._select, services)
        short = {c.name: c.name.removeprefix(f"{self.project}-") for c in containers}

        def history() -> list[LogLine]:
            lines: list[LogLine] = []
            for container in containers:
                raw = container.logs(tail=tail, timestamps=True).decode("utf-8", "replace")
                for text in raw.splitlines():
                    stamp, _, line = text.partition(" ")
                    lines.append(LogLine(short[container.name], line, parse_docker_time(stamp)))
            return sorted(lines, key=lambda line: line.timestamp or 0.0)

        for line in await self._call(history):
            yield line
        if not follow:
            return
        queue: asyncio.Queue[LogLine | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        streams: list[Any] = []
        since = int(time.time())

        def pump(container: Any) -> None:
            try:
                stream = container.logs(stream=True, follow=True, since=since, timestamps=True)
                streams.append(stream)
                for raw in _split_lines(stream):
                    stamp, _, line = raw.partition(" ")
                    item = LogLine(short[container.name], line, parse_docker_time(stamp))
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as exc:  # the stream ends when the container goes away
                logger.debug("log stream of %s ended: %s", container.name, exc)

        threads = [
            threading.Thread(target=pump, args=(c,), daemon=True, name=f"logs-{c.name}")
            for c in containers
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                item = await queue.get()
                if item is not None:
                    yield item
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.close()

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
                    kind=SERVICE_KINDS.get(service, "worker"),
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


def _replica(container: Any) -> int:
    try:
        return int(container.labels.get(LABEL_REPLICA, "0"))
    except ValueError:
        return 0


def _split_lines(stream: Iterator[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")
