"""Small widgets every panel uses: the error/info banner, titles, KPI cards, styling, the
look of list tables and the editor dialog's Save/Cancel footer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QDir, Qt, QTimer, Signal, SignalInstance
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QHeaderView,
    QLabel,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

__all__ = [
    "DIM_COLOR",
    "LEVEL_COLORS",
    "LINK_COLOR",
    "STATUS_COLORS",
    "Banner",
    "Card",
    "SaveDialog",
    "ask_path",
    "data_table",
    "load_stylesheet",
    "panel_header",
    "refresh_while_visible",
    "run_dialog",
    "selected_record",
    "set_row",
    "setup_table",
    "table_item",
]

logger = logging.getLogger(__name__)


async def run_dialog(dialog: QDialog) -> bool:
    """Open ``dialog`` window-modal and await its answer (no nested event loop); True
    when accepted. The caller reads the dialog's choice, then deletes it."""
    dialog.setWindowModality(Qt.WindowModality.WindowModal)
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finished(result: int) -> None:
        if not answer.done():
            answer.set_result(result == QDialog.DialogCode.Accepted.value)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await answer
    finally:
        dialog.hide()


async def ask_path(dialog: QFileDialog) -> Path | None:
    """Open ``dialog`` (configured by the caller) window-modal and await the chosen path,
    or None when cancelled: no nested event loop, unlike ``exec()``. The dialog is
    deleted afterwards."""
    dialog.setWindowModality(Qt.WindowModality.WindowModal)
    answer: asyncio.Future[Path | None] = asyncio.get_running_loop().create_future()

    def finished(result: int) -> None:
        files = dialog.selectedFiles()
        if not answer.done():
            answer.set_result(Path(files[0]) if result and files else None)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await answer
    finally:
        dialog.deleteLater()


#: Colour of each job/service state, shared by tables and plots.
STATUS_COLORS: dict[str, QColor] = {
    "queued": QColor("#9AA3B2"),
    "scheduled": QColor("#B39DDB"),
    "running": QColor("#4C9AFF"),
    "succeeded": QColor("#4CC38A"),
    "failed": QColor("#FF6B6B"),
    "cancelled": QColor("#C9A227"),
    "dead": QColor("#FF4D8D"),
    "healthy": QColor("#4CC38A"),
    "unhealthy": QColor("#FF6B6B"),
    "starting": QColor("#E0B341"),
    "stopped": QColor("#8A93A3"),
    "missing": QColor("#6C7586"),
    "stale": QColor("#E0B341"),
}


#: Colour of each log level (the Logs panel's JSON lines), from the same palette.
LEVEL_COLORS: dict[str, QColor] = {
    "DEBUG": QColor("#8A93A3"),
    "INFO": QColor("#4CC38A"),
    "WARNING": QColor("#E0B341"),
    "ERROR": QColor("#FF6B6B"),
    "CRITICAL": QColor("#FF4D8D"),
}
#: Links drawn in text views (a job id in a log line).
LINK_COLOR = QColor("#4C9AFF")
#: Secondary text in text views (a log line's time, logger and context).
DIM_COLOR = QColor("#8A93A3")


def load_stylesheet() -> str:
    """The console's stylesheet, shipped as package data (``mimir.resources``)."""
    from mimir.core.resources import ResourceError, stylesheet

    try:
        path = stylesheet()
        QDir.addSearchPath("styles", str(path.parent))  # url(styles:arrow-up.png) …
        return path.read_text(encoding="utf-8")
    except (ResourceError, OSError) as exc:
        logger.warning("stylesheet not found: %s", exc)
        return ""


