"""The console's panels driven as an operator would, offscreen, against a real local cluster.

Each test starts redis-server, ``mimir server`` and workers as child processes through
the Cluster panel (LocalBackend), on the console's single qasync loop. Waits are on
conditions with deadlines (the GUI keeps running while we wait), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from mimir.app.cluster.base import LogLine  # noqa: E402
from mimir.app.cluster.local import LocalBackend  # noqa: E402
from mimir.app.services.jobs import DEAD_LETTER  # noqa: E402
from mimir.app.services.profiles import ConnectionProfile  # noqa: E402
from mimir.app.ui.app import build_window, install_excepthook  # noqa: E402
from mimir.core.settings import Settings  # noqa: E402
from tests.app.conftest import SLEEP_PIPELINE  # noqa: E402
from tests.helpers import free_port  # noqa: E402


async def until(condition: Callable[[], Any], timeout: float, what: Any) -> Any:
    """Poll ``condition`` while the loop (and so the GUI) runs; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {detail}")
        await asyncio.sleep(0.05)


async def answer_confirmation(parent: Any, button: str) -> None:
    """Click ``button`` in the confirmation ``parent`` opened (a destructive action asks)."""
    from PySide6.QtWidgets import QMessageBox

    from mimir.app.ui.confirm import CONFIRM_OBJECT_NAME

    def open_box() -> Any:
        boxes = parent.findChildren(QMessageBox, CONFIRM_OBJECT_NAME)
        return next((box for box in boxes if box.isVisible()), None)

    box = await until(open_box, 10, f"a confirmation from {type(parent).__name__}")
    [choice] = [b for b in box.buttons() if b.text() == button]
    QTest.mouseClick(choice, Qt.MouseButton.LeftButton)


class Console:
    def __init__(self, window: Any, loop: Any, backend: LocalBackend) -> None:
        self.window = window
        self.loop = loop
        self.backend = backend

    def run(self, scenario: Callable[[], Any]) -> Any:
        """Start the window, run ``scenario()``, stop the cluster: all on the running loop."""

        async def session() -> Any:
            self.window.show()
            self.window.start()
            try:
                return await scenario()
            finally:
                await self.window.session.feed.stop()
                await self.window.logs.stop()
                await self.backend.down()
                await self.window.shutdown()

        return self.loop.run_until_complete(session())

    async def start_cluster(self, workers: int = 1) -> None:
        panel = self.window.cluster
        self.window.show_panel("cluster")
        panel.workers_spin.setValue(workers)
        QTest.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.busy, 5, "the start action to begin")
        assert not panel.start_button.isEnabled() and not panel.stop_button.isEnabled()
        await until(lambda: not panel.busy, 90, "the cluster to start")
        status = self.window.session.last_cluster_status
        assert status is not None and status.running, (
            panel.banner.text(),
            self.backend.directory,
            self.backend.load_state(),
            self.window.session.backend is self.backend,
        )
        await until(
            lambda: (self.window.session.feed.last_stats or {}).get("workers", 0) >= workers,
            30,
            "live stats with the workers",
        )


