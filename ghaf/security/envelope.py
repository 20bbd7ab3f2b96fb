"""Envelope encryption of artifacts: the chunked AES-256-GCM object format and key wrapping.

Object layout (all integers big-endian), specified in docs/security.md:

    header  = b"GHAFENC\\x00" | version u8 (=1) | chunk_size u32 | object_id 16 bytes
    chunk i = AES-256-GCM(data_key, nonce_i, plaintext_i, aad_i)  (ciphertext || 16-byte tag)
    nonce_i = i u64 | last u8 | 0x000000
    aad_i   = header | i u64 | last u8

Every chunk holds ``chunk_size`` plaintext bytes except the last, which holds 1 to
``chunk_size`` (0 only for an empty object, which still has its one, last chunk). The
data key is fresh and random per object, so counter nonces never repeat under a key; the
header in every chunk's AAD binds the object id, and index and last flag bind the order,
so reordering, truncating, extending, or swapping chunks or headers between objects fails
authentication.
"""

from __future__ import annotations

import base64
import os
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ghaf.core.errors import IntegrityFailure

MAGIC = b"GHAFENC\x00"
VERSION = 1
TAG_BYTES = 16
DEFAULT_CHUNK_SIZE = 1 << 20
_HEADER = struct.Struct(">8sBI16s")
HEADER_BYTES = _HEADER.size
_INDEX = struct.Struct(">QB")


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def make_header(object_id: str, chunk_size: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, chunk_size, uuid.UUID(object_id).bytes)


def parse_header(header: bytes, *, object_id: str) -> int:
    """Check a stored header belongs to ``object_id``; return its chunk size."""
    if len(header) != HEADER_BYTES:
        raise IntegrityFailure(f"object {object_id} is truncated: its header is incomplete")
    magic, version, chunk_size, raw_id = _HEADER.unpack(header)
    if magic != MAGIC:
        raise IntegrityFailure(f"object {object_id} is not a ghaf encrypted object")
    if version != VERSION:
        raise IntegrityFailure(f"object {object_id} has unknown format version {version}")
    if raw_id != uuid.UUID(object_id).bytes:
        raise IntegrityFailure(f"object {object_id} carries the header of another object")
    if not 1 <= chunk_size <= 1 << 30:
        raise IntegrityFailure(f"object {object_id} has an invalid chunk size")
    return int(chunk_size)


def _nonce(index: int, last: bool) -> bytes:
    return _INDEX.pack(index, last) + b"\x00\x00\x00"


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def encrypted_size(size: int, chunk_size: int) -> int:
    return HEADER_BYTES + size + chunk_count(size, chunk_size) * TAG_BYTES


