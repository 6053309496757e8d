"""Durable writes: what a crash-safe ``write temporary, fsync, rename`` needs besides the
file's own ``fsync``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["sync_directory"]


def sync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (a new link, a rename) to disk, so that the new name
    survives a power cut. Where the platform cannot open a directory (Windows), nothing."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
