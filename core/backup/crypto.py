"""age v1 encryption with a passphrase (the scrypt recipient), streamed.

The format is https://age-encryption.org/v1 (C2SP): files written here decrypt with
``age -d`` and a passphrase, and files ``age -p`` writes decrypt here. Only the scrypt
recipient is implemented (no X25519 keys, no ASCII armor), on ``cryptography``'s
primitives::

    age-encryption.org/v1
    -> scrypt <base64 salt> <log2 N>
    <base64 of the file key wrapped with ChaCha20-Poly1305 under scrypt(passphrase)>
    --- <base64 HMAC-SHA-256 of the header up to "---">
    <16-byte nonce><64 KiB ChaCha20-Poly1305 chunks (STREAM)>

:class:`AgeReader` authenticates the header before it reads a byte of the payload, so
a wrong passphrase is known at once (:class:`WrongPassphrase`); every chunk is
authenticated before its bytes are returned, and a truncated or damaged payload is an
error that names the byte offset. A header asking for more than 2^20 scrypt work (1 GiB
of memory) is refused before any is done.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mimir.core.backup.manifest import BackupError

__all__ = [
    "AGE_MAGIC",
    "DEFAULT_WORK_FACTOR",
    "MAX_WORK_FACTOR",
    "AgeReader",
    "AgeWriter",
    "PayloadError",
    "WrongPassphrase",
    "is_age",
]

AGE_MAGIC = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
_ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"

#: log2 of scrypt's N when writing (age's own default: ~1 s, 256 MiB).
DEFAULT_WORK_FACTOR = 18
#: The most a header may ask for when reading: 2^20 is ~3 s and 1 GiB of memory; more is
#: refused as hostile (or as not written by Mimir nor by age with its defaults).
MAX_WORK_FACTOR = 20

CHUNK_SIZE = 64 * 1024
_TAG_SIZE = 16
_ENCRYPTED_CHUNK = CHUNK_SIZE + _TAG_SIZE
_NONCE_SIZE = 16
_FILE_KEY_SIZE = 16
_MAX_HEADER = 64 * 1024  # a passphrase header is ~150 bytes
_COLUMNS = 64
_ZERO_NONCE = bytes(12)
_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_WORK_FACTOR = re.compile(rb"[1-9][0-9]*")


class WrongPassphrase(BackupError):
    """The passphrase does not open the archive (its header does not authenticate)."""

    def __init__(self, message: str | None = None, part: str | None = None) -> None:
        super().__init__(
            message or "wrong passphrase: the archive's header does not authenticate", part
        )


class PayloadError(BackupError):
    """The encrypted payload is truncated or damaged at byte ``offset`` of the file."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def is_age(first_bytes: bytes) -> bool:
    """True when ``first_bytes`` (the start of a file) begin an age v1 file."""
    return first_bytes.startswith(AGE_MAGIC)


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes, what: str) -> bytes:
    """Canonical unpadded base64 (RFC 4648 3.5), as age requires; anything else refused."""
    if not _B64_CHARS.fullmatch(text) or len(text) % 4 == 1:
        raise BackupError(f"the archive's age header is damaged: {what} is not base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise BackupError(f"the archive's age header is damaged: {what} is not canonical base64")
    return data


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(key)


def _scrypt_key(passphrase: str, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase.encode("utf-8"))


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class AgeWriter(io.RawIOBase):
    """Encrypts what is written to it into ``raw`` as an age v1 file with a passphrase.

    ``close()`` writes the final chunk; it does not close ``raw`` (as ``gzip.GzipFile``
    leaves its ``fileobj``): the caller flushes, syncs and closes it.
    """

    def __init__(
        self, raw: BinaryIO, passphrase: str, work_factor: int = DEFAULT_WORK_FACTOR
    ) -> None:
        super().__init__()
        if not passphrase:
            raise BackupError("an empty passphrase encrypts nothing: give one")
        if not 1 <= work_factor <= MAX_WORK_FACTOR:
            raise BackupError(
                f"scrypt work factor 2^{work_factor} is outside 2^1..2^{MAX_WORK_FACTOR}"
            )
        self._raw = raw
        file_key = os.urandom(_FILE_KEY_SIZE)
        salt = os.urandom(16)
        wrap_key = _scrypt_key(passphrase, salt, work_factor)
        body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        header = AGE_MAGIC + b"-> scrypt " + _b64encode(salt) + b" %d\n" % work_factor
        header += _wrap_body(_b64encode(body)) + b"---"
        mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
        nonce = os.urandom(_NONCE_SIZE)
        raw.write(header + b" " + _b64encode(mac) + b"\n" + nonce)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buffer = bytearray()
        self._counter = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed AgeWriter")
        self._buffer += data
        # Keep at least one byte back: the last chunk is sealed as last, and it may only
        # be empty when the whole payload is.
        while len(self._buffer) > CHUNK_SIZE:
            self._seal(bytes(self._buffer[:CHUNK_SIZE]), last=False)
            del self._buffer[:CHUNK_SIZE]
        return len(data)

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        nonce = _chunk_nonce(self._counter, last)
        self._raw.write(self._aead.encrypt(nonce, chunk, None))
        self._counter += 1

    def flush(self) -> None:
        if not self.closed:
            self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._raw.flush()
        finally:
            super().close()


def _wrap_body(encoded: bytes) -> bytes:
    """A stanza body wrapped at 64 columns, ending with a line shorter than 64 (maybe empty)."""
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
    if not lines or len(lines[-1]) == _COLUMNS:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


class AgeReader(io.RawIOBase):
    """Decrypts an age v1 file with a passphrase, as a readable stream.

    The header is parsed and authenticated in the constructor (before any payload is
    read): :class:`WrongPassphrase` when the passphrase does not open it, a
    :class:`BackupError` when it is malformed, not for a passphrase, or asks for more
    than ``max_work_factor``. ``read()`` returns only authenticated bytes; a payload that
    is truncated, damaged or followed by garbage raises a :class:`BackupError` naming
    the byte offset in the file.
    """

    def __init__(
        self, raw: BinaryIO, passphrase: str, *, max_work_factor: int = MAX_WORK_FACTOR
    ) -> None:
        super().__init__()
        self._raw = raw
        self._pending = b""  # read from raw, not yet consumed
        self._offset = 0  # bytes of raw consumed so far
        header, salt, work_factor, body, mac = self._parse_header()
        if work_factor > max_work_factor:
            raise BackupError(
                f"the archive's age header asks for scrypt work factor 2^{work_factor}; "
                f"Mimir reads at most 2^{max_work_factor} (a hostile or foreign archive)"
            )
        try:
            file_key = ChaCha20Poly1305(_scrypt_key(passphrase, salt, work_factor)).decrypt(
                _ZERO_NONCE, body, None
            )
        except InvalidTag:
            raise WrongPassphrase() from None
        if len(file_key) != _FILE_KEY_SIZE:  # pragma: no cover - the body is 32 bytes
            raise BackupError("the archive's age header is damaged: the file key is not 16 bytes")
        expected = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise BackupError(
                "the archive's age header is damaged: its MAC does not match "
                "(the passphrase is right)"
            )
        nonce = self._take(_NONCE_SIZE)
        if len(nonce) < _NONCE_SIZE:
            raise PayloadError(
                f"the encrypted archive is truncated at byte {self._offset}: "
                "it ends inside the payload's nonce",
                self._offset,
            )
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._plain = b""
        self._plain_at = 0
        self._done = False

    # --- the header -------------------------------------------------------------------

    def _fill(self, size: int) -> None:
        """Have at least ``size`` bytes in ``_pending`` unless raw ends first."""
        while len(self._pending) < size:
            more = self._raw.read(max(size - len(self._pending), _ENCRYPTED_CHUNK))
            if not more:
                return
            self._pending += more

    def _take(self, size: int) -> bytes:
        self._fill(size)
        data, self._pending = self._pending[:size], self._pending[size:]
        self._offset += len(data)
        return data

    def _line(self, consumed: int) -> bytes:
        """The next header line without its LF; the header may not pass _MAX_HEADER."""
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                return self._take(end + 1)[:-1]
            if consumed + len(self._pending) > _MAX_HEADER:
                raise BackupError("the archive's age header is damaged: it does not end")
            before = len(self._pending)
            self._fill(before + 1)
            if len(self._pending) == before:
                raise BackupError(
                    f"the encrypted archive is truncated at byte {self._offset + before}: "
                    "it ends inside the age header"
                )

    def _parse_header(self) -> tuple[bytes, bytes, int, bytes, bytes]:
        """(header bytes up to ``---``, salt, work factor, stanza body, MAC)."""
        header = b""
        version = self._line(0)
        if version + b"\n" != AGE_MAGIC:
            if version.startswith(_VERSION_PREFIX):
                raise BackupError(
                    f"the archive is age {version[len(_VERSION_PREFIX) :]!r}; Mimir reads v1"
                )
            raise BackupError("not an age-encrypted file")
        header += version + b"\n"
        stanzas: list[tuple[list[bytes], bytes]] = []
        while True:
            line = self._line(len(header))
            if line.startswith(b"---"):
                if not line.startswith(b"--- "):
                    raise BackupError("the archive's age header is damaged: bad MAC line")
                mac_text = line[4:]
                header += b"---"
                break
            if not line.startswith(b"-> "):
                raise BackupError("the archive's age header is damaged: unexpected line")
            args = line[3:].split(b" ")
            if any(not arg or not all(0x21 <= c <= 0x7E for c in arg) for arg in args):
                raise BackupError("the archive's age header is damaged: bad stanza arguments")
            header += line + b"\n"
            body = b""
            while True:
                body_line = self._line(len(header))
                header += body_line + b"\n"
                if len(body_line) > _COLUMNS:
                    raise BackupError("the archive's age header is damaged: long stanza line")
                body += body_line
                if len(body_line) < _COLUMNS:
                    break
            stanzas.append((args, _b64decode(body, "a stanza body")))
        mac = _b64decode(mac_text, "the MAC")
        if len(mac_text) != 43 or len(mac) != 32:
            raise BackupError("the archive's age header is damaged: the MAC is not 32 bytes")
        if not stanzas:
            raise BackupError("the archive's age header is damaged: it has no recipient")
        scrypt = [(args, body) for args, body in stanzas if args[0] == b"scrypt"]
        if not scrypt:
            types = ", ".join(sorted({args[0].decode("ascii") for args, _ in stanzas}))
            raise BackupError(
                f"the archive is encrypted to age recipients ({types}), not with a passphrase; "
                "Mimir decrypts passphrase archives only"
            )
        if len(stanzas) != 1:
            raise BackupError(
                "the archive's age header is damaged: a passphrase stanza must be alone"
            )
        args, body = scrypt[0]
        if len(args) != 3:
            raise BackupError(
                "the archive's age header is damaged: the scrypt stanza has "
                f"{len(args) - 1} arguments, not 2"
            )
        salt = _b64decode(args[1], "the scrypt salt")
        if len(salt) != 16:
            raise BackupError("the archive's age header is damaged: the salt is not 16 bytes")
        if not _WORK_FACTOR.fullmatch(args[2]):
            raise BackupError(
                "the archive's age header is damaged: the scrypt work factor "
                f"{args[2][:20].decode('ascii', 'replace')!r} is not a decimal number"
            )
        if len(body) != 32:
            raise BackupError(
                "the archive's age header is damaged: the wrapped file key is not 32 bytes"
            )
        # Compare lengths before converting: a hostile 10,000-digit factor stays cheap.
        work_factor = int(args[2]) if len(args[2]) <= 3 else 1000
        return header, salt, work_factor, body, mac

    # --- the payload ------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    @property
    def offset(self) -> int:
        """Bytes of the encrypted file consumed so far."""
        return self._offset

    def _next_chunk(self) -> bytes:
        """Decrypt the next chunk; b"" once the final one is consumed."""
        if self._done:
            return b""
        start = self._offset
        chunk = self._take(_ENCRYPTED_CHUNK)
        if len(chunk) == _ENCRYPTED_CHUNK:
            self._fill(1)
            last = not self._pending
        else:
            last = True
        if not chunk:
            raise PayloadError(
                f"the encrypted archive is truncated at byte {start}: it ends before its "
                "final chunk",
                start,
            )
        if len(chunk) < _TAG_SIZE:
            raise PayloadError(
                f"the encrypted archive is truncated at byte {self._offset}: it ends inside "
                f"chunk {self._counter} (which starts at byte {start})",
                self._offset,
            )
        if last and self._counter > 0 and len(chunk) == _TAG_SIZE:
            raise PayloadError(
                f"the encrypted archive is damaged at byte {start}: its final chunk is empty",
                start,
            )
        try:
            plain = self._aead.decrypt(_chunk_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            raise self._chunk_failure(chunk, start, last) from None
        self._counter += 1
        self._done = last
        return plain

    def _chunk_failure(self, chunk: bytes, start: int, last: bool) -> PayloadError:
        """Say whether a chunk that does not authenticate was cut short or damaged."""
        try:
            self._aead.decrypt(_chunk_nonce(self._counter, not last), chunk, None)
        except InvalidTag:
            pass
        else:
            if last:
                return PayloadError(
                    f"the encrypted archive is truncated at byte {self._offset}: chunk "
                    f"{self._counter} (at byte {start}) is whole but not the final one",
                    self._offset,
                )
            return PayloadError(
                f"the encrypted archive has data after its final chunk, at byte {self._offset}",
                self._offset,
            )
        how = "truncated or damaged" if len(chunk) < _ENCRYPTED_CHUNK else "damaged"
        return PayloadError(
            f"the encrypted archive is {how} at byte {start}: chunk {self._counter} "
            f"(bytes {start}-{start + len(chunk) - 1}) does not authenticate",
            start,
        )

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed AgeReader")
        if size is None or size < 0:
            parts = [self._plain[self._plain_at :]]
            self._plain, self._plain_at = b"", 0
            while chunk := self._next_chunk():
                parts.append(chunk)
            return b"".join(parts)
        while self._plain_at >= len(self._plain):
            self._plain, self._plain_at = self._next_chunk(), 0
            if not self._plain:
                return b""
        data = self._plain[self._plain_at : self._plain_at + size]
        self._plain_at += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)
