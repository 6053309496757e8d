"""Regression tests for the numbered defects of issue 19, against the real TLS engine.

(1) an engine named by ``--profile``/``--docker-host`` never means local processes, whether
the local engine answers or not (hidden in a private mount namespace); (3) the environment's
CA bundle does not override the profile's CA; (4) ``DOCKER_HOST`` + ``DOCKER_TLS_VERIFY`` +
``DOCKER_CERT_PATH`` mean TLS; (5) a token without ``api_bind`` is refused before anything is
created, ``status``/``down`` are not refused by the token rule; (6) an expired certificate
and one of another CA get their own messages, quickly; a silent engine fails in seconds;
missing TLS files are named.
"""

from __future__ import annotations

import datetime
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.remote.conftest import REMOTE_TIMEOUT, Authority, Cli, CliResult, TlsHost

pytestmark = [pytest.mark.docker, REMOTE_TIMEOUT]

#: The command under test with this machine's Docker engine out of reach: a private mount
#: namespace where /var/run/docker.sock is /dev/null (the engine itself keeps running).
NO_LOCAL_ENGINE = [
    "unshare", "--mount", "--propagation", "private", "sh", "-c",
    'mount --bind /dev/null /var/run/docker.sock && exec "$@"', "sh",
]  # fmt: skip

NOTHING: dict[str, list[str]] = {"containers": [], "volumes": [], "networks": []}


@pytest.fixture(params=["local engine answers", "no local engine"])
def local_engine(request: pytest.FixtureRequest) -> list[str] | None:
    if request.param == "no local engine":
        if shutil.which("unshare") is None:
            pytest.fail("unshare (util-linux) is needed to hide the local engine")
        return NO_LOCAL_ENGINE
    return None


def _no_local_cluster(cli: Cli, result: CliResult, project: str) -> None:
    assert "(local)" not in result.out and "local backend" not in result.err, str(result)
    assert cli.local_state() == [], (cli.local_state(), str(result))


def test_1_profile_naming_a_remote_engine_never_means_local_processes(
    tls_host: TlsHost, cli: Cli, tmp_path: Path, local_engine: list[str] | None
) -> None:
    project = "rsel"
    status = cli("status", "--profile", str(tls_host.profile_path), "--project", project,
                 prefix=local_engine)  # fmt: skip
    assert status.code == 3, str(status)  # the remote engine answered: no such cluster
    assert f"cluster '{project}' (docker)" in status.out, str(status)
    _no_local_cluster(cli, status, project)
    # `up` whose remote start is refused (no api_bind): an error, not a local cluster.
    refused = tls_host.write_profile(tmp_path / "nobind.json", api_bind=None)
    try:
        up = cli("up", "--workers", "1", "--profile", str(refused), "--project", project,
                 "--port", str(free_port()), "--timeout", "20", prefix=local_engine)  # fmt: skip
        assert up.code == 1, str(up)
        _no_local_cluster(cli, up, project)
    finally:
        if cli.local_state():  # the defect came back: stop what it started
            cli("clean", "--backend", "local", "--project", project)
    assert tls_host.host.project_objects(project) == NOTHING
    # --docker-host alone names the engine too: without TLS material it is a TLS error,
    # not the local backend.
    bare = cli("status", "--docker-host", tls_host.docker_host, "--project", project,
               prefix=local_engine)  # fmt: skip
    assert bare.code == 1, str(bare)
    assert "TLS" in bare.err, str(bare)
    _no_local_cluster(cli, bare, project)


def test_3_the_environments_ca_bundle_does_not_override_the_profiles_ca(
    tls_host: TlsHost, cli: Cli, tmp_path: Path
) -> None:
    unrelated = Authority.create(tmp_path, "unrelated-ca")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(unrelated.path.read_bytes())
    env: dict[str, str | None] = {"REQUESTS_CA_BUNDLE": str(bundle), "CURL_CA_BUNDLE": str(bundle)}
    status = cli("status", "--profile", str(tls_host.profile_path), "--project", "rca", env=env)
    assert status.code == 3, str(status)
    assert "cluster 'rca' (docker)" in status.out, str(status)
    assert "CERTIFICATE_VERIFY_FAILED" not in status.err and "certificate" not in status.err


