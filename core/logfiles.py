"""Where a process's log also goes: one file in ``MIMIR_LOG_DIR`` (the containers mount a
volume there), besides stderr.

``<role>-<hostname>.log``, appended to (a restarted container continues its file) through a
:class:`~logging.handlers.WatchedFileHandler`, so an outside ``logrotate`` may move it.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys
from pathlib import Path

__all__ = ["log_file_handler"]


def log_file_handler(log_dir: Path | None, role: str) -> logging.Handler | None:
    """A handler writing to ``log_dir/<role>-<hostname>.log``; ``None`` without ``log_dir``
    or when the file cannot be opened (said on stderr: the process runs on without it)."""
    if log_dir is None:
        return None
    path = log_dir / f"{role}-{socket.gethostname()}.log"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        return logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    except OSError as exc:
        print(f"mimir {role}: cannot write its log to {path} ({exc}); stderr only",
              file=sys.stderr)  # fmt: skip
        return None
