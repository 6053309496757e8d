"""Remote cluster profiles in the console: stored, mapped to the Docker backend's profile,
imported from the Docker variables and contexts, edited in the profile dialog, and an
unknown SSH host key put to the operator by the Cluster panel.

Real widgets (offscreen), real files in ``tmp_path`` (a Docker contexts folder made by the
``docker`` CLI when it is installed, TLS material made with ``cryptography``, an SSH host
key made with ``ssh-keygen``). Nothing here reaches a remote host: the end-to-end runs
against real remote engines are in ``tests/remote``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox, QWidget  # noqa: E402

from mimir.app.cluster.base import ClusterStatus, ServiceStatus  # noqa: E402
from mimir.app.services.profiles import (  # noqa: E402
    ConnectionProfile,
    DictSettings,
    ProfileStore,
    TokenStore,
    docker_contexts,
    profile_from_context,
    profile_from_env,
)
from mimir.app.ui.host_key_dialog import HostKeyDialog  # noqa: E402
from mimir.app.ui.profile_dialog import VERIFY_OFF_WARNING, ProfileDialog  # noqa: E402
from tests.app.test_console_panels import until  # noqa: E402
from tests.pki import make_pki  # noqa: E402

# ---------------------------------------------------------------- material


def write_tls_material(folder: Path) -> dict[str, Path]:
    """A CA, and a certificate and key it signed: real PEM files, by Docker's names."""
    return make_pki(folder)


def make_context(config: Path, name: str, host: str, tls: dict[str, Path] | None) -> None:
    """A Docker context under ``config`` (``DOCKER_CONFIG``): by the docker CLI when it is
    installed, else written in the same layout by hand."""
    docker = shutil.which("docker")
    if docker is not None:
        endpoint = f"host={host}"
        if tls:
            endpoint += f",ca={tls['ca']},cert={tls['cert']},key={tls['key']}"
        else:
            endpoint += ",skip-tls-verify=true"
        subprocess.run(
            [docker, "context", "create", name, "--description", f"{name} engine",
             "--docker", endpoint],
            env={**os.environ, "DOCKER_CONFIG": str(config)},
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint_meta = {"Host": host, "SkipTLSVerify": not tls}
    meta_json = {
        "Name": name,
        "Metadata": {"Description": f"{name} engine"},
        "Endpoints": {"docker": endpoint_meta},
    }
    (meta / "meta.json").write_text(json.dumps(meta_json))
    if tls:
        store = config / "contexts" / "tls" / digest / "docker"
        store.mkdir(parents=True)
        for part, path in tls.items():
            shutil.copy(path, store / f"{part}.pem")


def host_key(tmp_path: Path, host: str = "127.0.0.1", port: int = 2222) -> Any:
    """A real ed25519 host key as PART A's ``HostKey`` (line and fingerprint)."""
    from mimir.app.cluster.remote import HostKey

    key_file = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)],
        check=True, timeout=30,
    )  # fmt: skip
    kind, blob = key_file.with_suffix(".pub").read_text().split()[:2]
    name = host if port == 22 else f"[{host}]:{port}"
    line = f"{name} {kind} {blob}"
    listed = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=line + "\n", capture_output=True, text=True,
        check=True, timeout=30,
    ).stdout.split()  # fmt: skip
    return HostKey(host, port, kind, listed[1], line)


def tcp_profile(tls: dict[str, Path], **changes: Any) -> ConnectionProfile:
    profile = ConnectionProfile(
        "lab tls",
        "remote_docker",
        api_url="http://10.0.0.5:9090",
        docker_host="tcp://10.0.0.5:2376",
        tls_ca=str(tls["ca"]),
        tls_cert=str(tls["cert"]),
        tls_key=str(tls["key"]),
        tls_verify=True,
        api_access="published",
        api_bind="10.0.0.5",
    )
    return dataclasses.replace(profile, **changes)


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    return write_tls_material(tmp_path / "certs")


# ---------------------------------------------------------------- the profile itself


