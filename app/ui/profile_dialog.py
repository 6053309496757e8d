"""The Cluster panel's profile editor: which cluster, and how its engine and API are reached.

For a remote Docker engine: its URL; for ``tcp://`` the TLS material (CA, client
certificate and key, whether the engine's certificate is checked, with a red warning when
not); for ``ssh://`` the identity (a key file, or the ssh-agent) and the known-hosts file;
how the API is reached (an SSH tunnel, or published on an interface with a token) and its
port. Save checks the profile first (:meth:`ConnectionProfile.problems`) and says every
problem at once; the dialog stays open until they are fixed. Profiles can be imported from
the Docker variables and from Docker contexts. The token goes to the keyring (the panel
stores it through the :class:`~mimir.app.services.profiles.TokenStore`), never to the
profile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.profiles import (
    DEFAULT_KNOWN_HOSTS,
    PROFILE_KINDS,
    ConnectionProfile,
    DockerContext,
    docker_contexts,
    profile_from_context,
    profile_from_env,
)
from mimir.app.ui.common import ask_path, run_dialog

__all__ = ["VERIFY_OFF_WARNING", "ContextChooser", "ProfileDialog", "ssh_target"]

#: Shown in red while "Verify the server certificate" is unticked.
VERIFY_OFF_WARNING = (
    "The engine's identity is not checked: anyone on the path can take over this cluster"
)

_RED = "color: #FF6B6B; font-weight: 600;"
#: Radio buttons drawn as the console's check boxes are (the default indicator is dark on
#: dark), a disabled one greyed.
_RADIOS = (
    "QRadioButton { background: transparent; spacing: 8px; }"
    "QRadioButton:disabled { color: #5B6373; }"
    "QRadioButton::indicator { width: 13px; height: 13px; border: 1px solid #5A6478;"
    " border-radius: 7px; background: #1A1D23; }"
    "QRadioButton::indicator:checked { background: #3D7BE0; border-color: #6A9BEA; }"
    "QRadioButton::indicator:disabled { border-color: #333A47; }"
)
_DEFAULT_API_PORT = 8080


def ssh_target(docker_host: str) -> str:
    """``user@host[:port]`` of an ``ssh://`` URL ("" when it is not one)."""
    try:
        parsed = urlsplit(docker_host)
        port = parsed.port
    except ValueError:
        return ""
    if parsed.scheme != "ssh" or not parsed.hostname:
        return ""
    user = f"{parsed.username}@" if parsed.username else ""
    return f"{user}{parsed.hostname}" + (f":{port}" if port else "")


async def _choose_file(parent: QWidget, title: str, start: str) -> Path | None:
    """A file chooser, window-modal and awaited (no nested event loop)."""
    dialog = QFileDialog(parent, title, start)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    return await ask_path(dialog)


class ContextChooser(QDialog):
    """The Docker contexts found (name, engine URL); the chosen one is :attr:`chosen`."""

    def __init__(self, parent: QWidget | None, contexts: list[DockerContext]) -> None:
        super().__init__(parent)
        self.setObjectName("ContextChooser")
        self.setWindowTitle("Import a Docker context")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        self.contexts = contexts
        self.list = QListWidget()
        for context in contexts:
            tls = " · TLS" if context.tls_ca or context.tls_cert else ""
            item = QListWidgetItem(f"{context.name}  —  {context.docker_host}{tls}")
            item.setToolTip(context.description or context.docker_host)
            self.list.addItem(item)
        if contexts:
            self.list.setCurrentRow(0)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        layout.addWidget(self.list)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    @property
    def chosen(self) -> DockerContext | None:
        row = self.list.currentRow()
        return self.contexts[row] if 0 <= row < len(self.contexts) else None


