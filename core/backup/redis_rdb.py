"""The Redis part of a backup: an RDB snapshot fetched over replication, and back to an AOF.

:func:`fetch_rdb` asks Redis for a full resynchronisation the way a replica (or
``redis-cli --rdb``) does: with ``diskless=True``, ``REPLCONF capa eof`` (the master may
then stream the snapshot without writing it to its disk, when it is configured for
diskless sync, after its ``repl-diskless-sync-delay``: 5 s by default; without it the
master saves to its disk with a BGSAVE and sends the file at once), ``REPLCONF
rdb-only 1`` (Redis >= 7.0: the snapshot only, no replication stream after it; ignored by
older servers) and ``SYNC``. The master answers with newlines while it prepares the
snapshot, then either ``$<length>\\r\\n<bytes>`` (disk) or ``$EOF:<40-byte mark>\\r\\n<bytes>
<mark>`` (diskless). The snapshot is a consistent point-in-time view (Redis forks), so it
works against a busy local, Docker or external Redis without access to its files.

:func:`rdb_to_aof` turns a restored ``dump.rdb`` into the AOF that the cluster's
``redis-server --appendonly yes`` loads (a directory of parts for Redis >= 7.0, one
``appendonly.aof`` for 6.2), with a temporary redis-server on a free 127.0.0.1 port.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.connection import ConnectionPool
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mimir.core.backup.manifest import BackupError
from mimir.core.durable import sync_directory
from mimir.core.queue.connection import is_cluster_url, redis_password, resolve_primary_url
from mimir.core.redis_embedded import answers_ping, free_port
from mimir.core.settings import normalise_redis_url

__all__ = [
    "RDB_PART",
    "RdbInfo",
    "fetch_rdb",
    "max_rdb_version",
    "rdb_to_aof",
    "rdb_version",
    "rdb_version_for_release",
]

#: The archive part the snapshot becomes (named in every error).
RDB_PART = "redis/dump.rdb"

#: RDB format version each Redis release writes (and reads at most), by (major, minor).
_RDB_BY_RELEASE: tuple[tuple[tuple[int, int], int], ...] = (
    ((7, 4), 12),
    ((7, 2), 11),
    ((7, 0), 10),
    ((5, 0), 9),  # 5.0, 6.0 and 6.2 all write version 9
    ((4, 0), 8),
)
_EOF_MARK_LEN = 40
_CHUNK = 1 << 20
#: Attempts at a free port for the temporary server (another process may take it first).
_PORT_ATTEMPTS = 3


@dataclass
class RdbInfo:
    """What :func:`fetch_rdb` fetched."""

    #: Bytes of the RDB file.
    size: int
    #: The RDB format version in its header (``REDIS0010`` -> 10).
    rdb_version: int
    #: ``redis_version`` from the server's ``INFO server``.
    redis_version: str
    #: Unix time at which ``SYNC`` was sent: the snapshot shows Redis at this moment or
    #: a little after (when the master forked for it).
    taken_at: float


def redact_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` query field)."""
    head, sep, query = url.partition("?")
    scheme, colon_slashes, rest = head.partition("://")
    if colon_slashes:
        netloc, slash, path = rest.partition("/")
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, has_password, _ = userinfo.partition(":")
            if has_password:
                netloc = f"{user}:***@{host}"
        head = f"{scheme}://{netloc}{slash}{path}"
    if sep:
        query = "&".join(
            f"{field.partition('=')[0]}=***"
            if field.partition("=")[0].lower() == "password"
            else field
            for field in query.split("&")
        )
    return head + sep + query


# -- fetch --------------------------------------------------------------------------


class _Timeout(Exception):
    pass


