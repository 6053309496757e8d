"""Logging for the server process: one format, level from ``MIMIR_LOG_LEVEL``.

Values that come from a request go through :func:`printable` before they are logged;
:func:`configure_logging` also makes every record one line (control characters as
``\\xNN``), whoever logs it.
"""

from __future__ import annotations

import logging

from mimir.core.logtext import PrintableFormatter, printable

__all__ = ["LOG_FORMAT", "configure_logging", "printable"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send every logger (uvicorn's too) to stderr at ``level``; ``ValueError`` if unknown."""
    name = level.strip().upper()
    if not isinstance(logging.getLevelNamesMapping().get(name), int):
        known = ", ".join(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
        raise ValueError(f"unknown log level {level!r} (MIMIR_LOG_LEVEL): use one of {known}")
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(PrintableFormatter(LOG_FORMAT))
    logging.basicConfig(level=name, handlers=[handler], force=True)
    for noisy in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).handlers.clear()
        logging.getLogger(noisy).propagate = True
