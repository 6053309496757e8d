"""Jobs panel: a live model/view table of jobs, filters, a details pane, cancel and retry."""

from __future__ import annotations

import json
import logging
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import COLUMNS, JobStore, job_matches
from mimir.app.ui.common import STATUS_COLORS, Banner, panel_header
from mimir.app.ui.context import ConsoleContext

__all__ = ["JobFilterProxy", "JobTableModel", "QtJobsPanel"]

logger = logging.getLogger(__name__)

STATUSES = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "dead"]
_STATUS_COLUMN = 1
Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_FOREGROUND = Qt.ItemDataRole.ForegroundRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_USER = Qt.ItemDataRole.UserRole


class JobTableModel(QAbstractTableModel):
    """A :class:`JobStore` shown newest first (row 0 = the last record added)."""

    def __init__(self, store: JobStore | None = None) -> None:
        super().__init__()
        self.store = store or JobStore()
        self._texts: dict[Any, tuple[str, ...]] = {}

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.store)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section].title
        return None

    def record(self, row: int) -> dict[str, Any]:
        return self.store.rows[len(self.store) - 1 - row]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # Called for every visible cell and role on each repaint: answer from a cache of
        # each row's texts, computed once per change of the row.
        if role == _DISPLAY:
            job = self.record(index.row())
            job_id = job.get("job_id")
            texts = self._texts.get(job_id)
            if texts is None:
                texts = self._texts[job_id] = tuple(column.text(job) for column in COLUMNS)
            return texts[index.column()]
        if role == _FOREGROUND:
            if index.column() != _STATUS_COLUMN:
                return None
            return STATUS_COLORS.get(str(self.record(index.row()).get("status")))
        if role == _TOOLTIP:
            job = self.record(index.row())
            return job.get("error") or job.get("job_id")
        if role == _USER:
            return self.record(index.row())
        return None

    def upsert(self, record: dict[str, Any]) -> None:
        self._texts.pop(record.get("job_id"), None)
        position, inserted = self.store.upsert(record)
        if inserted:
            # The newest record is row 0 of the view.
            self.beginInsertRows(QModelIndex(), 0, 0)
            self.endInsertRows()
        else:
            row = len(self.store) - 1 - position
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
        extra = self.store.over_limit()
        if extra:
            size = len(self.store)
            self.beginRemoveRows(QModelIndex(), size - extra, size - 1)
            for job in self.store.rows[:extra]:
                self._texts.pop(job.get("job_id"), None)
            self.store.drop_oldest(extra)
            self.endRemoveRows()

    def upsert_many(self, records: list[dict[str, Any]]) -> None:
        """Merge a listing (oldest first so the order stays newest-first on screen)."""
        new = [r for r in records if self.store.get(str(r.get("job_id"))) is None]
        if len(new) > 50:
            self.beginResetModel()
            self._texts.clear()
            for record in records:
                self.store.upsert(record)
            self.store.drop_oldest(self.store.over_limit())
            self.endResetModel()
            return
        for record in records:
            self.upsert(record)

    def clear(self) -> None:
        self.beginResetModel()
        self.store.clear()
        self._texts.clear()
        self.endResetModel()


