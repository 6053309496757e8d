"""Console benchmark: launch time, and the GUI loop's worst stall under a full load.

- **launch**: from starting a fresh ``python`` process to the main window shown with its
  event loop running (median of 3), target < 2 s;
- **stall**: the main window (offscreen) with the dashboard plotting 6 series holding one
  hour at 1 Hz (3600 samples each, new samples every second, redrawn every second) while
  the Jobs table takes 100 updates a second (inserts and status changes); a 5 ms heartbeat
  timer measures how late the event loop runs it. Target: worst stall < 50 ms.

``python -m benchmarks.console [--seconds 15]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_PROBE = "--launch-probe"


def _launch_probe() -> int:
    """Child: build and show the window; print when the loop runs with it shown."""
    import asyncio

    import qasync
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from mimir.app.ui.app import build_window
    from mimir.app.ui.common import load_stylesheet

    app = QApplication(sys.argv[:1])
    app.setStyleSheet(load_stylesheet())
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    scratch = Path(tempfile.mkdtemp(prefix="mimir-bench-"))
    window = build_window(QSettings(str(scratch / "c.ini"), QSettings.Format.IniFormat))
    window.show()

    def shown() -> None:
        assert window.isVisible()
        print(f"shown {time.time():.6f}", flush=True)
        app.quit()

    QTimer.singleShot(0, shown)
    app.exec()
    return 0


def measure_launch(runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.time()
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.console", _PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("shown "))
        times.append(float(line.split()[1]) - started)
    return times


def measure_stall(seconds: float) -> dict[str, float]:
    import asyncio

    import qasync
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from mimir.app.ui.app import build_window
    from mimir.app.ui.common import load_stylesheet

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyleSheet(load_stylesheet())
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    scratch = Path(tempfile.mkdtemp(prefix="mimir-bench-"))
    window = build_window(QSettings(str(scratch / "c.ini"), QSettings.Format.IniFormat))
    window.resize(1440, 900)
    window.show()
    for timer in window.findChildren(QTimer):  # no cluster here: only our load runs
        timer.stop()
    dashboard, jobs = window.dashboard, window.jobs
    dashboard.window_combo.setCurrentText("Last hour")

    # One hour of history at 1 Hz in six series (4 queue series + 2 rates).
    now = time.time()
    for i in range(3600):
        t = now - 3600 + i
        wave = (i % 300) / 300
        dashboard.add_stats(
            {
                "by_priority": {"high": 5 * wave, "normal": 40 * wave, "low": 3},
                "running": 10 + 5 * wave,
                "completed_per_sec": 20 * wave,
                "failed_per_sec": 0.2,
                "workers": 4,
                "totals": {},
            },
            t=t,
        )

    stalls: dict[str, list[float]] = {"dashboard": [], "switch": [], "jobs": []}
    state: dict[str, Any] = {"last": time.perf_counter(), "sample": 0, "job": 0}
    state["phase"] = "dashboard"

    def heartbeat() -> None:
        tick = time.perf_counter()
        stalls[state["phase"]].append(max(0.0, (tick - state["last"]) * 1000 - 5.0))
        state["last"] = tick

    def one_second() -> None:
        state["sample"] += 1
        wave = (state["sample"] % 300) / 300
        dashboard.add_stats(
            {
                "by_priority": {"high": 5 * wave, "normal": 40 * wave, "low": 3},
                "running": 12,
                "completed_per_sec": 20 * wave,
                "failed_per_sec": 0.1,
                "workers": 4,
                "totals": {"succeeded": state["job"]},
            }
        )
        dashboard.redraw()

    statuses = ["queued", "running", "succeeded"]

    def job_update() -> None:
        # 100 a second on average (a late timer catches up): each job is inserted, then
        # changes state twice.
        if "jobs_started" not in state:
            state["jobs_started"] = time.perf_counter()
        due = int((time.perf_counter() - state["jobs_started"]) * 100) + 1
        while state["job"] < due:
            one_job_update()

    def one_job_update() -> None:
        n = state["job"]
        state["job"] += 1
        job_id = f"job-{n // 3:08d}"
        jobs.model.upsert(
            {
                "job_id": job_id,
                "status": statuses[n % 3],
                "pipeline": "nightly-etl",
                "priority": "normal",
                "attempts": 1,
                "worker_id": f"worker-{n % 4}",
                "enqueued_at": "2026-01-01T00:00:00Z",
            }
        )

    window.show_panel("dashboard")
    timers = []
    for interval, slot in ((5, heartbeat), (1000, one_second), (10, job_update)):
        timer = QTimer()
        timer.setInterval(interval)
        timer.timeout.connect(slot)
        timers.append(timer)

    async def run() -> None:
        await asyncio.sleep(0.5)  # let the first paint happen
        state["last"] = time.perf_counter()
        for timer in timers:
            timer.start()
        half = seconds / 2
        await asyncio.sleep(half)
        # The Jobs panel paints its updates too; its first showing is measured apart.
        state["phase"] = "switch"
        window.show_panel("jobs")
        await asyncio.sleep(1.0)
        state["phase"] = "jobs"
        await asyncio.sleep(half)
        for timer in timers:
            timer.stop()

    with loop:
        loop.run_until_complete(run())
    every = sorted(stalls["dashboard"] + stalls["jobs"])
    return {
        "worst_ms": every[-1] if every else float("nan"),
        "p99_ms": every[int(len(every) * 0.99)] if every else float("nan"),
        "dashboard_worst_ms": max(stalls["dashboard"], default=float("nan")),
        "jobs_worst_ms": max(stalls["jobs"], default=float("nan")),
        "switch_ms": max(stalls["switch"], default=float("nan")),
        "ticks": float(len(every)),
        "job_updates": float(state["job"]),
        "job_rate": state["job"] / max(1e-9, time.perf_counter() - state["jobs_started"]),
        "jobs_rows": float(jobs.model.rowCount()),
    }


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == [_PROBE]:
        return _launch_probe()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the stall run")
    args = parser.parse_args(args_in)
    try:
        import PySide6  # noqa: F401
    except ImportError:
        print("console: PySide6 not installed (pip install 'mimir-aip[console]'); skipped")
        return 0
    launches = measure_launch()
    median = statistics.median(launches)
    print(
        f"console launch → window shown: median {median:.2f} s "
        f"(runs {', '.join(f'{x:.2f}' for x in launches)}; target < 2 s)"
    )
    stall = measure_stall(args.seconds)
    print(
        f"console GUI stall, dashboard 6 series x 1 h at 1 Hz + Jobs table 100 updates/s "
        f"for {args.seconds:.0f} s: worst {stall['worst_ms']:.1f} ms, "
        f"(dashboard shown {stall['dashboard_worst_ms']:.1f} ms, jobs shown "
        f"{stall['jobs_worst_ms']:.1f} ms), p99 {stall['p99_ms']:.1f} ms over "
        f"{stall['ticks']:.0f} heartbeats; switching panels once {stall['switch_ms']:.0f} ms "
        f"({stall['job_updates']:.0f} job updates at {stall['job_rate']:.0f}/s, "
        f"{stall['jobs_rows']:.0f} rows; target < 50 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
