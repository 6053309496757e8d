"""Retention of backup archives: which archives of a directory to delete, and deleting them.

:func:`prune` looks only at archives as :func:`mimir.core.backup.archive.archive_name`
names them (``mimir-[<project>-]YYYYMMDDTHHMMSSZ.tar.gz[.age]``): never at a ``.partial``
file (an archive being written, or one that did not finish), a ``pre-restore-…`` archive
(what a restore replaced: kept until someone deletes it) or any other file. Archives are
ordered by their manifest's ``taken_at`` (the name's timestamp when the manifest cannot
be read); both rules apply: beyond the ``keep`` newest, or older than ``keep_days``, an
archive is deleted, with the clear manifest beside it (``<archive>.meta.json``). The
newest archive whose manifest reads is never deleted, whatever the rules say.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mimir.core.backup.archive import read_manifest, remove_archive
from mimir.core.backup.manifest import BackupError

__all__ = ["ARCHIVE_PATTERN", "Archive", "archives", "prune"]

logger = logging.getLogger(__name__)

#: The names :func:`~mimir.core.backup.archive.archive_name` gives; nothing else is pruned.
ARCHIVE_PATTERN = re.compile(
    r"^mimir-(?:(?P<project>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})-)?"
    r"(?P<stamp>\d{8}T\d{6}Z)\.tar\.gz(?:\.age)?$"
)


@dataclass(frozen=True)
class Archive:
    """An archive of the directory, as retention sees it."""

    path: Path
    #: When it was taken: the manifest's ``taken_at``, else the name's timestamp.
    taken_at: datetime
    #: Its manifest reads (from the archive, or the clear one beside an encrypted one).
    good: bool
    #: The project of its name (``""`` without one).
    project: str


def _parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def archives(directory: Path) -> list[Archive]:
    """The archives of ``directory`` (see the module's docstring), newest first (blocking)."""
    found: list[Archive] = []
    try:
        entries = list(Path(directory).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for path in entries:
        match = ARCHIVE_PATTERN.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.is_file():
            continue
        named = datetime.strptime(match.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        taken_at: datetime | None = None
        try:
            taken_at = _parse_time(read_manifest(path).taken_at)
            good = True
        except (BackupError, OSError, ValueError):
            good = False
        found.append(Archive(path, taken_at or named, good, match.group("project") or ""))
    found.sort(key=lambda a: (a.taken_at, a.path.name), reverse=True)
    return found


def prune(
    directory: Path,
    keep: int,
    keep_days: float,
    now: datetime | None = None,
    *,
    project: str | None = None,
) -> list[Path]:
    """Delete the archives of ``directory`` beyond the ``keep`` newest (0: no count rule)
    or taken more than ``keep_days`` days before ``now`` (0: no age rule); return the
    archives deleted (their sidecars go with them). With ``project``, only archives named
    after that project (``""``: the ones without a project) are considered: a directory
    shared by clusters keeps each one's archives. Blocking."""
    if keep < 0 or keep_days < 0:
        raise ValueError("keep and keep_days are 0 (off) or more")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    found = archives(directory)
    if project is not None:
        found = [a for a in found if a.project == project]
    newest_good = next((a for a in found if a.good), None)
    cutoff = now - timedelta(days=keep_days) if keep_days else None
    deleted: list[Path] = []
    for index, archive in enumerate(found):
        if archive is newest_good:
            continue
        beyond_count = bool(keep) and index >= keep
        too_old = cutoff is not None and archive.taken_at < cutoff
        if not (beyond_count or too_old):
            continue
        try:
            remove_archive(archive.path)
        except OSError as exc:
            logger.warning("backup retention: cannot delete %s: %s", archive.path, exc)
            continue
        deleted.append(archive.path)
    return deleted
