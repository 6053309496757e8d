"""History panel: every stored run (the run store, through ``/api/v1/runs``), searched and
filtered as the API does, newest first, a page at a time; a run's steps with their
durations, its log lines (a job still running is followed live), its artifacts (open or
save) and "Run again".

Every load carries a generation number: an answer to a query the operator has since
changed is dropped, so the table never shows the results of an older filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from PySide6.QtCore import QDateTime, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import count_text
from mimir.app.services.runs import (
    FINAL_STATUSES,
    RunQuery,
    RunsClient,
    format_bytes,
    format_duration_ms,
    format_local,
    log_line_text,
    origin_text,
    pretty_json,
)
from mimir.app.ui.common import (
    STATUS_COLORS,
    Banner,
    ask_path,
    data_table,
    panel_header,
    set_row,
    table_item,
)
from mimir.app.ui.session import ConsoleSession

__all__ = ["PERIODS", "QtHistoryPanel", "fill_runs_table"]

logger = logging.getLogger(__name__)

#: The period filter: (label, hours back; 0 = any time, -1 = a custom range).
PERIODS = [
    ("Any time", 0),
    ("Last hour", 1),
    ("Last 24 hours", 24),
    ("Last 7 days", 24 * 7),
    ("Last 30 days", 24 * 30),
    ("Custom range…", -1),
]
RUN_COLUMNS = ["Finished", "Pipeline", "Status", "Duration", "Queue", "Tries", "Started by"]
RUN_COLUMNS += ["Error", "Job"]
STEP_COLUMNS = ["#", "Step", "Plugin", "Status", "Duration", "Share", "Error"]
ARTIFACT_COLUMNS = ["Name", "Size", "Type", "Step", "SHA-256"]
PAGE = 100
_USER = Qt.ItemDataRole.UserRole


def _run_row(run: dict[str, Any], names: dict[str, str]) -> list[QTableWidgetItem]:
    status = str(run.get("status") or "")
    error = str(run.get("error") or "").strip()
    items = [
        table_item(format_local(run.get("finished_at")), data=run.get("job_id")),
        table_item(str(run.get("pipeline") or run.get("type") or "")),
        table_item(status),
        table_item(format_duration_ms(run.get("duration_ms"))),
        table_item(str(run.get("queue") or "default")),
        table_item(str(run.get("attempts") or 0)),
        table_item(origin_text(run, names), str(run.get("origin_id") or "")),
        table_item(error.splitlines()[0] if error else "", error),
        table_item(str(run.get("job_id") or ""), str(run.get("job_id") or "")),
    ]
    color = STATUS_COLORS.get(status)
    if color is not None:
        items[2].setForeground(color)
    return items


def fill_runs_table(
    table: QTableWidget,
    runs: list[dict[str, Any]],
    *,
    append: bool,
    names: dict[str, str] | None = None,
) -> None:
    """Show ``runs`` (the History view's columns) in ``table``, after its rows or instead
    (``names``: schedule and trigger ids → names, for the "Started by" column)."""
    start = table.rowCount() if append else 0
    table.setRowCount(start + len(runs))
    for offset, run in enumerate(runs):
        set_row(table, start + offset, _run_row(run, names or {}))


class QtHistoryPanel(QWidget):
    #: a run was enqueued again (the new job's id)
    rerun = Signal(str)

    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        self.session = session
        self.client = RunsClient(session.api) if session is not None else None
        self.runs: list[dict[str, Any]] = []
        self.next_cursor: str | None = None
        self.selected_id: str | None = None
        #: the selected run as the store (or, while it runs, the queue) has it
        self.run: dict[str, Any] | None = None
        self.log_lines: list[dict[str, Any]] = []
        self.artifact_list: list[dict[str, Any]] = []
        self.following = False
        self._generation = 0
        self._detail_generation = 0
        self._follow_task: asyncio.Task[None] | None = None
        #: Schedule and trigger ids → names (the "Started by" column), read as needed.
        self.origin_names: dict[str, str] = {}
        self._build()
        # Searching as one types waits for a pause; the filters apply at once.
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(400)
        self._search_timer.timeout.connect(self.refresh)
        # A finished job becomes a run a moment later: list again (first page only).
        self._new_runs_timer = QTimer(self)
        self._new_runs_timer.setSingleShot(True)
        self._new_runs_timer.setInterval(2500)
        self._new_runs_timer.timeout.connect(self._refresh_first_page)
        if session is not None:
            session.job.connect(self._on_job)
            session.profile_changed.connect(lambda _p: self._reset())

    # ---------------------------------------------------------------- layout

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("History", "Every finished run, kept in the run store"))

        bar = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search errors and pipeline names…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self.search.returnPressed.connect(self.refresh)
        self.pipeline_combo = QComboBox()
        self.pipeline_combo.setMinimumWidth(150)
        self.pipeline_combo.addItem("All pipelines", "")
        self.status_combo = QComboBox()
        self.status_combo.addItem("All statuses", "")
        for status in FINAL_STATUSES:
            self.status_combo.addItem(status, status)
        self.queue_edit = QLineEdit()
        self.queue_edit.setPlaceholderText("Queue")
        self.queue_edit.setClearButtonEnabled(True)
        self.queue_edit.setFixedWidth(110)
        self.queue_edit.editingFinished.connect(self.refresh)
        self.period_combo = QComboBox()
        for label, hours in PERIODS:
            self.period_combo.addItem(label, hours)
        now = QDateTime.currentDateTime()
        self.since_edit = QDateTimeEdit(now.addDays(-1))
        self.until_edit = QDateTimeEdit(now)
        for edit in (self.since_edit, self.until_edit):
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setCalendarPopup(True)
            edit.hide()
            edit.dateTimeChanged.connect(lambda _d: self._search_timer.start())
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        for combo in (self.pipeline_combo, self.status_combo):
            combo.currentIndexChanged.connect(lambda _i: self.refresh())
        self.period_combo.currentIndexChanged.connect(self._on_period)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.pipeline_combo)
        bar.addWidget(self.status_combo)
        bar.addWidget(self.queue_edit)
        bar.addWidget(self.period_combo)
        bar.addWidget(self.since_edit)
        bar.addWidget(self.until_edit)
        bar.addWidget(self.refresh_button)
        root.addLayout(bar)
        self.banner = Banner()
        root.addWidget(self.banner)

        split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.setSpacing(6)
        self.table = data_table(RUN_COLUMNS, [172, 140, 96, 84, 72, 58, 180, 240])
        self.table.itemSelectionChanged.connect(self._on_selection)
        top_layout.addWidget(self.table, 1)
        more = QHBoxLayout()
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        self.more_button = QPushButton("Load more")
        self.more_button.setEnabled(False)
        self.more_button.clicked.connect(self.load_more)
        more.addWidget(self.count_label, 1)
        more.addWidget(self.more_button)
        top_layout.addLayout(more)
        split.addWidget(top)

        details = QWidget()
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(0, 0, 0, 0)
        details_layout.setSpacing(6)
        head = QHBoxLayout()
        self.run_label = QLabel("Select a run to see its steps, logs and artifacts.")
        self.run_label.setObjectName("Hint")
        self.run_again_button = QPushButton("Run again")
        self.run_again_button.setToolTip(
            "Enqueue this run's own pipeline definition and context as a new job"
        )
        self.run_again_button.setEnabled(False)
        self.run_again_button.clicked.connect(self.run_again)
        head.addWidget(self.run_label, 1)
        head.addWidget(self.run_again_button)
        details_layout.addLayout(head)
        self.tabs = QTabWidget()
        mono = QFont("DejaVu Sans Mono")
        mono.setPointSize(9)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setObjectName("Code")
        self.summary.setFont(mono)
        self.steps = data_table(STEP_COLUMNS, [36, 170, 200, 96, 90, 140])
        self.logs = QPlainTextEdit()
        self.logs.setReadOnly(True)
        self.logs.setObjectName("Code")
        self.logs.setFont(mono)
        self.logs.setMaximumBlockCount(20000)
        artifacts_page = QWidget()
        artifacts_layout = QVBoxLayout(artifacts_page)
        artifacts_layout.setContentsMargins(0, 6, 0, 0)
        self.artifacts = data_table(ARTIFACT_COLUMNS, [300, 80, 150, 120])
        self.artifacts.itemSelectionChanged.connect(self._update_actions)
        self.artifacts.itemDoubleClicked.connect(lambda _i: self.open_artifact())
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Download to a temporary folder and open it")
        self.open_button.clicked.connect(lambda: self.open_artifact())
        self.save_button = QPushButton("Save as…")
        self.save_button.clicked.connect(lambda: self.save_artifact())
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.save_button)
        artifacts_layout.addWidget(self.artifacts, 1)
        artifacts_layout.addLayout(buttons)
        self.definition = QPlainTextEdit()
        self.definition.setReadOnly(True)
        self.definition.setObjectName("Code")
        self.definition.setFont(mono)
        self.tabs.addTab(self.steps, "Steps")
        self.tabs.addTab(self.logs, "Logs")
        self.tabs.addTab(artifacts_page, "Artifacts")
        self.tabs.addTab(self.summary, "Run")
        self.tabs.addTab(self.definition, "Definition")
        details_layout.addWidget(self.tabs, 1)
        split.addWidget(details)
        split.setSizes([430, 330])
        root.addWidget(split, 1)
        self._update_actions()

    # ---------------------------------------------------------------- filters

    def query(self) -> RunQuery:
        hours = int(self.period_combo.currentData() or 0)
        since = until = None
        if hours > 0:
            since = datetime.now().astimezone() - timedelta(hours=hours)
        elif hours < 0:
            since = cast(datetime, self.since_edit.dateTime().toPython()).astimezone()
            until = cast(datetime, self.until_edit.dateTime().toPython()).astimezone()
        return RunQuery(
            q=self.search.text(),
            pipeline=str(self.pipeline_combo.currentData() or ""),
            status=str(self.status_combo.currentData() or ""),
            queue=self.queue_edit.text(),
            since=since,
            until=until,
        )

    def _on_period(self, _index: int) -> None:
        custom = int(self.period_combo.currentData() or 0) < 0
        self.since_edit.setVisible(custom)
        self.until_edit.setVisible(custom)
        self.refresh()

    def _reset(self) -> None:
        self.origin_names = {}
        self.table.setRowCount(0)
        self.runs, self.next_cursor = [], None
        self._show_run(None)
        if self.isVisible():
            self.refresh()

    @asyncSlot()
    async def load_pipelines(self) -> None:
        """Fill the pipeline filter with the server's pipelines (kept: the current choice)."""
        if self.session is None:
            return
        try:
            pipelines = await self.session.api.list_pipelines()
        except ApiError as exc:
            logger.debug("pipelines for the history filter: %s", exc)
            return
        names = sorted({str(p.get("name")) for p in pipelines if p.get("name")})
        current = self.pipeline_combo.currentData()
        self.pipeline_combo.blockSignals(True)
        self.pipeline_combo.clear()
        self.pipeline_combo.addItem("All pipelines", "")
        for name in names:
            self.pipeline_combo.addItem(name, name)
        index = self.pipeline_combo.findData(current)
        if index < 0 and current:
            self.pipeline_combo.addItem(str(current), current)
            index = self.pipeline_combo.count() - 1
        self.pipeline_combo.setCurrentIndex(max(0, index))
        self.pipeline_combo.blockSignals(False)

    # ---------------------------------------------------------------- the list

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self.session is not None:
            self.load_pipelines()  # pipelines saved since show up in the filter

    @asyncSlot()
    async def refresh(self) -> None:
        """The first page for the current filters (the selection stays if still listed)."""
        await self._load(append=False)

    @asyncSlot()
    async def load_more(self) -> None:
        await self._load(append=True)

    def _refresh_first_page(self) -> None:
        if self.isVisible() and len(self.runs) <= PAGE:
            self.refresh()

    def _on_job(self, job: dict[str, Any]) -> None:
        final = job.get("status") in FINAL_STATUSES
        if final and self.isVisible() and not self._new_runs_timer.isActive():
            self._new_runs_timer.start()

    async def _load(self, *, append: bool) -> None:
        if self.client is None or (append and not self.next_cursor):
            return
        self._search_timer.stop()
        self._generation += 1
        generation = self._generation
        cursor = self.next_cursor if append else None
        # Refresh stays clickable (a newer load simply wins); "more" waits for its page.
        if append:
            self.more_button.setEnabled(False)
        try:
            runs, next_cursor = await self.client.list_runs(self.query(), limit=PAGE, cursor=cursor)
        except ApiError as exc:
            if generation == self._generation:
                self.banner.error(f"Cannot list runs: {exc}", source="list")
            return
        finally:
            if generation == self._generation:
                self.more_button.setEnabled(bool(self.next_cursor))
        if generation != self._generation:
            return  # the filters changed meanwhile: a newer load shows its answer
        self.banner.clear_message(source="list")
        if append:
            known = {run.get("job_id") for run in self.runs}
            runs = [run for run in runs if run.get("job_id") not in known]
            self.runs.extend(runs)
        else:
            self.runs = list(runs)
        self.next_cursor = next_cursor
        await self._learn_origin_names(runs)
        if generation != self._generation:
            return
        self.table.setUpdatesEnabled(False)
        fill_runs_table(
            self.table, runs if append else self.runs, append=append, names=self.origin_names
        )
        self.table.setUpdatesEnabled(True)
        self.more_button.setEnabled(bool(self.next_cursor))
        more = " · more below" if self.next_cursor else ""
        self.count_label.setText(f"{count_text(len(self.runs), 'run')} shown{more}")
        if not append:
            self._reselect()

    async def _learn_origin_names(self, runs: list[dict[str, Any]]) -> None:
        """Read the schedules' names once a run names a schedule not known yet."""
        unknown = {
            str(run.get("origin_id"))
            for run in runs
            if run.get("origin_kind") == "schedule" and run.get("origin_id")
        } - set(self.origin_names)
        if not unknown or self.client is None:
            return
        try:
            schedules = await self.client.list_schedules()
        except ApiError as exc:
            logger.debug("schedule names for History: %s", exc)
            return
        for schedule in schedules:
            self.origin_names[str(schedule.get("id"))] = str(schedule.get("name") or "")
        for ident in unknown - set(self.origin_names):
            self.origin_names[ident] = ""  # deleted since: shown by id, not asked again

    def _row_of(self, job_id: str) -> int | None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(_USER) == job_id:
                return row
        return None

    def _reselect(self) -> None:
        if self.selected_id is None:
            return
        row = self._row_of(self.selected_id)
        if row is not None:
            self.table.blockSignals(True)
            self.table.selectRow(row)
            self.table.blockSignals(False)

    # ---------------------------------------------------------------- one run

    def _on_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        item = self.table.item(rows[0].row(), 0)
        job_id = str(item.data(_USER)) if item is not None else ""
        if job_id and job_id != self.selected_id:
            self.show_run(job_id)

    @asyncSlot(str)
    async def show_run(self, job_id: str) -> None:
        """Show one run: from the store when it has finished, else live from the queue
        (its log lines followed until it ends, then its stored run)."""
        if self.client is None:
            return
        await self._stop_follow()
        self.selected_id = job_id
        self._detail_generation += 1
        generation = self._detail_generation
        self.run_label.setText(f"Loading {job_id}…")
        try:
            run = await self.client.get_run(job_id)
        except ApiError as exc:
            if generation != self._detail_generation:
                return
            if exc.status != 404:
                self.run_label.setText(f"{job_id}: {exc}")
                return
            await self._show_live(job_id, generation)
            return
        if generation != self._detail_generation:
            return
        await self._show_stored(run, generation)

    async def _show_stored(self, run: dict[str, Any], generation: int) -> None:
        assert self.client is not None
        job_id = str(run.get("job_id"))
        self._show_run(run)
        logs, artifacts = await asyncio.gather(
            self.client.run_logs(job_id), self.client.artifacts(job_id), return_exceptions=True
        )
        if generation != self._detail_generation:
            return
        if isinstance(logs, BaseException):
            self.logs.setPlainText(f"Cannot read the logs: {logs}")
        else:
            lines, truncated = logs
            self.log_lines = list(lines)
            self._render_logs(truncated)
        if isinstance(artifacts, BaseException):
            self.artifact_list = []
            self.banner.error(f"Cannot list the artifacts: {artifacts}", source="detail")
        else:
            self.artifact_list = list(artifacts or run.get("artifacts") or [])
            self.banner.clear_message(source="detail")
        self._fill_artifacts()

    async def _show_live(self, job_id: str, generation: int) -> None:
        assert self.client is not None
        try:
            job = await self.client.live_job(job_id)
        except ApiError as exc:
            if generation == self._detail_generation:
                self.run_label.setText(f"{job_id}: {exc}")
            return
        if generation != self._detail_generation:
            return
        self._show_run(job)
        self.log_lines = []
        self.logs.setPlainText("")
        self.artifact_list = []
        self._fill_artifacts()
        self._follow_task = asyncio.ensure_future(self._follow(job_id, generation))

    async def _follow(self, job_id: str, generation: int) -> None:
        """Append the job's log lines as they come; when it ends, show its stored run."""
        assert self.client is not None
        self.following = True
        self._update_label()
        try:
            async with contextlib.aclosing(self.client.follow_logs(job_id)) as lines:
                async for line in lines:
                    if generation != self._detail_generation:
                        return
                    self.log_lines.append(line)
                    self.logs.appendPlainText(log_line_text(line))
        except ApiError as exc:
            if generation == self._detail_generation:
                self.logs.appendPlainText(f"[following stopped: {exc}]")
        finally:
            self.following = False
        if generation != self._detail_generation:
            return
        # The job ended: its run reaches the store a moment later.
        deadline = asyncio.get_running_loop().time() + 15
        while generation == self._detail_generation:
            try:
                run = await self.client.get_run(job_id)
            except ApiError as exc:
                if exc.status != 404 or asyncio.get_running_loop().time() > deadline:
                    self._update_label()
                    return
                await asyncio.sleep(0.5)
                continue
            await self._show_stored(run, generation)
            return

    async def _stop_follow(self) -> None:
        task, self._follow_task = self._follow_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.following = False

    def _update_label(self) -> None:
        run = self.run
        if run is None:
            self.run_label.setText("Select a run to see its steps, logs and artifacts.")
            return
        status = str(run.get("status") or "")
        name = run.get("pipeline") or run.get("type") or ""
        live = " · following its log live" if self.following else ""
        took = format_duration_ms(run.get("duration_ms"))
        took = f" in {took}" if took else ""
        color = STATUS_COLORS.get(status)
        shown = f"<span style='color:{color.name()}'>{status}</span>" if color else status
        self.run_label.setText(f"<b>{name}</b> · {run.get('job_id')} · {shown}{took}{live}")

    def _show_run(self, run: dict[str, Any] | None) -> None:
        self.run = run
        self._update_label()
        self._update_actions()
        if run is None:
            self.selected_id = None
            for table in (self.steps, self.artifacts):
                table.setRowCount(0)
            for pane in (self.logs, self.summary, self.definition):
                pane.setPlainText("")
            return
        self._fill_steps(run.get("steps") or [])
        self.summary.setPlainText(_summary_text(run, self.origin_names))
        definition = run.get("definition")
        context = run.get("context")
        text = "Pipeline definition\n" + (pretty_json(definition) if definition else "(none)")
        text += "\n\nContext\n" + pretty_json(context or {})
        if run.get("options"):
            text += "\n\nOptions\n" + pretty_json(run["options"])
        self.definition.setPlainText(text)

    def _fill_steps(self, steps: list[dict[str, Any]]) -> None:
        total = sum(float(step.get("duration_ms") or 0) for step in steps) or 1.0
        self.steps.setRowCount(len(steps))
        for row, step in enumerate(steps):
            status = str(step.get("status") or "")
            share = float(step.get("duration_ms") or 0) / total
            bar = "█" * round(share * 8)
            error = str(step.get("error") or "")
            items = [
                table_item(str(step.get("index", row))),
                table_item(str(step.get("name") or "")),
                table_item(str(step.get("plugin") or "")),
                table_item(status),
                table_item(format_duration_ms(step.get("duration_ms"))),
                table_item(
                    f"{bar} {share:.0%}" if steps else "", f"{share:.1%} of the run's steps"
                ),
                table_item(error.splitlines()[0] if error else "", error),
            ]
            color = STATUS_COLORS.get(status)
            if color is not None:
                items[3].setForeground(color)
            set_row(self.steps, row, items)

    def _render_logs(self, truncated: bool = False) -> None:
        text = "\n".join(log_line_text(line) for line in self.log_lines)
        if not self.log_lines:
            text = "(this run logged nothing)"
        elif truncated and "[log cut" not in text:
            text += "\n[log cut at 1 MiB]"
        self.logs.setPlainText(text)

    def _fill_artifacts(self) -> None:
        self.artifacts.setRowCount(len(self.artifact_list))
        for row, artifact in enumerate(self.artifact_list):
            sha = str(artifact.get("sha256") or "")
            items = [
                table_item(str(artifact.get("name") or ""), data=artifact.get("name")),
                table_item(format_bytes(artifact.get("size"))),
                table_item(str(artifact.get("content_type") or "")),
                table_item(str(artifact.get("step") or "")),
                table_item(sha[:16] + "…" if sha else "", sha),
            ]
            set_row(self.artifacts, row, items)
        title = f"Artifacts ({len(self.artifact_list)})" if self.artifact_list else "Artifacts"
        self.tabs.setTabText(2, title)
        if self.artifact_list:
            self.artifacts.selectRow(0)
        self._update_actions()

    def _update_actions(self) -> None:
        run = self.run or {}
        self.run_again_button.setEnabled(bool(run.get("definition")))
        chosen = bool(self.artifacts.selectionModel().selectedRows()) and bool(self.artifact_list)
        self.open_button.setEnabled(chosen)
        self.save_button.setEnabled(chosen)

    # ---------------------------------------------------------------- actions

    def _chosen_artifact(self) -> str | None:
        rows = self.artifacts.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.artifacts.item(rows[0].row(), 0)
        return str(item.data(_USER)) if item is not None else None

    async def _ask_save_path(self, suggested: str) -> Path | None:
        """A save dialog, opened window-modal and awaited (no nested event loop)."""
        dialog = QFileDialog(self, "Save artifact", suggested)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setFileMode(QFileDialog.FileMode.AnyFile)
        return await ask_path(dialog)

    @asyncSlot()
    async def save_artifact(self, target: Path | None = None) -> Path | None:
        """Download the chosen artifact to ``target`` (asked for when None)."""
        name = self._chosen_artifact()
        run_id = self.selected_id
        if self.client is None or name is None or run_id is None:
            return None
        if target is None:
            target = await self._ask_save_path(str(Path.home() / Path(name).name))
            if target is None:
                return None
        try:
            size = await self.client.download_artifact(run_id, name, target)
        except (ApiError, OSError) as exc:
            self.banner.error(f"Cannot save {name}: {exc}", source="artifact")
            return None
        self.banner.ok(f"Saved {name} to {target} ({format_bytes(size)}).", source="artifact")
        return target

    @asyncSlot()
    async def open_artifact(self) -> Path | None:
        """Download the chosen artifact to a temporary folder and open it."""
        name = self._chosen_artifact()
        run_id = self.selected_id
        if self.client is None or name is None or run_id is None:
            return None
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="mimir-artifact-"))
        target = folder / Path(name).name
        try:
            await self.client.download_artifact(run_id, name, target)
        except (ApiError, OSError) as exc:
            self.banner.error(f"Cannot open {name}: {exc}", source="artifact")
            return None
        self.banner.clear_message(source="artifact")
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))
        return target

    @asyncSlot()
    async def run_again(self) -> str | None:
        """Enqueue the shown run again and follow the new job."""
        run = self.run
        if self.client is None or not run:
            return None
        self.run_again_button.setEnabled(False)
        try:
            job_id = await self.client.run_again(run)
        except ApiError as exc:
            self.banner.error(f"Cannot run {run.get('job_id')} again: {exc}")
            self._update_actions()
            return None
        self.banner.ok(
            f"Enqueued {job_id}: {run.get('pipeline')} again, with the context of "
            f"{run.get('job_id')}. Following it below."
        )
        self.rerun.emit(job_id)
        self.table.clearSelection()
        await self.show_run(job_id)
        return job_id

    async def stop(self) -> None:
        await self._stop_follow()


def _summary_text(run: dict[str, Any], names: dict[str, str] | None = None) -> str:
    rows = [
        ("Job", run.get("job_id")),
        ("Status", run.get("status")),
        ("Pipeline", run.get("pipeline") or run.get("type")),
        ("Definition", str(run.get("definition_hash") or "")[:16]),
        ("Started by", origin_text(run, names)),
        ("Queue", f"{run.get('queue') or 'default'} · priority {run.get('priority') or ''}"),
        ("Attempts", run.get("attempts")),
        ("Worker", run.get("worker_id")),
        ("Enqueued", format_local(run.get("enqueued_at"))),
        ("Started", format_local(run.get("started_at"))),
        ("Finished", format_local(run.get("finished_at"))),
        ("Duration", format_duration_ms(run.get("duration_ms"))),
        ("Timeout", f"{run['timeout']} s" if run.get("timeout") else ""),
    ]
    text = "\n".join(f"{label:<11} {value}" for label, value in rows if value not in (None, ""))
    if run.get("error"):
        text += "\n\nError\n" + str(run["error"])
    if run.get("result") is not None:
        text += "\n\nResult\n" + pretty_json(run["result"])[:20000]
    return text
