"""The manifest of a backup archive: what each part is, its size and SHA-256, and when.

The manifest is the first member of every archive (``manifest.json``); an encrypted
archive also has it in clear beside it (``<archive>.meta.json``), so that a list of
backups can show what each one holds without the passphrase. It never holds secrets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from mimir.core import __version__

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SUMS_NAME",
    "BackupError",
    "Manifest",
    "Part",
    "iso_utc",
    "parse_manifest",
]

FORMAT = "mimir-backup"
FORMAT_VERSION = 1

#: The first member of an archive, and the last one (``sha256sum -c`` reads it).
MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"

#: A manifest larger than this is not one of ours (a hostile archive cannot make the
#: reader hold an unbounded document in memory).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class BackupError(Exception):
    """A backup could not be written, or an archive is refused; ``str()`` is for a person.

    ``part`` names the part of the archive the problem is in (``runstore/mimir.db``,
    ``manifest.json``, ``SHA256SUMS``), when there is one.
    """

    def __init__(self, message: str, part: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.part = part


class Part(BaseModel):
    """One file of the archive: ``name`` is its path inside the tar."""

    name: str
    kind: str  # the first path component: redis, runstore, ontologies, twins, pipelines, files
    size: int
    sha256: str
    description: str = ""


class Manifest(BaseModel):
    """What an archive holds; the first member of every archive (``manifest.json``)."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    mimir_version: str = Field(default_factory=lambda: __version__)
    taken_at: str = Field(default_factory=lambda: iso_utc(datetime.now(UTC)))
    duration_s: float = 0.0
    project: str = ""
    key_prefix: str = "mimir:"
    compression: str = "gzip"
    encrypted: bool = False
    includes_secrets: bool = False
    redis_snapshot_at: float = 0.0  # unix time of the Redis snapshot
    schemas: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    parts: list[Part] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)

    @property
    def total_size(self) -> int:
        """The bytes of every part together (what a restore extracts)."""
        return sum(part.size for part in self.parts)

    def part(self, name: str) -> Part | None:
        """The part called ``name``, or None."""
        return next((part for part in self.parts if part.name == name), None)

    def to_json(self) -> bytes:
        """The manifest as written into the archive (UTF-8 JSON, indented, newline)."""
        return (self.model_dump_json(indent=2) + "\n").encode()


def iso_utc(when: datetime) -> str:
    """``when`` as ISO-8601 UTC to the second: ``2026-12-01T01:02:03Z`` (naive = UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_manifest(data: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
    """Read a manifest; refuse a foreign document or one from a newer backup format.

    The format and its version are checked on the raw JSON before the fields, so that a
    manifest of a newer format (whose fields may differ) is refused as newer, not as
    damaged.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise BackupError(
            f"not a Mimir backup archive: its {source} is {len(data)} bytes", part=source
        )
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{source} is damaged: not valid JSON ({exc})", part=source) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BackupError(
            f"not a Mimir backup archive: {source} does not say format {FORMAT!r}", part=source
        )
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BackupError(
            f"{source} is damaged: format_version is {version!r}, not a number from 1",
            part=source,
        )
    if version > FORMAT_VERSION:
        made_by = raw.get("mimir_version")
        by = f"a newer Mimir ({made_by}, " if isinstance(made_by, str) else "a newer Mimir ("
        raise BackupError(
            f"made by {by}backup format {version}); this Mimir {__version__} reads format "
            f"{FORMAT_VERSION}: upgrade first",
            part=source,
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise BackupError(f"{source} is damaged: {problems}", part=source) from exc