class Banner(QLabel):
    """An inline message: errors stay visible in the panel, not only in a log.

    A message may name its ``source`` (``"list"``, ``"query"`` …): when that source later
    succeeds, ``clear_message(source=…)`` takes its message away and leaves others. Panels
    place the banner below their toolbar, so showing it never moves a button away from
    under the pointer.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setMinimumHeight(36)
        self.setMargin(8)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.source = ""
        self.hide()

    def _show(self, kind: str, text: str, source: str) -> None:
        self.source = source
        self.setObjectName(kind)
        self.setStyleSheet("")  # re-polish with the new object name
        self.style().unpolish(self)
        self.style().polish(self)
        self.setText(text)
        self.show()

    def error(self, text: str, source: str = "") -> None:
        self._show("BannerError", text, source)

    def info(self, text: str, source: str = "") -> None:
        self._show("BannerInfo", text, source)

    def ok(self, text: str, source: str = "") -> None:
        self._show("BannerOk", text, source)

    def clear_message(self, source: str | None = None) -> None:
        """Hide the message (with ``source``: only a message from that source)."""
        if source is not None and self.source != source:
            return
        self.source = ""
        self.hide()
        self.setText("")


def panel_header(title: str, subtitle: str) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    head = QLabel(title)
    head.setObjectName("PanelTitle")
    sub = QLabel(subtitle)
    sub.setObjectName("PanelSubtitle")
    layout.addWidget(head)
    layout.addWidget(sub)
    return box


class Card(QFrame):
    """A KPI tile: a big number over a small caption."""

    def __init__(self, label: str, color: str = "#FFFFFF") -> None:
        super().__init__()
        self.setObjectName("Card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        layout.setSpacing(2)
        self.value = QLabel("—")
        self.value.setObjectName("CardValue")
        self.value.setStyleSheet(f"color: {color};")
        caption = QLabel(label)
        caption.setObjectName("CardLabel")
        layout.addWidget(self.value)
        layout.addWidget(caption)

    def set(self, value: object) -> None:
        self.value.setText(str(value))


# ---------------------------------------------------------------------------- tables


def setup_table(table: QTableView) -> None:
    """The look of the panels' lists: whole rows, one selected at a time, alternating
    colours, no row numbers, rows of 26 px on one line, columns the operator can resize
    (the last one fills the rest)."""
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setAlternatingRowColors(True)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(26)
    table.setWordWrap(False)
    table.horizontalHeader().setStretchLastSection(True)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)


def data_table(columns: list[str], widths: Sequence[int] = ()) -> QTableWidget:
    """A read-only list (:func:`setup_table`) with these column titles; ``widths`` sets the
    first columns' widths in pixels."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    setup_table(table)
    for column, width in enumerate(widths):
        table.setColumnWidth(column, width)
    return table


def table_item(text: str, tooltip: str = "", data: Any = None) -> QTableWidgetItem:
    """A cell the operator cannot edit; ``data`` (when given) is kept in its UserRole."""
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if tooltip:
        item.setToolTip(tooltip)
    if data is not None:
        item.setData(Qt.ItemDataRole.UserRole, data)
    return item


def set_row(table: QTableWidget, row: int, items: Sequence[QTableWidgetItem]) -> None:
    """Put ``items`` in ``row``, one a column from the first."""
    for column, item in enumerate(items):
        table.setItem(row, column, item)


def selected_record(
    table: QTableWidget, records: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """The record shown in ``table``'s selected row (``records`` in the table's order)."""
    rows = table.selectionModel().selectedRows()
    if not rows or rows[0].row() >= len(records):
        return None
    return records[rows[0].row()]


# ---------------------------------------------------------------------------- panels


def refresh_while_visible(
    panel: QWidget, profile_changed: SignalInstance, refresh: Callable[[], object], seconds: int
) -> QTimer:
    """Call ``refresh`` every ``seconds`` and when the profile changes, while ``panel`` is
    shown (a hidden panel refreshes when it is shown again). Answers the running timer."""

    def maybe() -> None:
        if panel.isVisible():
            refresh()

    profile_changed.connect(lambda _p: maybe())
    timer = QTimer(panel)
    timer.setInterval(seconds * 1000)
    timer.timeout.connect(maybe)
    timer.start()
    return timer


class SaveDialog(QDialog):
    """An editor whose panel saves: ``save_requested(body)`` asks the panel to save it; the
    dialog stays open until :meth:`saved`, and shows the server's refusal (:meth:`refused`).
    A subclass builds its form, then calls :meth:`_add_footer`, and implements ``_save``."""

    save_requested = Signal(object)

    error_label: QLabel
    buttons: QDialogButtonBox

    def _add_footer(self, layout: QVBoxLayout) -> None:
        """The refusal's line (hidden until there is one) and Save/Cancel (Save: ``_save``)."""
        self.error_label = QLabel("")
        self.error_label.setObjectName("BannerError")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        layout.addWidget(self.error_label)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self._save)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def _save(self) -> None:
        raise NotImplementedError

    def refused(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()
        self.buttons.setEnabled(True)

    def saved(self) -> None:
        self.buttons.setEnabled(True)
        self.accept()

    def open_modal(self, save: Callable[[dict[str, Any]], object]) -> None:
        """Open window-modal (no nested event loop); ``save(body)`` on each Save; the
        dialog is deleted once closed."""
        self.save_requested.connect(save)
        self.finished.connect(lambda _r: self.deleteLater())
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.open()
