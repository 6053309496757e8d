"""The backup archive: a streamed tar (pax), gzip, optionally age-encrypted.

Layout of an archive, in this order::

    manifest.json        what follows: each part's name, size and SHA-256 (.manifest)
    redis/dump.rdb       the parts, sorted by name
    runstore/mimir.db
    ...
    SHA256SUMS           `sha256sum -c` lines for manifest.json and every part

Written as ``<dest>.partial``, synced and renamed, so a backup that did not finish never
looks like one. An encrypted archive (``.tar.gz.age``) is an age v1 file with a
passphrase (:mod:`mimir.core.backup.crypto`); ``<dest>.meta.json`` beside it holds the
manifest in clear (it has no secrets), so a list of backups can say what each holds.

:func:`verify_archive` reads an archive once, as a stream, into a staging directory and
checks everything on the way: the layers by their magic bytes, the age header and every
chunk, the manifest first and its format version, each part's size and SHA-256, that
members are exactly the manifest's parts with safe names (no ``..``, no absolute path,
no link), and SHA256SUMS last. Only a complete, verified archive becomes ``into``;
anything else removes the staging directory and raises a :class:`BackupError` that
names the part.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from mimir.core.backup.crypto import (
    AGE_MAGIC,
    DEFAULT_WORK_FACTOR,
    MAX_WORK_FACTOR,
    AgeReader,
    AgeWriter,
    PayloadError,
    is_age,
)
from mimir.core.backup.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SUMS_NAME,
    BackupError,
    Manifest,
    Part,
    parse_manifest,
)
from mimir.core.durable import sync_directory

__all__ = [
    "SIDECAR_SUFFIX",
    "archive_name",
    "read_manifest",
    "remove_archive",
    "sha256sums",
    "sidecar_path",
    "verify_archive",
    "write_archive",
]

#: Beside an encrypted archive: ``<archive>.meta.json``, its manifest in clear.
SIDECAR_SUFFIX = ".meta.json"
PARTIAL_SUFFIX = ".partial"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"
_COPY_BUFFER = 1024 * 1024
_PROGRESS_INTERVAL = 0.1  # seconds: at most ~10 calls a second
_SHA256 = re.compile(r"[0-9a-f]{64}")

#: What each known part is, for the manifest (``descriptions`` overrides).
_DESCRIPTIONS = {
    "redis/dump.rdb": "the queue: a snapshot of Redis (RDB, taken over replication)",
    "runstore/mimir.db": "the run store (SQLite): runs, schedules, triggers, alerts, audit",
    "runstore/pg.dump": "the run store (PostgreSQL, pg_dump -Fc)",
    "ontologies/dataset.nq": "the ontology store, every quad (N-Quads)",
    "ontologies/catalog.sqlite3": "the ontology catalog",
    "twins/twins.sqlite3": "the digital twins",
}
_KIND_DESCRIPTIONS = {
    "pipelines": "a pipeline file",
    "files": "a file of the data directory",
}


# --- names -------------------------------------------------------------------------------


def archive_name(project: str, when: datetime, encrypted: bool) -> str:
    """``mimir-<project>-20261201T010203Z.tar.gz`` (+ ``.age``); ``when`` naive = UTC."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", project).strip("-.")
    stem = f"mimir-{safe}-" if safe else "mimir-"
    name = f"{stem}{when.strftime('%Y%m%dT%H%M%SZ')}.tar.gz"
    return name + ".age" if encrypted else name


def sidecar_path(archive: Path) -> Path:
    """Where the clear manifest of an encrypted archive is: ``<archive>.meta.json``."""
    return archive.with_name(archive.name + SIDECAR_SUFFIX)


def remove_archive(path: Path) -> None:
    """Delete an archive and the clear manifest beside it, the manifest first: a manifest
    never outlives its archive (an archive without one still lists, from its own)."""
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _unsafe(name: str) -> str | None:
    """Why ``name`` may not be a member of an archive, or None when it may."""
    if not name:
        return "an empty name"
    if "\x00" in name or "\\" in name:
        return "a name with a NUL or a backslash"
    if name.startswith("/"):
        return "an absolute path"
    path = PurePosixPath(name)
    if ".." in path.parts:
        return "a path with '..'"
    if str(path) != name or "." in name.split("/"):
        return "not a plain relative path"
    return None


