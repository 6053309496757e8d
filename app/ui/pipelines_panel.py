"""Pipelines panel: the server's pipelines, a YAML editor validated as you type, run and enqueue.

An opened pipeline is saved back to its own file (whatever its ``name:`` says); a new one
is stored under the name it declares. The result under the editor is always the result
of the pipeline in it. A server with no pipelines offers the examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError, ApiUnreachable
from mimir.app.services.examples import copy_example_data, example_pipelines
from mimir.app.services.jobs import count_text
from mimir.app.ui.common import STATUS_COLORS, Banner, panel_header
from mimir.app.ui.session import ConsoleSession
from mimir.app.ui.yaml_editor import QtYamlEditor, declared_name, first_error_line

__all__ = ["NEW_PIPELINE", "QtPipelinesPanel"]

logger = logging.getLogger(__name__)

NEW_PIPELINE = """\
name: new-pipeline
description: what this pipeline does
steps:
  - name: wait
    plugin: Debug.sleep
    config: {seconds: 0.1}
    output: waited
"""


class QtPipelinesPanel(QWidget):
    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.current_name: str | None = None
        self.valid: bool | None = None
        self.last_result: dict[str, Any] | None = None
        self.last_enqueued: list[str] = []
        self._focus_before: QWidget | None = None
        self._build()
        self._validate_timer = QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(350)
        self._validate_timer.timeout.connect(self.validate)
        self.editor.textChanged.connect(self._validate_timer.start)
        QShortcut(QKeySequence.StandardKey.Save, self).activated.connect(self.save)
        QShortcut(QKeySequence("Ctrl+Return"), self).activated.connect(self.run_now)
        QShortcut(QKeySequence("Ctrl+Enter"), self).activated.connect(self.run_now)
        session.profile_changed.connect(lambda _p: self.refresh_list())

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Pipelines", "Write, validate, run and enqueue YAML pipelines"))

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.itemClicked.connect(self._on_selected)
        left_layout.addWidget(self.list, 1)
        self.empty_label = QLabel("This server has no pipelines yet.")
        self.empty_label.setObjectName("Hint")
        self.empty_label.setWordWrap(True)
        self.examples_button = QPushButton("Add the examples")
        self.examples_button.setToolTip(
            "Store the example pipelines on this server (and, for a local cluster, "
            "copy the files they read into its data directory)"
        )
        self.examples_button.clicked.connect(self.add_examples)
        for widget in (self.empty_label, self.examples_button):
            widget.hide()
            left_layout.addWidget(widget)
        list_buttons = QHBoxLayout()
        self.new_button = QPushButton("New")
        self.new_button.clicked.connect(self.new_pipeline)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh_list)
        list_buttons.addWidget(self.new_button)
        list_buttons.addWidget(self.refresh_button)
        left_layout.addLayout(list_buttons)
        split.addWidget(left)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.save_button = QPushButton("Save  Ctrl+S")
        self.validate_button = QPushButton("Validate")
        self.run_button = QPushButton("Run now  Ctrl+Enter")
        self.run_button.setObjectName("Primary")
        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, 10000)
        self.count_spin.setSuffix(" job")  # " jobs" from 2 on
        self.count_spin.valueChanged.connect(
            lambda n: self.count_spin.setSuffix(" job" if n == 1 else " jobs")
        )
        self.priority_combo = QComboBox()
        self.priority_combo.addItems(["normal", "high", "low"])
        self.enqueue_button = QPushButton("Enqueue")
        self.save_button.clicked.connect(self.save)
        self.validate_button.clicked.connect(self.validate)
        self.run_button.clicked.connect(self.run_now)
        self.enqueue_button.clicked.connect(self.enqueue)
        for widget in (self.save_button, self.validate_button, self.run_button):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.count_spin)
        bar.addWidget(self.priority_combo)
        bar.addWidget(self.enqueue_button)
        right_layout.addLayout(bar)
        # Below the toolbar: a message appearing never moves a button from under the pointer.
        self.banner = Banner()
        right_layout.addWidget(self.banner)

        self.editor = QtYamlEditor()
        right_layout.addWidget(self.editor, 3)
        self.validation_label = QLabel("")
        self.validation_label.setWordWrap(True)
        self.validation_label.setObjectName("Hint")
        right_layout.addWidget(self.validation_label)
        self.result_label = QLabel("Run a pipeline to see its result and step timings here.")
        self.result_label.setObjectName("Hint")
        self.result_label.setWordWrap(True)
        right_layout.addWidget(self.result_label)
        self.steps_table = QTableWidget(0, 4)
        self.steps_table.setHorizontalHeaderLabels(["Step", "Plugin", "Status", "Time"])
        self.steps_table.verticalHeader().hide()
        self.steps_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.steps_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.steps_table.setMaximumHeight(170)
        right_layout.addWidget(self.steps_table, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setSizes([260, 800])
        root.addWidget(split, 1)
        self._buttons = [
            self.save_button,
            self.validate_button,
            self.run_button,
            self.enqueue_button,
        ]

    # ---------------------------------------------------------------- list and load

    @asyncSlot()
    async def refresh_list(self) -> None:
        try:
            pipelines = await self.session.api.list_pipelines()
        except ApiError as exc:
            self.banner.error(f"Cannot list pipelines: {exc}", source="list")
            return
        self.banner.clear_message(source="list")
        self.empty_label.setVisible(not pipelines)
        self.examples_button.setVisible(not pipelines)
        self.list.clear()
        for item in pipelines:
            entry = QListWidgetItem(f"{item['name']}\n{item.get('description') or ''}".strip())
            entry.setData(Qt.ItemDataRole.UserRole, item["name"])
            entry.setToolTip(f"{item.get('file', '')} · {item.get('steps', '?')} steps")
            self.list.addItem(entry)
            if item["name"] == self.current_name:
                self.list.setCurrentItem(entry)
        if not self.editor.toPlainText() and pipelines:
            await self.open_pipeline(pipelines[0]["name"], unless_edited=True)

    def _on_selected(self, item: QListWidgetItem) -> None:
        self._open(item.data(Qt.ItemDataRole.UserRole))

    @asyncSlot(str)
    async def _open(self, name: str) -> None:
        await self.open_pipeline(name)

    async def open_pipeline(self, name: str, unless_edited: bool = False) -> None:
        """Load ``name`` into the editor; ``unless_edited``: not over text typed meanwhile."""
        before = self.editor.toPlainText()
        try:
            answer = await self.session.api.get_pipeline(name)
        except ApiError as exc:
            self.banner.error(f"Cannot open {name}: {exc}")
            return
        if unless_edited and self.editor.toPlainText() != before:
            return
        self.current_name = name
        self.editor.setPlainText(answer.get("yaml", ""))
        if not unless_edited:  # opened by the operator: messages about the last one go
            self.banner.clear_message()
        self._clear_result()

    def new_pipeline(self) -> None:
        self.current_name = None
        self.list.clearSelection()
        self.editor.setPlainText(NEW_PIPELINE)
        self.banner.clear_message()
        self._clear_result()
        self.editor.setFocus()

    def _clear_result(self) -> None:
        """The result shown belongs to the pipeline that ran, not to the next one."""
        self.last_result = None
        self.result_label.setStyleSheet("")
        self.result_label.setText("Run a pipeline to see its result and step timings here.")
        self.steps_table.setRowCount(0)
        self.steps_table.setToolTip("")

    @asyncSlot()
    async def add_examples(self) -> None:
        """Store the example pipelines (and, for a local cluster, copy their data)."""
        self.examples_button.setEnabled(False)
        try:
            examples = await asyncio.to_thread(example_pipelines)
            added, failed = [], []
            for name, text in examples:
                try:
                    await self.session.api.save_pipeline(name, text)
                    added.append(name)
                except ApiError as exc:
                    failed.append(f"{name}: {exc}")
            note = ""
            backend = self.session.backend
            data_dir = getattr(backend, "data_dir", None)
            if backend is not None and backend.backend == "local" and data_dir is not None:
                copied = await asyncio.to_thread(copy_example_data, data_dir)
                if copied:
                    note = f" Copied their data ({', '.join(copied)}) to {data_dir}."
            else:
                note = (
                    " Their data files (resources/data: sales.csv, article.md) are not copied "
                    "to this server's data directory."
                )
        finally:
            self.examples_button.setEnabled(True)
        message = f"Added {count_text(len(added), 'example pipeline')}.{note}"
        if failed:
            self.banner.error(f"{message} Not added: {'; '.join(failed)}")
        else:
            self.banner.ok(message)
        await self.refresh_list()

    # ---------------------------------------------------------------- validate, save, run

    @asyncSlot()
    async def validate(self) -> bool:
        text = self.editor.toPlainText()
        if not text.strip():
            self.editor.mark_error(None)
            self.validation_label.setText("")
            return False
        try:
            answer = await self.session.api.validate_pipeline(text)
        except ApiUnreachable:
            self.validation_label.setText("Not validated: the server is unreachable.")
            return False
        except ApiError as exc:
            self.validation_label.setText(f"Not validated: {exc}")
            return False
        if text != self.editor.toPlainText():  # typed on meanwhile; a newer check follows
            return False
        self.valid = bool(answer.get("valid"))
        if self.valid:
            self.editor.mark_error(None)
            self.validation_label.setStyleSheet("color: #4CC38A;")
            self.validation_label.setText("✓ Valid pipeline")
        else:
            line, message = first_error_line(answer.get("errors") or [])
            self.editor.mark_error(line, message)
            self.validation_label.setStyleSheet("color: #FF8A8A;")
            self.validation_label.setText(message or "Invalid pipeline")
        return self.valid

    def _set_busy(self, busy: bool) -> None:
        # Disabling the focused button would hand the focus to the next widget in line
        # (the job count box): park it in the editor meanwhile, then give it back.
        if busy:
            self._focus_before = QApplication.focusWidget()
            if self._focus_before in self._buttons:
                self.editor.setFocus()
        for button in self._buttons:
            button.setEnabled(not busy)
        if not busy:
            before = self._focus_before
            self._focus_before = None
            if before is not None and before.isEnabled() and before.isVisible():
                before.setFocus()

    @asyncSlot()
    async def save(self) -> None:
        text = self.editor.toPlainText()
        # An opened pipeline goes back to its own file (an example's file name and its
        # declared name differ: sales_report.yaml says "name: sales-report").
        name = self.current_name or declared_name(text)
        if not name:
            self.banner.error("Give the pipeline a top-level 'name:' before saving.")
            return
        self._set_busy(True)
        try:
            await self.session.api.save_pipeline(name, text)
        except ApiError as exc:
            self.banner.error(f"Not saved: {exc}")
            line, _ = first_error_line(exc.detail if isinstance(exc.detail, list) else [])
            if line:
                self.editor.mark_error(line, str(exc))
            return
        finally:
            self._set_busy(False)
        self.current_name = name
        self.banner.ok(f"Saved {name}.")
        await self.refresh_list()

    @asyncSlot()
    async def run_now(self) -> None:
        text = self.editor.toPlainText()
        self._set_busy(True)
        self._clear_result()
        self.result_label.setText("Running…")
        try:
            result = await self.session.api.execute_pipeline(pipeline=text)
        except ApiError as exc:
            self.banner.error(f"Run failed: {exc}")
            self.result_label.setText("")
            return
        finally:
            self._set_busy(False)
        if text != self.editor.toPlainText():
            return  # another pipeline was opened meanwhile: this result is not its
        self.last_result = result
        self._show_result(result)

    def _show_result(self, result: dict[str, Any]) -> None:
        ok = bool(result.get("success"))
        took = float(result.get("duration_ms", 0.0))
        if ok:
            keys = ", ".join(list((result.get("context") or {}).keys())[:8])
            self.result_label.setStyleSheet("color: #4CC38A;")
            self.result_label.setText(f"✓ Succeeded in {took:.0f} ms · context: {keys}")
            self.banner.clear_message()
        else:
            self.result_label.setStyleSheet("color: #FF8A8A;")
            self.result_label.setText(f"✗ Failed after {took:.0f} ms: {result.get('error')}")
        steps = result.get("steps") or []
        self.steps_table.setRowCount(len(steps))
        for row, step in enumerate(steps):
            cells = [
                step.get("name", ""),
                step.get("plugin", ""),
                step.get("status", ""),
                f"{float(step.get('duration_ms', 0.0)):.1f} ms",
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(str(text))
                if column == 2 and text in STATUS_COLORS:
                    item.setForeground(STATUS_COLORS[text])
                if step.get("error") and column == 2:
                    item.setToolTip(str(step["error"]))
                self.steps_table.setItem(row, column, item)
        self.steps_table.setToolTip(json.dumps(result.get("context"), default=str)[:2000])

    @asyncSlot()
    async def enqueue(self) -> None:
        text = self.editor.toPlainText()
        count = self.count_spin.value()
        priority = self.priority_combo.currentText()
        self._set_busy(True)
        try:
            ids = await self.session.api.enqueue(pipeline=text, count=count, priority=priority)
        except ApiError as exc:
            self.banner.error(f"Not enqueued: {exc}")
            return
        finally:
            self._set_busy(False)
        self.last_enqueued = ids
        self.banner.ok(f"Enqueued {count_text(len(ids), 'job')} at {priority} priority.")
