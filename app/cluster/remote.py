"""Reaching a Docker engine over SSH: host keys and an OpenSSH tunnel.

The engine of an ``ssh://user@host`` profile is reached through one OpenSSH ControlMaster
process that forwards a local unix socket to the remote ``/var/run/docker.sock``; the Docker
SDK then talks to that socket. docker-py's own SSH adapter is not used: under paramiko it
accepts an unknown host key with a warning. Here ``ssh`` runs with ``BatchMode=yes`` and
``StrictHostKeyChecking=yes``: an unknown host key is refused (:class:`HostKeyUnknown`,
with the scanned fingerprints for the operator to accept), a changed one is never accepted
(:class:`HostKeyChanged`). The same master forwards the cluster's API port from the remote's
127.0.0.1 (:meth:`SshTunnel.forward`), so the API is never exposed on the remote's network.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

from mimir.app.cluster.base import ClusterError

__all__ = [
    "DEFAULT_KNOWN_HOSTS",
    "HostKey",
    "HostKeyChanged",
    "HostKeyUnknown",
    "SshTarget",
    "SshTunnel",
    "accept_host_key",
    "known_host_status",
    "scan_host_key",
]

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class HostKey:
    """One host key of an SSH server, as ``ssh-keyscan`` and ``ssh-keygen -l`` show it."""

    host: str
    port: int
    key_type: str
    #: ``SHA256:…`` as ``ssh-keygen -l`` prints it.
    fingerprint: str
    #: The ``known_hosts`` line.
    line: str


class HostKeyUnknown(ClusterError):
    """ssh refused the server: its host key is not in the known-hosts file."""

    def __init__(self, message: str, keys: list[HostKey]) -> None:
        super().__init__(message)
        self.keys = keys


class HostKeyChanged(ClusterError):
    """The server's host key differs from the one known: never accepted automatically."""

    def __init__(self, message: str, keys: list[HostKey]) -> None:
        super().__init__(message)
        self.keys = keys


