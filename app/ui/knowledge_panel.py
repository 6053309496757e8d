"""Knowledge panel, when the server has a KG API: three tabs.

- SPARQL query: upload an ontology file, run a query; IRIs show by prefix (the query's
  own PREFIXes, then rdf/rdfs/owl/xsd…; the full IRI in each cell's tooltip, the prefixes
  under the table). A failed query clears the previous results: what the table shows
  answers the query above.
- Twin runs (:mod:`mimir.app.ui.twin_runs`): the chosen twin's runs, run or queue a
  scenario, plot a run's series, compare two runs.
- What-if (:mod:`mimir.app.ui.twin_whatif`): one change over several seeds, its
  distribution and bottleneck ranking.

The twin is chosen at the right of the tabs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import count_text
from mimir.app.services.sparql import query_prefixes, sparql_table
from mimir.app.ui.common import Banner, ask_path, panel_header
from mimir.app.ui.session import ConsoleSession
from mimir.app.ui.twin_runs import TwinRunsView
from mimir.app.ui.twin_whatif import WhatIfView

__all__ = ["QtKnowledgePanel"]

#: Media type of an ontology file by its suffix.
ONTOLOGY_TYPES = {
    ".ttl": "text/turtle",
    ".nt": "application/n-triples",
    ".rdf": "application/rdf+xml",
    ".owl": "application/rdf+xml",
    ".xml": "application/rdf+xml",
    ".jsonld": "application/ld+json",
    ".trig": "application/trig",
    ".nq": "application/n-quads",
}

DEFAULT_QUERY = (
    "SELECT ?subject ?predicate ?object\nWHERE { ?subject ?predicate ?object }\nLIMIT 50\n"
)


class QtKnowledgePanel(QWidget):
    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.available: bool | None = None
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(
            panel_header(
                "Knowledge",
                "Upload ontologies, query them with SPARQL, run and compare digital twins",
            )
        )
        query = QVBoxLayout()
        query.setContentsMargins(0, 8, 0, 0)
        query.setSpacing(8)
        upload_bar = QHBoxLayout()
        self.upload_button = QPushButton("Upload ontology…")
        self.upload_button.setToolTip("Load a Turtle, RDF/XML, N-Triples or JSON-LD file")
        self.upload_button.clicked.connect(self.choose_ontology)
        self.upload_label = QLabel("")
        self.upload_label.setObjectName("Hint")
        upload_bar.addWidget(self.upload_button)
        upload_bar.addWidget(self.upload_label, 1)
        query.addLayout(upload_bar)
        self.editor = QPlainTextEdit(DEFAULT_QUERY)
        self.editor.setObjectName("Code")
        font = QFont("DejaVu Sans Mono")
        font.setPointSize(10)
        self.editor.setFont(font)
        self.editor.setMaximumHeight(120)
        query.addWidget(self.editor)
        bar = QHBoxLayout()
        self.run_button = QPushButton("Run query")
        self.run_button.setObjectName("Primary")
        self.run_button.clicked.connect(self.run_query)
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        bar.addWidget(self.run_button)
        bar.addWidget(self.count_label, 1)
        query.addLayout(bar)
        # Below the run button: a message appearing never moves it from under the pointer.
        self.banner = Banner()
        query.addWidget(self.banner)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(180)
        query.addWidget(self.table, 1)
        self.prefix_label = QLabel("")
        self.prefix_label.setObjectName("Hint")
        self.prefix_label.setWordWrap(True)
        self.prefix_label.setTextFormat(Qt.TextFormat.PlainText)
        self.prefix_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        query.addWidget(self.prefix_label)

        query_page = QWidget()
        query_page.setLayout(query)
        self.runs_view = TwinRunsView(session)
        self.whatif_view = WhatIfView(session)
        self.tabs = QTabWidget()
        self.tabs.addTab(query_page, "SPARQL query")
        self.tabs.addTab(self.runs_view, "Twin runs")
        self.tabs.addTab(self.whatif_view, "What-if")
        self.tabs.currentChanged.connect(lambda _i: self._tab_shown())
        twin_box = QWidget()
        twin_bar = QHBoxLayout(twin_box)
        twin_bar.setContentsMargins(0, 0, 0, 4)
        twin_title = QLabel("Digital twin")
        twin_title.setObjectName("Hint")
        self.twin_combo = QComboBox()
        self.twin_combo.setMinimumWidth(200)
        self.twin_combo.currentIndexChanged.connect(lambda _i: self.load_scenarios())
        twin_bar.addWidget(twin_title)
        twin_bar.addWidget(self.twin_combo)
        self.tabs.setCornerWidget(twin_box, Qt.Corner.TopRightCorner)
        root.addWidget(self.tabs, 1)
        # The twin tabs' widgets the tests and screenshots reach through the panel.
        self.scenario_combo = self.runs_view.scenario_combo
        self.simulate_button = self.runs_view.simulate_button
        self.twin_label = self.runs_view.twin_label
        self.twin: dict[str, Any] | None = None
        session.profile_changed.connect(lambda _p: self.check_available())

    @property
    def last_run(self) -> dict[str, Any] | None:
        return self.runs_view.last_run

    @property
    def plot(self) -> Any:
        return self.runs_view.plot

    def _tab_shown(self) -> None:
        if self.tabs.currentWidget() is self.runs_view and self.twin_combo.currentData():
            self.refresh_runs()

    @asyncSlot()
    async def refresh_runs(self) -> None:
        await self.runs_view.refresh()

    @asyncSlot()
    async def check_available(self) -> None:
        try:
            self.available = await self.session.api.has_kg()
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
        for widget in (self.editor, self.run_button, self.upload_button):
            widget.setEnabled(bool(self.available))
        if self.available:
            await self.load_twins()

    async def load_twins(self, select: str | None = None) -> None:
        """The server's twins in the combo (``select``: that one, else the one shown)."""
        try:
            twins = await self.session.api.list_twins()
        except ApiError as exc:
            self.twin_label.setText(f"No twins: {exc}")
            return
        current = select or self.twin_combo.currentData()
        self.twin_combo.blockSignals(True)
        self.twin_combo.clear()
        for twin in twins:
            self.twin_combo.addItem(twin.get("name") or twin["id"], twin["id"])
        if current is not None and (index := self.twin_combo.findData(current)) >= 0:
            self.twin_combo.setCurrentIndex(index)
        self.twin_combo.blockSignals(False)
        if not twins:
            self.twin_label.setText("No digital twins yet (POST /api/v1/twins).")
        await self.load_scenarios()

    @asyncSlot()
    async def load_scenarios(self) -> None:
        """The chosen twin's scenarios, entities and runs in the twin tabs."""
        twin_id = self.twin_combo.currentData()
        if not twin_id:
            self.twin = None
            self.runs_view.set_twin(None, [])
            self.whatif_view.set_twin(None, [], [])
            return
        try:
            scenarios, twin = await asyncio.gather(
                self.session.api.list_scenarios(twin_id), self.session.api.get_twin(twin_id)
            )
        except ApiError as exc:
            self.twin_label.setText(f"No scenarios: {exc}")
            return
        if twin_id != self.twin_combo.currentData():
            return  # another twin was chosen meanwhile
        self.twin = twin
        self.runs_view.set_twin(twin_id, scenarios)
        self.whatif_view.set_twin(twin_id, scenarios, list(twin.get("entities") or []))
        await self.whatif_view.load_history()
        await self.runs_view.refresh()

    async def simulate(self) -> None:
        """Run the chosen scenario here and now (the screenshots' and tests' shortcut)."""
        await self.runs_view.run_scenario(False)

    # ---------------------------------------------------------------- ontologies

    @asyncSlot()
    async def choose_ontology(self) -> None:
        dialog = QFileDialog(self, "Upload an ontology")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setNameFilters(
            [f"RDF ({' '.join('*' + s for s in ONTOLOGY_TYPES)})", "All files (*)"]
        )
        path = await ask_path(dialog)
        if path is not None:
            await self.upload(path)

    async def upload(self, path: Path, name: str | None = None) -> dict[str, Any] | None:
        """Upload the RDF file at ``path`` as ontology ``name`` (default: the file's stem)."""
        media_type = ONTOLOGY_TYPES.get(path.suffix.lower(), "text/turtle")
        name = name or path.stem.replace("_", "-")
        try:
            document = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.banner.error(f"Cannot read {path}: {exc}", source="upload")
            return None
        self.upload_button.setEnabled(False)
        self.upload_label.setText(f"Uploading {path.name}…")
        try:
            info = await self.session.api.upload_ontology(name, document, media_type)
        except ApiError as exc:
            self.upload_label.setText("")
            self.banner.error(f"Upload of {path.name} failed: {exc}", source="upload")
            return None
        finally:
            self.upload_button.setEnabled(bool(self.available))
        self.banner.clear_message(source="upload")
        triples = info.get("triples", info.get("triple_count"))
        self.upload_label.setText(
            f"Uploaded {path.name} as {info.get('id') or name}"
            + (f" ({triples:,} triples)" if isinstance(triples, int) else "")
        )
        return info

    def _clear_results(self) -> None:
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        self.count_label.setText("")
        self.prefix_label.setText("")

    @asyncSlot()
    async def run_query(self) -> None:
        query = self.editor.toPlainText()
        self.run_button.setEnabled(False)
        try:
            answer = await self.session.api.kg_query(query)
        except ApiError as exc:
            self._clear_results()  # the rows of an earlier query would pass for its answer
            self.banner.error(f"Query failed: {exc}", source="query")
            return
        finally:
            self.run_button.setEnabled(bool(self.available))
        self.banner.clear_message(source="query")
        table = sparql_table(answer, query_prefixes(query))
        self.table.setColumnCount(len(table.columns))
        self.table.setHorizontalHeaderLabels(table.columns)
        self.table.setRowCount(len(table.rows))
        for r, row in enumerate(table.rows):
            for c, (shown, full) in enumerate(row):
                item = QTableWidgetItem(shown)
                if shown != full:
                    item.setToolTip(full)
                self.table.setItem(r, c, item)
        self.count_label.setText(count_text(len(table.rows), "row"))
        self.prefix_label.setText(
            "  ·  ".join(f"{name}: <{ns}>" for name, ns in sorted(table.prefixes.items()))
        )
