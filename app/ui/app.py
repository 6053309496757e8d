"""Boot the console: one QApplication, one qasync loop, the window, an error dialog hook.

``--smoke`` opens the window, starts a throw-away local cluster (redis-server, server, one
worker as child processes) from the Cluster panel, waits until live queue stats arrive,
stops the cluster and exits 0 (1 on any failure or after ``--smoke-timeout`` seconds),
leaving nothing behind: neither its settings directory nor the cluster's state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import cast

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QMessageBox

__all__ = ["build_window", "install_excepthook", "run_console"]

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_excepthook(show_dialog: bool = True) -> list[str]:
    """Log unhandled errors (qasync routes slot errors here) and show them in a dialog.

    Returns the list the hook appends each error's text to (``--smoke`` checks it).
    """
    seen: list[str] = []

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, error, tb))
        logger.error("unhandled error:\n%s", text)
        seen.append(text)
        if show_dialog and QApplication.instance() is not None:
            box = QMessageBox(
                QMessageBox.Icon.Critical, "Mimir console: unexpected error", str(error)
            )
            box.setDetailedText(text)
            box.setModal(False)
            box.show()  # never exec(): a nested loop would stall the asyncio tasks

    sys.excepthook = hook
    return seen


def build_window(settings: QSettings, backend=None):  # -> QtMainWindow
    """The main window over a fresh session (``backend`` overrides the profile's)."""
    from mimir.app.ui.main_window import QtMainWindow
    from mimir.app.ui.session import ConsoleSession

    session = ConsoleSession(settings)
    if backend is not None:
        session.use_backend(backend)
    return QtMainWindow(session)


async def _smoke(window, timeout: float) -> int:
    from mimir.app.services.profiles import ConnectionProfile

    started = time.monotonic()
    session = window.session
    backend = session.backend
    port = backend.api_port
    profile = ConnectionProfile("Smoke test", "local_processes", api_url=f"http://127.0.0.1:{port}")
    session.profiles.upsert(profile)
    session.apply_profile(profile)
    window.show_panel("cluster")
    window.cluster.workers_spin.setValue(1)
    try:
        await window.cluster.start_cluster()
        deadline = time.monotonic() + timeout
        while session.feed.last_stats is None or not session.feed.last_stats.get("workers"):
            if time.monotonic() > deadline:
                print(f"smoke: no live stats with a worker after {timeout:.0f}s", file=sys.stderr)
                print(window.cluster.banner.text(), file=sys.stderr)
                return 1
            await asyncio.sleep(0.1)
        window.show_panel("dashboard")
        await asyncio.sleep(0)
        print(
            f"smoke: window shown, cluster up at {session.api.base_url}, "
            f"{session.feed.last_stats.get('workers')} worker(s), feed {session.feed.mode}, "
            f"{time.monotonic() - started:.1f}s"
        )
        return 0
    finally:
        await session.feed.stop()
        await window.logs.stop()
        try:
            await backend.clean()  # stops it and removes its state dir (smoke-<pid>/)
        except Exception as exc:
            print(f"smoke: stopping the cluster failed: {exc}", file=sys.stderr)


def run_console(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mimir console", description="The operator console.")
    parser.add_argument("--smoke", action="store_true", help="open, start a local cluster, exit 0")
    parser.add_argument("--smoke-timeout", type=float, default=90.0)
    parser.add_argument("--api-url", help="override the profile's API URL")
    parser.add_argument("--log-level", default=os.environ.get("MIMIR_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    import qasync

    from mimir.app.ui.common import load_stylesheet

    # instance() is typed as QCoreApplication; this process only ever makes a QApplication.
    app = cast(QApplication, QApplication.instance() or QApplication(sys.argv[:1]))
    app.setApplicationName("Mimir Console")
    app.setOrganizationName("Mimir AIP")
    app.setStyleSheet(load_stylesheet())
    errors = install_excepthook(show_dialog=not args.smoke)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    backend = None
    scratch: Path | None = None
    if args.smoke:
        from mimir.app.cluster.local import LocalBackend
        from mimir.core.settings import Settings

        scratch = Path(tempfile.mkdtemp(prefix="mimir-smoke-"))
        settings = QSettings(str(scratch / "console.ini"), QSettings.Format.IniFormat)
        backend = LocalBackend(f"smoke-{os.getpid()}", Settings.from_env(), api_port=_free_port())
    else:
        settings = QSettings()
    window = build_window(settings, backend)
    if args.api_url:
        from dataclasses import replace

        window.session.profile = replace(window.session.profile, api_url=args.api_url)
    window.show()
    window.start()

    async def main() -> int:
        try:
            return await run()
        finally:
            window.save_layout()
            await window.shutdown()

    async def run() -> int:
        if args.smoke:
            code = await _smoke(window, args.smoke_timeout)
            if errors:
                print(f"smoke: {len(errors)} unhandled error(s):\n{errors[0]}", file=sys.stderr)
                code = code or 1
            return code
        closed = asyncio.Event()
        app.lastWindowClosed.connect(closed.set)
        await closed.wait()
        return 0

    try:
        with loop:
            return loop.run_until_complete(main())
    finally:
        if scratch is not None:  # the smoke run's settings: nothing of it stays behind
            shutil.rmtree(scratch, ignore_errors=True)
