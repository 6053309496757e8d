"""``mimir cluster``: start, scale and stop a cluster through Docker or local processes.

::

    mimir cluster up [--file mimir-cluster.yaml] [--workers N] [--backend docker|local|swarm]
                     [--project NAME] [--port P]
                     [--monitoring [--prometheus-port 9090] [--scrape-interval 15s]]
    mimir cluster scale [--pool POOL] N      (also: scale POOL N; default pool: default)
    mimir cluster down | clean | restart SERVICE | ps | status | stats | build
    mimir cluster logs [SERVICE ...] [-f] [--tail N]
    mimir cluster backup [--to FILE|DIR] [--include-secrets --passphrase-file F]
    mimir cluster restore FILE [--force] [--workers N] [--passphrase-file F]
    mimir cluster backups [--dir DIR]
    mimir cluster trust-host [--profile F | --docker-host ssh://user@host] [--yes]
    mimir cluster tunnel [--profile F | --docker-host ssh://user@host]

``--file`` declares the worker pools (:mod:`mimir.core.pools`); without it a new cluster
has one pool, ``default``, and a running one keeps its pools. ``--workers`` sizes the pool
``default`` (default: each pool's ``replicas``). ``restart`` takes ``redis``, ``backend``,
``worker`` (every pool's workers), ``worker-POOL`` (one pool's) or one worker (``worker-3``,
``worker-slow-2``). ``status`` adds a table of the pools: replicas wanted/running, and,
when the API answers, the jobs waiting for each pool, the oldest one's age and jobs/s.
``up --monitoring`` adds a Prometheus service scraping the API server's ``/metrics``
(:mod:`.monitoring`), on 127.0.0.1 only; ``status``, ``logs prometheus``, ``down`` and
``clean`` know it (a later ``up`` keeps it).

Progress goes to stderr while a command works; tables and log lines go to stdout.
Operator errors (no engine, port taken, nothing running, a cluster file with an error,
named by its line …) exit 1 with one clear message;
a restore refused before anything changed (a damaged or foreign archive, a target with
data and no ``--force``) exits 2.

An engine named by ``--profile``, ``--docker-host`` or ``DOCKER_HOST`` means the Docker
backend (:mod:`.selection`); if it does not answer, that is the error. ``--backend swarm``
(or a profile with ``"backend": "swarm"``) runs the cluster as Swarm services on a manager
(:mod:`.swarm_backend`: ``--registry``, ``--data-node``, ``--routing-mesh``, ``build --push``);
``status`` then has a NODES column (running tasks per node).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mimir.app.cluster.base import ClusterBackend, ClusterError, ClusterStatus
from mimir.app.cluster.selection import create_backend, default_backend_name
from mimir.core.pools import (
    DEFAULT_POOL,
    ClusterFile,
    ClusterFileError,
    default_cluster,
    load_cluster_file,
)
from mimir.core.settings import Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        choices=["docker", "local", "swarm"],
        help="docker (an engine must answer), swarm (the engine is a swarm manager) or local "
        "processes; default: docker if --profile, --docker-host or DOCKER_HOST names an engine "
        "or the local one answers (swarm if the profile says so), else local",
    )
    common.add_argument(
        "--project", default="mimir", help="cluster name; clusters coexist (default: mimir)"
    )
    common.add_argument(
        "--grace", type=float, help="seconds a stopping worker gets to hand back its jobs (30)"
    )
    common.add_argument("--timeout", type=float, help="seconds to wait for the cluster (90)")
    docker = common.add_argument_group("docker backend")
    docker.add_argument(
        "--docker-host", help="engine URL: unix://, ssh://user@host, tcp://host:2376 "
        "(default: DOCKER_HOST, else the local socket)"
    )  # fmt: skip
    docker.add_argument(
        "--profile", help="JSON profile: engine, TLS material or SSH key, API bind/access, token"
    )
    docker.add_argument("--redis-image", help="Redis image (default redis:7-alpine, else built)")
    docker.add_argument("--base-image", help="BASE_IMAGE build argument for 'build'")
    swarm = common.add_argument_group("swarm backend")
    swarm.add_argument(
        "--registry", metavar="HOST:PORT", help="push images to this registry (every node must "
        "trust it) instead of the registry service the swarm runs on its manager"
    )  # fmt: skip
    swarm.add_argument(
        "--data-node", metavar="NODE", help="node (host name or id) Redis and the API server "
        "and their volumes run on (default: the manager)"
    )  # fmt: skip
    swarm.add_argument(
        "--routing-mesh", action="store_true", default=None, help="publish through the routing "
        "mesh with VIPs (needs IPVS in the nodes' kernels; default: dnsrr and host-mode ports)"
    )  # fmt: skip

    parser = argparse.ArgumentParser(
        prog="mimir cluster", description="Start, scale and stop a Mimir cluster."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    up = sub.add_parser("up", parents=[common], help="start the cluster and wait until ready")
    up.add_argument(
        "--file", type=Path, metavar="FILE", help="cluster file declaring the worker pools "
        "(mimir-cluster.yaml)"
    )  # fmt: skip
    up.add_argument(
        "--workers", type=int, help="workers of the pool 'default' (default: its replicas, 2)"
    )
    up.add_argument("--port", type=int, help="API port on 127.0.0.1 (default MIMIR_PORT, 8080)")
    up.add_argument("--concurrency", type=int, help="jobs per worker (WORKER_CONCURRENCY, 5)")
    up.add_argument("--redis-url", help="local backend: use this Redis instead of starting one")
    up.add_argument("--bind", help="docker backend: host address the API is published on")
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus, scraping the API server's /metrics (image built from the "
        "base image; local backend: the 'prometheus' program on PATH)",
    )
    up.add_argument(
        "--prometheus-port", type=int, help="Prometheus's port on 127.0.0.1 (default 9090)"
    )
    up.add_argument(
        "--scrape-interval", help="how often Prometheus scrapes, e.g. 15s (default), 5s, 1m"
    )
    scale = sub.add_parser("scale", parents=[common], help="run exactly N workers in a pool")
    scale.add_argument("target", nargs="+", metavar="[POOL] N", help="e.g. 3, or slow 2")
    scale.add_argument("--pool", help="the pool to scale (default: default)")
    scale.add_argument(
        "--no-wait",
        action="store_true",
        help="return once new workers are started, before their first heartbeat",
    )
    sub.add_parser("down", parents=[common], help="stop and remove the services, keep the data")
    sub.add_parser("clean", parents=[common], help="like down, and remove the data (volumes)")
    restart = sub.add_parser("restart", parents=[common], help="restart one service")
    restart.add_argument(
        "service", metavar="SERVICE", help="redis, backend, worker, worker-POOL, worker-N or "
        "worker-POOL-N"
    )  # fmt: skip
    logs = sub.add_parser("logs", parents=[common], help="show (and follow) log lines")
    logs.add_argument("services", nargs="*", metavar="SERVICE", help="default: all")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, default=100, help="lines per service first (100)")
    sub.add_parser("ps", parents=[common], help="list containers/processes")
    sub.add_parser("status", parents=[common], help="state and health of each service")
    sub.add_parser("stats", parents=[common], help="CPU %% and memory of each container/process")
    build = sub.add_parser("build", parents=[common], help="build the images (docker backend)")
    build.add_argument(
        "--unified", action="store_true", help="also build the one-container unified image"
    )
    build.add_argument("--monitoring", action="store_true", help="also build the Prometheus image")
    build.add_argument(
        "--push", action="store_true", help="swarm backend: then push the images to the registry"
    )
    backup = sub.add_parser(
        "backup", parents=[common], help="back up the running cluster's data to one archive"
    )
    backup.add_argument("--to", type=Path, help="archive file or directory (default: backups dir)")
    backup.add_argument(
        "--include-secrets",
        action="store_true",
        help="keep trigger secrets; the archive is then encrypted with a passphrase",
    )
    backup.add_argument(
        "--passphrase-file", type=Path, help="passphrase (else MIMIR_BACKUP_PASSPHRASE, else asked)"
    )
    restore = sub.add_parser(
        "restore", parents=[common], help="restore an archive into a new or stopped cluster"
    )
    restore.add_argument("archive", type=Path, metavar="FILE")
    restore.add_argument(
        "--force", action="store_true", help="replace a cluster that has data (backed up first)"
    )
    restore.add_argument("--workers", type=int, help="workers to start afterwards (default 2)")
    restore.add_argument("--port", type=int, help="API port of a new cluster (as for 'up')")
    restore.add_argument("--passphrase-file", type=Path, help="passphrase of an encrypted archive")
    backups = sub.add_parser("backups", parents=[common], help="list the archives in a directory")
    backups.add_argument("--dir", type=Path, help="default: the backups directory")
    backups.add_argument(
        "--fetch", metavar="NAME", help="download this archive from the cluster's server to --dir"
    )
    trust = sub.add_parser(
        "trust-host", parents=[common], help="accept an ssh:// engine's host key (known_hosts)"
    )
    trust.add_argument(
        "--yes", action="store_true", help="accept without asking (check the fingerprints first)"
    )
    sub.add_parser(
        "tunnel", parents=[common], help="keep the SSH tunnel to the API open (Ctrl-C closes it)"
    )
    manifests = sub.add_parser(
        "manifests", help="write the Kubernetes manifests (base, overlays) from the topology"
    )
    manifests.add_argument(
        "--kubernetes", type=Path, required=True, metavar="DIR", help="directory to write"
    )
    manifests.add_argument(
        "--file", type=Path, metavar="FILE", help="cluster file of the pools overlay "
        "(default: packaging/mimir-cluster.example.yml)"
    )  # fmt: skip
    return parser


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> str | None:
    """From --passphrase-file, else MIMIR_BACKUP_PASSPHRASE, else asked on the terminal."""
    if args.passphrase_file is not None:
        try:
            return args.passphrase_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ClusterError(f"cannot read the passphrase file: {exc}") from exc
    from_env = os.environ.get("MIMIR_BACKUP_PASSPHRASE")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise ClusterError(
            "a passphrase is needed: give --passphrase-file or set MIMIR_BACKUP_PASSPHRASE"
        )
    first = getpass.getpass("Passphrase: ")
    if confirm and getpass.getpass("Passphrase again: ") != first:
        raise ClusterError("the two passphrases differ")
    return first


def _progress(step: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step}: {message}", file=sys.stderr, flush=True)


def _backend_options(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "grace": args.grace,
        "start_timeout": args.timeout,
        "api_port": getattr(args, "port", None),
        "worker_concurrency": getattr(args, "concurrency", None),
        "monitoring": getattr(args, "monitoring", None) or None,
        "prometheus_port": getattr(args, "prometheus_port", None),
        "scrape_interval": getattr(args, "scrape_interval", None),
    }
    if backend == "local":
        options["redis_url"] = getattr(args, "redis_url", None)
    elif backend != "swarm" and (args.registry or args.data_node or args.routing_mesh):
        raise ClusterError("--registry, --data-node and --routing-mesh need --backend swarm")
    if backend == "swarm":
        options.update(
            registry=args.registry, data_node=args.data_node, routing_mesh=args.routing_mesh
        )
    if backend != "local":
        options.update(
            docker_host=args.docker_host,
            profile=args.profile,
            redis_image=args.redis_image,
            base_image=args.base_image,
            api_bind=getattr(args, "bind", None),
        )
    return options


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024 / 1024:.1f} MiB"


def _print_status(
    status: ClusterStatus,
    backend: ClusterBackend | None = None,
    pools: list[tuple[str, ...]] | None = None,
) -> None:
    reach = getattr(backend, "api_reach", None) if status.api_url else None
    api = f"{status.api_url} ({reach})" if reach else status.api_url or "-"
    print(f"cluster {status.project!r} ({status.backend})  API: {api}")
    rows: list[tuple[str, ...]] = [("SERVICE", "STATE", "HEALTH", "REPLICAS", "PORTS")]
    nodes = any(s.nodes for s in status.services)
    if nodes:  # swarm: the tasks each node runs, "swarm-1\u00d72 swarm-2\u00d71"
        rows[0] += ("NODES",)
    for s in status.services:
        ports = ", ".join(f"{k} -> {v}" for k, v in s.ports.items())
        row: tuple[str, ...] = (s.name, s.state, s.health or "-", str(s.replicas), ports or "-")
        if nodes:
            row += (" ".join(f"{n}\u00d7{c}" for n, c in sorted(s.nodes.items())) or "-",)
        rows.append(row)
    _print_table(rows)
    pools = pools if pools is not None else pool_rows(status)
    if len(pools) > 1:
        print()
        _print_table(pools)


def pool_rows(
    status: ClusterStatus,
    cluster: ClusterFile | None = None,
    pools_answer: dict[str, Any] | None = None,
    queue_status: dict[str, Any] | None = None,
) -> list[tuple[str, ...]]:
    """The pools table: one row per worker row of ``status``, with the figures of ``GET
    /api/v1/pools`` (``pools_answer``), else the waiting jobs of the pool's queues (from
    ``cluster``) in ``GET /api/v1/queue/status`` (``queue_status``); ``-`` for the unknown."""
    rows: list[tuple[str, ...]] = [("POOL", "REPLICAS", "QUEUED", "OLDEST", "JOBS/S")]
    figures = (pools_answer or {}).get("pools") or {}
    by_queue = (queue_status or {}).get("by_queue") or {}
    queues = (cluster or default_cluster()).queues_by_pool()
    for service in status.services:
        if service.kind != "worker":
            continue
        pool = service.pool or DEFAULT_POOL
        wanted = "-" if service.wanted is None else str(service.wanted)
        queued = oldest = rate = "-"
        mine = figures.get(pool) if isinstance(figures, dict) else None
        if isinstance(mine, dict):
            queued = _figure(mine.get("queued"), "{:.0f}")
            oldest = _figure(mine.get("oldest_age_s"), "{:.0f}s")
            rate = _figure(mine.get("jobs_per_sec"), "{:.2f}")
        elif by_queue and pool in queues:
            queued = str(sum(int(by_queue.get(queue, 0)) for queue in queues[pool]))
        rows.append((pool, f"{wanted}/{service.replicas}", queued, oldest, rate))
    return rows


def _figure(value: Any, form: str) -> str:
    return form.format(value) if isinstance(value, (int, float)) else "-"


async def _pool_figures(backend: ClusterBackend, status: ClusterStatus) -> list[tuple[str, ...]]:
    """:func:`pool_rows` with what the cluster's API answers (nothing when it does not)."""
    from mimir.app.cluster.readiness import ClusterProbe
    from mimir.app.services.api import ApiError

    read = getattr(backend, "cluster_file", None)
    cluster = await read() if read is not None else None
    if status.api_url is None:
        return pool_rows(status, cluster)
    token = getattr(backend, "api_token", None) or getattr(
        getattr(backend, "settings", None), "api_token", None
    )
    pools_answer = queue_status = None
    async with await ClusterProbe.open(status.api_url, token) as probe:
        try:
            pools_answer = await probe.api.request("GET", "/api/v1/pools", timeout=5.0)
        except ApiError as exc:
            logger.debug("no /api/v1/pools (%s): the queue status instead", exc)
            try:
                queue_status = await probe.api.queue_status()
            except ApiError as again:
                logger.debug("no queue status either: %s", again)
    return pool_rows(status, cluster, pools_answer, queue_status)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _scale_target(args: argparse.Namespace) -> tuple[str, int]:
    """``scale N``, ``scale POOL N`` or ``scale --pool POOL N`` → (pool, N)."""
    target = list(args.target)
    if len(target) > 2:
        raise ClusterError("scale takes N, or POOL N (e.g. 'scale slow 2')")
    named = target[0] if len(target) == 2 else None
    if named is not None and args.pool is not None and named != args.pool:
        raise ClusterError(f"two pools given: {named!r} and --pool {args.pool!r}")
    try:
        workers = int(target[-1])
    except ValueError:
        raise ClusterError(f"scale: N must be a number of workers, not {target[-1]!r}") from None
    return named or args.pool or DEFAULT_POOL, workers


