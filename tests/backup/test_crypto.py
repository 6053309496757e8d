"""age v1 with a passphrase (mimir.core.backup.crypto): the format, its refusals, interop.

Interop is proved three ways: the C2SP/CCTV age test vectors for the scrypt recipient
(below), and Debian's `age` binary decrypting what we write and writing what we decrypt
(when it is installed; it reads a passphrase from a terminal only, so it runs on a pty).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
import select
import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mimir.core.backup.crypto import (
    CHUNK_SIZE,
    AgeReader,
    AgeWriter,
    PayloadError,
    WrongPassphrase,
    _wrap_body,
    is_age,
)
from mimir.core.backup.manifest import BackupError

WF = 10  # scrypt work factor for speed; one test runs the default (18)
PASSPHRASE = "correct horse battery staple"


def encrypt(
    data: bytes, passphrase: str = PASSPHRASE, *, pieces: int = 7, work_factor: int = WF
) -> bytes:
    out = io.BytesIO()
    writer = AgeWriter(out, passphrase, work_factor)
    step = max(1, len(data) // pieces + 1)
    for i in range(0, len(data), step):
        assert writer.write(data[i : i + step]) == len(data[i : i + step])
    writer.close()
    return out.getvalue()


def decrypt(blob: bytes, passphrase: str = PASSPHRASE, *, read_size: int = 10_000) -> bytes:
    reader = AgeReader(io.BytesIO(blob), passphrase)
    parts = []
    while chunk := reader.read(read_size):
        parts.append(chunk)
    return b"".join(parts)


def header_length(blob: bytes) -> int:
    """Bytes up to and including the MAC line."""
    return blob.index(b"\n--- ") + len(b"\n--- ") + 43 + 1


def payload_start(blob: bytes) -> int:
    return header_length(blob) + 16  # the nonce


# --- round trips and the format ---------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 5],
)
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data)
    assert decrypt(blob) == data
    assert decrypt(blob, read_size=1 << 20) == data
    assert AgeReader(io.BytesIO(blob), PASSPHRASE).read() == data  # read() = all
    # STREAM: one chunk per started 64 KiB, each with a 16-byte tag; a payload that is a
    # whole number of chunks has no empty chunk after it; an empty one has one empty chunk.
    chunks = max(1, -(-size // CHUNK_SIZE))
    assert len(blob) == payload_start(blob) + size + 16 * chunks


def test_header_is_age_v1_with_one_scrypt_stanza() -> None:
    blob = encrypt(b"x")
    lines = blob[: header_length(blob)].split(b"\n")
    assert lines[0] == b"age-encryption.org/v1"
    match = re.fullmatch(rb"-> scrypt ([A-Za-z0-9+/]{22}) 10", lines[1])
    assert match, lines[1]
    assert len(base64.b64decode(match[1] + b"==")) == 16  # salt: unpadded base64, 16 bytes
    assert re.fullmatch(rb"[A-Za-z0-9+/]{43}", lines[2])  # wrapped file key: 32 bytes
    assert re.fullmatch(rb"--- [A-Za-z0-9+/]{43}", lines[3])
    assert lines[4] == b""
    assert is_age(blob)
    assert not is_age(b"\x1f\x8b\x08\x00") and not is_age(b"age-encryption.org/v2\n")
    # A fresh file key, salt and nonce each time: the same input never encrypts the same.
    assert encrypt(b"x")[: len(blob)] != blob


def test_the_written_file_follows_the_spec_step_by_step() -> None:
    """Decrypt what AgeWriter wrote with the spec's own steps, written out here."""
    data = os.urandom(2 * CHUNK_SIZE + 10)
    blob = encrypt(data, "pass")
    header_end = blob.index(b"\n--- ")
    lines = blob[:header_end].split(b"\n")
    _, _, salt_b64, work_factor = lines[1].split(b" ")
    salt = base64.b64decode(salt_b64 + b"==")
    wrap_key = Scrypt(
        salt=b"age-encryption.org/v1/scrypt" + salt, length=32, n=2 ** int(work_factor), r=8, p=1
    ).derive(b"pass")
    file_key = ChaCha20Poly1305(wrap_key).decrypt(
        bytes(12), base64.b64decode(lines[2] + b"="), None
    )
    assert len(file_key) == 16

    def hkdf(salt: bytes | None, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(file_key)

    mac_line = blob[header_end + 1 : blob.index(b"\n", header_end + 1)]
    mac = hmac.new(hkdf(None, b"header"), blob[: header_end + 4], hashlib.sha256).digest()
    assert mac_line == b"--- " + base64.b64encode(mac).rstrip(b"=")
    start = header_end + 1 + len(mac_line) + 1
    nonce, payload = blob[start : start + 16], blob[start + 16 :]
    aead = ChaCha20Poly1305(hkdf(nonce, b"payload"))
    size = CHUNK_SIZE + 16
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    plain = b"".join(
        aead.decrypt(
            index.to_bytes(11, "big") + (b"\x01" if index == len(chunks) - 1 else b"\x00"),
            chunk,
            None,
        )
        for index, chunk in enumerate(chunks)
    )
    assert len(chunks) == 3 and plain == data


def test_stanza_body_wraps_at_64_columns() -> None:
    assert _wrap_body(b"A" * 43) == b"A" * 43 + b"\n"
    assert _wrap_body(b"A" * 64) == b"A" * 64 + b"\n\n"  # ends with a short (empty) line
    assert _wrap_body(b"A" * 65) == b"A" * 64 + b"\nA\n"
    assert _wrap_body(b"") == b"\n"


def test_default_work_factor_is_18_and_round_trips() -> None:
    out = io.BytesIO()
    with AgeWriter(out, PASSPHRASE) as writer:
        writer.write(b"secret payload")
    blob = out.getvalue()
    assert b"\n-> scrypt " in blob and blob.split(b"\n")[1].endswith(b" 18")
    assert decrypt(blob) == b"secret payload"


def test_writer_refuses_an_empty_passphrase_and_odd_work_factors() -> None:
    with pytest.raises(BackupError, match="empty passphrase"):
        AgeWriter(io.BytesIO(), "")
    with pytest.raises(BackupError, match="work factor"):
        AgeWriter(io.BytesIO(), PASSPHRASE, 21)


# --- refusals ----------------------------------------------------------------------------


def test_wrong_passphrase_is_known_from_the_header_alone() -> None:
    blob = encrypt(os.urandom(3 * CHUNK_SIZE))
    for sample in (blob, blob[: header_length(blob)]):  # even with no payload at all
        with pytest.raises(WrongPassphrase) as caught:
            AgeReader(io.BytesIO(sample), "not the passphrase")
        assert str(caught.value) == "wrong passphrase: the archive's header does not authenticate"
        assert isinstance(caught.value, BackupError)


def test_a_hostile_work_factor_is_refused_before_any_work() -> None:
    blob = encrypt(b"data")
    hostile = blob.replace(b" 10\n", b" 30\n", 1)
    started = time.monotonic()
    with pytest.raises(
        BackupError, match=r"work factor 2\^30; Mimir reads at most 2\^20"
    ) as caught:
        AgeReader(io.BytesIO(hostile), PASSPHRASE)
    assert not isinstance(caught.value, WrongPassphrase)
    assert time.monotonic() - started < 0.5  # 2^30 would take 1 TiB and minutes
    with pytest.raises(BackupError, match=r"2\^11; Mimir reads at most 2\^10"):
        AgeReader(io.BytesIO(blob.replace(b" 10\n", b" 11\n", 1)), PASSPHRASE, max_work_factor=10)


def test_a_damaged_header_mac_is_not_a_wrong_passphrase() -> None:
    blob = bytearray(encrypt(b"data"))
    mac_at = blob.index(b"\n--- ") + 6
    blob[mac_at] = ord("A") if blob[mac_at] != ord("A") else ord("B")
    with pytest.raises(BackupError, match="MAC does not match") as caught:
        AgeReader(io.BytesIO(bytes(blob)), PASSPHRASE)
    assert not isinstance(caught.value, WrongPassphrase)


def test_every_flipped_payload_byte_is_caught_with_its_offset() -> None:
    data = os.urandom(2 * CHUNK_SIZE + 100)
    blob = encrypt(data)
    start = payload_start(blob)
    second_chunk = start + CHUNK_SIZE + 16
    for position, chunk_start in [
        (start - 3, None),  # in the nonce: every chunk's key changes
        (start, start),
        (start + 1000, start),
        (second_chunk + 5, second_chunk),
        (len(blob) - 1, second_chunk + CHUNK_SIZE + 16),  # the final chunk's tag
    ]:
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(PayloadError, match="damaged") as caught:
            decrypt(bytes(damaged))
        assert caught.value.offset == (chunk_start or start)
        assert f"at byte {caught.value.offset}" in str(caught.value)


@pytest.mark.parametrize(
    "cut", ["mid-chunk", "chunk boundary", "minus one byte", "nonce", "no chunk"]
)
def test_truncation_is_an_error_naming_the_offset(cut: str) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 100)
    blob = encrypt(data)
    start = payload_start(blob)
    at = {
        "mid-chunk": start + CHUNK_SIZE // 2,
        "chunk boundary": start + CHUNK_SIZE + 16,  # whole chunks, but no final one
        "minus one byte": len(blob) - 1,
        "nonce": start - 5,
        "no chunk": start,
    }[cut]
    reader = None
    with pytest.raises(PayloadError, match=r"truncated.* at byte \d+") as caught:
        reader = AgeReader(io.BytesIO(blob[:at]), PASSPHRASE)
        returned = reader.read()
        pytest.fail(f"read {len(returned)} bytes of a truncated file")
    assert caught.value.offset <= at
    if cut == "chunk boundary":
        assert "is whole but not the final one" in str(caught.value)


