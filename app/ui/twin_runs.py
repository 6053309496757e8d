"""The Knowledge panel's twin runs: the selected twin's runs, running a scenario (here and
now, or queued on the workers, whose status the list follows), the flow model's series of
one run, and two runs side by side (``GET /api/v1/twins/{id}/compare?runs=a,b``).

Select one run to plot it; select two (Ctrl-click) and Compare. The comparison is run A
(the older) against run B; each delta is green when B is better for the operator (a
higher fill rate, a lower backlog), red when worse, uncoloured when the metric is neither
(utilisation, inventory) or did not change.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.twins import (
    ENTITY_METRICS,
    METRICS,
    busiest_entities,
    comparison_rows,
    entity_rows,
    format_metric,
    local_name,
    run_summary,
)
from mimir.app.ui.common import STATUS_COLORS, Banner, data_table, set_row, table_item

__all__ = ["VERDICT_COLORS", "TwinRunsView"]

#: A delta's colour by its verdict (better / worse for the operator).
VERDICT_COLORS = {"better": QColor("#4CC38A"), "worse": QColor("#FF6B6B")}

#: What the plot can show: label → (result key, y-axis label).
PLOT_METRICS = {
    "Utilisation": "utilisation",
    "Backlog": "backlog",
    "Inventory": "inventory",
}

PALETTE = ["#4C9AFF", "#4CC38A", "#E0B341", "#FF6B6B", "#B39DDB", "#36C5D6", "#FF9F5A"]

#: The per-entity columns' titles (short: seven entities' rows must fit beside the system's).
ENTITY_HEADERS = {
    "fill_rate": "Fill rate",
    "backlog": "Backlog",
    "avg_utilisation": "Utilisation",
    "time_bottleneck": "Bottleneck",
    "time_starved": "Starved",
}

#: How many entities the plot draws (the busiest on the chosen metric).
PLOTTED = 6


def _fit_columns(table: Any, stretch: int) -> None:
    """Columns as wide as their contents, column ``stretch`` the rest of the width (no
    empty strip after the last column, no cut text while the table is wide enough)."""
    header = table.horizontalHeader()
    header.setStretchLastSection(False)
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)


class TwinRunsView(QWidget):
    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.twin_id: str | None = None
        self.runs: list[dict[str, Any]] = []  # newest first, as the table lists them
        self.summaries: dict[str, dict[str, Any]] = {}  # succeeded runs' figures, kept
        self.scenario_names: dict[str, str] = {}
        self.last_run: dict[str, Any] | None = None  # the plotted run
        self.last_compare: dict[str, Any] | None = None
        self.plot: Any = None
        self._follow_task: asyncio.Task[None] | None = None

        root = QVBoxLayout(self)
        root.setContentsMargins(0, 8, 0, 0)
        root.setSpacing(8)
        bar = QHBoxLayout()
        self.scenario_combo = QComboBox()
        self.scenario_combo.setMinimumWidth(180)
        self.scenario_combo.setToolTip("The scenario to run")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(-1, 2_000_000_000)
        self.seed_spin.setValue(-1)
        self.seed_spin.setSpecialValueText("scenario's seed")
        self.seed_spin.setPrefix("seed ")
        self.seed_spin.setMinimumWidth(130)
        self.seed_spin.setToolTip("The random seed (the same seed gives the same run)")
        self.simulate_button = QPushButton("Run now")
        self.simulate_button.setObjectName("Primary")
        self.simulate_button.setToolTip("Simulate on the server and show the result")
        self.simulate_button.clicked.connect(lambda: self.simulate(False))
        self.queue_button = QPushButton("Queue")
        self.queue_button.setToolTip("Run as a digital_twin job on the workers")
        self.queue_button.clicked.connect(lambda: self.simulate(True))
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Select two succeeded runs (Ctrl-click) to compare")
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self.compare_selected)
        self.twin_label = QLabel("")
        self.twin_label.setObjectName("Hint")
        for widget in (self.scenario_combo, self.seed_spin, self.simulate_button):
            bar.addWidget(widget)
        bar.addWidget(self.queue_button)
        bar.addWidget(self.compare_button)
        bar.addWidget(self.twin_label, 1)
        root.addLayout(bar)
        self.banner = Banner()
        root.addWidget(self.banner)

        top = QHBoxLayout()
        self.table = data_table(
            ["Run", "Scenario", "Seed", "Status", "Fill rate", "Backlog"], (80, 120, 70, 85, 75)
        )
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        _fit_columns(self.table, stretch=1)
        self.table.setMinimumHeight(150)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        top.addWidget(self.table, 5)
        plot_box = QVBoxLayout()
        plot_bar = QHBoxLayout()
        self.plot_title = QLabel("Select a run to plot it")
        self.plot_title.setObjectName("Hint")
        self.metric_combo = QComboBox()
        self.metric_combo.addItems(list(PLOT_METRICS))
        self.metric_combo.currentIndexChanged.connect(lambda _i: self._replot())
        plot_bar.addWidget(self.plot_title, 1)
        plot_bar.addWidget(self.metric_combo)
        plot_box.addLayout(plot_bar)
        # pyqtgraph is imported when the first run is plotted (it is slow to import).
        self.plot_holder = QVBoxLayout()
        plot_box.addLayout(self.plot_holder, 1)
        top.addLayout(plot_box, 6)
        root.addLayout(top, 5)

        self.compare_title = QLabel(
            "Select two succeeded runs and Compare to see them side by side"
        )
        self.compare_title.setObjectName("Hint")
        self.compare_title.setWordWrap(True)
        root.addWidget(self.compare_title)
        bottom = QHBoxLayout()
        self.system_table = data_table(
            ["System metric", "Run A", "Run B", "Δ (B - A)"], (130, 70, 70)
        )
        self.system_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.entity_table = data_table(["Entity"] + [ENTITY_HEADERS[m] for m in ENTITY_METRICS])
        for column, metric in enumerate(ENTITY_METRICS, start=1):
            header = self.entity_table.horizontalHeaderItem(column)
            if header is not None:
                header.setToolTip(f"{METRICS[metric][0]}: run B's figure (its change from A)")
        self.entity_table.setToolTip(
            "Run B's figure (its change from run A); A and B in each tooltip"
        )
        for table in (self.system_table, self.entity_table):
            _fit_columns(table, stretch=0)
        bottom.addWidget(self.system_table, 5)
        bottom.addWidget(self.entity_table, 8)
        root.addLayout(bottom, 6)

    # ---------------------------------------------------------------- twin

    def set_twin(self, twin_id: str | None, scenarios: list[dict[str, Any]]) -> None:
        """Show ``twin_id``'s scenarios; its runs follow (:meth:`refresh`)."""
        if twin_id != self.twin_id:
            self._stop_following()
            self.twin_id = twin_id
            self.runs = []
            self.last_run = None
            self._clear_compare()
            self.table.setRowCount(0)
            if self.plot is not None:
                self.plot.clear()
            self.plot_title.setText("Select a run to plot it")
        self.scenario_names = {s["id"]: s.get("name") or s["id"] for s in scenarios}
        current = self.scenario_combo.currentData()
        self.scenario_combo.clear()
        for scenario in scenarios:
            self.scenario_combo.addItem(scenario.get("name") or scenario["id"], scenario["id"])
        if current is not None and (index := self.scenario_combo.findData(current)) >= 0:
            self.scenario_combo.setCurrentIndex(index)
        enabled = bool(twin_id and scenarios)
        self.simulate_button.setEnabled(enabled)
        self.queue_button.setEnabled(enabled)
        if twin_id and not scenarios:
            self.twin_label.setText("This twin has no scenarios yet (POST …/scenarios).")

    async def refresh(self) -> None:
        """List the twin's runs again (newest first), keeping the selection; succeeded
        runs get their fill rate and backlog; queued or running runs are followed."""
        twin_id = self.twin_id
        if not twin_id:
            return
        try:
            runs = await self.session.api.list_runs(twin_id)
        except ApiError as exc:
            self.banner.error(f"Cannot list the runs: {exc}", source="runs")
            return
        if twin_id != self.twin_id:
            return
        self.banner.clear_message(source="runs")
        await self._fill_summaries(twin_id, runs)
        if twin_id != self.twin_id:
            return
        selected = self.selected_ids()
        self.runs = list(reversed(runs))
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            summary = self.summaries.get(run["id"]) or run_summary(run)
            status = str(run.get("status", ""))
            status_item = table_item(status, str(run.get("error") or ""))
            if (color := STATUS_COLORS.get(status)) is not None:
                status_item.setForeground(color)
            seed = run.get("seed")
            set_row(
                self.table,
                row,
                [
                    table_item(
                        run["id"][:8],
                        f"{run['id']}\ncreated {run.get('created_at', '')}",
                        run["id"],
                    ),
                    table_item(
                        self.scenario_names.get(
                            run.get("scenario_id", ""), str(run.get("scenario_id", ""))
                        )
                    ),
                    table_item("scenario's" if seed is None else str(seed)),
                    status_item,
                    table_item(format_metric("fill_rate", summary.get("fill_rate"))),
                    table_item(format_metric("backlog", summary.get("backlog"))),
                ],
            )
        self.select_runs(selected)
        self.table.blockSignals(False)
        self._update_buttons()
        if any(r.get("status") in ("queued", "running") for r in runs):
            self._follow()

    async def _fill_summaries(self, twin_id: str, runs: list[dict[str, Any]]) -> None:
        """Figures of succeeded runs the list gives none for: each fetched once (two
        points a series: small), newest first, at most 20 a refresh."""
        missing = [
            r["id"]
            for r in reversed(runs)
            if r.get("status") == "succeeded"
            and r["id"] not in self.summaries
            and not run_summary(r)
        ][:20]

        async def one(run_id: str) -> None:
            with contextlib.suppress(ApiError):
                run = await self.session.api.get_run(twin_id, run_id, points=2)
                self.summaries[run_id] = run_summary(run)

        await asyncio.gather(*(one(run_id) for run_id in missing))

    def _follow(self) -> None:
        """Refresh every second while a run is queued or running."""
        if self._follow_task is not None and not self._follow_task.done():
            return

        async def follow() -> None:
            while any(r.get("status") in ("queued", "running") for r in self.runs):
                # Hidden (another panel or tab): the list is read again when shown.
                await asyncio.sleep(1.0 if self.isVisible() else 5.0)
                await self.refresh()

        self._follow_task = asyncio.ensure_future(follow())

    def _stop_following(self) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
            self._follow_task = None

    def stop(self) -> None:
        self._stop_following()

    # ---------------------------------------------------------------- running

    @asyncSlot()
    async def simulate(self, queued: bool = False) -> None:
        await self.run_scenario(queued)

    async def run_scenario(self, queued: bool = False) -> dict[str, Any] | None:
        """Run the chosen scenario here and now (its run selected and plotted), or queue
        it (the list follows it); the run record, None when refused."""
        twin_id, scenario_id = self.twin_id, self.scenario_combo.currentData()
        if not twin_id or not scenario_id:
            self.twin_label.setText("Choose a twin and a scenario.")
            return None
        seed = None if self.seed_spin.value() < 0 else self.seed_spin.value()
        self.simulate_button.setEnabled(False)
        self.queue_button.setEnabled(False)
        self.twin_label.setText("Queueing…" if queued else "Simulating…")
        try:
            run = await self.session.api.run_twin(twin_id, scenario_id, wait=not queued, seed=seed)
        except ApiError as exc:
            self.banner.error(f"Simulation failed: {exc}", source="run")
            self.twin_label.setText("")
            await self.refresh()  # the failed run is listed with its error
            return None
        finally:
            self.simulate_button.setEnabled(True)
            self.queue_button.setEnabled(True)
        self.banner.clear_message(source="run")
        if queued:
            self.twin_label.setText(f"Run {run['id'][:8]} queued")
        await self.refresh()
        if not queued and twin_id == self.twin_id:
            self.table.blockSignals(True)
            self.select_runs([run["id"]])
            self.table.blockSignals(False)
            self._update_buttons()
            await self.load_run(run["id"])
        return run

    def select_runs(self, run_ids: list[str]) -> None:
        """Select these runs in the table (one: it is plotted)."""
        self.table.clearSelection()
        selection = self.table.selectionModel()
        for row, run in enumerate(self.runs):
            if run["id"] in run_ids:
                selection.select(
                    self.table.model().index(row, 0),
                    selection.SelectionFlag.Select | selection.SelectionFlag.Rows,
                )

    def selected_ids(self) -> list[str]:
        rows = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        return [self.runs[r]["id"] for r in rows if r < len(self.runs)]

    def _selected_runs(self) -> list[dict[str, Any]]:
        ids = self.selected_ids()
        return [r for r in self.runs if r["id"] in ids]

    def _update_buttons(self) -> None:
        chosen = self._selected_runs()
        self.compare_button.setEnabled(
            len(chosen) == 2 and all(r.get("status") == "succeeded" for r in chosen)
        )

    def _selection_changed(self) -> None:
        self._update_buttons()
        chosen = self._selected_runs()
        if len(chosen) == 1 and chosen[0].get("status") == "succeeded":
            if not self.last_run or self.last_run.get("id") != chosen[0]["id"]:
                self.show_run(chosen[0]["id"])
        elif len(chosen) == 1 and chosen[0].get("status") == "failed":
            self.plot_title.setText(f"Run {chosen[0]['id'][:8]} failed: {chosen[0].get('error')}")

    # ---------------------------------------------------------------- one run

    @asyncSlot(str)
    async def show_run(self, run_id: str) -> None:
        await self.load_run(run_id)

    async def load_run(self, run_id: str) -> None:
        """Read the run (its series bounded to 200 points) and plot it."""
        twin_id = self.twin_id
        if not twin_id:
            return
        try:
            run = await self.session.api.get_run(twin_id, run_id, points=200)
        except ApiError as exc:
            self.banner.error(f"Cannot read run {run_id[:8]}: {exc}", source="plot")
            return
        if twin_id != self.twin_id:
            return
        self.banner.clear_message(source="plot")
        self.last_run = run
        self.summaries.setdefault(run_id, run_summary(run))
        self._replot()

    def _replot(self) -> None:
        run = self.last_run
        if run is None:
            return
        import pyqtgraph as pg

        result = run.get("result") or {}
        label = self.metric_combo.currentText()
        metric = PLOT_METRICS[label]
        times = result.get("times") or []
        if metric == "utilisation":
            series: dict[str, list[float]] = result.get("utilisation") or {}
        else:
            series = (result.get("series") or {}).get(metric) or {}
        per_entity = (result.get("metrics") or {}).get("per_entity") or {}
        if self.plot is None:
            self.plot = pg.PlotWidget()
            self.plot.setMinimumHeight(180)
            self.plot.setLabel("bottom", "simulated days")
            self.plot.setMouseEnabled(x=False, y=False)
            self.plot.addLegend(
                offset=(8, 4), labelTextColor="#C9CFD9", colCount=2, brush=pg.mkBrush("#1A1E25CC")
            )
            self.plot_holder.addWidget(self.plot)
        self.plot.clear()
        self.plot.setLabel("left", label.lower())
        for index, entity in enumerate(busiest_entities(result, metric, PLOTTED)):
            name = str((per_entity.get(entity) or {}).get("label") or local_name(entity))
            values = series.get(entity) or []
            self.plot.plot(
                times[: len(values)],
                values,
                name=name,
                pen=pg.mkPen(PALETTE[index % len(PALETTE)], width=2),
            )
        if metric == "utilisation":
            threshold = (result.get("metrics") or {}).get("bottleneck_threshold", 0.9)
            self.plot.addLine(y=threshold, pen=pg.mkPen("#FF6B6B", style=Qt.PenStyle.DashLine))
        resolution = result.get("resolution") or {}
        snapshots = resolution.get("snapshots", len(times))
        shown = (
            f"{len(times)} of {snapshots} snapshots"
            if snapshots != len(times)
            else (f"{len(times)} snapshots")
        )
        scenario = self.scenario_names.get(run.get("scenario_id", ""), run.get("scenario_id"))
        self.plot_title.setText(
            f"Run {run['id'][:8]} · {scenario} · seed {result.get('seed', run.get('seed'))} · "
            f"{label.lower()} of the {min(PLOTTED, len(series))} busiest of {len(series)} entities"
        )
        took = result.get("elapsed_ms", 0.0)
        self.twin_label.setText(f"{len(series)} entities · {shown} · simulated in {took:.0f} ms")

    # ---------------------------------------------------------------- two runs

    def _clear_compare(self) -> None:
        self.last_compare = None
        self.system_table.setRowCount(0)
        self.entity_table.setRowCount(0)
        self.compare_title.setText("Select two succeeded runs and Compare to see them side by side")

    @asyncSlot()
    async def compare_selected(self) -> None:
        chosen = self._selected_runs()
        if len(chosen) != 2:
            return
        # A is the older run, B the newer: "what changed since".
        older, newer = sorted(chosen, key=lambda r: (r.get("created_at", ""), r["id"]))
        await self.compare(older["id"], newer["id"])

    async def compare(self, run_a: str, run_b: str) -> None:
        twin_id = self.twin_id
        if not twin_id:
            return
        self.compare_button.setEnabled(False)
        try:
            answer = await self.session.api.compare_runs(twin_id, run_a, run_b)
        except ApiError as exc:
            self._clear_compare()
            self.banner.error(f"Cannot compare: {exc}", source="compare")
            return
        finally:
            self._update_buttons()
        if twin_id != self.twin_id:
            return
        self.banner.clear_message(source="compare")
        self.last_compare = answer
        self.show_compare(answer)

    def show_compare(self, answer: dict[str, Any]) -> None:
        runs = answer.get("runs") or []

        def name(index: int) -> str:
            if index >= len(runs) or not isinstance(runs[index], dict):
                return "?"
            run = runs[index]
            scenario = self.scenario_names.get(run.get("scenario_id", ""), run.get("scenario_id"))
            seed = run.get("seed")
            return f"{run.get('id', '')[:8]} ({scenario}, seed {'—' if seed is None else seed})"

        self.compare_title.setText(
            f"Run A {name(0)}  vs  run B {name(1)} · green: B better, red: B worse · "
            "entities most changed first"
        )
        rows = comparison_rows(answer)
        self.system_table.setRowCount(len(rows))
        for row, line in enumerate(rows):
            delta = table_item(line.delta)
            if (color := VERDICT_COLORS.get(line.verdict)) is not None:
                delta.setForeground(color)
            set_row(
                self.system_table,
                row,
                [
                    table_item(line.label, line.metric),
                    table_item(line.a),
                    table_item(line.b),
                    delta,
                ],
            )
        entities = entity_rows(answer)
        self.entity_table.setRowCount(len(entities))
        for row, entity in enumerate(entities):
            items = [table_item(entity.label, entity.entity)]
            for metric in ENTITY_METRICS:
                shown, tip, verdict = entity.cells[metric]
                item = table_item(shown, tip)
                if (color := VERDICT_COLORS.get(verdict)) is not None:
                    item.setForeground(color)
                items.append(item)
            set_row(self.entity_table, row, items)