def sha256sums(manifest_sha256: str, parts: list[Part]) -> bytes:
    """The SHA256SUMS member: ``sha256sum -c`` lines for manifest.json and each part."""
    lines = [f"{manifest_sha256}  {MANIFEST_NAME}\n"]
    lines += [f"{part.sha256}  {part.name}\n" for part in parts]
    return "".join(lines).encode()


def _human(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class _Progress:
    """Calls ``callback(done, total)`` at most every 0.1 s, and always at 0 and at the end."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self._callback = callback
        self.total = total
        self.done = 0
        self._last = 0.0
        if callback is not None:
            callback(0, total)
            self._last = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self._callback(self.done, self.total)

    def finish(self) -> None:
        if self._callback is not None:
            self._callback(self.done, self.total)


# --- writing -----------------------------------------------------------------------------


def _staged_files(staging: Path) -> list[tuple[str, Path]]:
    """(relative posix name, path) of every regular file under ``staging``, sorted."""
    if not staging.is_dir():
        raise BackupError(f"nothing to archive: {staging} is not a directory")
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(staging):
        for entry in [*dirs, *files]:
            path = Path(folder, entry)
            if path.is_symlink():
                raise BackupError(f"{path} is a symbolic link: a backup holds regular files only")
        for entry in files:
            path = Path(folder, entry)
            if not path.is_file():
                raise BackupError(f"{path} is not a regular file: a backup holds those only")
            name = path.relative_to(staging).as_posix()
            why = _unsafe(name)
            if why is not None:  # pragma: no cover - os.walk yields plain names
                raise BackupError(f"cannot archive {name!r}: {why}", part=name)
            if name in (MANIFEST_NAME, SUMS_NAME):
                raise BackupError(f"{name} is the archive's own; a part may not be called so")
            found.append((name, path))
    return sorted(found)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while block := source.read(_COPY_BUFFER):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


class _HashingReader:
    """Reads a part into the tar, hashing and counting it on the way."""

    def __init__(self, source: BinaryIO, progress: _Progress) -> None:
        self._source = source
        self._progress = progress
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        self.count += len(data)
        self._progress.add(len(data))
        return data


def _add_part(
    tar: tarfile.TarFile, part: Part, path: Path, mtime: float, counter: _Progress
) -> None:
    """One part into the tar; refused when it is not what was hashed a moment ago."""
    with path.open("rb") as source:
        reader = _HashingReader(source, counter)
        try:
            tar.addfile(_member(part.name, part.size, mtime), reader)
        except OSError as exc:
            if reader.count < part.size:  # tarfile: "unexpected end of data"
                raise BackupError(
                    f"part {part.name} shrank while it was being archived", part=part.name
                ) from exc
            raise
        if source.read(1) or reader.digest.hexdigest() != part.sha256:
            raise BackupError(
                f"part {part.name} changed while it was being archived", part=part.name
            )


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o600
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _taken_at_epoch(manifest: Manifest) -> float:
    try:
        return (
            datetime.strptime(manifest.taken_at, "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=UTC)
            .timestamp()
        )
    except ValueError:
        return time.time()


def write_archive(
    staging: Path,
    dest: Path,
    manifest: Manifest,
    *,
    passphrase: str | None = None,
    descriptions: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    work_factor: int = DEFAULT_WORK_FACTOR,
) -> Manifest:
    """Archive every regular file under ``staging`` into ``dest``; return the manifest.

    Each file becomes a :class:`Part` (its relative posix path, size and SHA-256); the
    tar holds manifest.json first, the parts, SHA256SUMS last; gzip; age-encrypted with
    ``passphrase`` when there is one (``work_factor`` is scrypt's log2 N), with the
    manifest in clear beside it (``<dest>.meta.json``); a manifest that
    ``includes_secrets`` is refused without one. Written as ``<dest>.partial``, synced and
    renamed; ``dest`` may not exist. ``progress(done, total)`` counts the bytes of the
    parts as they go into the archive (after one pass that hashes them).
    """
    staging, dest = Path(staging), Path(dest)
    if dest.exists():
        raise BackupError(f"{dest} already exists: a backup never replaces another")
    if manifest.includes_secrets and passphrase is None:
        raise BackupError("a backup that includes secrets is written encrypted: give a passphrase")
    files = _staged_files(staging)
    descriptions = descriptions or {}
    parts: list[Part] = []
    for name, path in files:
        size, digest = _hash_file(path)
        kind = name.split("/", 1)[0]
        given = manifest.part(name)
        description = (
            descriptions.get(name)
            or (given.description if given else "")
            or _DESCRIPTIONS.get(name)
            or _KIND_DESCRIPTIONS.get(kind, "")
        )
        parts.append(Part(name=name, kind=kind, size=size, sha256=digest, description=description))
    done = manifest.model_copy(
        update={
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "compression": "gzip",
            "encrypted": passphrase is not None,
            "parts": parts,
        }
    )
    manifest_bytes = done.to_json()
    mtime = _taken_at_epoch(done)
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    counter = _Progress(progress, done.total_size)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            age = AgeWriter(out, passphrase, work_factor) if passphrase is not None else None
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=age or out, mtime=0, compresslevel=6)
            try:
                with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    tar.addfile(
                        _member(MANIFEST_NAME, len(manifest_bytes), mtime),
                        io.BytesIO(manifest_bytes),
                    )
                    for part, (_name, path) in zip(parts, files, strict=True):
                        _add_part(tar, part, path, mtime, counter)
                    sums = sha256sums(hashlib.sha256(manifest_bytes).hexdigest(), parts)
                    tar.addfile(_member(SUMS_NAME, len(sums), mtime), io.BytesIO(sums))
            finally:
                gz.close()
                if age is not None:
                    age.close()
            out.flush()
            os.fsync(out.fileno())
        partial.rename(dest)
        if passphrase is not None:
            sidecar = sidecar_path(dest)
            temporary = sidecar.with_name(sidecar.name + PARTIAL_SUFFIX)
            temporary.write_bytes(manifest_bytes)
            temporary.replace(sidecar)
        sync_directory(dest.parent)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BackupError(f"cannot write the backup {dest}: {exc}") from exc
        raise
    counter.finish()
    return done


# --- reading -----------------------------------------------------------------------------


class _Peekable:
    """A read-only stream that can look at its first bytes without consuming them."""

    def __init__(self, raw: BinaryIO | AgeReader) -> None:
        self._raw = raw
        self._head = b""

    def peek(self, size: int) -> bytes:
        while len(self._head) < size:
            more = self._raw.read(size - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:size]

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        if self._head:
            if size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)


@contextlib.contextmanager
def _open_layers(
    path: Path, passphrase: str | None, max_work_factor: int
) -> Iterator[tuple[gzip.GzipFile, BinaryIO]]:
    """(the gzip stream of the tar, the file) of an archive, layers told by magic bytes."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with source:
        outer = _Peekable(source)
        head = outer.peek(len(AGE_MAGIC))
        stream = outer
        if is_age(head):
            if passphrase is None:
                raise BackupError(f"{path.name} is encrypted: give its passphrase")
            reader = AgeReader(cast(BinaryIO, outer), passphrase, max_work_factor=max_work_factor)
            stream = _Peekable(reader)
        elif head.startswith(_ARMOR_MAGIC[: len(head)]) and head:
            raise BackupError(
                f"{path.name} is an ASCII-armored age file; Mimir reads binary age files: "
                "run `age -d` on it first"
            )
        magic = stream.peek(4)
        if magic.startswith(_GZIP_MAGIC):
            yield gzip.GzipFile(fileobj=cast(BinaryIO, stream), mode="rb"), source
        elif magic == _ZSTD_MAGIC:
            raise BackupError(
                f"{path.name} is compressed with zstd: zstd archives need the zstandard module"
            )
        elif not magic:
            raise BackupError(f"not a Mimir backup archive: {path.name} is empty")
        else:
            raise BackupError(
                f"not a Mimir backup archive: {path.name} is neither gzip nor age-encrypted"
            )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise BackupError(
            f"{member.name} is {member.size} bytes: not one of Mimir's", part=member.name
        )
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    return handle.read()


def _open_tar(gz: gzip.GzipFile, path: Path) -> tarfile.TarFile:
    """The tar in the gzip stream, read as a stream (its first header is read here)."""
    try:
        return tarfile.open(fileobj=gz, mode="r|")
    except tarfile.ReadError as exc:
        if "zlib" in str(exc):
            raise
        raise BackupError(f"not a Mimir backup archive: {path.name} holds no tar ({exc})") from exc


def _first_member(tar: tarfile.TarFile, path: Path) -> tarfile.TarInfo:
    try:
        member = tar.next()
    except tarfile.ReadError as exc:
        raise BackupError(f"not a Mimir backup archive: {path.name} holds no tar ({exc})") from exc
    if member is None:
        raise BackupError(f"not a Mimir backup archive: {path.name} is an empty tar")
    if member.name != MANIFEST_NAME or not member.isreg():
        raise BackupError(
            f"not a Mimir backup archive: its first member is {member.name!r}, not {MANIFEST_NAME}"
        )
    return member


def read_manifest(
    path: Path, passphrase: str | None = None, *, max_work_factor: int = MAX_WORK_FACTOR
) -> Manifest:
    """The manifest of an archive (its first member) without reading the rest.

    For an encrypted archive without ``passphrase``, the clear one beside it
    (``<archive>.meta.json``). Refuses a foreign archive or a newer backup format.
    """
    path = Path(path)
    try:
        with path.open("rb") as probe:
            encrypted = is_age(probe.read(len(AGE_MAGIC)))
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if encrypted and passphrase is None:
        sidecar = sidecar_path(path)
        if not sidecar.is_file():
            raise BackupError(
                f"{path.name} is encrypted and has no {sidecar.name} beside it: "
                "give its passphrase to read its manifest"
            )
        return parse_manifest(sidecar.read_bytes(), source=sidecar.name)
    try:
        with _open_layers(path, passphrase, max_work_factor) as (gz, _source):
            tar = _open_tar(gz, path)
            member = _first_member(tar, path)
            return parse_manifest(_read_member(tar, member, MAX_MANIFEST_BYTES))
    except (EOFError, tarfile.ReadError) as exc:
        raise BackupError(f"the archive is truncated in {MANIFEST_NAME}", MANIFEST_NAME) from exc
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"the archive is damaged in {MANIFEST_NAME}: {exc}", MANIFEST_NAME
        ) from exc


def _free_bytes(folder: Path) -> int:
    """Free bytes where ``folder`` is (a function, so tests can shrink the disk)."""
    return shutil.disk_usage(folder).free


class _Verifier:
    """One pass over an archive's tar: checks every member, extracts parts into staging."""

    def __init__(
        self,
        staging: Path,
        check: Callable[[Manifest], None] | None,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.staging = staging
        self.check = check
        self.progress_callback = progress
        self.progress: _Progress | None = None
        self.manifest: Manifest | None = None
        self.manifest_sha256 = ""
        self.seen: set[str] = set()
        self.current: str | None = None  # the member being read
        self.last: str | None = None  # the last member read whole

    def where(self) -> str:
        if self.current is not None:
            return f"in part {self.current}"
        if self.last is not None:
            return f"after part {self.last}"
        return "at its start"

    def run(self, tar: tarfile.TarFile, path: Path) -> Manifest:
        self.current = MANIFEST_NAME
        data = _read_member(tar, _first_member(tar, path), MAX_MANIFEST_BYTES)
        manifest = self._manifest(data)
        self.current, self.last = None, MANIFEST_NAME
        sums = False
        while (member := tar.next()) is not None:  # not iter(): it restarts at 0
            name = member.name
            self.current = name
            if sums:
                raise BackupError(
                    f"the archive has a member after {SUMS_NAME}: {name!r} (not one of Mimir's)",
                    part=name,
                )
            why = _unsafe(name)
            if why is not None:
                raise BackupError(f"member {name!r} is refused: {why}", part=name)
            if not member.isreg():
                kind = (
                    "a symbolic link"
                    if member.issym()
                    else "a hard link"
                    if member.islnk()
                    else "a directory"
                    if member.isdir()
                    else "not a regular file"
                )
                raise BackupError(f"member {name} is refused: {kind}", part=name)
            if name == SUMS_NAME:
                self._sums(_read_member(tar, member, MAX_MANIFEST_BYTES), manifest)
                sums = True
            else:
                self._part(tar, member, manifest)
            self.current, self.last = None, name
        if not sums:
            missing = [part.name for part in manifest.parts if part.name not in self.seen]
            lacking = ", ".join([*missing[:3], SUMS_NAME]) + (" …" if len(missing) > 3 else "")
            raise BackupError(
                f"the archive is truncated after part {self.last}: {lacking} missing",
                part=self.last,
            )
        return manifest

    def _manifest(self, data: bytes) -> Manifest:
        manifest = parse_manifest(data)
        names: set[str] = set()
        for part in manifest.parts:
            why = _unsafe(part.name)
            if why is not None or part.name in (MANIFEST_NAME, SUMS_NAME):
                raise BackupError(
                    f"{MANIFEST_NAME} is damaged: part name {part.name!r} is refused "
                    f"({why or 'a name of the archive itself'})",
                    part=MANIFEST_NAME,
                )
            if part.name in names:
                raise BackupError(
                    f"{MANIFEST_NAME} is damaged: part {part.name} is listed twice",
                    part=MANIFEST_NAME,
                )
            if part.size < 0 or not _SHA256.fullmatch(part.sha256):
                raise BackupError(
                    f"{MANIFEST_NAME} is damaged: part {part.name} has no valid size and sha256",
                    part=MANIFEST_NAME,
                )
            names.add(part.name)
        self.manifest = manifest
        self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        if self.check is not None:
            self.check(manifest)
        free = _free_bytes(self.staging)
        if manifest.total_size > free:
            raise BackupError(
                f"not enough free space in {self.staging.parent} to verify the archive: "
                f"its parts need {_human(manifest.total_size)} ({manifest.total_size} bytes), "
                f"{_human(free)} ({free} bytes) are free"
            )
        self.progress = _Progress(self.progress_callback, manifest.total_size)
        return manifest

    def _part(self, tar: tarfile.TarFile, member: tarfile.TarInfo, manifest: Manifest) -> None:
        name = member.name
        if name == MANIFEST_NAME:
            raise BackupError(f"the archive has a second {MANIFEST_NAME}", part=name)
        part = manifest.part(name)
        if part is None:
            raise BackupError(
                f"member {name} is not in the manifest (an extra member): refused", part=name
            )
        if name in self.seen:
            raise BackupError(f"part {name} is in the archive twice", part=name)
        if member.size != part.size:
            raise BackupError(
                f"part {name} is damaged: {member.size} bytes, the manifest says {part.size}",
                part=name,
            )
        self.seen.add(name)
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = tar.extractfile(member)
        assert handle is not None and self.progress is not None
        digest = hashlib.sha256()
        with target.open("xb") as out:
            while block := handle.read(_COPY_BUFFER):
                digest.update(block)
                out.write(block)
                self.progress.add(len(block))
        if digest.hexdigest() != part.sha256:
            raise BackupError(
                f"part {name} is damaged: sha256 {digest.hexdigest()}, expected {part.sha256}",
                part=name,
            )

    def _sums(self, data: bytes, manifest: Manifest) -> None:
        missing = [part.name for part in manifest.parts if part.name not in self.seen]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise BackupError(
                f"part {missing[0]}{more} is missing from the archive", part=missing[0]
            )
        expected = sha256sums(self.manifest_sha256, manifest.parts)
        if data == expected:
            return
        listed: dict[str, str] = {}
        for line in data.decode("utf-8", "replace").splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
        if listed.get(MANIFEST_NAME) != self.manifest_sha256:
            raise BackupError(
                f"{MANIFEST_NAME} is damaged: sha256 {self.manifest_sha256}, expected "
                f"{listed.get(MANIFEST_NAME)} ({SUMS_NAME})",
                part=MANIFEST_NAME,
            )
        for part in manifest.parts:
            if listed.get(part.name) != part.sha256:
                raise BackupError(
                    f"{SUMS_NAME} is damaged: it gives part {part.name} sha256 "
                    f"{listed.get(part.name)}, the manifest and the part {part.sha256}",
                    part=SUMS_NAME,
                )
        raise BackupError(f"{SUMS_NAME} is damaged: it is not what the manifest lists", SUMS_NAME)


def verify_archive(
    path: Path,
    into: Path,
    *,
    passphrase: str | None = None,
    check: Callable[[Manifest], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_work_factor: int = MAX_WORK_FACTOR,
) -> Manifest:
    """Check the whole archive and extract its parts into ``into``; return its manifest.

    ``into`` must not exist: the parts go to a staging directory beside it that becomes
    ``into`` only when every check passed (see the module's docstring), and is removed
    on any failure. ``check(manifest)`` is called as soon as the manifest is read (raise
    :class:`BackupError` to refuse, e.g. an incompatible schema). ``progress(done,
    total)`` counts the bytes of the parts. A wrong passphrase is
    :class:`~mimir.core.backup.crypto.WrongPassphrase`, known before the payload is read.
    """
    path, into = Path(path), Path(into)
    if into.exists() or into.is_symlink():
        raise BackupError(f"{into} already exists: an archive is verified into a new directory")
    try:
        into.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{into.name}.", suffix=PARTIAL_SUFFIX, dir=into.parent)
        )
    except OSError as exc:
        raise BackupError(f"cannot create {into}: {exc}") from exc
    verifier = _Verifier(staging, check, progress)
    try:
        try:
            with _open_layers(path, passphrase, max_work_factor) as (gz, _source):
                verifier.current = MANIFEST_NAME
                manifest = verifier.run(_open_tar(gz, path), path)
                # Read every layer to its end: gzip's CRC and length, age's final chunk,
                # and nothing after them.
                verifier.current = None
                while gz.read(_COPY_BUFFER):
                    pass
        except PayloadError as exc:  # from the age layer: say where in the tar it happened
            part = verifier.current or verifier.last
            raise BackupError(f"{exc.message} ({verifier.where()})", part=part) from exc
        except (EOFError, tarfile.ReadError) as exc:
            if isinstance(exc, tarfile.ReadError) and "zlib" in str(exc):
                raise _damaged(verifier, exc) from exc
            if verifier.current is not None:
                raise BackupError(
                    f"the archive is truncated in part {verifier.current}", part=verifier.current
                ) from exc
            if verifier.last == SUMS_NAME:
                message = f"the archive is truncated at its very end, after {SUMS_NAME}"
            else:
                message = f"the archive is truncated after part {verifier.last}"
            raise BackupError(message, part=verifier.last) from exc
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise _damaged(verifier, exc) from exc
        except OSError as exc:
            raise BackupError(f"cannot verify {path} into {into}: {exc}") from exc
        if verifier.progress is not None:
            verifier.progress.finish()
        try:
            staging.rename(into)
        except OSError as exc:
            raise BackupError(f"cannot create {into}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _damaged(verifier: _Verifier, exc: Exception) -> BackupError:
    part = verifier.current or verifier.last
    return BackupError(
        f"the archive is damaged {verifier.where()}: its compressed data does not "
        f"decompress ({exc})",
        part=part,
    )
