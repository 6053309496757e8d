"""Knowledge panel: a SPARQL editor with a results table, when the server has a KG API."""

from __future__ import annotations

from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.sparql import sparql_rows
from mimir.app.ui.common import Banner, panel_header
from mimir.app.ui.context import ConsoleContext

__all__ = ["QtKnowledgePanel"]

DEFAULT_QUERY = (
    "SELECT ?subject ?predicate ?object\nWHERE { ?subject ?predicate ?object }\nLIMIT 50\n"
)


class QtKnowledgePanel(QWidget):
    def __init__(self, context: ConsoleContext) -> None:
        super().__init__()
        self.context = context
        self.available: bool | None = None
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Knowledge", "Query the knowledge graph with SPARQL"))
        self.banner = Banner()
        root.addWidget(self.banner)
        self.editor = QPlainTextEdit(DEFAULT_QUERY)
        self.editor.setObjectName("Code")
        font = QFont("DejaVu Sans Mono")
        font.setPointSize(10)
        self.editor.setFont(font)
        self.editor.setMaximumHeight(180)
        root.addWidget(self.editor)
        bar = QHBoxLayout()
        self.run_button = QPushButton("Run query")
        self.run_button.setObjectName("Primary")
        self.run_button.clicked.connect(self.run_query)
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        bar.addWidget(self.run_button)
        bar.addWidget(self.count_label, 1)
        root.addLayout(bar)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        root.addWidget(self.table, 1)
        context.profile_changed.connect(lambda _p: self.check_available())

    @asyncSlot()
    async def check_available(self) -> None:
        try:
            self.available = await self.context.api.has_kg()
        except ApiError:
            self.available = None
        if self.available is False:
            self.banner.info(
                "This server has no knowledge-graph API (POST /api/v1/kg/query): "
                "the SPARQL editor is disabled."
            )
        elif self.available is None:
            self.banner.info("Not connected: connect to a server to query its knowledge graph.")
        else:
            self.banner.clear_message()
        self.editor.setEnabled(bool(self.available))
        self.run_button.setEnabled(bool(self.available))

    @asyncSlot()
    async def run_query(self) -> None:
        self.run_button.setEnabled(False)
        try:
            answer = await self.context.api.kg_query(self.editor.toPlainText())
        except ApiError as exc:
            self.banner.error(f"Query failed: {exc}")
            return
        finally:
            self.run_button.setEnabled(bool(self.available))
        self.banner.clear_message()
        columns, rows = sparql_rows(answer)
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.count_label.setText(f"{len(rows)} rows")