class _Reader:
    """Reads the raw replication stream from the socket, with one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()

    def more(self) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(_CHUNK)
        except TimeoutError as exc:
            raise _Timeout from exc
        if not data:
            raise ConnectionError("Redis closed the connection during the snapshot transfer")
        return data

    def header(self) -> bytes:
        """The ``$…`` line that starts the payload, after the master's keep-alive
        newlines (and any ``+`` status line); raises on an error reply."""
        while True:
            while self.buffer[:1] == b"\n":
                del self.buffer[:1]
            end = self.buffer.find(b"\r\n")
            if end < 0:
                self.buffer += self.more()
                continue
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            if line.startswith(b"-"):
                raise ResponseError(line[1:].decode("utf-8", "replace"))
            if line.startswith(b"$"):
                return line
            # "+FULLRESYNC …" (not sent for SYNC, but harmless) or anything else: skip.


def _redis_version(info: Any) -> str:
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    match = re.search(r"^redis_version:(\S+)", text, re.MULTILINE)
    return match.group(1) if match else ""


#: Why the Redis part of a backup is refused on a Redis Cluster (``{url}``: the URL shown).
CLUSTER_REFUSED = (
    "the Redis part of a backup needs one Redis, and {url} is a Redis Cluster (SYNC "
    "reaches one node only): Mimir's backups are not available there. Back up the "
    "cluster with its own tooling instead (BGSAVE on every primary and keep each one's "
    "dump.rdb, or rely on its replicas) and the run store with its database's tools"
)


def fetch_rdb(
    url: str,
    dest: Path,
    *,
    timeout: float = 300.0,
    progress: Callable[[int], None] | None = None,
    diskless: bool = False,
) -> RdbInfo:
    """Fetch a point-in-time RDB snapshot of the Redis at ``url`` into ``dest``.

    ``url`` is any form the project accepts (``host:port``, ``redis://``, ``rediss://``
    with TLS, ``unix://``; a password in the URL is used for ``AUTH``). The file is written
    as ``dest.partial``, fsynced and renamed, then checked (``REDIS`` magic, version).
    ``progress(bytes_so_far)`` is called as the payload arrives. The whole transfer must
    end within ``timeout`` seconds. Raises :class:`BackupError` (naming the URL without its
    password) when Redis is unreachable, refuses (``NOPERM``, a replica that has no
    master …), stops mid-transfer or sends something that is not an RDB.
    """
    url = normalise_redis_url(url)
    shown = redact_url(url)
    if is_cluster_url(url):
        raise BackupError(CLUSTER_REFUSED.format(url=shown), part=RDB_PART)
    try:  # redis+sentinel://: the primary the Sentinels name now
        url = resolve_primary_url(url, timeout=max(0.1, min(timeout, 10.0)))
    except (RedisError, OSError, ValueError) as exc:
        raise BackupError(
            f"cannot find the Redis primary through the Sentinels of {shown}: {exc}",
            part=RDB_PART,
        ) from exc
    try:  # the URL's password, else MIMIR_REDIS_PASSWORD_FILE's (kept out of the URL)
        password = redis_password(url)
    except ValueError as exc:
        raise BackupError(str(exc), part=RDB_PART) from None
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    deadline = time.monotonic() + timeout
    connect_timeout = max(0.1, min(timeout, 10.0))
    pool = ConnectionPool.from_url(
        url,
        socket_timeout=connect_timeout,
        socket_connect_timeout=connect_timeout,
        **({"password": password} if password is not None else {}),
    )
    conn = pool.make_connection()
    try:
        try:
            conn.connect()
            conn.send_command("INFO", "server")
            redis_version = _redis_version(conn.read_response())
            if diskless:
                conn.send_command("REPLCONF", "capa", "eof")
                conn.read_response()
            conn.send_command("REPLCONF", "rdb-only", "1")
            with contextlib.suppress(ResponseError):  # Redis < 7.0 has no rdb-only
                conn.read_response()
            taken_at = time.time()
            conn.send_command("SYNC")
            sock: socket.socket | None = getattr(conn, "_sock", None)  # the raw stream
            if sock is None:
                raise ConnectionError("the connection closed before SYNC")
            reader = _Reader(sock, deadline)
            header = reader.header()
            dest.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                size = _payload(reader, header, out, progress)
                out.flush()
                os.fsync(out.fileno())
        except _Timeout:
            raise BackupError(
                f"timed out after {timeout:g}s fetching the Redis snapshot from {shown}",
                part=RDB_PART,
            ) from None
        except RedisTimeoutError as exc:
            raise BackupError(
                f"timed out fetching the Redis snapshot from {shown}: {exc}", part=RDB_PART
            ) from exc
        except ResponseError as exc:
            raise BackupError(
                f"Redis at {shown} refused to send a snapshot (SYNC): {exc}", part=RDB_PART
            ) from exc
        except (RedisError, OSError, ValueError) as exc:
            raise BackupError(
                f"cannot fetch the Redis snapshot from {shown}: {exc}", part=RDB_PART
            ) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        conn.disconnect()
        pool.disconnect()
    try:
        version = rdb_version(partial)
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, dest)
    sync_directory(dest.parent)
    return RdbInfo(size=size, rdb_version=version, redis_version=redis_version, taken_at=taken_at)


def _payload(
    reader: _Reader, header: bytes, out: Any, progress: Callable[[int], None] | None
) -> int:
    """Copy the payload announced by ``header`` to ``out``; answers its size."""
    written = 0

    def emit(data: bytes | bytearray) -> None:
        nonlocal written
        if data:
            out.write(data)
            written += len(data)
            if progress is not None:
                progress(written)

    if header.startswith(b"$EOF:"):
        mark = header[5:]
        if len(mark) != _EOF_MARK_LEN:
            raise ValueError(f"bad end-of-snapshot mark in {header[:60]!r}")
        # Hold back the last 40 bytes seen: the mark ends the payload, never part of it.
        held = bytes(reader.buffer)
        reader.buffer.clear()
        while True:
            at = held.find(mark)
            if at >= 0:
                emit(held[:at])
                return written
            if len(held) > _EOF_MARK_LEN:
                emit(held[:-_EOF_MARK_LEN])
                held = held[-_EOF_MARK_LEN:]
            held += reader.more()
    try:
        length = int(header[1:])
    except ValueError:
        raise ValueError(f"unexpected reply to SYNC: {header[:60]!r}") from None
    if length < 0:
        raise ValueError(f"unexpected reply to SYNC: {header[:60]!r}")
    first = bytes(reader.buffer[:length])
    reader.buffer.clear()
    emit(first)
    while written < length:
        data = reader.more()
        emit(data[: length - written])
    return written


# -- versions -----------------------------------------------------------------------


def rdb_version(path: Path) -> int:
    """The RDB format version in ``path``'s header (``REDIS0010`` -> 10); raises
    :class:`BackupError` when the file is not an RDB."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise BackupError(f"cannot read the Redis snapshot {path}: {exc}", part=RDB_PART) from exc
    if len(head) < 9 or not head.startswith(b"REDIS") or not head[5:].isdigit():
        raise BackupError(
            f"{path} is not a Redis RDB snapshot (its header is {head!r})", part=RDB_PART
        )
    return int(head[5:])


def _server_release(redis_server: str | Path) -> tuple[str, tuple[int, int]]:
    """``redis-server --version``'s version text and (major, minor)."""
    try:
        done = subprocess.run(
            [str(redis_server), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"cannot run {redis_server} --version: {exc}", part=RDB_PART) from exc
    match = re.search(r"v=(\d+)\.(\d+)(\.\d+)?", done.stdout)
    if not match:
        raise BackupError(
            f"{redis_server} --version did not print a Redis version: "
            f"{(done.stdout + done.stderr).strip()[:200]!r}",
            part=RDB_PART,
        )
    text = match.group(0)[2:]
    return text, (int(match.group(1)), int(match.group(2)))


def max_rdb_version(redis_server: str | Path) -> int:
    """The newest RDB format version the ``redis-server`` binary reads: 6.0/6.2 -> 9,
    7.0 -> 10, 7.2 -> 11, 7.4 -> 12; a newer release is taken to read 12."""
    _, release = _server_release(redis_server)
    return _rdb_for(release)


def rdb_version_for_release(version_output: str) -> int:
    """The newest RDB format version a Redis reads, from its ``redis-server --version``
    output (``Redis server v=7.0.15 sha=…``) or a bare release (``7.2.4``): the mapping of
    :func:`max_rdb_version`, for a binary this process cannot run (one in an image)."""
    match = re.search(r"(?:v=|^)(\d+)\.(\d+)", version_output.strip())
    if not match:
        raise BackupError(f"not a Redis version: {version_output.strip()[:200]!r}", part=RDB_PART)
    return _rdb_for((int(match.group(1)), int(match.group(2))))


def _rdb_for(release: tuple[int, int]) -> int:
    for since, version in _RDB_BY_RELEASE:  # newest first: a newer release reads 12
        if release >= since:
            return version
    return 7


def _release_for(version: int) -> str:
    """The oldest Redis release that writes RDB ``version`` (for messages)."""
    for (major, minor), writes in reversed(_RDB_BY_RELEASE):
        if writes >= version:
            return f"{major}.{minor}"
    (major, minor), _ = _RDB_BY_RELEASE[0]
    return f"a release after {major}.{minor}"


# -- RDB -> AOF ---------------------------------------------------------------------


def rdb_to_aof(redis_server: str | Path, directory: Path, *, timeout: float = 120.0) -> None:
    """Turn ``directory/dump.rdb`` into the AOF ``redis-server --appendonly yes --dir
    directory`` loads, and remove ``dump.rdb``.

    A temporary ``redis_server`` on a free 127.0.0.1 port loads the RDB (AOF off), is told
    ``CONFIG SET appendonly yes`` (which rewrites the whole dataset into the AOF), and
    stops with ``SHUTDOWN NOSAVE`` once the rewrite is done. Redis >= 7.0 writes the AOF
    as ``appendonlydir/`` (a manifest and its parts), 6.2 as ``appendonly.aof``: the
    cluster must then run the same major release. An RDB newer than the binary reads,
    an AOF already in ``directory``, a server that does not come up or a failed rewrite
    within ``timeout`` seconds raise :class:`BackupError` (the RDB is then left as it was).
    """
    directory = Path(directory).resolve()
    rdb = directory / "dump.rdb"
    if not rdb.is_file():
        raise BackupError(f"no Redis snapshot to convert: {rdb} does not exist", part=RDB_PART)
    version = rdb_version(rdb)
    release, _ = _server_release(redis_server)
    readable = max_rdb_version(redis_server)
    if version > readable:
        raise BackupError(
            f"the Redis snapshot is RDB version {version} (written by Redis "
            f"{_release_for(version)} or newer), but {redis_server} is Redis {release}, which "
            f"reads up to version {readable}: restore with Redis {_release_for(version)} "
            f"or newer",
            part=RDB_PART,
        )
    existing = [p.name for p in (directory / "appendonlydir", directory / "appendonly.aof")]
    existing = [name for name in existing if (directory / name).exists()]
    if existing:
        raise BackupError(
            f"{directory} already holds an AOF ({', '.join(existing)}); convert the "
            f"snapshot into an empty directory",
            part=RDB_PART,
        )
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="mimir-rdb2aof-") as scratch:
        log = Path(scratch) / "redis.log"
        process, port = _start_converter(str(redis_server), directory, log, deadline, timeout)
        try:
            _rewrite_aof(port, deadline, timeout, log)
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
            try:
                client.shutdown(nosave=True)
            except RedisError as exc:
                raise BackupError(
                    f"the temporary redis-server refused SHUTDOWN: {exc}", part=RDB_PART
                ) from exc
            finally:
                client.close()
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BackupError(
                    f"the temporary redis-server did not stop within {timeout:g}s",
                    part=RDB_PART,
                ) from None
            if code != 0:
                raise BackupError(
                    f"the temporary redis-server exited with code {code} while writing the "
                    f"AOF; its log:\n{_tail(log)}",
                    part=RDB_PART,
                )
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            raise
    if not any((directory / name).exists() for name in ("appendonlydir", "appendonly.aof")):
        raise BackupError(f"the temporary redis-server wrote no AOF in {directory}", part=RDB_PART)
    rdb.unlink()
    sync_directory(directory)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _start_converter(
    binary: str, directory: Path, log: Path, deadline: float, timeout: float
) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server loading ``directory/dump.rdb`` (AOF off, no saves), answering PING."""
    problem = ""
    for _ in range(_PORT_ATTEMPTS):
        port = free_port()
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(directory),
            "--dbfilename", "dump.rdb",
            "--appendonly", "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log),
        ]  # fmt: skip
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=0,
            )
        except OSError as exc:
            raise BackupError(f"cannot start {binary}: {exc}", part=RDB_PART) from exc
        while time.monotonic() < deadline:
            if answers_ping(port):
                return process, port
            if process.poll() is not None:
                break
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
            raise BackupError(
                f"the temporary redis-server did not load the snapshot within {timeout:g}s; "
                f"its log:\n{_tail(log)}",
                part=RDB_PART,
            )
        problem = f"exited with code {process.returncode}"
        if "Address already in use" not in _tail(log, 5):
            break  # not a port clash: another port will not help
    raise BackupError(
        f"the temporary redis-server ({binary}) {problem} while loading the snapshot; "
        f"its log:\n{_tail(log)}",
        part=RDB_PART,
    )


def _rewrite_aof(port: int, deadline: float, timeout: float, log: Path) -> None:
    """``CONFIG SET appendonly yes`` and wait for the AOF rewrite it starts to end well."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)
    try:
        client.config_set("appendonly", "yes")
        while True:
            info = client.info("persistence")
            busy = int(info.get("aof_rewrite_in_progress", 0)) or int(
                info.get("aof_rewrite_scheduled", 0)
            )
            if not busy:
                status = str(info.get("aof_last_bgrewrite_status", "ok"))
                if status != "ok":
                    raise BackupError(
                        f"the temporary redis-server failed to write the AOF "
                        f"(aof_last_bgrewrite_status:{status}); its log:\n{_tail(log)}",
                        part=RDB_PART,
                    )
                return
            if time.monotonic() > deadline:
                raise BackupError(
                    f"the AOF rewrite did not finish within {timeout:g}s", part=RDB_PART
                )
            time.sleep(0.02)
    except RedisError as exc:
        raise BackupError(
            f"the temporary redis-server failed while writing the AOF: {exc}; its log:\n"
            f"{_tail(log)}",
            part=RDB_PART,
        ) from exc
    finally:
        client.close()
