"""The console's shared widgets and helpers, on real Qt widgets (offscreen)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QDialog, QFileDialog, QLineEdit, QWidget

from mimir.app.ui.common import ask_path
from tests.app.test_console_panels import until


def _dialog(parent: QWidget, start: Path) -> QFileDialog:
    dialog = QFileDialog(parent, "Pick", str(start))
    dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    return dialog


def test_ask_path_answers_the_chosen_file_or_none_and_deletes_the_dialog(
    qapp: Any, loop: Any, tmp_path: Path
) -> None:
    chosen = tmp_path / "ca.pem"
    chosen.write_text("x")
    parent = QWidget()
    parent.show()

    async def scenario() -> None:
        dialog = _dialog(parent, tmp_path)
        asked = loop.create_task(ask_path(dialog))
        await until(dialog.isVisible, 5, "the dialog to open")
        assert not asked.done()  # awaited, not answered by a nested loop
        # What the operator types in the file name field (the widget dialog's own).
        name_edit = dialog.findChild(QLineEdit, "fileNameEdit")
        name_edit.setText(chosen.name)
        await until(lambda: dialog.selectedFiles() == [str(chosen)], 5, dialog.selectedFiles)
        dialog.done(QDialog.DialogCode.Accepted)
        assert await asked == chosen

        dialog = _dialog(parent, tmp_path)
        asked = loop.create_task(ask_path(dialog))
        await until(dialog.isVisible, 5, "the dialog to open again")
        dialog.done(QDialog.DialogCode.Rejected)
        assert await asked is None

    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        parent.close()
        parent.deleteLater()