class ProfileDialog(QDialog):
    """Edit ``profile`` (or a new one); after Save, :meth:`profile` and :meth:`token`."""

    def __init__(
        self,
        parent: QWidget | None,
        profile: ConnectionProfile | None = None,
        token: str | None = None,
        *,
        secure_tokens: bool = True,
        taken_names: set[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ProfileDialog")
        self.setWindowTitle("Edit connection profile" if profile else "New connection profile")
        self.setMinimumWidth(640)
        #: The profile being edited (kept for what the form does not show: project, extra).
        self.base = profile or ConnectionProfile("", "remote_docker", docker_host="ssh://")
        #: Names of the other profiles: Save refuses a duplicate.
        self.taken_names = set(taken_names or ()) - {self.base.name}
        #: Where imports read the Docker variables (``os.environ`` when ``None``).
        self.env = env
        #: The context chooser open now (tests, screenshots).
        self.chooser: ContextChooser | None = None
        self._build(secure_tokens)
        self.set_profile(self.base, token)

    # ---------------------------------------------------------------- layout

    def _path_row(self, form: QFormLayout, label: str, edit: QLineEdit, title: str) -> QWidget:
        button = QPushButton("Choose…")
        button.clicked.connect(lambda: self._pick(edit, title))
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit, 1)
        box.addWidget(button)
        form.addRow(label, row)
        edit.textChanged.connect(self._clear_problems)
        return button

    @staticmethod
    def _form(box: QGroupBox) -> QFormLayout:
        form = QFormLayout(box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        return form

    def _build(self, secure_tokens: bool) -> None:
        root = QVBoxLayout(self)
        root.setSpacing(10)

        imports = QHBoxLayout()
        self.import_env_button = QPushButton("Import from environment")
        self.import_env_button.setToolTip("DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH")
        self.import_env_button.clicked.connect(self.import_environment)
        self.import_context_button = QPushButton("Import Docker context…")
        self.import_context_button.setToolTip("A context from 'docker context ls'")
        self.import_context_button.clicked.connect(self.import_context)
        imports.addWidget(self.import_env_button)
        imports.addWidget(self.import_context_button)
        imports.addStretch(1)
        root.addLayout(imports)

        general = QGroupBox("Profile")
        form = self._form(general)
        self.name_edit = QLineEdit()
        self.kind_combo = QComboBox()
        for kind, label in PROFILE_KINDS.items():
            self.kind_combo.addItem(label, kind)
        self.kind_combo.currentIndexChanged.connect(self._update_visibility)
        form.addRow("Name", self.name_edit)
        form.addRow("Kind", self.kind_combo)
        self.swarm_box = QCheckBox("Docker Swarm: the engine is a swarm manager")
        self.swarm_box.setToolTip(
            "The cluster runs as Swarm services spread over the swarm's nodes (mimir cluster "
            "up --backend swarm); its API needs a token"
        )
        self.swarm_box.toggled.connect(self._update_visibility)
        form.addRow("", self.swarm_box)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("http://127.0.0.1:8080")
        form.addRow("API URL", self.url_edit)
        self.url_label = form.labelForField(self.url_edit)
        self.api_ca_edit = QLineEdit()
        self.api_ca_edit.setPlaceholderText(
            "https:// API with a private CA: its ca.pem (empty: the default CAs)"
        )
        self._path_row(form, "API CA file", self.api_ca_edit, "API CA certificate")
        self.engine_edit = QLineEdit()
        self.engine_edit.setPlaceholderText("ssh://user@host or tcp://host:2376")
        self.engine_edit.textChanged.connect(self._update_visibility)
        form.addRow("Engine URL", self.engine_edit)
        self.engine_label = form.labelForField(self.engine_edit)
        root.addWidget(general)

        self.tls_box = QGroupBox("TLS (tcp:// engines)")
        form = self._form(self.tls_box)
        self.ca_edit = QLineEdit()
        self.cert_edit = QLineEdit()
        self.key_edit = QLineEdit()
        self.ca_edit.setPlaceholderText("ca.pem: the CA that signed the engine's certificate")
        self.cert_edit.setPlaceholderText("cert.pem: this machine's client certificate")
        self.key_edit.setPlaceholderText("key.pem: its private key")
        self.ca_button = self._path_row(form, "CA certificate", self.ca_edit, "CA certificate")
        self.cert_button = self._path_row(
            form, "Client certificate", self.cert_edit, "Client certificate"
        )
        self.key_button = self._path_row(form, "Client key", self.key_edit, "Client key")
        self.verify_box = QCheckBox("Verify the server certificate")
        self.verify_box.toggled.connect(self._update_visibility)
        form.addRow("", self.verify_box)
        self.verify_warning = QLabel(VERIFY_OFF_WARNING)
        self.verify_warning.setObjectName("VerifyWarning")
        self.verify_warning.setStyleSheet(_RED)
        self.verify_warning.setWordWrap(True)
        form.addRow(self.verify_warning)  # the whole width: read at a glance, not clipped
        root.addWidget(self.tls_box)

        self.ssh_box = QGroupBox("SSH (ssh:// engines)")
        form = self._form(self.ssh_box)
        self.ssh_target_label = QLabel("")
        self.ssh_target_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("User@host", self.ssh_target_label)
        self.agent_box = QCheckBox("Use the ssh-agent (and ~/.ssh/config)")
        self.agent_box.toggled.connect(self._update_visibility)
        form.addRow("", self.agent_box)
        self.identity_edit = QLineEdit()
        self.identity_edit.setPlaceholderText("~/.ssh/id_ed25519")
        self.identity_button = self._path_row(
            form, "Identity file", self.identity_edit, "SSH private key"
        )
        self.known_hosts_edit = QLineEdit()
        self.known_hosts_edit.setPlaceholderText(DEFAULT_KNOWN_HOSTS)
        self.known_hosts_button = self._path_row(
            form, "Known hosts", self.known_hosts_edit, "Known-hosts file"
        )
        root.addWidget(self.ssh_box)

        self.api_box = QGroupBox("API access")
        self.api_box.setStyleSheet(_RADIOS)
        form = self._form(self.api_box)
        self.tunnel_radio = QRadioButton("Through an SSH tunnel (nothing is exposed on the host)")
        self.published_radio = QRadioButton("Published on an interface of the host, with a token")
        self.access_group = QButtonGroup(self)
        self.access_group.addButton(self.tunnel_radio)
        self.access_group.addButton(self.published_radio)
        self.tunnel_radio.toggled.connect(self._update_visibility)
        form.addRow("Reach it", self.tunnel_radio)
        form.addRow("", self.published_radio)
        self.bind_edit = QLineEdit()
        self.bind_edit.setPlaceholderText("the host's address on a network this machine is on")
        self.bind_edit.textChanged.connect(self._clear_problems)
        form.addRow("Interface", self.bind_edit)
        self.bind_label = form.labelForField(self.bind_edit)
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(_DEFAULT_API_PORT)
        form.addRow("API port", self.port_spin)
        self.port_label = form.labelForField(self.port_spin)
        root.addWidget(self.api_box)

        token_box = QGroupBox("API token")
        form = self._form(token_box)
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText(
            "kept in the system keyring" if secure_tokens else "kept for this session only"
        )
        self.token_edit.textChanged.connect(self._clear_problems)
        form.addRow("Token", self.token_edit)
        root.addWidget(token_box)

        self.problems_label = QLabel("")
        self.problems_label.setObjectName("Problems")
        self.problems_label.setStyleSheet(_RED)
        self.problems_label.setWordWrap(True)
        self.problems_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems_label.hide()
        root.addWidget(self.problems_label)
        self.note_label = QLabel("")
        self.note_label.setObjectName("Hint")
        self.note_label.setWordWrap(True)
        self.note_label.hide()
        root.addWidget(self.note_label)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setObjectName("Primary")
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        root.addWidget(self.buttons)
        self._align_labels()

    def _align_labels(self) -> None:
        """One label column width for every group, so the fields line up down the dialog."""
        labels: list[QLabel] = []
        for form in self.findChildren(QFormLayout):
            for row in range(form.rowCount()):
                item = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
                if item is not None and isinstance(item.widget(), QLabel):
                    labels.append(item.widget())  # type: ignore[arg-type]
        width = max((label.sizeHint().width() for label in labels), default=0)
        for label in labels:
            label.setMinimumWidth(width)
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    # ---------------------------------------------------------------- form ↔ profile

    def set_profile(self, profile: ConnectionProfile, token: str | None = None) -> None:
        """Show ``profile`` in the form (``token`` when given)."""
        self.name_edit.setText(profile.name)
        self.kind_combo.setCurrentIndex(max(0, self.kind_combo.findData(profile.kind)))
        self.swarm_box.setChecked(profile.swarm)
        self.url_edit.setText(profile.api_url)
        self.api_ca_edit.setText(profile.api_ca)
        self.engine_edit.setText(profile.docker_host)
        self.ca_edit.setText(profile.tls_ca)
        self.cert_edit.setText(profile.tls_cert)
        self.key_edit.setText(profile.tls_key)
        self.verify_box.setChecked(profile.tls_verify)
        self.identity_edit.setText(profile.ssh_identity)
        self.agent_box.setChecked(not profile.ssh_identity)
        self.known_hosts_edit.setText(profile.ssh_known_hosts)
        access = profile.effective_api_access or "tunnel"
        (self.tunnel_radio if access == "tunnel" else self.published_radio).setChecked(True)
        self.bind_edit.setText(profile.api_bind)
        self.port_spin.setValue(profile.api_port or _DEFAULT_API_PORT)
        if token is not None:
            self.token_edit.setText(token)
        self._update_visibility()

    def profile(self) -> ConnectionProfile:
        """The profile the form describes (not checked: see :meth:`problems`)."""
        kind = self.kind_combo.currentData()
        remote = kind == "remote_docker"
        engine = self.engine_edit.text().strip() if remote else ""
        scheme = engine.partition("://")[0].lower()
        access = "tunnel" if self.tunnel_radio.isChecked() else "published"
        port = self.port_spin.value()
        api_url = self.url_edit.text().strip()
        if kind in ("local_docker", "remote_docker"):
            host = "127.0.0.1"
            if remote and access == "published":
                with contextlib.suppress(ValueError):
                    host = urlsplit(engine).hostname or host
            api_url = f"http://{host}:{port}"
        tls = remote and scheme == "tcp"
        ssh = remote and scheme == "ssh"
        use_agent = self.agent_box.isChecked()
        return replace(
            self.base,
            name=self.name_edit.text().strip(),
            kind=kind,
            api_url=api_url,
            api_ca=self.api_ca_edit.text().strip(),
            docker_host=engine,
            tls_ca=self.ca_edit.text().strip() if tls else "",
            tls_cert=self.cert_edit.text().strip() if tls else "",
            tls_key=self.key_edit.text().strip() if tls else "",
            tls_verify=self.verify_box.isChecked() if tls else True,
            ssh_identity=self.identity_edit.text().strip() if ssh and not use_agent else "",
            ssh_known_hosts=self.known_hosts_edit.text().strip() if ssh else "",
            api_access=access if remote else "",
            api_bind=self.bind_edit.text().strip() if remote and access == "published" else "",
            swarm=self.swarm_box.isChecked() and kind in ("local_docker", "remote_docker"),
        )

    def token(self) -> str:
        return self.token_edit.text()

    def problems(self) -> list[str]:
        """What stops the form's profile from being saved (empty: nothing)."""
        profile = self.profile()
        found = profile.problems(self.token() or None)
        if profile.name in self.taken_names:
            found.insert(0, f"another profile is already named {profile.name!r}")
        if profile.kind == "remote_docker":
            if profile.engine_scheme == "ssh" and not ssh_target(profile.docker_host):
                found.append("the engine URL names no host: ssh://user@host[:port]")
            if (
                profile.engine_scheme == "ssh"
                and not self.agent_box.isChecked()
                and not profile.ssh_identity
            ):
                found.append("choose an identity file, or tick 'Use the ssh-agent'")
        return found

    # ---------------------------------------------------------------- behaviour

    def _update_visibility(self) -> None:
        kind = self.kind_combo.currentData()
        remote = kind == "remote_docker"
        engine = self.engine_edit.text().strip().lower()
        tcp, ssh = remote and engine.startswith("tcp://"), remote and engine.startswith("ssh://")
        for widget in (self.engine_edit, self.engine_label):
            if widget is not None:
                widget.setVisible(remote)
        docker = kind in ("local_docker", "remote_docker")
        for widget in (self.url_edit, self.url_label):
            if widget is not None:
                widget.setVisible(not docker)
        self.tls_box.setVisible(tcp)
        self.ssh_box.setVisible(ssh)
        self.verify_warning.setVisible(tcp and not self.verify_box.isChecked())
        self.ssh_target_label.setText(ssh_target(self.engine_edit.text().strip()) or "—")
        use_agent = self.agent_box.isChecked()
        self.identity_edit.setEnabled(not use_agent)
        self.identity_button.setEnabled(not use_agent)
        self.api_box.setVisible(docker)
        self.swarm_box.setVisible(docker)
        for widget in (self.tunnel_radio, self.published_radio):
            widget.setVisible(remote)
        self.tunnel_radio.setEnabled(ssh)
        # Swarm publishes the API port on its node whatever the access (moby#32299).
        swarm = self.swarm_box.isChecked()
        self.tunnel_radio.setText(
            "Through an SSH tunnel (Swarm publishes the port anyway)"
            if swarm
            else "Through an SSH tunnel (nothing is exposed on the host)"
        )
        self.tunnel_radio.setToolTip(
            "An SSH tunnel needs an ssh:// engine URL"
            if not ssh
            else "Swarm publishes the API port on its node whatever you choose (moby#32299): "
            "the token guards it"
            if swarm
            else ""
        )
        if remote and not ssh and self.tunnel_radio.isChecked():
            self.published_radio.setChecked(True)  # a tunnel needs ssh://
        published = remote and self.published_radio.isChecked()
        for widget in (self.bind_edit, self.bind_label):
            if widget is not None:
                widget.setVisible(published)
        self._clear_problems()
        self.adjustSize()

    def _clear_problems(self) -> None:
        self.problems_label.hide()
        self.problems_label.setText("")

    def show_problems(self, problems: list[str]) -> None:
        lines = "\n".join(f"• {p[:1].upper()}{p[1:]}" for p in problems)
        self.problems_label.setText(f"Cannot save this profile:\n{lines}")
        self.problems_label.show()

    def save(self) -> None:
        """Save when the profile is sound; else say every problem and stay open."""
        problems = self.problems()
        if problems:
            self.show_problems(problems)
            return
        self.accept()

    @asyncSlot()
    async def _pick(self, edit: QLineEdit, title: str) -> None:
        current = edit.text().strip()
        start = str(Path(current).expanduser().parent) if current else str(Path.home())
        chosen = await _choose_file(self, title, start)
        if chosen is not None:
            edit.setText(str(chosen))

    @asyncSlot()
    async def import_environment(self) -> None:
        profile = await asyncio.to_thread(profile_from_env, self.env)
        if profile is None:
            self.show_problems(
                ["DOCKER_HOST names no remote engine (tcp://… or ssh://…) in this environment"]
            )
            return
        self.import_profile(profile, "the environment (DOCKER_HOST)")

    @asyncSlot()
    async def import_context(self) -> None:
        contexts = await asyncio.to_thread(docker_contexts, self.env)
        if not contexts:
            self.show_problems(["no Docker contexts found ('docker context ls' lists none)"])
            return
        chooser = ContextChooser(self, contexts)
        self.chooser = chooser
        try:
            accepted = await run_dialog(chooser)
            chosen = chooser.chosen
        finally:
            self.chooser = None
            chooser.deleteLater()
        if accepted and chosen is not None:
            self.import_profile(profile_from_context(chosen), f"Docker context {chosen.name!r}")

    def import_profile(self, profile: ConnectionProfile, source: str) -> None:
        """Fill the form from an imported profile (keeping a name already typed)."""
        name = self.name_edit.text().strip() or profile.name
        self.set_profile(replace(profile, name=name))
        self.note_label.setText(f"Imported from {source}: check the fields, then Save.")
        self.note_label.show()
