"""``mimir cluster`` against a real remote engine over TLS (issue 19), through ``--profile``.

One cluster lifecycle on the TLS host: up with 2 workers (the API published on the host's
address with a token), 20 jobs through that API, scale 4 then 1, logs, a second ``up`` asking
for another bind refused, down, clean (nothing of the project left on the inner engine).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import ClusterAPI
from tests.helpers import wait_until
from tests.remote.conftest import REMOTE_TIMEOUT, Cli, TlsHost

pytestmark = [pytest.mark.docker, REMOTE_TIMEOUT]

PROJECT = "rtls"
API_PORT = 8080


def _service_row(out: str, service: str) -> list[str]:
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == service:
            return cells
    raise AssertionError(f"no {service} row in:\n{out}")


@pytest.fixture(scope="module")
def tls_cluster(tls_host: TlsHost, cli: Cli) -> Iterator[str]:
    """The project's cluster on the TLS host, up with 2 workers; whatever is left of it is
    removed from the inner engine at the end. Yields ``up``'s standard output."""
    profile = str(tls_host.profile_path)
    up = cli("up", "--workers", "2", "--profile", profile, "--project", PROJECT, "--timeout", "180")
    try:
        assert up.code == 0, str(up)
        yield up.out
    finally:
        engine = tls_host.host.engine()
        label = {"label": f"io.mimir.project={PROJECT}"}
        for container in engine.containers.list(all=True, filters=label):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for network in engine.networks.list(filters=label):
            with contextlib.suppress(Exception):
                network.remove()
        for volume in engine.volumes.list(filters=label):
            with contextlib.suppress(Exception):
                volume.remove(force=True)


@pytest.fixture(scope="module")
def api(tls_cluster: str, tls_host: TlsHost) -> Iterator[ClusterAPI]:
    client = ClusterAPI(f"http://{tls_host.address}:{API_PORT}", tls_host.token)
    yield client
    client.close()


def _worker_hosts(api: ClusterAPI) -> set[str]:
    return {w["hostname"] for w in api.workers()}


