"""The byte mechanics of the store (no database): streaming encrypted uploads and reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from ghaf.core.errors import IntegrityFailure
from ghaf.core.ids import new_id
from ghaf.security.envelope import ChunkEncryptor, EncryptedObject, new_data_key
from ghaf.security.kms import Kms
from ghaf.storage.backends.base import Backend, ObjectMissing, ObjectWriter

PACK_CHUNK_SIZE = 64 << 10


def object_key(project_id: str, object_id: str) -> str:
    return f"objects/{project_id}/{object_id}"


def project_prefix(project_id: str) -> str:
    return f"objects/{project_id}/"


@dataclass(frozen=True)
class Slice:
    """Where content lives: ``size`` bytes at ``offset`` of one encrypted object."""

    key: str
    object_id: str
    object_size: int
    offset: int
    size: int


@dataclass
class Store:
    """An installation's object backend, key management and chunk size."""

    backend: Backend
    kms: Kms
    chunk_size: int

    def start_upload(self, *, project_id: str) -> Upload:
        """One object for one content, of any size, streamed."""
        return Upload(*self._new_object(project_id), chunk_size=self.chunk_size)

    def start_pack(self, *, project_id: str) -> PackUpload:
        """One object for many small contents under one data key (ADR 0009)."""
        # Small chunks: reading one member back then decrypts little beyond its own bytes.
        chunk_size = min(self.chunk_size, PACK_CHUNK_SIZE)
        return PackUpload(*self._new_object(project_id), chunk_size=chunk_size)

    def _new_object(self, project_id: str) -> tuple[ObjectWriter, bytes, ObjectName]:
        object_id = new_id()
        data_key = new_data_key()
        version, wrapped = self.kms.wrap(project_id, object_id, data_key)
        key = object_key(project_id, object_id)
        return self.backend.writer(key), data_key, ObjectName(object_id, key, version, wrapped)

    def data_key(
        self, *, project_id: str, object_id: str, kek_version: int, wrapped_key: str
    ) -> bytes:
        return self.kms.unwrap(project_id, object_id, kek_version, wrapped_key)

    def read(
        self, where: Slice, *, data_key: bytes, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Authenticated plaintext of ``start``..``end`` (inclusive) of the slice.

        Reading a whole slice also checks the object's stored length, so an object that
        was truncated or extended is refused even where its chunks still authenticate.
        """
        end = where.size - 1 if end is None else end
        with self._open(where, data_key) as (encrypted, stored_bytes):
            if start == 0 and end == where.size - 1:
                encrypted.check_length(stored_bytes)
            if where.object_size == 0:
                yield from encrypted.iter_range()  # authenticates the empty object
            elif where.size > 0:
                yield from encrypted.iter_range(where.offset + start, where.offset + end)

    def read_many(self, slices: list[Slice], *, data_key: bytes) -> Iterator[bytes]:
        """The whole content of each slice of one object, in the order given.

        In offset order, a pack's object is opened once and each chunk decrypted once,
        however many small members it holds.
        """
        if not slices:
            return
        with self._open(slices[0], data_key) as (encrypted, stored_bytes):
            encrypted.check_length(stored_bytes)
            if slices[0].object_size == 0:
                list(encrypted.iter_range())  # authenticates the empty object
                yield from (b"" for _ in slices)
                return
            yield from encrypted.read_ranges((s.offset, s.offset + s.size - 1) for s in slices)

    @contextmanager
    def _open(self, where: Slice, data_key: bytes) -> Iterator[tuple[EncryptedObject, int]]:
        """The object holding ``where``, and how many bytes it takes in the backend."""
        try:
            reader = self.backend.reader(where.key)
        except ObjectMissing:
            raise IntegrityFailure(f"object {where.object_id} is missing from the store") from None
        try:
            yield (
                EncryptedObject(where.object_id, where.object_size, data_key, reader.read),
                reader.size,
            )
        finally:
            reader.close()


@dataclass(frozen=True)
class ObjectName:
    """A new object's identity and its wrapped data key, as the blob rows record them."""

    object_id: str
    key: str
    kek_version: int
    wrapped_key: str


class Sealing:
    """An object being written: bytes are encrypted chunk by chunk on their way out."""

    def __init__(
        self, writer: ObjectWriter, data_key: bytes, name: ObjectName, *, chunk_size: int
    ) -> None:
        self.object_id = name.object_id
        self.key = name.key
        self.kek_version = name.kek_version
        self.wrapped_key = name.wrapped_key
        self.chunk_size = chunk_size
        self._writer = writer
        self._encryptor = ChunkEncryptor(
            data_key, name.object_id, writer.write, chunk_size=chunk_size
        )

    @property
    def size(self) -> int:
        return self._encryptor.plaintext_bytes

    def commit(self) -> int:
        """Make the object durable and visible under its key; returns its stored size."""
        return self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


class Upload(Sealing):
    """One content being written: hash and encrypt as bytes arrive; commit when complete.

    SHA-256 runs on a helper thread while the chunk is encrypted and written (both
    release the GIL), so the two costs overlap instead of adding up.
    """

    def __init__(
        self, writer: ObjectWriter, data_key: bytes, name: ObjectName, *, chunk_size: int
    ) -> None:
        super().__init__(writer, data_key, name, chunk_size=chunk_size)
        self._hash = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="ghaf-hash")
        self._pending: Future[None] | None = None
        self.sha256: str | None = None

    def write(self, data: bytes | bytearray) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._hasher.submit(self._hash.update, data)
        self._encryptor.write(data)

    def finish(self) -> str:
        """Seal the last chunk; returns the plaintext SHA-256 (nothing is visible yet)."""
        self._encryptor.finish()
        if self._pending is not None:
            self._pending.result()
        self._hasher.shutdown()
        self.sha256 = self._hash.hexdigest()
        return self.sha256

    def abort(self) -> None:
        self._hasher.shutdown(wait=True, cancel_futures=True)
        super().abort()


@dataclass(frozen=True)
class Member:
    """One content inside a pack."""

    sha256: str
    offset: int
    size: int


class PackUpload(Sealing):
    """Many small contents in one object, each hashed on its own as it is added.

    One data key, one write and one durable commit for the lot: what makes 100,000
    tiny files cost about what their bytes cost, on disk and on S3 alike.
    """

    def __init__(
        self, writer: ObjectWriter, data_key: bytes, name: ObjectName, *, chunk_size: int
    ) -> None:
        super().__init__(writer, data_key, name, chunk_size=chunk_size)
        self.members: list[Member] = []

    def add(self, content: bytes) -> Member:
        member = Member(hashlib.sha256(content).hexdigest(), self.size, len(content))
        self._encryptor.write(content)
        self.members.append(member)
        return member

    def finish(self) -> None:
        """Seal the last chunk (nothing is visible yet)."""
        self._encryptor.finish()
