"""Schedules panel: every schedule with its timing in words, next and last run and state;
pause, resume, run now, delete; the selected schedule's next five fire times (the
server's) and its recent runs (from the run store). The editor is a dialog that explains
the cron expression as it is typed and shows the server's verdict when it is saved.
"""

from __future__ import annotations

import json
import logging
import zoneinfo
from datetime import datetime
from typing import Any, cast

from PySide6.QtCore import QDateTime, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDateTimeEdit,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.cron_text import describe_cron, describe_interval
from mimir.app.services.jobs import count_text, parse_time
from mimir.app.services.runs import (
    RunsClient,
    format_duration_ms,
    format_fire,
    format_local,
    format_relative,
    schedule_last_run,
    schedule_next_runs,
    schedule_pipeline,
    schedule_spec,
    schedule_state,
    schedule_when,
)
from mimir.app.ui.common import (
    STATUS_COLORS,
    Banner,
    SaveDialog,
    data_table,
    panel_header,
    refresh_while_visible,
    selected_record,
    set_row,
    table_item,
)
from mimir.app.ui.confirm import confirm_delete
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtSchedulesPanel", "ScheduleDialog"]

logger = logging.getLogger(__name__)

SCHEDULE_COLUMNS = ["Name", "Pipeline", "When", "Next run", "Last run", "State"]
RECENT_COLUMNS = ["Finished", "Status", "Duration", "Job"]
POLL_SECONDS = 10
_USER = Qt.ItemDataRole.UserRole
_STATE_COLORS = {"active": "#4CC38A", "paused": "#E0B341", "ended": "#8A93A3"}


def _zones() -> list[str]:
    try:
        return sorted(zoneinfo.available_timezones())
    except Exception:  # no tz database: the field stays free text
        return ["UTC"]


def _local_zone() -> str:
    """The console machine's IANA zone name when it has one, else UTC."""
    from pathlib import Path

    try:
        link = Path("/etc/localtime").resolve()
        if "zoneinfo" in link.parts:
            return "/".join(link.parts[link.parts.index("zoneinfo") + 1 :])
    except OSError:
        pass
    return "UTC"


