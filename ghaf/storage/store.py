"""The byte mechanics of the store (no database): streaming encrypted uploads and reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ghaf.core.errors import IntegrityFailure
from ghaf.core.ids import new_id
from ghaf.security.envelope import ChunkEncryptor, EncryptedObject, new_data_key
from ghaf.security.kms import Kms
from ghaf.storage.backends.base import Backend, ObjectMissing, ObjectWriter


def object_key(project_id: str, object_id: str) -> str:
    return f"objects/{project_id}/{object_id}"


def project_prefix(project_id: str) -> str:
    return f"objects/{project_id}/"


@dataclass
class Store:
    """An installation's object backend, key management and chunk size."""

    backend: Backend
    kms: Kms
    chunk_size: int

    def start_upload(self, *, project_id: str) -> Upload:
        object_id = new_id()
        data_key = new_data_key()
        version, wrapped = self.kms.wrap(project_id, object_id, data_key)
        key = object_key(project_id, object_id)
        return Upload(
            self.backend.writer(key),
            data_key,
            object_id=object_id,
            key=key,
            kek_version=version,
            wrapped_key=wrapped,
            chunk_size=self.chunk_size,
        )

    def data_key(
        self, *, project_id: str, object_id: str, kek_version: int, wrapped_key: str
    ) -> bytes:
        return self.kms.unwrap(project_id, object_id, kek_version, wrapped_key)

    def read(
        self,
        *,
        key: str,
        object_id: str,
        size: int,
        data_key: bytes,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[bytes]:
        """Authenticated plaintext of ``start``..``end``; the whole object is length-checked."""
        try:
            reader = self.backend.reader(key)
        except ObjectMissing:
            raise IntegrityFailure(f"object {object_id} is missing from the store") from None
        try:
            encrypted = EncryptedObject(object_id, size, data_key, reader.read)
            if start == 0 and (end is None or end == size - 1):
                encrypted.check_length(reader.size)
            yield from encrypted.iter_range(start, end)
        finally:
            reader.close()


class Upload:
    """One object being written: hash and encrypt as bytes arrive; commit when complete.

    SHA-256 runs on a helper thread while the chunk is encrypted and written (both
    release the GIL), so the two costs overlap instead of adding up.
    """

    def __init__(
        self,
        writer: ObjectWriter,
        data_key: bytes,
        *,
        object_id: str,
        key: str,
        kek_version: int,
        wrapped_key: str,
        chunk_size: int,
    ) -> None:
        self.object_id = object_id
        self.key = key
        self.kek_version = kek_version
        self.wrapped_key = wrapped_key
        self.chunk_size = chunk_size
        self._writer = writer
        self._encryptor = ChunkEncryptor(data_key, object_id, writer.write, chunk_size=chunk_size)
        self._hash = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="ghaf-hash")
        self._pending: Future[None] | None = None
        self.sha256: str | None = None

    @property
    def size(self) -> int:
        return self._encryptor.plaintext_bytes

    def write(self, data: bytes) -> None:
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

    def commit(self) -> int:
        return self._writer.commit()

    def abort(self) -> None:
        self._hasher.shutdown(wait=True, cancel_futures=True)
        self._writer.abort()
