"""``python -m mimir.app.screenshots OUT_DIR``: render every console panel, with real data, to PNG.

Starts a throw-away local cluster from a cluster file (redis-server, the API server, two
worker pools: ``default``, autoscaled, and ``slow``) in a scratch directory seeded with
the example pipelines, enqueues waves of real jobs (some slow, some failing, some for the
``slow`` pool) for ``--seconds`` so the plots and the autoscaler have history, then grabs
each panel (``cluster-pools`` and ``dashboard-autoscaler`` once the autoscaler has
decided); then cleans the cluster away and removes the scratch directory. The cluster's
processes log JSON lines (``MIMIR_LOG_FORMAT=json`` unless set): the Logs panel's shot is
``logs-json.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from mimir.core.resources import resources_dir

__all__ = ["main"]

RESOURCES = resources_dir()

NAP = """\
name: nightly-etl
description: extract, transform and load (simulated)
steps:
  - name: extract
    plugin: Debug.sleep
    config: {seconds: 0.2}
    output: extracted
  - name: transform
    plugin: Debug.sleep
    config: {seconds: 0.4}
    output: transformed
"""

FLAKY = """\
name: flaky-import
description: fails on purpose, to show failures and the dead letter
steps:
  - name: fetch
    plugin: Debug.fail
    config: {message: "upstream returned 503 Service Unavailable"}
"""

#: The demo cluster: ``default`` autoscaled on its backlog, ``slow`` sized by hand.
CLUSTER_FILE = """\
version: 1
autoscaler:
  period: 2
pools:
  default:
    replicas: 2
    min: 1
    max: 5
    autoscale: {target_backlog: 8, cooldown_up: 3, cooldown_down: 8}
  slow:
    queues: [slow]
    concurrency: 2
    replicas: 1
    min: 0
    max: 2
