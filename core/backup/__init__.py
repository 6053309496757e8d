"""Backup and restore of a cluster's data: the archive, its manifest and its encryption.

An archive is a streamed tar (manifest.json first, the parts, SHA256SUMS last), gzip,
optionally age-encrypted with a passphrase. :func:`write_archive` makes one from a
staging directory, :func:`verify_archive` checks one whole and extracts it,
:func:`read_manifest` reads what it holds. Nothing here imports Qt, FastAPI or Docker.
"""

from __future__ import annotations

from mimir.core.backup.archive import (
    SIDECAR_SUFFIX,
    archive_name,
    read_manifest,
    sha256sums,
    sidecar_path,
    verify_archive,
    write_archive,
)
from mimir.core.backup.crypto import (
    DEFAULT_WORK_FACTOR,
    MAX_WORK_FACTOR,
    AgeReader,
    AgeWriter,
    PayloadError,
    WrongPassphrase,
    is_age,
)
from mimir.core.backup.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SUMS_NAME,
    BackupError,
    Manifest,
    Part,
    iso_utc,
    parse_manifest,
)

__all__ = [
    "DEFAULT_WORK_FACTOR",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_WORK_FACTOR",
    "SIDECAR_SUFFIX",
    "SUMS_NAME",
    "AgeReader",
    "AgeWriter",
    "BackupError",
    "Manifest",
    "Part",
    "PayloadError",
    "WrongPassphrase",
    "archive_name",
    "is_age",
    "iso_utc",
    "parse_manifest",
    "read_manifest",
    "sha256sums",
    "sidecar_path",
    "verify_archive",
    "write_archive",
]
