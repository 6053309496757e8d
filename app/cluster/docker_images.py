"""Building the cluster's images: a host-built wheelhouse, then the Dockerfiles in packaging/.

Containers may not reach a package index, so ``pip wheel`` runs on this host and the images
install from ``packaging/build/wheels`` with ``--no-index``. The SDK's streamed build output
becomes progress lines. Redis: the configured image when present or pullable, else one built
from the base image with Debian's redis-server.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from mimir.app.cluster.base import ClusterError, Progress
from mimir.app.cluster.topology import DEFAULT_REDIS_IMAGE, FALLBACK_REDIS_IMAGE

__all__ = ["DEFAULT_BASE_IMAGE", "LOCAL_BASE_IMAGE", "PACKAGING_DIR", "ImageBuilder"]

logger = logging.getLogger(__name__)

#: ``packaging/`` of the source checkout: Dockerfiles and the wheelhouse live there.
PACKAGING_DIR = Path(__file__).resolve().parents[2] / "packaging"
#: Base image used when ``python:3.11-slim`` cannot be had (built by scripts/system-deps.sh).
LOCAL_BASE_IMAGE = "mimir/base:bookworm"
DEFAULT_BASE_IMAGE = "python:3.11-slim"


#: Dependencies that the image's Python needs but this host's may not (environment markers:
#: redis needs async-timeout on Python < 3.11.3, and Debian bookworm has 3.11.2).
_MARKER_ONLY_WHEELS = ["async-timeout>=4.0.3"]
#: Wheelhouses built by this process: one ``pip wheel`` per process is enough.
_WHEELHOUSES_BUILT: set[Path] = set()


class ImageBuilder:
    """Builds and finds images on the engine that ``connect`` returns (called in threads)."""

    def __init__(
        self,
        connect: Callable[[], docker.DockerClient],
        packaging_dir: Path = PACKAGING_DIR,
        base_image: str | None = None,
        redis_image: str = DEFAULT_REDIS_IMAGE,
    ) -> None:
        self._connect = connect
        self.packaging_dir = packaging_dir
        self.base_image = base_image
        self.redis_image = redis_image

    def image_exists(self, image: str) -> bool:
        try:
            self._connect().images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def resolve_redis_image(self, report: Progress, allow_build: bool) -> str:
        """The configured Redis image if here, else the fallback if here, else pull the
        configured one; ``allow_build`` (``build``) builds the fallback when that fails."""
        if self.image_exists(self.redis_image):
            return self.redis_image
        if self.image_exists(FALLBACK_REDIS_IMAGE):
            report("redis", f"{self.redis_image} is not here: using {FALLBACK_REDIS_IMAGE}")
            return FALLBACK_REDIS_IMAGE
        try:
            report("redis", f"pulling {self.redis_image}")
            self._connect().images.pull(self.redis_image)
            return self.redis_image
        except docker.errors.DockerException as exc:
            reason = str(exc).splitlines()[0][-200:]
            if not allow_build:
                raise ClusterError(
                    f"image missing: {self.redis_image} cannot be pulled ({reason}) and "
                    f"{FALLBACK_REDIS_IMAGE} is not built: run 'mimir cluster build'"
                ) from exc
            report("redis", f"cannot pull {self.redis_image}: building {FALLBACK_REDIS_IMAGE}")
        self.build_image("redis", FALLBACK_REDIS_IMAGE, report)
        return FALLBACK_REDIS_IMAGE

    def chosen_base_image(self, report: Progress) -> str:
        if self.base_image:
            return self.base_image
        if self.image_exists(DEFAULT_BASE_IMAGE):
            return DEFAULT_BASE_IMAGE
        if self.image_exists(LOCAL_BASE_IMAGE):
            report("build", f"{DEFAULT_BASE_IMAGE} is not here: using {LOCAL_BASE_IMAGE}")
            return LOCAL_BASE_IMAGE
        return DEFAULT_BASE_IMAGE  # the engine will try to pull it

    def build_wheelhouse(self, report: Progress) -> None:
        """``pip wheel`` the project and its dependencies on this host (containers may not
        reach a package index)."""
        if self.packaging_dir in _WHEELHOUSES_BUILT:
            return
        wheels = self.packaging_dir / "build" / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        for old in wheels.glob("mimir_aip-*.whl"):
            old.unlink()
        report("build", f"building the wheelhouse in {wheels}")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
             str(self.packaging_dir.parent), *_MARKER_ONLY_WHEELS],
            capture_output=True,
            text=True,
            timeout=900,
        )  # fmt: skip
        if result.returncode != 0:
            raise ClusterError(
                "building the wheelhouse failed (pip wheel)", detail=result.stderr[-3000:]
            )
        _WHEELHOUSES_BUILT.add(self.packaging_dir)

    def build_image(self, which: str, tag: str, report: Progress) -> None:
        dockerfile = self.packaging_dir / f"Dockerfile.{which}"
        if not dockerfile.exists():
            raise ClusterError(f"{dockerfile} is missing: build from a source checkout")
        base = self.chosen_base_image(report)
        report("build", f"{tag} from {dockerfile.name} (BASE_IMAGE={base})")
        lines: list[str] = []
        stream = self._connect().api.build(
            path=str(self.packaging_dir),
            dockerfile=dockerfile.name,
            tag=tag,
            buildargs={"BASE_IMAGE": base},
            rm=True,
            forcerm=True,
            decode=True,
            labels={"io.mimir.image": which},
        )
        for chunk in stream:
            if "error" in chunk:
                raise ClusterError(
                    f"building {tag} failed: {chunk['error'].strip()}",
                    detail="\n".join(lines[-20:]),
                )
            text = str(chunk.get("stream", "")).strip()
            if text:
                lines.append(text)
                if text.startswith("Step "):
                    report("build", f"{which}: {text}")