@pytest.fixture
def console(qapp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    for name in ("data", "pipelines", "state"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"MIMIR_{name.upper()}_DIR", str(tmp_path / name))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("MIMIR_API_TOKEN", raising=False)
    (tmp_path / "pipelines" / "nap.yaml").write_text(SLEEP_PIPELINE)
    errors = install_excepthook(show_dialog=False)
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    port = free_port()
    backend = LocalBackend(
        f"qt{os.getpid()}", Settings.from_env(), api_port=port, worker_concurrency=8, grace=10
    )
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    window = build_window(settings, backend)
    profile = ConnectionProfile("Test", "local_processes", api_url=f"http://127.0.0.1:{port}")
    window.session.profiles.upsert(profile)
    window.session.profile = profile
    console = Console(window, loop, backend)
    try:
        yield console
    finally:
        # Destroy the window here, at a known point, rather than when a later test's event
        # loop happens to run the deferred delete or the garbage collector finds it.
        window.close()
        window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
        loop.close()
        asyncio.set_event_loop(None)
        del console, window
        gc.collect()
    assert not errors, errors[0]


def test_cluster_panel_starts_scales_and_stops(console: Console) -> None:
    window = console.window

    async def scenario() -> None:
        await console.start_cluster(workers=1)
        table = window.cluster.table
        await until(lambda: table.rowCount() == 3, 10, "three services in the table")
        states = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(3)}
        assert states == {"redis": "running", "backend": "running", "worker": "running"}
        assert window.cluster.start_button.isEnabled() is False  # it runs already

        window.cluster.workers_spin.setValue(3)
        QTest.mouseClick(window.cluster.scale_button, Qt.MouseButton.LeftButton)
        await until(lambda: window.workers.table.rowCount() == 3, 60, "three live workers")
        await until(lambda: window.dashboard.cards["workers"].value.text() == "3", 20, "3 alive")

        await window.cluster.refresh(with_stats=True)
        await until(lambda: table.item(2, 4).text().endswith("%"), 10, "the workers' CPU")
        assert table.item(1, 2).text() == "healthy"

        # Stop asks first; keeping the cluster changes nothing.
        QTest.mouseClick(window.cluster.stop_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(window.cluster, "Cancel")
        await until(lambda: window.cluster.stop_button.isEnabled(), 5, "Stop offered again")
        assert window.session.last_cluster_status.running and not window.cluster.busy

        QTest.mouseClick(window.cluster.stop_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(window.cluster, "Stop")
        await until(lambda: window.cluster.busy, 5, "the stop action to begin")
        await until(lambda: not window.cluster.busy, 60, "the cluster to stop")
        status = window.session.last_cluster_status
        assert status is not None and not status.running
        assert "failed" not in window.cluster.banner.text()
        # Nothing left over from when it ran: no CPU or memory, no green health mark.
        await window.cluster.refresh(with_stats=True)
        for row in range(table.rowCount()):
            assert table.item(row, 4).text() == "" and table.item(row, 5).text() == ""
            assert table.item(row, 2).data(Qt.ItemDataRole.ForegroundRole) is None, row

    console.run(scenario)


def test_pipeline_editor_validates_saves_and_runs(console: Console) -> None:
    window = console.window
    panel = window.pipelines

    async def scenario() -> None:
        await console.start_cluster()
        window.show_panel("pipelines")
        await until(lambda: panel.list.count() >= 1, 15, "the server's pipelines")
        QTest.mouseClick(panel.new_button, Qt.MouseButton.LeftButton)
        broken = SLEEP_PIPELINE.replace("name: nap\n", "name: editor-test\n", 1).replace(
            "plugin: Debug.sleep", "plugin: Debug.nope"
        )
        panel.editor.setPlainText(broken)
        error_line = broken.splitlines().index("    plugin: Debug.nope") + 1
        await until(
            lambda: panel.editor.error_line == error_line,
            30,
            lambda: (
                f"the error line marked (label: {panel.validation_label.text()!r}, "
                f"line {panel.editor.error_line}, banner {panel.banner.text()!r})"
            ),
        )
        assert "Debug.nope" in panel.validation_label.text()

        panel.editor.setPlainText(broken.replace("Debug.nope", "Debug.sleep"))
        await until(lambda: panel.valid and panel.editor.error_line is None, 15, "valid")
        panel.editor.setFocus()
        QTest.keyClick(panel.editor, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
        await until(
            lambda: any(
                panel.list.item(i).data(Qt.ItemDataRole.UserRole) == "editor-test"
                for i in range(panel.list.count())
            ),
            15,
            "the saved pipeline in the list",
        )
        saved = await window.session.api.get_pipeline("editor-test")
        assert "Debug.sleep" in saved["yaml"]

        QTest.keyClick(panel.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        await until(lambda: panel.last_result is not None, 30, "the run's result")
        assert panel.last_result["success"] is True
        assert panel.steps_table.rowCount() == 1
        assert panel.steps_table.item(0, 2).text() == "succeeded"
        assert panel.steps_table.item(0, 3).text().endswith("ms")

    console.run(scenario)


def test_hundred_jobs_reach_jobs_table_and_dashboard(console: Console) -> None:
    window = console.window
    panel = window.pipelines

    async def scenario() -> None:
        await console.start_cluster(workers=2)
        window.show_panel("pipelines")
        await until(lambda: panel.list.count() >= 1, 15, "the server's pipelines")
        await panel.open_pipeline("nap")
        panel.count_spin.setValue(100)
        panel.priority_combo.setCurrentText("high")
        QTest.mouseClick(panel.enqueue_button, Qt.MouseButton.LeftButton)
        await until(lambda: len(panel.last_enqueued) == 100, 30, "100 jobs enqueued")
        window.show_panel("jobs")
        jobs = window.jobs

        def succeeded() -> int:
            return sum(
                1
                for job_id in panel.last_enqueued
                if (jobs.model.store.get(job_id) or {}).get("status") == "succeeded"
            )

        await until(lambda: succeeded() == 100, 60, "100 succeeded rows in the Jobs table")
        await until(
            lambda: int(window.dashboard.cards["succeeded"].value.text() or 0) >= 100,
            15,
            "the dashboard's succeeded counter at 100",
        )
        jobs.status_combo.setCurrentIndex(jobs.status_combo.findData("succeeded"))
        QTest.keyClicks(jobs.search, panel.last_enqueued[0][:10])
        await until(lambda: jobs.proxy.rowCount() == 1, 5, "the text filter to one row")
        assert len(window.dashboard.series["running"]) > 0

    console.run(scenario)


def test_logs_arrive_and_a_running_job_is_cancelled(console: Console) -> None:
    window = console.window

    async def scenario() -> None:
        await console.start_cluster()
        window.show_panel("logs")
        await until(
            lambda: any(line.service.startswith("worker") for line in window.logs.lines),
            30,
            "worker log lines",
        )
        window.logs.filter_edit.setText("zzz-no-such-line")
        assert window.logs.view.toPlainText() == ""
        window.logs.filter_edit.setText("")

        slow = SLEEP_PIPELINE.replace("seconds: 0.01", "seconds: 60")
        [job_id] = await window.session.api.enqueue(pipeline=slow)
        window.show_panel("jobs")
        jobs = window.jobs
        await until(
            lambda: (jobs.model.store.get(job_id) or {}).get("status") == "running",
            30,
            "the slow job running",
        )
        jobs.search.setText(job_id)
        await until(lambda: jobs.proxy.rowCount() == 1, 5, "the job alone in the table")
        jobs.table.selectRow(0)
        await until(lambda: "Status      running" in jobs.details.toPlainText(), 10, "details")
        QTest.mouseClick(jobs.cancel_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(jobs, "Cancel job")
        await until(
            lambda: (jobs.model.store.get(job_id) or {}).get("status") == "cancelled",
            30,
            "the job cancelled",
        )
        # The cancel's reply (read right after the cancel script: still running) comes
        # after or before the live "cancelled" event; either way the row stays cancelled.
        await until(lambda: "Cancel requested" in jobs.banner.text(), 10, "the cancel reply")
        assert jobs.model.store.get(job_id)["status"] == "cancelled"
        # The details pane follows the job it shows; the button does not offer a cancel.
        await until(
            lambda: "Status      cancelled" in jobs.details.toPlainText(),
            10,
            lambda: f"the details to follow: {jobs.details.toPlainText()!r}",
        )
        assert not jobs.cancel_button.isEnabled()

    console.run(scenario)


def test_knowledge_panel_queries_and_plots_a_twin_run(console: Console) -> None:
    import yaml

    window = console.window
    panel = window.knowledge
    ontologies = Path(__file__).resolve().parents[2] / "resources" / "ontologies"

    async def scenario() -> None:
        await console.start_cluster()
        api = window.session.api
        await api.upload_ontology("supply-chain", (ontologies / "supply_chain.ttl").read_text())
        twin = await api.create_twin("supply-chain", "supply-chain")
        scenario_doc = yaml.safe_load((ontologies / "supply_chain_scenario.yaml").read_text())
        await api.add_scenario(twin["id"], scenario_doc)
        window.show_panel("knowledge")
        await until(lambda: panel.available is True, 15, "the KG API detected")
        await until(lambda: panel.scenario_combo.count() == 1, 15, "the twin's scenario")
        panel.editor.setPlainText(
            "PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>\n"
            "PREFIX sc: <http://mimir-aip.local/ontology/supply-chain#>\n"
            "SELECT ?s ?label ?type WHERE { ?s rdfs:label ?label ; a ?type }"
        )
        QTest.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.table.rowCount() > 5, 15, "query rows in the table")
        labels = {panel.table.item(r, 1).text() for r in range(panel.table.rowCount())}
        assert "North DC" in labels
        QTest.mouseClick(panel.simulate_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.last_run is not None, 60, "the simulation's run")
        assert panel.plot is not None and len(panel.plot.getPlotItem().listDataItems()) >= 5
        assert "61 snapshots" in panel.twin_label.text()

        # IRIs by prefix (the full IRI in the tooltip); a failed query clears the rows.
        subjects = [panel.table.item(r, 0) for r in range(panel.table.rowCount())]
        # The query's own prefix (sc:), and owl: which it does not declare.
        assert any(item.text() == "sc:NorthDC" for item in subjects)
        assert all(item.toolTip().startswith("http") for item in subjects if ":" in item.text())
        types = {panel.table.item(r, 2).text() for r in range(panel.table.rowCount())}
        assert "owl:Ontology" in types or "owl:Class" in types, types
        assert "sc: <http://mimir-aip.local/ontology/supply-chain#>" in panel.prefix_label.text()
        panel.editor.setPlainText("SELECT nonsense {")
        QTest.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
        await until(lambda: "Query failed" in panel.banner.text(), 15, "the query's error")
        assert panel.table.rowCount() == 0 and panel.count_label.text() == ""
        panel.editor.setPlainText("SELECT ?s WHERE { ?s ?p ?o } LIMIT 1")
        QTest.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.count_label.text() == "1 row", 15, "one row")
        assert not panel.banner.isVisible()

    console.run(scenario)


async def _seed_twin(api: Any, noise: float = 0.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample ontology uploaded, a twin built from it and its holiday-rush scenario."""
    import yaml

    ontologies = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
    await api.upload_ontology("supply-chain", (ontologies / "supply_chain.ttl").read_text())
    twin = await api.create_twin("supply-chain", "supply-chain")
    scenario_doc = yaml.safe_load((ontologies / "supply_chain_scenario.yaml").read_text())
    scenario_doc["noise"] = noise
    return twin, await api.add_scenario(twin["id"], scenario_doc)


def test_knowledge_panel_twin_runs_compared_and_a_whatif_distribution(console: Console) -> None:
    """Issue 14: runs listed with their figures, a queued run followed to the end, two runs
    side by side (deltas coloured better/worse), the flow model's series plotted, a what-if
    followed (done/total) to its distribution and bottleneck ranking; an ontology uploaded
    from the panel."""
    from mimir.app.ui.twin_runs import VERDICT_COLORS

    window = console.window
    panel = window.knowledge
    runs = panel.runs_view
    whatif = panel.whatif_view
    ontologies = Path(__file__).resolve().parents[2] / "resources" / "ontologies"

    def cell(table: Any, row: int, column: int) -> str:
        item = table.item(row, column)
        return item.text() if item is not None else ""

    def statuses() -> list[str]:
        return [cell(runs.table, r, 3) for r in range(runs.table.rowCount())]

    async def scenario() -> None:
        await console.start_cluster()
        api = window.session.api
        twin, _ = await _seed_twin(api, noise=0.1)
        window.show_panel("knowledge")
        await until(lambda: panel.available is True, 15, "the KG API detected")
        panel.tabs.setCurrentWidget(runs)
        await until(lambda: runs.scenario_combo.count() == 1, 15, "the twin's scenario")
        assert runs.table.rowCount() == 0 and not runs.compare_button.isEnabled()

        # Run now (seed 1): listed, selected and plotted with the busiest entities.
        runs.seed_spin.setValue(1)
        QTest.mouseClick(runs.simulate_button, Qt.MouseButton.LeftButton)
        await until(lambda: runs.last_run is not None, 60, "the run plotted")
        assert statuses() == ["succeeded"] and cell(runs.table, 0, 2) == "1"
        assert cell(runs.table, 0, 4).endswith("%") and cell(runs.table, 0, 5) != "—"
        assert "61 snapshots" in runs.twin_label.text()
        names = [label.text for _, label in runs.plot.getPlotItem().legend.items]
        assert len(names) == 6 and "North DC" in names, names  # labels, not IRIs

        # Queue seed 2: the list follows it to the end without a click.
        runs.seed_spin.setValue(2)
        QTest.mouseClick(runs.queue_button, Qt.MouseButton.LeftButton)
        await until(lambda: runs.table.rowCount() == 2, 15, "the queued run listed")
        assert cell(runs.table, 0, 2) == "2"  # newest first
        await until(lambda: statuses() == ["succeeded", "succeeded"], 60, statuses)
        await until(lambda: cell(runs.table, 0, 4).endswith("%"), 10, "its fill rate")

        # Compare the two: A is the older run (seed 1), B the newer (seed 2).
        runs.select_runs([r["id"] for r in runs.runs])
        assert runs.compare_button.isEnabled()
        QTest.mouseClick(runs.compare_button, Qt.MouseButton.LeftButton)
        await until(lambda: runs.last_compare is not None, 30, "the comparison")
        seed1, seed2 = runs.runs[1]["id"], runs.runs[0]["id"]
        assert [r["id"] for r in runs.last_compare["runs"]] == [seed1, seed2]
        expected = await api.compare_runs(twin["id"], seed1, seed2)
        table = runs.system_table
        rows = {cell(table, r, 0): r for r in range(table.rowCount())}
        assert list(rows)[:4] == ["Fill rate", "Delivered", "Throughput", "Backlog at end"]
        fill = expected["system"]["fill_rate"]
        row = rows["Fill rate"]
        assert cell(table, row, 1) == f"{fill['a'] * 100:.1f}%"
        assert cell(table, row, 2) == f"{fill['b'] * 100:.1f}%"
        for metric, label, sign in (
            ("fill_rate", "Fill rate", 1),
            ("backlog", "Backlog at end", -1),
        ):
            delta = expected["system"][metric]["delta"]
            color = table.item(rows[label], 3).foreground().color()
            if abs(delta) > 1e-3 * max(1.0, abs(expected["system"][metric]["a"] or 0)):
                good = delta * sign > 0
                assert color == VERDICT_COLORS["better" if good else "worse"], (metric, delta)
        assert "Run A " + seed1[:8] in runs.compare_title.text()
        assert runs.entity_table.rowCount() == len(expected["entities"]) == 7

        # The series: backlog per entity, from GET run?points=.
        runs.select_runs([seed2])
        await until(lambda: (runs.last_run or {}).get("id") == seed2, 15, "run B plotted")
        runs.metric_combo.setCurrentText("Backlog")
        assert "backlog of the 6 busiest of 7 entities" in runs.plot_title.text()
        assert len(runs.plot.getPlotItem().listDataItems()) == 6

        # What-if: North DC's capacity -30 % over 4 seeds.
        panel.tabs.setCurrentWidget(whatif)
        whatif.target_combo.setCurrentIndex(whatif.target_combo.findText("North DC"))
        whatif.change_combo.setCurrentIndex(whatif.change_combo.findData("capacity"))
        whatif.percent_spin.setValue(-30)
        whatif.seeds_spin.setValue(4)
        assert whatif.change() == {
            "target": "http://mimir-aip.local/ontology/supply-chain#NorthDC",
            "parameter": "capacity",
            "factor": 0.7,
        }
        QTest.mouseClick(whatif.run_button, Qt.MouseButton.LeftButton)
        await until(lambda: whatif.progress.isVisible(), 15, "the progress bar")
        assert whatif.progress.maximum() == 8 and not whatif.run_button.isEnabled()
        await until(lambda: whatif.batch is not None, 90, lambda: whatif.status_label.text())
        assert whatif.batch["status"] == "succeeded", whatif.batch
        assert whatif.progress.value() == 8
        assert whatif.progress.text() == "8 of 8 runs"
        assert whatif.status_label.text().endswith(": succeeded")
        assert "North DC capacity -30 %" in whatif.status_label.text()
        metrics = [cell(whatif.table, r, 0) for r in range(whatif.table.rowCount())]
        assert metrics[:5] == [
            "Fill rate", "Delivered", "Backlog at end", "Peak backlog", "Avg utilisation"
        ]  # fmt: skip
        fill_row = whatif.table.item(0, 3)
        # Less capacity at the bottleneck: fewer deliveries, a worse fill rate in red.
        assert (
            fill_row.text().startswith("-")
            and fill_row.foreground().color() == (VERDICT_COLORS["worse"])
        )
        assert len(whatif.plots) == 5
        assert whatif.bottlenecks.rowCount() >= 1
        assert cell(whatif.bottlenecks, 0, 0) == "North DC"
        assert whatif.run_button.isEnabled()
        # Listed among the twin's what-ifs, and shown again from there.
        await until(lambda: whatif.history_combo.count() == 2, 10, "the what-if listed")
        assert whatif.history_combo.currentText() == (
            "North DC capacity -30 % · base holiday-rush · 4 seeds"
        )
        batch_id = whatif.batch["batch_id"]
        whatif.clear()
        assert whatif.table.rowCount() == 0
        whatif.show_earlier(batch_id)
        await until(lambda: whatif.batch is not None, 15, "the earlier what-if shown again")
        assert whatif.table.rowCount() >= 5 and whatif.progress.text() == "8 of 8 runs"

        # The outage form: a supplier out for 10 days from day 20.
        whatif.target_combo.setCurrentIndex(whatif.target_combo.findText("SteelCo"))
        whatif.change_combo.setCurrentIndex(whatif.change_combo.findData("outage"))
        assert whatif.days_spin.isVisible() and not whatif.percent_spin.isVisible()
        assert whatif.change()["event"]["type"] == "resource.unavailable"

        # An ontology uploaded from the panel (the file dialog's choice).
        panel.tabs.setCurrentIndex(0)
        info = await panel.upload(ontologies / "supply_chain.ttl", "supply-chain-copy")
        assert info is not None and "Uploaded supply_chain.ttl" in panel.upload_label.text()

    console.run(scenario)


FAILING = """\
name: flaky
steps:
  - name: fetch
    plugin: Debug.fail
    config: {message: "upstream 503"}
"""


def test_dead_letter_view_retries_and_deletes_in_bulk(console: Console) -> None:
    """Issue 13: dead-lettered jobs showed as ``failed`` (the ``dead`` filter showed 0
    while the Dashboard said DEAD LETTER 3); a retried job kept its old start time ("Ran
    44.2 s" for a 1 ms run); there was no bulk retry or delete."""
    window = console.window
    jobs = window.jobs

    async def scenario() -> None:
        await console.start_cluster()
        api = window.session.api
        ids = await api.enqueue(pipeline=FAILING, count=3, max_retries=0)
        await until(
            lambda: (window.session.feed.last_stats or {}).get("dead") == 3, 30, "3 dead letters"
        )
        window.show_panel("jobs")
        await until(lambda: jobs.tabs.tabText(1) == "Dead letter (3)", 10, "the tab's count")
        jobs.status_combo.setCurrentIndex(jobs.status_combo.findData(DEAD_LETTER))
        await until(lambda: jobs.proxy.rowCount() == 3, 10, "3 rows in the dead-letter filter")

        jobs.tabs.setCurrentIndex(1)
        view = jobs.dead_letter
        await until(lambda: view.table.rowCount() == 3, 10, "3 dead-letter entries")
        assert view.summary.text() == "3 jobs in the dead letter"
        first = ids[0]
        before = (await api.get_job(first))["started_at"]
        view.table.selectRow([e["job_id"] for e in view.entries].index(first))
        QTest.mouseClick(view.retry_button, Qt.MouseButton.LeftButton)
        # It runs again (and fails again): the row follows the new run, not the old one.
        await until(
            lambda: (
                (jobs.model.store.get(first) or {}).get("started_at") not in (None, before)
                and (jobs.model.store.get(first) or {}).get("status") == "failed"
            ),
            30,
            lambda: f"the retried run in the table: {jobs.model.store.get(first)}",
        )
        record = await api.get_job(first)
        row = jobs.model.store.get(first)
        assert row["started_at"] == record["started_at"]
        assert row["finished_at"] == record["finished_at"]
        assert row["version"] == record["version"]
        await until(lambda: view.table.rowCount() == 3, 10, "the retried job back in the view")
        # The view is busy (its buttons disabled) until the retry's own refresh is back.
        await until(
            lambda: not view.busy and view.select_all_button.isEnabled(), 20, "the view idle"
        )

        QTest.mouseClick(view.select_all_button, Qt.MouseButton.LeftButton)
        assert len(view.selected_ids()) == 3
        QTest.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(view, "Delete")
        await until(lambda: view.table.rowCount() == 0, 15, "an empty dead letter")
        assert "Deleted 3 jobs" in view.banner.text()
        assert all(jobs.model.store.get(job_id) is None for job_id in ids)
        await until(lambda: window.dashboard.cards["dead"].value.text() == "0", 10, "DEAD 0")
        assert jobs.tabs.tabText(1) == "Dead letter"

    console.run(scenario)


def test_pipelines_examples_saved_in_place_and_nothing_stale(
    console: Console, tmp_path: Path
) -> None:
    """Issue 13: an empty server showed an empty list with no way to add the examples;
    saving an opened example wrote a second file named after its ``name:`` (mode 0600);
    "Cannot list pipelines" outlived a good refresh; the last pipeline's result stayed
    under the next one; focus jumped to the job count after Run now."""
    window = console.window
    panel = window.pipelines
    (tmp_path / "pipelines" / "nap.yaml").unlink()

    async def scenario() -> None:
        await console.start_cluster()
        window.show_panel("pipelines")
        await until(lambda: panel.examples_button.isVisible(), 15, "the examples offered")
        QTest.mouseClick(panel.examples_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.list.count() == 4, 15, "the four examples listed")
        assert "Added 4 example pipelines" in panel.banner.text()
        assert (tmp_path / "data" / "sales.csv").is_file()  # what sales_report reads
        assert not panel.examples_button.isVisible()

        await panel.open_pipeline("sales_report")
        text = panel.editor.toPlainText()
        assert "name: sales-report" in text  # file and declared name differ
        panel.editor.setPlainText(text.replace("description:", "description: edited,", 1))
        panel.editor.setFocus()
        QTest.keyClick(panel.editor, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
        await until(lambda: "Saved sales_report" in panel.banner.text(), 15, "saved")
        files = sorted(p.name for p in (tmp_path / "pipelines").iterdir())
        assert files == sorted(f"{n}.yaml" for n in SHIPPED_EXAMPLES), files
        saved = tmp_path / "pipelines" / "sales_report.yaml"
        assert "edited," in saved.read_text()
        umask = os.umask(0)
        os.umask(umask)
        assert saved.stat().st_mode & 0o777 == 0o666 & ~umask  # (the server's umask: ours)

        window.activateWindow()
        panel.run_button.setFocus()
        await until(lambda: panel.run_button.hasFocus(), 5, "the focus on Run now")
        QTest.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.last_result is not None, 60, "the run's result")
        assert panel.last_result["success"], panel.last_result
        assert panel.steps_table.rowCount() == text.count("plugin:")
        assert panel.run_button.hasFocus() and not panel.count_spin.hasFocus()
        await panel.open_pipeline("test_pipeline")
        assert panel.last_result is None and panel.steps_table.rowCount() == 0
        assert "Succeeded" not in panel.result_label.text()

        url = window.session.api.base_url
        window.session.api.configure(f"http://127.0.0.1:{free_port()}")
        await panel.refresh_list()
        assert "Cannot list pipelines" in panel.banner.text()
        window.session.api.configure(url)
        await panel.refresh_list()
        assert not panel.banner.isVisible()

    console.run(scenario)


SHIPPED_EXAMPLES = ("ai_summary", "sales_report", "sales_report_pdf", "test_pipeline")


def test_logs_per_worker_on_a_fresh_view_and_dashboard_names_workers(console: Console) -> None:
    """Issue 13: all workers were one entry in Logs; choosing another source kept the last
    one's lines; a filter left the view scrolled right; the Dashboard's CPU and memory
    legends named workers by pid."""
    window = console.window
    logs = window.logs

    async def scenario() -> None:
        await console.start_cluster(workers=2)
        window.show_panel("logs")
        combo = logs.service_combo

        def sources() -> list[str]:
            return [str(combo.itemData(i)) for i in range(combo.count())]

        await until(
            lambda: {"worker-1", "worker-2"} <= set(sources()), 20, lambda: f"workers: {sources()}"
        )
        await until(lambda: any(x.service == "backend" for x in logs.lines), 30, "backend lines")
        combo.setCurrentIndex(sources().index("worker-2"))
        assert not any(line.service == "backend" for line in logs.lines)
        await until(lambda: len(logs.lines) > 0, 30, "worker-2's lines")
        assert {line.service for line in logs.lines} == {"worker-2"}
        assert "backend" not in logs.view.toPlainText()

        logs.add_line(LogLine("worker-2", "x" * 3000))  # a long line, scrolled to its end
        logs.filter_edit.setText("worker")
        assert logs.view.horizontalScrollBar().value() == 0

        window.show_panel("dashboard")
        dashboard = window.dashboard

        def legend(plot: Any) -> list[str]:
            return [label.text for _, label in plot.legend.items]

        await until(
            lambda: dashboard.redraw() or legend(dashboard.cpu_plot) == ["worker-1", "worker-2"],
            20,
            lambda: f"worker names in the legend: {legend(dashboard.cpu_plot)}",
        )
        assert legend(dashboard.mem_plot) == ["worker-1", "worker-2"]  # in name order
        table = window.workers.table  # the same names in the Workers panel
        await until(
            lambda: (
                [table.item(r, 0).text() for r in range(table.rowCount())]
                == ["worker-1", "worker-2"]
            ),
            10,
            "the workers' names in the Workers panel",
        )

        # The Jobs table names workers the same way, and its filter finds them by name.
        ids = await window.session.api.enqueue(pipeline=SLEEP_PIPELINE, count=4)
        jobs = window.jobs
        window.show_panel("jobs")
        model = jobs.model

        def shown_workers() -> set[str]:
            column = next(
                c
                for c in range(model.columnCount())
                if model.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole)
                == "Worker"
            )
            return {
                str(model.data(model.index(row, column)))
                for row in range(model.rowCount())
                if model.record(row).get("job_id") in ids
            }

        await until(
            lambda: shown_workers() and shown_workers() <= {"worker-1", "worker-2"},
            20,
            lambda: f"worker names in the Jobs table: {shown_workers()}",
        )
        name = sorted(shown_workers())[0]
        jobs.search.setText(name)
        assert jobs.proxy.rowCount() >= 1
        jobs.table.selectRow(0)  # the details name the worker as the table does, with its id
        await until(
            lambda: f"Worker      {name} (worker-" in jobs.details.toPlainText(),
            10,
            lambda: f"the worker in the details: {jobs.details.toPlainText()!r}",
        )
        jobs.search.setText("")

    console.run(scenario)


def test_cluster_panel_diagnose_shows_findings_worst_first(console: Console) -> None:
    window = console.window
    panel = window.cluster

    async def scenario() -> None:
        await console.start_cluster(workers=1)
        assert panel.diagnosis_box.isHidden()
        QTest.mouseClick(panel.diagnose_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.last_report is not None, 60, "a healthy cluster diagnosed")
        assert panel.findings_table.rowCount() == 0
        assert "nothing wrong" in panel.diagnosis_summary.text()
        assert not panel.diagnosis_box.isHidden()

        # Break it: jobs for a queue no worker serves, and a job in the dead letter.
        api = window.session.api
        await api.enqueue(name="nap", count=3, queue="gpu")
        failing = {"name": "f", "steps": [{"name": "f", "plugin": "Debug.fail",
                                           "config": {"message": "planned"}}]}  # fmt: skip
        [job] = await api.enqueue(pipeline=failing, max_retries=0)
        await until_async(lambda: _status(api, job), 30, "the failing job to fail")
        panel.last_report = None
        QTest.mouseClick(panel.diagnose_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.last_report is not None, 60, "the broken cluster diagnosed")
        table = panel.findings_table
        rows = [[table.item(r, c).text() for c in range(4)] for r in range(table.rowCount())]
        assert [r[0] for r in rows] == ["ERROR", "WARNING"], rows
        assert (
            rows[0][1].startswith("Jobs wait in a queue no worker serves") and "gpu" in rows[0][1]
        )
        assert "3 jobs in 'gpu'" in rows[0][2] and "--queues gpu" in rows[0][3]
        assert "planned" in rows[1][2]
        assert "1 error, 1 warning" in panel.diagnosis_summary.text()

    console.run(scenario)


async def _status(api: Any, job_id: str) -> bool:
    return (await api.get_job(job_id))["status"] == "failed"


async def until_async(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
