"""Which backend drives a cluster, and building it: shared by the CLI and the console.

Anything that names a Docker engine chooses the Docker backend (the Swarm backend when a
profile says ``"backend": "swarm"``): a profile, ``--docker-host``,
``DOCKER_HOST`` (``settings.docker_host``). An engine named and not answering is then the
command's error, never a reason to start local processes instead. Otherwise
``MIMIR_CLUSTER_BACKEND`` (``docker``/``local``/``swarm``) decides; else a local cluster already
recorded for the project (so commands find what ``up`` started); else the Docker backend
when the local engine answers, else local processes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from mimir.app.cluster.base import ClusterBackend, ClusterError
from mimir.core.settings import Settings

__all__ = [
    "BackendName",
    "create_backend",
    "default_backend_name",
    "docker_engine_answers",
    "named_engine",
]

logger = logging.getLogger(__name__)

BackendName = Literal["docker", "local", "swarm"]


def docker_engine_answers(docker_host: str | None = None, timeout: float = 3.0) -> bool:
    """True when the Docker SDK is installed and an engine answers ``/_ping``."""
    try:
        import docker  # the console extra
    except ImportError:
        return False
    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # any failure means "no usable engine" for this guess
        logger.debug("no Docker engine: %s", exc)
        return False


def named_engine(
    settings: Settings, docker_host: str | None = None, profile: str | Path | Any = None
) -> str | None:
    """What names a Docker engine, for messages ("--docker-host tcp://…"), or ``None``."""
    if profile is not None and profile != "":
        return f"the profile {profile}" if isinstance(profile, (str, Path)) else "a profile"
    if docker_host:
        return f"--docker-host {docker_host}"
    if settings.docker_host:
        return f"DOCKER_HOST={settings.docker_host}"
    return None


def default_backend_name(
    project: str,
    settings: Settings | None = None,
    *,
    docker_host: str | None = None,
    profile: str | Path | Any = None,
) -> BackendName:
    """``docker`` when ``profile`` or ``docker_host`` is given; else ``MIMIR_CLUSTER_BACKEND``;
    else ``docker`` when ``DOCKER_HOST`` names an engine; else ``local`` if a local cluster is
    recorded for ``project``; else ``docker`` if the local engine answers; else ``local``."""
    settings = settings or Settings.from_env()
    if profile and _profile_backend(profile) == "swarm":
        return "swarm"
    if profile or docker_host:
        return "docker"
    chosen = settings.cluster_backend
    if chosen in ("docker", "local", "swarm"):
        return chosen  # type: ignore[return-value]
    if chosen:
        raise ClusterError(
            f"MIMIR_CLUSTER_BACKEND must be 'docker', 'local' or 'swarm', got {chosen!r}"
        )
    if settings.docker_host:
        return "docker"
    if (settings.state_dir / project / "state.json").exists():
        return "local"
    return "docker" if docker_engine_answers() else "local"


def create_backend(
    name: BackendName,
    project: str = "mimir",
    settings: Settings | None = None,
    **options: Any,
) -> ClusterBackend:
    """Build the named backend. ``options`` go to its constructor (``None`` values dropped)."""
    options = {key: value for key, value in options.items() if value is not None}
    if name == "local":
        from mimir.app.cluster.local import LocalBackend

        return LocalBackend(project, settings, **options)
    if name == "docker":
        try:
            from mimir.app.cluster.docker_backend import DockerBackend
        except ImportError as exc:
            raise ClusterError(
                f"the Docker backend needs the Docker SDK ({exc}): pip install 'mimir-aip[console]'"
            ) from exc
        return DockerBackend(project, settings, **options)
    if name == "swarm":
        try:
            from mimir.app.cluster.swarm_backend import SwarmBackend
        except ImportError as exc:
            raise ClusterError(
                f"the Swarm backend needs the Docker SDK ({exc}): pip install 'mimir-aip[console]'"
            ) from exc
        return SwarmBackend(project, settings, **options)
    raise ClusterError(f"unknown backend {name!r}; choose docker, swarm or local")


def _profile_backend(profile: str | Path | Any) -> str | None:
    """The ``backend`` a profile names (a file or a loaded profile); ``None`` when it cannot
    be read here (the backend then reports the error)."""
    if isinstance(profile, (str, Path)):
        try:
            from mimir.app.cluster.docker_engine import DockerProfile

            return DockerProfile.load(profile).backend
        except (ImportError, ClusterError):
            return None
    return getattr(profile, "backend", None)