@dataclass(frozen=True)
class SshTarget:
    """``ssh://user@host:port`` taken apart."""

    user: str | None
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        parsed = urlparse(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise ClusterError(f"not an SSH engine URL: {url!r} (expected ssh://user@host)")
        return cls(parsed.username, parsed.hostname, parsed.port or 22)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ClusterError(f"{name} is not installed: install the OpenSSH client (openssh-client)")
    return path


def scan_host_key(host: str, port: int = 22, timeout: float = 5.0) -> list[HostKey]:
    """The host keys the server at ``host:port`` presents (``ssh-keyscan``), with their
    fingerprints (``ssh-keygen -lf``)."""
    scan = subprocess.run(
        [_tool("ssh-keyscan"), "-T", str(max(1, int(timeout))), "-p", str(port), host],
        capture_output=True, text=True, timeout=timeout + 5, check=False,
    )  # fmt: skip
    keys = []
    for line in scan.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        listed = subprocess.run(
            [_tool("ssh-keygen"), "-lf", "-"],
            input=line + "\n", capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        parts = listed.stdout.split()
        if listed.returncode != 0 or len(parts) < 2:
            continue
        keys.append(HostKey(host, port, line.split()[1], parts[1], line))
    if not keys:
        raise ClusterError(
            f"no SSH server answered on {host}:{port} within {timeout:.0f} s: check the host "
            "name and port, and that sshd runs there"
        )
    return keys


def known_host_status(keys: list[HostKey], known_hosts: Path) -> str:
    """``known`` when one of ``keys`` is in ``known_hosts`` for its host, ``changed`` when
    the host is listed with other keys only, ``unknown`` when it is not listed."""
    if not keys:
        return "unknown"
    file = known_hosts.expanduser()
    if not file.is_file():
        return "unknown"
    name = keys[0].host if keys[0].port == 22 else f"[{keys[0].host}]:{keys[0].port}"
    found = subprocess.run(
        [_tool("ssh-keygen"), "-F", name, "-f", str(file)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    listed = {
        " ".join(line.split()[1:3])
        for line in found.stdout.splitlines()
        if line.strip() and not line.startswith("#")
    }
    if not listed:
        return "unknown"
    offered = {" ".join(key.line.split()[1:3]) for key in keys}
    return "known" if listed & offered else "changed"


def accept_host_key(key: HostKey, known_hosts: Path) -> None:
    """Append ``key`` to ``known_hosts`` (created 0600, its directory 0700)."""
    file = known_hosts.expanduser()
    if not file.parent.exists():
        file.parent.mkdir(parents=True, mode=0o700)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a") as handle:
        if handle.tell() > 0:
            with open(file, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    handle.write("\n")
        handle.write(key.line.rstrip("\n") + "\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _socket_answers(path: Path) -> bool:
    """True when a Docker engine answers ``/_ping`` through the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3.0)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.")
    except OSError:
        return False


class SshTunnel:
    """One OpenSSH ControlMaster: the remote engine's socket as a local unix socket, and
    forwarded TCP ports (:meth:`forward`). Sockets live in a private 0700 directory."""

    def __init__(
        self,
        docker_host: str,
        identity: str | None = None,
        known_hosts: str | Path | None = None,
        connect_timeout: float = 5.0,
        start_timeout: float = 20.0,
    ) -> None:
        self.target = SshTarget.parse(docker_host)
        self.docker_host = docker_host
        self.identity = identity
        self.known_hosts = Path(known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
        self.connect_timeout = connect_timeout
        self.start_timeout = start_timeout
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._forwards: dict[tuple[str, int], int] = {}

    @property
    def _control(self) -> Path:
        assert self._dir is not None, "the tunnel is not started"
        return self._dir / "ctl"

    @property
    def _socket(self) -> Path:
        assert self._dir is not None, "the tunnel is not started"
        return self._dir / "docker.sock"

    @property
    def docker_url(self) -> str:
        """The remote engine as a local unix socket URL (after :meth:`start`)."""
        return f"unix://{self._socket}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _ssh_options(self) -> list[str]:
        options = [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "ExitOnForwardFailure=yes",
            "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
            "-o", "ServerAliveInterval=10",
            "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip
        if self.identity:
            options += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.target.port != 22:
            options += ["-p", str(self.target.port)]
        return options

    def start(self) -> SshTunnel:
        """Start ssh and wait until the engine answers through the local socket."""
        if self.running:
            return self
        if self.identity and not Path(self.identity).is_file():
            raise ClusterError(f"the SSH key ssh_identity does not exist: {self.identity}")
        # Short base directory: a unix socket path has at most 107 bytes.
        base = "/tmp" if Path("/tmp").is_dir() else None
        self._dir = Path(tempfile.mkdtemp(prefix="mimir-ssh-", dir=base))  # 0700
        log = self._dir / "ssh.log"
        command = [
            _tool("ssh"), "-N", "-M", "-S", str(self._control), *self._ssh_options(),
            # In the foreground whatever ~/.ssh/config says: this process is the tunnel.
            "-o", "ControlPersist=no", "-o", "StreamLocalBindUnlink=yes",
            "-L", f"{self._socket}:{REMOTE_DOCKER_SOCKET}", self.target.destination,
        ]  # fmt: skip
        with log.open("wb") as stderr:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if self._process.poll() is not None:
                    raise self._failure(log.read_text(errors="replace"))
                if self._socket.exists() and _socket_answers(self._socket):
                    return self
                if time.monotonic() > deadline:
                    said = log.read_text(errors="replace").strip().splitlines()
                    raise ClusterError(
                        f"the SSH tunnel to {self.target.destination} opened, but the Docker "
                        f"socket {REMOTE_DOCKER_SOCKET} there did not answer within "
                        f"{self.start_timeout:.0f} s: is dockerd running, and is "
                        f"{self.target.user or 'the user'} in the 'docker' group?"
                        + (f" (ssh: {said[-1]})" if said else "")
                    )
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise

    def _failure(self, said: str) -> ClusterError:
        """ssh's complaint, as a message an operator can act on."""
        where = f"{self.target.host}:{self.target.port}"
        last = said.strip().splitlines()[-1] if said.strip() else "ssh exited"
        if "Host key verification failed" in said or "host key is known" in said:
            try:
                keys = scan_host_key(self.target.host, self.target.port, self.connect_timeout)
            except ClusterError:
                keys = []
            prints = ", ".join(f"{k.key_type} {k.fingerprint}" for k in keys) or "unknown"
            changed = "IDENTIFICATION HAS CHANGED" in said
            if changed or known_host_status(keys, self.known_hosts) == "changed":
                return HostKeyChanged(
                    f"the SSH host key of {where} has CHANGED from the one in {self.known_hosts} "
                    f"(now {prints}): someone may be impersonating the host; if the host was "
                    f"reinstalled, remove the old key (ssh-keygen -R {self.target.known_hosts_name}"
                    f" -f {self.known_hosts}) and trust the new one",
                    keys,
                )
            return HostKeyUnknown(
                f"the SSH host key of {where} is not in {self.known_hosts} ({prints}): check "
                "the fingerprint with the host's administrator, then accept it in the console's "
                "dialog or with 'mimir cluster trust-host --profile FILE' (or ssh-keyscan -p "
                f"{self.target.port} {self.target.host} >> {self.known_hosts})",
                keys,
            )
        if "Permission denied" in said:
            key = self.identity or "the ssh agent's and default keys"
            return ClusterError(
                f"the SSH server {where} refused user {self.target.user or getpass.getuser()!r} "
                f"with {key}: add the public key to that user's ~/.ssh/authorized_keys on the "
                "host, or set ssh_identity in the profile"
            )
        engine = f"cannot reach the Docker engine at {self.docker_host}"
        if "Connection refused" in said:
            return ClusterError(
                f"{engine}: no SSH server at {where} (connection refused); check the host and "
                "port, and that sshd runs there"
            )
        if "timed out" in said or "No route to host" in said:
            return ClusterError(
                f"{engine}: the SSH server {where} did not answer within "
                f"{self.connect_timeout:.0f} s ({last}); check the host name, that it is up, "
                "and any firewall on the way"
            )
        if "Could not resolve hostname" in said:
            return ClusterError(f"{engine}: unknown host {self.target.host!r}")
        return ClusterError(f"{engine}: the SSH tunnel failed: {last}")

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> int:
        """Forward a free port of this machine's 127.0.0.1 to ``remote_host:remote_port``
        as seen from the SSH server; return the local port (the same one when asked again)."""
        if not self.running:
            raise ClusterError(f"the SSH tunnel to {self.target.destination} is not open")
        known = self._forwards.get((remote_host, remote_port))
        if known is not None:
            return known
        said = ""
        for _ in range(3):  # a port found free may be taken before ssh binds it
            local = _free_port()
            result = subprocess.run(
                [
                    _tool("ssh"), "-S", str(self._control), "-O", "forward",
                    "-L", f"127.0.0.1:{local}:{remote_host}:{remote_port}",
                    self.target.destination,
                ],
                capture_output=True, text=True, timeout=15, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                self._forwards[(remote_host, remote_port)] = local
                return local
            said = result.stderr.strip()
        raise ClusterError(
            f"the SSH tunnel to {self.target.destination} could not forward port "
            f"{remote_port}: {said}"
        )

    def close(self) -> None:
        """End the master (``ssh -O exit``, then the process) and remove its sockets."""
        if self._process is not None:
            if self._process.poll() is None and self._dir is not None:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(
                        [_tool("ssh"), "-S", str(self._control), "-O", "exit",
                         self.target.destination],
                        capture_output=True, timeout=5, check=False,
                    )  # fmt: skip
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=5)
            self._process = None
        self._forwards.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> SshTunnel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
