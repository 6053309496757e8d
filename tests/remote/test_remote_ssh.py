"""``mimir cluster`` against a real remote engine over SSH (issue 19), through ``--profile``.

The engine is reached through an OpenSSH tunnel and so is the API: it stays on the remote's
127.0.0.1, nothing is published on the host's network. First an unknown host key (an empty
known_hosts file) is refused before anything is created, naming the fingerprint, and
``trust-host --yes`` makes the same profile work. Then one lifecycle: up 2 workers, jobs
through ``mimir cluster tunnel``'s forwarded port, scale 4 then 1, logs, down, clean.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.cluster.conftest import ClusterAPI
from tests.helpers import port_open, wait_until
from tests.remote.conftest import CLI, REMOTE_TIMEOUT, Cli, SshHost, ed25519_identity

pytestmark = [pytest.mark.docker, REMOTE_TIMEOUT]

PROJECT = "rssh"


def _service_row(out: str, service: str) -> list[str]:
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == service:
            return cells
    raise AssertionError(f"no {service} row in:\n{out}")


def _fingerprint(host_key_line: str) -> str:
    listed = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=host_key_line + "\n",
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return listed.stdout.split()[1]


def _remove_project(ssh_host: SshHost, project: str) -> None:
    engine = ssh_host.host.engine()
    label = {"label": f"io.mimir.project={project}"}
    for container in engine.containers.list(all=True, filters=label):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    for network in engine.networks.list(filters=label):
        with contextlib.suppress(Exception):
            network.remove()
    for volume in engine.volumes.list(filters=label):
        with contextlib.suppress(Exception):
            volume.remove(force=True)


def test_an_unknown_host_key_is_refused_then_trust_host_accepts_it(
    ssh_host: SshHost, cli: Cli, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    profile = ssh_host.write_profile(tmp_path / "profile.json", ssh_known_hosts=str(known_hosts))
    fingerprint = _fingerprint(ssh_host.host_key_line)
    project = "rssh-unknown"
    try:
        up = cli("up", "--workers", "1", "--profile", str(profile), "--project", project,
                 "--timeout", "60")  # fmt: skip
        assert up.code == 1, str(up)
        assert "host key" in up.err and fingerprint in up.err, up.err
        assert "trust-host" in up.err, up.err
        assert up.seconds < 30, str(up)
        assert ssh_host.host.project_objects(project) == {
            "containers": [], "volumes": [], "networks": [],
        }  # fmt: skip
        assert cli.local_state() == []
        assert known_hosts.read_text() == ""  # nothing accepted behind the operator's back
        # Without --yes and without a terminal: refused, nothing written.
        ask = cli("trust-host", "--profile", str(profile))
        assert ask.code != 0 and fingerprint in ask.out, str(ask)
        assert known_hosts.read_text() == ""
        trust = cli("trust-host", "--profile", str(profile), "--yes")
        assert trust.code == 0, str(trust)
        assert fingerprint in trust.out, trust.out
        assert ssh_host.host_key_line.split()[2] in known_hosts.read_text()
        status = cli("status", "--profile", str(profile), "--project", project)
        assert status.code == 3, str(status)  # reached; no such cluster running
        assert f"cluster '{project}' (docker)" in status.out, status.out
    finally:
        _remove_project(ssh_host, project)


def test_a_changed_host_key_is_refused_and_never_trusted_automatically(
    ssh_host: SshHost, cli: Cli, tmp_path: Path
) -> None:
    impostor = tmp_path / "impostor"
    public = ed25519_identity(impostor).rsplit(" ", 1)[0]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{ssh_host.address} {public}\n")
    profile = ssh_host.write_profile(tmp_path / "profile.json", ssh_known_hosts=str(known_hosts))
    status = cli("status", "--profile", str(profile), "--project", "rssh-changed")
    assert status.code == 1 and "CHANGED" in status.err, str(status)
    assert _fingerprint(ssh_host.host_key_line) in status.err, status.err
    trust = cli("trust-host", "--profile", str(profile), "--yes")
    assert trust.code == 1 and "changed" in trust.err, str(trust)
    assert known_hosts.read_text() == f"{ssh_host.address} {public}\n"


def test_a_key_the_host_does_not_know_is_named(ssh_host: SshHost, cli: Cli, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    ed25519_identity(stranger)
    profile = ssh_host.write_profile(tmp_path / "profile.json", ssh_identity=str(stranger))
    status = cli("status", "--profile", str(profile), "--project", "rssh-key")
    assert status.code == 1, str(status)
    assert "refused user 'root'" in status.err and str(stranger) in status.err, status.err
    assert cli.local_state() == []


@pytest.fixture(scope="module")
def ssh_cluster(ssh_host: SshHost, cli: Cli) -> Iterator[str]:
    """The project's cluster on the SSH host, up with 2 workers; removed at the end."""
    profile = str(ssh_host.profile_path)
    try:
        up = cli("up", "--workers", "2", "--profile", profile, "--project", PROJECT,
                 "--timeout", "180")  # fmt: skip
        assert up.code == 0, str(up)
        yield up.out
    finally:
        _remove_project(ssh_host, PROJECT)


