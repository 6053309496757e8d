"""Jobs panel: a live model/view table of jobs (sortable, filtered), a details pane that
follows the selected job, cancel and retry; and the dead letter with bulk retry and delete.

The table's model is a view of a Qt-free :class:`~mimir.app.services.jobs.JobStore`: it
only announces what the store says changed, and the store only moves a job forward.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import (
    COLUMNS,
    DEAD_LETTER,
    ENQUEUED_COLUMN,
    FINAL_STATUSES,
    JobStore,
    count_text,
    describe_job,
    job_matches,
)
from mimir.app.services.loglines import trace_link
from mimir.app.ui.common import LINK_COLOR, STATUS_COLORS, Banner, panel_header, setup_table
from mimir.app.ui.confirm import confirm
from mimir.app.ui.dead_letter_view import QtDeadLetterView
from mimir.app.ui.session import ConsoleSession

__all__ = ["JobFilterProxy", "JobTableModel", "QtJobsPanel"]

logger = logging.getLogger(__name__)

STATUSES = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "dead"]
_STATUS_COLUMN = 1
_WORKER_COLUMN = next(i for i, column in enumerate(COLUMNS) if column.title == "Worker")
Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_FOREGROUND = Qt.ItemDataRole.ForegroundRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_USER = Qt.ItemDataRole.UserRole
#: A listing with more new jobs than this resets the model instead of inserting each.
_RESET_OVER = 50


class JobTableModel(QAbstractTableModel):
    """A :class:`JobStore` in its order (by default ``Enqueued``, newest first)."""

    #: a job's row changed, appeared or went away (its id)
    job_changed = Signal(str)

    def __init__(self, store: JobStore | None = None) -> None:
        super().__init__()
        self.store = store or JobStore()
        self._texts: dict[Any, tuple[str, ...]] = {}
        #: Worker id → the name the other views show (``worker-1``); ids not in it as is.
        self.worker_names: dict[str, str] = {}

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.store)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section].title
        return None

    def record(self, row: int) -> dict[str, Any]:
        return self.store.record(row)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # Called for every visible cell and role on each repaint: answer from a cache of
        # each row's texts, computed once per change of the row.
        if role == _DISPLAY:
            job = self.record(index.row())
            job_id = job.get("job_id")
            texts = self._texts.get(job_id)
            if texts is None:
                texts = self._texts[job_id] = self._row_texts(job)
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

    def _row_texts(self, job: dict[str, Any]) -> tuple[str, ...]:
        texts = [column.text(job) for column in COLUMNS]
        worker = texts[_WORKER_COLUMN]
        texts[_WORKER_COLUMN] = self.worker_names.get(worker, worker)
        return tuple(texts)

    def set_worker_names(self, names: dict[str, str]) -> None:
        """Show workers by these names (the Workers panel's); repaints the column."""
        if names == self.worker_names:
            return
        self.worker_names = dict(names)
        self._texts.clear()
        if len(self.store):
            self.dataChanged.emit(
                self.index(0, _WORKER_COLUMN),
                self.index(len(self.store) - 1, _WORKER_COLUMN),
                [_DISPLAY],
            )

    # ---------------------------------------------------------------- changes

    def upsert(self, record: dict[str, Any]) -> bool:
        """Merge one record or event; False when it was older than what is shown."""
        change = self.store.prepare(record)
        if change is None:
            return False
        self._texts.pop(change.job_id, None)
        last = len(COLUMNS) - 1
        if change.kind == "insert":
            assert change.to_row is not None
            self.beginInsertRows(QModelIndex(), change.to_row, change.to_row)
            self.store.commit(change)
            self.endInsertRows()
        elif change.kind == "remove":
            assert change.row is not None
            self.beginRemoveRows(QModelIndex(), change.row, change.row)
            self.store.commit(change)
            self.endRemoveRows()
        elif change.kind == "move":
            assert change.row is not None and change.to_row is not None
            # Qt counts the destination before the move: one past the target when down.
            target = change.to_row + 1 if change.to_row > change.row else change.to_row
            self.beginMoveRows(QModelIndex(), change.row, change.row, QModelIndex(), target)
            self.store.commit(change)
            self.endMoveRows()
            self.dataChanged.emit(self.index(change.to_row, 0), self.index(change.to_row, last))
        else:
            self.store.commit(change)
            assert change.row is not None
            self.dataChanged.emit(self.index(change.row, 0), self.index(change.row, last))
        if self.store.over_limit():
            self.beginResetModel()
            for job_id in self.store.trim():
                self._texts.pop(job_id, None)
            self.endResetModel()
        self.job_changed.emit(change.job_id)
        return True

    def upsert_many(self, records: list[dict[str, Any]]) -> None:
        """Merge a listing; many new jobs at once reset the model (cheaper than inserts)."""
        new = sum(1 for r in records if self.store.get(str(r.get("job_id"))) is None)
        if new <= _RESET_OVER:
            for record in records:
                self.upsert(record)
            return
        self.beginResetModel()
        changed = []
        for record in records:
            change = self.store.upsert(record)
            if change is not None:
                self._texts.pop(change.job_id, None)
                changed.append(change.job_id)
        if self.store.over_limit():
            for job_id in self.store.trim():
                self._texts.pop(job_id, None)
        self.endResetModel()
        for job_id in changed:
            self.job_changed.emit(job_id)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Order the rows by ``column``; selections and the current row follow their jobs."""
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        ids = [self.store.record(index.row()).get("job_id") for index in old]
        self.store.sort(column, order == Qt.SortOrder.DescendingOrder)
        new = []
        for index, job_id in zip(old, ids, strict=True):
            row = self.store.row_of(str(job_id))
            new.append(QModelIndex() if row is None else self.index(row, index.column()))
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def clear(self) -> None:
        self.beginResetModel()
        self.store.clear()
        self._texts.clear()
        self.endResetModel()


class JobFilterProxy(QSortFilterProxyModel):
    """Filters by status (or the whole dead letter) and text; keeps the model's order."""

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
        job = model.record(source_row)
        worker = str(job.get("worker_id") or "")
        return job_matches(job, self.status, self.text, model.worker_names.get(worker, ""))


class QtJobsPanel(QWidget):
    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        self.session = session
        self.model = JobTableModel()
        self.proxy = JobFilterProxy()
        self.proxy.setSourceModel(self.model)
        self.proxy.setDynamicSortFilter(True)
        self.selected_id: str | None = None
        #: The status the details pane last showed (a change loads the full record).
        self._details_status: str | None = None
        self._build()
        self.model.job_changed.connect(self._on_job_changed)
        self.model.modelReset.connect(self._reselect)
        self.dead_letter.job_changed.connect(self.model.upsert)
        self.dead_letter.total_changed.connect(self._show_dead_total)
        if session is not None:
            session.job.connect(self.model.upsert)
            session.workers.connect(lambda w: self.model.set_worker_names(session.worker_names(w)))
            session.instances_changed.connect(
                lambda _i: self.model.set_worker_names(session.worker_names())
            )
            session.resync.connect(self._resync)
            session.stats.connect(self._on_stats)
            session.profile_changed.connect(lambda _p: self._reset())
            self._timer = QTimer(self)
            self._timer.setInterval(3000)
            self._timer.timeout.connect(self._poll_if_needed)
            self._timer.start()

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Jobs", "Every job on the queue, live"))
        self.tabs = QTabWidget()
        root.addWidget(self.tabs, 1)

        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(8)
        bar = QHBoxLayout()
        self.status_combo = QComboBox()
        self.status_combo.addItem("All statuses", None)
        for status in STATUSES:
            self.status_combo.addItem(status, status)
        self.status_combo.addItem("dead letter (failed + dead)", DEAD_LETTER)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by id, pipeline, worker or error…")
        self.search.setClearButtonEnabled(True)
        self.status_combo.currentIndexChanged.connect(self._apply_filter)
        self.search.textChanged.connect(self._apply_filter)
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.cancel_button = QPushButton("Cancel job…")
        self.cancel_button.setObjectName("Danger")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Put the selected failed or dead job back on the queue")
        self.retry_button.clicked.connect(self.retry_selected)
        bar.addWidget(self.status_combo)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.count_label)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.retry_button)
        layout.addLayout(bar)
        self.banner = Banner()
        layout.addWidget(self.banner)

        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        setup_table(self.table)
        # Fixed row heights: no per-row size hints to compute as rows pour in.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header = self.table.horizontalHeader()
        # The model sorts (the proxy would re-sort every change in Python): a click on a
        # header orders the store, which then places each new or changed job itself.
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(ENQUEUED_COLUMN, Qt.SortOrder.DescendingOrder)
        header.sortIndicatorChanged.connect(self.model.sort)
        for column, width in enumerate([128, 96, 150, 84, 100, 190, 124, 84, 84]):
            self.table.setColumnWidth(column, width)
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        split.addWidget(self.table)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setObjectName("Code")
        font = QFont("DejaVu Sans Mono")
        font.setPointSize(9)
        self.details.setFont(font)
        self.details.setPlaceholderText("Select a job to see its state, times, error and result.")
        split.addWidget(self.details)
        split.setSizes([520, 220])
        layout.addWidget(split, 1)
        # The selected job's trace in the trace viewer (MIMIR_TRACE_URL), when it has one.
        self.trace_label = QLabel("")
        self.trace_label.setObjectName("Hint")
        self.trace_label.setTextFormat(Qt.TextFormat.RichText)
        self.trace_label.setOpenExternalLinks(True)
        self.trace_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.trace_label.hide()
        layout.addWidget(self.trace_label)
        self.tabs.addTab(page, "Jobs")

        self.dead_letter = QtDeadLetterView(self.session)
        self.tabs.addTab(self.dead_letter, "Dead letter")
        self.tabs.currentChanged.connect(self._on_tab)
        # The count label is refreshed at most 4 times a second: a label change relayouts
        # the toolbar, too costly to do for each of 100 updates a second.
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(250)
        self._count_timer.timeout.connect(self._update_count)
        self.proxy.rowsInserted.connect(lambda *_: self._count_timer.start())
        self.proxy.rowsRemoved.connect(lambda *_: self._count_timer.start())
        self.proxy.modelReset.connect(lambda *_: self._count_timer.start())
        self._update_actions()

    # ---------------------------------------------------------------- filter and counts

    def _apply_filter(self) -> None:
        self.proxy.set_filter(self.status_combo.currentData(), self.search.text())
        self._update_count()

    def _update_count(self) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        self.count_label.setText(
            count_text(total, "job") if shown == total else f"{shown} of {count_text(total, 'job')}"
        )

    def _show_dead_total(self, total: int) -> None:
        self.tabs.setTabText(1, f"Dead letter ({total})" if total else "Dead letter")

    def _on_stats(self, stats: dict[str, Any]) -> None:
        dead = int(stats.get("dead") or 0)
        self._show_dead_total(dead)
        if dead != self.dead_letter.total and self.dead_letter.isVisible():
            self.dead_letter.refresh()

    def _on_tab(self, index: int) -> None:
        if index == 1:
            self.dead_letter.refresh()

    def _reset(self) -> None:
        self.model.clear()
        self.refresh()

    # ---------------------------------------------------------------- data

    @asyncSlot()
    async def refresh(self) -> None:
        if self.session is None:
            return
        try:
            page = await self.session.api.list_jobs(limit=1000)
        except ApiError as exc:
            self.banner.error(f"Cannot list jobs: {exc}", source="list")
            return
        self.banner.clear_message(source="list")
        self.model.upsert_many(page.get("jobs", []))
        self._update_count()

    def _resync(self) -> None:
        # The event stream (re)connected: what changed while it was away comes by listing.
        self.refresh()
        if self.dead_letter.isVisible():
            self.dead_letter.refresh()

    @asyncSlot()
    async def _poll_if_needed(self) -> None:
        # Live events keep the table current; without them, poll while the panel shows.
        if self.session is None or not self.isVisible():
            return
        if self.session.feed.mode != "events":
            await self.refresh()

    # ---------------------------------------------------------------- selection and details

    def _selected(self) -> dict[str, Any] | None:
        if self.selected_id is None:
            return None
        return self.model.store.get(self.selected_id)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        job = self.proxy.data(current, Qt.ItemDataRole.UserRole) if current.isValid() else None
        self.selected_id = job.get("job_id") if job else None
        self._update_actions()
        if job:
            self._show_details(job)
            self._load_details(job["job_id"])
        else:
            self._details_status = None
            self.details.setPlainText("")
            self._show_trace(None)

    def _reselect(self) -> None:
        """After a reset (a big listing), select the job that was selected."""
        if self.selected_id is None:
            return
        row = self.model.store.row_of(self.selected_id)
        if row is None:
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if index.isValid():
            self.table.selectRow(index.row())

    def _on_job_changed(self, job_id: str) -> None:
        if job_id != self.selected_id:
            return
        job = self.model.store.get(job_id)
        if job is None:
            self.details.setPlainText(f"Job {job_id} was deleted.")
            self._details_status = None
            self._update_actions()
            return
        moved_on = job.get("status") != self._details_status
        self._show_details(job)
        self._update_actions()
        if moved_on:  # events carry no result: read the whole record once per state
            self._load_details(job_id)

    @asyncSlot(str)
    async def _load_details(self, job_id: str) -> None:
        if self.session is None:
            return
        try:
            job = await self.session.api.get_job(job_id)
        except ApiError as exc:
            if job_id == self.selected_id:
                self.details.setPlainText(f"{job_id}: {exc}")
            return
        if job_id == self.selected_id:
            self.model.upsert(job)  # only if newer; the pane follows through the model
            current = self.model.store.get(job_id)
            if current is not None:
                self._show_details(current)

    def _show_details(self, job: dict[str, Any]) -> None:
        self._details_status = job.get("status")
        worker = str(job.get("worker_id") or "")
        text = describe_job(job, self.model.worker_names.get(worker, ""))
        if self.details.toPlainText() != text:
            bar = self.details.verticalScrollBar()
            position = bar.value()
            self.details.setPlainText(text)
            bar.setValue(position)
        self._show_trace(job.get("trace_id"))

    def _show_trace(self, trace_id: object) -> None:
        """The link to the job's trace (``MIMIR_TRACE_URL``); hidden without one."""
        url = trace_link(str(trace_id)) if trace_id else None
        if url is None:
            self.trace_label.hide()
            self.trace_label.setText("")
            return
        shown = html.escape(str(trace_id))
        self.trace_label.setText(
            f'Trace <a href="{html.escape(url)}" style="color:{LINK_COLOR.name()};">{shown}</a>'
        )
        self.trace_label.setToolTip(url)
        self.trace_label.show()

    def _update_actions(self) -> None:
        job = self._selected()
        status = (job or {}).get("status")
        self.cancel_button.setEnabled(job is not None and status not in FINAL_STATUSES)
        self.retry_button.setEnabled(status in ("failed", "dead"))

    # ---------------------------------------------------------------- actions

    @asyncSlot()
    async def cancel_selected(self) -> None:
        job = self._selected()
        if job is None or self.session is None:
            self.banner.info("Select a job to cancel.")
            return
        job_id = str(job["job_id"])
        self.cancel_button.setEnabled(False)
        try:
            sure = await confirm(
                self,
                "Cancel job",
                f"Cancel job {job_id[:12]} ({job.get('pipeline') or job.get('type')}, "
                f"{job.get('status')})?",
                "Cancel job",
                "A waiting job ends now; a running one is stopped by its worker.",
                keep="Keep it",
            )
            if not sure:
                return
            record = await self.session.api.cancel_job(job_id)
        except ApiError as exc:
            self.banner.error(f"Cannot cancel {job_id}: {exc}")
            return
        finally:
            self._update_actions()
        self.model.upsert(record)
        self.banner.ok(f"Cancel requested for {job_id} ({record.get('status')}).")

    @asyncSlot()
    async def retry_selected(self) -> None:
        job = self._selected()
        if job is None or self.session is None:
            self.banner.info("Select a failed or dead job to retry it.")
            return
        job_id = str(job["job_id"])
        self.retry_button.setEnabled(False)
        try:
            record = await self.session.api.retry_dead(job_id)
        except ApiError as exc:
            self.banner.error(f"Cannot retry {job_id}: {exc}")
            return
        finally:
            self._update_actions()
        self.model.upsert(record)
        self.banner.ok(f"{job_id} is back on the queue ({record.get('status')}).")
