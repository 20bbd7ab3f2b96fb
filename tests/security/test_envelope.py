"""The chunked AES-GCM format: every kind of tampering raises, nothing wrong is returned."""

from __future__ import annotations

import os

import pytest

from ghaf.core.errors import IntegrityFailure
from ghaf.core.ids import new_id
from ghaf.security.envelope import (
    HEADER_BYTES,
    TAG_BYTES,
    ChunkEncryptor,
    EncryptedObject,
    encrypted_size,
    new_data_key,
    unwrap_key,
    wrap_key,
)

CHUNK = 4096


def _seal(
    data: bytes, *, key: bytes | None = None, object_id: str | None = None
) -> tuple[bytearray, bytes, str]:
    key = key or new_data_key()
    object_id = object_id or new_id()
    out = bytearray()
    encryptor = ChunkEncryptor(key, object_id, out.extend, chunk_size=CHUNK)
    for start in range(0, len(data), 1000):  # pieces that do not align with chunks
        encryptor.write(data[start : start + 1000])
    encryptor.finish()
    return out, key, object_id


def _open(
    blob: bytes | bytearray,
    key: bytes,
    object_id: str,
    size: int,
    start: int = 0,
    end: int | None = None,
) -> bytes:
    stored = bytes(blob)
    obj = EncryptedObject(object_id, size, key, lambda off, n: stored[off : off + n])
    if start == 0 and end is None:
        obj.check_length(len(stored))
    return b"".join(obj.iter_range(start, end))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7])
def test_round_trip_and_size(size: int) -> None:
    data = os.urandom(size)
    blob, key, oid = _seal(data)
    assert len(blob) == encrypted_size(size, CHUNK)
    assert _open(blob, key, oid, size) == data


def test_ranges() -> None:
    data = os.urandom(3 * CHUNK + 100)
    blob, key, oid = _seal(data)
    for start, end in [
        (0, 0),
        (CHUNK - 1, CHUNK),
        (10, 3 * CHUNK + 99),
        (3 * CHUNK, 3 * CHUNK + 5),
    ]:
        assert _open(blob, key, oid, len(data), start, end) == data[start : end + 1]


@pytest.mark.parametrize(
    "offset",
    [
        0,
        8,
        12,
        HEADER_BYTES - 1,
        HEADER_BYTES,
        HEADER_BYTES + 5,
        HEADER_BYTES + CHUNK + TAG_BYTES + 3,
        -1,
    ],
)
def test_flipped_byte_is_caught(offset: int) -> None:
    data = os.urandom(2 * CHUNK + 10)
    blob, key, oid = _seal(data)
    blob[offset] ^= 0x01
    with pytest.raises(IntegrityFailure):
        _open(blob, key, oid, len(data))


def test_truncated_and_extended() -> None:
    data = os.urandom(2 * CHUNK + 10)
    blob, key, oid = _seal(data)
    for broken in (blob[:-1], blob[: HEADER_BYTES + CHUNK + TAG_BYTES], blob[:10], blob + b"x"):
        with pytest.raises(IntegrityFailure):
            _open(broken, key, oid, len(data))
    # a truncation at a chunk boundary cannot pass as a shorter object either
    with pytest.raises(IntegrityFailure):
        _open(blob[: HEADER_BYTES + CHUNK + TAG_BYTES], key, oid, CHUNK)


def test_reordered_chunks() -> None:
    data = os.urandom(3 * CHUNK)
    blob, key, oid = _seal(data)
    stride = CHUNK + TAG_BYTES
    a = blob[HEADER_BYTES : HEADER_BYTES + stride]
    b = blob[HEADER_BYTES + stride : HEADER_BYTES + 2 * stride]
    swapped = blob[:HEADER_BYTES] + b + a + blob[HEADER_BYTES + 2 * stride :]
    with pytest.raises(IntegrityFailure):
        _open(swapped, key, oid, len(data))


def test_chunk_or_header_from_another_object() -> None:
    key = new_data_key()  # even under the same data key, objects cannot be mixed
    first, _, oid1 = _seal(os.urandom(2 * CHUNK), key=key)
    second, _, _oid2 = _seal(os.urandom(2 * CHUNK), key=key)
    mixed = first[: HEADER_BYTES + CHUNK + TAG_BYTES] + second[HEADER_BYTES + CHUNK + TAG_BYTES :]
    with pytest.raises(IntegrityFailure):
        _open(mixed, key, oid1, 2 * CHUNK)
    header_swapped = second[:HEADER_BYTES] + first[HEADER_BYTES:]
    with pytest.raises(IntegrityFailure, match="another object"):
        _open(header_swapped, key, oid1, 2 * CHUNK)


def test_wrong_data_key() -> None:
    blob, _, oid = _seal(b"secret model weights")
    with pytest.raises(IntegrityFailure):
        _open(blob, new_data_key(), oid, 20)


def test_key_wrapping_binds_project_object_and_version() -> None:
    kek, dek, oid = os.urandom(32), new_data_key(), new_id()
    wrapped = wrap_key(kek, dek, project_id="p1", object_id=oid, kek_version=2)
    assert unwrap_key(kek, wrapped, project_id="p1", object_id=oid, kek_version=2) == dek
    for change in ({"project_id": "p2"}, {"object_id": new_id()}, {"kek_version": 1}):
        args = {"project_id": "p1", "object_id": oid, "kek_version": 2, **change}
        with pytest.raises(IntegrityFailure):
            unwrap_key(kek, wrapped, **args)  # type: ignore[arg-type]
    with pytest.raises(IntegrityFailure):
        unwrap_key(os.urandom(32), wrapped, project_id="p1", object_id=oid, kek_version=2)