class ScheduleDialog(SaveDialog):
    """Edits one schedule. ``save_requested(body)`` asks the panel to save it; the dialog
    stays open until :meth:`saved` and shows the server's refusal (:meth:`refused`), which
    names the field (an invalid cron expression, time zone or interval)."""

    def __init__(
        self,
        parent: QWidget,
        schedule: dict[str, Any] | None,
        pipelines: list[str],
        client: RunsClient | None = None,
    ) -> None:
        super().__init__(parent)
        spec = schedule_spec(schedule) if schedule else {}
        #: What the dialog does not edit (timeout, retries, a pipeline file) is kept.
        self.original = spec
        self.client = client
        self.schedule_id = (schedule or {}).get("id")
        #: The fire times the server previewed for what the dialog shows (ISO strings).
        self.preview: list[str] = []
        self._preview_generation = 0
        self.setWindowTitle("Edit schedule" if schedule else "New schedule")
        self.setMinimumWidth(680)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.name_edit = QLineEdit(str(spec.get("name") or ""))
        self.name_edit.setPlaceholderText("e.g. nightly-import")
        self.pipeline_combo = QComboBox()
        self.pipeline_combo.setEditable(True)
        self.pipeline_combo.addItems(pipelines)
        self.inline_pipeline = (
            spec.get("pipeline") if isinstance(spec.get("pipeline"), dict) else None
        )
        self.pipeline_combo.setCurrentText(
            str(
                spec.get("pipeline_name")
                or (spec.get("pipeline") if not self.inline_pipeline else "")
            )
        )
        line = self.pipeline_combo.lineEdit()
        if self.inline_pipeline and line is not None:
            line.setPlaceholderText("(an inline pipeline, kept as is)")
        self.cron_radio = QRadioButton("Cron")
        self.interval_radio = QRadioButton("Every")
        group = QButtonGroup(self)
        group.addButton(self.cron_radio)
        group.addButton(self.interval_radio)
        self.cron_edit = QLineEdit(str(spec.get("cron") or ""))
        self.cron_edit.setPlaceholderText("[second] minute hour day month weekday: 30 2 * * *")
        self.interval_edit = QLineEdit(str(spec.get("interval") or ""))
        self.interval_edit.setPlaceholderText("30s, 5m, 1h")
        (self.interval_radio if spec.get("interval") else self.cron_radio).setChecked(True)
        timing = QHBoxLayout()
        timing.addWidget(self.cron_radio)
        timing.addWidget(self.cron_edit, 2)
        timing.addWidget(self.interval_radio)
        timing.addWidget(self.interval_edit, 1)
        self.words = QLabel("")
        self.words.setObjectName("Hint")
        self.words.setWordWrap(True)
        self.zone_combo = QComboBox()
        self.zone_combo.setEditable(True)
        zones = _zones()
        self.zone_combo.addItems(zones)
        completer = QCompleter(zones, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.zone_combo.setCompleter(completer)
        self.zone_combo.setCurrentText(str(spec.get("timezone") or _local_zone()))
        self.start_box = QCheckBox("from")
        self.start_edit = QDateTimeEdit(QDateTime.currentDateTime())
        self.end_box = QCheckBox("until")
        self.end_edit = QDateTimeEdit(QDateTime.currentDateTime().addDays(30))
        for box, edit, key in (
            (self.start_box, self.start_edit, "start_at"),
            (self.end_box, self.end_edit, "end_at"),
        ):
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setCalendarPopup(True)
            moment = parse_time(spec.get(key))
            box.setChecked(moment is not None)
            if moment is not None:
                edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(moment.timestamp())))
            edit.setVisible(box.isChecked())
            box.toggled.connect(edit.setVisible)
        self.start_box.toggled.connect(self._window_words)
        self.end_box.toggled.connect(self._window_words)
        self._window_words()
        window = QHBoxLayout()
        window.addWidget(self.start_box)
        window.addWidget(self.start_edit)
        window.addWidget(self.end_box)
        window.addWidget(self.end_edit)
        window.addStretch(1)
        self.jitter = QSpinBox()
        self.jitter.setRange(0, 86400)
        self.jitter.setSuffix(" s")
        self.jitter.setValue(int(float(spec.get("jitter") or spec.get("jitter_seconds") or 0)))
        self.misfire = QComboBox()
        self.misfire.addItem("skip what was missed", "skip")
        self.misfire.addItem("run once after downtime", "run_once")
        self.misfire.setCurrentIndex(max(0, self.misfire.findData(spec.get("misfire", "skip"))))
        self.overlap = QComboBox()
        self.overlap.addItem("allow", "allow")
        self.overlap.addItem("skip if still running", "skip")
        self.overlap.setToolTip("Skip a tick while this schedule's previous run still runs")
        self.misfire.setToolTip(
            "After downtime: skip the ticks that were missed, or run once for all of them"
        )
        self.overlap.setCurrentIndex(max(0, self.overlap.findData(spec.get("overlap", "allow"))))
        policies = QHBoxLayout()
        policies.addWidget(QLabel("Misfire"))
        policies.addWidget(self.misfire, 1)
        policies.addWidget(QLabel("Overlap"))
        policies.addWidget(self.overlap, 1)
        self.queue_edit = QLineEdit(str(spec.get("queue") or ""))
        self.queue_edit.setPlaceholderText("default")
        self.priority = QComboBox()
        self.priority.addItems(["normal", "high", "low"])
        self.priority.setCurrentText(str(spec.get("priority") or "normal"))
        queue_row = QHBoxLayout()
        queue_row.addWidget(self.queue_edit, 1)
        queue_row.addWidget(QLabel("Priority"))
        queue_row.addWidget(self.priority)
        queue_row.addWidget(QLabel("Jitter"))
        queue_row.addWidget(self.jitter)
        self.context_edit = QPlainTextEdit(json.dumps(spec.get("context") or {}, indent=2))
        self.context_edit.setObjectName("Code")
        self.context_edit.setFixedHeight(70)
        self.next_list = QListWidget()
        self.next_list.setFixedHeight(158)
        self.next_list.setObjectName("NextRuns")
        for fire in schedule_next_runs(schedule or {})[:5]:
            self.next_list.addItem(_fire_text(fire, spec.get("timezone")))
        form.addRow("Name", self.name_edit)
        form.addRow("Pipeline", self.pipeline_combo)
        form.addRow("When", timing)
        form.addRow("", self.words)
        form.addRow("Time zone", self.zone_combo)
        form.addRow("Active", window)
        form.addRow("", policies)
        form.addRow("Queue", queue_row)
        form.addRow("Context", self.context_edit)
        form.addRow("Next runs", self.next_list)
        layout.addLayout(form)
        self._add_footer(layout)
        # The next fire times come from the server (its cron library, the zone's DST rules),
        # asked again a moment after each change of the timing.
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(350)
        self._preview_timer.timeout.connect(self.ask_preview)
        for field in (self.cron_edit, self.interval_edit):
            field.textChanged.connect(self._explain)
        self.cron_radio.toggled.connect(self._explain)
        self.zone_combo.currentTextChanged.connect(self._explain)
        for box in (self.start_box, self.end_box):
            box.toggled.connect(lambda _on: self._preview_timer.start())
        for edit in (self.start_edit, self.end_edit):
            edit.dateTimeChanged.connect(lambda _d: self._preview_timer.start())
        self._explain()

    def _window_words(self, *_args: Any) -> None:
        self.start_box.setText(
            "from" if self.start_box.isChecked() else "from now (or pick a start)"
        )
        self.end_box.setText("until" if self.end_box.isChecked() else "for ever (or pick an end)")

    def _explain(self, *_args: Any) -> None:
        cron = self.cron_radio.isChecked()
        self.cron_edit.setEnabled(cron)
        self.interval_edit.setEnabled(not cron)
        text = self.cron_edit.text() if cron else self.interval_edit.text()
        words = describe_cron(text) if cron else describe_interval(text)
        if not text.strip():
            self.words.setText("")
        elif words.strip() == " ".join(text.split()):
            self.words.setText("(no plain words for this expression; the server checks it)")
        else:
            zone = self.zone_combo.currentText().strip() or "UTC"
            where = f", {zone} time" if cron else ""
            self.words.setText(f"Runs {words}{where}.")
        self._preview_timer.start()

    def _timing(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.cron_radio.isChecked():
            body["cron"] = " ".join(self.cron_edit.text().split())
        else:
            body["interval"] = self.interval_edit.text().strip()
        body["timezone"] = self.zone_combo.currentText().strip() or "UTC"
        for box, edit, key in (
            (self.start_box, self.start_edit, "start_at"),
            (self.end_box, self.end_edit, "end_at"),
        ):
            if box.isChecked():
                moment = cast(datetime, edit.dateTime().toPython())
                body[key] = moment.astimezone().isoformat()
        return body

    @asyncSlot()
    async def ask_preview(self) -> None:
        """Show the server's next five fire times for the timing as it stands."""
        if self.client is None:
            return
        timing = self._timing()
        if not (timing.get("cron") or timing.get("interval")):
            self.next_list.clear()
            return
        self._preview_generation += 1
        generation = self._preview_generation
        try:
            fires = await self.client.preview_schedule({"name": "preview", **timing})
        except ApiError as exc:
            if generation == self._preview_generation:
                self.preview = []
                self.next_list.clear()
                self.next_list.addItem(str(exc).removeprefix("invalid request: "))
            return
        if generation != self._preview_generation:
            return  # the timing changed meanwhile
        self.preview = fires
        self.next_list.clear()
        for fire in fires:
            self.next_list.addItem(_fire_text(fire, timing.get("timezone")))
        if not fires:
            self.next_list.addItem("No fire time ahead (past its end).")

    def body(self) -> dict[str, Any]:
        """The schedule as the API takes it (raises ValueError on unreadable context)."""
        body: dict[str, Any] = {
            key: self.original[key]
            for key in ("timeout", "max_retries", "pipeline_file")
            if self.original.get(key) is not None
        }
        body["name"] = self.name_edit.text().strip()
        name = self.pipeline_combo.currentText().strip()
        if name:
            body.pop("pipeline_file", None)
            body["pipeline_name"] = name
        elif self.inline_pipeline:
            body["pipeline"] = self.inline_pipeline
        elif "pipeline_file" not in body:
            body["pipeline_name"] = name  # empty: the server names what is missing
        body.update(self._timing())
        body["jitter"] = self.jitter.value()
        body["misfire"] = self.misfire.currentData()
        body["overlap"] = self.overlap.currentData()
        if self.queue_edit.text().strip():
            body["queue"] = self.queue_edit.text().strip()
        body["priority"] = self.priority.currentText()
        text = self.context_edit.toPlainText().strip()
        context = json.loads(text) if text else {}
        if not isinstance(context, dict):
            raise ValueError("the context must be a JSON object")
        body["context"] = context
        return body

    def _save(self) -> None:
        if not self.name_edit.text().strip():
            self.refused("Give the schedule a name.")
            return
        try:
            body = self.body()
        except ValueError as exc:
            self.refused(f"Context: {exc}")
            return
        self.buttons.setEnabled(False)
        self.save_requested.emit(body)


def _timing_text(schedule: dict[str, Any]) -> str:
    spec = schedule_spec(schedule)
    return str(spec.get("cron") or spec.get("interval") or "")


def _fire_text(moment: str, zone: str | None = None) -> str:
    return f"{format_fire(moment, zone)}  ({format_relative(moment)})"


def _next_text(moment: str | None) -> str:
    return f"{format_local(moment, zone=True)} ({format_relative(moment)})" if moment else "—"


class QtSchedulesPanel(QWidget):
    #: the operator asked to see a run (double-click in the recent runs): its job id
    open_run = Signal(str)

    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        self.session = session
        self.client = RunsClient(session.api) if session is not None else None
        self.schedules: list[dict[str, Any]] = []
        self.recent: list[dict[str, Any]] = []
        self.dialog: ScheduleDialog | None = None
        self._recent_generation = 0
        self._refreshing = False
        self._build()
        if session is not None:
            self._timer = refresh_while_visible(
                self, session.profile_changed, self.refresh, POLL_SECONDS
            )
            # "in 4 s" must not stand still for a poll interval, nor stay once it passed.
            self._clock = QTimer(self)
            self._clock.setInterval(1000)
            self._clock.timeout.connect(self._tick)
            self._clock.start()

    def _tick(self) -> None:
        """Renew the relative times; list again once a shown next run has passed."""
        if not self.isVisible():
            return
        passed = False
        now = datetime.now().astimezone()
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 3)
            moment = item.data(_USER) if item is not None else None
            if item is None or not moment:
                continue
            item.setText(_next_text(moment))
            when = parse_time(moment)
            passed = passed or (when is not None and when < now)
        zone = schedule_spec(self.selected() or {}).get("timezone")
        for row in range(self.next_list.count()):
            entry = self.next_list.item(row)
            moment = entry.data(_USER)
            if moment:
                entry.setText(_fire_text(moment, zone))
        if passed and not self._refreshing:
            self.refresh()

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Schedules", "Pipelines that run on a cron or an interval"))
        bar = QHBoxLayout()
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        self.new_button = QPushButton("New schedule…")
        self.new_button.clicked.connect(lambda: self.edit_schedule(None))
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(lambda: self.edit_schedule(self.selected()))
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.run_now_button = QPushButton("Run now")
        self.run_now_button.setToolTip("Enqueue the schedule's pipeline once, now")
        self.run_now_button.clicked.connect(self.run_now)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("Danger")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bar.addWidget(self.count_label, 1)
        for button in (
            self.refresh_button,
            self.new_button,
            self.edit_button,
            self.pause_button,
            self.run_now_button,
            self.delete_button,
        ):
            bar.addWidget(button)
        root.addLayout(bar)
        self.banner = Banner()
        root.addWidget(self.banner)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = data_table(SCHEDULE_COLUMNS, [150, 130, 250, 290, 240])
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemDoubleClicked.connect(lambda _i: self.edit_schedule(self.selected()))
        split.addWidget(self.table)
        lower = QWidget()
        lower_layout = QHBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        next_box = QVBoxLayout()
        self.next_title = QLabel("Next five runs")
        self.next_title.setObjectName("Hint")
        self.next_list = QListWidget()
        next_box.addWidget(self.next_title)
        next_box.addWidget(self.next_list, 1)
        recent_box = QVBoxLayout()
        self.recent_title = QLabel("Recent runs")
        self.recent_title.setObjectName("Hint")
        self.recent_table = data_table(RECENT_COLUMNS, [160, 90, 90])
        self.recent_table.itemDoubleClicked.connect(self._open_recent)
        self.recent_table.setToolTip("Double-click a run to open it in History")
        recent_box.addWidget(self.recent_title)
        recent_box.addWidget(self.recent_table, 1)
        lower_layout.addLayout(next_box, 2)
        lower_layout.addLayout(recent_box, 3)
        split.addWidget(lower)
        split.setSizes([380, 300])
        root.addWidget(split, 1)
        self._update_actions()

    # ---------------------------------------------------------------- data

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh()

    @asyncSlot()
    async def refresh(self) -> None:
        if self.client is None:
            return
        self._refreshing = True
        try:
            schedules = await self.client.list_schedules()
        except ApiError as exc:
            self.banner.error(f"Cannot list schedules: {exc}", source="list")
            return
        finally:
            self._refreshing = False
        self.banner.clear_message(source="list")
        self._fill(schedules)

    def _fill(self, schedules: list[dict[str, Any]]) -> None:
        chosen = (self.selected() or {}).get("id")
        self.schedules = sorted(schedules, key=lambda s: str(s.get("name") or "").lower())
        table = self.table
        table.blockSignals(True)
        table.setRowCount(len(self.schedules))
        for row, schedule in enumerate(self.schedules):
            state = schedule_state(schedule)
            upcoming = schedule_next_runs(schedule)
            nxt = upcoming[0] if upcoming and state == "active" else None
            last = schedule_last_run(schedule)
            last_text = ""
            if last:
                when = last.get("finished_at") or last.get("enqueued_at") or last.get("at")
                last_text = f"{format_local(when)} · {last.get('status') or ''}"
            error = str(schedule.get("last_error") or "")
            if error:
                last_text = f"last tick failed: {error.splitlines()[0]}"
            items = [
                table_item(str(schedule.get("name") or ""), data=schedule.get("id")),
                table_item(schedule_pipeline(schedule)),
                table_item(schedule_when(schedule), _timing_text(schedule)),
                table_item(_next_text(nxt), data=nxt),
                table_item(last_text or "never", error or str((last or {}).get("job_id") or "")),
                table_item(state),
            ]
            items[5].setForeground(QColor(_STATE_COLORS.get(state, "#8A93A3")))
            if last and STATUS_COLORS.get(str(last.get("status"))):
                items[4].setForeground(STATUS_COLORS[str(last.get("status"))])
            set_row(table, row, items)
        selected_row = next(
            (r for r, s in enumerate(self.schedules) if chosen and s.get("id") == chosen), None
        )
        if selected_row is None and self.schedules:
            selected_row = 0
        if selected_row is not None:
            table.selectRow(selected_row)
        table.blockSignals(False)
        paused = sum(1 for s in self.schedules if schedule_state(s) == "paused")
        self.count_label.setText(
            f"{count_text(len(self.schedules), 'schedule')}"
            + (f" · {paused} paused" if paused else "")
        )
        self._on_selection()

    def selected(self) -> dict[str, Any] | None:
        return selected_record(self.table, self.schedules)

    def _on_selection(self) -> None:
        schedule = self.selected()
        self._update_actions()
        self.next_list.clear()
        if schedule is None:
            self.recent_table.setRowCount(0)
            self.next_title.setText("Next five runs")
            self.recent_title.setText("Recent runs")
            return
        name = schedule.get("name") or schedule.get("id")
        state = schedule_state(schedule)
        self.next_title.setText(f"Next five runs of {name}")
        if state == "paused":
            self.next_list.addItem("Paused: nothing runs until it is resumed.")
        zone = schedule_spec(schedule).get("timezone")
        for moment in schedule_next_runs(schedule)[:5]:
            entry = QListWidgetItem(_fire_text(moment, zone))
            entry.setData(_USER, moment)
            self.next_list.addItem(entry)
        if not self.next_list.count():
            self.next_list.addItem("No more runs (past its end).")
        self.load_recent(str(schedule.get("id")))

    @asyncSlot(str)
    async def load_recent(self, schedule_id: str) -> None:
        if self.client is None:
            return
        self._recent_generation += 1
        generation = self._recent_generation
        try:
            runs = await self.client.schedule_runs(schedule_id)
        except ApiError as exc:
            if generation == self._recent_generation:
                self.recent_title.setText(f"Recent runs: {exc}")
            return
        if generation != self._recent_generation:
            return
        self.recent = runs
        self.recent_table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            status = str(run.get("status") or "")
            items = [
                table_item(format_local(run.get("finished_at")), data=run.get("job_id")),
                table_item(status),
                table_item(format_duration_ms(run.get("duration_ms"))),
                table_item(str(run.get("job_id") or "")),
            ]
            if STATUS_COLORS.get(status):
                items[1].setForeground(STATUS_COLORS[status])
            set_row(self.recent_table, row, items)
        schedule = self.selected() or {}
        name = schedule.get("name") or schedule_id
        failed = sum(1 for r in runs if r.get("status") in ("failed", "dead"))
        tail = f" · {failed} failed" if failed else ""
        self.recent_title.setText(
            f"Recent runs of {name}: {len(runs)}{tail}" if runs else f"No runs of {name} yet"
        )

    def _open_recent(self, item: Any) -> None:
        first = self.recent_table.item(item.row(), 0)
        if first is not None and first.data(_USER):
            self.open_run.emit(str(first.data(_USER)))

    def _update_actions(self) -> None:
        schedule = self.selected()
        chosen = schedule is not None
        for button in (
            self.edit_button,
            self.pause_button,
            self.run_now_button,
            self.delete_button,
        ):
            button.setEnabled(chosen)
        paused = schedule is not None and schedule_state(schedule) == "paused"
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setToolTip(
            "Start firing again from the next tick" if paused else "Stop firing until resumed"
        )

    # ---------------------------------------------------------------- actions

    def _replace(self, schedule: Any) -> None:
        """Show a schedule the server returned after an action, at once."""
        if not isinstance(schedule, dict) or not schedule.get("id"):
            return
        self._fill([schedule if s.get("id") == schedule["id"] else s for s in self.schedules])

    @asyncSlot()
    async def toggle_pause(self) -> None:
        schedule = self.selected()
        if schedule is None or self.client is None:
            return
        action = "resume" if schedule_state(schedule) == "paused" else "pause"
        self.pause_button.setEnabled(False)
        try:
            answer = await self.client.schedule_action(str(schedule["id"]), action)
        except ApiError as exc:
            self.banner.error(f"Cannot {action} {schedule.get('name')}: {exc}")
            self._update_actions()
            return
        self.banner.ok(f"{schedule.get('name')}: {'resumed' if action == 'resume' else 'paused'}.")
        self._replace(answer)
        await self.refresh()

    @asyncSlot()
    async def run_now(self) -> None:
        schedule = self.selected()
        if schedule is None or self.client is None:
            return
        self.run_now_button.setEnabled(False)
        try:
            answer = await self.client.schedule_action(str(schedule["id"]), "run-now")
        except ApiError as exc:
            self.banner.error(f"Cannot run {schedule.get('name')} now: {exc}")
            return
        finally:
            self._update_actions()
        job = answer.get("job_id") if isinstance(answer, dict) else None
        self.banner.ok(f"{schedule.get('name')}: enqueued now" + (f" as {job}." if job else "."))

    @asyncSlot()
    async def delete_selected(self) -> None:
        schedule, client = self.selected(), self.client
        if schedule is None or client is None:
            return
        name = schedule.get("name")
        if await confirm_delete(
            self,
            self.banner,
            lambda: client.delete_schedule(str(schedule["id"])),
            title="Delete schedule",
            question=f"Delete the schedule {name}?",
            detail="Its past runs stay in History.",
            name=name,
            done=f"Deleted the schedule {name}.",
        ):
            await self.refresh()

    @asyncSlot()
    async def edit_schedule(self, schedule: dict[str, Any] | None) -> ScheduleDialog | None:
        """Open the editor (a new schedule when ``schedule`` is None); it saves on Save."""
        if self.session is None:
            return None
        try:
            pipelines = sorted(
                str(p.get("name")) for p in await self.session.api.list_pipelines() if p.get("name")
            )
        except ApiError:
            pipelines = []
        dialog = ScheduleDialog(self, schedule, pipelines, self.client)
        self.dialog = dialog
        dialog.open_modal(lambda body: self._save(dialog, body))
        return dialog

    @asyncSlot(object, object)
    async def _save(self, dialog: ScheduleDialog, body: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            if dialog.schedule_id:
                saved = await self.client.update_schedule(str(dialog.schedule_id), body)
            else:
                saved = await self.client.create_schedule(body)
        except ApiError as exc:
            dialog.refused(str(exc))
            return
        dialog.saved()
        words = schedule_when(saved) if isinstance(saved, dict) else ""
        upcoming = schedule_next_runs(saved) if isinstance(saved, dict) else []
        first = f"; next at {format_local(upcoming[0])}" if upcoming else ""
        self.banner.ok(f"Saved {body['name']}: runs {words}{first}.")
        if isinstance(saved, dict) and saved.get("id"):
            others = [s for s in self.schedules if s.get("id") != saved["id"]]
            self._fill([*others, saved])
            for row, schedule in enumerate(self.schedules):
                if schedule.get("id") == saved["id"]:
                    self.table.selectRow(row)
        await self.refresh()
