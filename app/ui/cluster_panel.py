"""Cluster panel: connection profiles, the services table, start/stop/restart/build/scale,
the worker pools, backups and restores.

Worker pools (:mod:`~mimir.app.ui.pools_box`): a row per pool with its replicas, load, a
scale control (``backend.scale(n, pool=P)``, run as every action is: the others off,
progress shown) and its autoscaling policy, saved with ``PUT
/api/v1/autoscaler/pools/{pool}``; "Cluster file…" chooses the ``mimir-cluster.yaml``
Start uses (validated at once, errors by line).

Stop, Clean and Restore ask first. The table shows what the backend last said, and nothing
older: a stopped service has no CPU, memory or health mark left over from when it ran.

Profiles are edited in :class:`~mimir.app.ui.profile_dialog.ProfileDialog` (New…, Edit…). A
remote Docker profile's TLS, SSH and API settings reach the backend as its
:class:`~mimir.app.cluster.docker_engine.DockerProfile`. An SSH host whose key is not in
the profile's known-hosts file is refused by the backend (``HostKeyUnknown``): the panel
shows the key's fingerprints and, if the operator trusts them, writes them to that file
and retries the action once; a changed host key is an error and is never offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.cluster.backup import (
    BackupRefused,
    BackupResult,
    default_backup_dir,
    restore_cluster,
    take_backup,
)
from mimir.app.cluster.base import ClusterError, ClusterStatus, ServiceStats
from mimir.app.cluster.topology import parse_worker_name, pool_service
from mimir.app.services.api import ApiError
from mimir.app.services.doctor import Report, diagnose
from mimir.app.services.jobs import count_text
from mimir.app.services.profiles import PROFILE_KINDS, ConnectionProfile
from mimir.app.services.runs import format_bytes, format_local
from mimir.app.services.timeseries import ScaleDecision
from mimir.app.ui.backup_dialog import BackupDialog, BackupsDialog, RestoreDialog, run_dialog
from mimir.app.ui.common import STATUS_COLORS, Banner, ask_path, panel_header
from mimir.app.ui.confirm import confirm
from mimir.app.ui.host_key_dialog import HostKeyDialog
from mimir.app.ui.pools_box import PoolsBox
from mimir.app.ui.profile_dialog import ProfileDialog
from mimir.app.ui.session import ConsoleSession
from mimir.core.backup.manifest import BackupError
from mimir.core.pools import DEFAULT_POOL, ClusterFile, ClusterFileError, load_cluster_file

__all__ = ["QtClusterPanel", "api_access_text", "unknown_host_key"]

logger = logging.getLogger(__name__)

_COLUMNS = ["Service", "State", "Health", "Replicas", "CPU", "Memory", "Ports"]
_FINDING_COLUMNS = ["Severity", "Finding", "Seen", "What to do"]
_SEVERITY_COLORS = {"error": "#FF6B6B", "warning": "#E0B341", "info": "#9AA3B2"}


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


#: The backends name the command-line flag for another port; the console has none.
_PORT_FLAG = re.compile(r"\(?mimir cluster up --port N\)?")


def operator_message(text: str) -> str:
    """A backend's message in the console's terms (its own controls, not CLI flags)."""
    return _PORT_FLAG.sub("set another port in this profile's API URL and save the profile", text)


def _same_url(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip("/") == (b or "").rstrip("/")


#: A progress message that ends with a percentage ("verify: 42%", "backup: parts 60%").
_PERCENT = re.compile(r"(\d{1,3})\s*%\s*$")


#: The backup module speaks to the CLI; these are the console's controls for the same.
_BACKUP_WORDS = [
    (
        re.compile(r"--force replaces it"),
        "tick 'Replace the data this cluster holds' to replace it",
    ),
    (re.compile(r"\('mimir cluster up'\)"), "(Start)"),
]


def console_words(text: str) -> str:
    """A backup or restore message in the console's terms (its controls, not CLI flags)."""
    for pattern, words in _BACKUP_WORDS:
        text = pattern.sub(words, text)
    return operator_message(text)


def refused_message(exc: BackupRefused) -> str:
    """A refused restore or backup in words that say nothing changed, naming the part."""
    text = console_words(str(exc))
    if exc.part and exc.part not in text:
        return f"refused, nothing was changed (part {exc.part}): {text}"
    return f"refused, nothing was changed: {text}"


#: How the step line starts when a status reading failed (cleared by the next success).
_STATUS_UNAVAILABLE = "status unavailable: "


def api_access_text(profile: ConnectionProfile, api_url: str | None, token: bool) -> str:
    """How the console reaches a remote cluster's API, in a line ("" for a local one):
    ``api_url`` is where the running cluster's API answers this machine (``None`` when it
    does not run), ``token`` whether the profile has one."""
    access = profile.effective_api_access
    if access is None:
        return ""
    remote = f"{profile.engine_host or 'the host'}:{profile.api_port or '?'}"
    if access == "tunnel":
        local = ""
        with contextlib.suppress(ValueError):
            local = urlsplit(api_url).netloc if api_url else ""
        if local:
            return f"API via SSH tunnel {local} → {remote} (nothing exposed on the host)"
        return f"API via SSH tunnel → {remote}, opened while the cluster runs (nothing exposed)"
    bind = profile.api_bind or profile.engine_host or "?"
    guard = "token" if token else "NO token: anyone who reaches it can use it"
    where = f"{bind}:{profile.api_port or '?'}"
    return f"API published on {where} ({guard})"


def unknown_host_key(exc: BaseException) -> Any:
    """The ``HostKeyUnknown`` in ``exc``'s chain, or ``None`` (also when the remote
    module is not there: the console imports without it)."""
    try:
        from mimir.app.cluster.remote import HostKeyUnknown
    except ImportError:
        return None
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return None
        if isinstance(current, HostKeyUnknown):
            return current
        current = current.__cause__ or current.__context__
    return None


def _stats_key(item: ServiceStats, project: str) -> str:
    """The status row a process's or container's figures add to: its kind, for workers
    their pool's service (``worker-slow-2`` → ``worker-slow``)."""
    if item.kind != "worker":
        return item.kind
    parsed = parse_worker_name(item.name.removeprefix(f"{project}-"))
    return pool_service(parsed[0]) if parsed is not None and parsed[0] else "worker"