"""


KG_QUERY = """\
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX sc: <http://mimir-aip.local/ontology/supply-chain#>
SELECT ?entity ?type ?label ?capacity
WHERE { ?entity a ?type ; rdfs:label ?label . OPTIONAL { ?entity sc:capacity ?capacity } }
ORDER BY ?type ?entity LIMIT 40"""


async def _seed_knowledge(api) -> dict[str, Any] | None:
    """The sample ontology, a twin built from it, its holiday-rush scenario and a quiet
    baseline (both with a little noise, so that seeds differ); the twin, or None."""
    import yaml

    ontology = RESOURCES / "ontologies" / "supply_chain.ttl"
    scenario = RESOURCES / "ontologies" / "supply_chain_scenario.yaml"
    try:
        await api.upload_ontology("supply-chain", ontology.read_text())
        twin = await api.create_twin("supply-chain", "supply-chain")
        rush = {**yaml.safe_load(scenario.read_text()), "noise": 0.1}
        baseline = {
            "id": "baseline",
            "name": "baseline",
            "description": "No events: the stores' usual demand",
            "duration": rush.get("duration", 60),
            "noise": 0.1,
            "seed": 42,
            "events": [],
        }
        await api.add_scenario(twin["id"], baseline)
        await api.add_scenario(twin["id"], rush)
        return dict(twin)
    except Exception as exc:  # the shot still shows the panel
        print(f"screenshots: knowledge seed failed: {exc}")
        return None


async def _grab_knowledge(window, api, grab) -> None:
    """The Knowledge panel: a query (IRIs by prefix), twin runs with two compared (the
    baseline against the holiday rush) and a what-if's distribution."""
    knowledge = window.knowledge
    await knowledge.check_available()
    twin = await _seed_knowledge(api) if knowledge.available else None
    if twin is None:
        await grab("knowledge", 1.0)
        return
    await knowledge.load_twins(select=twin["id"])
    knowledge.editor.setPlainText(KG_QUERY)
    knowledge.editor.verticalScrollBar().setValue(0)  # the query from its first PREFIX
    await knowledge.run_query()
    knowledge.tabs.setCurrentIndex(0)
    await grab("knowledge", 1.0)

    runs = knowledge.runs_view
    knowledge.tabs.setCurrentWidget(runs)
    combo = runs.scenario_combo
    combo.setCurrentIndex(combo.findData("baseline"))
    baseline = await runs.run_scenario(False)
    combo.setCurrentIndex(combo.findText("holiday-rush"))
    rush = await runs.run_scenario(False)
    runs.seed_spin.setValue(7)
    await runs.run_scenario(True)  # a queued one, followed to its end
    await _soon(
        lambda: all(r.get("status") == "succeeded" for r in runs.runs), 30, "the queued run"
    )
    if baseline and rush:
        runs.select_runs([baseline["id"], rush["id"]])
        await runs.compare(baseline["id"], rush["id"])
        runs.table.blockSignals(True)
        runs.select_runs([baseline["id"], rush["id"]])
        runs.table.blockSignals(False)
        await runs.load_run(rush["id"])
        runs.metric_combo.setCurrentText("Backlog")
    await grab("knowledge", 1.0, "knowledge-twins")

    whatif = knowledge.whatif_view
    knowledge.tabs.setCurrentWidget(whatif)
    whatif.scenario_combo.setCurrentIndex(whatif.scenario_combo.findText("holiday-rush"))
    whatif.target_combo.setCurrentIndex(whatif.target_combo.findText("North DC"))
    whatif.change_combo.setCurrentIndex(whatif.change_combo.findData("capacity"))
    whatif.percent_spin.setValue(20)
    whatif.seeds_spin.setValue(10)
    await whatif.run_whatif()
    await _soon(lambda: whatif.batch is not None, 90, "the what-if's distribution")
    await grab("knowledge", 1.0, "knowledge-whatif")
    knowledge.tabs.setCurrentIndex(0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(scratch: Path) -> None:
    for name in ("data", "pipelines", "state"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    for source, target in ((RESOURCES / "pipelines", "pipelines"), (RESOURCES / "data", "data")):
        if source.is_dir():
            shutil.copytree(source, scratch / target, dirs_exist_ok=True)
    (scratch / "pipelines" / "nightly_etl.yaml").write_text(NAP)
    (scratch / "pipelines" / "flaky_import.yaml").write_text(FLAKY)
    (scratch / "mimir-cluster.yaml").write_text(CLUSTER_FILE)
    os.environ.update(
        MIMIR_DATA_DIR=str(scratch / "data"),
        MIMIR_PIPELINES_DIR=str(scratch / "pipelines"),
        MIMIR_STATE_DIR=str(scratch / "state"),
    )
    os.environ.pop("REDIS_URL", None)


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"screenshots: {what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def _render(window, out: Path, seconds: float, scratch: Path) -> list[Path]:
    session = window.session
    api = session.api
    window.show_panel("cluster")
    if await window.cluster.load_cluster_file(scratch / "mimir-cluster.yaml") is None:
        raise RuntimeError(f"screenshots: {window.cluster.banner.text()}")
    await window.cluster.start_cluster()
    if not (session.last_cluster_status and session.last_cluster_status.running):
        raise RuntimeError(f"screenshots: cluster did not start: {window.cluster.banner.text()}")
    await _until(lambda: session.feed.last_stats is not None, 30, "live stats")

    await _seed_runs(api)
    # Waves of real work: bursts at each priority, a few failures, one long runner.
    started = time.monotonic()
    wave = 0
    await api.enqueue(name="flaky-import", count=3, priority="low", max_retries=0)
    while time.monotonic() - started < seconds:
        wave += 1
        count = 10 + (wave * 7) % 35
        priority = ("normal", "high", "normal", "low")[wave % 4]
        await api.enqueue(name="nightly-etl", count=count, priority=priority)
        if wave % 3 == 0:
            await api.enqueue(name="nightly-etl", count=3, queue="slow")
        if wave % 5 == 0:
            await api.enqueue(name="flaky-import", count=1, max_retries=0)
        await asyncio.sleep(3.0)
    long_job = {
        "name": "model-training",
        "steps": [{"name": "train", "plugin": "Debug.sleep", "config": {"seconds": 120}}],
    }
    long_ids = await api.enqueue(pipeline=long_job, count=2, priority="high")
    await asyncio.sleep(2.0)

    shots: list[Path] = []

    async def grab(key: str, settle: float = 0.6, name: str | None = None) -> None:
        window.show_panel(key)
        await asyncio.sleep(settle)  # the loop paints meanwhile (never processEvents here)
        window.dashboard.redraw()
        path = out / f"{name or key}.png"
        window.grab().save(str(path))
        shots.append(path)
        print(f"screenshots: {path}")

    await window.cluster.refresh(with_stats=True)
    await grab("cluster")
    await grab("dashboard", 1.2)
    # The autoscaler's work: the pools' groups and its decisions on the Dashboard.
    recorder = session.recorder
    await _soon(lambda: len(recorder.decisions) >= 2, 30, "two autoscaler decisions")
    await session.feed.read_autoscaler()
    await window.cluster.refresh(with_stats=True)
    window.cluster.scroll_to(window.cluster.pools_box)
    await grab("cluster", 0.8, "cluster-pools")
    window.cluster.scroll_to(window.cluster.profile_combo)
    await grab("dashboard", 1.2, "dashboard-autoscaler")
    await window.pipelines.open_pipeline("sales_report")
    await window.pipelines.validate()
    await window.pipelines.run_now()
    await grab("pipelines")
    window.jobs.refresh()
    await _until(lambda: window.jobs.model.rowCount() > 0, 15, "jobs in the table")
    failed = window.jobs.proxy
    for row in range(failed.rowCount()):
        if failed.data(failed.index(row, 1)) == "failed":
            window.jobs.table.selectRow(row)
            break
    await grab("jobs", 1.0)
    window.jobs.tabs.setCurrentIndex(1)
    await _until(lambda: window.jobs.dead_letter.entries, 15, "the dead letter listed")
    await grab("jobs", 0.6, "dead_letter")
    window.jobs.tabs.setCurrentIndex(0)
    await grab("workers")
    await _until(lambda: len(window.logs.lines) > 20, 20, "log lines")
    # The cluster logs JSON lines (MIMIR_LOG_FORMAT=json, set in main): levels coloured,
    # job ids as links. Filtered to the workers' lines (the jobs' failures, the autoscaled
    # workers' starts and stops): the API's enqueue lines would fill the view otherwise.
    window.logs.filter_edit.setText("mimir.worker")
    await grab("logs", 0.6, "logs-json")
    window.logs.filter_edit.setText("")
    await _grab_knowledge(window, api, grab)
    await _grab_runs(window, api, grab, out, shots)

    # The Diagnose view on a cluster broken on purpose: a frozen worker (SIGSTOP) holding a
    # long job, jobs on a queue nobody serves; the failed imports are in the dead letter.
    await api.enqueue(name="nightly-etl", count=4, queue="gpu")
    holders = [w for w in await api.workers() if set(w.get("current_jobs", [])) & set(long_ids)]
    frozen = int(holders[0]["pid"]) if holders else 0
    if frozen:
        os.kill(frozen, signal.SIGSTOP)
    try:
        if frozen:
            await _until_async(
                lambda: _gone(api, frozen), 20, "the frozen worker's heartbeat to expire"
            )
        window.show_panel("cluster")
        await window.cluster.run_diagnosis()
        window.cluster.scroll_to(window.cluster.diagnosis_box)
        await grab("cluster", 0.8, "doctor")
    finally:
        if frozen:
            os.kill(frozen, signal.SIGCONT)
    return shots


async def _seed_runs(api) -> None:
    """Schedules (one firing every 10 s, so it has runs; one paused) and alert rules."""
    from mimir.app.services.runs import RunsClient

    client = RunsClient(api)
    schedules: list[dict[str, Any]] = [
        {"name": "sales-every-10s", "pipeline_name": "sales-report", "interval": "10s"},
        {
            "name": "nightly-etl",
            "pipeline_name": "nightly-etl",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "misfire": "run_once",
        },
        {
            "name": "workday-import",
            "pipeline_name": "flaky-import",
            "cron": "0 9 * * 1-5",
            "timezone": "UTC",
            "overlap": "skip",
            "max_retries": 0,
        },
        {"name": "hourly-digest", "pipeline_name": "nightly-etl", "cron": "15 * * * *"},
    ]
    rules: list[dict[str, Any]] = [
        {
            "name": "flaky import failing",
            "kind": "run_failed",
            "pipeline": "flaky-import",
            "channels": [
                {"type": "webhook", "url": "http://127.0.0.1:9/hooks/ops"},
                {"type": "email", "to": ["ops@example.com"]},
            ],
            "cooldown_seconds": 600,
        },
        {
            "name": "error rate",
            "kind": "failure_rate",
            "threshold": 0.25,
            "window_seconds": 900,
            "min_runs": 20,
        },
        {"name": "gpu backlog", "kind": "backlog", "queue": "gpu", "max_length": 2},
        {"name": "lost workers", "kind": "worker_lost"},
        {"name": "missed schedules", "kind": "schedule_missed", "grace_seconds": 120},
    ]
    try:
        for body in schedules:
            await client.create_schedule(body)
        paused = [s for s in await client.list_schedules() if s["name"] == "hourly-digest"]
        for schedule in paused:
            await client.schedule_action(schedule["id"], "pause")
        for body in rules:
            await client.create_rule(body)
    except Exception as exc:  # the shots still show the panels
        print(f"screenshots: schedules/alerts seed failed: {exc}")


async def _soon(condition, timeout: float, what: str) -> bool:
    """Like :func:`_until`, but a shot without the data is still taken (with a warning)."""
    try:
        await _until(condition, timeout, what)
    except RuntimeError as exc:
        print(f"{exc}; taking the shot anyway")
        return False
    return True


async def _grab_runs(window, api, grab, out: Path, shots: list[Path]) -> None:
    """History (a run with its steps and artifacts), Schedules with the editor, Alerts."""
    history = window.history
    await api.enqueue(name="sales-report", context={"requested_by": "screenshots"})
    window.show_panel("history")
    await history.refresh()
    await _until(lambda: history.table.rowCount() > 0, 20, "runs in History")
    row = next(
        (
            r
            for r in range(history.table.rowCount())
            if history.table.item(r, 1).text() == "sales-report"
        ),
        0,
    )
    history.table.selectRow(row)
    await _soon(lambda: history.steps.rowCount() > 0, 10, "the run's steps")
    await grab("history", 1.0)
    history.tabs.setCurrentIndex(1)
    await grab("history", 0.4, "history_logs")
    history.tabs.setCurrentIndex(2)
    await grab("history", 0.4, "history_artifacts")
    history.tabs.setCurrentIndex(0)

    schedules = window.schedules
    window.show_panel("schedules")
    await schedules.refresh()
    for index, schedule in enumerate(schedules.schedules):
        if schedule.get("name") == "sales-every-10s":
            schedules.table.selectRow(index)
    await _soon(lambda: schedules.recent_table.rowCount() > 0, 20, "a schedule's runs")
    await grab("schedules", 0.8)
    nightly = next((s for s in schedules.schedules if s["name"] == "workday-import"), None)
    dialog = await schedules.edit_schedule(nightly)
    if dialog is not None:
        await asyncio.sleep(1.0)  # the server's preview of the next fire times
        path = out / "schedule_editor.png"
        dialog.grab().save(str(path))
        shots.append(path)
        print(f"screenshots: {path}")
        dialog.reject()

    alerts = window.alerts
    await _soon(lambda: window.alerts_indicator.firing, 30, "an alert firing")
    window.show_panel("alerts")
    await alerts.refresh()
    if alerts.alert_table.rowCount():
        alerts.alert_table.selectRow(0)
    await grab("alerts", 0.8)
    alerts.tabs.setCurrentIndex(1)
    await grab("alerts", 0.5, "alert_rules")
    rule = next((r for r in alerts.rules if r.get("kind") == "run_failed"), None)
    editor = await alerts.edit_rule(rule)
    if editor is not None:
        await asyncio.sleep(0.5)
        path = out / "alert_rule_editor.png"
        editor.grab().save(str(path))
        shots.append(path)
        print(f"screenshots: {path}")
        editor.reject()
    alerts.tabs.setCurrentIndex(0)


async def _gone(api, pid: int) -> bool:
    return all(int(w.get("pid", 0)) != pid for w in await api.workers())


async def _until_async(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"screenshots: {what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mimir.app.screenshots")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=45.0, help="history before the shots")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # The demo cluster's processes log JSON lines, as the Logs panel's shot shows them.
    os.environ.setdefault("MIMIR_LOG_FORMAT", "json")
    scratch = Path(tempfile.mkdtemp(prefix="mimir-shots-"))
    _seed(scratch)

    import logging

    import qasync
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from mimir.app.cluster.local import LocalBackend
    from mimir.app.services.profiles import ConnectionProfile
    from mimir.app.ui.app import build_window, install_excepthook
    from mimir.app.ui.common import load_stylesheet
    from mimir.core.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    # instance() is typed as QCoreApplication; this process only ever makes a QApplication.
    app = cast(QApplication, QApplication.instance() or QApplication(sys.argv[:1]))
    app.setStyleSheet(load_stylesheet())
    errors = install_excepthook(show_dialog=False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    port = _free_port()
    backend = LocalBackend("demo", Settings.from_env(), api_port=port, worker_concurrency=4)
    settings = QSettings(str(scratch / "console.ini"), QSettings.Format.IniFormat)
    window = build_window(settings, backend)
    profile = ConnectionProfile("Local processes", "local_processes", f"http://127.0.0.1:{port}")
    window.session.profiles.upsert(profile)
    window.session.profile = profile
    window.resize(args.width, args.height)
    window.show()
    window.start()

    async def run() -> int:
        try:
            await _render(window, args.out_dir, args.seconds, scratch)
        finally:
            await window.session.feed.stop()
            await window.logs.stop()
            await backend.clean()
            await window.shutdown()
        if errors:
            print(f"screenshots: unhandled errors:\n{errors[0]}", file=sys.stderr)
            return 1
        return 0

    try:
        with loop:
            return loop.run_until_complete(run())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # data, pipelines, state, settings


if __name__ == "__main__":
    raise SystemExit(main())
