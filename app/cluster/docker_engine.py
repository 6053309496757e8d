"""Reaching a Docker engine: profiles (host, TLS, API exposure), connecting, translating errors.

Also the arithmetic on the engine's answers (timestamps, CPU % from two samples, memory
without page cache). Messages are for operators: no engine, socket permission, remote host
unreachable, incomplete TLS material.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls

from mimir.app.cluster.base import ClusterError

__all__ = [
    "DEFAULT_SOCKET",
    "DockerProfile",
    "connect_engine",
    "cpu_percent",
    "explain_engine_error",
    "memory_used",
    "parse_docker_time",
]

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class DockerProfile:
    """Where the engine is and how the API is exposed (a JSON file, ``--profile``).

    ``{"docker_host": "tcp://host:2376", "tls_ca": "ca.pem", "tls_cert": "cert.pem",
    "tls_key": "key.pem", "api_bind": "0.0.0.0", "api_token": "…"}``; relative paths are
    relative to the file.
    """

    docker_host: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    api_bind: str | None = None
    api_port: int | None = None
    api_token: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> DockerProfile:
        file = Path(path).expanduser()
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read the Docker profile {file}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if not isinstance(data, dict) or unknown:
            raise ClusterError(
                f"Docker profile {file}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        for key in ("tls_ca", "tls_cert", "tls_key"):
            if data.get(key):
                data[key] = str((file.parent / Path(data[key]).expanduser()).resolve())
        return cls(**data)


def explain_engine_error(exc: BaseException, host: str) -> ClusterError:
    """Turn an SDK/transport error into a message an operator can act on."""
    text = f"{exc}"
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    every = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    if any(isinstance(e, PermissionError) for e in chain) or "Permission denied" in every:
        return ClusterError(
            f"permission denied on the Docker socket ({host}): add your user to the 'docker' "
            "group (sudo usermod -aG docker $USER, then log in again) or run as root"
        )
    if host.startswith("unix://") or host == "":
        if any(isinstance(e, FileNotFoundError) for e in chain) or "No such file" in every:
            return ClusterError(
                f"no Docker engine: {host or 'the local socket'} does not exist. Start dockerd "
                "(or Docker Desktop), or use the local-process backend (--backend local)"
            )
        if "Connection refused" in every:
            return ClusterError(
                f"no Docker engine answers on {host}: is dockerd running? (or use --backend local)"
            )
    if host.startswith(("ssh://", "tcp://", "http://", "https://")):
        return ClusterError(
            f"cannot reach the Docker engine at {host}: {text.splitlines()[0] if text else every}"
            " (check the host name, that it is up, and the SSH key or TLS material)"
        )
    return ClusterError(f"Docker engine error ({host or 'local socket'}): {text}")


def connect_engine(
    docker_host: str, profile: DockerProfile, timeout: int = 60
) -> docker.DockerClient:
    """A client for ``docker_host`` (``""``: ``DOCKER_HOST`` or the local socket) that has
    answered a ping; raise :class:`ClusterError` with an actionable message otherwise."""
    tls: docker.tls.TLSConfig | bool = False
    if profile.tls_cert or profile.tls_ca:
        cert = (profile.tls_cert, profile.tls_key) if profile.tls_cert and profile.tls_key else None
        tls = docker.tls.TLSConfig(
            client_cert=cert, ca_cert=profile.tls_ca, verify=profile.tls_verify
        )
    try:
        if docker_host:
            client = docker.DockerClient(
                base_url=docker_host,
                tls=tls,
                timeout=timeout,
                # The system's ssh client honours ~/.ssh/config, as the docker CLI does.
                use_ssh_client=shutil.which("ssh") is not None,
            )
        else:
            client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.TLSParameterError as exc:
        raise ClusterError(f"Docker TLS settings are incomplete: {exc}") from exc
    except Exception as exc:
        raise explain_engine_error(exc, docker_host or DEFAULT_SOCKET) from exc
    return client


def parse_docker_time(value: str) -> float:
    # Docker timestamps have nanoseconds: 2024-01-01T12:00:00.123456789Z
    try:
        head, _, frac = value.rstrip("Z").partition(".")
        stamp = datetime.fromisoformat(head + "+00:00").timestamp()
        return stamp + (float(f"0.{frac}") if frac else 0.0)
    except ValueError:
        return 0.0


def cpu_percent(sample: dict[str, Any]) -> float:
    """CPU % from a stats sample: the delta against the engine's previous sample."""
    cpu, pre = sample.get("cpu_stats", {}), sample.get("precpu_stats", {})
    total = cpu.get("cpu_usage", {}).get("total_usage", 0)
    pre_total = pre.get("cpu_usage", {}).get("total_usage", 0)
    system, pre_system = cpu.get("system_cpu_usage", 0), pre.get("system_cpu_usage", 0)
    cores = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    if not pre_system or system <= pre_system or total < pre_total:
        return 0.0
    return round((total - pre_total) / (system - pre_system) * cores * 100.0, 1)


def memory_used(sample: dict[str, Any]) -> tuple[int, int | None]:
    memory = sample.get("memory_stats", {})
    usage = int(memory.get("usage", 0))
    stats = memory.get("stats", {})
    # Page cache is reclaimable; subtract it as `docker stats` does (cgroup v1 / v2 key).
    cache = stats.get("total_inactive_file", stats.get("inactive_file", stats.get("cache", 0)))
    limit = memory.get("limit")
    return max(usage - int(cache or 0), 0), int(limit) if limit else None
