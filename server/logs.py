"""Logging for the server process: one format, level from ``MIMIR_LOG_LEVEL``."""

from __future__ import annotations

import logging

__all__ = ["LOG_FORMAT", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send every logger (uvicorn's too) to stderr at ``level``; ``ValueError`` if unknown."""
    name = level.strip().upper()
    if not isinstance(logging.getLevelNamesMapping().get(name), int):
        known = ", ".join(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
        raise ValueError(f"unknown log level {level!r} (MIMIR_LOG_LEVEL): use one of {known}")
    logging.basicConfig(level=name, format=LOG_FORMAT, force=True)
    for noisy in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).handlers.clear()
        logging.getLogger(noisy).propagate = True