def test_profile_round_trip_keeps_engine_fields_and_the_token_only_in_the_token_store(
    tls: dict[str, Path],
) -> None:
    settings = DictSettings()
    tokens = TokenStore(use_keyring=False)
    store = ProfileStore(settings, tokens)
    tcp = tcp_profile(tls, tls_verify=False)
    ssh = ConnectionProfile(
        "lab ssh",
        "remote_docker",
        docker_host="ssh://ops@lab.example:2222",
        ssh_identity="~/.ssh/id_lab",
        ssh_known_hosts="~/lab_known_hosts",
    )
    store.upsert(tcp, "s3cret-token-value")
    store.upsert(ssh)

    again = ProfileStore(settings, tokens)
    assert again.get("lab tls") == tcp
    assert again.get("lab ssh") == ssh
    assert again.token("lab tls") == "s3cret-token-value"
    raw = settings.data[ProfileStore.LIST_KEY]
    assert "s3cret-token-value" not in raw
    stored = {item["name"]: item for item in json.loads(raw)}
    assert stored["lab tls"]["tls_ca"] == str(tls["ca"])
    assert stored["lab tls"]["tls_verify"] is False
    assert stored["lab ssh"]["ssh_identity"] == "~/.ssh/id_lab"


def test_profiles_stored_before_the_engine_fields_still_load() -> None:
    settings = DictSettings()
    old = {"name": "old remote", "kind": "remote_docker", "api_url": "http://h:8080",
           "docker_host": "ssh://me@h", "project": "mimir", "workers": 2, "extra": {}}  # fmt: skip
    settings.setValue(ProfileStore.LIST_KEY, json.dumps([old]))
    [profile] = ProfileStore(settings, TokenStore(use_keyring=False)).load()
    assert profile.tls_verify and not profile.tls_ca and not profile.ssh_identity
    assert profile.effective_api_access == "tunnel"