#: The CLI as started from a terminal, where Ctrl-C interrupts it. A child of a script run
#: in the background (CI's, for one) inherits SIGINT *ignored*, and Python then installs no
#: KeyboardInterrupt for it: the command would rightly not react to the test's Ctrl-C.
AT_A_TERMINAL = [
    CLI[0],
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); " + CLI[2],
]


class Tunnel:
    """``mimir cluster tunnel`` as the operator runs it: the API's local URL, open until
    interrupted."""

    def __init__(self, cli: Cli, profile: str) -> None:
        self.process = subprocess.Popen(
            [*AT_A_TERMINAL, "tunnel", "--profile", profile, "--project", PROJECT],
            env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        line = ""
        while not line and time.monotonic() < deadline and self.process.poll() is None:
            if selector.select(timeout=0.5):
                line = self.process.stdout.readline()
        selector.close()
        found = re.search(r"API (http://127\.0\.0\.1:\d+)", line)
        if found is None:
            self.close()
            raise AssertionError(f"mimir cluster tunnel printed {line!r}; {self.stderr()}")
        self.url = found.group(1)

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def close(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C: the tunnel is closed
            try:
                # Closing may take ssh -O exit (5 s at most), then its process's exit.
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


@pytest.fixture(scope="module")
def tunnel(ssh_cluster: str, ssh_host: SshHost, cli: Cli) -> Iterator[Tunnel]:
    opened = Tunnel(cli, str(ssh_host.profile_path))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def api(tunnel: Tunnel) -> Iterator[ClusterAPI]:
    client = ClusterAPI(tunnel.url)
    yield client
    client.close()


def _worker_hosts(api: ClusterAPI) -> set[str]:
    return {w["hostname"] for w in api.workers()}


def test_up_keeps_the_api_on_the_remotes_loopback_reached_through_the_tunnel(
    ssh_cluster: str, ssh_host: SshHost, cli: Cli
) -> None:
    assert re.search(r"API: http://127\.0\.0\.1:\d+ \(SSH tunnel", ssh_cluster), ssh_cluster
    status = cli("status", "--profile", str(ssh_host.profile_path), "--project", PROJECT)
    assert status.code == 0, str(status)
    reach = rf"API: http://127\.0\.0\.1:\d+ \(SSH tunnel to {re.escape(ssh_host.address)}"
    assert re.search(rf"cluster '{PROJECT}' \(docker\)\s+{reach}", status.out), status.out
    for service in ("redis", "backend", "worker"):
        assert _service_row(status.out, service)[1] == "running", status.out
    assert _service_row(status.out, "worker")[3] == "2", status.out
    assert cli.local_state() == []
    # Nothing exposed: the backend publishes its port on the remote's 127.0.0.1 only.
    [backend] = ssh_host.host.engine().containers.list(
        filters={"label": [f"io.mimir.project={PROJECT}", "io.mimir.service=backend"]}
    )
    bindings = backend.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
    assert not port_open(8080, host=ssh_host.address)  # not on the host's network


def test_jobs_round_trip_through_the_tunnel(api: ClusterAPI) -> None:
    assert _worker_hosts(api) == {f"{PROJECT}-worker-1", f"{PROJECT}-worker-2"}
    records = api.wait_finished(api.enqueue(10), timeout=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_scale_to_four_then_one(api: ClusterAPI, ssh_host: SshHost, cli: Cli) -> None:
    profile = str(ssh_host.profile_path)
    up = cli("scale", "4", "--profile", profile, "--project", PROJECT, "--timeout", "120")
    assert up.code == 0, str(up)
    assert _service_row(up.out, "worker")[3] == "4", up.out
    wait_until(
        lambda: _worker_hosts(api) == {f"{PROJECT}-worker-{n}" for n in range(1, 5)},
        timeout=30, interval=0.5, message="4 worker heartbeats",
    )  # fmt: skip
    down = cli("scale", "1", "--profile", profile, "--project", PROJECT, "--timeout", "120")
    assert down.code == 0, str(down)
    wait_until(
        lambda: _worker_hosts(api) == {f"{PROJECT}-worker-1"},
        timeout=30, interval=0.5, message="only worker-1's heartbeat",
    )  # fmt: skip
    records = api.wait_finished(api.enqueue(3), timeout=60)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_logs_print_the_backends_lines(ssh_cluster: str, ssh_host: SshHost, cli: Cli) -> None:
    logs = cli(
        "logs", "backend", "--tail", "20", "--profile", str(ssh_host.profile_path),
        "--project", PROJECT,
    )  # fmt: skip
    assert logs.code == 0, str(logs)
    lines = logs.out.splitlines()
    assert lines and all(line.startswith("backend | ") for line in lines), logs.out


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found |= {int(n) for n in path.read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_closes_the_tunnel_like_ctrl_c(
    ssh_cluster: str, ssh_host: SshHost, cli: Cli
) -> None:
    second = Tunnel(cli, str(ssh_host.profile_path))
    port = int(second.url.rsplit(":", 1)[1])
    try:
        assert port_open(port)
        ssh_masters = _children(second.process.pid)
        assert ssh_masters, "no ssh process under mimir cluster tunnel"
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(timeout=15)
    finally:
        second.close()
    wait_until(lambda: not any(_alive(pid) for pid in ssh_masters), timeout=10,
               message="the tunnel's ssh master to exit")  # fmt: skip
    assert not port_open(port)


def test_down_then_clean_leave_nothing_and_close_the_tunnel(
    ssh_cluster: str, tunnel: Tunnel, ssh_host: SshHost, cli: Cli
) -> None:
    profile = str(ssh_host.profile_path)
    down = cli("down", "--profile", profile, "--project", PROJECT)
    assert down.code == 0, str(down)
    left = ssh_host.host.project_objects(PROJECT)
    assert left["containers"] == [] and len(left["volumes"]) == 8, left  # secrets too
    clean = cli("clean", "--profile", profile, "--project", PROJECT)
    assert clean.code == 0, str(clean)
    assert ssh_host.host.project_objects(PROJECT) == {
        "containers": [], "volumes": [], "networks": [],
    }  # fmt: skip
    assert tunnel.close() == 130  # Ctrl-C ends `mimir cluster tunnel` as an interrupt
    # No ssh master of ours is left behind.
    master = re.compile(f"ssh -N -M .*{re.escape(ssh_host.address)}")
    masters = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if master.search(" ".join(p.info["cmdline"] or []))
    ]
    assert masters == [], masters
