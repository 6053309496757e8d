"""Alerts: the status bar's count of firing alerts, the Alerts panel (fired alerts, which
an operator acknowledges, and the rules), and the dialog that edits a rule.

The count is read every ``POLL_SECONDS`` and soon after a job fails or goes to the dead
letter (a live ``job`` event), so a new incident shows within seconds without a poll a
second. The server decides what fires; the console only shows and edits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QMouseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import count_text
from mimir.app.services.runs import (
    ALERT_KINDS,
    RunsClient,
    channels_text,
    cooldown_text,
    format_local,
    format_relative,
    notified_text,
    pretty_json,
    rule_condition,
)
from mimir.app.ui.common import (
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

__all__ = ["AlertsIndicator", "QtAlertsPanel", "RuleDialog"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 15
_USER = Qt.ItemDataRole.UserRole
_FIRING = "#FF6B6B"
_RESOLVED = "#4CC38A"
_ACKED = "#E0B341"
ALERT_COLUMNS = ["Started", "State", "Rule", "Kind", "Summary", "Resolved", "Notified", "Ack"]
RULE_COLUMNS = ["Name", "Kind", "Condition", "Channels", "Cooldown", "Enabled"]


def _attempts_tip(alert: dict[str, Any]) -> str:
    attempts = alert.get("notifications") or []
    failed = [a for a in attempts if not a.get("ok")]
    if not attempts:
        return ""
    last = failed[-1] if failed else attempts[-1]
    return f"{len(attempts)} delivery attempts, {len(failed)} failed; last: " + str(
        last.get("error") or "ok"
    )


class AlertsIndicator(QLabel):
    """The status bar's alerts: "● 2 alerts firing" in red, or "No alerts firing".
    A click opens the Alerts panel (``clicked``)."""

    clicked = Signal()
    #: the firing alerts changed (the list)
    changed = Signal(object)

    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        self.session = session
        self.client = RunsClient(session.api) if session is not None else None
        self.firing: list[dict[str, Any]] = []
        self.available: bool | None = None
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._show()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_SECONDS * 1000)
        self._timer.timeout.connect(self.refresh)
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(3000)  # the server evaluates its rules every few seconds
        self._soon.timeout.connect(self.refresh)
        if session is not None:
            session.job.connect(self._on_job)
            session.profile_changed.connect(lambda _p: self.refresh())

    def start(self) -> None:
        self._timer.start()
        self.refresh()

    def _on_job(self, job: dict[str, Any]) -> None:
        if job.get("status") in ("failed", "dead") and not self._soon.isActive():
            self._soon.start()

    @asyncSlot()
    async def refresh(self) -> None:
        if self.client is None:
            return
        try:
            firing = await self.client.list_alerts(state="firing")
        except ApiError as exc:
            self.available = None if exc.status == 0 else exc.status != 404
            self.setToolTip(f"Alerts unknown: {exc}")
            self._show(unknown=True)
            return
        self.available = True
        if firing != self.firing:
            self.firing = firing
            self.changed.emit(firing)
        self._show()

    def _show(self, unknown: bool = False) -> None:
        count = len(self.firing)
        if unknown:
            self.setText("<span style='color:#8A93A3'>●</span> Alerts: unknown")
            return
        unacked = sum(1 for alert in self.firing if not alert.get("acked_at"))
        if count:
            # Red while someone has to look; amber once every firing alert is acknowledged.
            color = _FIRING if unacked else _ACKED
            if unacked == count:
                extra = ""
            elif unacked == 0:
                extra = ", all acknowledged"
            else:
                extra = f", {unacked} not acknowledged"
            self.setText(
                f"<span style='color:{color}'>●</span> "
                f"<b>{count_text(count, 'alert')} firing</b>{extra}"
            )
            self.setToolTip(
                "\n".join(str(a.get("summary") or a.get("rule_name")) for a in self.firing)
            )
        else:
            self.setText(f"<span style='color:{_RESOLVED}'>●</span> No alerts firing")
            self.setToolTip("Click to see past alerts and the rules")

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mouseReleaseEvent(event)


# ---------------------------------------------------------------------------- rule dialog


def _minutes(spin_max: int = 7 * 24 * 60) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0, spin_max)
    spin.setDecimals(1)
    spin.setSuffix(" min")
    return spin


class RuleDialog(SaveDialog):
    """Edits one alert rule. ``save_requested(body)`` asks the panel to save it; the
    dialog stays open until :meth:`saved`, and shows the server's refusal (:meth:`refused`)."""

    def __init__(
        self,
        parent: QWidget,
        rule: dict[str, Any] | None = None,
        pipelines: list[str] | None = None,
        schedules: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(parent)
        self.rule_id = (rule or {}).get("id")
        spec = dict((rule or {}).get("spec") or {})
        self.setWindowTitle("Edit alert rule" if rule else "New alert rule")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.form = form
        self.name_edit = QLineEdit(str(spec.get("name") or ""))
        self.name_edit.setPlaceholderText("e.g. nightly ETL failing")
        self.kind_combo = QComboBox()
        for kind, words in ALERT_KINDS.items():
            self.kind_combo.addItem(words, kind)
        self.kind_combo.setCurrentIndex(max(0, self.kind_combo.findData(spec.get("kind"))))
        self.pipeline_combo = QComboBox()
        self.pipeline_combo.setEditable(True)
        self.pipeline_combo.addItem("")
        for name in pipelines or []:
            self.pipeline_combo.addItem(name)
        self.pipeline_combo.setCurrentText(str(spec.get("pipeline") or ""))
        line = self.pipeline_combo.lineEdit()
        if line is not None:
            line.setPlaceholderText("any pipeline")
        self.only_dead = QCheckBox("Only runs that went to the dead letter")
        self.only_dead.setChecked(bool(spec.get("only_dead")))
        self.quiet = _minutes(30 * 24 * 60)
        self.quiet.setValue(float(spec.get("quiet_seconds", 3600)) / 60)
        self.quiet.setToolTip("Resolve after this long without a new failure (0: never by time)")
        self.window_spin = _minutes(30 * 24 * 60)
        self.window_spin.setMinimum(0.1)
        self.window_spin.setValue(float(spec.get("window_seconds", 900)) / 60)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.1, 99.9)
        self.threshold.setSuffix(" %")
        self.threshold.setValue(float(spec.get("threshold", 0.2)) * 100)
        self.min_runs = QSpinBox()
        self.min_runs.setRange(1, 1_000_000)
        self.min_runs.setValue(int(spec.get("min_runs", 10)))
        self.queue_edit = QLineEdit(str(spec.get("queue") or ""))
        self.queue_edit.setPlaceholderText("all queues")
        self.length_box = QCheckBox("more than")
        self.length_spin = QSpinBox()
        self.length_spin.setRange(0, 100_000_000)
        self.length_spin.setSuffix(" jobs waiting")
        self.length_box.setChecked(spec.get("max_length") is not None or not spec)
        self.length_spin.setValue(int(spec.get("max_length") or 1000))
        self.age_box = QCheckBox("oldest waiting longer than")
        self.age_spin = _minutes()
        self.age_box.setChecked(spec.get("max_age_seconds") is not None)
        self.age_spin.setValue(float(spec.get("max_age_seconds") or 600) / 60)
        self.schedule_combo = QComboBox()
        self.schedule_combo.addItem("any schedule", None)
        for schedule_id, name in schedules or []:
            self.schedule_combo.addItem(name, schedule_id)
        if spec.get("schedule_id"):
            index = self.schedule_combo.findData(spec["schedule_id"])
            if index < 0:
                self.schedule_combo.addItem(str(spec["schedule_id"]), spec["schedule_id"])
                index = self.schedule_combo.count() - 1
            self.schedule_combo.setCurrentIndex(index)
        self.grace = _minutes(24 * 60)
        self.grace.setMinimum(0.1)
        self.grace.setValue(float(spec.get("grace_seconds", 60)) / 60)
        channels = spec.get("channels") or []
        self.webhooks = QPlainTextEdit(
            "\n".join(str(c.get("url")) for c in channels if c.get("type") == "webhook")
        )
        self.webhooks.setPlaceholderText("https://hooks.slack.com/services/… (one URL a line)")
        self.webhooks.setFixedHeight(60)
        self.emails = QLineEdit(
            ", ".join(a for c in channels if c.get("type") == "email" for a in c.get("to") or [])
        )
        self.emails.setPlaceholderText("ops@example.com, oncall@example.com")
        self.cooldown = _minutes()
        self.cooldown.setValue(float(spec.get("cooldown_seconds", 300)) / 60)
        self.cooldown.setToolTip(
            "After a notification, a new incident within this time is kept quiet"
        )
        self.enabled = QCheckBox("Enabled")
        self.enabled.setChecked(bool(spec.get("enabled", True)))

        length_row = QHBoxLayout()
        length_row.addWidget(self.length_box)
        length_row.addWidget(self.length_spin, 1)
        age_row = QHBoxLayout()
        age_row.addWidget(self.age_box)
        age_row.addWidget(self.age_spin, 1)
        form.addRow("Name", self.name_edit)
        form.addRow("When", self.kind_combo)
        self._rows: dict[str, list[QWidget | Any]] = {}
        self._add(form, "Pipeline", self.pipeline_combo, "run_failed", "failure_rate")
        self._add(form, "", self.only_dead, "run_failed")
        self._add(form, "Resolve after quiet", self.quiet, "run_failed")
        self._add(form, "Window", self.window_spin, "failure_rate")
        self._add(form, "Failure rate above", self.threshold, "failure_rate")
        self._add(form, "At least", self.min_runs, "failure_rate")
        self._add(form, "Queue", self.queue_edit, "backlog")
        self._add(form, "Backlog", length_row, "backlog")
        self._add(form, "", age_row, "backlog")
        self._add(form, "Schedule", self.schedule_combo, "schedule_missed")
        self._add(form, "Overdue by", self.grace, "schedule_missed")
        form.addRow("Webhooks", self.webhooks)
        form.addRow("E-mail to", self.emails)
        form.addRow("Cooldown", self.cooldown)
        form.addRow("", self.enabled)
        layout.addLayout(form)
        self._add_footer(layout)
        self.kind_combo.currentIndexChanged.connect(self._on_kind)
        self._on_kind()

    def _add(self, form: QFormLayout, label: str, field: Any, *kinds: str) -> None:
        row = form.rowCount()
        if isinstance(field, QHBoxLayout):
            form.addRow(label, field)
        else:
            form.addRow(label, field)
        for kind in kinds:
            self._rows.setdefault(kind, []).append(row)

    def _on_kind(self, _index: int = 0) -> None:
        kind = self.kind_combo.currentData()
        wanted = set(self._rows.get(kind, []))
        every = {row for rows in self._rows.values() for row in rows}
        for row in every:
            self.form.setRowVisible(row, row in wanted)
        self.adjustSize()

    def body(self) -> dict[str, Any]:
        """The rule as the API takes it."""
        kind = str(self.kind_combo.currentData())
        body: dict[str, Any] = {
            "name": self.name_edit.text().strip(),
            "kind": kind,
            "cooldown_seconds": round(self.cooldown.value() * 60, 3),
            "enabled": self.enabled.isChecked(),
        }
        channels: list[dict[str, Any]] = [
            {"type": "webhook", "url": line.strip()}
            for line in self.webhooks.toPlainText().splitlines()
            if line.strip()
        ]
        emails = [a.strip() for a in self.emails.text().replace(";", ",").split(",") if a.strip()]
        if emails:
            channels.append({"type": "email", "to": emails})
        body["channels"] = channels
        pipeline = self.pipeline_combo.currentText().strip() or None
        if kind == "run_failed":
            body.update(
                pipeline=pipeline,
                only_dead=self.only_dead.isChecked(),
                quiet_seconds=round(self.quiet.value() * 60, 3),
            )
        elif kind == "failure_rate":
            body.update(
                pipeline=pipeline,
                window_seconds=round(self.window_spin.value() * 60, 3),
                threshold=round(self.threshold.value() / 100, 4),
                min_runs=self.min_runs.value(),
            )
        elif kind == "backlog":
            body["queue"] = self.queue_edit.text().strip() or None
            if self.length_box.isChecked():
                body["max_length"] = self.length_spin.value()
            if self.age_box.isChecked():
                body["max_age_seconds"] = round(self.age_spin.value() * 60, 3)
        elif kind == "schedule_missed":
            body.update(
                schedule_id=self.schedule_combo.currentData(),
                grace_seconds=round(self.grace.value() * 60, 3),
            )
        return body

    def _save(self) -> None:
        if not self.name_edit.text().strip():
            self.refused("Give the rule a name.")
            return
        self.buttons.setEnabled(False)
        self.save_requested.emit(self.body())