def test_chunks_cannot_be_reordered_dropped_or_extended() -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    blob = encrypt(data)
    start = payload_start(blob)
    size = CHUNK_SIZE + 16
    chunks = [blob[start + i * size : start + (i + 1) * size] for i in range(3)]
    swapped = blob[:start] + chunks[1] + chunks[0] + chunks[2]
    dropped = blob[:start] + chunks[0] + chunks[2]
    with pytest.raises(PayloadError, match="damaged"):
        decrypt(swapped)
    with pytest.raises(PayloadError):
        decrypt(dropped)
    with pytest.raises(PayloadError):
        decrypt(blob + b"trailing garbage")
    with pytest.raises(PayloadError, match="data after its final chunk"):
        decrypt(blob + os.urandom(CHUNK_SIZE + 16))


# --- the C2SP/CCTV age test vectors (scrypt) --------------------------------------------
# The scrypt vectors of https://github.com/C2SP/CCTV/tree/main/age/testdata (commit
# 1e3d2860), each file whole in base64. They are available under 0BSD, CC0 1.0 or the
# Unlicense (the CCTV age README): "Copyright (c) 2022 The age Authors. Permission to use,
# copy, modify, and/or distribute this software for any purpose with or without fee is
# hereby granted." Format: "key: value" lines, an empty line, then the age file.
_CCTV_SCRYPT = {
    "scrypt": (
        "ZXhwZWN0OiBzdWNjZXNzCnBheWxvYWQ6IDAxM2Y1NDQwMGM4MmRhMDgwMzc3NTlhZGE5MDdhOGI4NjRlOTdk"
        "ZTgxYzA4OGExODIwNjJjNGI1NjIyZmQyYWIKZmlsZSBrZXk6IDU5NDU0YzRjNGY1NzIwNTM1NTQyNGQ0MTUy"
        "NDk0ZTQ1CnBhc3NwaHJhc2U6IHBhc3N3b3JkCgphZ2UtZW5jcnlwdGlvbi5vcmcvdjEKLT4gc2NyeXB0IHJG"
        "MC9Od2JsVUhIVHBnUWdScGU1Q1EgMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FK"
        "MmFVWQotLS0gSU9YaVFZU3Rrb1QxbXZaVzJ0Rk9xWmRoUlZ2ajU4ZWdBQngvc1dmWlFiYwobNcbmh90A2jrD"
        "eayfdCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_and_x25519": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKaWRlbnRpdHk6IEFHRS1TRUNSRVQtS0VZLTE0M1dON0RDWFU0RzhSNUFYUVNTWUQ5QUVQWUROVDNIWFNM"
        "V1NQSzM2Q0RVNkU4TTU5U1NTQUdaM0tHCnBhc3NwaHJhc2U6IHBhc3N3b3JkCmNvbW1lbnQ6IHNjcnlwdCBz"
        "dGFuemFzIG11c3QgYmUgYWxvbmUgaW4gdGhlIGhlYWRlcgoKYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgy"
        "NTUxOSBhanRxQXZERWtWTnIyQjd6VU90cTJtQVFYRFNCbE5yVkF1TS9kS2I1c1Q0ClUraEtsSjRpc3dlSjlQ"
        "S0c3cGdzY21HM2NQQVNMZ1R3N1NPQnBiWjh4MlUKLT4gc2NyeXB0IDNkOXkwRys4cTFmZlBRMHhKSmF0SVEg"
        "MTAKZm9ab2x4dWhSU0w3SUc3b2FSKzQ1Nkl6a0h0dnVlN2o0bVVqaDNEQjZFSQotLS0geXA0WjBsVjFMRWRr"
        "bTErdURDdVBVVis5aElYYlBLckJYS1EvZjVZMDNBcwoCVF5r9MYGHIk+jynszSwLcrHMRmyeBidjz/QRkoKe"
        "m7hWtQ=="
    ),
    "scrypt_bad_tag": (
        "ZXhwZWN0OiBubyBtYXRjaApmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRlNDUKcGFz"
        "c3BocmFzZTogcGFzc3dvcmQKY29tbWVudDogdGhlIENoYUNoYTIwUG9seTEzMDUgYXV0aGVudGljYXRpb24g"
        "dGFnIG9uIHRoZSBib2R5IG9mIHRoZSBzY3J5cHQgc3RhbnphIGlzIHdyb25nCgphZ2UtZW5jcnlwdGlvbi5v"
        "cmcvdjEKLT4gc2NyeXB0IHJGMC9Od2JsVUhIVHBnUWdScGU1Q1EgMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0"
        "b1lleGpFM1RJQzBPMHpHU3FKMmFiawotLS0gU3JBb2tYSTA1YW9rMXZlY0NBb0NWOGdXakRKREhXakpoT1d6"
        "TWtNV1JGTQobNcbmh90A2jrDeayfdCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_double": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKcGFzc3BocmFzZTogaHVudGVyMgpjb21tZW50OiBzY3J5cHQgc3Rh"
        "bnphcyBtdXN0IGJlIGFsb25lIGluIHRoZSBoZWFkZXIKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5"
        "cHQgckYwL053YmxVSEhUcGdRZ1JwZTVDUSAxMApnVWpFeW1GS01WWFFFS2RNTUhMMjRvWWV4akUzVElDME8w"
        "ekdTcUoyYVVZCi0+IHNjcnlwdCBHelhHNW9mZEFObzZ3M21zbjNRc0lRIDEwCk92ZUlUdXd4YWt2N2syb0xu"
        "aW9OWUY0QmhnejlLWjM2cGIwOTh3RG9BdjgKLS0tIGE1ZCs0QXkxZXZKaG9Ec2tJenVUWlY5YkJnS2s0NTcz"
        "VlpOZnVvV0pEUEUK7s9ix86RtDMnTmjU8vkTTLdMW/73vqpSyPC8DpksHoMx+2Y="
    ),
    "scrypt_extra_argument": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKY29tbWVudDogdGhlIGJhc2U2NCBlbmNvZGluZyBvZiB0aGUgc2hh"
        "cmUgaXMgbm90IGNhbm9uaWNhbAoKYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IHNjcnlwdCByRjAvTndibFVI"
        "SFRwZ1FnUnBlNUNRIDEwIDEwCmdVakV5bUZLTVZYUUVLZE1NSEwyNG9ZZXhqRTNUSUMwTzB6R1NxSjJhVVkK"
        "LS0tIGJEMWJveUQybXJCcWxCWStzVUtuTW9QYk5WVUVRejBkaTF5V1NGTS9lTXMKGzXG5ofdANo6w3msn3Qs"
        "If0YWhuePe1znRSsappQEk24Ztg="
    ),
    "scrypt_long_file_key": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNDEyMDRjNGY0ZTQ3NDU1MjIwNTk0NTRjNGM0ZjU3"
        "MjA1MzU1NDI0ZDQxNTI0OTRlNDUKcGFzc3BocmFzZTogcGFzc3dvcmQKY29tbWVudDogdGhlIGZpbGUga2V5"
        "IG11c3QgYmUgY2hlY2tlZCB0byBiZSAxNiBieXRlcyBiZWZvcmUgZGVjcnlwdGluZyBpdAoKYWdlLWVuY3J5"
        "cHRpb24ub3JnL3YxCi0+IHNjcnlwdCByRjAvTndibFVISFRwZ1FnUnBlNUNRIDEwCm1TM0V5V0JhVkZTbEM2"
        "OUJMblR2aDZqcDR4MEdOR3o0Zmp2bTcvSWVaL0hqR2t1ZktrTjI2WlUKLS0tICtVNEo2ZlhzR2wxQWRreExq"
        "b1NKMGx2VUdQai8zWHVONzI2Qm1LVHdvb1UKGzXG5ofdANo6w3msn3QsIVs7HZObypTKrcEO7Z28u3K8SfU="
    ),
    "scrypt_no_match": (
        "ZXhwZWN0OiBubyBtYXRjaApmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRlNDUKcGFz"
        "c3BocmFzZTogd3JvbmcKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053YmxVSEhUcGdR"
        "Z1JwZTVDUSAxMApnVWpFeW1GS01WWFFFS2RNTUhMMjRvWWV4akUzVElDME8wekdTcUoyYVVZCi0tLSBJT1hp"
        "UVlTdGtvVDFtdlpXMnRGT3FaZGhSVnZqNThlZ0FCeC9zV2ZaUWJjChs1xuaH3QDaOsN5rJ90LCH9GFobnj3t"
        "c50UrGqaUBJNuGbY"
    ),
    "scrypt_not_canonical_body": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKY29tbWVudDogdGhlIGJhc2U2NCBlbmNvZGluZyBvZiB0aGUgc2hh"
        "cmUgaXMgbm90IGNhbm9uaWNhbAoKYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IHNjcnlwdCByRjAvTndibFVI"
        "SFRwZ1FnUnBlNUNRIDEwCmdVakV5bUZLTVZYUUVLZE1NSEwyNG9ZZXhqRTNUSUMwTzB6R1NxSjJhVVoKLS0t"
        "IEd2OVZKUUNzY0diYklWZ28xWG0xQU5VaG5veVNMcXVrcExrU0d6SCtjcmsKGzXG5ofdANo6w3msn3QsIf0Y"
        "WhuePe1znRSsappQEk24Ztg="
    ),
    "scrypt_not_canonical_salt": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUiAxMApnVWpFeW1GS01WWFFFS2RNTUhMMjRvWWV4akUzVElDME8wekdTcUoyYVVZ"
        "Ci0tLSBJQ1RBOHZpRDJEclBia3RqeGFTbTRQdmdkM0RLR2lKU0wvdmRTdHI5TVlzChs1xuaH3QDaOsN5rJ90"
        "LCH9GFobnj3tc50UrGqaUBJNuGbY"
    ),
    "scrypt_salt_long": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUnMxeHVZIDEwCkpQN3JvSTRhaEFUWUJJV2ltVEphUWlpN2tzbVcveitBcTBlU1Zy"
        "OUhiTG8KLS0tIHAyaUF1bnVGMGZVVmtOSTdoVXRIMUJXRkZuNjhXZE9vZ2RVZUxhODRuRTQKh90A2jrDeayf"
        "dCwh7s9ixzCydv/KD+aOBOamN5ZB6jqNjBI="
    ),
    "scrypt_salt_missing": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgMTAKVzBt"
        "TXRoeWhOSk9WM2RlYkN3a1FjVWxOeC9pNlNzL0EwN2FRQ3JHNUdjdwotLS0gMVFzUGNFYkJTeWxmUDRhcGFr"
        "SnF0REJKTXJwZDgxclB1U0xUQ3ZkWng2RQqsXT83BuVQcdOmBCBGl7kJBZXC9/XbrugNegGMKHIFivPOfA=="
    ),
    "scrypt_salt_short": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZyAxMApaR0YyL0tFVXZjcGdOM1R4MElsTERwbG9tYjZ6UjhJRlZFNUEzVnpVMWdnCi0tLSBM"
        "cTMwMGNLZEMzZ2V2VDNQTk9yL3JlV3lwZGZPWDZvRW15Zm1PbkNhQXprCkaXuQkbNcbmh90A2jrDeazkY0yP"
        "jy7kTg9PZGxfxy2BvRcR"
    ),
    "scrypt_uppercase": (
        "ZXhwZWN0OiBubyBtYXRjaApmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRlNDUKcGFz"
        "c3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBTY3J5cHQgckYwL053YmxVSEhU"
        "cGdRZ1JwZTVDUSAxMApnVWpFeW1GS01WWFFFS2RNTUhMMjRvWWV4akUzVElDME8wekdTcUoyYVVZCi0tLSBJ"
        "bi9UY0tQNXdES1AxNHN1ZkY3NHBvUFpjcGFMVkVDbWZEdDBHK3lNSXM0Chs1xuaH3QDaOsN5rJ90LCH9GFob"
        "nj3tc50UrGqaUBJNuGbY"
    ),
    "scrypt_work_factor_23": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKY29tbWVudDogd29yayBmYWN0b3IgaXMgdmVyeSBoaWdoLCB3b3Vs"
        "ZCB0YWtlIGEgbG9uZyB0aW1lIHRvIGNvbXB1dGUKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQg"
        "ckYwL053YmxVSEhUcGdRZ1JwZTVDUSAyMwpxVzllVnNUME5WYi9Wc3d0dzhrUEl4VW5hWW1tOVB4MWRZbXEy"
        "KzQrcVpBCi0tLSAzOFRwUU14UVJSTk1mbVlZcEJYNkREclB4NC9RWTVVbUpuaFB5Vm9YL2N3CqxdPzcG5VBx"
        "06YEIEaXuQkFlcL39duu6A16AYwocgWK8858"
    ),
    "scrypt_work_factor_hex": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSAweGEKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FKMmFV"
        "WQotLS0gWmhmdm02d1hnakIwNlV1dTRHZEZGS09Ba3ZMa29TOTY0K0NDbHBlSFNVTQobNcbmh90A2jrDeayf"
        "dCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_leading_garbage": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSBhYWFhMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FK"
        "MmFVWQotLS0gTExTOXlmK2FhajRmc01zanBWM0FjZEJBOElsaTdLdEJtb1p4MkJseEg4TQobNcbmh90A2jrD"
        "eayfdCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_leading_plus": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSArMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FKMmFV"
        "WQotLS0gYXNDR3pTSFN1NUR3VTdZNWorblNyVG9oS29GTmppOXVLLzNJa3NYbkM0awobNcbmh90A2jrDeayf"
        "dCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_leading_zero_decimal": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSAwMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FKMmFV"
        "WQotLS0gNmgzUDQrdzR5VnAwZTQyb3pVRGNEL3ptTFVjL1Qyd2xLRVJiOTV6ZkJabwobNcbmh90A2jrDeayf"
        "dCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_leading_zero_octal": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSAwMTIKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FKMmFV"
        "WQotLS0gb1F1ZU1rSjFxWVZIQURVNUZ4NDdaQTBnVkloWUIzTVZxQkZha2VSSndIUQobNcbmh90A2jrDeayf"
        "dCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_missing": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUQoxaHFsYW9DVXBrZ3pZSStvVFMwcDFOeG05dTNGamliOFJFanJ3cDQwbVJFCi0t"
        "LSAwbmFMYURFV0w5bTd5N050SXhFYzhPbXhiTjcyS3lacnVja05YdjFtOVZNChs1xuaH3QDaOsN5rJ90LCH9"
        "GFobnj3tc50UrGqaUBJNuGbY"
    ),
    "scrypt_work_factor_negative": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSAtMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FKMmFV"
        "WQotLS0gOGkyT1o1Z2xNRkZubk55ZmhQTjlWdnZFRHNKencvUThYNHRoL2U3cmpDMAobNcbmh90A2jrDeayf"
        "dCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_overflow": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSA5MjIzMzcyMDM2ODU0Nzc1ODE4CmdVakV5bUZLTVZYUUVLZE1NSEwyNG9ZZXhq"
        "RTNUSUMwTzB6R1NxSjJhVVkKLS0tIFVvYlNLSUloZkNzbVhGMi84QUtTdnZTWklrei9ZMzFJcGY3WUFSSUZj"
        "QjAKGzXG5ofdANo6w3msn3QsIf0YWhuePe1znRSsappQEk24Ztg="
    ),
    "scrypt_work_factor_trailing_garbage": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSBhYWFhMTAKZ1VqRXltRktNVlhRRUtkTU1ITDI0b1lleGpFM1RJQzBPMHpHU3FK"
        "MmFVWQotLS0gTExTOXlmK2FhajRmc01zanBWM0FjZEJBOElsaTdLdEJtb1p4MkJseEg4TQobNcbmh90A2jrD"
        "eayfdCwh/RhaG5497XOdFKxqmlASTbhm2A=="
    ),
    "scrypt_work_factor_wrong": (
        "ZXhwZWN0OiBubyBtYXRjaApmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRlNDUKcGFz"
        "c3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053YmxVSEhU"
        "cGdRZ1JwZTVDUSAxMAoxaHFsYW9DVXBrZ3pZSStvVFMwcDFOeG05dTNGamliOFJFanJ3cDQwbVJFCi0tLSBp"
        "OWxIaU1KeWRrWEM3WGNRay9qN2xySkdtQ2Z6SS9MMmNmSnFHeTZqVDhJChs1xuaH3QDaOsN5rJ90LCH9GFob"
        "nj3tc50UrGqaUBJNuGbY"
    ),
    "scrypt_work_factor_zero": (
        "ZXhwZWN0OiBoZWFkZXIgZmFpbHVyZQpmaWxlIGtleTogNTk0NTRjNGM0ZjU3MjA1MzU1NDI0ZDQxNTI0OTRl"
        "NDUKcGFzc3BocmFzZTogcGFzc3dvcmQKCmFnZS1lbmNyeXB0aW9uLm9yZy92MQotPiBzY3J5cHQgckYwL053"
        "YmxVSEhUcGdRZ1JwZTVDUSAwCmdVakV5bUZLTVZYUUVLZE1NSEwyNG9ZZXhqRTNUSUMwTzB6R1NxSjJhVVkK"
        "LS0tIGErWndueVNGZ1UrMVpET3BzNUJhNDVtejlQQy9tcmtPbGIwNjhGZlhNUzgKGzXG5ofdANo6w3msn3Qs"
        "If0YWhuePe1znRSsappQEk24Ztg="
    ),
}