def test_docker_profile_maps_every_field_the_backend_knows(
    tls: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mimir.app.cluster.docker_engine import DockerProfile

    monkeypatch.setenv("HOME", str(tmp_path))
    backend_fields = {f.name for f in dataclasses.fields(DockerProfile)}
    tcp = tcp_profile(tls, tls_verify=False).docker_profile("tok")
    assert isinstance(tcp, DockerProfile)
    assert tcp.docker_host == "tcp://10.0.0.5:2376"
    assert (tcp.tls_ca, tcp.tls_cert, tcp.tls_key) == tuple(
        str(tls[part]) for part in ("ca", "cert", "key")
    )
    assert tcp.tls_verify is False
    assert (tcp.api_bind, tcp.api_port, tcp.api_token) == ("10.0.0.5", 9090, "tok")
    if "api_access" in backend_fields:
        assert tcp.api_access == "published"

    ssh = ConnectionProfile(
        "s", "remote_docker", api_url="http://127.0.0.1:8181",
        docker_host="ssh://ops@lab:2222", ssh_identity="~/.ssh/id_lab",
    ).docker_profile(None)  # fmt: skip
    assert ssh.docker_host == "ssh://ops@lab:2222"
    assert ssh.api_token is None and ssh.api_bind is None and ssh.api_port == 8181
    assert not (ssh.tls_ca or ssh.tls_cert or ssh.tls_key)
    if "ssh_identity" in backend_fields:
        assert ssh.ssh_identity == str(tmp_path / ".ssh" / "id_lab")
        assert ssh.ssh_known_hosts == str(tmp_path / ".ssh" / "known_hosts")
        assert ssh.api_access == "tunnel"


def test_problems_name_each_rule(tls: dict[str, Path], tmp_path: Path) -> None:
    assert tcp_profile(tls).problems("tok") == []
    # A client certificate without its key (and the other way round).
    [problem] = tcp_profile(tls, tls_key="").problems("tok")
    assert "client certificate needs its key" in problem
    [problem] = tcp_profile(tls, tls_cert="").problems("tok")
    assert "needs its client certificate" in problem
    # Each missing file by name.
    missing = tcp_profile(
        tls, tls_ca=str(tmp_path / "nope-ca.pem"), tls_key=str(tmp_path / "nope-key.pem")
    ).problems("tok")
    assert any("nope-ca.pem" in p and "does not exist" in p for p in missing)
    assert any("nope-key.pem" in p for p in missing)
    # tcp:// published: a non-loopback interface and a token.
    loopback = tcp_profile(tls, api_bind="127.0.0.1").problems("tok")
    assert any("not 127.0.0.1" in p for p in loopback)
    assert any("not 127.0.0.1" in p for p in tcp_profile(tls, api_bind="").problems("tok"))
    assert any("needs a token" in p for p in tcp_profile(tls).problems(None))
    # An engine on this machine publishes on loopback without a token.
    local = tcp_profile(tls, docker_host="tcp://127.0.0.1:2376", api_bind="")
    assert local.problems(None) == []
    # A tunnel needs ssh://.
    assert any("needs an ssh:// engine" in p for p in tcp_profile(tls, api_access="tunnel")
               .problems("tok"))  # fmt: skip
    # A tcp:// engine on another host without TLS.
    plain = tcp_profile(tls, tls_ca="", tls_cert="", tls_key="").problems("tok")
    assert any("needs TLS" in p for p in plain)
    # An SSH tunnel needs no token and no bind.
    ssh = ConnectionProfile("s", "remote_docker", docker_host="ssh://ops@lab")
    assert ssh.problems(None) == []
    assert any(
        "SSH identity" in p
        for p in dataclasses.replace(ssh, ssh_identity=str(tmp_path / "id_x")).problems(None)
    )


# ---------------------------------------------------------------- importing


def test_import_from_the_docker_variables(tls: dict[str, Path], tmp_path: Path) -> None:
    env = {
        "DOCKER_HOST": "tcp://10.0.0.5:2376",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(tls["ca"].parent),
    }
    profile = profile_from_env(env)
    assert profile is not None
    assert profile.kind == "remote_docker" and profile.docker_host == "tcp://10.0.0.5:2376"
    assert (profile.tls_ca, profile.tls_cert, profile.tls_key) == tuple(
        str(tls[part]) for part in ("ca", "cert", "key")
    )
    assert profile.tls_verify is True
    assert profile.effective_api_access == "published" and profile.api_bind == "10.0.0.5"
    assert profile.problems("tok") == []

    # DOCKER_TLS without verification; the material from DOCKER_CONFIG when no cert path.
    config = tmp_path / "docker-config"
    write_tls_material(config)
    unverified = profile_from_env(
        {"DOCKER_HOST": "tcp://10.0.0.5:2376", "DOCKER_TLS": "1", "DOCKER_CONFIG": str(config)}
    )
    assert unverified is not None and unverified.tls_verify is False
    assert unverified.tls_ca == str(config / "ca.pem")

    # Verification asked for but no material where it should be: named by the check.
    empty = tmp_path / "empty"
    empty.mkdir()
    lacking = profile_from_env(
        {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(empty)}
    )
    assert lacking is not None
    assert any(str(empty / "ca.pem") in p for p in lacking.problems("tok"))

    ssh = profile_from_env({"DOCKER_HOST": "ssh://ops@lab:2222"})
    assert ssh is not None and ssh.effective_api_access == "tunnel"
    assert ssh.api_url == "http://127.0.0.1:8080" and not ssh.tls_ca
    assert profile_from_env({"DOCKER_HOST": "unix:///var/run/docker.sock"}) is None
    assert profile_from_env({}) is None


def test_import_from_docker_contexts(tls: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    make_context(config, "lab-tls", "tcp://10.0.0.5:2376", tls)
    make_context(config, "lab-ssh", "ssh://ops@lab:2222", None)
    digest = hashlib.sha256(b"lab-tls").hexdigest()
    assert (config / "contexts" / "meta" / digest / "meta.json").is_file()

    contexts = docker_contexts({"DOCKER_CONFIG": str(config)})
    assert [c.name for c in contexts] == ["lab-ssh", "lab-tls"]
    ssh_context, tls_context = contexts
    assert tls_context.docker_host == "tcp://10.0.0.5:2376"
    assert tls_context.description == "lab-tls engine"
    stored = config / "contexts" / "tls" / digest / "docker"
    assert tls_context.tls_ca == str(stored / "ca.pem")
    assert Path(tls_context.tls_cert).read_bytes() == tls["cert"].read_bytes()

    profile = profile_from_context(tls_context)
    assert profile.name == "context lab-tls" and profile.kind == "remote_docker"
    assert profile.tls_verify and profile.tls_key == str(stored / "key.pem")
    assert profile.problems("tok") == []
    ssh = profile_from_context(ssh_context)
    assert ssh.docker_host == "ssh://ops@lab:2222" and ssh.effective_api_access == "tunnel"
    assert ssh.tls_verify  # SkipTLSVerify means nothing for ssh://

    # A broken meta.json is skipped, not fatal; no contexts folder is an empty list.
    broken = config / "contexts" / "meta" / ("0" * 64)
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    assert len(docker_contexts({"DOCKER_CONFIG": str(config)})) == 2
    assert docker_contexts({"DOCKER_CONFIG": str(tmp_path / "none")}) == []


# ---------------------------------------------------------------- the profile editor


def fill(qtbot: Any, edit: Any, text: str) -> None:
    edit.clear()
    qtbot.keyClicks(edit, text)


def click_save(dialog: ProfileDialog) -> None:
    QTest.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)


def test_editor_fills_a_tls_profile_warns_without_verification_and_saves_it(
    qtbot: Any, tls: dict[str, Path]
) -> None:
    dialog = ProfileDialog(None, None, secure_tokens=False, taken_names={"Local Docker"})
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert not dialog.tls_box.isVisible()
    fill(qtbot, dialog.name_edit, "lab tls")
    fill(qtbot, dialog.engine_edit, "tcp://10.0.0.5:2376")
    qtbot.waitUntil(dialog.tls_box.isVisible, timeout=2000)
    assert not dialog.ssh_box.isVisible()
    assert not dialog.tunnel_radio.isEnabled() and dialog.published_radio.isChecked()
    fill(qtbot, dialog.ca_edit, str(tls["ca"]))
    fill(qtbot, dialog.cert_edit, str(tls["cert"]))
    fill(qtbot, dialog.key_edit, str(tls["key"]))
    fill(qtbot, dialog.bind_edit, "10.0.0.5")
    dialog.port_spin.setValue(9090)
    fill(qtbot, dialog.token_edit, "tok")

    assert dialog.verify_box.isChecked() and not dialog.verify_warning.isVisible()
    dialog.verify_box.click()
    qtbot.waitUntil(dialog.verify_warning.isVisible, timeout=2000)
    assert dialog.verify_warning.text() == VERIFY_OFF_WARNING
    assert "color: #FF6B6B" in dialog.verify_warning.styleSheet()

    click_save(dialog)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=2000)
    assert dialog.result() == dialog.DialogCode.Accepted.value
    assert dialog.profile() == tcp_profile(tls, tls_verify=False)
    assert dialog.token() == "tok"