async def _run(
    args: argparse.Namespace, backend: ClusterBackend, cluster: ClusterFile | None = None
) -> int:
    command = args.command
    if command == "up":
        status = await backend.up(args.workers, _progress, cluster=cluster)
        _print_status(status, backend)
    elif command == "scale":
        pool, workers = _scale_target(args)
        status = await backend.scale(workers, _progress, pool=pool, wait=not args.no_wait)
        _print_status(status, backend)
    elif command == "down":
        await backend.down(_progress)
    elif command == "clean":
        await backend.clean(_progress)
    elif command == "restart":
        status = await backend.restart(args.service, _progress)
        _print_status(status, backend)
    elif command == "status":
        status = await backend.status()
        _print_status(status, backend, await _pool_figures(backend, status))
        stale = [i for i in await _instances(backend) if i.state == "stale"]
        for item in stale:
            print(f"stale entry: {item.name} (pid {item.ident}): {item.detail}")
        return 0 if status.running else 3
    elif command == "ps":
        rows: list[tuple[str, ...]] = [("NAME", "SERVICE", "STATE", "ID", "DETAIL")]
        for item in await _instances(backend):
            rows.append((item.name, item.service, item.state, item.ident, item.detail))
        _print_table(rows)
    elif command == "stats":
        rows = [("NAME", "CPU %", "MEMORY", "LIMIT", "NET RX", "NET TX")]
        for st in await backend.stats():
            rows.append(
                (
                    st.name,
                    f"{st.cpu_percent:.1f}",
                    _mib(st.memory_bytes),
                    _mib(st.memory_limit_bytes),
                    # Processes have no network counters of their own.
                    _mib(st.net_rx_bytes) if backend.backend != "local" else "-",
                    _mib(st.net_tx_bytes) if backend.backend != "local" else "-",
                )
            )
        _print_table(rows)
    elif command == "logs":
        width = 0
        async for line in backend.logs(args.services or None, args.follow, args.tail):
            width = max(width, len(line.service))
            print(f"{line.service.ljust(width)} | {line.line}", flush=args.follow)
    elif command == "backup":
        from mimir.app.cluster.backup import take_backup

        passphrase = _passphrase(args, confirm=True) if args.include_secrets else None
        result = await take_backup(
            backend, args.to, include_secrets=args.include_secrets, passphrase=passphrase,
            progress=_progress,
        )  # fmt: skip
        print(result.path)
    elif command == "restore":
        return await _restore(args, backend)
    elif command == "tunnel":
        return await _tunnel(backend)
    elif command == "backups":
        return await _backups(args, backend)
    elif command == "build":
        if args.push:
            if backend.backend != "swarm":
                raise ClusterError("--push needs the swarm backend (--backend swarm)")
            await backend.build(_progress, push=True)  # type: ignore[call-arg]
        else:
            await backend.build(_progress)
        if args.unified:
            build_unified = getattr(backend, "build_unified", None)
            if build_unified is None:
                raise ClusterError("--unified needs the docker backend")
            await build_unified(_progress)
    return 0