# Vectors whose header is refused as malformed by us (expect: header failure) and those
# whose passphrase does not open a well-formed scrypt stanza (expect: no match).
_NO_MATCH = {"scrypt_bad_tag", "scrypt_no_match", "scrypt_work_factor_wrong"}


def _vector(name: str) -> tuple[dict[str, str], bytes]:
    raw = base64.b64decode("".join(_CCTV_SCRYPT[name]))
    text, _, body = raw.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in text.decode().splitlines())
    return fields, body


@pytest.mark.parametrize("name", sorted(_CCTV_SCRYPT))
def test_cctv_age_vectors(name: str) -> None:
    fields, body = _vector(name)
    expect = fields["expect"]
    if expect == "success":
        plain = AgeReader(io.BytesIO(body), fields["passphrase"]).read()
        assert hashlib.sha256(plain).hexdigest() == fields["payload"]
        return
    with pytest.raises(BackupError) as caught:
        AgeReader(io.BytesIO(body), fields["passphrase"]).read()
    if name in _NO_MATCH:
        assert expect == "no match"
        assert isinstance(caught.value, WrongPassphrase)
    elif expect == "header failure":
        assert not isinstance(caught.value, WrongPassphrase), caught.value
        assert "header" in str(caught.value) or "age recipients" in str(caught.value)
    else:  # "SCRYPT": not a scrypt stanza, so no passphrase stanza at all
        assert expect == "no match"
        assert "not with a passphrase" in str(caught.value)


