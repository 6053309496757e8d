"""Asking before a destructive action (cancel, delete, stop, clean), without a nested loop.

``QMessageBox.exec()`` would run a second event loop inside a coroutine of the qasync
loop, where other tasks cannot run. :func:`confirm` opens the box window-modal and
awaits its answer instead, so the console stays live while the question is open.
:func:`confirm_delete` asks, deletes and says how it went.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from mimir.app.services.api import ApiError
from mimir.app.ui.common import Banner

__all__ = ["CONFIRM_OBJECT_NAME", "confirm", "confirm_delete"]

#: The box's object name, by which tests (and accessibility tools) find it.
CONFIRM_OBJECT_NAME = "Confirm"


async def confirm(
    parent: QWidget, title: str, text: str, action: str, detail: str = "", keep: str = "Cancel"
) -> bool:
    """Ask ``text``; True when the operator chose ``action``. The other button, ``keep``,
    is the default (Enter and Escape choose it)."""
    box = QMessageBox(parent)
    box.setObjectName(CONFIRM_OBJECT_NAME)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(text)
    if detail:
        box.setInformativeText(detail)
    accept = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
    cancel = box.addButton(keep, QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finished(_result: int) -> None:
        if not answer.done():
            answer.set_result(box.clickedButton() is accept)

    box.finished.connect(finished)
    box.open()
    try:
        return await answer
    finally:
        box.hide()
        box.deleteLater()


async def confirm_delete(
    parent: QWidget,
    banner: Banner,
    delete: Callable[[], Awaitable[object]],
    *,
    title: str,
    question: str,
    detail: str,
    name: object,
    done: str,
) -> bool:
    """Ask ``question`` (a Delete button); when the operator agrees, await ``delete()`` and
    show ``done`` in ``banner``, or "Cannot delete {name}: …" when the server refused.
    True when deleted."""
    if not await confirm(parent, title, question, "Delete", detail):
        return False
    try:
        await delete()
    except ApiError as exc:
        banner.error(f"Cannot delete {name}: {exc}")
        return False
    banner.ok(done)
    return True