async def _backups(args: argparse.Namespace, backend: ClusterBackend) -> int:
    from mimir.app.cluster.backup import (
        default_backup_dir,
        fetch_backup,
        human_size,
        list_backups,
        server_backups,
    )

    directory = args.dir or default_backup_dir(backend)
    if args.fetch:
        print(await fetch_backup(backend, args.fetch, directory, _progress))
        return 0
    header: tuple[str, ...] = ("ARCHIVE", "TAKEN", "PROJECT", "SIZE", "RUNS", "QUADS", "ENCRYPTED")
    rows: list[tuple[str, ...]] = [header]
    for entry in await asyncio.to_thread(list_backups, directory):
        m = entry.manifest
        if m is None:
            rows.append((entry.path.name, "-", "-", human_size(entry.size), "-", "-", entry.error))
            continue
        counts = m.counts
        rows.append(
            (
                entry.path.name, m.taken_at, m.project, human_size(entry.size),
                str(counts.get("runs", "-")), str(counts.get("quads", "-")),
                "yes" if m.encrypted else "no",
            )
        )  # fmt: skip
    print(f"backups in {directory}:")
    _print_table(rows)
    on_server = await server_backups(backend)
    if on_server:
        rows = [header]
        for item in on_server:
            counts = item.get("counts") or {}
            rows.append(
                (
                    str(item.get("name")), str(item.get("taken_at") or "-"), backend.project,
                    human_size(int(item.get("size") or 0)), str(counts.get("runs", "-")),
                    str(counts.get("quads", "-")), "yes" if item.get("encrypted") else "no",
                )
            )  # fmt: skip
        print("\nkept by the cluster's server (MIMIR_BACKUP_DIR; get one with --fetch NAME):")
        _print_table(rows)
    return 0


