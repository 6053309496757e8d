"""The Cluster panel's backup dialogs: take a backup, restore one, list the archives kept.

Each dialog only gathers what the operator chose; the panel runs the work (its busy
flag, progress bar and banner). Files are read in a thread (``asyncio.to_thread``), never
on the Qt loop. Passphrases live in their fields until the panel takes them
(:meth:`BackupDialog.take_passphrase`, :meth:`RestoreDialog.take_passphrase`), which
clears the fields: they are never stored (no QSettings, no keyring) nor logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.cluster.backup import BackupEntry, list_backups
from mimir.app.services.runs import format_bytes, format_local
from mimir.app.ui.common import ask_path, data_table, run_dialog, set_row, table_item
from mimir.core.backup.archive import read_manifest, sidecar_path
from mimir.core.backup.crypto import AGE_MAGIC, WrongPassphrase, is_age
from mimir.core.backup.manifest import BackupError, Manifest

__all__ = [
    "MIN_PASSPHRASE",
    "BackupDialog",
    "BackupsDialog",
    "RestoreDialog",
    "manifest_summary",
    "run_dialog",
]

#: The shortest passphrase the console accepts for an archive with secrets.
MIN_PASSPHRASE = 8

_BACKUP_FILTER = "Mimir backups (*.tar.gz *.age);;All files (*)"
_TABLE_COLUMNS = ["Archive", "Taken", "Project", "Size", "Runs", "Quads", "Encrypted", "Error"]
_TABLE_WIDTHS = [310, 170, 100, 90, 80, 100, 100]


async def _choose(parent: QWidget, title: str, start: str, *, folder: bool) -> Path | None:
    """A file (or folder) chooser, window-modal and awaited."""
    dialog = QFileDialog(parent, title, start)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
    if folder:
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
    else:
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setNameFilter(_BACKUP_FILTER)
    return await ask_path(dialog)


def _password_field(placeholder: str) -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    edit.setPlaceholderText(placeholder)
    return edit


def _reason_label() -> QLabel:
    """The line that says why OK is disabled (shown only then)."""
    label = QLabel("")
    label.setObjectName("Hint")
    label.setWordWrap(True)
    return label


def _quads(manifest: Manifest) -> int | None:
    counts = manifest.counts
    for key in ("quads", "triples"):
        if key in counts:
            return int(counts[key])
    return None


def manifest_summary(manifest: Manifest) -> list[tuple[str, str]]:
    """What an operator wants to know about an archive before restoring it."""
    quads = _quads(manifest)
    runs = manifest.counts.get("runs")
    return [
        ("Project", manifest.project or "—"),
        ("Taken", format_local(manifest.taken_at, zone=True) or manifest.taken_at),
        ("Runs", "—" if runs is None else f"{runs:,}"),
        ("Quads", "—" if quads is None else f"{quads:,}"),
        ("Encrypted", "yes" if manifest.encrypted else "no"),
        ("Secrets", "included" if manifest.includes_secrets else "not included"),
        ("Made by", f"Mimir {manifest.mimir_version}"),
    ]


def _buttons(ok_text: str) -> QDialogButtonBox:
    buttons = QDialogButtonBox(
        QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
    )
    ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
    ok.setText(ok_text)
    ok.setObjectName("Primary")
    return buttons


def _path_row(form: QFormLayout, label: str, edit: QLineEdit) -> QPushButton:
    """A form row of a path field and its "Choose…" button; answers the button."""
    button = QPushButton("Choose…")
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    form.addRow(label, row)
    return button


# ---------------------------------------------------------------------------- backup


class BackupDialog(QDialog):
    """Where to put the archive, and whether it holds secrets (then encrypted)."""

    def __init__(self, parent: QWidget, directory: Path, project: str = "") -> None:
        super().__init__(parent)
        self.setObjectName("BackupDialog")
        self.setWindowTitle(f"Back up cluster {project!r}" if project else "Back up the cluster")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "The cluster's server takes the backup while jobs keep flowing (the queue, run "
            "store, ontologies, twins, pipelines and data files), then the console downloads "
            "the archive into this folder."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.directory_edit = QLineEdit(str(directory))
        self.directory_edit.setMinimumWidth(340)
        self.choose_button = _path_row(form, "Save to folder", self.directory_edit)
        self.choose_button.clicked.connect(self._choose_directory)
        self.secrets_box = QCheckBox("Include secrets (encrypted)")
        self.secrets_box.setToolTip(
            "API keys' hashes and the Redis password. Without this they are left out."
        )
        form.addRow("", self.secrets_box)
        self.passphrase_edit = _password_field(f"at least {MIN_PASSPHRASE} characters")
        self.repeat_edit = _password_field("the same again")
        form.addRow("Passphrase", self.passphrase_edit)
        form.addRow("Repeat it", self.repeat_edit)
        self.secrets_note = QLabel(
            "The archive is encrypted with this passphrase. The console does not keep it: "
            "without it the archive cannot be restored."
        )
        self.secrets_note.setObjectName("Hint")
        self.secrets_note.setWordWrap(True)
        form.addRow("", self.secrets_note)
        self.form = form
        layout.addLayout(form)
        self.reason_label = _reason_label()
        layout.addWidget(self.reason_label)
        self.buttons = _buttons("Back up")
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self._accept_if_valid)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.secrets_box.toggled.connect(self._on_secrets)
        for edit in (self.directory_edit, self.passphrase_edit, self.repeat_edit):
            edit.textChanged.connect(self._validate)
        self._on_secrets(False)

    def _on_secrets(self, checked: bool) -> None:
        for widget in (self.passphrase_edit, self.repeat_edit, self.secrets_note):
            self.form.setRowVisible(widget, checked)
        if not checked:
            self.passphrase_edit.clear()
            self.repeat_edit.clear()
        self._validate()
        self.adjustSize()

    def problem(self) -> str:
        """Why the backup cannot be asked for yet, or ""."""
        if not self.directory_edit.text().strip():
            return "Choose a folder for the archive."
        if self.secrets_box.isChecked():
            passphrase = self.passphrase_edit.text()
            if len(passphrase) < MIN_PASSPHRASE:
                return f"The passphrase needs at least {MIN_PASSPHRASE} characters."
            if passphrase != self.repeat_edit.text():
                return "The two passphrases differ."
        return ""

    def _validate(self) -> None:
        problem = self.problem()
        self.ok_button.setEnabled(not problem)
        self.reason_label.setText(problem)
        self.reason_label.setVisible(bool(problem))

    def _accept_if_valid(self) -> None:
        if not self.problem():
            self.accept()

    @asyncSlot()
    async def _choose_directory(self) -> None:
        chosen = await _choose(self, "Folder for backups", self.directory_edit.text(), folder=True)
        if chosen is not None:
            self.directory_edit.setText(str(chosen))

    def directory(self) -> Path:
        return Path(self.directory_edit.text().strip()).expanduser()

    def include_secrets(self) -> bool:
        return self.secrets_box.isChecked()

    def reject(self) -> None:
        self.take_passphrase()  # cancelled: forget what was typed
        super().reject()

    def take_passphrase(self) -> str | None:
        """The passphrase (None without secrets); clears the fields."""
        passphrase = self.passphrase_edit.text() if self.include_secrets() else None
        self.passphrase_edit.clear()
        self.repeat_edit.clear()
        return passphrase or None


# ---------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class ArchiveInfo:
    """What the restore dialog learnt about an archive (read in a thread)."""

    path: Path
    encrypted: bool
    manifest: Manifest | None
    error: str = ""
    wrong_passphrase: bool = False


def inspect_archive(path: Path, passphrase: str | None = None) -> ArchiveInfo:
    """Whether ``path`` is encrypted, and its manifest (blocking: call in a thread)."""
    try:
        with path.open("rb") as probe:
            encrypted = is_age(probe.read(len(AGE_MAGIC)))
    except OSError as exc:
        return ArchiveInfo(path, False, None, f"cannot read {path}: {exc.strerror or exc}")
    if encrypted and passphrase is None and not sidecar_path(path).is_file():
        return ArchiveInfo(path, True, None)  # its manifest needs the passphrase
    try:
        return ArchiveInfo(path, encrypted, read_manifest(path, passphrase))
    except WrongPassphrase as exc:
        return ArchiveInfo(path, encrypted, None, str(exc), wrong_passphrase=True)
    except BackupError as exc:
        return ArchiveInfo(path, encrypted, None, str(exc))


class RestoreDialog(QDialog):
    """Which archive, its summary, its passphrase, whether to replace data, workers."""

    def __init__(
        self,
        parent: QWidget,
        start_dir: Path,
        project: str = "",
        archive: Path | None = None,
        workers: int = 2,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("RestoreDialog")
        self.project = project
        self.start_dir = start_dir
        self.info: ArchiveInfo | None = None
        self.reading = False
        self._read_count = 0
        self._default_workers = workers
        self.setWindowTitle(f"Restore into cluster {project!r}" if project else "Restore")
        self.setMinimumWidth(680)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "The archive is verified completely first: a damaged or foreign archive is "
            "refused and nothing is changed. Then the cluster is stopped, its data written "
            "from the archive, and it starts again."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.archive_edit = QLineEdit(str(archive) if archive else "")
        self.archive_edit.setPlaceholderText("a .tar.gz or .tar.gz.age archive")
        self.archive_edit.setMinimumWidth(380)
        self.archive_edit.editingFinished.connect(self._on_archive_edited)
        self.archive_edit.textChanged.connect(self.archive_edit.setToolTip)
        self.choose_button = _path_row(form, "Archive", self.archive_edit)
        self.choose_button.clicked.connect(self._choose_archive)
        self.summary_label = QLabel("Choose an archive.")
        self.summary_label.setObjectName("BackupSummary")
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Holds", self.summary_label)
        self.passphrase_edit = _password_field("the passphrase the archive was encrypted with")
        self.passphrase_edit.textChanged.connect(self._validate)
        self.read_button = QPushButton("Read")
        self.read_button.setToolTip("Decrypt the archive's manifest with this passphrase")
        self.read_button.clicked.connect(self._read_with_passphrase)
        self.passphrase_edit.returnPressed.connect(self._read_with_passphrase)
        passphrase_row = QWidget()
        passphrase_layout = QHBoxLayout(passphrase_row)
        passphrase_layout.setContentsMargins(0, 0, 0, 0)
        passphrase_layout.addWidget(self.passphrase_edit, 1)
        passphrase_layout.addWidget(self.read_button)
        self.passphrase_row = passphrase_row
        form.addRow("Passphrase", passphrase_row)
        self.force_box = QCheckBox("Replace the data this cluster holds (it is backed up first)")
        self.force_box.setToolTip(
            "Without this, a cluster that holds data is left as it is and the restore is "
            "refused. With it, what the cluster holds is first saved as a pre-restore "
            "backup in the backups folder."
        )
        self.force_box.toggled.connect(self._validate)
        form.addRow("", self.force_box)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(0, 64)
        self.workers_spin.setValue(workers)
        self.workers_spin.setSuffix(" workers")
        self.workers_spin.setMaximumWidth(140)
        self.workers_spin.setToolTip("How many workers the cluster runs once restored")
        form.addRow("Then run", self.workers_spin)
        self.form = form
        layout.addLayout(form)
        self.reason_label = _reason_label()
        layout.addWidget(self.reason_label)
        self.buttons = _buttons("Restore…")
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self._accept_if_valid)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.form.setRowVisible(self.passphrase_row, False)
        self._validate()
        if archive is not None:
            self.load(archive)

    # -- reading the archive

    def load(self, path: Path, passphrase: str | None = None) -> asyncio.Task[None]:
        """Read ``path``'s manifest in a thread (the summary says "reading…" meanwhile)."""
        self._read_count += 1
        count = self._read_count
        if self.archive_edit.text().strip() != str(path):
            self.archive_edit.setText(str(path))
        self.reading = True
        self.info = None
        self.summary_label.setText(f"reading {path.name}…")
        self._validate()
        return asyncio.ensure_future(self._load(path, passphrase, count))

    async def _load(self, path: Path, passphrase: str | None, count: int) -> None:
        info = await asyncio.to_thread(inspect_archive, path, passphrase)
        if count != self._read_count:
            return  # another archive was chosen meanwhile
        with contextlib.suppress(RuntimeError):  # the dialog was closed meanwhile
            self.reading = False
            self._show_info(info, tried_passphrase=passphrase is not None)

    def _show_info(self, info: ArchiveInfo, tried_passphrase: bool = False) -> None:
        self.info = info
        self.form.setRowVisible(self.passphrase_row, info.encrypted)
        self.read_button.setVisible(info.encrypted and info.manifest is None)
        if info.manifest is not None:
            rows = "".join(
                f"<tr><td style='padding-right:12px; color:#9AA3B2'>{name}</td>"
                f"<td>{_escape(value)}</td></tr>"
                for name, value in manifest_summary(info.manifest)
            )
            text = f"<table>{rows}</table>"
            if self.project and info.manifest.project and info.manifest.project != self.project:
                text += (
                    f"<p>Taken from project {_escape(repr(info.manifest.project))}; "
                    f"restored into {_escape(repr(self.project))}.</p>"
                )
            self.summary_label.setText(text)
            counts = info.manifest.counts
            if "workers" in counts and not self.workers_spin.hasFocus():
                self.workers_spin.setValue(int(counts["workers"]) or self._default_workers)
        elif info.wrong_passphrase:
            self.summary_label.setText(
                "Encrypted, and that passphrase does not open it: enter the right one and "
                "press Read."
            )
        elif info.error:
            self.summary_label.setText(
                f"<span style='color:#FF6B6B'>Cannot restore this archive: "
                f"{_escape(info.error)}</span>"
            )
        else:
            self.summary_label.setText(
                "Encrypted, and its manifest is not beside it: enter the passphrase and "
                "press Read to see what it holds."
            )
        if tried_passphrase and info.error:
            self.passphrase_edit.selectAll()
        self._validate()
        self.adjustSize()

    def _on_archive_edited(self) -> None:
        text = self.archive_edit.text().strip()
        if text and (self.info is None or str(self.info.path) != text) and not self.reading:
            self.load(Path(text).expanduser())

    @asyncSlot()
    async def _choose_archive(self) -> None:
        start = self.archive_edit.text().strip() or str(self.start_dir)
        chosen = await _choose(self, "Backup archive to restore", start, folder=False)
        if chosen is not None:
            self.archive_edit.setText(str(chosen))
            self.load(chosen)

    def _read_with_passphrase(self) -> None:
        if self.info is not None and self.info.manifest is None and self.passphrase_edit.text():
            self.load(self.info.path, self.passphrase_edit.text())

    # -- validity

    def problem(self) -> str:
        """Why the restore cannot be asked for yet, or ""."""
        if self.reading:
            return "Reading the archive…"
        info = self.info
        if info is None:
            return "Choose the archive to restore."
        if info.wrong_passphrase:
            return "That passphrase does not open the archive: enter the right one, then Read."
        if info.error:
            return "This archive cannot be restored (see above)."
        if info.encrypted and not self.passphrase_edit.text():
            return "The archive is encrypted: enter its passphrase."
        return ""

    def _validate(self) -> None:
        problem = self.problem()
        self.ok_button.setEnabled(not problem)
        self.reason_label.setText(problem)
        self.reason_label.setVisible(bool(problem))

    def _accept_if_valid(self) -> None:
        if not self.problem():
            self.accept()

    # -- the choice

    def archive(self) -> Path:
        assert self.info is not None
        return self.info.path

    def manifest(self) -> Manifest | None:
        return self.info.manifest if self.info is not None else None

    def force(self) -> bool:
        return self.force_box.isChecked()

    def workers(self) -> int:
        return self.workers_spin.value()

    def reject(self) -> None:
        self.passphrase_edit.clear()  # cancelled: forget what was typed
        super().reject()

    def take_passphrase(self) -> str | None:
        """The passphrase (None for a clear archive); clears the field."""
        passphrase = self.passphrase_edit.text()
        self.passphrase_edit.clear()
        encrypted = self.info is not None and self.info.encrypted
        return passphrase if encrypted and passphrase else None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------- the list