@contextlib.asynccontextmanager
async def _as_cluster_errors() -> AsyncIterator[None]:
    """The backup calls' other failures (the API, the disk, the archive) as ClusterErrors,
    so the panel's banner says them (a refusal names its part)."""
    try:
        yield
    except BackupRefused as exc:
        raise ClusterError(refused_message(exc)) from exc
    except ClusterError as exc:
        raise ClusterError(console_words(str(exc)), exc.detail) from exc
    except BackupError as exc:
        part = f" (part {exc.part})" if exc.part and exc.part not in str(exc) else ""
        raise ClusterError(f"{exc}{part}") from exc
    except (ApiError, OSError) as exc:
        raise ClusterError(str(exc)) from exc


class QtClusterPanel(QWidget):
    """Drives the profile's cluster backend; every action is disabled while one runs."""

    progress_reported = Signal(str, str)

    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.busy = False
        #: Bumped when an action starts or ends: a status read that straddles one is stale.
        self._generation = 0
        self._stats: dict[str, list[ServiceStats]] = {}
        self._last_signature: tuple[Any, ...] | None = None
        self._build()
        self.progress_reported.connect(self._on_progress)
        session.profile_changed.connect(self._on_profile_changed)
        session.cluster_status.connect(self._show_status)
        session.pools.connect(self._on_pools)
        session.autoscaler.connect(self._on_autoscaler)
        session.scale.connect(self._on_scale)
        session.stats.connect(self._on_stats)
        self._timer = QTimer(self)
        self._timer.setInterval(3000)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._reload_profiles()
        self._show_api_note()

    # ---------------------------------------------------------------- layout

    def _build(self) -> None:
        # The panel scrolls: with a cluster's pools below the services nothing is squeezed.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = QWidget()
        content.setObjectName("ClusterContent")
        self.scroll_area.setWidget(content)
        outer.addWidget(self.scroll_area)
        root = QVBoxLayout(content)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(
            panel_header("Cluster", "Start, scale and stop the services that run your pipelines")
        )
        profile_box = QGroupBox("Connection profile")
        form = QFormLayout(profile_box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        row = QHBoxLayout()
        self.profile_combo = QComboBox()
        self.profile_combo.setMinimumWidth(220)
        self.profile_combo.currentIndexChanged.connect(self._on_profile_selected)
        row.addWidget(self.profile_combo, 1)
        self.save_profile_button = QPushButton("Save profile")
        self.save_profile_button.clicked.connect(self._save_profile)
        self.remove_profile_button = QPushButton("Remove")
        self.remove_profile_button.clicked.connect(self._remove_profile)
        self.edit_profile_button = QPushButton("Edit…")
        self.edit_profile_button.setToolTip(
            "The engine's TLS or SSH settings, how the API is reached, the token"
        )
        self.edit_profile_button.clicked.connect(self.edit_profile)
        self.new_profile_button = QPushButton("New…")
        self.new_profile_button.setToolTip(
            "A new profile (a remote Docker host, or imported from DOCKER_HOST or a context)"
        )
        self.new_profile_button.clicked.connect(self.new_profile)
        row.addWidget(self.edit_profile_button)
        row.addWidget(self.new_profile_button)
        row.addWidget(self.save_profile_button)
        row.addWidget(self.remove_profile_button)
        form.addRow("Profile", row)
        self.name_edit = QLineEdit()
        self.kind_combo = QComboBox()
        for kind, label in PROFILE_KINDS.items():
            self.kind_combo.addItem(label, kind)
        self.kind_combo.currentIndexChanged.connect(self._on_kind_changed)
        self.url_edit = QLineEdit()
        self.docker_host_edit = QLineEdit()
        self.docker_host_edit.setPlaceholderText("ssh://user@host or tcp://host:2376")
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        secure = self.session.profiles.tokens.secure
        self.token_edit.setPlaceholderText(
            "kept in the system keyring" if secure else "kept for this session only (no keyring)"
        )
        top = QHBoxLayout()
        top.addWidget(self.name_edit, 1)
        top.addWidget(self.kind_combo)
        form.addRow("Name / kind", top)
        form.addRow("API URL", self.url_edit)
        self.api_note = QLabel("")
        self.api_note.setObjectName("Hint")
        self.api_note.setWordWrap(True)
        self.api_note.hide()
        form.addRow("", self.api_note)
        form.addRow("Docker host", self.docker_host_edit)
        form.addRow("API token", self.token_edit)
        #: How a remote cluster's API is reached (tunnel or published), for remote profiles.
        self.access_label = QLabel("")
        self.access_label.setObjectName("Hint")
        self.access_label.setWordWrap(True)
        self.access_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("API access", self.access_label)
        self.access_row_label = form.labelForField(self.access_label)
        for edit in (self.name_edit, self.url_edit, self.docker_host_edit, self.token_edit):
            edit.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # no selected text on first show
        root.addWidget(profile_box)

        actions = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("Primary")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("Danger")
        self.clean_button = QPushButton("Clean…")
        self.clean_button.setObjectName("Danger")
        self.clean_button.setToolTip("Stop the cluster and delete its data")
        self.restart_button = QPushButton("Restart service")
        self.build_button = QPushButton("Build images")
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(0, 64)
        self.workers_spin.setValue(2)
        self.workers_spin.setPrefix("Default pool: ")
        self.workers_spin.setToolTip(
            "Workers of the pool default: what Start starts, and Scale sets"
        )
        self.scale_button = QPushButton("Scale")
        self.scale_button.setToolTip("Scale the default pool (each pool has its own below)")
        self.diagnose_button = QPushButton("Diagnose")
        self.diagnose_button.setToolTip(
            "Check the API, Redis, workers, queues, containers, disks and clocks "
            "(as mimir doctor does)"
        )
        self.diagnose_button.clicked.connect(self.run_diagnosis)
        self.backup_button = QPushButton("Back up…")
        self.backup_button.setToolTip(
            "Have the running cluster take a consistent backup and download the archive "
            "(start the cluster first)"
        )
        self.restore_button = QPushButton("Restore…")
        self.restore_button.setToolTip(
            "Verify an archive, then write its data into this cluster and start it"
        )
        self.backups_button = QPushButton("Backups")
        self.backups_button.setToolTip("The archives in the backups folder, newest first")
        self.backup_button.clicked.connect(self.back_up)
        self.restore_button.clicked.connect(self.restore_backup)
        self.backups_button.clicked.connect(self.show_backups)
        self.start_button.clicked.connect(self.start_cluster)
        self.cluster_file_button = QPushButton("Cluster file…")
        self.cluster_file_button.setToolTip(
            "Start with the pools of a cluster file (mimir-cluster.yaml): their queues, "
            "replicas, limits and autoscaling"
        )
        self.cluster_file_button.clicked.connect(self.choose_cluster_file)
        self.cluster_file_clear = QPushButton("Don't use it")
        self.cluster_file_clear.setToolTip("Start without a cluster file (one pool, default)")
        self.cluster_file_clear.clicked.connect(lambda: self.use_cluster_file(None, None))
        self.stop_button.clicked.connect(self.stop_cluster)
        self.clean_button.clicked.connect(self.clean_cluster)
        self.restart_button.clicked.connect(self.restart_service)
        self.build_button.clicked.connect(self.build_images)
        self.scale_button.clicked.connect(self.scale_workers)
        for widget in (
            self.start_button,
            self.cluster_file_button,
            self.stop_button,
            self.restart_button,
            self.build_button,
            self.clean_button,
            self.diagnose_button,
        ):
            actions.addWidget(widget)
        actions.addStretch(1)
        actions.addWidget(self.workers_spin)
        actions.addWidget(self.scale_button)
        root.addLayout(actions)
        #: The cluster file Start uses (None: the default topology), and where it was read.
        self.cluster_file: ClusterFile | None = None
        self.cluster_file_path: Path | None = None
        self.cluster_file_label = QLabel("")
        self.cluster_file_label.setObjectName("Hint")
        self.cluster_file_label.setWordWrap(True)
        self.cluster_file_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        file_row = QHBoxLayout()
        file_row.addWidget(self.cluster_file_label, 1)
        file_row.addWidget(self.cluster_file_clear)
        self.cluster_file_label.hide()
        self.cluster_file_clear.hide()
        root.addLayout(file_row)
        # Backups on their own row: beside the others they would squeeze their labels.
        backups = QHBoxLayout()
        for widget in (self.backup_button, self.restore_button, self.backups_button):
            backups.addWidget(widget)
        self.backup_folder_label = QLabel("")
        self.backup_folder_label.setObjectName("Hint")
        self.backup_folder_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        backups.addWidget(self.backup_folder_label, 1)
        root.addLayout(backups)
        self._actions = [
            self.start_button,
            self.stop_button,
            self.clean_button,
            self.restart_button,
            self.build_button,
            self.scale_button,
            self.workers_spin,
            self.profile_combo,
            self.save_profile_button,
            self.remove_profile_button,
            self.edit_profile_button,
            self.new_profile_button,
            self.backup_button,
            self.restore_button,
            self.backups_button,
            self.cluster_file_button,
            self.cluster_file_clear,
        ]
        #: The backup dialog open now (one at a time), for tests and screenshots.
        self.dialog: BackupDialog | RestoreDialog | BackupsDialog | None = None
        #: The profile editor and the host-key question open now (tests, screenshots).
        self.profile_dialog: ProfileDialog | None = None
        self.host_key_dialog: HostKeyDialog | None = None
        #: Profiles whose unknown host key was already put to the operator by a refresh.
        self._host_keys_asked: set[str] = set()
        #: The backend this panel built for a remote profile (closed when it is replaced).

        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        self.step_label = QLabel("")
        self.step_label.setObjectName("Hint")
        progress_row.addWidget(self.progress)
        progress_row.addWidget(self.step_label, 1)
        root.addLayout(progress_row)
        # Below the actions: a message appearing never moves a button from under the pointer.
        self.banner = Banner()
        root.addWidget(self.banner)

        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        root.addWidget(self.table)

        self.pools_box = PoolsBox()
        self.pools_box.hide()
        root.addWidget(self.pools_box)
        #: Pool → (running, wanted) from the backend's last status (its worker rows).
        self._status_replicas: dict[str, tuple[int, int | None]] = {}
        #: When the API's last pools reading came (monotonic; 0: none since the profile).
        self._pools_read_at = 0.0
        #: The worker pools' state from the server's autoscaler (enabled, reason …).
        self._autoscaler: dict[str, Any] | None = None

        # What Diagnose found: one row per finding, worst first (hidden until it runs).
        self.diagnosis_box = QGroupBox("Diagnosis")
        box = QVBoxLayout(self.diagnosis_box)
        self.diagnosis_summary = QLabel("")
        self.diagnosis_summary.setWordWrap(True)
        box.addWidget(self.diagnosis_summary)
        self.findings_table = QTableWidget(0, len(_FINDING_COLUMNS))
        self.findings_table.setHorizontalHeaderLabels(_FINDING_COLUMNS)
        self.findings_table.verticalHeader().hide()
        self.findings_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.findings_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.findings_table.setWordWrap(True)
        self.findings_table.setAlternatingRowColors(True)
        header = self.findings_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        for column in (1, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
        # The panel scrolls: the findings keep room for several rows instead of being squeezed.
        self.findings_table.setMinimumHeight(300)
        box.addWidget(self.findings_table)
        self.diagnosis_box.hide()
        root.addWidget(self.diagnosis_box, 1)
        root.addStretch(0)
        self.last_report: Report | None = None
        self.diagnosing = False
        self.last_backup: BackupResult | None = None

    # ---------------------------------------------------------------- profiles

    def _reload_profiles(self) -> None:
        profiles = self.session.profiles.load()
        current = self.session.profile.name
        self.profile_combo.blockSignals(True)
        self.profile_combo.clear()
        for profile in profiles:
            self.profile_combo.addItem(profile.name, profile)
        index = max(0, self.profile_combo.findText(current))
        self.profile_combo.setCurrentIndex(index)
        self.profile_combo.blockSignals(False)
        self._fill_profile(self.profile_combo.currentData())

    def _fill_profile(self, profile: ConnectionProfile | None) -> None:
        if profile is None:
            return
        self.name_edit.setText(profile.name)
        self.kind_combo.setCurrentIndex(max(0, self.kind_combo.findData(profile.kind)))
        self.url_edit.setText(profile.api_url)
        self.docker_host_edit.setText(profile.docker_host)
        self.workers_spin.setValue(profile.workers)
        self.token_edit.setText("")
        self._on_kind_changed()

    def _on_kind_changed(self) -> None:
        kind = self.kind_combo.currentData()
        self.docker_host_edit.setEnabled(kind == "remote_docker")
        self._update_actions()

    def _on_profile_selected(self) -> None:
        profile = self.profile_combo.currentData()
        if profile is not None:
            self._fill_profile(profile)
            self.session.apply_profile(profile)

    def _on_profile_changed(self, profile: ConnectionProfile) -> None:
        # The profile may have been stored or changed elsewhere (start-up, --api-url):
        # show the one in use, not the one read when the panel was built.
        if self.profile_combo.currentData() != profile:
            self._reload_profiles()
        self._stats = {}
        self._last_signature = None
        # Nothing read of the last profile's cluster stays on screen.
        self._status_replicas = {}
        self._pools_read_at = 0.0
        self._autoscaler = None
        self.pools_box.show_unserved([])
        self._sync_pools()
        self._update_actions()
        self._show_api_note()
        self._tick()

    def _save_profile(self) -> None:
        name = self.name_edit.text().strip()
        shown = self.profile_combo.currentData()
        base = shown if isinstance(shown, ConnectionProfile) else ConnectionProfile(name)
        profile = replace(
            base,  # keeps what the form does not show (project, extra)
            name=name,
            kind=self.kind_combo.currentData(),
            api_url=self.url_edit.text().strip(),
            docker_host=self.docker_host_edit.text().strip(),
            workers=self.workers_spin.value(),
        )
        try:
            self.session.profiles.upsert(profile, self.token_edit.text() or None)
        except ValueError as exc:
            self.banner.error(str(exc))
            return
        self.banner.ok(f"Profile {profile.name!r} saved.")
        self.session.profile = profile
        self._reload_profiles()
        self.session.apply_profile(profile)

    @asyncSlot()
    async def edit_profile(self) -> None:
        """The profile editor on the chosen profile."""
        shown = self.profile_combo.currentData()
        await self.open_profile_dialog(shown if isinstance(shown, ConnectionProfile) else None)

    @asyncSlot()
    async def new_profile(self) -> None:
        """The profile editor on a new remote Docker profile."""
        await self.open_profile_dialog(None)

    async def open_profile_dialog(self, profile: ConnectionProfile | None) -> bool:
        """Edit ``profile`` (``None``: a new one); on Save store it (its token in the
        keyring), make it current and apply it. True when saved."""
        if self.busy or self.profile_dialog is not None:
            return False
        store = self.session.profiles
        token = await asyncio.to_thread(store.token, profile.name) if profile else None
        names = {p.name for p in store.load()}
        dialog = ProfileDialog(
            self, profile, token, secure_tokens=store.tokens.secure, taken_names=names
        )
        self.profile_dialog = dialog
        try:
            if not await run_dialog(dialog):
                return False
            edited, token = dialog.profile(), dialog.token()
        finally:
            self.profile_dialog = None
            dialog.deleteLater()
        try:
            await asyncio.to_thread(store.upsert, edited, token)
            if profile is not None and profile.name != edited.name:
                await asyncio.to_thread(store.remove, profile.name)
        except ValueError as exc:
            self.banner.error(str(exc))
            return False
        self.banner.ok(f"Profile {edited.name!r} saved.")
        self.session.profile = edited
        self._reload_profiles()
        self.session.apply_profile(edited)
        return True

    def _remove_profile(self) -> None:
        name = self.profile_combo.currentText()
        self.session.profiles.remove(name)
        self._reload_profiles()
        self._on_profile_selected()

    # ---------------------------------------------------------------- actions

    def _update_actions(self) -> None:
        controls = self.session.backend is not None
        for widget in self._actions:
            widget.setEnabled(not self.busy)
        for widget in (
            self.start_button,
            self.stop_button,
            self.clean_button,
            self.restart_button,
            self.build_button,
            self.scale_button,
            self.workers_spin,
            self.backup_button,
            self.restore_button,
            self.backups_button,
            self.cluster_file_button,
            self.cluster_file_clear,
        ):
            widget.setEnabled(not self.busy and controls)
        status = self.session.last_cluster_status
        running = bool(controls and status is not None and status.running)
        if controls and not self.busy:
            self.start_button.setEnabled(not running)
            self.stop_button.setEnabled(running)
            self.scale_button.setEnabled(running)
            self.restart_button.setEnabled(running)
            self.backup_button.setEnabled(running)  # the running server takes it
        if not self.busy:
            self.step_label.setText(self._no_control_reason())
        self._sync_pools()
        backend = self.session.backend
        self.backup_folder_label.setText(
            f"Backups are kept in {default_backup_dir(backend)}" if backend is not None else ""
        )

    def _no_control_reason(self) -> str:
        """Why the cluster cannot be driven, or "" (also while the profile is applied)."""
        profile = self.session.profile
        if not profile.controls_cluster:
            return "This profile talks to an API only: no cluster control."
        if self.session.backend is None and self.session.backend_error:
            return f"No cluster control: {self.session.backend_error}"
        return ""

    def _show_api_note(self) -> None:
        """Say where the API is when a running cluster answers elsewhere than the profile,
        and how a remote cluster's API is reached."""
        status = self.session.last_cluster_status
        profile = self.session.profile
        actual = status.api_url if status is not None and status.running else None
        token = getattr(self.session.backend, "api_token", None)
        access = api_access_text(profile, actual, bool(token))
        self.access_label.setText(access)
        for widget in (self.access_label, self.access_row_label):
            if widget is not None:
                widget.setVisible(bool(access))
        if profile.effective_api_access == "tunnel":
            self.api_note.hide()  # the tunnel's local port always differs from the profile's
            return
        if actual and not _same_url(actual, profile.api_url):
            self.api_note.setText(
                f"The running cluster's API is at {actual}; the console talks to it there. "
                f"This profile's URL applies when the console starts a cluster."
            )
            self.api_note.show()
        else:
            self.api_note.hide()

    def _on_progress(self, step: str, message: str) -> None:
        self.step_label.setText(f"{step}: {message}")
        # A percentage drives a determinate bar; any other message, the busy indicator.
        match = _PERCENT.search(message)
        if match is not None and self.busy:
            self.progress.setRange(0, 100)
            self.progress.setValue(min(100, int(match.group(1))))
        else:
            self.progress.setRange(0, 0)

    def _report(self, step: str, message: str) -> None:
        # Backends may call this from a worker thread; the signal queues it to the GUI.
        self.progress_reported.emit(step, message)

    async def _run(self, title: str, action: Callable[[], Awaitable[Any]]) -> Any:
        if self.busy:
            return None
        if self.session.backend is None:
            self.banner.error("This profile has no cluster control (remote API only).")
            return None
        self.busy = True
        self._generation += 1
        self._update_actions()
        self.banner.clear_message()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.step_label.setText(f"{title}…")
        try:
            result = await self._trusting_host_keys(action)
        except ClusterError as exc:
            text = operator_message(str(exc))
            if exc.detail:
                text += "\n" + exc.detail.strip()[-1200:]
            self.banner.error(f"{title} failed: {text}")
            logger.warning("%s failed: %s", title, exc)
            return None
        else:
            self.banner.ok(f"{title}: done.")
            return result
        finally:
            # The table shows the outcome before the controls come back.
            self.step_label.setText("reading the cluster's status…")
            await self.refresh(force=True)
            self.busy = False
            self._generation += 1
            self.progress.hide()
            self.step_label.setText("")
            self._update_actions()

    async def _trusting_host_keys(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """``action()``; when the SSH host's key is unknown, ask the operator, write the
        trusted keys to the profile's known-hosts file and run it once more."""
        try:
            return await action()
        except ClusterError as exc:
            unknown = unknown_host_key(exc)
            if unknown is None:
                raise
            if not await self.review_host_keys(unknown):
                raise ClusterError(
                    "the SSH host key was not trusted, so nothing was done on that host"
                ) from exc
        return await action()

    async def review_host_keys(self, error: Any) -> bool:
        """Show ``error``'s keys (a ``HostKeyUnknown``) and ask "Trust this host?"; on
        Accept write each to the profile's known-hosts file (in a thread). True then."""
        from mimir.app.cluster.remote import accept_host_key

        keys = list(error.keys)
        if not keys or self.host_key_dialog is not None:
            return False
        known_hosts = self.session.profile.known_hosts_path
        first = keys[0]
        dialog = HostKeyDialog(self, first.host, first.port, keys, str(known_hosts))
        self.host_key_dialog = dialog
        try:
            trusted = await run_dialog(dialog)
        finally:
            self.host_key_dialog = None
            dialog.deleteLater()
        if not trusted:
            return False

        def write() -> None:
            for key in keys:
                accept_host_key(key, known_hosts)

        try:
            await asyncio.to_thread(write)
        except (OSError, ClusterError) as exc:
            raise ClusterError(f"cannot write the host key to {known_hosts}: {exc}") from exc
        logger.info("host key of %s trusted into %s", first.host, known_hosts)
        return True

    @asyncSlot()
    async def _ask_host_keys_once(self, error: Any) -> None:
        """A refresh met an unknown host key: ask once per profile; on Accept, refresh."""
        name = self.session.profile.name
        if name in self._host_keys_asked or self.busy:
            return
        self._host_keys_asked.add(name)
        try:
            trusted = await self.review_host_keys(error)
        except ClusterError as exc:
            self.banner.error(str(exc))
            return
        if trusted:
            self.banner.ok(f"Host key of {error.keys[0].host} trusted.")
            await self.refresh(with_stats=True)
        else:
            self.banner.error(
                "The SSH host key was not trusted: the console does not talk to that host. "
                "Any action (Start, Stop…) asks again."
            )

    @asyncSlot()
    async def start_cluster(self) -> None:
        backend = self.session.backend
        if backend is None:
            return
        workers = self.workers_spin.value()
        cluster = self.cluster_file
        if cluster is None:
            await self._run(
                f"Start with {count_text(workers, 'worker')}",
                lambda: backend.up(workers=workers, progress=self._report),
            )
            return
        name = self.cluster_file_path.name if self.cluster_file_path else "the cluster file"
        await self._run(
            f"Start with {name}",
            # Each pool starts with the replicas the file gives it.
            lambda: backend.up(workers=None, progress=self._report, cluster=cluster),
        )

    async def _ask(self, title: str, text: str, action: str, detail: str) -> bool:
        """Confirm with the actions disabled meanwhile (no second click, no second box)."""
        if self.busy:
            return False
        self.busy = True
        self._update_actions()
        try:
            return await confirm(self, title, text, action, detail)
        finally:
            self.busy = False
            self._update_actions()

    @asyncSlot()
    async def stop_cluster(self) -> None:
        backend = self.session.backend
        if backend is None:
            return
        if not await self._ask(
            "Stop the cluster",
            f"Stop cluster {backend.project!r} ({backend.backend})?",
            "Stop",
            "Workers finish or hand back their running jobs; the queue's data is kept.",
        ):
            return

        async def down() -> None:
            # An open event stream would hold the server's graceful shutdown up.
            await self.session.feed.stop()
            try:
                await backend.down(progress=self._report)
            finally:
                self.session.start()

        await self._run("Stop", down)

    @asyncSlot()
    async def clean_cluster(self) -> None:
        backend = self.session.backend
        if backend is None:
            return
        if not await self._ask(
            "Clean the cluster",
            f"Stop cluster {backend.project!r} ({backend.backend}) and delete its data?",
            "Delete data",
            "The queue, job records, results and logs kept by the cluster are removed for good.",
        ):
            return

        async def clean() -> None:
            await self.session.feed.stop()
            try:
                await backend.clean(progress=self._report)
            finally:
                self.session.start()

        await self._run("Clean", clean)

    @asyncSlot()
    async def scale_workers(self) -> None:
        backend = self.session.backend
        if backend is None:
            return
        workers = self.workers_spin.value()
        await self._run(
            f"Scale to {count_text(workers, 'worker')}",
            lambda: backend.scale(workers, progress=self._report),
        )

    @asyncSlot()
    async def build_images(self) -> None:
        backend = self.session.backend
        if backend is None:
            return
        await self._run("Build", lambda: backend.build(progress=self._report))

    @asyncSlot()
    async def restart_service(self) -> None:
        row = self.table.currentRow()
        if row < 0:
            self.banner.info("Select a service in the table to restart it.")
            return
        item = self.table.item(row, 0)
        if item is None:
            return
        name = item.text()
        backend = self.session.backend
        if backend is None:
            return
        await self._run(
            f"Restart {name}",
            lambda: backend.restart(name, progress=self._report),
        )

    # ---------------------------------------------------------------- backups

    async def _open(self, dialog: BackupDialog | RestoreDialog | BackupsDialog) -> bool:
        """One backup dialog at a time, window-modal, awaited; True when accepted."""
        self.dialog = dialog
        try:
            return await run_dialog(dialog)
        finally:
            self.dialog = None

    def _can_open(self) -> bool:
        return self.session.backend is not None and not self.busy and self.dialog is None

    @asyncSlot()
    async def back_up(self) -> None:
        """Ask where (and whether with secrets), then have the cluster take a backup."""
        backend = self.session.backend
        if backend is None or not self._can_open():
            return
        dialog = BackupDialog(self, default_backup_dir(backend), backend.project)
        try:
            if not await self._open(dialog):
                return
            directory, secrets = dialog.directory(), dialog.include_secrets()
            passphrase = dialog.take_passphrase()
        finally:
            dialog.deleteLater()

        async def backup() -> tuple[BackupResult, int]:
            async with _as_cluster_errors():
                result = await take_backup(
                    backend,
                    directory,
                    include_secrets=secrets,
                    passphrase=passphrase,
                    progress=self._report,
                )
                size = (await asyncio.to_thread(result.path.stat)).st_size
            return result, size

        done = await self._run("Back up", backup)
        if done is not None:
            result, size = done
            self.last_backup = result
            counts = result.manifest.counts
            what = ", ".join(
                f"{counts[key]:,} {key}" for key in ("runs", "quads", "twins") if key in counts
            )
            encrypted = ", encrypted, with secrets" if result.manifest.encrypted else ""
            self.banner.ok(
                f"Backed up to {result.path} ({format_bytes(size)}{encrypted})"
                + (f": {what}." if what else ".")
            )

    @asyncSlot()
    async def restore_backup(self) -> None:
        """Ask for an archive, then restore it (see :meth:`restore_archive`)."""
        await self.restore_archive(None)

    async def restore_archive(self, archive: Path | None) -> ClusterStatus | None:
        """The restore dialog (on ``archive`` when given), a plain confirmation, then the
        restore with the live feed stopped meanwhile (as Stop does)."""
        backend = self.session.backend
        if backend is None or not self._can_open():
            return None
        folder = default_backup_dir(backend)
        dialog = RestoreDialog(self, folder, backend.project, archive, self.workers_spin.value())
        try:
            if not await self._open(dialog):
                return None
            path, manifest = dialog.archive(), dialog.manifest()
            force, workers = dialog.force(), dialog.workers()
            passphrase = dialog.take_passphrase()
        finally:
            dialog.deleteLater()
        held = ""
        if manifest is not None:
            counts = manifest.counts
            figures = "".join(
                f", {counts[key]:,} {key}" for key in ("runs", "quads") if key in counts
            )
            taken = format_local(manifest.taken_at, zone=True) or manifest.taken_at
            held = f" (project {manifest.project!r}, taken {taken}{figures})"
        project = backend.project
        if force:
            action = "Replace data"
            detail = (
                f"This stops cluster {project!r} and replaces everything it holds now (the "
                f"queue, runs, schedules, ontologies, twins, pipelines and data files) with "
                f"the archive's{held}. What it holds now is first saved in {folder} as a "
                f"pre-restore archive. Nothing changes if the archive fails verification. "
                f"The cluster then starts with {count_text(workers, 'worker')}."
            )
        else:
            action = "Restore"
            detail = (
                f"The archive{held} is verified first. If cluster {project!r} already holds "
                f"data (runs, ontologies, twins, pipelines or a queue), the restore is "
                f"refused and nothing changes. Otherwise the cluster is stopped, written "
                f"from the archive and started with {count_text(workers, 'worker')}."
            )
        if not await self._ask(
            "Restore a backup",
            f"Restore {path.name} into cluster {project!r} ({backend.backend})?",
            action,
            detail,
        ):
            return None

        # What the operator should still read once it is done: where the replaced data
        # went, the jobs queued again, triggers that need a new secret.
        notes: list[str] = []

        def report(step: str, message: str) -> None:
            if step == "reconcile" or message.startswith("what was replaced is in"):
                notes.append(message[:1].upper() + message[1:] + ".")
            self._report(step, message)

        async def restore() -> ClusterStatus:
            # An open event stream would hold the server's graceful shutdown up.
            await self.session.feed.stop()
            try:
                async with _as_cluster_errors():
                    return await restore_cluster(
                        backend,
                        path,
                        force=force,
                        passphrase=passphrase,
                        workers=workers,
                        progress=report,
                    )
            finally:
                self.session.start()

        status: ClusterStatus | None = await self._run(f"Restore {path.name}", restore)
        if status is not None:
            self.banner.ok(
                " ".join(
                    [
                        f"Restored {path.name}{held} into cluster {project!r}; it runs again "
                        f"with {count_text(workers, 'worker')}.",
                        *notes,
                    ]
                )
            )
        return status

    @asyncSlot()
    async def show_backups(self) -> None:
        """The archives in the backups folder; Restore… there restores the chosen one."""
        backend = self.session.backend
        if backend is None or not self._can_open():
            return
        dialog = BackupsDialog(self, default_backup_dir(backend))
        dialog.load()
        try:
            accepted = await self._open(dialog)
            chosen = dialog.chosen
        finally:
            dialog.deleteLater()
        if accepted and chosen is not None:
            await self.restore_archive(chosen)

    # ---------------------------------------------------------------- refresh

    @asyncSlot()
    async def _tick(self) -> None:
        self._forget_stale_figures()
        if not self.busy and self.isVisible():
            await self.refresh(with_stats=True)
        elif not self.busy:
            await self.refresh()

    async def refresh(self, with_stats: bool = False, force: bool = False) -> None:
        """Ask the backend (or, without one, the API) how the cluster is."""
        backend = self.session.backend
        if backend is None:
            await self._refresh_api_only()
            return
        generation = self._generation
        try:
            status = await backend.status()
            if not status.running:
                self._stats = {}  # nothing runs: no figures from when it did
            elif with_stats:
                stats = await backend.stats()
                grouped: dict[str, list[ServiceStats]] = {}
                for item in stats:
                    grouped.setdefault(_stats_key(item, backend.project), []).append(item)
                self._stats = grouped
            await self._read_instances(backend, status)
        except ClusterError as exc:
            self.step_label.setText(f"{_STATUS_UNAVAILABLE}{exc}")
            unknown = unknown_host_key(exc)
            if unknown is not None and not self.busy:
                self._ask_host_keys_once(unknown)
            return
        except Exception as exc:  # a backend's SDK failing must not kill the timer
            logger.warning("cluster status failed: %s", exc)
            return
        if generation != self._generation or (self.busy and not force):
            return  # an action started or ended meanwhile: this reading is stale
        if self.step_label.text().startswith(_STATUS_UNAVAILABLE):
            self.step_label.setText("")  # a reading succeeded: the last failure is history
        self.session.follow_cluster(status)

    async def _read_instances(self, backend: Any, status: ClusterStatus) -> None:
        """The cluster's processes or containers, read again when its services change."""
        signature = tuple((s.name, s.state, s.replicas) for s in status.services)
        if signature == self._last_signature:
            return
        self._last_signature = signature
        instances = await backend.instances() if hasattr(backend, "instances") else []
        self.session.set_instances([i for i in instances if i.state == "running"])

    async def _refresh_api_only(self) -> None:
        try:
            health = await self.session.api.health()
            state, detail = "running", str(health.get("status", ""))
        except ApiError as exc:
            state, detail = "unreachable", str(exc)
        from mimir.app.cluster.base import ServiceStatus

        status = ClusterStatus(
            "docker",
            self.session.profile.project,
            [ServiceStatus("api", "server", state, detail if state == "running" else "")],
            self.session.profile.api_url,
        )
        self.session.last_cluster_status = status
        self.session.cluster_status.emit(status)

    def _show_status(self, status: ClusterStatus) -> None:
        self._update_actions()
        self._show_api_note()
        self.table.setRowCount(len(status.services))
        rows = max(3, len(status.services))
        self.table.setFixedHeight(
            self.table.horizontalHeader().height()
            + rows * self.table.verticalHeader().defaultSectionSize()
            + 4
        )
        for row, service in enumerate(status.services):
            # Worker rows are per pool (worker, worker-slow): each its own pool's figures.
            key = service.name if service.kind == "worker" else service.kind
            stats = self._stats.get(key, []) if service.state == "running" else []
            cpu = f"{sum(s.cpu_percent for s in stats):.0f} %" if stats else ""
            memory = _mib(sum(s.memory_bytes for s in stats)) if stats else ""
            ports = ", ".join(f"{v}" for v in service.ports.values())
            cells = [
                service.name,
                service.state,
                service.health or "—",
                str(service.replicas),
                cpu,
                memory,
                ports,
            ]
            for column, text in enumerate(cells):
                item = self.table.item(row, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(row, column, item)
                item.setText(text)
                if column in (1, 2):
                    # Always set: a cell reused for "—" must not keep the last green.
                    item.setData(Qt.ItemDataRole.ForegroundRole, STATUS_COLORS.get(text))
        worker = next(
            (
                s
                for s in status.services
                if s.kind == "worker" and (getattr(s, "pool", None) or DEFAULT_POOL) == DEFAULT_POOL
            ),
            None,
        )
        idle = not self.busy and not self.workers_spin.hasFocus()
        if worker is not None and idle and worker.replicas:
            self.workers_spin.setValue(worker.replicas)
        # One worker row per pool (a backend without pools: one row, the default pool).
        self._status_replicas = {
            (getattr(s, "pool", None) or DEFAULT_POOL): (
                s.replicas if s.state != "missing" else 0,
                getattr(s, "wanted", None),
            )
            for s in status.services
            if s.kind == "worker"
        }
        self._sync_pools()

    # ---------------------------------------------------------------- worker pools

    def _pool_names(self) -> list[str]:
        """The pools to show: the backend's, the server's, and the cluster file's while
        no cluster runs (what Start would start)."""
        names = set(self._status_replicas)
        names.update(self.session.feed.last_pools or {})
        names.update((self._autoscaler or {}).get("pools") or {})
        status = self.session.last_cluster_status
        if self.cluster_file is not None and not (status is not None and status.running):
            names.update(self.cluster_file.pools)
        return sorted(names)

    def _sync_pools(self) -> None:
        """Groups for the pools there are, each with the newest readings."""
        for group in self.pools_box.set_pools(self._pool_names()):
            group.apply_requested.connect(self.scale_pool)
            group.save_requested.connect(self.save_policy)
        status = self.session.last_cluster_status
        running = bool(status is not None and status.running)
        # A cluster this panel drives that does not run has no load and no autoscaler:
        # nothing read of it while it ran stays on screen.
        stopped = self.session.backend is not None and status is not None and not running
        pools = self.session.feed.last_pools if self._pools_read_at and not stopped else None
        autoscaler = (self._autoscaler or {}) if not stopped else {}
        if stopped:
            self.pools_box.show_unserved([])
        for name, group in self.pools_box.groups.items():
            group.busy = self.busy
            group.can_scale = self.session.backend is not None and running
            figures = (pools or {}).get(name)
            # What Start would run, while it does not run and a cluster file is chosen.
            planned = (
                self.cluster_file.pools.get(name)
                if self.cluster_file is not None and not running
                else None
            )
            if planned is not None:
                group.show_replicas(
                    None if status is None else 0, planned.initial_replicas, planned=True
                )
            elif name in self._status_replicas:
                group.show_replicas(*self._status_replicas[name])
            elif self.session.backend is None and figures is not None:
                replicas = figures.get("replicas") or {}
                group.show_replicas(replicas.get("running"), replicas.get("wanted"))
            else:
                group.show_replicas(None, None)
            group.show_figures(figures)
            entry = (autoscaler.get("pools") or {}).get(name)
            if isinstance(entry, dict):
                group.show_policy(entry)
            elif planned is not None:
                group.show_policy(
                    {
                        "policy": planned.autoscale.model_dump() if planned.autoscale else None,
                        "min": planned.min,
                        "max": planned.max,
                    },
                    planned=True,
                )
            else:
                group.show_policy(None, expected=running)
        for payload in reversed(autoscaler.get("decisions") or []):  # newest first there
            self._on_scale(payload)
        if self._autoscaler is None or stopped:
            self.pools_box.show_note("")
        elif self._autoscaler.get("enabled"):
            leader = self._autoscaler.get("leader") or {}
            period = self._autoscaler.get("period")
            every = f", every {float(period):g} s" if period else ""
            owner = f"; the server acting is {leader.get('owner')}" if leader.get("owner") else ""
            self.pools_box.show_note(f"The autoscaler is on{every}{owner}.")
        else:
            reason = self._autoscaler.get("reason") or "the server does not run it"
            self.pools_box.show_note(
                f"The autoscaler is off: {reason}. Policies are kept but nothing acts on them."
            )

    def _on_pools(self, _pools: dict[str, Any]) -> None:
        self._pools_read_at = time.monotonic()
        self._sync_pools()

    def _on_autoscaler(self, answer: dict[str, Any]) -> None:
        self._autoscaler = answer
        self._sync_pools()

    def _on_scale(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        decision = ScaleDecision.from_payload(payload)
        group = self.pools_box.group(decision.pool) if decision is not None else None
        if decision is not None and group is not None:
            group.show_decision(decision)

    def _on_stats(self, stats: dict[str, Any]) -> None:
        status = self.session.last_cluster_status
        if self.session.backend is not None and status is not None and not status.running:
            return  # a last reading from before it stopped
        self.pools_box.show_unserved([str(q) for q in stats.get("unserved_queues") or []])

    def _forget_stale_figures(self) -> None:
        """Figures older than a few polls are no longer shown (the server went away)."""
        limit = 3 * self.session.feed.workers_interval + 2.0
        if self._pools_read_at and time.monotonic() - self._pools_read_at > limit:
            self._pools_read_at = 0.0
            self._sync_pools()

    @asyncSlot(str, int)
    async def scale_pool(self, pool: str, replicas: int) -> None:
        """Scale one pool with the backend (the panel is busy meanwhile, as for any
        action; the group says "scaling to N…")."""
        backend = self.session.backend
        group = self.pools_box.group(pool)
        if backend is None or group is None or self.busy:
            return
        group.scaling_to = replicas

        try:
            await self._run(
                f"Scale pool {pool} to {count_text(replicas, 'worker')}",
                lambda: backend.scale(replicas, progress=self._report, pool=pool),
            )
        finally:
            group.scaled()
            self._sync_pools()

    @asyncSlot(str, object)
    async def save_policy(self, pool: str, body: dict[str, Any]) -> None:
        """``PUT /api/v1/autoscaler/pools/{pool}``; a refusal is shown beside the fields."""
        group = self.pools_box.group(pool)
        if group is None:
            return
        group.saving = True
        try:
            answer = await self.session.api.set_pool_policy(pool, body)
        except ApiError as exc:
            fields = []
            if isinstance(exc.detail, list):
                fields = [str(d.get("field", "")) for d in exc.detail if isinstance(d, dict)]
            elif isinstance(exc.detail, dict) and exc.detail.get("field"):
                fields = [str(exc.detail["field"])]
            group.policy_refused(f"Not saved: {exc}", fields)
            return
        entry: dict[str, Any] | None = None
        if isinstance(answer, dict) and "policy" in answer:
            entry = answer
        elif isinstance(answer, dict) and "target_backlog" in answer:
            entry = {"policy": answer, "min": answer.get("min"), "max": answer.get("max")}
        group.policy_saved(entry)
        self.banner.ok(f"Autoscaling policy of pool {pool} saved.")
        await self.session.feed.read_autoscaler()

    @asyncSlot()
    async def choose_cluster_file(self) -> None:
        """Pick a cluster file for Start; it is validated at once (errors name the line)."""
        if self.busy:
            return
        dialog = QFileDialog(self, "Cluster file")
        dialog.setNameFilters(["Cluster files (*.yaml *.yml)", "All files (*)"])
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        if self.cluster_file_path is not None:
            dialog.setDirectory(str(self.cluster_file_path.parent))
        path = await ask_path(dialog)
        if path is not None:
            await self.load_cluster_file(path)

    async def load_cluster_file(self, path: Path) -> ClusterFile | None:
        """Read and validate ``path`` (in a thread); use it for Start when it is valid,
        else say why, line by line, and keep what was chosen before."""
        try:
            cluster = await asyncio.to_thread(load_cluster_file, path)
        except ClusterFileError as exc:
            self.banner.error(str(exc))
            return None
        self.use_cluster_file(cluster, path)
        self.banner.ok(f"Start uses {path.name}: {self._cluster_text(cluster)}.")
        return cluster

    @staticmethod
    def _cluster_text(cluster: ClusterFile) -> str:
        return ", ".join(
            f"pool {name} ({count_text(pool.initial_replicas, 'worker')}"
            + (", autoscaled" if pool.autoscaled else "")
            + ")"
            for name, pool in cluster.pools.items()
        )

    def use_cluster_file(self, cluster: ClusterFile | None, path: Path | None) -> None:
        self.cluster_file, self.cluster_file_path = cluster, path
        if cluster is not None and path is not None:
            self.cluster_file_label.setText(f"Cluster file {path}: {self._cluster_text(cluster)}")
            default = cluster.pools.get(DEFAULT_POOL)
            if default is not None:
                self.workers_spin.setValue(default.initial_replicas)
        self.cluster_file_label.setVisible(cluster is not None)
        self.cluster_file_clear.setVisible(cluster is not None)
        self._sync_pools()

    # ---------------------------------------------------------------- diagnosis

    @asyncSlot()
    async def run_diagnosis(self) -> None:
        """Run the doctor's checks against this profile's API and cluster; show findings."""
        if self.diagnosing:
            return
        self.diagnosing = True
        self.diagnose_button.setEnabled(False)
        self.diagnosis_box.show()
        self.diagnosis_summary.setText("Diagnosing…")
        try:
            report = await diagnose(self.session.api, self.session.backend)
        except Exception as exc:  # a check's own failure must not take the console down
            logger.exception("diagnosis failed")
            self.diagnosis_summary.setText(f"The diagnosis itself failed: {exc}")
            return
        finally:
            self.diagnosing = False
            self.diagnose_button.setEnabled(True)
        self.show_report(report)

    def show_report(self, report: Report) -> None:
        self.last_report = report
        self.diagnosis_box.show()
        where = report.target + (
            f" (server {report.server_version})" if report.server_version else ""
        )
        summary = report.summary()
        self.diagnosis_summary.setText(
            f"{where}: {summary}" if report.findings else f"{where}: {summary}. All clear."
        )
        self.findings_table.setRowCount(len(report.findings))
        for row, finding in enumerate(report.findings):
            severity = QTableWidgetItem(finding.severity.upper())
            severity.setForeground(QColor(_SEVERITY_COLORS[finding.severity]))
            font = severity.font()
            font.setBold(True)
            severity.setFont(font)
            title = finding.title + (f"\n{finding.subject}" if finding.subject else "")
            cells = [severity, QTableWidgetItem(title), QTableWidgetItem(finding.seen),
                     QTableWidgetItem(finding.action)]  # fmt: skip
            for column, item in enumerate(cells):
                item.setToolTip(f"{finding.check}: {finding.seen}\n\n{finding.action}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
                self.findings_table.setItem(row, column, item)
        self.findings_table.resizeRowsToContents()

    def scroll_to(self, widget: QWidget) -> None:
        """Scroll the panel so that ``widget`` shows (screenshots, and after a diagnosis)."""
        self.scroll_area.ensureWidgetVisible(widget, 0, 0)

    async def wait_idle(self) -> None:
        """For tests and scripts: until no action runs."""
        while self.busy:
            await asyncio.sleep(0.05)
