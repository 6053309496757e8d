"""``mimir console``: open the desktop operator console."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``console`` subcommand (Qt is imported only here)."""
    from mimir.app.ui.app import run_console

    return run_console(argv)
