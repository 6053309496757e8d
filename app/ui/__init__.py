"""The console's Qt views. Only modules in this package import PySide6."""

from __future__ import annotations

__all__ = ["QtMainWindow", "run_console"]


def __getattr__(name: str):  # lazy: importing the package must not pull in Qt
    if name == "QtMainWindow":
        from mimir.app.ui.main_window import QtMainWindow

        return QtMainWindow
    if name == "run_console":
        from mimir.app.ui.app import run_console

        return run_console
    raise AttributeError(name)
