"""A throwaway PostgreSQL cluster for the tests (the ``postgres_url`` and ``database_url``
fixtures in ``tests/conftest.py``).

``initdb`` + ``pg_ctl`` from Debian's ``postgresql`` package (``scripts/system-deps.sh``
installs it), run as the ``postgres`` OS user when the tests run as root (PostgreSQL refuses
to run as root), in a fresh directory, on a free port, listening on 127.0.0.1 only and on a
socket in that directory: the distribution's own cluster (5432) is neither needed nor
touched. Durability is off (``fsync=off``): the data is thrown away. A missing PostgreSQL
is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port, port_open, wait_until

__all__ = ["PostgresCluster", "create_database", "drop_database", "postgres_bin"]


def postgres_bin() -> Path:
    """The folder of ``initdb`` and ``pg_ctl`` (the newest version installed)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): the run store's "
        "tests need it; run `sudo bash scripts/system-deps.sh` (Debian package postgresql)"
    )


@dataclass
class PostgresCluster:
    """A running throwaway cluster; :attr:`url` reaches its ``postgres`` database."""

    directory: Path
    port: int
    bin: Path
    as_postgres: bool

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.directory / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                f"\n{tail}"
            )
        return done

    @classmethod
    def start(cls) -> PostgresCluster:
        bin_dir = postgres_bin()
        as_postgres = os.geteuid() == 0
        directory = Path(tempfile.mkdtemp(prefix="mimir-pg-"))
        if as_postgres:
            shutil.chown(directory, "postgres", "postgres")
        cluster = cls(directory=directory, port=free_port(), bin=bin_dir, as_postgres=as_postgres)
        try:
            data = directory / "data"
            cluster._run(
                "initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
            options = " ".join(
                (
                    f"-p {cluster.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={directory}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                )
            )
            cluster._run(
                "pg_ctl", "-D", str(data), "-o", options, "-l", str(directory / "postgres.log"),
                "-w", "-t", "60", "start",
            )  # fmt: skip
            wait_until(lambda: port_open(cluster.port), timeout=30, message="postgres to listen")
        except BaseException:
            cluster.stop()
            raise
        cluster._watch(os.getpid())
        return cluster

    def _watch(self, pid: int) -> None:
        """A watchdog that stops the cluster and removes its directory once process
        ``pid`` (the test session) has gone, even killed (a timeout): ``pg_ctl`` runs the
        server detached, so nothing else would."""
        stop = [str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate"]
        if self.as_postgres:
            stop = ["runuser", "-u", "postgres", "--", *stop]
        script = (
            f"while kill -0 {pid} 2>/dev/null; do sleep 1; done; "
            f"[ -e {shlex.quote(str(self.directory / 'data' / 'postmaster.pid'))} ] && "
            f"{shlex.join(stop)} -w stop >/dev/null 2>&1; "
            f"rm -rf {shlex.quote(str(self.directory))}"
        )
        subprocess.Popen(
            ["sh", "-c", script],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def create_database(admin_url: str) -> str:
    """A new empty database on the cluster of ``admin_url``; answers its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex}"
    url = make_url(admin_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str) -> None:
    """Drop the database of ``database_url`` (its connections are ended first)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