async def _restore(args: argparse.Namespace, backend: ClusterBackend) -> int:
    from mimir.app.cluster.backup import BackupRefused, restore_cluster
    from mimir.core.backup.crypto import is_age

    if not args.archive.is_file():
        raise ClusterError(f"no archive at {args.archive}")
    with args.archive.open("rb") as handle:
        encrypted = is_age(handle.read(64))
    passphrase = _passphrase(args, confirm=False) if encrypted else None
    try:
        status = await restore_cluster(
            backend, args.archive, force=args.force, passphrase=passphrase,
            workers=args.workers, progress=_progress,
        )  # fmt: skip
    except BackupRefused as exc:
        print(f"mimir cluster: refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    _print_status(status, backend)
    return 0


async def _tunnel(backend: ClusterBackend) -> int:
    """Keep the SSH tunnel to the API open until Ctrl-C (or until it breaks)."""
    from mimir.app.cluster.docker_backend import DockerBackend

    if not isinstance(backend, DockerBackend) or not backend.tunneled:
        raise ClusterError(
            "'mimir cluster tunnel' needs an ssh:// engine whose API is reached through the "
            "tunnel (--docker-host ssh://user@host, or a profile with api_access 'tunnel')"
        )
    url = await backend.reach_api()
    print(f"API {url} ({backend.api_reach}); Ctrl-C closes the tunnel", flush=True)
    while backend.tunnel_open:
        await asyncio.sleep(0.5)
    raise ClusterError("the SSH tunnel closed (the connection to the host was lost)")


def _trust_host(args: argparse.Namespace) -> int:
    """Scan an ssh:// engine's host keys, show their fingerprints and, once confirmed, add
    them to the profile's known_hosts file (``ssh_known_hosts``, else ~/.ssh/known_hosts)."""
    from mimir.app.cluster.docker_engine import DockerProfile, resolve_profile
    from mimir.app.cluster.remote import (
        DEFAULT_KNOWN_HOSTS,
        HostKeyChanged,
        SshTarget,
        accept_host_key,
        known_host_status,
        scan_host_key,
    )

    loaded = DockerProfile.load(args.profile) if args.profile else DockerProfile()
    profile = resolve_profile(args.docker_host, loaded)
    if not profile.is_ssh:
        raise ClusterError(
            "trust-host needs an ssh:// engine (--docker-host ssh://user@host or a profile's "
            f"docker_host), not {profile.docker_host or 'the local socket'}"
        )
    target = SshTarget.parse(profile.docker_host or "")
    known_hosts = Path(profile.ssh_known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
    keys = scan_host_key(target.host, target.port)
    print(f"host keys of {target.known_hosts_name}:")
    for key in keys:
        print(f"  {key.key_type}  {key.fingerprint}")
    state = known_host_status(keys, known_hosts)
    if state == "known":
        print(f"already trusted in {known_hosts}")
        return 0
    if state == "changed":
        raise HostKeyChanged(
            f"{known_hosts} holds another key for {target.known_hosts_name}: the host key has "
            "changed; if the host was reinstalled, remove the old one (ssh-keygen -R "
            f"{target.known_hosts_name} -f {known_hosts}) and run trust-host again",
            keys,
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise ClusterError(
                "trust-host asks for confirmation on a terminal: check the fingerprints above "
                "with the host's administrator, then run it again with --yes"
            )
        answer = input(f"Trust these keys (written to {known_hosts})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not trusted; nothing written")
            return 1
    for key in keys:
        accept_host_key(key, known_hosts)
    print(f"trusted: {len(keys)} key(s) of {target.known_hosts_name} added to {known_hosts}")
    return 0


async def _instances(backend: ClusterBackend) -> list[Any]:
    instances = getattr(backend, "instances", None)
    return list(await instances()) if instances else []


def _cluster_file(args: argparse.Namespace) -> ClusterFile | None:
    """The cluster ``up --file`` names (``None`` without one); an error names its line."""
    path = getattr(args, "file", None)
    if path is None:
        return None
    cluster = load_cluster_file(path)
    if args.workers is not None and DEFAULT_POOL not in cluster.pools:
        raise ClusterError(
            f"--workers sizes the pool {DEFAULT_POOL!r}, which {path} does not declare (its "
            f"pools: {', '.join(cluster.pools)}): leave out --workers, or add the pool"
        )
    return cluster


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mimir cluster``; returns the exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    backend: ClusterBackend | None = None
    try:
        if args.command == "trust-host":
            return _trust_host(args)
        if args.command == "manifests":
            from mimir.app.cluster.kubernetes import main as manifests_main

            return manifests_main(
                [str(args.kubernetes), *(["--file", str(args.file)] if args.file else [])]
            )
        settings = Settings.from_env()
        # A cluster file is read, and its errors told by line, before anything starts.
        cluster = _cluster_file(args)
        if args.backend == "local" and (args.docker_host or args.profile):
            raise ClusterError(
                "--docker-host and --profile name a Docker engine: leave out --backend local"
            )
        name = args.backend or default_backend_name(
            args.project, settings, docker_host=args.docker_host, profile=args.profile
        )
        if args.backend is None and args.command in ("up", "build"):
            _progress("backend", f"using the {name} backend (choose with --backend)")
        backend = create_backend(name, args.project, settings, **_backend_options(args, name))
        if getattr(getattr(backend, "profile", None), "is_ssh", False):
            # SIGTERM ends the command like Ctrl-C, so that its SSH tunnel is closed too.
            signal.signal(signal.SIGTERM, _interrupt)
        return asyncio.run(_run(args, backend, cluster))
    except ClusterFileError as exc:
        print(f"mimir cluster: error: {exc}", file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(f"mimir cluster: error: {exc}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a malformed environment variable
        print(f"mimir cluster: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()  # the engine client, and an SSH tunnel