def test_editor_refuses_each_rule_with_its_message(
    qtbot: Any, tls: dict[str, Path], tmp_path: Path
) -> None:
    dialog = ProfileDialog(None, tcp_profile(tls), "tok", secure_tokens=True, taken_names={"taken"})
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)

    def refused(*expected: str) -> str:
        click_save(dialog)
        qtbot.waitUntil(dialog.problems_label.isVisible, timeout=2000)
        assert dialog.isVisible() and dialog.result() == 0
        text = dialog.problems_label.text()
        for part in expected:
            assert part in text, text
        return text

    dialog.key_edit.clear()
    refused("The client certificate needs its key")
    dialog.key_edit.setText(str(tls["key"]))
    assert not dialog.problems_label.isVisible()  # an edit takes the old message away

    dialog.ca_edit.setText(str(tmp_path / "missing-ca.pem"))
    refused(f"The TLS CA file {tmp_path / 'missing-ca.pem'} does not exist")
    dialog.ca_edit.setText(str(tls["ca"]))

    dialog.bind_edit.setText("127.0.0.1")
    dialog.token_edit.clear()
    refused("not 127.0.0.1", "needs a token")
    dialog.bind_edit.setText("10.0.0.5")
    dialog.token_edit.setText("tok")

    dialog.name_edit.setText("taken")
    refused("already named 'taken'")
    dialog.name_edit.setText("lab tls")

    # ssh:// with neither an identity file nor the agent; then a missing identity file.
    dialog.engine_edit.setText("ssh://ops@lab:2222")
    qtbot.waitUntil(dialog.ssh_box.isVisible, timeout=2000)
    assert not dialog.tls_box.isVisible() and dialog.tunnel_radio.isEnabled()
    assert dialog.ssh_target_label.text() == "ops@lab:2222"
    dialog.agent_box.setChecked(False)
    dialog.identity_edit.clear()
    refused("Choose an identity file, or tick")
    dialog.identity_edit.setText(str(tmp_path / "id_missing"))
    refused(f"The SSH identity file {tmp_path / 'id_missing'} does not exist")
    dialog.agent_box.setChecked(True)
    assert not dialog.identity_edit.isEnabled()
    dialog.tunnel_radio.setChecked(True)
    assert not dialog.bind_edit.isVisible()

    click_save(dialog)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=2000)
    saved = dialog.profile()
    assert saved.docker_host == "ssh://ops@lab:2222" and saved.api_access == "tunnel"
    assert saved.ssh_identity == "" and saved.api_bind == "" and saved.tls_ca == ""
    assert saved.api_url == "http://127.0.0.1:9090"


