"""Operator errors of the Docker backend that need no engine, and backend selection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.docker_backend import DockerBackend, DockerProfile
from mimir.app.cluster.docker_engine import explain_engine_error
from mimir.app.cluster.selection import default_backend_name
from mimir.app.cluster.topology import API_TOKEN_FILE
from tests.helpers import free_port


def test_no_engine_at_a_missing_socket(tmp_path: Path) -> None:
    backend = DockerBackend("x", docker_host=f"unix://{tmp_path}/docker.sock")
    with pytest.raises(ClusterError, match=r"no Docker engine.*--backend local"):
        asyncio.run(backend.status())


def test_unreachable_remote_engine() -> None:
    backend = DockerBackend("x", docker_host=f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(ClusterError, match=r"cannot reach the Docker engine at tcp://127\.0\.0\.1"):
        asyncio.run(backend.status())


def test_permission_denied_on_the_socket_names_the_fix() -> None:
    try:
        raise PermissionError(13, "Permission denied")
    except PermissionError as cause:
        try:
            raise ConnectionError("Connection aborted") from cause
        except ConnectionError as exc:
            error = explain_engine_error(exc, "unix:///var/run/docker.sock")
    assert "permission denied on the Docker socket" in str(error)
    assert "usermod -aG docker" in str(error)


def test_cli_prints_the_error_and_exits_1(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = cluster_main(
        ["status", "--backend", "docker", "--docker-host", f"unix://{tmp_path}/none.sock"]
    )
    assert code == 1
    assert "mimir cluster: error: no Docker engine" in capsys.readouterr().err


def test_profile_loads_tls_material_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "remote.json").write_text(
        json.dumps(
            {
                "docker_host": "tcp://build.example:2376",
                "tls_ca": "ca.pem",
                "tls_cert": "cert.pem",
                "tls_key": "key.pem",
                "api_bind": "0.0.0.0",
                "api_token": "t0ken",
            }
        )
    )
    profile = DockerProfile.load(tmp_path / "remote.json")
    assert profile.tls_ca == str(tmp_path / "ca.pem")
    backend = DockerBackend("x", profile=profile)
    assert backend.api_url == "http://build.example:8080"
    topology = backend.topology(1)
    # The profile's token, as a secret file in the backend (never in its environment).
    assert topology.api_token == "t0ken"
    assert "MIMIR_API_TOKEN" not in topology.service("backend").environment
    assert topology.service("backend").environment["MIMIR_API_TOKEN_FILE"] == API_TOKEN_FILE


def test_profile_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"docker_hots": "tcp://x:2376"}')
    with pytest.raises(ClusterError, match="unknown keys"):
        DockerProfile.load(tmp_path / "bad.json")


def test_publishing_beyond_loopback_without_token_is_refused() -> None:
    # Refused by what publishes the API, before the engine is asked anything (issue 19:
    # down and status publish nothing and are not refused).
    backend = DockerBackend("x", api_bind="0.0.0.0", docker_host=f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(ClusterError, match="set an API token"):
        asyncio.run(backend.up(1))


def test_default_backend_follows_the_env_and_a_recorded_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIMIR_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MIMIR_CLUSTER_BACKEND", "local")
    assert default_backend_name("p") == "local"
    monkeypatch.setenv("MIMIR_CLUSTER_BACKEND", "podman")
    with pytest.raises(ClusterError, match="must be 'docker', 'local' or 'swarm'"):
        default_backend_name("p")
    monkeypatch.delenv("MIMIR_CLUSTER_BACKEND")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    # A named engine means Docker, answering or not (issue 19): its error, not local processes.
    assert default_backend_name("p") == "docker"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "state.json").write_text("{}")
    monkeypatch.delenv("DOCKER_HOST")
    assert default_backend_name("p") == "local"  # a recorded local cluster wins


def test_unreachable_ssh_engine() -> None:
    backend = DockerBackend("x", docker_host=f"ssh://nobody@127.0.0.1:{free_port()}")
    with pytest.raises(ClusterError, match=r"cannot reach the Docker engine at ssh://nobody@"):
        asyncio.run(backend.status())


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "cannot read the cluster state file"), ('{"bogus": 1}', "is malformed")],
)
def test_a_damaged_local_state_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    from mimir.app.cluster.local import LocalBackend
    from mimir.core.settings import Settings

    backend = LocalBackend("p", Settings.from_env({"MIMIR_STATE_DIR": str(tmp_path)}))
    backend.directory.mkdir(parents=True)
    backend.state_path.write_text(content)
    with pytest.raises(ClusterError, match=message) as caught:
        asyncio.run(backend.status())
    assert str(backend.state_path) in str(caught.value)