class BackupsDialog(QDialog):
    """The archives in a folder, newest first; Restore… for the selected one."""

    def __init__(self, parent: QWidget, directory: Path) -> None:
        super().__init__(parent)
        self.setObjectName("BackupsDialog")
        self.setWindowTitle("Backups")
        self.resize(1180, 440)
        self.directory = directory
        self.entries: list[BackupEntry] = []
        self.loading = False
        self.chosen: Path | None = None
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.folder_label = QLabel("")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top.addWidget(self.folder_label, 1)
        self.folder_button = QPushButton("Other folder…")
        self.folder_button.clicked.connect(self._choose_folder)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(lambda: self.load())
        top.addWidget(self.folder_button)
        top.addWidget(self.refresh_button)
        layout.addLayout(top)
        self.table = data_table(_TABLE_COLUMNS, _TABLE_WIDTHS)
        self.table.setSortingEnabled(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.itemSelectionChanged.connect(self._update_actions)
        self.table.doubleClicked.connect(lambda _index: self._restore_selected())
        layout.addWidget(self.table, 1)
        self.empty_label = QLabel("")
        self.empty_label.setObjectName("Hint")
        layout.addWidget(self.empty_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.restore_button = self.buttons.addButton(
            "Restore…", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.restore_button.setToolTip("Restore the selected archive into this cluster")
        self.buttons.rejected.connect(self.reject)
        self.restore_button.clicked.connect(self._restore_selected)
        layout.addWidget(self.buttons)
        self._update_actions()

    def load(self, directory: Path | None = None) -> asyncio.Task[None]:
        """List ``directory`` (default: the one shown) in a thread."""
        if directory is not None:
            self.directory = directory
        self.loading = True
        self.folder_label.setText(f"Archives in {self.directory}")
        self.empty_label.setText("reading…")
        self._update_actions()
        return asyncio.ensure_future(self._load(self.directory))

    async def _load(self, directory: Path) -> None:
        try:
            entries = await asyncio.to_thread(list_backups, directory)
            error = ""
        except OSError as exc:
            entries, error = [], f"Cannot list {directory}: {exc.strerror or exc}"
        if directory != self.directory:
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loading = False
            self.show_entries(entries, error)

    def show_entries(self, entries: list[BackupEntry], error: str = "") -> None:
        self.entries = entries
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            manifest = entry.manifest
            runs = manifest.counts.get("runs") if manifest else None
            quads = _quads(manifest) if manifest else None
            taken = format_local(manifest.taken_at) if manifest else ""
            items = [
                table_item(entry.path.name, str(entry.path), data=str(entry.path)),
                table_item(taken, manifest.taken_at if manifest else ""),
                table_item(manifest.project if manifest else ""),
                table_item(format_bytes(entry.size), f"{entry.size:,} bytes"),
                table_item("" if runs is None else f"{runs:,}"),
                table_item("" if quads is None else f"{quads:,}"),
                table_item(
                    ("yes" if manifest.encrypted else "no") if manifest else "",
                    "includes secrets" if manifest and manifest.includes_secrets else "",
                ),
                table_item(entry.error, entry.error),
            ]
            for column in (3, 4, 5):
                items[column].setTextAlignment(
                    Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                )
            if entry.error:
                items[-1].setForeground(Qt.GlobalColor.red)
            set_row(self.table, row, items)
        # Every column as wide as its widest cell or title; the error column takes the rest.
        for column in range(len(_TABLE_COLUMNS) - 1):
            self.table.resizeColumnToContents(column)
        if error:
            self.empty_label.setText(error)
        elif not entries:
            self.empty_label.setText("No backups in this folder yet.")
        else:
            self.empty_label.setText(
                f"{len(entries)} archive(s), newest first. Double-click one to restore it."
            )
        if entries:
            self.table.selectRow(0)
        self._update_actions()

    def selected_entry(self) -> BackupEntry | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.entries):
            return None
        return self.entries[rows[0].row()]

    def _update_actions(self) -> None:
        entry = self.selected_entry()
        # An archive without a readable manifest cannot be restored, unless it is an
        # encrypted one whose manifest only needs the passphrase.
        usable = entry is not None and (
            entry.manifest is not None or entry.path.name.endswith(".age")
        )
        self.restore_button.setEnabled(not self.loading and usable)

    def _restore_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None or self.loading:
            return
        self.chosen = entry.path
        self.accept()

    @asyncSlot()
    async def _choose_folder(self) -> None:
        chosen = await _choose(self, "Folder with backups", str(self.directory), folder=True)
        if chosen is not None:
            self.load(chosen)
