"""TLS for the API: ``mimir server --tls-cert/--tls-key`` serves HTTPS, clients verify it
(the console's API client with a profile's CA file, ``mimir runs`` with ``MIMIR_CA_FILE``),
bad files stop the server before it binds, and a server beyond loopback without TLS warns.

The CA and the server's certificate (for 127.0.0.1) are made here with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path

import httpx
import pytest

from mimir.app.services.api import ApiClient, ApiUnreachable
from mimir.core.runstore import runs_cli
from mimir.core.tls import api_verify
from tests.helpers import RedisServer, ServerProcess, wait_until
from tests.pki import make_pki


def _listening(server: ServerProcess, scheme: str) -> None:
    def up() -> bool:
        assert server.process is not None
        code = server.process.poll()
        assert code is None, f"server exited with {code}:\n{server.output()}"
        return f"Mimir API listening on {scheme}://127.0.0.1:{server.port}" in server.output()

    wait_until(up, timeout=30, message=f"the server listening on {scheme}")


async def _console_calls(url: str, ca_file: str | None) -> tuple[dict, dict]:
    api = ApiClient(url, ca_file=ca_file)
    try:
        return await api.health(), await api.queue_status()
    finally:
        await api.aclose()


def test_https_is_served_and_verified_against_the_ca(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MIMIR_CA_FILE", raising=False)
    monkeypatch.delenv("MIMIR_API_TOKEN", raising=False)
    pki = make_pki(tmp_path)
    server = make_server(redis_url=redis_server.url, args=["--tls-cert", str(pki["cert"])])
    server.env["MIMIR_TLS_KEY"] = str(pki["key"])  # the key from the environment
    server.launch()
    _listening(server, "https")
    url = f"https://127.0.0.1:{server.port}"

    # With the CA: the request succeeds.
    answer = httpx.get(f"{url}/health", verify=api_verify(pki["ca"]), timeout=10)
    assert answer.status_code == 200 and answer.json()["redis"] == "ok"

    # The console's API client with the profile's CA file: /health and the queue status.
    health, status = asyncio.run(_console_calls(url, str(pki["ca"])))
    assert health["redis"] == "ok"
    assert status["queue_length"] == 0 and status["dead"] == 0, status

    # Without the CA: verification fails, and the client says so in one line.
    with pytest.raises(ApiUnreachable) as refused:
        asyncio.run(_console_calls(url, None))
    message = str(refused.value)
    assert f"the TLS certificate of {url} is not trusted" in message, message
    assert "MIMIR_CA_FILE" in message and "Traceback" not in message

    # Plain HTTP to the TLS port fails, and the message points at https://.
    with pytest.raises(ApiUnreachable) as plain:
        asyncio.run(_console_calls(f"http://127.0.0.1:{server.port}", None))
    assert "use an https:// URL" in str(plain.value), str(plain.value)

    # A command of the `mimir` CLI: MIMIR_CA_FILE makes it trust the CA.
    monkeypatch.setenv("MIMIR_API_URL", url)
    assert runs_cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert "is not trusted" in err and "Traceback" not in err, err
    monkeypatch.setenv("MIMIR_CA_FILE", str(pki["ca"]))
    assert runs_cli.main(["list"]) == 0, capsys.readouterr().err

    # The server's own log never showed a traceback for the refused handshakes.
    assert server.stop() == 0
    assert "Traceback" not in server.output(lines=1000)


@pytest.mark.parametrize("problem", ["mismatched key", "missing cert", "key only"])
def test_bad_tls_files_exit_2_before_binding(
    make_server: Callable[..., ServerProcess], tmp_path: Path, problem: str
) -> None:
    pki = make_pki(tmp_path)
    args = {
        "mismatched key": ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["other_key"])],
        "missing cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki["key"])],
        "key only": ["--tls-key", str(pki["key"])],
    }[problem]
    expected = {
        "mismatched key": f"TLS key {pki['other_key']} does not match the certificate "
        f"{pki['cert']}",
        "missing cert": f"TLS certificate {tmp_path / 'nope.pem'}: no such file",
        "key only": "TLS needs both --tls-cert and --tls-key",
    }[problem]
    with socket.socket() as sock:  # the port is held: a server that bound would say so
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = make_server(args=args, redis_url="127.0.0.1:1")
        server.port = sock.getsockname()[1]
        server.launch()
        assert server.wait() == 2
    output = server.output()
    assert expected in output, output
    assert "address already in use" not in output.lower() and "Traceback" not in output


def test_beyond_loopback_without_tls_warns_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    # The port is taken on loopback, so the server stops at the bind: nothing of this test
    # ever listens beyond 127.0.0.1, but the start-up checks all ran.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = make_server(MIMIR_API_TOKEN="t0ken-for-the-warning", redis_url="127.0.0.1:1")
        server.host = "0.0.0.0"
        server.port = sock.getsockname()[1]
        server.launch()
        assert server.wait() != 0
    output = server.output(lines=1000)
    assert output.count("listening on 0.0.0.0 without TLS") == 1, output
    assert "--tls-cert/--tls-key" in output


def test_a_ca_file_that_cannot_be_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent-ca.pem"
    with pytest.raises(ApiUnreachable, match=r"CA file .*absent-ca\.pem: no such file"):
        asyncio.run(_console_calls("https://127.0.0.1:9", str(missing)))
    monkeypatch.setenv("MIMIR_CA_FILE", str(missing))
    monkeypatch.setenv("MIMIR_API_URL", "https://127.0.0.1:9")
    err = io.StringIO()
    with redirect_stderr(err):
        assert runs_cli.main(["list"]) == 1
    assert f"CA file {missing}: no such file" in err.getvalue()