# --- interop with Debian's age ------------------------------------------------------------

#: Debian's age, which scripts/system-deps.sh installs: without it the interop tests fail.
AGE = shutil.which("age")


def run_age(args: list[str], passphrase: str, timeout: float = 60.0) -> str:
    """Run age on a pseudo-terminal (it reads passphrases from /dev/tty only)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execv(AGE, ["age", *args])  # type: ignore[arg-type]
        finally:
            os._exit(127)
    output = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
            prompts = len(re.findall(rb"passphrase[^:\n]*:", output))
            while answered < prompts:
                os.write(fd, passphrase.encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"age {' '.join(args)} exited {code}: {output!r}"
    return output.decode(errors="replace")


def test_age_decrypts_what_we_write(tmp_path: Path) -> None:
    assert AGE is not None, "age is not installed (scripts/system-deps.sh installs it)"
    data = os.urandom(2 * CHUNK_SIZE + 3)
    (tmp_path / "ours.age").write_bytes(encrypt(data))
    run_age(["-d", "-o", str(tmp_path / "plain"), str(tmp_path / "ours.age")], PASSPHRASE)
    assert (tmp_path / "plain").read_bytes() == data


def test_we_decrypt_what_age_writes(tmp_path: Path) -> None:
    assert AGE is not None, "age is not installed (scripts/system-deps.sh installs it)"
    data = os.urandom(CHUNK_SIZE)  # exactly one chunk: no empty final chunk after it
    (tmp_path / "plain").write_bytes(data)
    run_age(["-p", "-o", str(tmp_path / "theirs.age"), str(tmp_path / "plain")], PASSPHRASE)
    blob = (tmp_path / "theirs.age").read_bytes()
    assert b"\n-> scrypt " in blob
    assert decrypt(blob) == data
