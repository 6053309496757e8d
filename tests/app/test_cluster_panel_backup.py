"""The Cluster panel's backups, driven as an operator would, offscreen, with real widgets.

The archives are real (:func:`mimir.core.backup.archive.write_archive`); the console is
the real window on a qasync loop with a LocalBackend (the fixture of
``test_console_panels``). The last test takes a backup of a real local cluster through
the panel and restores it over the same cluster.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("qasync")

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QWidget

from mimir.app.cluster.backup import default_backup_dir
from mimir.app.ui.backup_dialog import (
    MIN_PASSPHRASE,
    BackupDialog,
    BackupsDialog,
    RestoreDialog,
)
from mimir.core.backup.archive import sidecar_path, write_archive
from mimir.core.backup.manifest import Manifest
from tests.app import test_console_panels
from tests.app.conftest import SLEEP_PIPELINE
from tests.app.test_console_panels import Console, answer_confirmation, until

#: The console fixture: the real window with a LocalBackend on a qasync loop.
console = test_console_panels.console

PASSPHRASE = "correct horse battery"


def make_archive(
    folder: Path,
    name: str,
    taken_at: str,
    *,
    project: str = "alpha",
    runs: int = 3,
    quads: int = 10,
    passphrase: str | None = None,
    db_bytes: int = 2000,
) -> Path:
    """A real archive: a run store (random bytes) and a pipeline, with a manifest."""
    staging = folder / f".staging-{name}"
    (staging / "runstore").mkdir(parents=True)
    (staging / "runstore" / "mimir.db").write_bytes(os.urandom(db_bytes))
    (staging / "pipelines").mkdir()
    (staging / "pipelines" / "nap.yaml").write_text(SLEEP_PIPELINE)
    manifest = Manifest(project=project, taken_at=taken_at, counts={"runs": runs, "quads": quads})
    dest = folder / name
    write_archive(staging, dest, manifest, passphrase=passphrase, work_factor=10)
    shutil.rmtree(staging)
    return dest


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def backup_buttons(panel: Any) -> list[Any]:
    return [panel.backup_button, panel.restore_button, panel.backups_button]


async def open_dialog(panel: Any, button: Any, kind: type) -> Any:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    return await until(
        lambda: (
            panel.dialog if isinstance(panel.dialog, kind) and panel.dialog.isVisible() else None
        ),
        10,
        f"the {kind.__name__}",
    )


# ---------------------------------------------------------------- the dialogs alone


def test_backup_dialog_keeps_ok_disabled_until_the_passphrases_match(
    qapp: Any, tmp_path: Path
) -> None:
    parent = QWidget()
    dialog = BackupDialog(parent, tmp_path / "backups", "alpha")
    dialog.show()
    assert dialog.directory_edit.text() == str(tmp_path / "backups")
    assert dialog.ok_button.isEnabled() and dialog.ok_button.text() == "Back up"
    assert not dialog.passphrase_edit.isVisible()  # only with secrets

    dialog.secrets_box.click()
    assert dialog.secrets_box.isChecked()
    assert dialog.passphrase_edit.isVisible() and dialog.repeat_edit.isVisible()
    assert not dialog.ok_button.isEnabled()
    assert dialog.reason_label.isVisible()
    assert str(MIN_PASSPHRASE) in dialog.reason_label.text()

    QTest.keyClicks(dialog.passphrase_edit, "short")
    QTest.keyClicks(dialog.repeat_edit, "short")
    assert not dialog.ok_button.isEnabled()
    assert "at least 8 characters" in dialog.reason_label.text()

    dialog.passphrase_edit.setText(PASSPHRASE)
    dialog.repeat_edit.setText(PASSPHRASE + "!")
    assert not dialog.ok_button.isEnabled()
    assert dialog.reason_label.text() == "The two passphrases differ."
    dialog.buttons.accepted.emit()  # Enter in a field: still refused
    assert dialog.isVisible() and dialog.result() == 0

    dialog.repeat_edit.setText(PASSPHRASE)
    assert dialog.ok_button.isEnabled() and not dialog.reason_label.isVisible()
    assert dialog.include_secrets()
    assert dialog.take_passphrase() == PASSPHRASE
    assert dialog.passphrase_edit.text() == "" and dialog.repeat_edit.text() == ""

    # Unticking secrets forgets what was typed and lets a clear backup go.
    dialog.passphrase_edit.setText("typed but unused")
    dialog.secrets_box.click()
    assert not dialog.passphrase_edit.isVisible() and dialog.passphrase_edit.text() == ""
    assert dialog.ok_button.isEnabled() and dialog.take_passphrase() is None

    dialog.directory_edit.setText("  ")
    assert not dialog.ok_button.isEnabled() and "folder" in dialog.reason_label.text()
    dialog.close()
    parent.deleteLater()


def test_restore_dialog_asks_for_the_passphrase_of_an_encrypted_archive(
    console: Console, tmp_path: Path
) -> None:
    window = console.window
    panel = window.cluster
    folder = tmp_path / "archives"
    folder.mkdir()
    clear = make_archive(folder, "clear.tar.gz", "2026-11-30T10:00:00Z", runs=7, quads=1234)
    sealed = make_archive(
        folder, "sealed.tar.gz.age", "2026-11-30T11:00:00Z", passphrase=PASSPHRASE
    )
    bare = make_archive(folder, "bare.tar.gz.age", "2026-11-30T12:00:00Z", passphrase=PASSPHRASE)
    sidecar_path(bare).unlink()  # its manifest now needs the passphrase

    async def scenario() -> None:
        window.show_panel("cluster")
        await until(lambda: panel.restore_button.isEnabled(), 10, "Restore… offered")
        assert not panel.backup_button.isEnabled()  # nothing runs: nothing to back up
        dialog: RestoreDialog = await open_dialog(panel, panel.restore_button, RestoreDialog)
        assert not dialog.ok_button.isEnabled()
        assert dialog.reason_label.text() == "Choose the archive to restore."

        dialog.load(clear)
        await until(lambda: dialog.info is not None, 10, "the clear archive's manifest")
        summary = dialog.summary_label.text()
        for words in ("alpha", "1,234", ">7<", "Encrypted", ">no<"):
            assert words in summary, (words, summary)
        assert not dialog.passphrase_row.isVisible()
        assert dialog.ok_button.isEnabled()

        dialog.load(sealed)
        await until(lambda: dialog.info is not None, 10, "the sealed archive's manifest")
        assert dialog.info is not None and dialog.info.manifest is not None  # from its sidecar
        assert dialog.passphrase_row.isVisible() and not dialog.read_button.isVisible()
        assert not dialog.ok_button.isEnabled()
        assert "passphrase" in dialog.reason_label.text()
        QTest.keyClicks(dialog.passphrase_edit, PASSPHRASE)
        assert dialog.ok_button.isEnabled()

        dialog.load(bare)
        await until(lambda: dialog.info is not None, 10, "the bare archive looked at")
        assert dialog.info is not None and dialog.info.manifest is None
        assert dialog.passphrase_row.isVisible() and dialog.read_button.isVisible()
        assert "enter the passphrase" in dialog.summary_label.text()
        dialog.passphrase_edit.setText("not the passphrase")
        QTest.mouseClick(dialog.read_button, Qt.MouseButton.LeftButton)
        await until(lambda: dialog.info is not None, 30, "the wrong passphrase tried")
        assert dialog.info is not None and dialog.info.manifest is None
        assert not dialog.ok_button.isEnabled()
        assert "passphrase" in dialog.reason_label.text().lower()
        dialog.passphrase_edit.setText(PASSPHRASE)
        QTest.mouseClick(dialog.read_button, Qt.MouseButton.LeftButton)
        await until(lambda: dialog.info is not None, 30, "the right passphrase tried")
        assert dialog.info is not None and dialog.info.manifest is not None
        assert "alpha" in dialog.summary_label.text()
        assert dialog.ok_button.isEnabled()

        QTest.mouseClick(
            dialog.buttons.button(dialog.buttons.StandardButton.Cancel), Qt.MouseButton.LeftButton
        )
        await until(lambda: panel.dialog is None, 5, "the dialog closed")
        with pytest.raises(RuntimeError):  # the dialog, and the passphrase in it, is gone
            dialog.passphrase_edit.text()
        assert not panel.busy and panel.restore_button.isEnabled()

    console.run(scenario)


# ---------------------------------------------------------------- through the panel


def test_backups_table_lists_real_archives_newest_first(console: Console) -> None:
    window = console.window
    panel = window.cluster
    folder = default_backup_dir(console.backend)
    folder.mkdir(parents=True)
    make_archive(folder, "mimir-alpha-middle.tar.gz", "2026-11-29T08:00:00Z", runs=20)
    make_archive(folder, "mimir-alpha-oldest.tar.gz", "2026-11-01T08:00:00Z", runs=10)
    make_archive(
        folder,
        "mimir-beta-newest.tar.gz.age",
        "2026-11-30T08:00:00Z",
        project="beta",
        runs=30,
        quads=99_000,
        passphrase=PASSPHRASE,
    )
    (folder / "mimir-broken.tar.gz").write_bytes(b"not an archive at all")
    (folder / "notes.txt").write_text("not listed")

    async def scenario() -> None:
        window.show_panel("cluster")
        await until(lambda: panel.backups_button.isEnabled(), 10, "Backups offered")
        dialog: BackupsDialog = await open_dialog(panel, panel.backups_button, BackupsDialog)
        await until(lambda: not dialog.loading, 10, "the archives listed")
        table = dialog.table
        headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
        assert headers == [
            "Archive", "Taken", "Project", "Size", "Runs", "Quads", "Encrypted", "Error"
        ]  # fmt: skip
        rows = [
            [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())
        ]
        names = [row[0] for row in rows]
        assert names == [
            "mimir-beta-newest.tar.gz.age",
            "mimir-alpha-middle.tar.gz",
            "mimir-alpha-oldest.tar.gz",
            "mimir-broken.tar.gz",  # no manifest, so no time: last
        ]
        newest = rows[0]
        assert newest[2:3] == ["beta"] and newest[4:7] == ["30", "99,000", "yes"]
        assert newest[1].startswith("2026-11-30") or newest[1].startswith("2026-11-29")
        assert newest[7] == ""
        assert rows[1][4] == "20" and rows[1][6] == "no"
        assert rows[3][7] and rows[3][2] == "" and rows[3][3].endswith("B")
        assert dialog.restore_button.isEnabled()  # the newest is selected
        table.selectRow(3)
        assert not dialog.restore_button.isEnabled()  # no manifest: nothing to restore

        # Restore… on a row opens the restore dialog on that archive.
        table.selectRow(1)
        QTest.mouseClick(dialog.restore_button, Qt.MouseButton.LeftButton)
        restore: RestoreDialog = await until(
            lambda: panel.dialog if isinstance(panel.dialog, RestoreDialog) else None,
            10,
            "the restore dialog",
        )
        assert restore.archive_edit.text() == str(folder / "mimir-alpha-middle.tar.gz")
        await until(lambda: restore.info is not None, 10, "its manifest")
        assert ">20<" in restore.summary_label.text()
        restore.reject()
        await until(lambda: panel.dialog is None and not panel.busy, 5, "back to the panel")
        assert all(button.isEnabled() for button in backup_buttons(panel)[1:])

    console.run(scenario)


def test_restore_of_a_damaged_archive_names_the_part_and_frees_the_buttons(
    console: Console, tmp_path: Path
) -> None:
    window = console.window
    panel = window.cluster
    archive = make_archive(
        tmp_path, "mimir-alpha-damaged.tar.gz", "2026-11-30T08:00:00Z", db_bytes=400_000
    )
    # Random bytes do not compress: the middle of the archive is the run store's data.
    flip_byte(archive, archive.stat().st_size // 2)
    seen: list[tuple[bool, list[bool], int]] = []

    def record(_step: str, _message: str) -> None:
        buttons = [*backup_buttons(panel), panel.start_button, panel.profile_combo]
        seen.append((panel.busy, [b.isEnabled() for b in buttons], panel.progress.maximum()))

    async def scenario() -> None:
        window.show_panel("cluster")
        await until(lambda: panel.restore_button.isEnabled(), 10, "Restore… offered")
        panel.progress_reported.connect(record)
        dialog: RestoreDialog = await open_dialog(panel, panel.restore_button, RestoreDialog)
        dialog.archive_edit.setText(str(archive))
        dialog.load(archive)
        await until(lambda: dialog.ok_button.isEnabled(), 10, "the archive read")
        assert "alpha" in dialog.summary_label.text()  # its manifest is intact
        QTest.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(panel, "Restore")
        await until(lambda: panel.busy, 10, "the restore to begin")
        await until(lambda: not panel.busy, 60, "the restore to end")

        text = panel.banner.text()
        assert panel.banner.objectName() == "BannerError", text
        assert text.startswith("Restore mimir-alpha-damaged.tar.gz failed: refused"), text
        assert "nothing was changed" in text
        assert re.search(r"\bpart runstore/mimir\.db\b", text), text
        # While it ran every action was off; the verify step drove a determinate bar.
        assert seen and all(busy for busy, _enabled, _maximum in seen), seen
        assert all(not any(enabled) for _busy, enabled, _maximum in seen), seen
        assert any(maximum == 100 for _busy, _enabled, maximum in seen), seen
        # Now they are back (Back up… stays off: the cluster does not run).
        assert panel.restore_button.isEnabled() and panel.backups_button.isEnabled()
        assert panel.start_button.isEnabled() and not panel.backup_button.isEnabled()
        assert not panel.progress.isVisible()
        status = window.session.last_cluster_status
        assert status is not None and not status.running  # the refusal started nothing

    console.run(scenario)


# ---------------------------------------------------------------- a real cluster


def test_backup_of_a_running_cluster_then_restore_over_it(console: Console) -> None:
    window = console.window
    panel = window.cluster
    folder = default_backup_dir(console.backend)
    maxima: list[int] = []

    async def scenario() -> None:
        await console.start_cluster(workers=1)
        assert panel.backup_button.isEnabled()
        panel.progress_reported.connect(lambda _s, _m: maxima.append(panel.progress.maximum()))
        dialog: BackupDialog = await open_dialog(panel, panel.backup_button, BackupDialog)
        assert dialog.directory() == folder
        QTest.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.busy, 10, "the backup to begin")
        assert not any(button.isEnabled() for button in backup_buttons(panel))
        await until(lambda: not panel.busy, 120, "the backup to end")
        assert panel.banner.objectName() == "BannerOk", panel.banner.text()
        assert panel.banner.text().startswith(f"Backed up to {folder}"), panel.banner.text()
        result = panel.last_backup
        assert result is not None and result.path.is_file() and result.path.parent == folder
        assert not result.manifest.encrypted
        assert panel.backup_button.isEnabled()  # still running

        # Restoring over a cluster that holds data, without saying so, is refused.
        restore: RestoreDialog = await open_dialog(panel, panel.restore_button, RestoreDialog)
        restore.load(result.path)
        await until(lambda: restore.ok_button.isEnabled(), 10, "its manifest read")
        QTest.mouseClick(restore.ok_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(panel, "Restore")
        await until(
            lambda: not panel.busy and panel.banner.objectName() == "BannerError",
            60,
            lambda: f"the refusal (banner: {panel.banner.text()!r})",
        )
        text = panel.banner.text()
        assert "refused, nothing was changed" in text, text
        assert "tick 'Replace the data this cluster holds' to replace it" in text, text
        assert window.session.last_cluster_status.running

        # The list shows it; Restore… there, replacing what the cluster holds.
        backups: BackupsDialog = await open_dialog(panel, panel.backups_button, BackupsDialog)
        await until(lambda: not backups.loading, 10, "the archives listed")
        assert backups.table.item(0, 0).text() == result.path.name
        QTest.mouseClick(backups.restore_button, Qt.MouseButton.LeftButton)
        restore = await until(
            lambda: panel.dialog if isinstance(panel.dialog, RestoreDialog) else None,
            10,
            "the restore dialog",
        )
        await until(lambda: restore.ok_button.isEnabled(), 10, "its manifest read")
        QTest.mouseClick(restore.force_box, Qt.MouseButton.LeftButton)
        restore.workers_spin.setValue(1)
        maxima.clear()
        QTest.mouseClick(restore.ok_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(panel, "Replace data")
        await until(lambda: panel.busy, 10, "the restore to begin")
        await until(lambda: not panel.busy, 180, "the restore to end")
        assert panel.banner.objectName() == "BannerOk", panel.banner.text()
        assert panel.banner.text().startswith(f"Restored {result.path.name}"), panel.banner.text()
        assert 100 in maxima  # the verify step's percentages
        status = window.session.last_cluster_status
        assert status is not None and status.running
        # What the cluster held was backed up first, and the banner says where.
        [replaced] = [p for p in folder.iterdir() if p.name.startswith("pre-restore-")]
        assert f"What was replaced is in {replaced}." in panel.banner.text()
        assert "queued again" in panel.banner.text()

    console.run(scenario)