class ChunkEncryptor:
    """Turns a plaintext stream into the object format, one chunk at a time.

    ``write`` may be called with pieces of any size; ``finish`` emits the last chunk.
    Output goes to ``sink`` as it is produced, so memory stays at about one chunk. The
    sink gets a view of a buffer that is reused for the next chunk: it must copy or
    write the bytes before it returns.
    """

    def __init__(
        self,
        data_key: bytes,
        object_id: str,
        sink: Callable[[bytes | memoryview], None],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self._aead = AESGCM(data_key)
        self._header = make_header(object_id, chunk_size)
        self._sink = sink
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        # A full chunk waits here until more data proves it is not the last one.
        self._held: bytes | None = None
        self._out = bytearray(chunk_size + TAG_BYTES)
        self._index = 0
        self.plaintext_bytes = 0
        sink(self._header)

    def write(self, data: bytes | bytearray) -> None:
        self.plaintext_bytes += len(data)
        size = self._chunk_size
        view = memoryview(data)
        while view:
            if self._held is not None:
                self._seal(self._held, last=False)
                self._held = None
            if not self._buffer and len(view) >= size:
                # Whole chunks straight from the caller's bytes: no copy when aligned.
                # (bytes only: a caller may reuse a bytearray once this returns)
                if isinstance(data, bytes) and len(view) == len(data) == size:
                    self._held = data
                else:
                    self._held = bytes(view[:size])
                view = view[size:]
                continue
            take = size - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == size:
                self._held = bytes(self._buffer)
                self._buffer.clear()

    def finish(self) -> None:
        if self._held is not None:
            self._seal(self._held, last=True)
            self._held = None
        else:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()

    def _seal(self, plaintext: bytes, *, last: bool) -> None:
        aad = self._header + _INDEX.pack(self._index, last)
        nonce = _nonce(self._index, last)
        # Seal into one reused buffer: a fresh megabyte per chunk costs page faults that,
        # on small machines, take longer than the encryption itself.
        sealed = memoryview(self._out)[: len(plaintext) + TAG_BYTES]
        self._aead.encrypt_into(nonce, plaintext, aad, sealed)
        self._sink(sealed)
        self._index += 1


RangeReader = Callable[[int, int], bytes]
"""Reads ``length`` bytes of the stored object at ``offset`` (fewer only at its end)."""


@dataclass(frozen=True)
class EncryptedObject:
    """A stored object of known plaintext ``size``, read back through ``read``."""

    object_id: str
    size: int
    data_key: bytes
    read: RangeReader

    def _check_header(self) -> tuple[bytes, int]:
        header = self.read(0, HEADER_BYTES)
        return header, parse_header(header, object_id=self.object_id)

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Plaintext bytes ``start``..``end`` (inclusive), authenticated chunk by chunk.

        Nothing unauthenticated is ever yielded: a failing chunk raises
        ``IntegrityFailure`` before any of its bytes leave.
        """
        end = self.size - 1 if end is None else end
        header, chunk_size = self._check_header()
        aead = AESGCM(self.data_key)
        if self.size == 0:
            self._open(aead, header, 0, True, self.read(HEADER_BYTES, TAG_BYTES))
            return
        first, final = start // chunk_size, end // chunk_size
        for index in range(first, final + 1):
            plain = self._chunk(aead, header, chunk_size, index)
            lo = start - index * chunk_size if index == first else 0
            hi = end - index * chunk_size + 1 if index == final else len(plain)
            yield plain[lo:hi]

    def read_ranges(self, ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]:
        """The plaintext of each inclusive ``(start, end)``, in order, authenticated.

        Neighbouring ranges that share a chunk (the small members of a pack) read and
        decrypt it once, not once per range.
        """
        header, chunk_size = self._check_header()
        aead = AESGCM(self.data_key)
        cached_index, cached = -1, b""
        for start, end in ranges:
            if end < start:  # an empty member
                yield b""
                continue
            parts = []
            for index in range(start // chunk_size, end // chunk_size + 1):
                if index != cached_index:
                    cached_index, cached = index, self._chunk(aead, header, chunk_size, index)
                base = index * chunk_size
                parts.append(cached[max(start - base, 0) : end - base + 1])
            yield b"".join(parts)

    def _chunk(self, aead: AESGCM, header: bytes, chunk_size: int, index: int) -> bytes:
        total = chunk_count(self.size, chunk_size)
        last = index == total - 1
        plain_len = self.size - index * chunk_size if last else chunk_size
        stride = chunk_size + TAG_BYTES
        sealed = self.read(HEADER_BYTES + index * stride, plain_len + TAG_BYTES)
        if len(sealed) != plain_len + TAG_BYTES:
            raise IntegrityFailure(
                f"object {self.object_id} is truncated at chunk {index} of {total}"
            )
        return self._open(aead, header, index, last, sealed)

    def _open(self, aead: AESGCM, header: bytes, index: int, last: bool, sealed: bytes) -> bytes:
        try:
            return aead.decrypt(_nonce(index, last), sealed, header + _INDEX.pack(index, last))
        except InvalidTag:
            raise IntegrityFailure(
                f"object {self.object_id} failed authentication at chunk {index}: it was "
                "altered, truncated, reordered or mixed with another object"
            ) from None

    def check_length(self, stored_bytes: int) -> None:
        """Whole-object reads also refuse trailing bytes (an extended object)."""
        _, chunk_size = self._check_header()
        expected = encrypted_size(self.size, chunk_size)
        if stored_bytes != expected:
            raise IntegrityFailure(
                f"object {self.object_id} is {stored_bytes} bytes long, "
                f"expected {expected}: truncated or extended"
            )


# --- data-key wrapping under a project's key-encryption key ---------------------------


def _wrap_aad(project_id: str, object_id: str, kek_version: int) -> bytes:
    return f"ghaf-dek|v1|{project_id}|{object_id}|{kek_version}".encode()


def wrap_key(
    kek: bytes, data_key: bytes, *, project_id: str, object_id: str, kek_version: int
) -> str:
    """AES-256-GCM(KEK) over the data key, bound to project, object and KEK version."""
    nonce = os.urandom(12)
    sealed = AESGCM(kek).encrypt(nonce, data_key, _wrap_aad(project_id, object_id, kek_version))
    return base64.b64encode(nonce + sealed).decode()


def unwrap_key(
    kek: bytes, wrapped: str, *, project_id: str, object_id: str, kek_version: int
) -> bytes:
    try:
        raw = base64.b64decode(wrapped, validate=True)
        return AESGCM(kek).decrypt(
            raw[:12], raw[12:], _wrap_aad(project_id, object_id, kek_version)
        )
    except (InvalidTag, ValueError):
        raise IntegrityFailure(
            f"the data key of object {object_id} does not open with KEK version "
            f"{kek_version}: wrong key version, another project's key, or altered metadata"
        ) from None
