"""The backup archive (mimir.core.backup.archive): round trips and every refusal.

Each refusal asserts the operator's message and that the target directory was not
created (nor a staging directory left beside it).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mimir.core import __version__
from mimir.core.backup import archive as archive_module
from mimir.core.backup.archive import (
    archive_name,
    read_manifest,
    sidecar_path,
    verify_archive,
    write_archive,
)
from mimir.core.backup.crypto import CHUNK_SIZE, WrongPassphrase, is_age
from mimir.core.backup.manifest import BackupError, Manifest, parse_manifest

WF = 10  # scrypt work factor: fast; the default (18) is exercised in test_crypto
PASSPHRASE = "a passphrase for the tests"

PARTS = {
    "files/empty.txt": b"",
    "ontologies/dataset.nq": b"<urn:a> <urn:b> <urn:c> <urn:g> .\n" * 5000,
    "pipelines/demo/main.yaml": b"name: demo\nsteps: []\n",
    # pax: a name past 100 characters and one that is not ASCII
    "pipelines/" + "deep/" * 25 + "long name.yaml": b"name: long\n",
    "pipelines/d\u00e9j\u00e0 vu.yaml": b"name: deja\n",
    "redis/dump.rdb": os.urandom(3 * CHUNK_SIZE + 7),  # several age chunks
    "runstore/mimir.db": os.urandom(CHUNK_SIZE + 1),
    "twins/twins.sqlite3": os.urandom(CHUNK_SIZE),
}


def make_staging(root: Path) -> Path:
    for name, data in PARTS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return make_staging(tmp_path / "staging")


def manifest() -> Manifest:
    return Manifest(
        project="demo",
        taken_at="2026-12-01T01:02:03Z",
        counts={"runs": 3},
        schemas={"twins": {"user_version": 1}},
    )


@pytest.fixture
def plain(staging: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out" / "mimir-demo.tar.gz"
    write_archive(staging, dest, manifest())
    return dest


@pytest.fixture
def encrypted(staging: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out" / "mimir-demo.tar.gz.age"
    write_archive(staging, dest, manifest(), passphrase=PASSPHRASE, work_factor=WF)
    return dest


def refused(
    path: Path, into: Path, match: str, *, passphrase: str | None = None, **kwargs: object
) -> BackupError:
    """verify_archive refuses ``path`` with ``match``; neither into nor staging is left."""
    with pytest.raises(BackupError, match=match) as caught:
        verify_archive(path, into, passphrase=passphrase, **kwargs)  # type: ignore[arg-type]
    assert not into.exists()
    leftovers = [p.name for p in into.parent.iterdir() if p.name.startswith(f".{into.name}.")]
    assert leftovers == []
    return caught.value


def assert_extracted(into: Path) -> None:
    found = {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()}
    assert found == set(PARTS)
    for name, data in PARTS.items():
        assert (into / name).read_bytes() == data, name


# --- round trips -------------------------------------------------------------------------


def test_plain_round_trip(staging: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "a.tar.gz"
    written = write_archive(staging, dest, manifest(), descriptions={"redis/dump.rdb": "queue"})
    assert dest.is_file() and not sidecar_path(dest).exists()
    assert not dest.with_name("a.tar.gz.partial").exists()
    assert [p.name for p in written.parts] == sorted(PARTS)
    for part in written.parts:
        assert part.size == len(PARTS[part.name])
        assert part.sha256 == hashlib.sha256(PARTS[part.name]).hexdigest()
        assert part.kind == part.name.split("/")[0]
    assert written.part("redis/dump.rdb").description == "queue"  # type: ignore[union-attr]
    assert "run store" in written.part("runstore/mimir.db").description  # type: ignore[union-attr]
    assert not written.encrypted and written.compression == "gzip"
    assert written.mimir_version == __version__ and written.counts == {"runs": 3}
    assert written.total_size == sum(len(d) for d in PARTS.values())

    # A tar (pax) in gzip: manifest.json first, the parts sorted, SHA256SUMS last, which
    # `sha256sum -c` would accept.
    with tarfile.open(dest, "r:gz") as tar:
        names = tar.getnames()
        assert names == ["manifest.json", *sorted(PARTS), "SHA256SUMS"]
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    assert parse_manifest(members["manifest.json"]) == written
    for line in members["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(members[name]).hexdigest() == digest
    assert len(members["SHA256SUMS"].decode().splitlines()) == len(PARTS) + 1

    into = tmp_path / "restore" / "into"
    assert verify_archive(dest, into) == written
    assert_extracted(into)
    assert read_manifest(dest) == written


def test_encrypted_round_trip(staging: Path, tmp_path: Path) -> None:
    dest = tmp_path / "b.tar.gz.age"
    written = write_archive(staging, dest, manifest(), passphrase=PASSPHRASE, work_factor=WF)
    assert written.encrypted
    with dest.open("rb") as handle:
        assert is_age(handle.read(64))
    assert PARTS["pipelines/demo/main.yaml"] not in dest.read_bytes()  # nothing in clear
    # The clear sidecar is the manifest: what the archive holds, without the passphrase.
    assert parse_manifest(sidecar_path(dest).read_bytes()) == written
    assert read_manifest(dest) == written
    assert read_manifest(dest, PASSPHRASE) == written
    into = tmp_path / "into"
    assert verify_archive(dest, into, passphrase=PASSPHRASE) == written
    assert_extracted(into)


def test_empty_staging_round_trips(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    dest = tmp_path / "e.tar.gz.age"
    written = write_archive(tmp_path / "empty", dest, manifest(), passphrase="x", work_factor=WF)
    assert written.parts == []
    assert verify_archive(dest, tmp_path / "into", passphrase="x") == written
    assert list((tmp_path / "into").iterdir()) == []


def test_progress_is_throttled_and_ends_at_the_total(
    staging: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "_COPY_BUFFER", 4096)  # many blocks
    total = sum(len(d) for d in PARTS.values())
    calls: list[tuple[int, int]] = []
    dest = tmp_path / "p.tar.gz"
    write_archive(staging, dest, manifest(), progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) < 10  # a call per 4 KiB block would be ~100; at most one per 0.1 s

    calls.clear()
    clock = iter(range(10_000))  # each block 1 s later: every block may report
    monkeypatch.setattr(archive_module.time, "monotonic", lambda: float(next(clock)))
    verify_archive(dest, tmp_path / "into", progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert len(calls) > 50


def test_archive_name() -> None:
    when = datetime(2026, 12, 1, 1, 2, 3, tzinfo=UTC)
    assert archive_name("demo", when, False) == "mimir-demo-20261201T010203Z.tar.gz"
    assert archive_name("demo", when, True) == "mimir-demo-20261201T010203Z.tar.gz.age"
    paris = when.astimezone(timezone(timedelta(hours=1)))
    assert archive_name("demo", paris, False) == "mimir-demo-20261201T010203Z.tar.gz"
    assert archive_name("a/b c", when.replace(tzinfo=None), False).startswith("mimir-a-b-c-2026")


# --- writing refusals --------------------------------------------------------------------


def test_write_refuses_to_replace_a_backup(staging: Path, plain: Path) -> None:
    before = plain.read_bytes()
    with pytest.raises(BackupError, match="already exists"):
        write_archive(staging, plain, manifest())
    assert plain.read_bytes() == before


def test_write_refuses_links_and_reserved_names(staging: Path, tmp_path: Path) -> None:
    (staging / "files" / "link").symlink_to(staging / "redis" / "dump.rdb")
    with pytest.raises(BackupError, match="is a symbolic link"):
        write_archive(staging, tmp_path / "x.tar.gz", manifest())
    (staging / "files" / "link").unlink()
    (staging / "SHA256SUMS").write_text("mine")
    with pytest.raises(BackupError, match="SHA256SUMS is the archive's own"):
        write_archive(staging, tmp_path / "x.tar.gz", manifest())
    assert not (tmp_path / "x.tar.gz").exists()


def test_secrets_are_never_written_in_clear(staging: Path, tmp_path: Path) -> None:
    secret = manifest().model_copy(update={"includes_secrets": True})
    with pytest.raises(BackupError, match="includes secrets is written encrypted"):
        write_archive(staging, tmp_path / "s.tar.gz", secret)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging"]
    written = write_archive(
        staging, tmp_path / "s.tar.gz.age", secret, passphrase="x", work_factor=WF
    )
    assert written.includes_secrets and written.encrypted


def test_a_failed_write_leaves_nothing(
    staging: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = archive_module._add_part

    def failing(tar: tarfile.TarFile, part: object, *args: object) -> None:
        if getattr(part, "name", "") == "runstore/mimir.db":
            raise OSError(28, "No space left on device")
        real(tar, part, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(archive_module, "_add_part", failing)
    dest = tmp_path / "f.tar.gz.age"
    with pytest.raises(BackupError, match=r"cannot write the backup .*No space left"):
        write_archive(staging, dest, manifest(), passphrase="x", work_factor=WF)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging"]


# --- crafting bad archives ---------------------------------------------------------------

Members = list[tuple[tarfile.TarInfo, bytes]]


def read_members(path: Path) -> Members:
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def write_members(members: Members, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info = copy.copy(info)
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return dest


def edit(name: str, change: Callable[[bytes], bytes]) -> Callable[[Members], Members]:
    def apply(members: Members) -> Members:
        assert name in [info.name for info, _ in members]
        return [(i, change(d) if i.name == name else d) for i, d in members]

    return apply


def flip(offset: int) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[offset] ^= 0x01
        return bytes(changed)

    return apply


def edit_manifest(**changes: object) -> Callable[[Members], Members]:
    def change(data: bytes) -> bytes:
        raw = json.loads(data)
        raw.update(changes)
        return json.dumps(raw).encode()

    return edit("manifest.json", change)


def insert_before_sums(*extra: tuple[tarfile.TarInfo, bytes]) -> Callable[[Members], Members]:
    return lambda members: [*members[:-1], *extra, members[-1]]


def link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def drop(name: str) -> Callable[[Members], Members]:
    return lambda members: [(i, d) for i, d in members if i.name != name]


def sums_line_flip(part: str) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        lines = data.decode().splitlines(keepends=True)
        for index, line in enumerate(lines):
            if line.endswith(f"  {part}\n"):
                lines[index] = ("0" if line[0] != "0" else "1") + line[1:]
        return "".join(lines).encode()

    return apply


FIRST_PART = sorted(PARTS)[0]

CRAFTED: dict[str, tuple[Callable[[Members], Members], str, str | None]] = {
    # id: (how the members change, the message, the part named)
    "flipped byte in a part": (
        edit("runstore/mimir.db", flip(CHUNK_SIZE)),
        r"^part runstore/mimir\.db is damaged: sha256 [0-9a-f]{64}, expected [0-9a-f]{64}$",
        "runstore/mimir.db",
    ),
    "flipped byte in the manifest": (
        edit("manifest.json", lambda d: d.replace(b'"demo"', b'"demn"')),
        r"^manifest\.json is damaged: sha256 [0-9a-f]{64}, expected [0-9a-f]{64} \(SHA256SUMS\)$",
        "manifest.json",
    ),
    "flipped byte in SHA256SUMS": (
        edit("SHA256SUMS", sums_line_flip("redis/dump.rdb")),
        r"^SHA256SUMS is damaged: it gives part redis/dump\.rdb sha256",
        "SHA256SUMS",
    ),
    "a part of another size": (
        edit("twins/twins.sqlite3", lambda d: d + b"x"),
        rf"^part twins/twins\.sqlite3 is damaged: {CHUNK_SIZE + 1} bytes, the manifest says "
        rf"{CHUNK_SIZE}$",
        "twins/twins.sqlite3",
    ),
    "format 2": (
        edit_manifest(format_version=2, mimir_version="9.9.9", parts="whatever"),
        r"^made by a newer Mimir \(9\.9\.9, backup format 2\); this Mimir "
        + re.escape(__version__)
        + r" reads format 1: upgrade first$",
        "manifest.json",
    ),
    "another format": (
        edit_manifest(format="something-else"),
        r"^not a Mimir backup archive: manifest\.json does not say format 'mimir-backup'$",
        "manifest.json",
    ),
    "a manifest that is not JSON": (
        edit("manifest.json", lambda d: b"{" + d),
        r"^manifest\.json is damaged: not valid JSON",
        "manifest.json",
    ),
    "a manifest with an escaping part name": (
        edit("manifest.json", lambda d: d.replace(b'"files/empty.txt"', b'"../empty.txt"')),
        r"^manifest\.json is damaged: part name '\.\./empty\.txt' is refused",
        "manifest.json",
    ),
    "a member with ..": (
        insert_before_sums(regular("files/../../evil", b"x")),
        r"^member 'files/\.\./\.\./evil' is refused: a path with '\.\.'$",
        "files/../../evil",
    ),
    "an absolute member": (
        insert_before_sums(regular("/etc/evil", b"x")),
        r"^member '/etc/evil' is refused: an absolute path$",
        "/etc/evil",
    ),
    "a symbolic link": (
        lambda ms: [ms[0], link(FIRST_PART, tarfile.SYMTYPE, "/etc/passwd"), *ms[2:]],
        rf"^member {FIRST_PART} is refused: a symbolic link$",
        FIRST_PART,
    ),
    "a hard link": (
        insert_before_sums(link("files/hard", tarfile.LNKTYPE, "runstore/mimir.db")),
        r"^member files/hard is refused: a hard link$",
        "files/hard",
    ),
    "a directory": (
        insert_before_sums(link("files/dir", tarfile.DIRTYPE, "")),
        r"^member files/dir is refused: a directory$",
        "files/dir",
    ),
    "a missing part": (
        drop("runstore/mimir.db"),
        r"^part runstore/mimir\.db is missing from the archive$",
        "runstore/mimir.db",
    ),
    "an extra member": (
        insert_before_sums(regular("files/extra.txt", b"not listed")),
        r"^member files/extra\.txt is not in the manifest \(an extra member\): refused$",
        "files/extra.txt",
    ),
    "a part twice": (
        lambda ms: [*ms[:-1], ms[1], ms[-1]],
        rf"^part {FIRST_PART} is in the archive twice$",
        FIRST_PART,
    ),
    "a member after SHA256SUMS": (
        lambda ms: [*ms, regular("files/late", b"x")],
        r"^the archive has a member after SHA256SUMS: 'files/late'",
        "files/late",
    ),
    "no SHA256SUMS": (
        drop("SHA256SUMS"),
        r"^the archive is truncated after part twins/twins\.sqlite3: SHA256SUMS missing$",
        "twins/twins.sqlite3",
    ),
    "a foreign tar": (
        lambda ms: [regular("etc/hosts", b"127.0.0.1 localhost\n"), *ms],
        r"^not a Mimir backup archive: its first member is 'etc/hosts', not manifest\.json$",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_archives_are_refused(case: str, plain: Path, tmp_path: Path) -> None:
    change, message, part = CRAFTED[case]
    bad = write_members(change(read_members(plain)), tmp_path / "bad.tar.gz")
    error = refused(bad, tmp_path / "restore" / "into", message)
    assert error.part == part


# --- damaged files -----------------------------------------------------------------------


def cut(path: Path, keep: Callable[[int], int], dest: Path) -> Path:
    data = path.read_bytes()
    dest.write_bytes(data[: keep(len(data))])
    return dest


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (lambda n: n // 2, r"^the archive is truncated (in|after) part (redis|runstore)/"),
        (lambda n: n - 1, r"^the archive is truncated at its very end, after SHA256SUMS$"),
        (lambda n: 30, r"^the archive is truncated in part manifest\.json$"),
    ],
    ids=["at 50%", "at -1 byte", "in the manifest"],
)
def test_truncated_archives_are_refused(
    plain: Path, tmp_path: Path, keep: Callable[[int], int], message: str
) -> None:
    refused(cut(plain, keep, tmp_path / "t.tar.gz"), tmp_path / "into", message)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (
            lambda n: n // 2,
            r"^the encrypted archive is truncated or damaged at byte \d+: chunk \d+ "
            r"\(bytes \d+-\d+\) does not authenticate \(in part redis/dump\.rdb\)$",
        ),
        (
            lambda n: n - 1,
            r"^the encrypted archive is truncated or damaged at byte \d+: .* "
            r"\((in|after) part twins/twins\.sqlite3\)$",
        ),
    ],
    ids=["at 50%", "at -1 byte"],
)
def test_truncated_encrypted_archives_are_refused(
    encrypted: Path, tmp_path: Path, keep: Callable[[int], int], message: str
) -> None:
    bad = cut(encrypted, keep, tmp_path / "t.tar.gz.age")
    refused(bad, tmp_path / "into", message, passphrase=PASSPHRASE)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_flipped_byte_in_the_compressed_file_is_refused(
    plain: Path, tmp_path: Path, where: float
) -> None:
    data = bytearray(plain.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    (tmp_path / "f.tar.gz").write_bytes(data)
    error = refused(tmp_path / "f.tar.gz", tmp_path / "into", r"damaged")
    assert error.part is not None


def test_a_flipped_byte_in_the_encrypted_file_names_its_offset(
    encrypted: Path, tmp_path: Path
) -> None:
    data = bytearray(encrypted.read_bytes())
    offset = len(data) // 3
    data[offset] ^= 0x01
    (tmp_path / "f.age").write_bytes(data)
    error = refused(
        tmp_path / "f.age",
        tmp_path / "into",
        r"^the encrypted archive is damaged at byte (\d+): chunk \d+ \(bytes \1-",
        passphrase=PASSPHRASE,
    )
    start = int(str(error).split("at byte ")[1].split(":")[0])
    assert start <= offset < start + CHUNK_SIZE + 16


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text\n", r"^not a Mimir backup archive: x is neither gzip nor age-encrypted$"),
        (b"", r"^not a Mimir backup archive: x is empty$"),
        (gzip.compress(b"not a tar " * 100), r"^not a Mimir backup archive: x holds no tar"),
        (b"\x28\xb5\x2f\xfd" + bytes(100), r"zstd archives need the zstandard module"),
        (b"-----BEGIN AGE ENCRYPTED FILE-----\n", r"ASCII-armored age file"),
    ],
    ids=["text", "empty", "gzip without tar", "zstd", "armored age"],
)
def test_foreign_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x").write_bytes(content)
    refused(tmp_path / "x", tmp_path / "into", message)


# --- passphrases -------------------------------------------------------------------------


def test_wrong_passphrase(encrypted: Path, tmp_path: Path) -> None:
    error = refused(
        encrypted,
        tmp_path / "into",
        r"^wrong passphrase: the archive's header does not authenticate$",
        passphrase="not it",
    )
    assert isinstance(error, WrongPassphrase)
    with pytest.raises(WrongPassphrase):
        read_manifest(encrypted, "not it")


def test_an_encrypted_archive_needs_its_passphrase(encrypted: Path, tmp_path: Path) -> None:
    refused(encrypted, tmp_path / "into", r"is encrypted: give its passphrase$")
    sidecar_path(encrypted).unlink()
    with pytest.raises(BackupError, match=r"is encrypted and has no .*meta\.json beside it"):
        read_manifest(encrypted)


def test_a_hostile_work_factor_is_refused_at_once(encrypted: Path, tmp_path: Path) -> None:
    data = encrypted.read_bytes()
    header_end = data.index(b"\n---")
    header = data[:header_end].replace(f" {WF}\n".encode(), b" 30\n")
    (tmp_path / "h.age").write_bytes(header + data[header_end:])
    refused(
        tmp_path / "h.age",
        tmp_path / "into",
        r"work factor 2\^30; Mimir reads at most 2\^20",
        passphrase=PASSPHRASE,
    )


# --- the target --------------------------------------------------------------------------


def test_an_existing_target_is_never_touched(plain: Path, tmp_path: Path) -> None:
    into = tmp_path / "into"
    into.mkdir()
    (into / "keep").write_text("mine")
    with pytest.raises(BackupError, match="already exists"):
        verify_archive(plain, into)
    assert [p.name for p in into.iterdir()] == ["keep"]


def test_check_sees_the_manifest_and_can_refuse(plain: Path, tmp_path: Path) -> None:
    seen: list[Manifest] = []

    def check(found: Manifest) -> None:
        seen.append(found)
        raise BackupError("the run store's schema is newer than this Mimir's", part="runstore")

    error = refused(plain, tmp_path / "into", r"^the run store's schema is newer", check=check)
    assert error.part == "runstore"
    assert seen and seen[0].project == "demo" and seen[0].counts == {"runs": 3}


def test_free_space_is_checked_first(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "_free_bytes", lambda folder: 1000)
    total = sum(len(d) for d in PARTS.values())
    refused(
        plain,
        tmp_path / "into",
        rf"^not enough free space in .* to verify the archive: its parts need .* \({total} "
        r"bytes\), 1000 bytes \(1000 bytes\) are free$",
    )