# ---------------------------------------------------------------------------- the panel


class QtAlertsPanel(QWidget):
    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        self.session = session
        self.client = RunsClient(session.api) if session is not None else None
        self.alerts: list[dict[str, Any]] = []
        self.rules: list[dict[str, Any]] = []
        self.dialog: RuleDialog | None = None
        self._build()
        if session is not None:
            self._timer = refresh_while_visible(
                self, session.profile_changed, self.refresh, POLL_SECONDS
            )

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Alerts", "What fired, and the rules that watch the cluster"))
        self.banner = Banner()
        root.addWidget(self.banner)
        self.tabs = QTabWidget()
        root.addWidget(self.tabs, 1)

        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(10, 10, 10, 10)
        bar = QHBoxLayout()
        self.state_combo = QComboBox()
        self.state_combo.addItem("All alerts", None)
        self.state_combo.addItem("Firing", "firing")
        self.state_combo.addItem("Resolved", "resolved")
        self.state_combo.currentIndexChanged.connect(lambda _i: self.refresh())
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        self.ack_button = QPushButton("Acknowledge")
        self.ack_button.setToolTip(
            "Mark the selected alert as seen (it keeps firing until it clears)"
        )
        self.ack_button.clicked.connect(self.acknowledge_selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bar.addWidget(self.state_combo)
        bar.addWidget(self.count_label, 1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.ack_button)
        layout.addLayout(bar)
        split = QSplitter(Qt.Orientation.Vertical)
        self.alert_table = data_table(ALERT_COLUMNS, [165, 70, 150, 100, 270, 150, 175])
        self.alert_table.itemSelectionChanged.connect(self._on_alert)
        split.addWidget(self.alert_table)
        self.alert_details = QPlainTextEdit()
        self.alert_details.setReadOnly(True)
        self.alert_details.setObjectName("Code")
        self.alert_details.setPlaceholderText("Select an alert to see what the server saw.")
        split.addWidget(self.alert_details)
        split.setSizes([420, 200])
        layout.addWidget(split, 1)
        self.tabs.addTab(page, "Alerts")

        rules_page = QWidget()
        rules_layout = QVBoxLayout(rules_page)
        rules_layout.setContentsMargins(10, 10, 10, 10)
        rules_bar = QHBoxLayout()
        self.new_rule_button = QPushButton("New rule…")
        self.new_rule_button.clicked.connect(lambda: self.edit_rule(None))
        self.edit_rule_button = QPushButton("Edit…")
        self.edit_rule_button.clicked.connect(lambda: self.edit_rule(self._selected_rule()))
        self.delete_rule_button = QPushButton("Delete…")
        self.delete_rule_button.setObjectName("Danger")
        self.delete_rule_button.clicked.connect(self.delete_selected_rule)
        self.rules_label = QLabel("")
        self.rules_label.setObjectName("Hint")
        rules_bar.addWidget(self.rules_label, 1)
        rules_bar.addWidget(self.new_rule_button)
        rules_bar.addWidget(self.edit_rule_button)
        rules_bar.addWidget(self.delete_rule_button)
        rules_layout.addLayout(rules_bar)
        self.rule_table = data_table(RULE_COLUMNS, [170, 140, 370, 290, 96])
        self.rule_table.itemSelectionChanged.connect(self._update_actions)
        self.rule_table.itemDoubleClicked.connect(lambda _i: self.edit_rule(self._selected_rule()))
        rules_layout.addWidget(self.rule_table, 1)
        self.tabs.addTab(rules_page, "Rules")
        self._update_actions()

    # ---------------------------------------------------------------- data

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh()

    @asyncSlot()
    async def refresh(self) -> None:
        if self.client is None:
            return
        alerts, rules = await asyncio.gather(
            self.client.list_alerts(state=self.state_combo.currentData()),
            self.client.list_rules(),
            return_exceptions=True,
        )
        problems = [r for r in (alerts, rules) if isinstance(r, BaseException)]
        if problems:
            self.banner.error(f"Cannot read the alerts: {problems[0]}", source="list")
        else:
            self.banner.clear_message(source="list")
        if not isinstance(alerts, BaseException):
            self._fill_alerts(alerts)
        if not isinstance(rules, BaseException):
            self._fill_rules(rules)

    def _fill_alerts(self, alerts: list[dict[str, Any]]) -> None:
        selected = self._selected_alert()
        self.alerts = alerts
        table = self.alert_table
        table.setRowCount(len(alerts))
        for row, alert in enumerate(alerts):
            state = str(alert.get("state") or "")
            acked = alert.get("acked_at")
            items = [
                table_item(format_local(alert.get("started_at")), data=alert.get("id")),
                table_item(state),
                table_item(str(alert.get("rule_name") or "")),
                table_item(str(alert.get("kind") or "")),
                table_item(str(alert.get("summary") or ""), str(alert.get("summary") or "")),
                table_item(format_local(alert.get("resolved_at"))),
                table_item(notified_text(alert), _attempts_tip(alert)),
                table_item(
                    f"✓ {alert.get('acked_by') or ''}".strip() if acked else "",
                    f"acknowledged {format_local(acked)}" if acked else "",
                ),
            ]
            items[1].setForeground(QColor(_FIRING if state == "firing" else _RESOLVED))
            set_row(table, row, items)
        firing = sum(1 for a in alerts if a.get("state") == "firing")
        self.count_label.setText(f"{count_text(len(alerts), 'alert')} · {firing} firing")
        self.tabs.setTabText(0, f"Alerts ({firing} firing)" if firing else "Alerts")
        if selected is not None:
            for row, alert in enumerate(alerts):
                if alert.get("id") == selected.get("id"):
                    table.selectRow(row)
                    break
        self._on_alert()

    def _fill_rules(self, rules: list[dict[str, Any]]) -> None:
        selected = self._selected_rule()
        self.rules = rules
        table = self.rule_table
        table.setRowCount(len(rules))
        for row, rule in enumerate(rules):
            spec = dict(rule.get("spec") or rule)
            items = [
                table_item(str(rule.get("name") or ""), data=rule.get("id")),
                table_item(str(rule.get("kind") or "")),
                table_item(rule_condition(spec), rule_condition(spec)),
                table_item(channels_text(spec), channels_text(spec)),
                table_item(cooldown_text(spec)),
                table_item("yes" if rule.get("enabled", True) else "no"),
            ]
            set_row(table, row, items)
        self.rules_label.setText(count_text(len(rules), "rule"))
        if selected is not None:
            for row, rule in enumerate(rules):
                if rule.get("id") == selected.get("id"):
                    table.selectRow(row)
        self._update_actions()

    def _selected_alert(self) -> dict[str, Any] | None:
        return selected_record(self.alert_table, self.alerts)

    def _selected_rule(self) -> dict[str, Any] | None:
        return selected_record(self.rule_table, self.rules)

    def _on_alert(self) -> None:
        alert = self._selected_alert()
        self._update_actions()
        if alert is None:
            self.alert_details.setPlainText("")
            return
        lines = [
            f"{alert.get('rule_name')} · {alert.get('state')} · started "
            f"{format_local(alert.get('started_at'))} ({format_relative(alert.get('started_at'))})",
            str(alert.get("summary") or ""),
        ]
        if alert.get("resolved_at"):
            lines.append(f"Resolved {format_local(alert.get('resolved_at'))}")
        if alert.get("acked_at"):
            lines.append(
                f"Acknowledged {format_local(alert.get('acked_at'))} by {alert.get('acked_by')}"
            )
        notes = alert.get("notifications") or []
        if notes:
            lines.append("\nNotifications")
            for note in notes:
                ok = "ok" if note.get("ok") else f"failed: {note.get('error')}"
                lines.append(
                    f"  {format_local(note.get('at'))} {note.get('event', '')} "
                    f"{note.get('channel', '')} {note.get('target', '')} "
                    f"try {note.get('attempt', 1)}: {ok}"
                )
        lines.append("\nDetails\n" + pretty_json(alert.get("details") or {}))
        self.alert_details.setPlainText("\n".join(lines))

    def _update_actions(self) -> None:
        alert = self._selected_alert()
        self.ack_button.setEnabled(alert is not None and not alert.get("acked_at"))
        chosen = self._selected_rule() is not None
        self.edit_rule_button.setEnabled(chosen)
        self.delete_rule_button.setEnabled(chosen)

    # ---------------------------------------------------------------- actions

    @asyncSlot()
    async def acknowledge_selected(self) -> None:
        alert = self._selected_alert()
        if alert is None or self.client is None:
            return
        self.ack_button.setEnabled(False)
        try:
            await self.client.acknowledge_alert(str(alert["id"]))
        except ApiError as exc:
            self.banner.error(f"Cannot acknowledge: {exc}")
            self._update_actions()
            return
        self.banner.ok(f"Acknowledged: {alert.get('summary') or alert.get('rule_name')}")
        await self.refresh()

    async def _choices(self) -> tuple[list[str], list[tuple[str, str]]]:
        assert self.client is not None and self.session is not None
        pipelines: list[dict[str, Any]] | BaseException
        schedules: list[dict[str, Any]] | BaseException
        pipelines, schedules = await asyncio.gather(
            self.session.api.list_pipelines(), self.client.list_schedules(), return_exceptions=True
        )
        names = (
            sorted(str(p.get("name")) for p in pipelines if p.get("name"))
            if not isinstance(pipelines, BaseException)
            else []
        )
        pairs = (
            [(str(s.get("id")), str(s.get("name") or s.get("id"))) for s in schedules]
            if not isinstance(schedules, BaseException)
            else []
        )
        return names, pairs

    @asyncSlot()
    async def edit_rule(self, rule: dict[str, Any] | None) -> RuleDialog | None:
        """Open the rule dialog (a new rule when ``rule`` is None); it saves on Save."""
        if self.client is None:
            return None
        pipelines, schedules = await self._choices()
        dialog = RuleDialog(self, rule, pipelines, schedules)
        self.dialog = dialog
        dialog.open_modal(lambda body: self._save_rule(dialog, body))
        return dialog

    @asyncSlot(object, object)
    async def _save_rule(self, dialog: RuleDialog, body: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            if dialog.rule_id:
                await self.client.update_rule(str(dialog.rule_id), body)
            else:
                await self.client.create_rule(body)
        except ApiError as exc:
            dialog.refused(str(exc))
            return
        dialog.saved()
        self.banner.ok(f"Saved the rule {body['name']}.")
        await self.refresh()

    @asyncSlot()
    async def delete_selected_rule(self) -> None:
        rule, client = self._selected_rule(), self.client
        if rule is None or client is None:
            return
        name = rule.get("name")
        if await confirm_delete(
            self,
            self.banner,
            lambda: client.delete_rule(str(rule["id"])),
            title="Delete rule",
            question=f"Delete the alert rule {name}?",
            detail="A firing alert of this rule is closed quietly.",
            name=name,
            done=f"Deleted the rule {name}.",
        ):
            await self.refresh()