class JobFilterProxy(QSortFilterProxyModel):
    def __init__(self) -> None:
        super().__init__()
        self.status: str | None = None
        self.text = ""

    def set_filter(self, status: str | None, text: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter is deprecated
            self.beginFilterChange()
            self.status, self.text = status, text.strip()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.status, self.text = status, text.strip()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        if not self.status and not self.text:
            return True
        model = self.sourceModel()
        assert isinstance(model, JobTableModel)
        return job_matches(model.record(source_row), self.status, self.text)


class QtJobsPanel(QWidget):
    def __init__(self, context: ConsoleContext | None) -> None:
        super().__init__()
        self.context = context
        self.model = JobTableModel()
        self.proxy = JobFilterProxy()
        self.proxy.setSourceModel(self.model)
        self.proxy.setDynamicSortFilter(True)
        self.selected_id: str | None = None
        self._build()
        if context is not None:
            context.job.connect(self.model.upsert)
            context.profile_changed.connect(lambda _p: self._reset())
            self._timer = QTimer(self)
            self._timer.setInterval(3000)
            self._timer.timeout.connect(self._poll_if_needed)
            self._timer.start()

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Jobs", "Every job on the queue, live"))
        self.banner = Banner()
        root.addWidget(self.banner)
        bar = QHBoxLayout()
        self.status_combo = QComboBox()
        self.status_combo.addItem("All statuses", None)
        for status in STATUSES:
            self.status_combo.addItem(status, status)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by id, pipeline, worker or error…")
        self.search.setClearButtonEnabled(True)
        self.status_combo.currentIndexChanged.connect(self._apply_filter)
        self.search.textChanged.connect(self._apply_filter)
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.cancel_button = QPushButton("Cancel job")
        self.cancel_button.setObjectName("Danger")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.retry_button = QPushButton("Retry dead letter")
        self.retry_button.clicked.connect(self.retry_selected)
        bar.addWidget(self.status_combo)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.count_label)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.retry_button)
        root.addLayout(bar)

        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(26)
        # Fixed row heights: no per-row size hints to compute as rows pour in.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate([128, 96, 150, 78, 84, 200, 92, 84, 84]):
            self.table.setColumnWidth(column, width)
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        split.addWidget(self.table)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setObjectName("Code")
        font = QFont("DejaVu Sans Mono")
        font.setPointSize(9)
        self.details.setFont(font)
        self.details.setPlaceholderText("Select a job to see its context, result, error and steps.")
        split.addWidget(self.details)
        split.setSizes([520, 220])
        root.addWidget(split, 1)
        # The count label is refreshed at most 4 times a second: a label change relayouts
        # the toolbar, too costly to do for each of 100 updates a second.
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(250)
        self._count_timer.timeout.connect(self._update_count)
        self.proxy.rowsInserted.connect(lambda *_: self._count_timer.start())
        self.proxy.rowsRemoved.connect(lambda *_: self._count_timer.start())
        self.proxy.modelReset.connect(lambda *_: self._count_timer.start())

    # ---------------------------------------------------------------- filter and counts

    def _apply_filter(self) -> None:
        self.proxy.set_filter(self.status_combo.currentData(), self.search.text())
        self._update_count()

    def _update_count(self) -> None:
        self.count_label.setText(f"{self.proxy.rowCount()} of {self.model.rowCount()} jobs")

    def _reset(self) -> None:
        self.model.clear()
        self.refresh()

    # ---------------------------------------------------------------- data

    @asyncSlot()
    async def refresh(self) -> None:
        if self.context is None:
            return
        try:
            page = await self.context.api.list_jobs(limit=1000)
        except ApiError as exc:
            self.banner.error(f"Cannot list jobs: {exc}")
            return
        self.banner.clear_message()
        self.model.upsert_many(list(reversed(page.get("jobs", []))))
        self._update_count()

    @asyncSlot()
    async def _poll_if_needed(self) -> None:
        # Live events keep the table current; without them, poll while the panel shows.
        if self.context is None or not self.isVisible():
            return
        if self.context.feed.mode != "events":
            await self.refresh()

    def _selected(self) -> dict[str, Any] | None:
        index = self.table.currentIndex()
        if not index.isValid():
            return None
        return self.proxy.data(index, Qt.ItemDataRole.UserRole)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        job = self.proxy.data(current, Qt.ItemDataRole.UserRole) if current.isValid() else None
        self.selected_id = job.get("job_id") if job else None
        if job:
            self._show_details(job)
            self._load_details(job["job_id"])

    @asyncSlot(str)
    async def _load_details(self, job_id: str) -> None:
        if self.context is None:
            return
        try:
            job = await self.context.api.get_job(job_id)
        except ApiError as exc:
            self.details.setPlainText(f"{job_id}: {exc}")
            return
        if job_id == self.selected_id:
            self.model.upsert(job)
            self._show_details(job)

    def _show_details(self, job: dict[str, Any]) -> None:
        shown = {k: job.get(k) for k in job if k not in ("result",)}
        text = f"Error: {job['error']}\n\n" if job.get("error") else ""
        text += json.dumps(shown, indent=2, default=str)
        if job.get("result") is not None:
            text += "\n\nresult:\n" + json.dumps(job["result"], indent=2, default=str)[:20000]
        self.details.setPlainText(text)

    @asyncSlot()
    async def cancel_selected(self) -> None:
        job = self._selected()
        if job is None or self.context is None:
            self.banner.info("Select a job to cancel.")
            return
        try:
            record = await self.context.api.cancel_job(job["job_id"])
        except ApiError as exc:
            self.banner.error(f"Cannot cancel {job['job_id']}: {exc}")
            return
        self.model.upsert(record)
        self.banner.ok(f"Cancel requested for {job['job_id']} ({record.get('status')}).")

    @asyncSlot()
    async def retry_selected(self) -> None:
        job = self._selected()
        if job is None or self.context is None:
            self.banner.info("Select a dead job to retry it.")
            return
        try:
            record = await self.context.api.retry_dead(job["job_id"])
        except ApiError as exc:
            self.banner.error(f"Cannot retry {job['job_id']}: {exc}")
            return
        self.model.upsert(record)
        self.banner.ok(f"{job['job_id']} is back on the queue ({record.get('status')}).")