def test_up_publishes_the_api_on_the_hosts_address_with_a_token(
    tls_cluster: str, tls_host: TlsHost, cli: Cli
) -> None:
    assert f"API: http://{tls_host.address}:{API_PORT}" in tls_cluster
    status = cli("status", "--profile", str(tls_host.profile_path), "--project", PROJECT)
    assert status.code == 0, str(status)
    assert re.search(rf"cluster '{PROJECT}' \(docker\)\s+API: http://{re.escape(tls_host.address)}"
                     rf":{API_PORT}", status.out), status.out  # fmt: skip
    for service in ("redis", "backend", "worker"):
        row = _service_row(status.out, service)
        assert row[1] == "running", status.out
    assert _service_row(status.out, "worker")[3] == "2", status.out
    assert f"8080/tcp -> 0.0.0.0:{API_PORT}" in status.out, status.out
    assert cli.local_state() == []  # no local process was started
    # The API answers on the host's address, and only with the token.
    url = f"http://{tls_host.address}:{API_PORT}"
    anonymous = httpx.get(f"{url}/api/v1/workers", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    # On the inner engine: the backend publishes 8080 on all of the host's addresses.
    [backend] = tls_host.host.engine().containers.list(
        filters={"label": [f"io.mimir.project={PROJECT}", "io.mimir.service=backend"]}
    )
    bindings = backend.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
    assert bindings == [{"HostIp": "0.0.0.0", "HostPort": str(API_PORT)}]


def test_twenty_jobs_through_the_published_api_succeed(api: ClusterAPI) -> None:
    assert _worker_hosts(api) == {f"{PROJECT}-worker-1", f"{PROJECT}-worker-2"}
    records = api.wait_finished(api.enqueue(20), timeout=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_scale_to_four_then_one(api: ClusterAPI, tls_host: TlsHost, cli: Cli) -> None:
    profile = str(tls_host.profile_path)
    up = cli("scale", "4", "--profile", profile, "--project", PROJECT, "--timeout", "120")
    assert up.code == 0, str(up)
    assert _service_row(up.out, "worker")[3] == "4", up.out
    wait_until(
        lambda: _worker_hosts(api) == {f"{PROJECT}-worker-{n}" for n in range(1, 5)},
        timeout=30, interval=0.5, message="4 worker heartbeats",
    )  # fmt: skip
    ids = api.enqueue(8, seconds=0.2)
    down = cli("scale", "1", "--profile", profile, "--project", PROJECT, "--timeout", "120")
    assert down.code == 0, str(down)
    assert _service_row(down.out, "worker")[3] == "1", down.out
    records = api.wait_finished(ids, timeout=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    wait_until(
        lambda: _worker_hosts(api) == {f"{PROJECT}-worker-1"},
        timeout=30, interval=0.5, message="only worker-1's heartbeat",
    )  # fmt: skip
    status = cli("status", "--profile", profile, "--project", PROJECT)
    assert _service_row(status.out, "worker")[3] == "1", status.out


def test_logs_print_the_backends_lines(tls_cluster: str, tls_host: TlsHost, cli: Cli) -> None:
    logs = cli(
        "logs", "backend", "--tail", "20", "--profile", str(tls_host.profile_path),
        "--project", PROJECT,
    )  # fmt: skip
    assert logs.code == 0, str(logs)
    lines = logs.out.splitlines()
    assert lines and all(line.startswith("backend | ") for line in lines), logs.out


def test_up_asking_for_another_bind_is_refused_and_keeps_the_cluster(
    tls_cluster: str, tls_host: TlsHost, cli: Cli, tmp_path: Path
) -> None:
    """Defect 5, second half: another bind on a running cluster is said, not ignored."""
    other = tls_host.write_profile(tmp_path / "bind.json", api_bind=tls_host.address)
    again = cli("up", "--workers", "1", "--profile", str(other), "--project", PROJECT)
    assert again.code == 1, str(again)
    assert "0.0.0.0" in again.err and tls_host.address in again.err, again.err
    status = cli("status", "--profile", str(tls_host.profile_path), "--project", PROJECT)
    assert status.code == 0 and f"8080/tcp -> 0.0.0.0:{API_PORT}" in status.out, str(status)


def test_tls_verify_off_warns_once_not_per_request(
    tls_cluster: str, tls_host: TlsHost, cli: Cli, tmp_path: Path
) -> None:
    """Defect 6: ``tls_verify: false`` said once, not urllib3's warning per request."""
    insecure = tls_host.write_profile(tmp_path / "insecure.json", tls_verify=False)
    for command in (["status"], ["logs", "--tail", "5"]):
        result = cli(*command, "--profile", str(insecure), "--project", PROJECT)
        assert result.code == 0, str(result)
        assert result.err.count("TLS verification is off") == 1, result.err
        assert "Unverified HTTPS request" not in result.err, result.err


def test_down_then_clean_leave_nothing_of_the_project(
    tls_cluster: str, tls_host: TlsHost, cli: Cli
) -> None:
    profile = str(tls_host.profile_path)
    down = cli("down", "--profile", profile, "--project", PROJECT)
    assert down.code == 0, str(down)
    left = tls_host.host.project_objects(PROJECT)
    assert left["containers"] == [] and left["networks"] == [], left
    # down keeps the data and the secrets volumes (the server's token and password, and
    # the password alone for Redis and the workers).
    assert len(left["volumes"]) == 9, left
    status = cli("status", "--profile", profile, "--project", PROJECT)
    assert status.code == 3, str(status)  # not running: a clear answer, not an error
    clean = cli("clean", "--profile", profile, "--project", PROJECT)
    assert clean.code == 0, str(clean)
    assert tls_host.host.project_objects(PROJECT) == {
        "containers": [], "volumes": [], "networks": [],
    }  # fmt: skip
    assert cli.local_state() == []
