"""Logging for the server process: text or JSON lines (``MIMIR_LOG_FORMAT``), level from
``MIMIR_LOG_LEVEL``, a file in ``MIMIR_LOG_DIR`` when that is set.

Values that come from a request go through :func:`printable` before they are logged;
:func:`configure_logging` also makes every record one line (control characters as
``\\xNN``), whoever logs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mimir.core.logfiles import log_file_handler
from mimir.core.logtext import log_formatter, parse_log_format, printable, quiet_url_loggers

__all__ = ["LOG_FORMAT", "configure_logging", "printable"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str, log_dir: Path | None = None, log_format: str = "text") -> None:
    """Send every logger (uvicorn's too) to stderr at ``level``, and to
    ``log_dir/server-<hostname>.log`` when ``log_dir`` (``MIMIR_LOG_DIR``) is set, as
    ``log_format`` (``text`` or ``json``, ``MIMIR_LOG_FORMAT``); ``ValueError`` if the
    level or the format is unknown."""
    log_format = parse_log_format(log_format)
    name = level.strip().upper()
    if not isinstance(logging.getLevelNamesMapping().get(name), int):
        known = ", ".join(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
        raise ValueError(f"unknown log level {level!r} (MIMIR_LOG_LEVEL): use one of {known}")
    handlers: list[logging.Handler] = [logging.StreamHandler()]  # stderr
    if (file_handler := log_file_handler(log_dir, "server")) is not None:
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(log_formatter(log_format, LOG_FORMAT))
    logging.basicConfig(level=name, handlers=handlers, force=True)
    quiet_url_loggers()
    for noisy in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).handlers.clear()
        logging.getLogger(noisy).propagate = True
