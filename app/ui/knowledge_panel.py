"""Knowledge panel: a SPARQL editor with a results table, when the server has a KG API.

IRIs show by prefix (the full IRI in each cell's tooltip, the prefixes under the table). A
failed query clears the previous results: what the table shows answers the query above.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
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
from mimir.app.services.jobs import count_text
from mimir.app.services.sparql import query_prefixes, sparql_table
from mimir.app.ui.common import Banner, panel_header
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtKnowledgePanel"]

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
        root.addWidget(panel_header("Knowledge", "Query the knowledge graph with SPARQL"))
        self.editor = QPlainTextEdit(DEFAULT_QUERY)
        self.editor.setObjectName("Code")
        font = QFont("DejaVu Sans Mono")
        font.setPointSize(10)
        self.editor.setFont(font)
        self.editor.setMaximumHeight(120)
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
        # Below the run button: a message appearing never moves it from under the pointer.
        self.banner = Banner()
        root.addWidget(self.banner)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(180)
        root.addWidget(self.table, 1)
        self.prefix_label = QLabel("")
        self.prefix_label.setObjectName("Hint")
        self.prefix_label.setWordWrap(True)
        self.prefix_label.setTextFormat(Qt.TextFormat.PlainText)
        self.prefix_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.prefix_label)

        twin_bar = QHBoxLayout()
        twin_title = QLabel("Digital twin")
        twin_title.setStyleSheet("font-weight: 600; color: #FFFFFF;")
        self.twin_combo = QComboBox()
        self.twin_combo.setMinimumWidth(200)
        self.twin_combo.currentIndexChanged.connect(lambda _i: self.load_scenarios())
        self.scenario_combo = QComboBox()
        self.scenario_combo.setMinimumWidth(200)
        self.simulate_button = QPushButton("Run simulation")
        self.simulate_button.clicked.connect(self.simulate)
        self.twin_label = QLabel("")
        self.twin_label.setObjectName("Hint")
        twin_bar.addWidget(twin_title)
        twin_bar.addWidget(self.twin_combo)
        twin_bar.addWidget(self.scenario_combo)
        twin_bar.addWidget(self.simulate_button)
        twin_bar.addWidget(self.twin_label, 1)
        root.addLayout(twin_bar)
        # pyqtgraph is imported when the first run is plotted (it is slow to import).
        self.plot_holder = QVBoxLayout()
        root.addLayout(self.plot_holder)
        self.plot: Any = None
        self.last_run: dict[str, Any] | None = None
        session.profile_changed.connect(lambda _p: self.check_available())

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
        self.editor.setEnabled(bool(self.available))
        self.run_button.setEnabled(bool(self.available))
        if self.available:
            await self.load_twins()

    async def load_twins(self) -> None:
        try:
            twins = await self.session.api.list_twins()
        except ApiError as exc:
            self.twin_label.setText(f"No twins: {exc}")
            return
        self.twin_combo.blockSignals(True)
        self.twin_combo.clear()
        for twin in twins:
            self.twin_combo.addItem(twin.get("name") or twin["id"], twin["id"])
        self.twin_combo.blockSignals(False)
        self.simulate_button.setEnabled(bool(twins))
        if not twins:
            self.twin_label.setText("No digital twins yet (POST /api/v1/twins).")
        await self.load_scenarios()

    @asyncSlot()
    async def load_scenarios(self) -> None:
        twin_id = self.twin_combo.currentData()
        self.scenario_combo.clear()
        if not twin_id:
            return
        try:
            scenarios = await self.session.api.list_scenarios(twin_id)
        except ApiError as exc:
            self.twin_label.setText(f"No scenarios: {exc}")
            return
        for scenario in scenarios:
            self.scenario_combo.addItem(scenario.get("name") or scenario["id"], scenario["id"])

    @asyncSlot()
    async def simulate(self) -> None:
        twin_id, scenario_id = self.twin_combo.currentData(), self.scenario_combo.currentData()
        if not twin_id or not scenario_id:
            self.twin_label.setText("Choose a twin and a scenario.")
            return
        self.simulate_button.setEnabled(False)
        self.twin_label.setText("Simulating…")
        try:
            run = await self.session.api.run_twin(twin_id, scenario_id, wait=True)
        except ApiError as exc:
            self.banner.error(f"Simulation failed: {exc}")
            self.twin_label.setText("")
            return
        finally:
            self.simulate_button.setEnabled(True)
        self.last_run = run
        self.plot_run(run)

    def plot_run(self, run: dict[str, Any]) -> None:
        """Utilisation of each entity over the simulated time."""
        import pyqtgraph as pg

        result = run.get("result") or {}
        times = result.get("times") or []
        utilisation: dict[str, list[float]] = result.get("utilisation") or {}
        if self.plot is None:
            self.plot = pg.PlotWidget()
            self.plot.setMinimumHeight(220)
            self.plot.setMaximumHeight(320)
            self.plot.setLabel("bottom", "simulated time")
            self.plot.setLabel("left", "utilisation")
            self.plot.setMouseEnabled(x=False, y=False)
            self.plot.addLegend(offset=(8, 4), labelTextColor="#C9CFD9", colCount=3)
            self.plot_holder.addWidget(self.plot)
        self.plot.clear()
        palette = ["#4C9AFF", "#4CC38A", "#E0B341", "#FF6B6B", "#B39DDB", "#36C5D6", "#FF9F5A"]
        busiest = sorted(utilisation, key=lambda e: max(utilisation[e] or [0]), reverse=True)
        for index, entity in enumerate(busiest[:7]):
            short = entity.rsplit("#", 1)[-1].rsplit("/", 1)[-1]
            color = palette[index % len(palette)]
            self.plot.plot(times, utilisation[entity], name=short, pen=pg.mkPen(color, width=1))
        threshold = (run.get("result") or {}).get("metrics", {}).get("bottleneck_threshold", 0.9)
        self.plot.addLine(y=threshold, pen=pg.mkPen("#FF6B6B", style=Qt.PenStyle.DashLine))
        took = result.get("elapsed_ms", 0.0)
        self.twin_label.setText(
            f"{len(utilisation)} entities · {len(times)} snapshots · simulated in {took:.0f} ms"
        )

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
