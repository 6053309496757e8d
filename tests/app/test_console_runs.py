"""The History, Schedules and Alerts views driven as an operator would, offscreen, against a
real stack (redis-server, ``mimir server`` and a ``mimir worker`` as child processes) with
real runs in its run store. Waits are on conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mimir.app.services.cron_text import describe_cron, describe_interval
from mimir.app.services.runs import RunQuery, rerun_body, rule_condition
from tests.app.conftest import Stack

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

REPORT = """\
name: report
description: naps, then writes a small JSON report
steps:
  - name: nap
    plugin: Debug.sleep
    config: {seconds: 0.05}
    output: napped
  - name: write
    plugin: Output.json
    config:
      input: {region: "{{ region }}", units: 12}
      file_path: "reports/{{ region }}.json"
    output: written
"""

BROKEN = """\
name: broken
description: fails on purpose
steps:
  - name: fetch
    plugin: Debug.fail
    config: {message: "upstream returned 503"}
"""

SLOW = """\
name: slow
steps:
  - name: first
    plugin: Debug.sleep
    config: {seconds: 1.5}
    output: a
  - name: second
    plugin: Debug.sleep
    config: {seconds: 1.5}
    output: b
"""


# ---------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("30 2 * * *", "at 02:30 every day"),
        ("0 9 * * 1-5", "at 09:00 on Monday\u2013Friday"),
        ("0 9 * * MON-FRI", "at 09:00 on Monday\u2013Friday"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("15 */2 * * *", "every 2 hours at :15"),
        ("0 * * * *", "every hour at :00"),
        ("0 0 1 * *", "at 00:00 on the 1st of every month"),
        ("0 6 * * 0,6", "at 06:00 on Sunday and Saturday"),
        ("@daily", "at 00:00 every day"),
        ("*/10 * * * * *", "every 10 seconds"),  # 6 fields: seconds first
        ("30 0 9 * * *", "at 09:00:30 every day"),
        # Beyond the common forms: the expression itself, never a wrong sentence.
        ("*/15 9-17 * * 1-5", "*/15 9-17 * * 1-5"),
        ("0 0 13 * 5", "0 0 13 * 5"),
        ("0 0 L * *", "0 0 L * *"),
        ("not cron", "not cron"),
    ],
)
def test_cron_in_words(expression: str, words: str) -> None:
    assert describe_cron(expression) == words


def test_interval_in_words() -> None:
    assert describe_interval("30s") == "every 30 seconds"
    assert describe_interval("1m") == "every minute"
    assert describe_interval("1h30m") == "every 1 hour 30 minutes"
    assert describe_interval("soon") == "soon"


def test_run_again_body_and_filters() -> None:
    run = {
        "job_id": "j1",
        "definition": {"name": "p", "steps": []},
        "context": {"region": "north"},
        "queue": "gpu",
        "priority": "high",
        "timeout": None,
        "max_retries": 2,
    }
    assert rerun_body(run) == {
        "pipeline": {"name": "p", "steps": []},
        "context": {"region": "north"},
        "queue": "gpu",
        "priority": "high",
        "max_retries": 2,
    }
    params = RunQuery(q=" 503 ", status="failed", pipeline="").params()
    assert params == {"q": "503", "status": "failed"}
    assert (
        rule_condition({"kind": "run_failed", "pipeline": "etl"}) == "a run of etl failed or dead"
    )


# ---------------------------------------------------------------------------- the stack


async def until(condition: Callable[[], Any], timeout: float, what: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what() if callable(what) else what}"
            )
        await asyncio.sleep(0.05)


@pytest.fixture
def runs_stack(tmp_path: Path, stack: Stack) -> Stack:
    pipelines = tmp_path / "pipelines"
    (pipelines / "report.yaml").write_text(REPORT)
    (pipelines / "broken.yaml").write_text(BROKEN)
    (pipelines / "slow.yaml").write_text(SLOW)
    return stack


class Console:
    def __init__(self, window: Any, loop: Any, stack: Stack) -> None:
        self.window = window
        self.loop = loop
        self.stack = stack
        self.http = httpx.Client(base_url=stack.url, timeout=10)

    def run(self, scenario: Callable[[], Any]) -> Any:
        async def session() -> Any:
            self.window.show()
            self.window.start()
            try:
                return await scenario()
            finally:
                await self.window.shutdown()

        return self.loop.run_until_complete(session())

    def enqueue(self, name: str, context: dict[str, Any] | None = None, **options: Any) -> str:
        body = {"pipeline_name": name, "context": context or {}, **options}
        answer = self.http.post("/api/v1/queue/pipelines/enqueue", json=body)
        answer.raise_for_status()
        return str(answer.json()["job_id"])

    def runs(self, **params: Any) -> list[dict[str, Any]]:
        answer = self.http.get("/api/v1/runs", params={"limit": 1000, **params})
        answer.raise_for_status()
        return list(answer.json()["runs"])


@pytest.fixture
def console(qapp: Any, tmp_path: Path, runs_stack: Stack) -> Iterator[Console]:
    from mimir.app.services.profiles import ConnectionProfile
    from mimir.app.ui.app import build_window, install_excepthook

    errors = install_excepthook(show_dialog=False)
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    window = build_window(settings)
    profile = ConnectionProfile("Test", "remote_api", api_url=runs_stack.url)
    window.session.profiles.upsert(profile)
    window.session.profile = profile
    window.resize(1440, 900)
    console = Console(window, loop, runs_stack)
    try:
        yield console
    finally:
        console.http.close()
        window.close()
        window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
        loop.close()
        asyncio.set_event_loop(None)
        del console, window
        gc.collect()
    assert not errors, errors[0]


def _column(table: Any, column: int) -> list[str]:
    return [table.item(row, column).text() for row in range(table.rowCount())]


# ---------------------------------------------------------------------------- History


def test_history_searches_pages_shows_a_run_and_runs_it_again(
    console: Console, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mimir.app.ui import history_panel

    monkeypatch.setattr(history_panel, "PAGE", 4)
    window = console.window
    panel = window.history
    regions = [f"r{i}" for i in range(7)]
    ids = [console.enqueue("report", {"region": region}) for region in regions]
    failed = [console.enqueue("broken", max_retries=0) for _ in range(2)]

    async def scenario() -> None:
        await until(lambda: len(console.runs()) == 9, 60, lambda: console.runs())
        window.show_panel("history")
        await until(lambda: panel.table.rowCount() == 4, 15, "the first page")
        assert panel.more_button.isEnabled() and "more below" in panel.count_label.text()
        QTest.mouseClick(panel.more_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.table.rowCount() == 8, 15, "the second page")
        QTest.mouseClick(panel.more_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.table.rowCount() == 9, 15, "the last page")
        assert not panel.more_button.isEnabled()
        listed = _column(panel.table, 8)
        assert sorted(listed) == sorted(ids + failed)  # each run once, none twice
        finished = _column(panel.table, 0)
        assert finished == sorted(finished, reverse=True)  # newest first

        # Filters as in the API: status, then a search in the error text.
        panel.status_combo.setCurrentIndex(panel.status_combo.findData("failed"))
        await until(lambda: sorted(_column(panel.table, 8)) == sorted(failed), 15, "failed only")
        assert set(_column(panel.table, 2)) == {"failed"}
        panel.status_combo.setCurrentIndex(0)
        QTest.keyClicks(panel.search, "503")
        await until(lambda: sorted(_column(panel.table, 8)) == sorted(failed), 15, "search 503")
        panel.search.clear()
        await until(lambda: panel.pipeline_combo.findData("report") >= 0, 10, "pipelines")
        panel.pipeline_combo.setCurrentIndex(panel.pipeline_combo.findData("report"))
        await until(lambda: panel.table.rowCount() == 4, 15, "report runs, first page")

        # One run: steps with durations, its logs, its artifact saved through the API.
        panel.table.selectRow(0)
        job_id = panel.table.item(0, 8).text()
        await until(
            lambda: panel.run is not None and panel.steps.rowCount() == 2,
            15,
            lambda: panel.run,
        )
        assert _column(panel.steps, 1) == ["nap", "write"]
        assert all(_column(panel.steps, 4)), "every step has a duration"
        await until(lambda: panel.artifacts.rowCount() == 1, 15, "the artifact")
        run = panel.run
        region = run["context"]["region"]
        assert panel.artifacts.item(0, 0).text() == f"reports/{region}.json"
        target = tmp_path / "saved.json"
        saved = await panel.save_artifact(target)
        assert saved == target
        data_dir = Path(console.stack.env["MIMIR_DATA_DIR"])
        assert target.read_bytes() == (data_dir / "reports" / f"{region}.json").read_bytes()
        assert "Saved" in panel.banner.text()
        assert panel.logs.toPlainText().strip(), "the run's log lines"

        # Run again: the same definition and context, as a new job, followed to its end.
        new_id = await panel.run_again()
        assert new_id and new_id != job_id
        await until(
            lambda: (
                panel.run is not None
                and panel.run.get("job_id") == new_id
                and panel.run.get("status") == "succeeded"
                and panel.steps.rowCount() == 2
            ),
            30,
            lambda: (panel.run, panel.run_label.text()),
        )
        again = console.http.get(f"/api/v1/runs/{new_id}").json()
        assert again["context"] == run["context"]
        assert again["definition"] == run["definition"]

    console.run(scenario)


def test_history_follows_a_running_job_live(console: Console) -> None:
    window = console.window
    panel = window.history

    async def scenario() -> None:
        window.show_panel("history")
        job_id = console.enqueue("slow")
        await until(
            lambda: (
                console.http.get(f"/api/v1/queue/jobs/{job_id}").json().get("status") == "running"
            ),
            20,
            "the job to start",
        )
        await panel.show_run(job_id)
        assert panel.following, panel.run_label.text()
        assert "following its log live" in panel.run_label.text()
        assert panel.run["status"] == "running"
        await until(lambda: panel.run.get("status") == "succeeded", 30, lambda: panel.run)
        assert not panel.following
        assert _column(panel.steps, 1) == ["first", "second"]
        assert "following" not in panel.run_label.text()

    console.run(scenario)


# ---------------------------------------------------------------------------- Schedules


def test_schedule_editor_explains_refuses_saves_and_the_panel_acts(console: Console) -> None:
    from mimir.app.ui.schedules_panel import ScheduleDialog

    window = console.window
    panel = window.schedules

    async def scenario() -> None:
        window.show_panel("schedules")
        dialog = await panel.edit_schedule(None)
        assert isinstance(dialog, ScheduleDialog)
        dialog.name_edit.setText("every-two")
        dialog.pipeline_combo.setCurrentText("report")
        dialog.cron_edit.setText("0 9 * * 1-5")
        dialog.zone_combo.setCurrentText("Europe/Berlin")
        assert dialog.words.text() == "Runs at 09:00 on Monday\u2013Friday, Europe/Berlin time."
        await until(lambda: len(dialog.preview) == 5, 10, "the server's preview")
        assert all("CET" in dialog.next_list.item(i).text() for i in range(5))
        dialog.cron_edit.setText("61 * * * *")
        dialog.context_edit.setPlainText(json.dumps({"region": "sched"}))
        QTest.mouseClick(dialog.buttons.buttons()[0], Qt.MouseButton.LeftButton)
        await until(lambda: dialog.error_label.isVisible(), 10, "the server's refusal")
        assert "cron" in dialog.error_label.text().lower(), dialog.error_label.text()
        assert dialog.isVisible()
        dialog.interval_radio.setChecked(True)
        dialog.interval_edit.setText("2s")
        assert dialog.words.text() == "Runs every 2 seconds."
        save = next(
            b for b in dialog.buttons.buttons() if dialog.buttons.buttonRole(b).name == "AcceptRole"
        )
        closed: list[int] = []
        dialog.finished.connect(closed.append)
        QTest.mouseClick(save, Qt.MouseButton.LeftButton)
        await until(lambda: closed, 10, "the dialog to close once saved")

        await until(lambda: panel.table.rowCount() == 1, 10, "the schedule listed")
        assert panel.table.item(0, 0).text() == "every-two"
        assert panel.table.item(0, 2).text() == "every 2 seconds"
        assert panel.table.item(0, 5).text() == "active"
        assert panel.next_list.count() == 5
        deadline = time.monotonic() + 30
        while panel.recent_table.rowCount() < 2:  # the schedule's runs, as they come
            assert time.monotonic() < deadline, panel.recent_title.text()
            await panel.refresh()
            await asyncio.sleep(0.5)
        schedule_id = panel.schedules[0]["id"]
        runs = console.runs()
        assert all(r["origin_id"] == schedule_id for r in runs)

        QTest.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.table.item(0, 5).text() == "paused", 10, "paused")
        assert panel.pause_button.text() == "Resume"
        QTest.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.table.item(0, 5).text() == "active", 10, "resumed")
        QTest.mouseClick(panel.run_now_button, Qt.MouseButton.LeftButton)
        await until(lambda: "enqueued now" in panel.banner.text(), 10, "run now")

    console.run(scenario)


# ---------------------------------------------------------------------------- Alerts


def test_alert_rule_dialog_status_bar_and_acknowledge(console: Console) -> None:
    from mimir.app.ui.alerts_panel import RuleDialog

    window = console.window
    panel = window.alerts
    indicator = window.alerts_indicator

    async def scenario() -> None:
        await until(lambda: "No alerts firing" in indicator.text(), 15, indicator.text)
        window.show_panel("alerts")
        panel.tabs.setCurrentIndex(1)
        dialog = await panel.edit_rule(None)
        assert isinstance(dialog, RuleDialog)
        dialog.name_edit.setText("broken fails")
        dialog.kind_combo.setCurrentIndex(dialog.kind_combo.findData("run_failed"))
        assert dialog.pipeline_combo.isVisible() and not dialog.threshold.isVisible()
        dialog.pipeline_combo.setCurrentText("broken")
        dialog.webhooks.setPlainText("not a url")
        dialog.cooldown.setValue(10)
        QTest.mouseClick(dialog.buttons.buttons()[0], Qt.MouseButton.LeftButton)
        await until(lambda: dialog.error_label.isVisible(), 10, "the server's refusal")
        assert "channels" in dialog.error_label.text(), dialog.error_label.text()
        dialog.webhooks.setPlainText("")
        dialog.emails.setText("")
        closed: list[int] = []
        dialog.finished.connect(closed.append)
        QTest.mouseClick(dialog.buttons.buttons()[0], Qt.MouseButton.LeftButton)
        await until(lambda: closed, 10, "the dialog to close once saved")
        await until(lambda: panel.rule_table.rowCount() == 1, 10, "the rule listed")
        assert panel.rule_table.item(0, 2).text() == "a run of broken failed or dead"
        assert panel.rule_table.item(0, 4).text() == "10 min"
        stored = console.http.get("/api/v1/alerts/rules").json()[0]["spec"]
        assert stored["pipeline"] == "broken" and stored["cooldown_seconds"] == 600

        # A dead-lettered run fires it: the status bar counts it, the list shows it.
        console.enqueue("broken", max_retries=0)
        await until(lambda: len(indicator.firing) == 1, 30, indicator.text)
        assert "1 alert firing" in indicator.text()
        assert "acknowledged" not in indicator.text()
        panel.tabs.setCurrentIndex(0)
        await until(lambda: panel.alert_table.rowCount() == 1, 20, "the alert listed")
        assert panel.alert_table.item(0, 1).text() == "firing"
        assert panel.alert_table.item(0, 2).text() == "broken fails"
        panel.alert_table.selectRow(0)
        assert "broken" in panel.alert_details.toPlainText()
        assert panel.ack_button.isEnabled()
        QTest.mouseClick(panel.ack_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.alert_table.item(0, 7).text().startswith("\u2713"), 10, "ack")
        assert not panel.ack_button.isEnabled()
        await indicator.refresh()
        assert "1 alert firing</b>, all acknowledged" in indicator.text()

    console.run(scenario)
