"""The dead letter: jobs that failed on their last attempt or were delivered too often.

Lists ``GET /api/v1/queue/dead-letter`` (the count the Dashboard's "Dead letter" card
shows), and retries or deletes the selected entries, many at once; deleting asks first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import count_text, parse_time
from mimir.app.ui.common import STATUS_COLORS, Banner
from mimir.app.ui.confirm import confirm
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtDeadLetterView"]

logger = logging.getLogger(__name__)

_COLUMNS = ["Job", "Status", "Pipeline", "Attempts", "Ended", "Error"]


def _when(value: Any) -> str:
    moment = parse_time(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


class QtDeadLetterView(QWidget):
    """The dead letter's entries; ``job_changed(record)`` for each record an action changed
    (``{"job_id", "deleted": True}`` for a deleted one), so the jobs table follows."""

    job_changed = Signal(object)
    #: the number of entries, after each listing
    total_changed = Signal(int)

    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        self.session = session
        self.entries: list[dict[str, Any]] = []
        self.total = 0
        self.busy = False
        root = QVBoxLayout(self)
        root.setContentsMargins(10, 10, 10, 10)
        root.setSpacing(8)
        bar = QHBoxLayout()
        self.summary = QLabel("")
        self.summary.setObjectName("Hint")
        self.select_all_button = QPushButton("Select all")
        self.retry_button = QPushButton("Retry selected")
        self.retry_button.clicked.connect(self.retry_selected)
        self.delete_button = QPushButton("Delete selected…")
        self.delete_button.setObjectName("Danger")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bar.addWidget(self.summary, 1)
        for button in (
            self.refresh_button,
            self.select_all_button,
            self.retry_button,
            self.delete_button,
        ):
            bar.addWidget(button)
        root.addLayout(bar)
        self.banner = Banner()
        root.addWidget(self.banner)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate([128, 80, 160, 100, 170]):
            self.table.setColumnWidth(column, width)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.select_all_button.clicked.connect(self.table.selectAll)
        root.addWidget(self.table, 1)
        self._update_buttons()

    # ---------------------------------------------------------------- data

    def selected_ids(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.entries[row]["job_id"] for row in rows if row < len(self.entries)]

    def _update_buttons(self) -> None:
        chosen = bool(self.table.selectionModel().selectedRows())
        for button in (self.retry_button, self.delete_button):
            button.setEnabled(chosen and not self.busy)
        self.select_all_button.setEnabled(bool(self.entries) and not self.busy)
        self.refresh_button.setEnabled(not self.busy)

    @asyncSlot()
    async def refresh(self) -> None:
        if self.session is None:
            return
        try:
            page = await self.session.api.dead_letter(limit=1000)
        except ApiError as exc:
            self.banner.error(f"Cannot read the dead letter: {exc}", source="list")
            return
        self.banner.clear_message(source="list")
        self.show_entries(page.get("entries") or [], int(page.get("total") or 0))

    def show_entries(self, entries: list[dict[str, Any]], total: int) -> None:
        chosen = set(self.selected_ids())
        self.entries = list(entries)
        self.total = total
        self.table.setRowCount(len(entries))
        self.table.clearSelection()
        for row, entry in enumerate(entries):
            job = entry.get("job") or {}
            cells = [
                str(entry.get("job_id", ""))[:12],
                str(entry.get("status", "")),
                str(job.get("pipeline") or job.get("type") or ""),
                str(job.get("attempts", "")),
                _when(entry.get("at")),
                str(entry.get("error") or "").splitlines()[0][:300] if entry.get("error") else "",
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 1 and text in STATUS_COLORS:
                    item.setForeground(STATUS_COLORS[text])
                if column in (0, 5):
                    item.setToolTip(
                        str(entry.get("job_id")) if column == 0 else str(entry.get("error"))
                    )
                self.table.setItem(row, column, item)
        for row, entry in enumerate(entries):
            if entry.get("job_id") in chosen:
                self.table.selectRow(row)
        shown = "" if total <= len(entries) else f" (the newest {len(entries)} shown)"
        self.summary.setText(
            f"{count_text(total, 'job')} in the dead letter{shown}"
            if total
            else "The dead letter is empty."
        )
        self._update_buttons()
        self.total_changed.emit(total)

    # ---------------------------------------------------------------- actions

    async def _each(
        self, verb: str, ids: list[str], action: Callable[[str], Awaitable[Any]]
    ) -> None:
        assert self.session is not None
        self.busy = True
        self._update_buttons()
        done, failures = 0, []
        try:
            for job_id in ids:
                try:
                    answer = await action(job_id)
                except ApiError as exc:
                    failures.append(f"{job_id[:12]}: {exc}")
                    continue
                done += 1
                self.job_changed.emit(answer or {"job_id": job_id, "deleted": True})
        finally:
            self.busy = False
        message = f"{verb} {count_text(done, 'job')}."
        if failures:
            self.banner.error(
                f"{message} {count_text(len(failures), 'job')} failed: " + "; ".join(failures[:5])
            )
        else:
            self.banner.ok(message)
        await self.refresh()

    @asyncSlot()
    async def retry_selected(self) -> None:
        ids = self.selected_ids()
        if not ids or self.session is None or self.busy:
            return
        await self._each("Put back on the queue:", ids, self.session.api.retry_dead)

    @asyncSlot()
    async def delete_selected(self) -> None:
        ids = self.selected_ids()
        if not ids or self.session is None or self.busy:
            return
        self.busy = True
        self._update_buttons()
        try:
            sure = await confirm(
                self,
                "Delete from the dead letter",
                f"Delete {count_text(len(ids), 'job')} from the dead letter?",
                "Delete",
                "Their records, errors and results are removed for good; "
                "they cannot be retried afterwards.",
            )
        finally:
            self.busy = False
            self._update_buttons()
        if sure:
            await self._each("Deleted", ids, self.session.api.delete_dead)