def test_4_docker_tls_variables_mean_tls(tls_host: TlsHost, cli: Cli, tmp_path: Path) -> None:
    certs = tmp_path / "docker-certs"
    certs.mkdir()
    shutil.copy(tls_host.ca_path, certs / "ca.pem")
    shutil.copy(tls_host.cert_path, certs / "cert.pem")
    shutil.copy(tls_host.key_path, certs / "key.pem")
    env: dict[str, str | None] = {
        "DOCKER_HOST": tls_host.docker_host,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(certs),
    }
    status = cli("status", "--project", "renv", env=env)
    assert status.code == 3, str(status)
    assert "cluster 'renv' (docker)" in status.out, str(status)
    assert cli.local_state() == []
    # The same engine without DOCKER_TLS_VERIFY: the CLI says it speaks TLS.
    plain = cli("status", "--project", "renv", env={**env, "DOCKER_TLS_VERIFY": None})
    assert plain.code == 1 and "TLS" in plain.err, str(plain)


def test_5_a_token_without_api_bind_is_refused_before_anything_is_created(
    tls_host: TlsHost, cli: Cli, tmp_path: Path
) -> None:
    project = "rbind"
    no_bind = tls_host.write_profile(tmp_path / "nobind.json", api_bind=None)
    up = cli("up", "--workers", "1", "--profile", str(no_bind), "--project", project,
             "--timeout", "20")  # fmt: skip
    assert up.code == 1, str(up)
    assert up.seconds < 15, str(up)
    assert "api_bind" in up.err and tls_host.address in up.err, up.err
    assert tls_host.host.project_objects(project) == NOTHING
    no_token = tls_host.write_profile(tmp_path / "notoken.json", api_token=None)
    up = cli("up", "--workers", "1", "--profile", str(no_token), "--project", project,
             "--timeout", "20")  # fmt: skip
    assert up.code == 1 and "token" in up.err, str(up)
    assert tls_host.host.project_objects(project) == NOTHING
    # status and down publish nothing: the token rule does not refuse them.
    bare = tls_host.write_profile(tmp_path / "bare.json", api_bind=None, api_token=None)
    status = cli("status", "--profile", str(bare), "--project", project)
    assert status.code == 3, str(status)
    down = cli("down", "--profile", str(bare), "--project", project)
    assert "token" not in down.err, str(down)


@pytest.fixture
def bad_certificates(tls_host: TlsHost, tmp_path: Path) -> Iterator[dict[str, Path]]:
    now = datetime.datetime.now(datetime.UTC)
    expired_cert, expired_key = tls_host.ca.issue(
        tmp_path, "expired",
        valid_from=now - datetime.timedelta(days=3), valid_until=now - datetime.timedelta(days=1),
    )  # fmt: skip
    stranger_ca = Authority.create(tmp_path, "stranger-ca")
    stranger_cert, stranger_key = stranger_ca.issue(tmp_path, "stranger")
    yield {
        "expired": tls_host.write_profile(
            tmp_path / "expired.json", tls_cert=str(expired_cert), tls_key=str(expired_key)
        ),
        "stranger": tls_host.write_profile(
            tmp_path / "stranger.json", tls_cert=str(stranger_cert), tls_key=str(stranger_key)
        ),
    }


def test_6_expired_and_wrong_ca_certificates_get_their_own_messages_quickly(
    tls_host: TlsHost, cli: Cli, bad_certificates: dict[str, Path]
) -> None:
    expired = cli("status", "--profile", str(bad_certificates["expired"]), "--project", "rcert")
    stranger = cli("status", "--profile", str(bad_certificates["stranger"]), "--project", "rcert")
    for result in (expired, stranger):
        assert result.code == 1, str(result)
        assert result.seconds < 10, str(result)
    assert "expired on" in expired.err and "expired-cert.pem" in expired.err, expired.err
    assert "not signed by the CA" in stranger.err and "stranger-cert.pem" in stranger.err
    first = lambda result: result.err.strip().splitlines()[0]  # noqa: E731
    assert first(expired) != first(stranger)


def test_6_missing_tls_files_are_named_and_a_cert_needs_its_key(
    tls_host: TlsHost, cli: Cli, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "key.pem"
    profile = tls_host.write_profile(tmp_path / "missing.json", tls_key=str(missing))
    result = cli("status", "--profile", str(profile), "--project", "rfiles")
    assert result.code == 1 and "tls_key" in result.err and str(missing) in result.err, str(result)
    profile = tls_host.write_profile(tmp_path / "nokey.json", tls_key=None)
    result = cli("status", "--profile", str(profile), "--project", "rfiles")
    assert result.code == 1, str(result)
    assert "tls_cert" in result.err and "tls_key" in result.err, result.err


def test_6_an_engine_that_never_answers_fails_in_seconds(cli: Cli) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result = cli("status", "--docker-host", f"tcp://127.0.0.1:{port}", "--project", "rhung")
    assert result.code == 1, str(result)
    assert result.seconds < 20, str(result)
    assert "did not answer" in result.err, result.err