def test_editor_imports_the_environment_and_a_context(
    qtbot: Any, loop: Any, tls: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "docker-config"
    make_context(config, "lab-tls", "tcp://10.0.0.5:2376", tls)
    env = {
        "DOCKER_HOST": "ssh://ops@lab:2200",
        "DOCKER_CONFIG": str(config),
    }
    dialog = ProfileDialog(None, None, env=env)
    qtbot.addWidget(dialog)
    dialog.show()

    async def scenario() -> None:
        dialog.name_edit.clear()
        QTest.mouseClick(dialog.import_env_button, Qt.MouseButton.LeftButton)
        await until(lambda: dialog.engine_edit.text() == "ssh://ops@lab:2200", 5, "the import")
        assert dialog.name_edit.text() == "Docker environment"
        assert dialog.tunnel_radio.isChecked() and dialog.ssh_box.isVisible()
        assert "the environment" in dialog.note_label.text()

        QTest.mouseClick(dialog.import_context_button, Qt.MouseButton.LeftButton)
        chooser = await until(lambda: dialog.chooser, 5, "the context chooser")
        await until(chooser.isVisible, 5, "the chooser to show")
        assert chooser.list.count() == 1 and "lab-tls" in chooser.list.item(0).text()
        ok = chooser.buttons.button(QDialogButtonBox.StandardButton.Ok)
        QTest.mouseClick(ok, Qt.MouseButton.LeftButton)
        await until(lambda: dialog.engine_edit.text() == "tcp://10.0.0.5:2376", 5, "import")
        assert dialog.name_edit.text() == "Docker environment"  # a typed name is kept
        assert dialog.ca_edit.text().endswith("/docker/ca.pem")
        assert dialog.published_radio.isChecked() and dialog.bind_edit.text() == "10.0.0.5"
        assert "Docker context 'lab-tls'" in dialog.note_label.text()

    loop.run_until_complete(scenario())


# ---------------------------------------------------------------- the host-key question


def test_host_key_dialog_shows_the_fingerprints_and_rejects_by_default(
    qtbot: Any, tmp_path: Path
) -> None:
    key = host_key(tmp_path)
    dialog = HostKeyDialog(None, key.host, key.port, [key], str(tmp_path / "known_hosts"))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert key.fingerprint.startswith("SHA256:")
    assert dialog.fingerprints() == [key.fingerprint]
    assert dialog.table.item(0, 0).text() == "ssh-ed25519"
    assert "Trust this host?" in dialog.question.text()
    assert "[127.0.0.1]:2222" in dialog.question.text()
    assert dialog.reject_button.isDefault() and not dialog.accept_button.isDefault()
    QTest.keyClick(dialog, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=2000)
    assert dialog.result() == dialog.DialogCode.Rejected.value


# ---------------------------------------------------------------- the Cluster panel


class KnownHostsBackend:
    """A backend behind an SSH host: refuses (``HostKeyUnknown``, PART A's class) while
    the key is not in the known-hosts file, as the Docker backend's tunnel does."""

    backend = "docker"
    api_token = None
    settings = None

    def __init__(self, key: Any, known_hosts: Path) -> None:
        self.project = "remote"
        self.key = key
        self.known_hosts = known_hosts
        self.up_calls = 0
        self.running = False

    def _check(self) -> None:
        from mimir.app.cluster.remote import HostKeyUnknown

        text = self.known_hosts.read_text() if self.known_hosts.exists() else ""
        if self.key.line not in text:
            raise HostKeyUnknown(
                f"the host key of {self.key.host}:{self.key.port} is not known", [self.key]
            )

    async def status(self) -> ClusterStatus:
        await asyncio.to_thread(self._check)
        state = "running" if self.running else "stopped"
        return ClusterStatus(
            "docker", self.project, [ServiceStatus("api", "server", state)],
            "http://127.0.0.1:41234" if self.running else None,
        )  # fmt: skip

    async def stats(self) -> list[Any]:
        return []

    async def instances(self) -> list[Any]:
        return []

    async def up(self, workers: int = 2, progress: Any = None) -> ClusterStatus:
        self.up_calls += 1
        await asyncio.to_thread(self._check)
        self.running = True
        return await self.status()


@pytest.fixture
def panel_session(qapp: Any, tmp_path: Path) -> Iterator[Any]:
    from mimir.app.ui.session import ConsoleSession

    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    store = ProfileStore(DictSettings(), TokenStore(use_keyring=False))
    session = ConsoleSession(settings, store)
    yield session
    gc.collect()


def _dispose(widget: QWidget, qapp: Any) -> None:
    widget.close()
    widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qapp.processEvents()


def test_panel_asks_about_an_unknown_host_key_and_retries_once_accepted(
    qapp: Any, loop: Any, panel_session: Any, tmp_path: Path
) -> None:
    pytest.importorskip("mimir.app.cluster.remote")
    from mimir.app.ui.cluster_panel import QtClusterPanel

    key = host_key(tmp_path)
    known_hosts = tmp_path / "ssh" / "known_hosts"
    backend = KnownHostsBackend(key, known_hosts)
    profile = ConnectionProfile(
        "lab ssh", "remote_docker", api_url="http://127.0.0.1:8080",
        docker_host="ssh://ops@127.0.0.1:2222", ssh_known_hosts=str(known_hosts),
    )  # fmt: skip
    panel_session.profiles.upsert(profile)
    panel_session.use_backend(backend)
    panel = QtClusterPanel(panel_session)
    panel._timer.stop()  # the test drives the refreshes
    panel.show()

    async def scenario() -> None:
        panel_session.apply_profile(profile)
        # The first status read meets the unknown key and asks once: Reject.
        dialog = await until(lambda: panel.host_key_dialog, 10, "the host-key question")
        await until(dialog.isVisible, 5, "the question to show")
        assert dialog.fingerprints() == [key.fingerprint]
        QTest.mouseClick(dialog.reject_button, Qt.MouseButton.LeftButton)
        await until(lambda: "not trusted" in panel.banner.text(), 5, "the refusal")
        assert not known_hosts.exists()
        assert "API via SSH tunnel" in panel.access_label.text()
        assert "127.0.0.1:8080" in panel.access_label.text()

        # Start meets it again: Accept writes the key and retries Start once.
        QTest.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        dialog = await until(lambda: panel.host_key_dialog, 10, "the question on Start")
        await until(dialog.isVisible, 5, "the question to show")
        assert backend.up_calls == 1 and panel.busy
        QTest.mouseClick(dialog.accept_button, Qt.MouseButton.LeftButton)
        await until(lambda: not panel.busy, 10, lambda: f"Start to end: {panel.banner.text()}")
        assert key.line in known_hosts.read_text()
        assert backend.up_calls == 2 and backend.running
        assert "done" in panel.banner.text(), panel.banner.text()
        assert panel.access_label.text() == (
            "API via SSH tunnel 127.0.0.1:41234 → 127.0.0.1:8080 (nothing exposed on the host)"
        )

    try:
        loop.run_until_complete(scenario())
    finally:
        _dispose(panel, qapp)


def test_panel_shows_a_changed_host_key_as_an_error_without_offering_it(
    qapp: Any, loop: Any, panel_session: Any, tmp_path: Path
) -> None:
    remote = pytest.importorskip("mimir.app.cluster.remote")
    from mimir.app.ui.cluster_panel import QtClusterPanel

    key = host_key(tmp_path)

    class ChangedBackend(KnownHostsBackend):
        def _check(self) -> None:
            raise remote.HostKeyChanged(
                "the host key of 127.0.0.1:2222 CHANGED: refusing to connect", [self.key]
            )

    backend = ChangedBackend(key, tmp_path / "known_hosts")
    panel_session.use_backend(backend)
    profile = ConnectionProfile("lab", "remote_docker", docker_host="ssh://ops@127.0.0.1:2222")
    panel_session.profiles.upsert(profile)
    panel = QtClusterPanel(panel_session)
    panel._timer.stop()
    panel.show()

    async def scenario() -> None:
        panel_session.apply_profile(profile)
        QTest.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        await until(lambda: "CHANGED" in panel.banner.text(), 10, "the error")
        await until(lambda: not panel.busy, 10, "Start to end")
        assert panel.host_key_dialog is None and backend.up_calls == 1
        assert not (tmp_path / "known_hosts").exists()

    try:
        loop.run_until_complete(scenario())
    finally:
        _dispose(panel, qapp)


def test_panel_edits_a_profile_and_gives_its_engine_settings_to_the_backend(
    qapp: Any, loop: Any, panel_session: Any, tls: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("docker")
    from mimir.app.cluster.docker_backend import DockerBackend
    from mimir.app.ui.cluster_panel import QtClusterPanel
    from mimir.app.ui.session import OPEN_BACKENDS

    panel = QtClusterPanel(panel_session)
    panel._timer.stop()
    panel.show()
    # A TLS engine on loopback port 9 (discard): nothing answers, nothing leaves the machine.
    wanted = tcp_profile(
        tls, name="lab loop", docker_host="tcp://127.0.0.1:9", api_bind="10.0.0.5",
        api_url="http://127.0.0.1:9090",
    )  # fmt: skip

    async def scenario() -> None:
        QTest.mouseClick(panel.new_profile_button, Qt.MouseButton.LeftButton)
        dialog = await until(lambda: panel.profile_dialog, 5, "the profile editor")
        await until(dialog.isVisible, 5, "the editor to show")
        dialog.set_profile(wanted, "tok-123")
        click_save_later = dialog.save_button
        QTest.mouseClick(click_save_later, Qt.MouseButton.LeftButton)
        await until(lambda: panel.profile_dialog is None, 5, "the editor to close")
        await until(lambda: panel_session.profile.name == "lab loop", 5, "the profile applied")
        stored = panel_session.profiles.get("lab loop")
        assert stored is not None
        assert stored.tls_ca == str(tls["ca"]) and stored.api_bind == "10.0.0.5"
        assert panel_session.profiles.token("lab loop") == "tok-123"
        assert panel.profile_combo.currentText() == "lab loop"
        backend = panel_session.backend
        assert isinstance(backend, DockerBackend), panel_session.backend_error
        assert backend.profile == stored.docker_profile("tok-123")
        assert backend.api_token == "tok-123" and backend.api_port == 9090
        assert panel.access_label.text() == "API published on 10.0.0.5:9090 (token)"
        assert panel.access_label.isVisible()
        assert backend in OPEN_BACKENDS  # closed when the console exits (its SSH tunnel)

        # Another profile: the remote backend is closed, the access line goes.
        panel.profile_combo.setCurrentIndex(panel.profile_combo.findText("Local processes"))
        await until(lambda: panel_session.profile.name == "Local processes", 5, "the switch")
        assert backend not in OPEN_BACKENDS
        assert panel_session.backend is not backend
        assert not panel.access_label.isVisible()

    try:
        loop.run_until_complete(scenario())
    finally:
        _dispose(panel, qapp)


def test_the_api_access_line_says_tunnel_or_published_and_warns_without_a_token() -> None:
    from mimir.app.ui.cluster_panel import api_access_text

    ssh = ConnectionProfile(
        "s", "remote_docker", api_url="http://127.0.0.1:8080", docker_host="ssh://ops@lab"
    )
    assert api_access_text(ssh, None, False) == (
        "API via SSH tunnel → lab:8080, opened while the cluster runs (nothing exposed)"
    )
    assert api_access_text(ssh, "http://127.0.0.1:41234", False) == (
        "API via SSH tunnel 127.0.0.1:41234 → lab:8080 (nothing exposed on the host)"
    )
    published = ConnectionProfile(
        "t", "remote_docker", api_url="http://10.0.0.5:8080", docker_host="tcp://10.0.0.5:2376",
        api_access="published", api_bind="10.0.0.5",
    )  # fmt: skip
    assert api_access_text(published, None, True) == "API published on 10.0.0.5:8080 (token)"
    assert "NO token" in api_access_text(published, None, False)
    assert api_access_text(ConnectionProfile("local"), "http://127.0.0.1:8080", False) == ""


def test_the_session_closes_the_backend_it_built_when_the_console_closes(
    qapp: Any, loop: Any, panel_session: Any, tls: dict[str, Path]
) -> None:
    """A remote backend may hold an SSH tunnel (an ssh process): the session's close, which
    the main window's shutdown awaits, closes it."""
    from mimir.app.cluster.docker_backend import DockerBackend
    from mimir.app.ui.session import OPEN_BACKENDS

    profile = tcp_profile(tls, name="closing", docker_host="tcp://127.0.0.1:9")
    panel_session.profiles.upsert(profile, "tok-9")
    panel_session.apply_profile(profile)
    backend = panel_session.backend
    assert isinstance(backend, DockerBackend), panel_session.backend_error
    assert backend.profile == profile.docker_profile("tok-9")
    assert backend in OPEN_BACKENDS
    loop.run_until_complete(panel_session.close())
    assert backend not in OPEN_BACKENDS


def test_a_failed_status_reading_is_cleared_by_the_next_good_one(
    qapp: Any, loop: Any, panel_session: Any, tmp_path: Path
) -> None:
    """The step line said "status unavailable" once; a later good reading must not leave
    it beside a healthy table (seen on a real TLS host)."""
    from mimir.app.cluster.remote import accept_host_key
    from mimir.app.ui.cluster_panel import QtClusterPanel

    key = host_key(tmp_path)
    known_hosts = tmp_path / "ssh" / "known_hosts"
    backend = KnownHostsBackend(key, known_hosts)
    panel_session.use_backend(backend)
    panel = QtClusterPanel(panel_session)
    panel._timer.stop()  # the test drives the refreshes
    panel.show()

    async def scenario() -> None:
        await panel.refresh()
        assert panel.step_label.text().startswith("status unavailable: "), panel.step_label.text()
        dialog = await until(lambda: panel.host_key_dialog, 10, "the host-key question")
        await until(dialog.isVisible, 5, "the question to show")
        QTest.mouseClick(dialog.reject_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.host_key_dialog is None, 5, "the question to close")
        await panel.refresh()  # still unknown: asked once only, the line stays
        assert panel.host_key_dialog is None
        assert panel.step_label.text().startswith("status unavailable: "), panel.step_label.text()
        accept_host_key(key, known_hosts)  # trusted by other means (trust-host)
        await panel.refresh()
        assert panel.step_label.text() == ""

    try:
        loop.run_until_complete(scenario())
    finally:
        _dispose(panel, qapp)
