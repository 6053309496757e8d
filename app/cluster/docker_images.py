"""Building the cluster's images: a host-built wheelhouse, then the Dockerfiles in packaging/.

Containers may not reach a package index, so ``pip wheel`` runs on this host and the images
install from ``build/wheels`` of the build context with ``--no-index``. The SDK's streamed
build output becomes progress lines. Redis: the configured image when present or pullable,
else one built from the base image with Debian's redis-server.

Where the project's own wheel comes from:

- a source checkout (``pip install -e .``): ``pip wheel`` of the checkout; the build
  directory is the checkout's ``packaging/`` (the wheelhouse in ``packaging/build/wheels``);
- an installed wheel (``pip install mimir-aip``): the installed distribution re-packed as
  a wheel (:func:`repack_installed_wheel`), its dependencies by ``pip wheel``; the build
  context is ``$MIMIR_STATE_DIR/image-build`` (the Dockerfiles copied from the installed
  ``mimir.packaging``), never the installation itself;
- the PyInstaller bundle: it carries neither pip nor the project's source or wheel, so
  ``build`` refuses, saying where to build instead (its ``cluster up`` uses those images).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from mimir.app.cluster.base import ClusterError, Progress
from mimir.app.cluster.topology import DEFAULT_REDIS_IMAGE, FALLBACK_REDIS_IMAGE, IMAGES
from mimir.core.resources import packaging_dir as _packaging_dir
from mimir.core.resources import source_checkout
from mimir.core.settings import Settings

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "LOCAL_BASE_IMAGE",
    "PACKAGING_DIR",
    "ImageBuilder",
    "repack_installed_wheel",
]

logger = logging.getLogger(__name__)

#: The Dockerfiles: ``packaging/`` of a checkout, ``mimir/packaging`` of an installation.
PACKAGING_DIR = _packaging_dir()
#: What an image build needs from ``packaging/`` (the rest is compose files and scripts).
_CONTEXT_FILES = ["Dockerfile.*", ".dockerignore", "unified/*.py"]
DISTRIBUTION = "mimir-aip"
#: Said when the bundle is asked to build: where builds can be made instead.
BUNDLE_CANNOT_BUILD = (
    "this bundle cannot build images: it carries neither pip nor the project's wheel. "
    "Build them once on this engine from a source checkout (git clone the repository, "
    "then 'make venv' and '.venv/bin/mimir cluster build') or from a pip-installed "
    "mimir-aip ('pip install mimir-aip[console]', then 'mimir cluster build'); "
    "'cluster up' from the bundle then uses those images"
)
#: Base image used when ``python:3.11-slim`` cannot be had (built by scripts/system-deps.sh).
LOCAL_BASE_IMAGE = "mimir/base:bookworm"
DEFAULT_BASE_IMAGE = "python:3.11-slim"


#: Dependencies that the image's Python needs but this host's may not (environment markers:
#: redis needs async-timeout on Python < 3.11.3, and Debian bookworm has 3.11.2).
_MARKER_ONLY_WHEELS = ["async-timeout>=4.0.3"]
#: The project's extras the wheelhouse carries: ``cluster`` (the Docker SDK; the backend
#: image installs it, so that the autoscaler in the backend container scales the cluster's
#: pools) and ``tracing`` (the OpenTelemetry SDK and OTLP exporter: every image installs
#: it, so servers and workers trace when the ``OTEL_*`` environment asks).
IMAGE_EXTRA = "cluster,tracing"
#: Where the previous build's project wheels wait while ``pip wheel`` makes new ones.
_PREVIOUS = "previous-wheels"
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
        #: The source checkout the Dockerfiles belong to (None: an installation).
        self.checkout = source_checkout(packaging_dir)
        #: The build directory (Docker's build context): packaging/ or a state-dir folder.
        self.build_dir = (
            packaging_dir if self.checkout else Settings.from_env().state_dir / "image-build"
        )

    def _prepare_build_dir(self) -> None:
        """Copy the Dockerfiles into the build directory when it is not ``packaging/``."""
        if self.build_dir == self.packaging_dir:
            return
        for pattern in _CONTEXT_FILES:
            for source in self.packaging_dir.glob(pattern):
                if not source.is_file():
                    continue
                target = self.build_dir / source.relative_to(self.packaging_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)

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
        """``pip wheel`` the project with its extra :data:`IMAGE_EXTRA` and their
        dependencies on this host (containers may not reach a package index)."""
        if getattr(sys, "frozen", False):
            raise ClusterError(BUNDLE_CANNOT_BUILD)
        if self.build_dir in _WHEELHOUSES_BUILT:
            wheels = self.build_dir / "build" / "wheels"
            report("build", f"the wheelhouse in {wheels} was built by this process already")
            return
        if importlib.util.find_spec("pip") is None:
            raise ClusterError(
                f"building the wheelhouse needs pip in {sys.executable} "
                f"('{sys.executable} -m ensurepip' installs it)"
            )
        self._prepare_build_dir()
        wheels = self.build_dir / "build" / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        previous = _set_aside(list(wheels.glob("mimir_aip-*.whl")), wheels.parent / _PREVIOUS)
        try:
            if self.checkout is not None:
                project = str(self.checkout)
                report("build", f"building the wheelhouse in {wheels} from {self.checkout}")
            else:
                wheel = repack_installed_wheel(wheels)
                project = str(wheel)
                report(
                    "build", f"building the wheelhouse in {wheels} from {wheel.name} (installed)"
                )
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
                 f"{project}[{IMAGE_EXTRA}]", *_MARKER_ONLY_WHEELS],
                capture_output=True,
                text=True,
                timeout=900,
            )  # fmt: skip
        finally:
            _keep_unchanged(previous, wheels)
        if result.returncode != 0:
            raise ClusterError(
                "building the wheelhouse failed (pip wheel)", detail=result.stderr[-3000:]
            )
        _WHEELHOUSES_BUILT.add(self.build_dir)

    def build_image(self, which: str, tag: str, report: Progress) -> None:
        if getattr(sys, "frozen", False):
            raise ClusterError(BUNDLE_CANNOT_BUILD)
        dockerfile = self.packaging_dir / f"Dockerfile.{which}"
        if not dockerfile.exists():
            raise ClusterError(f"{dockerfile} is missing: reinstall mimir-aip")
        self._prepare_build_dir()
        base = self.chosen_base_image(report)
        report("build", f"{tag} from {dockerfile.name} (BASE_IMAGE={base})")
        before = self._image_id(tag)
        lines: list[str] = []
        stream = self._connect().api.build(
            path=str(self.build_dir),
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
        if before and before != self._image_id(tag):
            # The previous image lost its tag: remove it, unless a container still uses it.
            with contextlib.suppress(docker.errors.DockerException):
                self._connect().images.remove(before)

    def build_registry_image(self, report: Progress) -> None:
        """The in-swarm registry's image (Debian's docker-registry on the base image)."""
        self.build_image("registry", IMAGES["registry"], report)

    def push_images(self, registry: str, images: list[str], report: Progress) -> dict[str, str]:
        """Tag each local image as ``<registry>/<name>:<tag>`` and push it there; returns
        local name → pushed ref. An image the registry already holds in this version (its
        manifest digest is one of the local image's repo digests) is not pushed again.
        A push refused (an untrusted registry, no space …) is a :class:`ClusterError`."""
        client = self._connect()
        refs: dict[str, str] = {}
        for local in dict.fromkeys(images):
            image = client.images.get(local)
            name = local.rsplit("/", 1)[-1] if "/" in local.split(":")[0] else local
            repository, _, tag = name.partition(":")
            target = f"{registry}/{repository}"
            ref = f"{target}:{tag or 'latest'}"
            image.tag(target, tag or "latest")
            refs[local] = ref
            if self._pushed(client, image.id, target, ref):
                report("push", f"{ref} is in the registry already")
                continue
            report("push", f"{local} → {ref}")
            last = ""
            for chunk in client.api.push(target, tag or "latest", stream=True, decode=True):
                if "error" in chunk or "errorDetail" in chunk:
                    error = str(chunk.get("error") or chunk.get("errorDetail", {}).get("message"))
                    hint = (
                        f": the engine must trust {registry} (insecure-registries in "
                        "/etc/docker/daemon.json, or TLS)"
                        if "HTTPS" in error or "https" in error
                        else ""
                    )
                    raise ClusterError(f"pushing {ref} failed: {error.strip()}{hint}")
                status = str(chunk.get("status") or "")
                if status and status != last and "digest" in status:
                    report("push", f"{ref}: {status}")
                last = status or last
        return refs

    @staticmethod
    def _pushed(client: docker.DockerClient, image_id: str, target: str, ref: str) -> bool:
        """The registry holds ``ref`` as this very image (by manifest digest)."""
        try:
            found = client.api.inspect_distribution(ref)
            digest = str(found.get("Descriptor", {}).get("digest") or "")
            local = client.images.get(image_id).attrs.get("RepoDigests") or []
        except docker.errors.DockerException:
            return False
        return bool(digest) and f"{target}@{digest}" in local

    def _image_id(self, tag: str) -> str | None:
        try:
            return str(self._connect().images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None


def _set_aside(wheels: list[Path], directory: Path) -> list[Path]:
    """Move the project's previous wheels into ``directory`` (emptied first)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    moved = []
    for wheel in wheels:
        moved.append(wheel.replace(directory / wheel.name))
    return moved


def _keep_unchanged(previous: list[Path], wheels: Path) -> None:
    """Put a previous wheel back where the new one holds the same files, byte for byte
    (or where no new one was made).

    The project's wheel is made anew by every build, with new timestamps inside; the old
    file keeps the images' ``COPY build/wheels`` layer, so an unchanged project rebuilds
    to the same images instead of leaving the old ones dangling.
    """
    for old in previous:
        new = wheels / old.name
        if not new.exists() or _same_files(new, old):
            old.replace(new)
    shutil.rmtree(wheels.parent / _PREVIOUS, ignore_errors=True)


def _same_files(a: Path, b: Path) -> bool:
    try:
        with zipfile.ZipFile(a) as first, zipfile.ZipFile(b) as second:
            names = sorted(first.namelist())
            if names != sorted(second.namelist()):
                return False
            return all(first.read(name) == second.read(name) for name in names)
    except (OSError, zipfile.BadZipFile):
        return False


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def repack_installed_wheel(directory: Path, distribution: str = DISTRIBUTION) -> Path:
    """The installed (non-editable) ``distribution`` as a wheel again, written in
    ``directory``: its files as its RECORD lists them, minus what the installer added
    (byte code, scripts outside site-packages, INSTALLER, REQUESTED, direct_url.json), and a
    fresh RECORD. Raises :class:`ClusterError` when it is not installed that way."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ClusterError(
            f"{distribution} is not installed in {sys.prefix}: cannot make its wheel"
        ) from exc
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]  # fmt: skip
    if not tags or not dist.files:
        raise ClusterError(
            f"{distribution} {dist.version} was not installed from a wheel (no WHEEL or "
            f"RECORD in its metadata): build the images from a source checkout"
        )
    dist_info = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.dist-info"
    skip = {f"{dist_info}/{name}" for name in
            ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}  # fmt: skip
    name = f"{dist_info.removesuffix('.dist-info')}-{tags[0]}.whl"
    target = directory / name
    records: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in sorted(dist.files, key=str):
            path = entry.as_posix()
            if (
                path.startswith("..")
                or "__pycache__" in entry.parts
                or path.endswith((".pyc", ".pyo"))
                or path in skip
            ):
                continue
            data = Path(str(dist.locate_file(entry))).read_bytes()
            archive.writestr(path, data)
            records.append(f"{path},{_record_hash(data)},{len(data)}")
        records.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return target
