"""Restoring an archive into a Docker cluster's volumes.

The trees are built on this host exactly as for a local cluster
(:func:`~mimir.app.cluster.restore_local.build_trees`), then written into the project's
volumes through a short-lived helper container (the backend image, ``sleep infinity``,
labelled ``io.mimir.role=helper`` with the project: ``down`` and ``clean`` remove one that
a crash left behind). Redis's snapshot is turned into the append-only file by the Redis
image the cluster runs, in a second helper over ``redis_data``, so the AOF's format and
its files' owner are the ones the cluster's Redis expects. The cluster is down while this
runs (:func:`mimir.app.cluster.backup.restore_cluster`); every engine call runs in a thread.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import docker.errors

from mimir.app.cluster.backup import _RestoreTarget
from mimir.app.cluster.base import ClusterError, Progress
from mimir.app.cluster.docker_backend import DockerBackend, _Created, run_once
from mimir.app.cluster.restore_local import build_trees, check_schemas, restore_postgres
from mimir.app.cluster.topology import IMAGES, LABEL_PROJECT, REDIS_GID, REDIS_UID, Topology
from mimir.core.backup.manifest import BackupError, Manifest
from mimir.core.backup.redis_rdb import RDB_PART, rdb_version_for_release
from mimir.core.runstore.db import SQLITE_NAME
from mimir.core.settings import Settings

__all__ = ["HELPER_ROLE", "LABEL_ROLE", "DockerRestoreTarget"]

#: Label marking a container that is no service of the cluster, but a short-lived helper.
LABEL_ROLE = "io.mimir.role"
HELPER_ROLE = "helper"

#: Where the helper mounts each volume it writes.
_MOUNTS = {
    "backend_data": "/restore/data",
    "backend_pipelines": "/restore/pipelines",
    "redis_data": "/restore/redis",
}
#: Seconds the temporary Redis may take to load the snapshot and rewrite it as the AOF.
_REDIS_TIMEOUT = 120.0


class DockerRestoreTarget(_RestoreTarget):
    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
        self.settings = backend.settings
        self._redis_image: str | None = None

    def staging_root(self) -> Path:
        return Path(self.settings.state_dir) / "restore-staging"

    # ---------------------------------------------------------------- what the containers run

    def _topology(self, redis_image: str | None = None) -> Topology:
        return self.backend.topology(0, redis_image)

    def _backend_env(self) -> dict[str, str]:
        """The environment the cluster's server runs with (not this host's)."""
        return dict(self._topology().service("backend").environment)

    def _container_settings(self) -> Settings:
        # The secret files are paths inside the containers (/run/secrets), not here: the
        # settings this host needs (the run store's URL) do not depend on them.
        env = self._backend_env()
        for name in ("MIMIR_API_TOKEN_FILE", "MIMIR_REDIS_PASSWORD_FILE"):
            env.pop(name, None)
        return Settings.from_env(env)

    def _resolve_redis_image(self, report: Progress) -> str:
        """The Redis image the cluster runs (its container's), or the one ``up`` starts."""
        if self._redis_image is None:
            running = self.backend._containers("redis")
            if running:
                self._redis_image = str(running[0].attrs["Config"]["Image"])
            else:
                self._redis_image = self.backend.images.resolve_redis_image(report, False)
        return self._redis_image

    def _helper_labels(self) -> dict[str, str]:
        return {LABEL_PROJECT: self.backend.project, LABEL_ROLE: HELPER_ROLE}

    def _redis_rdb_max(self) -> int:
        image = self._resolve_redis_image(lambda step, message: None)
        client = self.backend._connect()
        output = run_once(
            client,
            image,
            ["redis-server", "--version"],
            network_mode="none",
            labels=self._helper_labels(),
        )
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return rdb_version_for_release(text)

    # ---------------------------------------------------------------- protocol

    def check_compatible(self, manifest: Manifest) -> None:
        # Called in verify_archive's thread: the engine is reached directly (translated).
        rdb_max = self.backend._guarded(self._redis_rdb_max)
        env = self._backend_env()
        check_schemas(
            manifest,
            key_prefix=env.get("MIMIR_KEY_PREFIX", Settings().key_prefix),
            postgres=bool(env.get("MIMIR_DATABASE_URL")),
            rdb_max=rdb_max,
        )

    async def describe_data(self) -> str:
        return await self.backend._call(self._describe_data)

    def _describe_data(self) -> str:
        """What the project's volumes hold, read by a helper container: a run store, an
        ontology store, twins, pipeline files, a queue. Volumes that exist but hold none
        of these (a cluster that never stored anything) are no data."""
        volumes = self._existing_volumes()
        if not volumes:
            return ""
        script = (
            "cd /restore; "
            f"[ -e data/{SQLITE_NAME} ] && echo 'a run store'; "
            "[ -e data/ontologies ] && echo 'an ontology store'; "
            "[ -e data/twins.sqlite3 ] && echo 'twins'; "
            '[ -n "$(find pipelines -type f 2>/dev/null | head -n 1)" ] && echo '
            f"'pipelines in volume {self._topology().volume_name('backend_pipelines')}'; "
            "[ -n \"$(ls -A redis 2>/dev/null)\" ] && echo 'a queue'; true"
        )
        client = self.backend._connect()
        output = run_once(
            client,
            IMAGES["backend"],
            ["sh", "-c", script],
            user="0",
            network_mode="none",
            labels=self._helper_labels(),
            volumes={name: {"bind": _MOUNTS[v], "mode": "ro"} for v, name in volumes.items()},
        )
        found = output.decode("utf-8", "replace").split("\n")
        return ", ".join(line.strip() for line in found if line.strip())

    def _existing_volumes(self) -> dict[str, str]:
        """Of the volumes a restore writes, those that exist: topology name -> engine name."""
        topology = self._topology()
        owned = {v.name for v in self.backend._project_volumes()}
        return {
            volume: topology.volume_name(volume)
            for volume in _MOUNTS
            if topology.volume_name(volume) in owned
        }

    async def apply(self, staging: Path, manifest: Manifest, report: Progress) -> None:
        try:
            await self.backend._call(self._apply, staging, manifest, report)
        except BackupError as exc:
            raise ClusterError(f"restore failed: {exc}") from exc

    def _apply(self, staging: Path, manifest: Manifest, report: Progress) -> None:
        redis_image = self._resolve_redis_image(report)
        topology = self._topology(redis_image)
        root = Path(tempfile.mkdtemp(prefix="trees-", dir=self.staging_root()))
        try:
            new_data, new_pipelines = root / "data", root / "pipelines"
            new_data.mkdir()
            new_pipelines.mkdir()
            build_trees(staging, manifest, report, new_data, new_pipelines)
            report("restore", f"network {topology.network_name} and the project's volumes")
            self.backend._ensure_network_and_volumes(topology, _Created())
            helper = self._start_helper(topology)
            try:
                owner = self._image_owner(helper)
                for volume, tree in (("backend_data", new_data),
                                     ("backend_pipelines", new_pipelines)):  # fmt: skip
                    report("restore", f"writing {topology.volume_name(volume)}")
                    self._replace_contents(helper, _MOUNTS[volume], tree, owner)
                self._exec(helper, ["sh", "-c", "find /restore/redis -mindepth 1 -delete"])
                # Redis runs as redis (999:1000, as in redis:7-alpine), not root: the volume
                # (first mounted here, so root's) and the snapshot must be its own.
                redis_owner = f"{REDIS_UID}:{REDIS_GID}"
                self._exec(helper, ["chown", redis_owner, "/restore/redis"])
                rdb = staging / "redis" / "dump.rdb"
                if rdb.exists():
                    report("restore", "turning the queue snapshot into Redis's append-only file")
                    self._put_file(helper, "/restore/redis", rdb, "dump.rdb", redis_owner)
                    self._rdb_to_aof(topology, redis_image)
                    self._exec(helper, ["rm", "-f", "/restore/redis/dump.rdb"])
            finally:
                _remove(helper)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        restore_postgres(staging, self._container_settings(), report)

    # ---------------------------------------------------------------- helpers

    def _helper_name(self, what: str) -> str:
        return f"{self.backend.project}-restore-{what}"

    def _start_helper(self, topology: Topology) -> Any:
        client = self.backend._connect()
        name = self._helper_name("helper")
        with contextlib.suppress(docker.errors.NotFound):  # a leftover of a crashed restore
            client.containers.get(name).remove(force=True, v=True)
        return client.containers.run(
            IMAGES["backend"],
            ["sleep", "infinity"],
            name=name,
            detach=True,
            user="0",
            network_mode="none",
            labels=self._helper_labels(),
            volumes={
                topology.volume_name(volume): {"bind": target, "mode": "rw"}
                for volume, target in _MOUNTS.items()
            },
        )

    def _exec(self, container: Any, command: list[str]) -> str:
        code, output = container.exec_run(command)
        text = output.decode("utf-8", "replace") if output else ""
        if code != 0:
            raise ClusterError(
                f"{' '.join(command)} failed in {container.name} (exit {code}): {text[-500:]}"
            )
        return text

    def _image_owner(self, helper: Any) -> str:
        """``uid:gid`` of the user the backend image's server runs as (``USER`` in
        packaging/Dockerfile.backend: mimir, 10001), resolved inside the image."""
        image = self.backend._connect().images.get(IMAGES["backend"])
        user = str(image.attrs.get("Config", {}).get("User") or "0")
        if ":" in user:
            return user
        uid = self._exec(helper, ["id", "-u", user]).strip()
        gid = self._exec(helper, ["id", "-g", user]).strip()
        return f"{uid}:{gid}"

    def _replace_contents(self, helper: Any, target: str, tree: Path, owner: str) -> None:
        self._exec(helper, ["sh", "-c", f"find {target} -mindepth 1 -delete"])
        with tempfile.TemporaryFile(dir=self.staging_root()) as stream:
            with tarfile.open(fileobj=stream, mode="w") as tar:
                for path in sorted(tree.iterdir()):
                    tar.add(path, arcname=path.name)
            stream.seek(0)
            if not helper.put_archive(target, stream):
                raise ClusterError(f"the engine did not take the files for {target}")
        self._exec(helper, ["chown", "-R", owner, target])

    def _put_file(self, helper: Any, target: str, source: Path, name: str, owner: str) -> None:
        with tempfile.TemporaryFile(dir=self.staging_root()) as stream:
            with tarfile.open(fileobj=stream, mode="w") as tar:
                tar.add(source, arcname=name)
            stream.seek(0)
            if not helper.put_archive(target, stream):
                raise ClusterError(f"the engine did not take {name} for {target}")
        self._exec(helper, ["chown", owner, f"{target}/{name}"])

    def _rdb_to_aof(self, topology: Topology, redis_image: str) -> None:
        """``dump.rdb`` in ``redis_data`` -> the AOF, by the cluster's own Redis image (run
        through its entrypoint, as the cluster's Redis is: same user, same file owner)."""
        client = self.backend._connect()
        name = self._helper_name("redis")
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True, v=True)
        command = ["redis-server", "--dir", "/data", "--appendonly", "no"]
        command += ["--save", "", "--port", "6379"]
        redis = client.containers.run(
            redis_image,
            command,
            name=name,
            detach=True,
            network_mode="none",
            labels=self._helper_labels(),
            volumes={topology.volume_name("redis_data"): {"bind": "/data", "mode": "rw"}},
        )
        deadline = time.monotonic() + _REDIS_TIMEOUT
        try:
            self._until(redis, ["redis-cli", "ping"], lambda out: "PONG" in out, deadline)
            answer = self._exec(redis, ["redis-cli", "CONFIG", "SET", "appendonly", "yes"])
            if "OK" not in answer:
                raise BackupError(f"CONFIG SET appendonly yes answered {answer!r}", RDB_PART)

            def rewritten(out: str) -> bool:
                info = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
                if info.get("aof_last_bgrewrite_status") == "err":
                    raise BackupError(
                        "the temporary Redis failed to rewrite the snapshot as its AOF: "
                        + _logs(redis),
                        RDB_PART,
                    )
                return (
                    info.get("aof_enabled") == "1"
                    and info.get("aof_rewrite_in_progress") == "0"
                    and info.get("aof_rewrite_scheduled") == "0"
                    and info.get("aof_last_bgrewrite_status") == "ok"
                )

            self._until(redis, ["redis-cli", "INFO", "persistence"], rewritten, deadline)
            redis.exec_run(["redis-cli", "SHUTDOWN", "NOSAVE"])
            result = redis.wait(timeout=max(1.0, deadline - time.monotonic()))
            if int(result.get("StatusCode", 1)) != 0:
                raise BackupError(
                    f"the temporary Redis exited with code {result.get('StatusCode')} while "
                    f"writing the AOF: {_logs(redis)}",
                    RDB_PART,
                )
        finally:
            _remove(redis)

    def _until(self, container: Any, command: list[str], done: Any, deadline: float) -> None:
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                raise BackupError(
                    f"the temporary Redis stopped while loading the snapshot: {_logs(container)}",
                    RDB_PART,
                )
            _, output = container.exec_run(command)
            if done((output or b"").decode("utf-8", "replace")):
                return
            if time.monotonic() > deadline:
                raise BackupError(
                    f"the temporary Redis did not load and rewrite the snapshot within "
                    f"{_REDIS_TIMEOUT:g}s: {_logs(container)}",
                    RDB_PART,
                )
            time.sleep(0.2)


def _logs(container: Any) -> str:
    with contextlib.suppress(docker.errors.DockerException):
        return str(container.logs(tail=20).decode("utf-8", "replace"))
    return ""


def _remove(container: Any) -> None:
    with contextlib.suppress(docker.errors.DockerException):
        container.remove(force=True, v=True)
